//! `drain`, `undrain` and `failover`: planned moves of profiles between units.
//!
//! `drain --wait` polls `GetClusterStatus`; what each snapshot means (done, still moving, or
//! stuck past the deadline) is decided by [`DrainWatch`], a pure function of the snapshots and
//! the clock readings it is given, so it is tested without a server or a real clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;

use crate::cli::{DrainArgs, FailoverArgs, DRAIN_WAIT_DEFAULT};
use crate::error::CliError;
use crate::output::Format;
use crate::retry::CallKind;
use crate::session::{rpc, unary, Session};
use crate::view::{DrainView, FailoverView, PlacementStateView, PlacementView, UndrainView};
use crate::{cluster, emit, write_stdout, Context};

/// Between two status polls of `drain --wait`.
pub const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(500);

pub async fn drain(
    session: &mut Session,
    context: &Context,
    args: DrainArgs,
) -> Result<(), CliError> {
    let message = pb::DrainRequest {
        unit: args.unit.clone(),
    };
    let response = unary(
        session,
        CallKind::Write,
        message,
        rpc!(ClusterServiceClient::drain),
    )
    .await?;
    let mut view = DrainView {
        unit: args.unit.clone(),
        revision: response.revision,
        profiles: response.profiles.clone(),
        drained: false,
        waited_ms: None,
    };
    if !args.wait {
        return emit(context, &view);
    }
    if context.format == Format::Table {
        emit(context, &view)?;
    }
    let started = Instant::now();
    let wait = args.timeout_wait.unwrap_or(DRAIN_WAIT_DEFAULT);
    let mut watch = DrainWatch::new(&args.unit, &response.profiles, started, wait);
    let mut last_error = String::new();
    loop {
        let step = match cluster::fetch_status(session, context.consistency).await {
            Ok(status) => watch.observe(&status, Instant::now()),
            // A leader change mid-drain is expected; keep asking until the deadline.
            Err(error) if error.is_transient() => {
                let text = error.to_string();
                if text != last_error {
                    eprintln!("drain --wait: {text}; retrying");
                    last_error = text;
                }
                watch.unanswered(&last_error, Instant::now())
            }
            Err(error) => return Err(error),
        };
        match step {
            DrainStep::Done(line) => {
                view.drained = true;
                view.waited_ms =
                    Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                return match context.format {
                    Format::Table => write_stdout(&format!("{line}\n")),
                    Format::Json => emit(context, &view),
                };
            }
            DrainStep::Waiting(line) => {
                if let Some(line) = line {
                    match context.format {
                        Format::Table => write_stdout(&format!("{line}\n"))?,
                        // stdout carries exactly one JSON document; progress is for people.
                        Format::Json => eprintln!("{line}"),
                    }
                }
                let left = watch.deadline().saturating_duration_since(Instant::now());
                tokio::time::sleep(DRAIN_POLL_INTERVAL.min(left)).await;
            }
            DrainStep::Expired(message) => return Err(CliError::Timeout(message)),
        }
    }
}

pub async fn undrain(
    session: &mut Session,
    context: &Context,
    unit: String,
) -> Result<(), CliError> {
    let message = pb::UndrainRequest { unit: unit.clone() };
    let response = unary(
        session,
        CallKind::Write,
        message,
        rpc!(ClusterServiceClient::undrain),
    )
    .await?;
    emit(
        context,
        &UndrainView {
            unit,
            revision: response.revision,
        },
    )
}

pub async fn failover(
    session: &mut Session,
    context: &Context,
    args: FailoverArgs,
) -> Result<(), CliError> {
    let message = failover_request(&args)?;
    let response = unary(
        session,
        CallKind::Write,
        message,
        rpc!(ClusterServiceClient::failover),
    )
    .await?;
    emit(
        context,
        &FailoverView {
            profile: args.profile,
            from_unit: args.from,
            to_unit: args.to,
            revision: response.revision,
            profiles: response.profiles,
        },
    )
}

