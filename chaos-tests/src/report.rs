//! The report of a run: faults by kind, operations by outcome, each checker's verdict, and
//! how to reproduce it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::checks::Verdict;
use crate::history::{Call, History, Outcome, OutcomeClass};
use crate::run::{RunConfig, CLIENTS_DEFAULT, KEYS_DEFAULT};
use crate::schedule::{FaultKind, Step};
use crate::workload::FINAL_CLIENT;

/// Counts of one operation kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Applied writes, and reads answered.
    pub ok: u64,
    /// Writes the model refused (exists, not found, revision mismatch): definite, not applied.
    pub refused: u64,
    pub failed: u64,
    pub indeterminate: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub clients: u32,
    pub keys: u32,
    pub duration_ms: u64,
    pub workload_ms: u64,
    pub faults: BTreeMap<FaultKind, u64>,
    pub ops: BTreeMap<&'static str, OpCounts>,
    /// Failed operations that vnetd refused for a reason the workload should never provoke.
    pub unexpected_refusals: Vec<String>,
    pub final_reads: u64,
    pub longest_unserved_ms: u64,
    pub verdicts: Vec<(&'static str, Verdict)>,
    /// Failover durations, sorted (ms): from a unit's kill (whole unit or vnetd) to the last of
    /// its profiles presented by the peer.
    pub failovers_ms: Vec<u64>,
    /// Kills of a presenting unit after which the peer took over nothing (the unit came back
    /// first).
    pub failovers_without_takeover: usize,
    /// Identity-time presented by units while they could reach a majority (past the grace
    /// after each heal), and identity-time lost to interruptions then (ns).
    pub data_plane: Option<(u64, u64)>,
    /// Test-only unsafe mode (no fencing, no watchdog), named in the reproduce line.
    pub unsafe_disable_fencing: bool,
    /// The forced isolation instead of the seed's schedule, named in the reproduce line.
    pub isolate_presenting_unit: bool,
    /// Where data, logs and the history were kept (on failure, or with --keep).
    pub kept_dir: Option<PathBuf>,
}

