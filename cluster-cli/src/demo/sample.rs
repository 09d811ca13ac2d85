//! The demo's sample data and the seeding that writes it once the cluster has a leader.

use std::time::{Duration, Instant};

use vnet_proto::vnet::v1 as pb;

use super::plan::SERVERS;
use super::POLL_INTERVAL;
use crate::error::CliError;
use crate::{pool, profile, session, spec};

/// How long seeding the sample data may take (it retries across a leader change).
pub(super) const SEED_DEADLINE: Duration = Duration::from_secs(30);

/// The sample pools and profiles: one profile per rack server, each with two vNICs (prod and
/// storage) and two vHBAs (fabrics a and b) from the pools, preferred units alternating between
/// unit-a and unit-b, failback auto on half.
pub fn sample_data() -> (Vec<pb::Pool>, Vec<pb::Profile>) {
    let pools = vec![
        pb::Pool {
            name: "demo-mac".into(),
            kind: pb::PoolKind::Mac as i32,
            first: "02:00:00:00:00:00".into(),
            last: "02:00:00:00:0f:ff".into(),
            revision: 0,
        },
        pb::Pool {
            name: "demo-wwn".into(),
            kind: pb::PoolKind::Wwn as i32,
            first: "20:00:00:25:b5:00:00:00".into(),
            last: "20:00:00:25:b5:00:0f:ff".into(),
            revision: 0,
        },
    ];
    let profile = |name: &str, server: &str, unit: &str, failback: pb::FailbackPolicy| {
        pb::Profile {
            name: name.into(),
            server: server.into(),
            // The specs below are constants checked by the sample_data test.
            vnics: [
                "eth0:net=prod:vlan=100:pool=demo-mac",
                "eth1:net=storage:vlan=200:pool=demo-mac",
            ]
            .iter()
            .filter_map(|s| spec::parse_vnic(s).ok())
            .collect(),
            vhbas: ["fc0:fabric=a:pool=demo-wwn", "fc1:fabric=b:pool=demo-wwn"]
                .iter()
                .filter_map(|s| spec::parse_vhba(s).ok())
                .collect(),
            preferred_unit: Some(unit.into()),
            failback: failback as i32,
            revision: 0,
            created_revision: 0,
        }
    };
    use pb::FailbackPolicy::{Auto, Manual};
    let profiles = vec![
        profile("web-01", SERVERS[0], "unit-a", Auto),
        profile("web-02", SERVERS[1], "unit-b", Auto),
        profile("db-01", SERVERS[2], "unit-a", Manual),
        profile("db-02", SERVERS[3], "unit-b", Manual),
        profile("app-01", SERVERS[4], "unit-a", Auto),
        profile("app-02", SERVERS[5], "unit-b", Manual),
    ];
    (pools, profiles)
}

/// Creates the sample data. A leader change right after the first election is normal, so
/// UNAVAILABLE is retried until a deadline; ALREADY_EXISTS after such a retry means the first
/// attempt went through.
pub(super) async fn seed(
    session: &mut session::Session,
    pools: Vec<pb::Pool>,
    profiles: &[pb::Profile],
) -> Result<(), CliError> {
    let deadline = Instant::now() + SEED_DEADLINE;
    for pool in pools {
        while !settled(
            pool::create(session, pool.clone()).await.map(drop),
            deadline,
        )
        .await?
        {}
    }
    for profile in profiles {
        while !settled(
            profile::create(session, profile.clone()).await.map(drop),
            deadline,
        )
        .await?
        {}
    }
    Ok(())
}

/// The roles the demo grants, principal and role: an operator and a viewer beside the bootstrap
/// admin (`plan::DEMO_ADMIN`), to try what each may do.
pub const DEMO_ROLES: [(&str, pb::AccessRole); 2] = [
    ("operator", pb::AccessRole::Operator),
    ("viewer", pb::AccessRole::Viewer),
];

/// Grants [`DEMO_ROLES`]; granting a principal the role it holds changes nothing, so a retry
/// after an unknown outcome is harmless.
pub(super) async fn grant_roles(session: &mut session::Session) -> Result<(), CliError> {
    use vnet_proto::vnet::v1::access_service_client::AccessServiceClient;
    let deadline = Instant::now() + SEED_DEADLINE;
    for (principal, role) in DEMO_ROLES {
        let message = pb::GrantRoleRequest {
            principal: principal.to_string(),
            role: role as i32,
        };
        while !settled(
            session::unary(
                session,
                crate::retry::CallKind::Write,
                message.clone(),
                session::rpc!(AccessServiceClient::grant_role),
            )
            .await
            .map(drop),
            deadline,
        )
        .await?
        {}
    }
    Ok(())
}

/// Whether a seeding write is done (true), worth another try after a pause (false), or failed.
pub(super) async fn settled(
    outcome: Result<(), CliError>,
    deadline: Instant,
) -> Result<bool, CliError> {
    match outcome {
        Ok(()) => Ok(true),
        Err(CliError::Rejected {
            code: tonic::Code::AlreadyExists,
            ..
        }) => Ok(true),
        Err(error) if error.is_transient() && Instant::now() < deadline => {
            tokio::time::sleep(POLL_INTERVAL).await;
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_data_is_valid_and_complete() {
        let (pools, profiles) = sample_data();
        assert_eq!(pools.len(), 2);
        assert_eq!(profiles.len(), 6);
        for profile in &profiles {
            // Catches a spec that failed to parse and was dropped by `filter_map`.
            assert_eq!(profile.vnics.len(), 2, "{}", profile.name);
            assert_eq!(profile.vhbas.len(), 2, "{}", profile.name);
        }
        let servers: Vec<&str> = profiles.iter().map(|p| p.server.as_str()).collect();
        assert_eq!(servers, SERVERS.to_vec(), "one profile per cabled server");
        let on = |unit: &str| {
            profiles
                .iter()
                .filter(|p| p.preferred_unit.as_deref() == Some(unit))
                .count()
        };
        assert_eq!((on("unit-a"), on("unit-b")), (3, 3));
        let auto = profiles
            .iter()
            .filter(|p| p.failback == pb::FailbackPolicy::Auto as i32)
            .count();
        assert_eq!(auto, 3);
    }
}
