//! Property tests over random command sequences. Names and identities come from small sets so
//! that collisions, exhaustion, overlaps and stale revisions happen often.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use vnet_model::{
    apply, Command, Failback, Identity, Mac, Member, Outcome, PoolRange, PoolSpec, ProfileSpec,
    Rejection, Request, Revision, Role, State, VHbaSpec, VNicSpec, Wwn,
};

const PROFILE_NAMES: [&str; 4] = ["p0", "p1", "p2", "p3"];
const POOL_NAMES: [&str; 4] = ["a", "b", "c", "d"];
const VNIC_NAMES: [&str; 3] = ["eth0", "eth1", "eth2"];
const VHBA_NAMES: [&str; 2] = ["hba0", "hba1"];
/// Identities are drawn from `0..IDENTITY_SPACE` above a fixed base, so pools (at most 6 wide)
/// and explicit identities land on each other.
const IDENTITY_SPACE: u64 = 24;

fn mac_n(n: u64) -> Mac {
    Mac::from_u64(0x0200_0000_0000 + n).expect("unicast")
}

fn wwn_n(n: u64) -> Wwn {
    Wwn::from_u64(0x2000_0000_0000_0000 + n).expect("NAA 2")
}

/// Which revision an update or delete expects, resolved against the state when it runs, so that
/// matching revisions are as common as stale ones.
#[derive(Debug, Clone)]
enum Expect {
    Nothing,
    Current,
    Stale(Revision),
}

#[derive(Debug, Clone)]
enum Step {
    Command(Command),
    /// With an index, the target is an existing profile (if any) rather than the spec's name, so
    /// that most updates and deletes find something.
    Update(ProfileSpec, Expect, Option<Index>),
    Delete(&'static str, Expect, Option<Index>),
}

fn pool_choice() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        12 => Just(None),
        6 => proptest::sample::select(&POOL_NAMES[..]).prop_map(|name| Some(name.to_owned())),
        // A pool that never exists.
        1 => Just(Some("zz".to_owned())),
    ]
}

fn vlan() -> impl Strategy<Value = Option<u16>> {
    proptest::option::of(prop_oneof![20 => Just(100u16), 1 => Just(0u16), 1 => Just(4095u16)])
}

/// Distinct names in any order, and now and then a repeated one (which must be refused).
fn names(all: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    (
        proptest::sample::subsequence(all.to_vec(), 0..=all.len()).prop_shuffle(),
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(mut names, repeat)| {
            if repeat {
                if let Some(&first) = names.first() {
                    names.push(first);
                }
            }
            names
        })
}

fn vnic_specs() -> impl Strategy<Value = Vec<VNicSpec>> {
    let body = (
        proptest::option::weighted(0.3, (0..IDENTITY_SPACE).prop_map(mac_n)),
        vlan(),
        pool_choice(),
    );
    (
        names(&VNIC_NAMES),
        proptest::collection::vec(body, VNIC_NAMES.len() + 1),
    )
        .prop_map(|(names, bodies)| {
            names
                .into_iter()
                .zip(bodies)
                .map(|(name, (mac, vlan, pool))| VNicSpec {
                    name: name.to_owned(),
                    mac,
                    network: "lan".into(),
                    vlan,
                    pool,
                })
                .collect()
        })
}

fn vhba_specs() -> impl Strategy<Value = Vec<VHbaSpec>> {
    let wwn = || proptest::option::weighted(0.25, (0..IDENTITY_SPACE).prop_map(wwn_n));
    let body = (wwn(), wwn(), pool_choice());
    (
        names(&VHBA_NAMES),
        proptest::collection::vec(body, VHBA_NAMES.len() + 1),
    )
        .prop_map(|(names, bodies)| {
            names
                .into_iter()
                .zip(bodies)
                .map(|(name, (wwpn, wwnn, pool))| VHbaSpec {
                    name: name.to_owned(),
                    wwpn,
                    wwnn,
                    fabric: "fab-a".into(),
                    pool,
                })
                .collect()
        })
}

fn profile_spec() -> impl Strategy<Value = ProfileSpec> {
    (
        proptest::sample::select(&PROFILE_NAMES[..]),
        0..3u8,
        vnic_specs(),
        vhba_specs(),
        any::<bool>(),
    )
        .prop_map(|(name, server, vnics, vhbas, auto)| ProfileSpec {
            name: name.to_owned(),
            server: format!("srv{server}"),
            vnics,
            vhbas,
            preferred_unit: None,
            failback: if auto {
                Failback::Auto
            } else {
                Failback::Manual
            },
        })
}

