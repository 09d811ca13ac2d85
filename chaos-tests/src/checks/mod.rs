//! The invariant checkers: pure functions from recorded data to a [`Verdict`].
//!
//! None of them does I/O or looks at a clock, so each is tested with hand-written histories:
//! a planted violation must fail, a valid history (with indeterminate operations) must pass.
//!
//! - [`linearizable`]: per-profile register model, Wing–Gong search (invariant 6), and the
//!   cross-profile rule that revisions follow real time.
//! - [`lost_write`]: a final linearizable read finds every acknowledged write (invariant 3).
//! - [`liveness`]: writes are accepted within a budget whenever a quorum could exist, and
//!   after the last heal.
//! - [`data_plane`]: no needless fence — a unit that could reach a majority is never fenced
//!   (invariant 7) — and the data-plane availability figure.
//! - [`presentation`]: identities preserved and presented exactly once, over an abstract
//!   "presented" snapshot (converted from each switch's state), and no double presentation
//!   (invariant 2) over the switch journals, with `fabric_agent::check`.

pub mod data_plane;
pub mod linearizable;
pub mod liveness;
pub mod lost_write;
pub mod presentation;

use std::fmt;

/// Most violations a checker lists; the count is always reported in full.
pub const VIOLATIONS_SHOWN_MAX: usize = 10;

/// What a checker concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The invariant held; `detail` says over how much data.
    Pass { detail: String },
    /// The invariant was broken; each entry names what and where.
    Fail { violations: Vec<String> },
    /// The checker could not decide within its limits: not a pass.
    Inconclusive { reason: String },
    /// The data this checker needs is not produced by this run (every checker is wired now;
    /// kept for checkers added ahead of their data).
    NotWired { reason: String },
}

impl Verdict {
    pub fn from_violations(violations: Vec<String>, detail: String) -> Self {
        if violations.is_empty() {
            Verdict::Pass { detail }
        } else {
            Verdict::Fail { violations }
        }
    }

    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass { .. })
    }

    /// A run fails on a violation or on a checker that could not decide; a checker without
    /// data yet does not fail it (the report names it).
    pub fn fails_run(&self) -> bool {
        matches!(self, Verdict::Fail { .. } | Verdict::Inconclusive { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass { detail } => write!(f, "PASS ({detail})"),
            Verdict::Fail { violations } => {
                write!(f, "FAIL: {} violation(s)", violations.len())?;
                for v in violations.iter().take(VIOLATIONS_SHOWN_MAX) {
                    write!(f, "\n      - {v}")?;
                }
                if violations.len() > VIOLATIONS_SHOWN_MAX {
                    write!(
                        f,
                        "\n      ... and {} more",
                        violations.len() - VIOLATIONS_SHOWN_MAX
                    )?;
                }
                Ok(())
            }
            Verdict::Inconclusive { reason } => write!(f, "INCONCLUSIVE: {reason}"),
            Verdict::NotWired { reason } => write!(f, "not wired yet: {reason}"),
        }
    }
}
