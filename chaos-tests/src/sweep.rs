//! `chaos-tests sweep`: the pure parts of running one seed after another. The seed range as
//! the command line gives it, the one line printed as each seed finishes, the command that
//! reproduces a seed, and the summary with the exit code. The binary does the running.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checks::Verdict;
use crate::report::Report;
use crate::run::{CLIENTS_DEFAULT, KEYS_DEFAULT};

/// Most seeds one sweep runs: a typo such as `1..100000` should not start days of runs.
pub const SWEEP_SEEDS_MAX: u64 = 10_000;

/// Seeds as written on the command line: `A..B` (B excluded) or `A..=B` (B included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    pub first: u64,
    pub last: u64,
    /// Written `A..=B`; kept so the range prints as it was given.
    pub inclusive: bool,
}

impl SeedRange {
    pub fn seeds(&self) -> RangeInclusive<u64> {
        self.first..=self.last
    }

    /// At most [`SWEEP_SEEDS_MAX`], so this cannot overflow.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Never: [`parse_seed_range`] refuses an empty range.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for SeedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inclusive {
            write!(f, "{}..={}", self.first, self.last)
        } else {
            // last < u64::MAX here: `A..B` ends at B - 1.
            write!(f, "{}..{}", self.first, self.last + 1)
        }
    }
}

/// Parses `A..B` or `A..=B`. Every error names the value that is wrong and how to write it.
pub fn parse_seed_range(text: &str) -> Result<SeedRange, String> {
    const FORM: &str = "write A..B (B excluded) or A..=B (B included), e.g. 100..120";
    let trimmed = text.trim();
    let Some((start, rest)) = trimmed.split_once("..") else {
        return Err(format!("{text:?} is not a seed range: {FORM}"));
    };
    let (end, inclusive) = match rest.strip_prefix('=') {
        Some(end) => (end, true),
        None => (rest, false),
    };
    let number = |part: &str, what: &str| {
        part.trim().parse::<u64>().map_err(|_| {
            format!("{what} {part:?} of {text:?} is not a whole number from 0 to 2^64-1: {FORM}")
        })
    };
    let first = number(start, "the start")?;
    let end = number(end, "the end")?;
    let (wanted, last) = match (inclusive, end.checked_sub(1)) {
        (true, _) if end >= first => (u128::from(end - first) + 1, end),
        (false, Some(last)) if end > first => (u128::from(end - first), last),
        (false, _) if end == first => {
            return Err(format!(
                "{text:?} is empty: {first}..{end} excludes {end}, so it holds no seed (write \
                 {first}..={end} for that one seed)"
            ))
        }
        _ => return Err(format!("{text:?} ends at {end}, below its start {first}")),
    };
    if wanted > u128::from(SWEEP_SEEDS_MAX) {
        return Err(format!(
            "{text:?} holds {wanted} seeds; a sweep runs at most {SWEEP_SEEDS_MAX}"
        ));
    }
    Ok(SeedRange {
        first,
        last,
        inclusive,
    })
}

/// `60s` for whole seconds, `1500ms` otherwise: what `--duration` reads back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The word as a shell reads it: unchanged when it holds only safe characters, single-quoted
/// otherwise.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a single run needs to redo one seed of the sweep exactly.
#[derive(Debug, Clone)]
pub struct Reproduce {
    /// This executable.
    pub exe: PathBuf,
    pub duration: Duration,
    pub clients: u32,
    pub keys: u32,
    /// Only when given on the sweep's command line (the default is found the same way again).
    pub vnetd: Option<PathBuf>,
    pub switchd: Option<PathBuf>,
}

