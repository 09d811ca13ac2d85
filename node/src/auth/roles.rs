//! What each role may do, and who the actor of a request is.
//!
//! [`RPCS`] is the one table from every public RPC to the [`Permission`] it needs; a method not
//! in it is refused (fail closed), and a unit test checks it lists every method of every
//! `vnet.v1` service the proto declares. Each permission needs a least [`AccessRole`]; roles are
//! ordered, so an admin may do what an operator may, and an operator what a viewer may. The
//! principal's role is read from this node's applied state (the replicated role map): a grant or
//! revocation takes effect on each node as it applies the change, as etcd's does on each member
//! (ARCHITECTURE.md, "Roles and audit").
//!
//! [`Principal::Insecure`] (a node serving without TLS) may do everything, like etcd without
//! auth; [`Principal::Node`] is the system and may too. The pure functions here decide; the API
//! edge (`api::Api::guarded`) reads the role and records the decision in the audit log.

use vnet_model::access::{is_system_actor, validate_principal};
use vnet_model::AccessRole;

use super::Principal;

/// What a call needs, named as refusals and the README name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Reads of profiles, pools and alarms.
    Read,
    /// Watch streams.
    Watch,
    /// Cluster status.
    Status,
    /// Create, update, delete profiles.
    ProfilesWrite,
    /// Drain, undrain, failover.
    UnitsMove,
    /// Create and delete pools.
    PoolsWrite,
    /// Add, promote, remove members.
    MembersWrite,
    LeaderTransfer,
    RolesRead,
    RolesWrite,
    AlarmsDisarm,
    /// Backups hold the whole state.
    SnapshotSave,
    AuditRead,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Watch => "watch",
            Permission::Status => "status",
            Permission::ProfilesWrite => "profiles.write",
            Permission::UnitsMove => "units.move",
            Permission::PoolsWrite => "pools.write",
            Permission::MembersWrite => "members.write",
            Permission::LeaderTransfer => "leader.transfer",
            Permission::RolesRead => "roles.read",
            Permission::RolesWrite => "roles.write",
            Permission::AlarmsDisarm => "alarms.disarm",
            Permission::SnapshotSave => "snapshot.save",
            Permission::AuditRead => "audit.read",
        }
    }

    /// The least role that holds this permission.
    pub fn least_role(self) -> AccessRole {
        match self {
            Permission::Read | Permission::Watch | Permission::Status => AccessRole::Viewer,
            Permission::ProfilesWrite | Permission::UnitsMove => AccessRole::Operator,
            Permission::PoolsWrite
            | Permission::MembersWrite
            | Permission::LeaderTransfer
            | Permission::RolesRead
            | Permission::RolesWrite
            | Permission::AlarmsDisarm
            | Permission::SnapshotSave
            | Permission::AuditRead => AccessRole::Admin,
        }
    }

    /// Whether every call needing it is audited, accepted or refused: the calls that change
    /// something, and the reads of everything (a backup) or of the audit itself. Other reads are
    /// audited only when refused.
    pub fn audited_always(self) -> bool {
        !matches!(
            self,
            Permission::Read | Permission::Watch | Permission::Status | Permission::RolesRead
        )
    }
}

/// Every public RPC, by its full gRPC path, with the permission it needs.
pub const RPCS: &[(&str, Permission)] = &[
    (
        "/vnet.v1.ProfileService/CreateProfile",
        Permission::ProfilesWrite,
    ),
    ("/vnet.v1.ProfileService/GetProfile", Permission::Read),
    ("/vnet.v1.ProfileService/ListProfiles", Permission::Read),
    (
        "/vnet.v1.ProfileService/UpdateProfile",
        Permission::ProfilesWrite,
    ),
    (
        "/vnet.v1.ProfileService/DeleteProfile",
        Permission::ProfilesWrite,
    ),
    ("/vnet.v1.PoolService/CreatePool", Permission::PoolsWrite),
    ("/vnet.v1.PoolService/ListPools", Permission::Read),
    ("/vnet.v1.PoolService/GetPoolUsage", Permission::Read),
    ("/vnet.v1.PoolService/DeletePool", Permission::PoolsWrite),
    (
        "/vnet.v1.ClusterService/GetClusterStatus",
        Permission::Status,
    ),
    (
        "/vnet.v1.ClusterService/AddMember",
        Permission::MembersWrite,
    ),
    (
        "/vnet.v1.ClusterService/PromoteMember",
        Permission::MembersWrite,
    ),
    (
        "/vnet.v1.ClusterService/RemoveMember",
        Permission::MembersWrite,
    ),
    (
        "/vnet.v1.ClusterService/TransferLeader",
        Permission::LeaderTransfer,
    ),
    ("/vnet.v1.ClusterService/Drain", Permission::UnitsMove),
    ("/vnet.v1.ClusterService/Undrain", Permission::UnitsMove),
    ("/vnet.v1.ClusterService/Failover", Permission::UnitsMove),
    (
        "/vnet.v1.ClusterService/SaveSnapshot",
        Permission::SnapshotSave,
    ),
    ("/vnet.v1.ClusterService/ListAlarms", Permission::Read),
    (
        "/vnet.v1.ClusterService/DisarmAlarm",
        Permission::AlarmsDisarm,
    ),
    ("/vnet.v1.WatchService/Watch", Permission::Watch),
    ("/vnet.v1.AccessService/ListRoles", Permission::RolesRead),
    ("/vnet.v1.AccessService/GrantRole", Permission::RolesWrite),
    ("/vnet.v1.AccessService/RevokeRole", Permission::RolesWrite),
    ("/vnet.v1.AccessService/ReadAudit", Permission::AuditRead),
];

