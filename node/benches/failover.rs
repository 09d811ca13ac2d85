//! Failover and drain timing, measured on the switches' own journals: from the instant a unit is
//! killed (CLOCK_MONOTONIC, taken just before) to the last identity presented on the peer's
//! switch (the `mono_ns` of the last Programmed / MacAnnounced / FabricLogin record).
//!
//! `cargo bench -p vnet-node --bench failover [-- --runs N]` prints min/p50/p99/max per case:
//! 30 presented profiles with 30 or 1,000 profiles in the cluster (the other 970 belong to
//! servers no unit is cabled to — a unit's switch has 30 host ports — so they stay unplaced and
//! only weigh on the state the controller scans), failed unit the leader or not; the drain of
//! 30 profiles; and the loss of a leading witness (time to a new leader, and how many fences the
//! healthy units' switches journaled, which quorum-held leases keep at 0). Numbers, not
//! verdicts: nothing here passes or fails on time.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::fabric::Fabric;
use fabric_agent::journal::{self, Event};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;

const HOST_PORTS: usize = 30;

#[derive(Clone, Copy)]
enum Case {
    Failover { total: usize, leader: bool },
    Drain,
}

impl Case {
    fn label(self) -> String {
        match self {
            Case::Failover { total, leader } => format!(
                "failover, {total} profiles ({HOST_PORTS} presented), failed unit {} the leader",
                if leader { "was" } else { "was not" }
            ),
            Case::Drain => format!("drain of {HOST_PORTS} profiles"),
        }
    }
}

/// The last time the journal shows `unit`'s switch presenting anything after `after_ns`.
fn last_presentation_ns(path: &std::path::Path, after_ns: u64) -> u64 {
    journal::read(path)
        .expect("journal")
        .iter()
        .filter(|r| r.mono_ns >= after_ns)
        .filter(|r| {
            matches!(
                r.event,
                Event::Programmed { .. } | Event::MacAnnounced { .. } | Event::FabricLogin { .. }
            )
        })
        .map(|r| r.mono_ns)
        .max()
        .expect("the peer presented something after the kill")
}

async fn one_run(case: Case) -> f64 {
    let servers: Vec<String> = (1..=HOST_PORTS)
        .map(|i| format!("rack1-srv{i:02}"))
        .collect();
    let mut fabric = Fabric::start_with(servers.clone(), servers.clone(), 600_000).await;
    let mut presented = fabric
        .create_profiles(&servers, "unit-a", pb::FailbackPolicy::Manual)
        .await;
    if let Case::Failover { total, .. } = case {
        let spare: Vec<String> = (0..total.saturating_sub(HOST_PORTS))
            .map(|i| format!("spare-srv{i:04}"))
            .collect();
        // Named after the presented ones, so names do not collide.
        let mut extra = fabric
            .create_profiles_named(&spare, "unit-a", pb::FailbackPolicy::Manual, HOST_PORTS)
            .await;
        extra.clear();
    }
    fabric.wait_presented(&presented, "unit-a", &[]).await;
    let mut admin = ClusterServiceClient::new(fabric.api());
    let started_ns = match case {
        Case::Failover { leader, .. } => {
            let status = fabric.status().await.expect("status");
            let wanted = if leader { 1 } else { 2 };
            if status.leader_id != Some(wanted) {
                admin
                    .transfer_leader(pb::TransferLeaderRequest { to_id: wanted })
                    .await
                    .expect("transfer leadership");
            }
            let at = fabric_agent::monotonic_now_ns();
            fabric.stop_node("unit-a").await;
            fabric.stop_switch("unit-a").await;
            at
        }
        Case::Drain => {
            let at = fabric_agent::monotonic_now_ns();
            admin
                .drain(pb::DrainRequest {
                    unit: "unit-a".into(),
                })
                .await
                .expect("drain");
            at
        }
    };
    fabric.wait_presented(&presented, "unit-b", &[]).await;
    let journal = fabric.unit("unit-b").journal.clone();
    let took_ms = (last_presentation_ns(&journal, started_ns) - started_ns) as f64 / 1e6;
    presented.clear();
    fabric.stop_all().await;
    took_ms
}