impl Report {
    pub fn new(
        config: &RunConfig,
        steps: &[Step],
        history: &History,
        verdicts: Vec<(&'static str, Verdict)>,
        longest_unserved_ms: u64,
        workload_ms: u64,
    ) -> Self {
        let mut faults: BTreeMap<FaultKind, u64> = FaultKind::ALL.iter().map(|k| (*k, 0)).collect();
        for step in steps.iter().filter(|s| s.action.is_counted()) {
            *faults.entry(step.action.counted_kind()).or_default() += 1;
        }
        let mut ops: BTreeMap<&'static str, OpCounts> = BTreeMap::new();
        let mut unexpected_refusals = Vec::new();
        let mut final_reads = 0;
        for op in history {
            if op.client == FINAL_CLIENT {
                final_reads += 1;
                continue;
            }
            let counts = ops.entry(op.call.kind()).or_default();
            match (&op.call, &op.outcome, op.outcome.class()) {
                (_, _, OutcomeClass::Indeterminate) => counts.indeterminate += 1,
                (_, Outcome::Failed { reason }, _) => {
                    counts.failed += 1;
                    if reason.starts_with("refused") {
                        unexpected_refusals.push(format!("op #{}: {reason}", op.id));
                    }
                }
                (Call::Get, _, _) => counts.ok += 1,
                (_, Outcome::Written { .. } | Outcome::Deleted { .. }, _) => counts.ok += 1,
                _ => counts.refused += 1,
            }
        }
        Self {
            seed: config.seed,
            clients: config.clients,
            keys: config.keys,
            duration_ms: config.duration.as_millis() as u64,
            workload_ms,
            faults,
            ops,
            unexpected_refusals,
            final_reads,
            longest_unserved_ms,
            verdicts,
            failovers_ms: Vec::new(),
            failovers_without_takeover: 0,
            data_plane: None,
            unsafe_disable_fencing: config.unsafe_disable_fencing,
            isolate_presenting_unit: config.scenario == crate::run::Scenario::IsolatePresentingUnit,
            kept_dir: None,
        }
    }

    /// No checker found a violation or failed to decide.
    pub fn passed(&self) -> bool {
        !self.verdicts.iter().any(|(_, v)| v.fails_run())
    }

    pub fn fault_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults = if self.isolate_presenting_unit {
            "one forced isolation of the presenting unit".to_string()
        } else {
            format!("{} s of faults", self.duration_ms / 1000)
        };
        writeln!(
            f,
            "vnet-ha chaos report — seed {}, {faults}, workload ran {} s",
            self.seed,
            self.workload_ms / 1000
        )?;
        writeln!(f, "faults injected: {}", self.fault_total())?;
        for (kind, n) in &self.faults {
            writeln!(f, "  {:<28} {n:>5}", kind.label())?;
        }
        let total = self
            .ops
            .values()
            .fold(OpCounts::default(), |a, c| OpCounts {
                ok: a.ok + c.ok,
                refused: a.refused + c.refused,
                failed: a.failed + c.failed,
                indeterminate: a.indeterminate + c.indeterminate,
            });
        writeln!(
            f,
            "operations: {} — ok {} (applied or answered) + {} refused by the model, failed {} \
             (not applied), indeterminate {}",
            total.ok + total.refused + total.failed + total.indeterminate,
            total.ok,
            total.refused,
            total.failed,
            total.indeterminate
        )?;
        writeln!(
            f,
            "  {:<8} {:>7} {:>8} {:>7} {:>14}",
            "", "ok", "refused", "failed", "indeterminate"
        )?;
        for (kind, c) in &self.ops {
            writeln!(
                f,
                "  {kind:<8} {:>7} {:>8} {:>7} {:>14}",
                c.ok, c.refused, c.failed, c.indeterminate
            )?;
        }
        writeln!(
            f,
            "  final linearizable reads after healing: {}",
            self.final_reads
        )?;
        if !self.unexpected_refusals.is_empty() {
            writeln!(
                f,
                "  {} refusals the workload should never provoke, first: {}",
                self.unexpected_refusals.len(),
                self.unexpected_refusals[0]
            )?;
        }
        writeln!(
            f,
            "longest stretch with no operation served during faults: {} ms",
            self.longest_unserved_ms
        )?;
        match self.failovers_ms.as_slice() {
            [] => writeln!(f, "failovers: none measured")?,
            d => writeln!(
                f,
                "failovers (unit kill -> last profile presented by the peer): {} — min {} ms, \
                 p50 {} ms, max {} ms",
                d.len(),
                d[0],
                d[(d.len() - 1) / 2],
                d[d.len() - 1]
            )?,
        }
        if self.failovers_without_takeover > 0 {
            writeln!(
                f,
                "  {} kill(s) of a presenting unit without a takeover (it came back first)",
                self.failovers_without_takeover
            )?;
        }
        if let Some((presented, lost)) = self.data_plane {
            let total = presented + lost;
            let percent = if total == 0 {
                100.0
            } else {
                presented as f64 * 100.0 / total as f64
            };
            writeln!(
                f,
                "data-plane availability while a unit could reach a majority (past {} ms after \
                 each heal): {percent:.3}% ({} identity-s presented, {} identity-s lost)",
                crate::run::NEEDLESS_FENCE_GRACE_MS,
                presented / 1_000_000_000,
                lost / 1_000_000_000
            )?;
        }
        writeln!(f, "checkers:")?;
        for (name, verdict) in &self.verdicts {
            writeln!(f, "  {name:<38} {verdict}")?;
        }
        if let Some(dir) = &self.kept_dir {
            writeln!(
                f,
                "data, logs, history.jsonl and faults.log kept in {}",
                dir.display()
            )?;
        }
        let result = if self.passed() { "PASS" } else { "FAIL" };
        let mut flags = String::new();
        if self.clients != CLIENTS_DEFAULT {
            flags.push_str(&format!(" --clients {}", self.clients));
        }
        if self.keys != KEYS_DEFAULT {
            flags.push_str(&format!(" --keys {}", self.keys));
        }
        if self.isolate_presenting_unit {
            flags.push_str(" --isolate-presenting-unit");
        }
        if self.unsafe_disable_fencing {
            flags.push_str(" --unsafe-disable-fencing");
        }
        let duration = if self.duration_ms.is_multiple_of(1000) {
            format!("{}s", self.duration_ms / 1000)
        } else {
            format!("{}ms", self.duration_ms)
        };
        write!(
            f,
            "result: {result} — reproduce with: cargo run -p chaos-tests -- --seed {} --duration \
             {duration}{flags}",
            self.seed
        )
    }
}