/// The permission `method` (a full gRPC path) needs; `None` for a method not in the table,
/// which is refused.
pub fn permission_of(method: &str) -> Option<Permission> {
    RPCS.iter()
        .find(|(path, _)| *path == method)
        .map(|(_, permission)| *permission)
}

/// Why a call is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No principal, or one that cannot be a client (gRPC `UNAUTHENTICATED`).
    Unauthenticated(String),
    /// A principal whose role does not allow the call (gRPC `PERMISSION_DENIED`).
    PermissionDenied(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::Unauthenticated(m) | Refusal::PermissionDenied(m) => m,
        }
    }
}

impl From<Refusal> for tonic::Status {
    fn from(refusal: Refusal) -> tonic::Status {
        match refusal {
            Refusal::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            Refusal::PermissionDenied(m) => tonic::Status::permission_denied(m),
        }
    }
}

/// The principal as the audit log and events name it.
pub fn principal_name(principal: &Principal) -> String {
    match principal {
        Principal::Client(name) => name.clone(),
        Principal::Node(id) => format!("node/{id}"),
        Principal::Insecure => "insecure".to_string(),
    }
}

/// The principal's role as the audit log and refusals name it: its granted role, `none`,
/// `system` for a node, or `insecure`.
pub fn role_label(principal: &Principal, role: Option<AccessRole>) -> String {
    match principal {
        Principal::Client(_) => role.map_or("none", AccessRole::name).to_string(),
        Principal::Node(_) => "system".to_string(),
        Principal::Insecure => "insecure".to_string(),
    }
}

/// Decides whether `principal`, holding `role` in the replicated map, may call `method`.
/// `member` says whether a node principal is a member of the cluster now: a node certificate
/// speaks as the system only while its id is a member's, so the certificate of a node never
/// added, or removed (even one the CA still vouches for), is refused.
pub fn check(
    principal: Option<&Principal>,
    role: Option<AccessRole>,
    member: bool,
    method: &str,
) -> Result<Permission, Refusal> {
    let Some(principal) = principal else {
        return Err(Refusal::Unauthenticated(format!(
            "{method}: the request carries no authenticated principal (a client certificate \
             the server accepts)"
        )));
    };
    let Some(permission) = permission_of(method) else {
        return Err(Refusal::PermissionDenied(format!(
            "{method} is not an API method any role may call"
        )));
    };
    match principal {
        Principal::Insecure => Ok(permission),
        Principal::Node(_) if member => Ok(permission),
        Principal::Node(id) => Err(Refusal::PermissionDenied(format!(
            "{method}: the certificate names node {id}, which is not a member of this cluster \
             (never added, or removed); a node certificate speaks as the system only while its \
             node is a member"
        ))),
        Principal::Client(name) => {
            if let Err(rejection) = validate_principal("principal", name) {
                return Err(Refusal::Unauthenticated(format!(
                    "the client certificate's identity cannot be a principal: {rejection}"
                )));
            }
            let least = permission.least_role();
            if role.is_some_and(|role| role >= least) {
                Ok(permission)
            } else {
                Err(Refusal::PermissionDenied(format!(
                    "principal {:?} (role {}) may not call {method}: it needs permission {}, \
                     held by role {least} and above",
                    crate::error::echoed(name),
                    role_label(principal, role),
                    permission.name(),
                )))
            }
        }
    }
}