/// The request for `failover`. clap has already enforced "exactly one of PROFILE and --from"
/// and "--to with PROFILE"; what is left is a move onto the unit it leaves.
pub fn failover_request(args: &FailoverArgs) -> Result<pb::FailoverRequest, CliError> {
    if let (Some(from), Some(to)) = (&args.from, &args.to) {
        if from == to {
            return Err(CliError::usage(format!(
                "--to {to}: it is also --from; a move must go to a different unit"
            )));
        }
    }
    Ok(pb::FailoverRequest {
        profile: args.profile.clone().unwrap_or_default(),
        to_unit: args.to.clone().unwrap_or_default(),
        from_unit: args.from.clone().unwrap_or_default(),
    })
}

/// What `drain --wait` should do after one status snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainStep {
    /// The unit is empty; the final line to print.
    Done(String),
    /// Not yet; a progress line to print when it differs from the last one printed.
    Waiting(Option<String>),
    /// The deadline passed first; the error message names the profiles still on the unit.
    Expired(String),
}

/// One profile still on the draining unit, and what holds it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdout {
    pub profile: String,
    /// The unit's switch still reports presenting it.
    pub presented: bool,
    /// A planned move off the unit is under way, to this unit.
    pub moving_to: Option<String>,
    /// Its placement is still the unit (no move started).
    pub placed_here: bool,
    /// Its placement, if the snapshot has one.
    pub placement: Option<PlacementView>,
}

/// Where a drain stands in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainProgress {
    /// Profiles on the unit when the drain began, and any seen on it since.
    pub total: usize,
    pub moved_off: usize,
    /// Still on the unit, by profile name.
    pub holdouts: Vec<Holdout>,
    /// The other units and whether they could take a profile, e.g. "unit-b (lease expired)".
    pub other_units: Vec<String>,
}

impl DrainProgress {
    pub fn is_done(&self) -> bool {
        self.holdouts.is_empty()
    }
}

/// The progress of a drain over a sequence of status snapshots, against a deadline.
#[derive(Debug)]
pub struct DrainWatch {
    unit: String,
    /// Every profile known to have been on the unit since the drain began.
    tracked: BTreeSet<String>,
    wait: Duration,
    deadline: Instant,
    last_line: Option<String>,
    last_progress: Option<DrainProgress>,
}