impl Reproduce {
    /// The single-run command line for `seed`.
    pub fn command(&self, seed: u64) -> String {
        let path = |p: &Path| shell_quote(&p.to_string_lossy());
        let mut cmd = format!(
            "{} --seed {seed} --duration {}",
            path(&self.exe),
            format_duration(self.duration)
        );
        if self.clients != CLIENTS_DEFAULT {
            cmd.push_str(&format!(" --clients {}", self.clients));
        }
        if self.keys != KEYS_DEFAULT {
            cmd.push_str(&format!(" --keys {}", self.keys));
        }
        if let Some(vnetd) = &self.vnetd {
            cmd.push_str(&format!(" --vnetd {}", path(vnetd)));
        }
        if let Some(switchd) = &self.switchd {
            cmd.push_str(&format!(" --switchd {}", path(switchd)));
        }
        cmd
    }
}

/// A failing verdict as the seed line names it, or `None` when it does not fail the run.
fn failure(name: &str, verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Fail { violations } => Some(format!("{name}: {} violation(s)", violations.len())),
        Verdict::Inconclusive { .. } => Some(format!("{name}: inconclusive")),
        Verdict::Pass { .. } | Verdict::NotWired { .. } => None,
    }
}

/// The one line printed when a seed's run has its verdicts.
pub fn seed_line(report: &Report, took: Duration, reproduce: &Reproduce) -> String {
    let ops = report.ops.values();
    let ok: u64 = ops.clone().map(|c| c.ok + c.refused).sum();
    let total: u64 = ops
        .map(|c| c.ok + c.refused + c.failed + c.indeterminate)
        .sum();
    let failovers = match report.failovers_ms.iter().max() {
        Some(max) => format!("failovers {} (max {max} ms)", report.failovers_ms.len()),
        None => "failovers 0".to_string(),
    };
    let mut line = format!(
        "seed {} {}  faults {}  ops {total} ({ok} acknowledged)  {failovers}  took {} s",
        report.seed,
        if report.passed() { "PASS" } else { "FAIL" },
        report.fault_total(),
        took.as_secs()
    );
    let failed: Vec<String> = report
        .verdicts
        .iter()
        .filter_map(|(name, verdict)| failure(name, verdict))
        .collect();
    if !failed.is_empty() {
        line.push_str(&format!("  failed: {}", failed.join("; ")));
    }
    if let Some(dir) = &report.kept_dir {
        line.push_str(&format!("  kept {}", dir.display()));
    }
    if !report.passed() {
        line.push_str(&format!("  reproduce: {}", reproduce.command(report.seed)));
    }
    line
}

/// The one line printed when the harness could not run a seed (no verdicts).
pub fn error_line(seed: u64, error: &str, took: Duration) -> String {
    let error = error.replace('\n', " | ");
    format!(
        "seed {seed} ERROR  the harness could not run it: {error}  took {} s",
        took.as_secs()
    )
}

/// How often one checker passed and failed over the sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckerTally {
    pub name: &'static str,
    pub passed: u64,
    pub failed: u64,
}

/// The sweep so far: what each seed came to, for the summary and the exit code.
#[derive(Debug, Clone)]
pub struct Tally {
    pub range: SeedRange,
    pub passed: u64,
    /// Seeds where a checker failed (or could not decide), with the command that redoes each.
    pub failed: Vec<(u64, String)>,
    /// Seeds the harness could not run, with the command that redoes each.
    pub errors: Vec<(u64, String)>,
    /// In the order the run reports them.
    pub checkers: Vec<CheckerTally>,
    /// Why the sweep stopped before its last seed, if it did.
    pub stopped: Option<String>,
}

impl Tally {
    pub fn new(range: SeedRange) -> Self {
        Self {
            range,
            passed: 0,
            failed: Vec::new(),
            errors: Vec::new(),
            checkers: Vec::new(),
            stopped: None,
        }
    }

    pub fn seeds_run(&self) -> u64 {
        self.passed + self.failed.len() as u64 + self.errors.len() as u64
    }

    pub fn record_report(&mut self, report: &Report, reproduce: &Reproduce) {
        for (name, verdict) in &report.verdicts {
            let index = match self.checkers.iter().position(|c| c.name == *name) {
                Some(i) => i,
                None => {
                    self.checkers.push(CheckerTally {
                        name,
                        ..CheckerTally::default()
                    });
                    self.checkers.len() - 1
                }
            };
            let tally = &mut self.checkers[index];
            if verdict.fails_run() {
                tally.failed += 1;
            } else if verdict.is_pass() {
                tally.passed += 1;
            }
        }
        if report.passed() {
            self.passed += 1;
        } else {
            self.failed
                .push((report.seed, reproduce.command(report.seed)));
        }
    }