/// The actor recorded with a change the principal makes, and the "on behalf of" note beside it.
/// The actor is always the principal; a client's `x-vnet-actor` note never replaces it. Only a
/// node (the system) may act as a system actor (`system/...`, `vnetd/...`), and only a node's
/// note naming one becomes the actor.
pub fn actor(principal: &Principal, note: Option<&str>) -> (String, Option<String>) {
    match (principal, note) {
        (Principal::Node(_), Some(note)) if is_system_actor(note) => (note.to_string(), None),
        (principal, note) => (principal_name(principal), note.map(str::to_string)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every method of every `vnet.v1` service, read from the compiled descriptors.
    fn public_methods() -> BTreeSet<String> {
        use prost::Message;
        let set =
            prost_types_descriptor::FileDescriptorSet::decode(vnet_proto::FILE_DESCRIPTOR_SET)
                .expect("the compiled descriptors decode");
        let mut methods = BTreeSet::new();
        for file in set.file {
            if file.package.as_deref() != Some("vnet.v1") {
                continue;
            }
            for service in file.service {
                for method in service.method {
                    methods.insert(format!(
                        "/vnet.v1.{}/{}",
                        service.name.clone().unwrap_or_default(),
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
        methods
    }

    /// The few descriptor messages needed here, decoded with prost (field numbers of
    /// `google/protobuf/descriptor.proto`).
    mod prost_types_descriptor {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct FileDescriptorSet {
            #[prost(message, repeated, tag = "1")]
            pub file: Vec<FileDescriptorProto>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct FileDescriptorProto {
            #[prost(string, optional, tag = "2")]
            pub package: Option<String>,
            #[prost(message, repeated, tag = "6")]
            pub service: Vec<ServiceDescriptorProto>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ServiceDescriptorProto {
            #[prost(string, optional, tag = "1")]
            pub name: Option<String>,
            #[prost(message, repeated, tag = "2")]
            pub method: Vec<MethodDescriptorProto>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct MethodDescriptorProto {
            #[prost(string, optional, tag = "1")]
            pub name: Option<String>,
        }
    }

    #[test]
    fn every_public_rpc_has_exactly_one_entry_and_no_entry_is_stale() {
        let declared = public_methods();
        assert!(declared.len() >= 25, "{declared:?}");
        let listed: Vec<&str> = RPCS.iter().map(|(path, _)| *path).collect();
        let unique: BTreeSet<&str> = listed.iter().copied().collect();
        assert_eq!(unique.len(), listed.len(), "a method is listed twice");
        let listed: BTreeSet<String> = unique.iter().map(|p| p.to_string()).collect();
        let missing: Vec<_> = declared.difference(&listed).collect();
        let stale: Vec<_> = listed.difference(&declared).collect();
        assert!(missing.is_empty(), "RPCs without a permission: {missing:?}");
        assert!(stale.is_empty(), "entries for no RPC: {stale:?}");
    }

    #[test]
    fn roles_hold_what_the_roles_of_etcd_hold() {
        let least = |method: &str| permission_of(method).expect("listed").least_role();
        for viewer in [
            "/vnet.v1.ProfileService/GetProfile",
            "/vnet.v1.ProfileService/ListProfiles",
            "/vnet.v1.PoolService/ListPools",
            "/vnet.v1.PoolService/GetPoolUsage",
            "/vnet.v1.ClusterService/GetClusterStatus",
            "/vnet.v1.ClusterService/ListAlarms",
            "/vnet.v1.WatchService/Watch",
        ] {
            assert_eq!(least(viewer), AccessRole::Viewer, "{viewer}");
        }
        for operator in [
            "/vnet.v1.ProfileService/CreateProfile",
            "/vnet.v1.ProfileService/UpdateProfile",
            "/vnet.v1.ProfileService/DeleteProfile",
            "/vnet.v1.ClusterService/Drain",
            "/vnet.v1.ClusterService/Undrain",
            "/vnet.v1.ClusterService/Failover",
        ] {
            assert_eq!(least(operator), AccessRole::Operator, "{operator}");
        }
        for admin in [
            "/vnet.v1.PoolService/CreatePool",
            "/vnet.v1.PoolService/DeletePool",
            "/vnet.v1.ClusterService/AddMember",
            "/vnet.v1.ClusterService/PromoteMember",
            "/vnet.v1.ClusterService/RemoveMember",
            "/vnet.v1.ClusterService/TransferLeader",
            "/vnet.v1.ClusterService/SaveSnapshot",
            "/vnet.v1.ClusterService/DisarmAlarm",
            "/vnet.v1.AccessService/ListRoles",
            "/vnet.v1.AccessService/GrantRole",
            "/vnet.v1.AccessService/RevokeRole",
            "/vnet.v1.AccessService/ReadAudit",
        ] {
            assert_eq!(least(admin), AccessRole::Admin, "{admin}");
        }
    }

    #[test]
    fn each_role_may_call_exactly_the_methods_at_or_below_it() {
        let client = Principal::Client("bob".into());
        for (method, permission) in RPCS {
            for role in AccessRole::ALL {
                let result = check(Some(&client), Some(role), true, method);
                assert_eq!(
                    result.is_ok(),
                    role >= permission.least_role(),
                    "{role} calling {method}"
                );
            }
            // Without a role, nothing; as the system or without TLS, everything.
            let refused = check(Some(&client), None, true, method).expect_err("no role");
            assert!(matches!(refused, Refusal::PermissionDenied(_)));
            assert_eq!(
                check(Some(&Principal::Node(2)), None, true, method),
                Ok(*permission)
            );
            assert_eq!(
                check(Some(&Principal::Insecure), None, true, method),
                Ok(*permission)
            );
            let missing =
                check(None, Some(AccessRole::Admin), true, method).expect_err("no principal");
            assert!(matches!(missing, Refusal::Unauthenticated(_)));
        }
    }

    #[test]
    fn a_refusal_names_the_principal_its_role_and_the_permission_needed() {
        let refused = check(
            Some(&Principal::Client("bob".into())),
            Some(AccessRole::Viewer),
            true,
            "/vnet.v1.PoolService/CreatePool",
        )
        .expect_err("a viewer creating a pool");
        let message = refused.message();
        for needle in [
            "\"bob\"",
            "role viewer",
            "pools.write",
            "admin",
            "CreatePool",
        ] {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        let none = check(
            Some(&Principal::Client("eve".into())),
            None,
            true,
            "/vnet.v1.ProfileService/GetProfile",
        )
        .expect_err("no role");
        assert!(none.message().contains("role none"), "{none:?}");
        assert!(matches!(
            check(
                Some(&Principal::Insecure),
                None,
                true,
                "/vnet.v1.Nope/Nothing"
            ),
            Err(Refusal::PermissionDenied(_))
        ));
    }

    #[test]
    fn a_certificate_naming_a_system_actor_is_not_a_principal() {
        for name in ["system/placement", "vnetd/unit-a", "node/1", ""] {
            let refused = check(
                Some(&Principal::Client(name.into())),
                Some(AccessRole::Admin),
                true,
                "/vnet.v1.ProfileService/GetProfile",
            )
            .expect_err(name);
            assert!(matches!(refused, Refusal::Unauthenticated(_)), "{name}");
        }
    }

    #[test]
    fn the_actor_is_the_principal_and_a_note_only_sits_beside_it() {
        let alice = Principal::Client("alice".into());
        assert_eq!(actor(&alice, None), ("alice".to_string(), None));
        assert_eq!(
            actor(&alice, Some("system/placement")),
            ("alice".to_string(), Some("system/placement".to_string()))
        );
        assert_eq!(
            actor(&Principal::Insecure, Some("bob")),
            ("insecure".to_string(), Some("bob".to_string()))
        );
        // Only a node may act as the system.
        assert_eq!(
            actor(&Principal::Node(3), Some("system/placement")),
            ("system/placement".to_string(), None)
        );
        assert_eq!(
            actor(&Principal::Node(3), Some("carol")),
            ("node/3".to_string(), Some("carol".to_string()))
        );
    }

    #[test]
    fn a_node_certificate_speaks_as_the_system_only_while_its_node_is_a_member() {
        for (method, permission) in RPCS {
            assert_eq!(
                check(Some(&Principal::Node(2)), None, true, method),
                Ok(*permission)
            );
            let refused =
                check(Some(&Principal::Node(9)), None, false, method).expect_err("not a member");
            match refused {
                Refusal::PermissionDenied(message) => {
                    assert!(message.contains("node 9") && message.contains("not a member"))
                }
                other => panic!("{method}: {other:?}"),
            }
        }
    }
}