/// The witness leads, then its vnetd stops: milliseconds until a unit leads, and the fences and
/// ClearAlls both units' switches journaled from the stop until 3 s after (a fence would come
/// within a lease of the stop).
async fn witness_leader_run() -> (f64, usize) {
    let servers: Vec<String> = (1..=HOST_PORTS)
        .map(|i| format!("rack1-srv{i:02}"))
        .collect();
    let mut fabric = Fabric::start_with(servers.clone(), servers.clone(), 600_000).await;
    let half = HOST_PORTS / 2;
    let on_a = fabric
        .create_profiles(&servers[..half], "unit-a", pb::FailbackPolicy::Manual)
        .await;
    let on_b = fabric
        .create_profiles_named(&servers[half..], "unit-b", pb::FailbackPolicy::Manual, half)
        .await;
    fabric.wait_presented(&on_a, "unit-a", &[]).await;
    fabric.wait_presented(&on_b, "unit-b", &[]).await;
    let admin = ClusterServiceClient::new(fabric.api());
    let view = &fabric;
    common::wait_for("the witness leads", || {
        let mut admin = admin.clone();
        async move {
            let _ = admin
                .transfer_leader(pb::TransferLeaderRequest { to_id: 3 })
                .await;
            (view.status().await?.leader_id == Some(3)).then_some(())
        }
    })
    .await;
    let started_ns = fabric_agent::monotonic_now_ns();
    let started = Instant::now();
    fabric.stop_witness().await;
    let api = fabric.unit_api("unit-a");
    common::wait_for("a unit leads", || async {
        let status = ClusterServiceClient::new(api.clone())
            .get_cluster_status(pb::GetClusterStatusRequest {
                consistency: pb::ReadConsistency::Local as i32,
            })
            .await
            .ok()?
            .into_inner();
        matches!(status.leader_id, Some(1) | Some(2)).then_some(())
    })
    .await;
    let leader_ms = started.elapsed().as_secs_f64() * 1e3;
    // An observation window, not synchronisation: a fence would fall within a lease of the stop.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let fences = fabric
        .units
        .iter()
        .map(|unit| {
            journal::read(&unit.journal)
                .expect("journal")
                .iter()
                .filter(|r| r.mono_ns >= started_ns)
                .filter(|r| match &r.event {
                    Event::Fenced { ports, .. } => !ports.is_empty(),
                    Event::Cleared { reason, .. } => {
                        *reason == fabric_agent::journal::ClearReason::ClearAll
                    }
                    _ => false,
                })
                .count()
        })
        .sum();
    fabric.stop_all().await;
    (leader_ms, fences)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    // `--only TEXT` runs the cases whose label contains TEXT.
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cases = [
        Case::Failover {
            total: 30,
            leader: false,
        },
        Case::Failover {
            total: 30,
            leader: true,
        },
        Case::Failover {
            total: 1_000,
            leader: false,
        },
        Case::Failover {
            total: 1_000,
            leader: true,
        },
        Case::Drain,
    ];
    println!("{runs} runs per case; times in ms from the kill (or drain request) to the last identity presented on unit-b");
    println!(
        "{:<78} {:>8} {:>8} {:>8} {:>8}",
        "case", "min", "p50", "p99", "max"
    );
    for case in cases {
        if only
            .as_deref()
            .is_some_and(|only| !case.label().contains(only))
        {
            continue;
        }
        let started = Instant::now();
        let mut times: Vec<f64> = (0..runs).map(|_| runtime.block_on(one_run(case))).collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{:<78} {:>8.0} {:>8.0} {:>8.0} {:>8.0}   ({:.0} s)",
            case.label(),
            times[0],
            percentile(&times, 50.0),
            percentile(&times, 99.0),
            times[times.len() - 1],
            started.elapsed().as_secs_f64()
        );
    }
    let label = "leading witness lost: ms to a new leader; fences on healthy units";
    if only.as_deref().is_none_or(|only| label.contains(only)) {
        let started = Instant::now();
        let results: Vec<(f64, usize)> = (0..runs)
            .map(|_| runtime.block_on(witness_leader_run()))
            .collect();
        let mut times: Vec<f64> = results.iter().map(|(ms, _)| *ms).collect();
        times.sort_by(f64::total_cmp);
        let fences: usize = results.iter().map(|(_, f)| f).sum();
        println!(
            "{:<78} {:>8.0} {:>8.0} {:>8.0} {:>8.0}   ({:.0} s)",
            label,
            times[0],
            percentile(&times, 50.0),
            percentile(&times, 99.0),
            times[times.len() - 1],
            started.elapsed().as_secs_f64()
        );
        println!("  fences and ClearAlls on the two healthy units over {runs} runs: {fences}");
    }
}
