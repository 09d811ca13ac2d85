//! Failover with fencing, in one process: two units (each a vnetd plus its own simulated switch)
//! and a witness. A unit is "killed" by stopping its vnetd and, for a whole-unit failure, its
//! switch too. Every check reads the switches themselves (state and journals), not only what the
//! cluster says.

mod common;

use common::fabric::{presents_exactly, Fabric};
use common::wait_for;
use fabric_agent::{FabricDriver, SimDriver};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

async fn placement(fabric: &Fabric, profile: &str) -> Option<pb::ProfilePlacement> {
    fabric
        .status()
        .await?
        .placements
        .into_iter()
        .find(|p| p.profile == profile)
}

/// The names ListProfiles returns with its unit filter set to `unit`.
async fn listed_on(fabric: &Fabric, unit: &str) -> Vec<String> {
    let listed = ProfileServiceClient::new(fabric.api())
        .list_profiles(pb::ListProfilesRequest {
            unit: unit.to_owned(),
            ..Default::default()
        })
        .await
        .expect("ListProfiles with a unit filter");
    listed
        .into_inner()
        .profiles
        .into_iter()
        .map(|p| p.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_unit_failure_moves_every_profile_with_identical_identities() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let all = names(&["prof-1", "prof-2", "prof-3", "prof-4"]);
    assert_eq!(listed_on(&fabric, "unit-a").await, all);
    assert_eq!(listed_on(&fabric, "unit-b").await, names(&[]));
    fabric.stop_node("unit-a").await;
    fabric.stop_switch("unit-a").await;
    // srv-4 is not cabled to unit-b: everything else moves, that one is unplaced with a reason.
    fabric
        .wait_presented(&profiles, "unit-b", &["prof-4"])
        .await;
    // The switch shows it first; status follows once unit-b's report is applied.
    let moved = wait_for("prof-1 is reported failed over", || async {
        placement(&fabric, "prof-1")
            .await
            .filter(|p| p.state == pb::PlacementState::FailedOver as i32)
    })
    .await;
    assert_eq!(moved.failed_over_from, "unit-a");
    // ListProfiles' unit filter follows the placement.
    wait_for(
        "ListProfiles lists the moved profiles on unit-b",
        || async {
            (listed_on(&fabric, "unit-b").await == names(&["prof-1", "prof-2", "prof-3"]))
                .then_some(())
        },
    )
    .await;
    let stuck = wait_for("prof-4 is reported unplaced", || async {
        placement(&fabric, "prof-4")
            .await
            .filter(|p| p.state == pb::PlacementState::Unplaced as i32)
    })
    .await;
    assert!(stuck.reason.contains("srv-4"), "{}", stuck.reason);
    // The dead unit's last report is cleared: its switch fenced before the failover.
    wait_for("status shows unit-a presenting nothing", || async {
        let status = fabric.status().await?;
        let unit_a = status.units.iter().find(|u| u.name == "unit-a")?;
        (unit_a.presented.is_empty() && unit_a.lease == pb::LeaseHealth::Expired as i32)
            .then_some(())
    })
    .await;
    assert!(fabric.assert_no_double_presentation() > 0);
    fabric.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_whose_vnetd_dies_fences_its_switch_before_the_peer_programs() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    // Only the management process dies; the switch (data plane) keeps running on its own.
    fabric.stop_node("unit-a").await;
    fabric
        .wait_presented(&profiles, "unit-b", &["prof-4"])
        .await;
    let a_switch = fabric.unit("unit-a").switch_addr;
    let state = SimDriver::connect_lazy(&a_switch.to_string())
        .expect("driver")
        .state()
        .await
        .expect("unit-a's switch still answers");
    assert!(state.fenced, "unit-a's switch fenced itself");
    assert!(
        state.ports.is_empty(),
        "unit-a's switch presents nothing: {:?}",
        state.ports
    );
    fabric.assert_no_double_presentation();
    fabric.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_works_when_the_failed_unit_was_the_leader() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    let mut admin = ClusterServiceClient::new(fabric.api());
    admin
        .transfer_leader(pb::TransferLeaderRequest { to_id: 1 })
        .await
        .expect("make unit-a the leader");
    fabric.stop_node("unit-a").await;
    fabric
        .wait_presented(&profiles, "unit-b", &["prof-4"])
        .await;
    let status = fabric.status().await.expect("status");
    assert_ne!(status.leader_id, Some(1));
    fabric.assert_no_double_presentation();
    fabric.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_empties_a_unit_and_undrain_brings_auto_failback_home() {
    let mut fabric = Fabric::start(500).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Auto).await;
    let mut admin = ClusterServiceClient::new(fabric.api());
    admin
        .drain(pb::DrainRequest {
            unit: "unit-a".into(),
        })
        .await
        .expect("drain");
    // Everything unit-b is cabled for moves; srv-4's profile has nowhere to go and stays.
    fabric
        .wait_presented(&profiles, "unit-b", &["prof-4"])
        .await;
    let a_switch = fabric.unit("unit-a").switch_addr;
    let remaining = Fabric::switch_ports(a_switch).await;
    assert_eq!(
        remaining
            .values()
            .map(|p| p.profile.as_str())
            .collect::<Vec<_>>(),
        ["prof-4"],
        "a draining unit keeps only what no other unit can take"
    );
    let err = admin
        .failover(pb::FailoverRequest {
            profile: "prof-1".into(),
            to_unit: "unit-a".into(),
            from_unit: String::new(),
        })
        .await
        .expect_err("a draining unit is given nothing");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("draining"), "{err:?}");

    admin
        .undrain(pb::UndrainRequest {
            unit: "unit-a".into(),
        })
        .await
        .expect("undrain");
    // Failback auto: back to the preferred unit after the hold-down.
    fabric.wait_presented(&profiles, "unit-a", &[]).await;
    fabric.assert_no_double_presentation();
    fabric.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_moves_break_before_make_and_names_what_blocks_it() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    let mut admin = ClusterServiceClient::new(fabric.api());
    let moved = admin
        .failover(pb::FailoverRequest {
            profile: "prof-2".into(),
            to_unit: "unit-b".into(),
            from_unit: String::new(),
        })
        .await
        .expect("failover")
        .into_inner();
    assert_eq!(moved.profiles, ["prof-2"]);
    let b_switch = fabric.unit("unit-b").switch_addr;
    let b_servers = fabric.unit("unit-b").servers.clone();
    wait_for("prof-2 is presented on unit-b", || async {
        let ports = Fabric::switch_ports(b_switch).await;
        presents_exactly(&ports, &b_servers, &profiles[1]).then_some(())
    })
    .await;
    fabric.assert_no_double_presentation();
    let err = admin
        .failover(pb::FailoverRequest {
            profile: "prof-4".into(),
            to_unit: "unit-b".into(),
            from_unit: String::new(),
        })
        .await
        .expect_err("srv-4 is not cabled to unit-b");
    assert!(err.message().contains("not cabled"), "{err:?}");
    fabric.stop_all().await;
}
