//! What every test of `apply` shares: the `Cluster` that runs commands and checks the
//! invariants after each, and builders of commands, specs and identities.

pub use std::collections::BTreeMap;

pub use vnet_model::limits::{EVENT_HISTORY_MAX, MEMBERS_MAX, POOLS_MAX, PROFILES_MAX};
pub use vnet_model::{
    apply, Change, Command, Failback, IdentityKind, Mac, Member, Outcome, PoolRange, PoolSpec,
    Profile, ProfileSpec, Rejection, Request, Revision, Role, State, VHbaSpec, VNicSpec, Wwn,
};

pub struct Cluster {
    pub state: State,
    pub next_revision: Revision,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            state: State::default(),
            next_revision: 1,
        }
    }

    pub fn run_as(&mut self, actor: &str, command: Command) -> Result<Outcome, Rejection> {
        let before = self.state.clone();
        let revision = self.next_revision;
        // Leave gaps, as Raft does for entries that are not commands.
        self.next_revision += 2;
        let request = Request {
            actor: actor.to_owned(),
            command,
            trace: None,
            on_behalf_of: None,
        };
        let result = apply(&mut self.state, revision, &request);
        match &result {
            Ok(_) => assert_eq!(self.state.revision(), revision),
            Err(_) => assert_eq!(self.state, before, "a refused command changed the state"),
        }
        self.state
            .check_invariants()
            .unwrap_or_else(|broken| panic!("after {request:?}: {broken}"));
        result
    }

    pub fn run(&mut self, command: Command) -> Result<Outcome, Rejection> {
        self.run_as("tester", command)
    }

    pub fn ok(&mut self, command: Command) -> Outcome {
        let description = format!("{command:?}");
        self.run(command)
            .unwrap_or_else(|rejection| panic!("{description} refused: {rejection}"))
    }

    pub fn profile(&mut self, command: Command) -> Profile {
        match self.ok(command) {
            Outcome::Profile(profile) => (*profile).clone(),
            other => panic!("expected a profile, got {other:?}"),
        }
    }

    pub fn rejected(&mut self, command: Command) -> Rejection {
        let description = format!("{command:?}");
        match self.run(command) {
            Err(rejection) => rejection,
            Ok(outcome) => panic!("{description} accepted: {outcome:?}"),
        }
    }
}

pub fn mac(text: &str) -> Mac {
    text.parse().expect("valid MAC literal")
}

pub fn wwn(text: &str) -> Wwn {
    text.parse().expect("valid WWN literal")
}

/// `02:00:00:00:00:xx`
pub fn mac_n(n: u64) -> Mac {
    Mac::from_u64(0x0200_0000_0000 + n).expect("unicast")
}

/// `20:00:00:00:00:00:00:xx`
pub fn wwn_n(n: u64) -> Wwn {
    Wwn::from_u64(0x2000_0000_0000_0000 + n).expect("NAA 2")
}

pub fn mac_pool(name: &str, first: u64, last: u64) -> Command {
    Command::CreatePool(PoolSpec {
        name: name.into(),
        range: PoolRange::Mac {
            first: mac_n(first),
            last: mac_n(last),
        },
    })
}

pub fn wwn_pool(name: &str, first: u64, last: u64) -> Command {
    Command::CreatePool(PoolSpec {
        name: name.into(),
        range: PoolRange::Wwn {
            first: wwn_n(first),
            last: wwn_n(last),
        },
    })
}

pub fn vnic(name: &str) -> VNicSpec {
    VNicSpec {
        name: name.into(),
        mac: None,
        network: "lan".into(),
        vlan: Some(10),
        pool: None,
    }
}

pub fn vhba(name: &str) -> VHbaSpec {
    VHbaSpec {
        name: name.into(),
        wwpn: None,
        wwnn: None,
        fabric: "fab-a".into(),
        pool: None,
    }
}

pub fn spec(name: &str, vnics: Vec<VNicSpec>, vhbas: Vec<VHbaSpec>) -> ProfileSpec {
    ProfileSpec {
        name: name.into(),
        server: format!("srv-{name}"),
        vnics,
        vhbas,
        preferred_unit: None,
        failback: Failback::Manual,
    }
}

pub fn create(spec: ProfileSpec) -> Command {
    Command::CreateProfile(spec)
}

pub fn update(spec: ProfileSpec, expected_revision: Option<Revision>) -> Command {
    Command::UpdateProfile {
        spec,
        expected_revision,
    }
}

pub fn delete(name: &str, expected_revision: Option<Revision>) -> Command {
    Command::DeleteProfile {
        name: name.into(),
        expected_revision,
    }
}

pub fn macs(profile: &Profile) -> Vec<Mac> {
    profile.vnics.iter().map(|vnic| vnic.mac).collect()
}

pub fn wwns(profile: &Profile) -> Vec<(Wwn, Wwn)> {
    profile
        .vhbas
        .iter()
        .map(|vhba| (vhba.wwpn, vhba.wwnn))
        .collect()
}

pub fn member(id: u64, name: &str) -> Member {
    Member {
        id,
        name: name.into(),
        role: Role::Unit,
        api_addr: format!("10.0.0.{id}:7000"),
        peer_addr: format!("10.0.0.{id}:7001"),
        cabling: BTreeMap::from([("srv-a".to_owned(), 1)]),
        capacity: 30,
        protocol: 0,
    }
}

/// A cluster with MAC pool `macs` (02:..:00 to 02:..:0f) and WWN pool `wwns` (20:..:00 to ..:0f).
pub fn with_pools() -> Cluster {
    let mut cluster = Cluster::new();
    cluster.ok(mac_pool("macs", 0, 15));
    cluster.ok(wwn_pool("wwns", 0, 15));
    cluster
}
