//! The disk quota (`quota_bytes`, like etcd's `--quota-backend-bytes`): each node measures its
//! own store every [`QUOTA_CHECK_MS`] and reports to the cluster when it crosses its quota
//! either way ([`Command::ReportSpace`]). Past the quota the replicated state raises the member's
//! `NOSPACE` alarm, and every node refuses writes that add data until an operator disarms it
//! (`vnet_model::alarm` has the rules). The quota sits well below the disk's size so that the
//! reports, leases, placement and failover that still write under the alarm have room; a disk
//! that fills anyway stops the node cleanly (see `run` in `lib.rs`).

use std::time::Duration;

use vnet_model::{AlarmKind, Command};

use crate::connections::RateLimitedLog;
use crate::node::Node;
use crate::shutdown::ShutdownSignal;

/// How often a node measures its store.
pub const QUOTA_CHECK_MS: u64 = 500;

static MEASURE_FAILED: RateLimitedLog = RateLimitedLog::new();
static REPORT_FAILED: RateLimitedLog = RateLimitedLog::new();

/// Measures and reports until `stopping` is set.
pub async fn run(node: Node, mut stopping: ShutdownSignal) {
    let config = node.config().clone();
    let quota = config.quota_bytes;
    let actor = format!("vnetd/{}", config.name);
    let mut ticker = tokio::time::interval(Duration::from_millis(QUOTA_CHECK_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopping.recv() => return,
        }
        let data_dir = config.data_dir.clone();
        let used = match tokio::task::spawn_blocking(move || {
            raft_store::usage::disk_usage(&data_dir)
        })
        .await
        {
            Ok(Ok(used)) => used,
            Ok(Err(e)) => {
                if let Some(skipped) = MEASURE_FAILED.due() {
                    tracing::warn!(error = %e, failed_before = skipped, data_dir = %config.data_dir.display(), "cannot measure the store's disk usage");
                }
                continue;
            }
            Err(_) => continue,
        };
        let raised = node.view().read(|applied| {
            applied
                .state
                .alarms()
                .find(|a| a.member == config.name && a.kind == AlarmKind::NoSpace)
                .cloned()
        });
        let over = used > quota;
        // Report a crossing, or a new quota (after a restart with another --quota-bytes); not
        // every measurement, which would write to a full disk every half second.
        let report = match &raised {
            None => over,
            // The last report's side of the quota differs from this measurement's.
            Some(alarm) => over == alarm.cleared() || alarm.quota_bytes != quota,
        };
        if !report {
            continue;
        }
        if over && raised.is_none() {
            tracing::error!(
                used_bytes = used,
                quota_bytes = quota,
                "the store in {} takes {used} bytes, past quota_bytes ({quota}); raising alarm \
                 NOSPACE: writes that add data are refused until it is disarmed",
                config.data_dir.display()
            );
        } else if !over {
            tracing::info!(
                used_bytes = used,
                quota_bytes = quota,
                "the store is back within quota_bytes; alarm NOSPACE may be disarmed"
            );
        }
        let command = Command::ReportSpace {
            member: config.name.clone(),
            used_bytes: used,
            quota_bytes: quota,
        };
        if let Err(e) = node.write(&actor, command).await {
            if let Some(skipped) = REPORT_FAILED.due() {
                tracing::warn!(error = %e, failed_before = skipped, "cannot report disk usage; will retry");
            }
        }
    }
}