impl DrainWatch {
    /// `initial` are the profiles the Drain call reported on the unit.
    pub fn new(unit: &str, initial: &[String], started: Instant, wait: Duration) -> Self {
        DrainWatch {
            unit: unit.to_string(),
            tracked: initial.iter().cloned().collect(),
            wait,
            deadline: started + wait,
            last_line: None,
            last_progress: None,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Judges one snapshot taken at `now`.
    pub fn observe(&mut self, status: &pb::GetClusterStatusResponse, now: Instant) -> DrainStep {
        let progress = drain_progress(&self.unit, &mut self.tracked, status);
        if progress.is_done() {
            return DrainStep::Done(match progress.total {
                0 => format!("{}: drained; it held no profile", self.unit),
                total => format!(
                    "{}: drained; {total} of {total} profiles moved off",
                    self.unit
                ),
            });
        }
        let line = progress_line(&self.unit, &progress);
        self.last_progress = Some(progress);
        if now >= self.deadline {
            return DrainStep::Expired(self.expired_message(None));
        }
        if self.last_line.as_ref() == Some(&line) {
            DrainStep::Waiting(None)
        } else {
            self.last_line = Some(line.clone());
            DrainStep::Waiting(Some(line))
        }
    }

    /// Judges a poll that got no status (`error`) at `now`.
    pub fn unanswered(&mut self, error: &str, now: Instant) -> DrainStep {
        if now >= self.deadline {
            DrainStep::Expired(self.expired_message(Some(error)))
        } else {
            DrainStep::Waiting(None)
        }
    }

    fn expired_message(&self, error: Option<&str>) -> String {
        let mut out = format!(
            "{} is not drained after {:?} (the drain goes on; `vnetctl status` shows it)",
            self.unit, self.wait
        );
        if let Some(error) = error {
            out.push_str(&format!("; the last status request failed: {error}"));
        }
        match &self.last_progress {
            None => out.push_str("; no status was read since the drain began"),
            Some(progress) => {
                out.push_str(&format!(
                    "; {} of {} profile(s) still on it:",
                    progress.holdouts.len(),
                    progress.total
                ));
                for holdout in &progress.holdouts {
                    out.push_str(&format!(
                        "\n  {}: {}",
                        holdout.profile,
                        holdout_text(&self.unit, holdout)
                    ));
                }
                let unmoved = progress
                    .holdouts
                    .iter()
                    .filter(|h| h.placed_here && h.moving_to.is_none())
                    .count();
                if unmoved > 0 {
                    out.push_str(&format!(
                        "\n{unmoved} profile(s) have no move started: a target must be a healthy, \
                         non-draining unit cabled to the profile's server, with room. Other units: {}",
                        if progress.other_units.is_empty() {
                            "none".to_string()
                        } else {
                            progress.other_units.join(", ")
                        }
                    ));
                }
            }
        }
        out
    }
}

/// Which profiles are still on `unit` in `status`: presented by it, placed on it, or in a
/// planned move off it. Adds them to `tracked`, the denominator of the progress.
pub fn drain_progress(
    unit: &str,
    tracked: &mut BTreeSet<String>,
    status: &pb::GetClusterStatusResponse,
) -> DrainProgress {
    let placements: BTreeMap<&str, &pb::ProfilePlacement> = status
        .placements
        .iter()
        .map(|placement| (placement.profile.as_str(), placement))
        .collect();
    let mut presented: BTreeSet<&str> = status
        .units
        .iter()
        .filter(|u| u.name == unit)
        .flat_map(|u| u.presented.iter().map(String::as_str))
        .collect();
    presented.extend(
        status
            .placements
            .iter()
            .filter(|p| p.presented_unit == unit)
            .map(|p| p.profile.as_str()),
    );
    let mut on_unit: BTreeSet<&str> = presented.clone();
    on_unit.extend(
        status
            .placements
            .iter()
            .filter(|p| p.desired_unit == unit || p.moving_from == unit)
            .map(|p| p.profile.as_str()),
    );
    let holdouts: Vec<Holdout> = on_unit
        .iter()
        .map(|&profile| {
            let placement = placements.get(profile).copied();
            Holdout {
                profile: profile.to_string(),
                presented: presented.contains(profile),
                moving_to: placement
                    .filter(|p| p.moving_from == unit && !p.moving_to.is_empty())
                    .map(|p| p.moving_to.clone()),
                placed_here: placement.is_some_and(|p| p.desired_unit == unit),
                placement: placement.map(PlacementView::from),
            }
        })
        .collect();
    tracked.extend(holdouts.iter().map(|h| h.profile.clone()));
    DrainProgress {
        total: tracked.len(),
        moved_off: tracked.len() - holdouts.len(),
        holdouts,
        other_units: status
            .units
            .iter()
            .filter(|other| other.name != unit)
            .map(unit_condition)
            .collect(),
    }
}

/// "unit-b (lease expired, draining)", or "unit-b (healthy, 3/30)" when nothing stops it.
fn unit_condition(unit: &pb::UnitStatus) -> String {
    let mut issues = Vec::new();
    match pb::LeaseHealth::try_from(unit.lease) {
        Ok(pb::LeaseHealth::Healthy) => {}
        Ok(pb::LeaseHealth::Expired) => issues.push("lease expired".to_string()),
        _ => issues.push("lease health unknown".to_string()),
    }
    if unit.draining {
        issues.push("draining".into());
    }
    if unit.load >= unit.capacity {
        issues.push(format!("full, {}/{}", unit.load, unit.capacity));
    }
    if issues.is_empty() {
        format!("{} (healthy, {}/{})", unit.name, unit.load, unit.capacity)
    } else {
        format!("{} ({})", unit.name, issues.join(", "))
    }
}

/// "unit-a: 3 of 6 profiles moved off; moving: web-01 -> unit-b; not moving: db-01".
pub fn progress_line(unit: &str, progress: &DrainProgress) -> String {
    let mut line = format!(
        "{unit}: {} of {} profiles moved off",
        progress.moved_off, progress.total
    );
    let moving: Vec<String> = progress
        .holdouts
        .iter()
        .filter_map(|h| {
            h.moving_to
                .as_ref()
                .map(|to| format!("{} -> {to}", h.profile))
        })
        .collect();
    let waiting: Vec<&str> = progress
        .holdouts
        .iter()
        .filter(|h| h.moving_to.is_none() && h.placed_here)
        .map(|h| h.profile.as_str())
        .collect();
    let clearing: Vec<&str> = progress
        .holdouts
        .iter()
        .filter(|h| h.moving_to.is_none() && !h.placed_here)
        .map(|h| h.profile.as_str())
        .collect();
    for (label, names) in [
        ("moving", moving.join(", ")),
        ("not moving yet", waiting.join(", ")),
        ("still presented", clearing.join(", ")),
    ] {
        if !names.is_empty() {
            line.push_str(&format!("; {label}: {names}"));
        }
    }
    line
}

/// Why one profile is still on the unit, for the message when the wait gives up.
fn holdout_text(unit: &str, holdout: &Holdout) -> String {
    let reason = holdout
        .placement
        .as_ref()
        .map(|p| p.reason.as_str())
        .filter(|reason| !reason.is_empty())
        .map(|reason| format!(" (reason: {reason})"))
        .unwrap_or_default();
    if let Some(to) = &holdout.moving_to {
        return if holdout.presented {
            format!("moving to {to}, waiting for {unit} to stop presenting it{reason}")
        } else {
            format!("moving to {to}, waiting for the move to be handed over{reason}")
        };
    }
    if holdout.placed_here {
        let state = holdout
            .placement
            .as_ref()
            .map(|p| p.state)
            .unwrap_or(PlacementStateView::Unspecified);
        return format!(
            "still placed on {unit} ({}), no move started{reason}",
            crate::output::word(&state)
        );
    }
    let placed = match holdout
        .placement
        .as_ref()
        .and_then(|p| p.desired_unit.clone())
    {
        Some(other) => format!("placed on {other}"),
        None => "placed nowhere".to_string(),
    };
    format!("{placed}, but {unit} still presents it{reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, presented: &[&str]) -> pb::UnitStatus {
        pb::UnitStatus {
            id: 1,
            name: name.into(),
            lease: pb::LeaseHealth::Healthy as i32,
            lease_age_ms: Some(100),
            draining: name == "unit-a",
            presented: presented.iter().map(|s| s.to_string()).collect(),
            load: presented.len() as u32,
            capacity: 30,
            ..Default::default()
        }
    }

    fn placed(profile: &str, on: &str, presented_by: &str) -> pb::ProfilePlacement {
        pb::ProfilePlacement {
            profile: profile.into(),
            desired_unit: on.into(),
            presented_unit: presented_by.into(),
            state: if on == presented_by {
                pb::PlacementState::Presented
            } else {
                pb::PlacementState::Programming
            } as i32,
            reason: "preferred unit".into(),
            revision: 5,
            ..Default::default()
        }
    }

    fn moving(profile: &str, from: &str, to: &str, presented_by: &str) -> pb::ProfilePlacement {
        pb::ProfilePlacement {
            profile: profile.into(),
            presented_unit: presented_by.into(),
            state: pb::PlacementState::Moving as i32,
            reason: format!("drain of {from}"),
            moving_from: from.into(),
            moving_to: to.into(),
            revision: 6,
            ..Default::default()
        }
    }

    fn snapshot(
        units: Vec<pb::UnitStatus>,
        placements: Vec<pb::ProfilePlacement>,
    ) -> pb::GetClusterStatusResponse {
        pb::GetClusterStatusResponse {
            units,
            placements,
            ..Default::default()
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_drain_that_completes_reports_progress_then_done() {
        let start = Instant::now();
        let mut watch = DrainWatch::new(
            "unit-a",
            &names(&["db-01", "web-01"]),
            start,
            Duration::from_secs(60),
        );
        // Both still on unit-a: one moving, one not picked up yet.
        let first = snapshot(
            vec![unit("unit-a", &["db-01", "web-01"]), unit("unit-b", &[])],
            vec![
                placed("db-01", "unit-a", "unit-a"),
                moving("web-01", "unit-a", "unit-b", "unit-a"),
            ],
        );
        assert_eq!(
            watch.observe(&first, start + Duration::from_secs(1)),
            DrainStep::Waiting(Some(
                "unit-a: 0 of 2 profiles moved off; moving: web-01 -> unit-b; \
                 not moving yet: db-01"
                    .into()
            ))
        );
        // The same picture again prints nothing new.
        assert_eq!(
            watch.observe(&first, start + Duration::from_secs(2)),
            DrainStep::Waiting(None)
        );
        // web-01 handed over to unit-b (programming there); db-01 now moving.
        let second = snapshot(
            vec![unit("unit-a", &["db-01"]), unit("unit-b", &[])],
            vec![
                moving("db-01", "unit-a", "unit-b", "unit-a"),
                placed("web-01", "unit-b", ""),
            ],
        );
        assert_eq!(
            watch.observe(&second, start + Duration::from_secs(3)),
            DrainStep::Waiting(Some(
                "unit-a: 1 of 2 profiles moved off; moving: db-01 -> unit-b".into()
            ))
        );
        let done = snapshot(
            vec![unit("unit-a", &[]), unit("unit-b", &["db-01", "web-01"])],
            vec![
                placed("db-01", "unit-b", "unit-b"),
                placed("web-01", "unit-b", "unit-b"),
            ],
        );
        assert_eq!(
            watch.observe(&done, start + Duration::from_secs(4)),
            DrainStep::Done("unit-a: drained; 2 of 2 profiles moved off".into())
        );
    }

    #[test]
    fn done_needs_the_switch_clear_as_well_as_the_placements() {
        let start = Instant::now();
        let mut watch = DrainWatch::new(
            "unit-a",
            &names(&["web-01"]),
            start,
            Duration::from_secs(60),
        );
        // Placement moved on, but unit-a's switch has not reported clearing yet.
        let lagging = snapshot(
            vec![unit("unit-a", &["web-01"])],
            vec![placed("web-01", "unit-b", "unit-a")],
        );
        assert_eq!(
            watch.observe(&lagging, start),
            DrainStep::Waiting(Some(
                "unit-a: 0 of 1 profiles moved off; still presented: web-01".into()
            ))
        );
        let empty_unit = snapshot(vec![unit("unit-a", &[])], vec![]);
        assert!(matches!(
            watch.observe(&empty_unit, start),
            DrainStep::Done(_)
        ));
    }

    #[test]
    fn a_stuck_drain_expires_at_the_deadline_naming_profiles_and_reasons() {
        let start = Instant::now();
        let wait = Duration::from_secs(10);
        let mut watch = DrainWatch::new(
            "unit-a",
            &names(&["db-01", "web-01", "app-01"]),
            start,
            wait,
        );
        let stuck = snapshot(
            vec![
                unit("unit-a", &["db-01", "web-01"]),
                unit("unit-b", &["app-01"]),
            ],
            vec![
                placed("app-01", "unit-b", "unit-b"),
                placed("db-01", "unit-a", "unit-a"),
                moving("web-01", "unit-a", "unit-b", "unit-a"),
            ],
        );
        assert!(matches!(
            watch.observe(&stuck, start + Duration::from_secs(9)),
            DrainStep::Waiting(Some(_))
        ));
        let DrainStep::Expired(message) = watch.observe(&stuck, start + wait) else {
            panic!("past the deadline the wait must give up");
        };
        assert!(
            message.starts_with("unit-a is not drained after 10s"),
            "{message}"
        );
        assert!(
            message.contains("2 of 3 profile(s) still on it"),
            "{message}"
        );
        assert!(
            message.contains(
                "db-01: still placed on unit-a (presented), no move started (reason: preferred unit)"
            ),
            "{message}"
        );
        assert!(
            message.contains(
                "web-01: moving to unit-b, waiting for unit-a to stop presenting it \
                 (reason: drain of unit-a)"
            ),
            "{message}"
        );
        assert!(!message.contains("app-01:"), "{message}");
        assert!(
            message.ends_with(
                "1 profile(s) have no move started: a target must be a healthy, non-draining \
                 unit cabled to the profile's server, with room. Other units: unit-b (healthy, 1/30)"
            ),
            "{message}"
        );
    }

    #[test]
    fn done_wins_over_a_passed_deadline_and_failed_polls_expire_too() {
        let start = Instant::now();
        let wait = Duration::from_secs(1);
        let mut watch = DrainWatch::new("unit-a", &[], start, wait);
        assert_eq!(
            watch.unanswered("UNAVAILABLE", start),
            DrainStep::Waiting(None)
        );
        let DrainStep::Expired(message) = watch.unanswered("UNAVAILABLE: no leader", start + wait)
        else {
            panic!("expected expiry");
        };
        assert!(message.contains("UNAVAILABLE: no leader"), "{message}");
        assert!(message.contains("no status was read"), "{message}");
        let empty = snapshot(vec![unit("unit-a", &[])], vec![]);
        assert_eq!(
            watch.observe(&empty, start + wait * 2),
            DrainStep::Done("unit-a: drained; it held no profile".into())
        );
    }

    #[test]
    fn profiles_that_arrive_on_the_unit_join_the_total() {
        let mut tracked: BTreeSet<String> = ["web-01".to_string()].into();
        let status = snapshot(
            vec![unit("unit-a", &["web-01"])],
            vec![
                placed("web-01", "unit-a", "unit-a"),
                placed("late-01", "unit-a", ""),
                placed("other", "unit-b", "unit-b"),
            ],
        );
        let progress = drain_progress("unit-a", &mut tracked, &status);
        assert_eq!(progress.total, 2);
        assert_eq!(progress.moved_off, 0);
        let held: Vec<&str> = progress
            .holdouts
            .iter()
            .map(|h| h.profile.as_str())
            .collect();
        assert_eq!(held, vec!["late-01", "web-01"]);
        assert!(!progress.holdouts[0].presented && progress.holdouts[0].placed_here);
    }

    #[test]
    fn other_units_say_why_they_cannot_take_a_profile() {
        let mut dead = unit("unit-b", &[]);
        dead.lease = pb::LeaseHealth::Expired as i32;
        assert_eq!(unit_condition(&dead), "unit-b (lease expired)");
        let mut full = unit("unit-c", &[]);
        full.draining = true;
        full.load = 30;
        full.lease = pb::LeaseHealth::Unknown as i32;
        assert_eq!(
            unit_condition(&full),
            "unit-c (lease health unknown, draining, full, 30/30)"
        );
        assert_eq!(
            unit_condition(&unit("unit-d", &["x"])),
            "unit-d (healthy, 1/30)"
        );
    }

    fn failover_args(profile: Option<&str>, from: Option<&str>, to: Option<&str>) -> FailoverArgs {
        FailoverArgs {
            profile: profile.map(String::from),
            from: from.map(String::from),
            to: to.map(String::from),
        }
    }

    #[test]
    fn failover_request_carries_the_one_mode_given() {
        assert_eq!(
            failover_request(&failover_args(Some("web-01"), None, Some("unit-b"))).unwrap(),
            pb::FailoverRequest {
                profile: "web-01".into(),
                to_unit: "unit-b".into(),
                from_unit: String::new(),
            }
        );
        assert_eq!(
            failover_request(&failover_args(None, Some("unit-a"), None)).unwrap(),
            pb::FailoverRequest {
                profile: String::new(),
                to_unit: String::new(),
                from_unit: "unit-a".into(),
            }
        );
        let error =
            failover_request(&failover_args(None, Some("unit-a"), Some("unit-a"))).unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_USAGE);
        assert!(error.to_string().starts_with("--to unit-a"), "{error}");
    }
}
