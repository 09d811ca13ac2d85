//! Whether this node can serve, told the standard ways: `/readyz` on the metrics listener and
//! the gRPC health service (`grpc.health.v1`) on the public port, so `grpc_health_probe`,
//! `grpcurl` and load balancers work unchanged. Both use [`readiness`].
//!
//! The health service reports the overall status (service `""`) and each public service the
//! same way: SERVING while [`readiness`] holds, NOT_SERVING otherwise and once the node stops.

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::metrics::PUBLIC_SERVICES;
use crate::node::{Node, CAUGHT_UP_LAG_ENTRIES_MAX};
use crate::shutdown::ShutdownSignal;

/// Whether `node` can serve reads and writes: it knows a leader, Raft runs, no NOSPACE alarm is
/// raised, and it has applied all but [`CAUGHT_UP_LAG_ENTRIES_MAX`] of the entries it holds.
pub fn readiness(node: &Node) -> Result<(), String> {
    let raft = node.raft().metrics().borrow().clone();
    if let Err(fatal) = &raft.running_state {
        return Err(format!("raft stopped: {fatal}"));
    }
    if raft.current_leader.is_none() {
        return Err("no leader is known".to_owned());
    }
    // As etcd's health: a cluster that refuses writes for want of space is not healthy, though
    // it still serves reads (the alarm is replicated, so every node says the same).
    let alarm = node.view().read(|applied| {
        applied
            .state
            .no_space_alarm()
            .map(|alarm| format!("alarm {} raised by {}", alarm.kind.name(), alarm.member))
    });
    if let Some(alarm) = alarm {
        return Err(format!(
            "{alarm}: writes that add data are refused until it is disarmed \
             (vnetctl alarm list)"
        ));
    }
    let applied = raft.last_applied.map_or(0, |id| id.index);
    let last = raft.last_log_index.unwrap_or(0);
    if last.saturating_sub(applied) > CAUGHT_UP_LAG_ENTRIES_MAX {
        return Err(format!(
            "applied index {applied} is more than {CAUGHT_UP_LAG_ENTRIES_MAX} entries behind the \
             log ({last})"
        ));
    }
    Ok(())
}

/// Keeps `reporter` in step with [`readiness`] until `stopping` turns true. Readiness depends
/// only on Raft's metrics, so it is looked at again each time they change.
pub async fn report(node: Node, reporter: HealthReporter, mut stopping: ShutdownSignal) {
    let mut raft_metrics = node.raft().metrics();
    let mut reported = None;
    loop {
        raft_metrics.borrow_and_update();
        let status = match readiness(&node) {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if reported != Some(status) {
            set_all(&reporter, status).await;
            reported = Some(status);
        }
        tokio::select! {
            changed = raft_metrics.changed() => if changed.is_err() { break },
            () = stopping.recv() => break,
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}

/// Sets the overall status and every public service's to `status`.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in PUBLIC_SERVICES {
        reporter.set_service_status(service, status).await;
    }
}
