//! Leadership lost, moved or paused fences no healthy unit; a unit that dies is still failed
//! over.

use std::time::Duration;

use crate::common::wait_for;
use fabric_agent::journal::{self, Event};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leading_witness_fences_no_unit_and_a_later_unit_death_still_fails_over() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    plane.transfer(3).await;
    let marks = [plane.journal_mark("unit-a"), plane.journal_mark("unit-b")];
    plane.node("witness").kill9();
    let leader = plane.leader().await;
    assert_ne!(leader, 3, "a unit leads after the witness died");
    plane
        .wait_leases_outlived(&["unit-a", "unit-b"], fabric_agent::monotonic_now_ns())
        .await;
    plane.assert_no_fence_since("unit-a", marks[0], "the leading witness's death");
    plane.assert_no_fence_since("unit-b", marks[1], "the leading witness's death");
    // With the witness back, a majority remains when unit-b dies: unit-a takes its profiles.
    plane.node("witness").start();
    let mark_a = plane.journal_mark("unit-a");
    plane.node("unit-b").kill9();
    plane
        .wait_presented("unit-a", &plane.profiles.clone())
        .await;
    let records = journal::read(&plane.switch("unit-a").journal).expect("journal");
    assert!(
        !records[mark_a..]
            .iter()
            .any(|r| matches!(r.event, Event::Fenced { .. })),
        "the survivor was fenced while taking over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_handed_between_every_pair_fences_no_unit() {
    let _serial = SERIAL.lock().await;
    let plane = DataPlane::start().await;
    let marks = [plane.journal_mark("unit-a"), plane.journal_mark("unit-b")];
    let first = plane.leader().await;
    // Every ordered pair: from each node to each other node.
    let mut order = vec![first];
    for (from, to) in [(1, 2), (2, 3), (3, 1), (1, 3), (3, 2), (2, 1)] {
        if *order.last().expect("a leader") != from {
            plane.transfer(from).await;
            order.push(from);
        }
        plane.transfer(to).await;
        order.push(to);
    }
    plane
        .wait_leases_outlived(&["unit-a", "unit-b"], fabric_agent::monotonic_now_ns())
        .await;
    let hops: Vec<&str> = order.iter().map(|id| name_of(*id)).collect();
    plane.assert_no_fence_since("unit-a", marks[0], &format!("transfers {hops:?}"));
    plane.assert_no_fence_since("unit-b", marks[1], &format!("transfers {hops:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_for_two_election_timeouts_or_restarted_fences_no_healthy_unit() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    for leader in [3, 1] {
        plane.transfer(leader).await;
        let name = name_of(leader);
        let healthy: Vec<&str> = ["unit-a", "unit-b"]
            .into_iter()
            .filter(|u| *u != name)
            .collect();
        let marks: Vec<usize> = healthy.iter().map(|u| plane.journal_mark(u)).collect();
        plane.node(name).stop();
        // The fault itself: stopped for twice the longest election timeout.
        tokio::time::sleep(2 * ELECTION_MAX).await;
        plane.node(name).resume();
        plane.leader().await;
        plane
            .wait_leases_outlived(&healthy, fabric_agent::monotonic_now_ns())
            .await;
        for (unit, mark) in healthy.iter().zip(&marks) {
            plane.assert_no_fence_since(unit, *mark, &format!("SIGSTOP of the leader {name}"));
        }
        // Restart of the leader: kill -9, start again on the same data.
        plane.transfer(leader).await;
        let marks: Vec<usize> = healthy.iter().map(|u| plane.journal_mark(u)).collect();
        plane.node(name).kill9();
        plane.node(name).start();
        plane.leader().await;
        plane
            .wait_leases_outlived(&healthy, fabric_agent::monotonic_now_ns())
            .await;
        for (unit, mark) in healthy.iter().zip(&marks) {
            plane.assert_no_fence_since(unit, *mark, &format!("restart of the leader {name}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leading_witness_down_for_thirty_seconds_fences_no_unit() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    // Leading, so that its loss also costs the cluster its leader.
    plane.transfer(3).await;
    let marks = [plane.journal_mark("unit-a"), plane.journal_mark("unit-b")];
    plane.node("witness").kill9();
    // The fault itself: the witness stays down for 30 s.
    tokio::time::sleep(Duration::from_secs(30)).await;
    plane
        .wait_leases_outlived(&["unit-a", "unit-b"], fabric_agent::monotonic_now_ns())
        .await;
    plane.assert_no_fence_since("unit-a", marks[0], "30 s without the witness");
    plane.assert_no_fence_since("unit-b", marks[1], "30 s without the witness");
    // The units kept presenting their own profiles all along, and still do.
    plane
        .wait_presented("unit-a", &plane.placed_on("unit-a"))
        .await;
    plane
        .wait_presented("unit-b", &plane.placed_on("unit-b"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_voters_of_three_gone_the_survivor_fences_and_its_status_says_why() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    plane.node("witness").kill9();
    plane.node("unit-b").kill9();
    // No majority: nothing can fail over, and unit-a, holding one grant of three, fences.
    let survivor = channel(plane.node("unit-a").api);
    let status = wait_for("unit-a's status says it holds no lease", || async {
        let status = ClusterServiceClient::new(survivor.clone())
            .get_cluster_status(pb::GetClusterStatusRequest {
                consistency: pb::ReadConsistency::Local as i32,
            })
            .await
            .ok()?
            .into_inner();
        let unit = status.units.iter().find(|u| u.name == "unit-a")?;
        (unit.lease_left_ms.is_none() && unit.voters_granting.is_some()).then_some(status)
    })
    .await;
    // (unit-a may still call itself leader: an openraft leader does not step down for want of
    // a quorum, but it can commit nothing.)
    let unit = status
        .units
        .iter()
        .find(|u| u.name == "unit-a")
        .expect("unit-a");
    assert!(unit.voters_granting < Some(2), "{unit:?}");
    assert!(unit.note.contains("fewer than a majority"), "{}", unit.note);
    plane.wait_until_fenced("unit-a").await;
    // Nothing was failed over: the profiles stay placed where they were.
    let placements = status.placements;
    assert!(
        placements.iter().all(|p| p.failed_over_from.is_empty()),
        "{placements:?}"
    );
}