fn pool_spec() -> impl Strategy<Value = PoolSpec> {
    (
        proptest::sample::select(&POOL_NAMES[..]),
        any::<bool>(),
        0..IDENTITY_SPACE,
        // Lengths up to 6, and sometimes backwards (first > last), which must be refused.
        -1i64..6,
    )
        .prop_map(|(name, is_mac, first, length)| {
            let last = first.saturating_add_signed(length);
            let range = if is_mac {
                PoolRange::Mac {
                    first: mac_n(first),
                    last: mac_n(last),
                }
            } else {
                PoolRange::Wwn {
                    first: wwn_n(first),
                    last: wwn_n(last),
                }
            };
            PoolSpec {
                name: name.to_owned(),
                range,
            }
        })
}

fn member() -> impl Strategy<Value = Member> {
    (
        0..4u64,
        0..4u8,
        any::<bool>(),
        proptest::collection::btree_map(
            proptest::sample::select(vec!["srv0", "srv1", "srv2"]),
            1..4u8,
            0..3,
        ),
        0..3u32,
    )
        .prop_map(|(id, name, witness, cabling, capacity)| Member {
            id,
            name: format!("u{name}"),
            role: if witness { Role::Witness } else { Role::Unit },
            api_addr: format!("10.0.0.{id}:7000"),
            peer_addr: format!("10.0.0.{id}:7001"),
            cabling: cabling
                .into_iter()
                .map(|(server, port)| (server.to_owned(), port))
                .collect(),
            capacity,
            protocol: 0,
        })
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Nothing),
        Just(Expect::Current),
        (0..5u64).prop_map(Expect::Stale),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => pool_spec().prop_map(|spec| Step::Command(Command::CreatePool(spec))),
        1 => proptest::sample::select(&POOL_NAMES[..])
            .prop_map(|name| Step::Command(Command::DeletePool { name: name.to_owned() })),
        5 => profile_spec().prop_map(|spec| Step::Command(Command::CreateProfile(spec))),
        4 => (profile_spec(), expect(), existing())
            .prop_map(|(spec, expect, target)| Step::Update(spec, expect, target)),
        2 => (proptest::sample::select(&PROFILE_NAMES[..]), expect(), existing())
            .prop_map(|(name, expect, target)| Step::Delete(name, expect, target)),
        1 => member().prop_map(|member| Step::Command(Command::PutMember(member))),
        1 => (0..4u64).prop_map(|id| Step::Command(Command::RemoveMember { id })),
    ]
}

fn existing() -> impl Strategy<Value = Option<Index>> {
    proptest::option::weighted(0.8, any::<Index>())
}

fn resolve(step: &Step, state: &State) -> Command {
    let target = |name: &str, existing: &Option<Index>| {
        let names: Vec<&str> = state.profiles().map(|p| p.name.as_str()).collect();
        match existing {
            Some(index) if !names.is_empty() => names[index.index(names.len())].to_owned(),
            _ => name.to_owned(),
        }
    };
    let expected = |name: &str, expect: &Expect| match expect {
        Expect::Nothing => None,
        Expect::Current => Some(state.profile(name).map_or(0, |p| p.revision)),
        Expect::Stale(back) => Some(
            state
                .profile(name)
                .map_or(0, |p| p.revision.saturating_sub(back + 1)),
        ),
    };
    match step {
        Step::Command(command) => command.clone(),
        Step::Update(spec, expect, existing) => {
            let name = target(&spec.name, existing);
            Command::UpdateProfile {
                expected_revision: expected(&name, expect),
                spec: ProfileSpec {
                    name,
                    ..spec.clone()
                },
            }
        }
        Step::Delete(name, expect, existing) => {
            let name = target(name, existing);
            Command::DeleteProfile {
                expected_revision: expected(&name, expect),
                name,
            }
        }
    }
}

/// Runs the steps from an empty state, checking after each one; returns the final state and the
/// concrete requests and results, for replay.
type Log = Vec<(Revision, Request, Result<Outcome, Rejection>)>;

fn run_checked(steps: &[Step]) -> Result<(State, Log), TestCaseError> {
    let mut state = State::default();
    let mut log = Vec::new();
    for (position, step) in steps.iter().enumerate() {
        // Gaps of 1 or 2 between revisions, as log entries that are not commands leave.
        let revision = state.revision() + 1 + (position as Revision % 2);
        let request = Request {
            actor: format!("client-{}", position % 3),
            command: resolve(step, &state),
            trace: None,
            on_behalf_of: None,
        };
        let before = state.clone();
        let result = apply(&mut state, revision, &request);
        match &result {
            Ok(_) => prop_assert_eq!(state.revision(), revision),
            Err(_) => prop_assert_eq!(&state, &before, "refused but changed: {:?}", request),
        }
        if let Err(broken) = state.check_invariants() {
            return Err(TestCaseError::fail(format!("after {request:?}: {broken}")));
        }
        check_identities_independently(&state)?;
        if let (Command::CreateProfile(spec), Ok(Outcome::Profile(profile))) =
            (&request.command, &result)
        {
            check_first_allocation_is_lowest_free(
                &before,
                spec,
                profile.vnics.iter().map(|v| v.mac),
            )?;
        }
        log.push((revision, request, result));
    }
    Ok((state, log))
}

