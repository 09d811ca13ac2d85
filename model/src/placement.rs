//! Placement: which unit should present each profile (desired), what each unit reports its switch
//! presents (actual), and which units are draining.
//!
//! Placement is decided by the leader's placement controller (or an operator) and committed as
//! ordinary commands, so every replica agrees on it. `apply` re-checks every decision against the
//! state at the moment it commits — the target must be a unit, cabled to the profile's server,
//! not draining, and have room — so a decision made on a slightly older view can never put a
//! profile where it may not go (invariant 5, "drain means empty", lives here).

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::name::validate_name;
use crate::Revision;

/// A planned move: the source stops presenting and reports it, and only then is the target given
/// the profile (break before make). While a move is pending the profile has no desired unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
}

/// Where a profile should be presented, and why.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    /// The unit that should present the profile now; `None` while unplaced or while a planned
    /// move waits for its source to clear.
    pub unit: Option<String>,
    pub moving: Option<Move>,
    /// Why the profile is where it is, or why it is nowhere ("no cabled unit has capacity").
    pub reason: String,
    /// Set by a failover: the unit the profile was taken from.
    pub failed_over_from: Option<String>,
    /// Revision of the last placement change; 0 for a profile never placed.
    pub revision: Revision,
}

impl Placement {
    /// The unit this profile counts against: where it is, or where a planned move takes it.
    pub fn claimed_unit(&self) -> Option<&str> {
        self.unit
            .as_deref()
            .or(self.moving.as_ref().map(|m| m.to.as_str()))
    }
}

/// One placement decision, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementChange {
    pub profile: String,
    pub unit: Option<String>,
    pub moving: Option<Move>,
    pub reason: String,
    pub failed_over_from: Option<String>,
}

/// Longest placement reason kept.
pub const REASON_LEN_MAX: usize = 256;

impl PlacementChange {
    /// Static checks: names are names, a change is either placed or moving (not both), and the
    /// reason is short and printable.
    pub fn validate(&self) -> Result<(), Rejection> {
        validate_name("profile", &self.profile)?;
        if let Some(unit) = &self.unit {
            validate_name("unit", unit)?;
        }
        if let Some(moving) = &self.moving {
            validate_name("moving.from", &moving.from)?;
            validate_name("moving.to", &moving.to)?;
            if self.unit.is_some() {
                return Err(Rejection::invalid(
                    "unit",
                    self.unit.as_deref().unwrap_or_default(),
                    "a profile in a planned move has no desired unit until its source clears",
                ));
            }
            if moving.from == moving.to {
                return Err(Rejection::invalid(
                    "moving.to",
                    &moving.to,
                    "a move must go to a different unit",
                ));
            }
        }
        if let Some(from) = &self.failed_over_from {
            validate_name("failed_over_from", from)?;
        }
        if self.reason.chars().count() > REASON_LEN_MAX || self.reason.chars().any(char::is_control)
        {
            return Err(Rejection::invalid(
                "reason",
                &self.reason,
                format!("must be at most {REASON_LEN_MAX} printable characters"),
            ));
        }
        Ok(())
    }
}
