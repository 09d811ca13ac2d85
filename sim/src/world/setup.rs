//! The world at time zero: the switches' cabling, the log every node starts with (members and
//! profiles), and each node's clock and timers.

use super::*;

fn switch_spec(unit: usize, fencing: bool) -> SwitchSpec {
    SwitchSpec {
        cabling: (0..PROFILES)
            .map(|i| (port_of(unit, i), server_of(i)))
            .collect(),
        capacity: Capacity {
            eth_ports: 2,
            vfs_per_eth_port: 16,
            fc_ports: 2,
            npiv_per_fc_port: 16,
        },
        watchdog: if fencing {
            WatchdogMode::Enforced
        } else {
            WatchdogMode::UnsafeDisabled
        },
    }
}

fn port_of(unit: usize, profile: usize) -> u8 {
    (unit * 10 + profile + 1) as u8
}

fn server_of(profile: usize) -> String {
    format!("srv{profile:02}")
}

pub fn profile_name(profile: usize) -> String {
    format!("p{profile}")
}

/// The log every node starts with: the members and the profiles, committed in term 1.
fn genesis() -> Vec<Entry> {
    let mut commands = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let is_unit = i < 2;
        commands.push(Command::PutMember(Member {
            id: i as u64 + 1,
            name: (*name).into(),
            role: if is_unit {
                MemberRole::Unit
            } else {
                MemberRole::Witness
            },
            api_addr: format!("sim-{name}:7001"),
            peer_addr: format!("sim-{name}:7101"),
            cabling: if is_unit {
                (0..PROFILES)
                    .map(|p| (server_of(p), port_of(i, p)))
                    .collect()
            } else {
                BTreeMap::new()
            },
            capacity: if is_unit { PROFILES as u32 } else { 0 },
            protocol: vnet_model::member::PROTOCOL,
        }));
    }
    for p in 0..PROFILES {
        let id = 0x10 + p as u8;
        commands.push(Command::CreateProfile(ProfileSpec {
            name: profile_name(p),
            server: server_of(p),
            vnics: vec![VNicSpec {
                name: "eth0".into(),
                mac: Some(format!("02:00:00:00:00:{id:02x}").parse().expect("mac")),
                network: "net".into(),
                vlan: Some(10),
                pool: None,
            }],
            vhbas: vec![VHbaSpec {
                name: "fc0".into(),
                wwpn: Some(
                    format!("21:00:00:00:00:00:00:{id:02x}")
                        .parse()
                        .expect("wwpn"),
                ),
                wwnn: Some(
                    format!("20:00:00:00:00:00:00:{id:02x}")
                        .parse()
                        .expect("wwnn"),
                ),
                fabric: "a".into(),
                pool: None,
            }],
            preferred_unit: Some(UNITS[p % 2].into()),
            failback: if p % 3 == 0 {
                Failback::Auto
            } else {
                Failback::Manual
            },
        }));
    }
    commands
        .into_iter()
        .map(|command| Entry {
            term: 1,
            request: Some(Request {
                actor: "sim/setup".into(),
                command,
                trace: None,
                on_behalf_of: None,
            }),
        })
        .collect()
}

impl World {
    pub fn new(seed: u64, config: Config, trace_all: bool) -> World {
        let mut rng = Rng::new(seed);
        let log = genesis();
        let durable = Durable {
            term: 1,
            voted_for: None,
            vote_committed: false,
            commit_saved: log.len() as u64,
            log: log.clone(),
        };
        let mut nodes = Vec::new();
        let base_instant = Instant::now();
        for (i, name) in NAMES.iter().enumerate() {
            let rate =
                rng.range(0, 2 * config.drift_ppm_max + 1) as i64 - config.drift_ppm_max as i64;
            let clock = Clock {
                offset: rng.range(1_000 * MS, 1_000_000 * MS),
                rate_ppm: rate,
            };
            let peers = (1..=3).filter(|p| *p != i as u64 + 1).collect();
            let now_local = clock.local(0);
            let raft = Raft::start(
                i as u64 + 1,
                peers,
                config.raft,
                durable.clone(),
                now_local,
                rng.range(0, 1_000),
            );
            let is_unit = i < 2;
            nodes.push(Node {
                name,
                is_unit,
                clock,
                up: true,
                life: 0,
                paused_until: 0,
                raft,
                state: State::default(),
                applied: 0,
                grants: Grants::new(base_instant + Duration::from_nanos(now_local)),
                ctl: ControllerRun::default(),
                reads: BTreeMap::new(),
                writes: BTreeMap::new(),
                batching: Vec::new(),
                outstanding: BTreeMap::new(),
                waiting: Vec::new(),
                agent: Agent::new(),
                switch: is_unit.then(|| Switch::new(switch_spec(i, config.fencing))),
                switch_life: 0,
            });
        }
        let mut world = World {
            config,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            rng,
            nodes,
            cut: [[false; 3]; 3],
            loss_per_mille: [0; 3],
            delay_ns: [0; 3],
            next_id: 0,
            base: base_instant,
            oracle_log: Vec::new(),
            oracle: State::default(),
            presented: Presentations::default(),
            violation: None,
            trace: VecDeque::new(),
            trace_all,
            stats: Stats::default(),
            spec_of: [
                switch_spec(0, config.fencing),
                switch_spec(1, config.fencing),
            ],
            watched: Vec::new(),
            leader_since: None,
            load: Load::Light,
            up_since: [0; 3],
            quiet_since: [0; 3],
            link_since: [[0; 3]; 3],
            light_since: 0,
        };
        world.load = [Load::Light, Load::Busy, Load::Overloaded][world.rng.weighted(&[2, 2, 1])];
        if world.load != Load::Light {
            world.light_since = u64::MAX;
        }
        for i in 0..3 {
            world.apply_committed(i);
            world.start_timers(i);
        }
        world
    }
}