/// Unique identities and pool usage, computed from the profiles alone rather than from the
/// index that `check_invariants` compares against.
fn check_identities_independently(state: &State) -> Result<(), TestCaseError> {
    let mut owners: BTreeMap<Identity, &str> = BTreeMap::new();
    for profile in state.profiles() {
        for identity in profile.identities() {
            if let Some(other) = owners.insert(identity, &profile.name) {
                return Err(TestCaseError::fail(format!(
                    "{identity} held by {other} and {}",
                    profile.name
                )));
            }
            let owner = match identity {
                Identity::Mac(mac) => state.owner_of_mac(mac),
                Identity::Wwn(wwn) => state.owner_of_wwn(wwn),
            };
            prop_assert_eq!(owner, Some(profile.name.as_str()));
        }
    }
    for pool in state.pools() {
        let used = owners
            .keys()
            .filter(|&&identity| pool.range.contains(identity))
            .count();
        let usage = state.pool_usage(&pool.name).expect("listed pool has usage");
        prop_assert_eq!(usage.used, used as u64, "pool {}", pool.name);
        prop_assert_eq!(usage.size, pool.range.size());
    }
    Ok(())
}

/// The first vNIC of a new profile that had no explicit MAC got the lowest MAC that was free
/// before, not given explicitly in the request, from the named pool or the first MAC pool by name
/// with any such MAC.
fn check_first_allocation_is_lowest_free(
    before: &State,
    spec: &ProfileSpec,
    macs: impl Iterator<Item = Mac>,
) -> Result<(), TestCaseError> {
    let explicit: BTreeSet<Mac> = spec.vnics.iter().filter_map(|v| v.mac).collect();
    let Some((vnic, mac)) = spec.vnics.iter().zip(macs).find(|(v, _)| v.mac.is_none()) else {
        return Ok(());
    };
    let candidates: Vec<_> = before
        .pools()
        .filter(|pool| match &vnic.pool {
            Some(name) => pool.name == *name,
            None => matches!(pool.range, PoolRange::Mac { .. }),
        })
        .collect();
    let expected = candidates.iter().find_map(|pool| {
        let (first, last) = pool.range.bounds();
        (first..=last)
            .map(|value| Mac::from_u64(value).expect("MAC pool value"))
            .find(|mac| before.owner_of_mac(*mac).is_none() && !explicit.contains(mac))
    });
    prop_assert_eq!(Some(mac), expected, "first allocated MAC for {:?}", spec);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold_after_every_step(steps in proptest::collection::vec(step(), 1..80)) {
        run_checked(&steps)?;
    }

    #[test]
    fn replicas_applying_the_same_log_agree(steps in proptest::collection::vec(step(), 1..80)) {
        let (leader, log) = run_checked(&steps)?;

        let mut follower = State::default();
        for (revision, request, result) in &log {
            prop_assert_eq!(&apply(&mut follower, *revision, request), result);
        }
        prop_assert_eq!(&follower, &leader);

        let json = serde_json::to_string(&leader).expect("serialize");
        let restored: State = serde_json::from_str(&json).expect("deserialize");
        prop_assert_eq!(&restored, &leader);
        prop_assert_eq!(serde_json::to_string(&restored).expect("serialize"), json);
    }

    #[test]
    fn a_replica_restored_from_a_snapshot_mid_log_continues_identically(
        steps in proptest::collection::vec(step(), 2..80),
        cut in any::<Index>(),
    ) {
        let (leader, log) = run_checked(&steps)?;
        let cut = cut.index(log.len());
        let mut replica = State::default();
        for (revision, request, _) in &log[..cut] {
            let _ = apply(&mut replica, *revision, request);
        }
        let snapshot = serde_json::to_vec(&replica).expect("serialize");
        let mut restored: State = serde_json::from_slice(&snapshot).expect("deserialize");
        prop_assert_eq!(restored.check_invariants(), Ok(()));
        for (revision, request, result) in &log[cut..] {
            prop_assert_eq!(&apply(&mut restored, *revision, request), result);
        }
        prop_assert_eq!(&restored, &leader);
    }
}