    pub fn record_error(&mut self, seed: u64, reproduce: &Reproduce) {
        self.errors.push((seed, reproduce.command(seed)));
    }

    /// 1 when a checker failed on any seed (a finding outweighs an incomplete sweep), else 2
    /// when a seed could not run or the sweep stopped early, else 0.
    pub fn exit_code(&self) -> u8 {
        if !self.failed.is_empty() {
            1
        } else if !self.errors.is_empty() || self.seeds_run() < self.range.len() {
            2
        } else {
            0
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sweep {}: {} of {} seeds run, {} passed, {} failed, {} could not run",
            self.range,
            self.seeds_run(),
            self.range.len(),
            self.passed,
            self.failed.len(),
            self.errors.len()
        )?;
        if let Some(why) = &self.stopped {
            writeln!(f, "stopped early: {why}")?;
        }
        writeln!(f, "  {:<38} {:>7} {:>7}", "checker", "passed", "failed")?;
        for c in &self.checkers {
            writeln!(f, "  {:<38} {:>7} {:>7}", c.name, c.passed, c.failed)?;
        }
        for (seed, command) in &self.failed {
            writeln!(f, "FAIL seed {seed}: reproduce with {command}")?;
        }
        for (seed, command) in &self.errors {
            writeln!(f, "ERROR seed {seed}: retry with {command}")?;
        }
        let result = match self.exit_code() {
            0 => "PASS",
            1 => "FAIL",
            _ => "INCOMPLETE",
        };
        write!(f, "sweep result: {result} (exit code {})", self.exit_code())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::OpCounts;
    use crate::schedule::FaultKind;

    fn range(text: &str) -> SeedRange {
        parse_seed_range(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(text: &str) -> String {
        parse_seed_range(text).expect_err(text)
    }

    #[test]
    fn half_open_ranges_exclude_their_end() {
        let r = range("4100..4120");
        assert_eq!(r.seeds(), 4100..=4119);
        assert_eq!(r.len(), 20);
        assert_eq!(r.to_string(), "4100..4120");
        assert_eq!(range("0..1").seeds().collect::<Vec<_>>(), vec![0]);
        assert_eq!(range(" 7..9 ").len(), 2);
    }

    #[test]
    fn inclusive_ranges_hold_their_end() {
        let r = range("5..=5");
        assert_eq!(r.seeds().collect::<Vec<_>>(), vec![5]);
        assert_eq!(r.to_string(), "5..=5");
        let top = range("18446744073709551610..=18446744073709551615");
        assert_eq!(top.len(), 6);
        assert_eq!(*top.seeds().end(), u64::MAX);
        assert_eq!(range("18446744073709551614..18446744073709551615").len(), 1);
    }

    #[test]
    fn bad_ranges_are_refused_naming_the_value() {
        for text in [
            "12", "a..b", "1..x", "..5", "5..", "5..=", "-1..3", "1...3", "1.5..3",
        ] {
            let e = refused(text);
            assert!(e.contains(&format!("{text:?}")), "{text}: {e}");
        }
        assert!(refused("1..x").contains("\"x\""), "names the bad part");
        assert!(refused("5..5").contains("empty"));
        assert!(refused("0..0").contains("empty"));
        assert!(refused("9..3").contains("below its start 9"));
        assert!(refused("9..=3").contains("below its start 9"));
    }

    #[test]
    fn more_than_the_maximum_is_refused() {
        assert_eq!(range("0..10000").len(), SWEEP_SEEDS_MAX);
        assert_eq!(range("1..=10000").len(), SWEEP_SEEDS_MAX);
        assert!(refused("0..10001").contains("10001 seeds"));
        assert!(refused("0..=10000").contains("10001 seeds"));
        assert!(refused("0..=18446744073709551615").contains("18446744073709551616 seeds"));
    }

    #[test]
    fn durations_print_as_the_flag_reads_them() {
        assert_eq!(format_duration(Duration::from_secs(300)), "300s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_quote("/work/t/release/vnetd"),
            "/work/t/release/vnetd"
        );
        assert_eq!(shell_quote("/a b/vnetd"), "'/a b/vnetd'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    fn reproduce() -> Reproduce {
        Reproduce {
            exe: PathBuf::from("/t/release/chaos-tests"),
            duration: Duration::from_secs(300),
            clients: CLIENTS_DEFAULT,
            keys: KEYS_DEFAULT,
            vnetd: None,
            switchd: None,
        }
    }

    #[test]
    fn the_reproduce_command_carries_every_run_flag_given() {
        assert_eq!(
            reproduce().command(7),
            "/t/release/chaos-tests --seed 7 --duration 300s"
        );
        let r = Reproduce {
            clients: CLIENTS_DEFAULT + 1,
            keys: KEYS_DEFAULT + 1,
            vnetd: Some(PathBuf::from("/t/vnetd")),
            switchd: Some(PathBuf::from("/t/my switchd")),
            duration: Duration::from_millis(2500),
            ..reproduce()
        };
        assert_eq!(
            r.command(7),
            format!(
                "/t/release/chaos-tests --seed 7 --duration 2500ms --clients {} --keys {} \
                 --vnetd /t/vnetd --switchd '/t/my switchd'",
                CLIENTS_DEFAULT + 1,
                KEYS_DEFAULT + 1
            )
        );
    }

    fn pass(name: &'static str) -> (&'static str, Verdict) {
        let detail = "ok".to_string();
        (name, Verdict::Pass { detail })
    }

    fn fail(name: &'static str, n: usize) -> (&'static str, Verdict) {
        let violations = (0..n).map(|i| format!("v{i}")).collect();
        (name, Verdict::Fail { violations })
    }

    fn report(seed: u64, verdicts: Vec<(&'static str, Verdict)>) -> Report {
        let mut faults: BTreeMap<FaultKind, u64> = BTreeMap::new();
        faults.insert(FaultKind::ALL[0], 3);
        faults.insert(FaultKind::ALL[1], 4);
        let mut ops = BTreeMap::new();
        let (ok, refused, failed, indeterminate) = (10, 2, 5, 1);
        ops.insert(
            "get",
            OpCounts {
                ok,
                refused,
                failed,
                indeterminate,
            },
        );
        ops.insert(
            "create",
            OpCounts {
                ok,
                refused,
                failed,
                indeterminate,
            },
        );
        let failed = verdicts.iter().any(|(_, v)| v.fails_run());
        Report {
            seed,
            clients: CLIENTS_DEFAULT,
            keys: KEYS_DEFAULT,
            duration_ms: 300_000,
            workload_ms: 310_000,
            faults,
            ops,
            unexpected_refusals: Vec::new(),
            final_reads: 8,
            longest_unserved_ms: 0,
            verdicts,
            failovers_ms: vec![900, 1200, 4321],
            failovers_without_takeover: 0,
            data_plane: None,
            unsafe_disable_fencing: false,
            isolate_presenting_unit: false,
            kept_dir: failed.then(|| PathBuf::from("/tmp/vnet-chaos-x")),
        }
    }

    #[test]
    fn a_passing_seed_line_has_the_counts_and_no_path() {
        let r = report(
            4100,
            vec![pass("linearizable"), pass("no double presentation")],
        );
        let line = seed_line(&r, Duration::from_secs(331), &reproduce());
        assert_eq!(
            line,
            "seed 4100 PASS  faults 7  ops 36 (24 acknowledged)  failovers 3 (max 4321 ms)  \
             took 331 s"
        );
    }

    #[test]
    fn a_failing_seed_line_names_each_failed_checker_the_kept_dir_and_the_command() {
        let inconclusive = Verdict::Inconclusive {
            reason: "too big".into(),
        };
        let mut r = report(
            4101,
            vec![
                pass("linearizable"),
                fail("no double presentation", 2),
                ("liveness after the last heal", inconclusive),
            ],
        );
        r.failovers_ms.clear();
        let line = seed_line(&r, Duration::from_secs(5), &reproduce());
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("seed 4101 FAIL  faults 7  "), "{line}");
        assert!(line.contains("failovers 0  "), "{line}");
        assert!(
            line.contains(
                "failed: no double presentation: 2 violation(s); liveness after the last \
                 heal: inconclusive  kept /tmp/vnet-chaos-x  reproduce: \
                 /t/release/chaos-tests --seed 4101 --duration 300s"
            ),
            "{line}"
        );
        assert!(!line.contains("linearizable"), "{line}");
    }

    #[test]
    fn an_error_line_stays_one_line() {
        let line = error_line(
            9,
            "the cluster did not come up\ncaused by x",
            Duration::ZERO,
        );
        assert_eq!(
            line,
            "seed 9 ERROR  the harness could not run it: the cluster did not come up | caused \
             by x  took 0 s"
        );
    }

    #[test]
    fn the_tally_counts_each_checker_and_lists_failing_seeds() {
        let mut tally = Tally::new(range("1..4"));
        let rep = reproduce();
        tally.record_report(&report(1, vec![pass("a"), pass("b")]), &rep);
        tally.record_report(&report(2, vec![pass("a"), fail("b", 3)]), &rep);
        tally.record_report(&report(3, vec![fail("a", 1), fail("b", 1)]), &rep);
        assert_eq!(tally.seeds_run(), 3);
        assert_eq!(tally.passed, 1);
        let counts: Vec<_> = tally
            .checkers
            .iter()
            .map(|c| (c.name, c.passed, c.failed))
            .collect();
        assert_eq!(counts, vec![("a", 2, 1), ("b", 1, 2)]);
        assert_eq!(tally.exit_code(), 1);
        let text = tally.to_string();
        assert!(
            text.starts_with("sweep 1..4: 3 of 3 seeds run, 1 passed, 2 failed, 0 could not run"),
            "{text}"
        );
        let row = |name: &str, p: u64, f: u64| format!("  {name:<38} {p:>7} {f:>7}\n");
        assert!(text.contains(&row("a", 2, 1)), "{text}");
        assert!(text.contains(&row("b", 1, 2)), "{text}");
        assert!(
            text.contains("FAIL seed 2: reproduce with /t/release/chaos-tests --seed 2 "),
            "{text}"
        );
        assert!(text.contains("FAIL seed 3: "), "{text}");
        assert!(text.ends_with("sweep result: FAIL (exit code 1)"), "{text}");
    }

    #[test]
    fn exit_codes_rank_a_failure_over_an_incomplete_sweep() {
        let rep = reproduce();
        let mut tally = Tally::new(range("1..=2"));
        tally.record_report(&report(1, vec![pass("a")]), &rep);
        assert_eq!(tally.exit_code(), 2, "one seed of two not run yet");
        tally.record_report(&report(2, vec![pass("a")]), &rep);
        assert_eq!(tally.exit_code(), 0);
        assert!(tally
            .to_string()
            .ends_with("sweep result: PASS (exit code 0)"));

        let mut tally = Tally::new(range("1..=2"));
        tally.record_report(&report(1, vec![pass("a")]), &rep);
        tally.record_error(2, &rep);
        assert_eq!(tally.exit_code(), 2);
        let text = tally.to_string();
        assert!(
            text.contains("1 passed, 0 failed, 1 could not run"),
            "{text}"
        );
        assert!(text.contains("ERROR seed 2: retry with "), "{text}");
        assert!(text.ends_with("INCOMPLETE (exit code 2)"), "{text}");

        tally.record_report(&report(3, vec![fail("a", 1)]), &rep);
        assert_eq!(tally.exit_code(), 1);
    }
}
