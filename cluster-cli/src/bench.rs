//! `bench`: committed writes/s and linearizable reads/s at several concurrency levels, with
//! p50/p99/max latency. Numbers are reported, never judged: timing assertions belong nowhere.
//!
//! Writes are CreateProfile calls; each worker keeps at most `WORKER_LIVE_PROFILES_MAX` of its
//! profiles alive and deletes the oldest (also a timed write) before creating more, so a level
//! of any length stays within the cluster's profile limit (4096) and pool sizes.
//!
//! Every profile it creates carries a name prefix unique to the run and is deleted at the end,
//! including after Ctrl-C; pools it creates (with `--identity pool`) are deleted too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vnet_proto::vnet::v1 as pb;

use crate::cli::{BenchArgs, BenchIdentity};
use crate::error::CliError;
use crate::session::Session;
use crate::view::{BenchLevelView, BenchView};
use crate::{cluster, emit, pool, profile, Context};

/// Profiles created for the read levels, read round robin.
const READ_SET_SIZE: u64 = 64;
/// Profiles one write worker keeps before it deletes its oldest; with the largest concurrency
/// (1024) this stays within the cluster's limit of 4096 profiles.
const WORKER_LIVE_PROFILES_MAX: usize = 2;
/// A worker gives up after this many failures in a row: the cluster is down, and spinning on
/// instant errors would measure nothing.
const WORKER_ERRORS_IN_A_ROW_MAX: u32 = 100;
/// Concurrent deletes during cleanup.
const CLEANUP_CONCURRENCY: usize = 16;
/// Cleanup stops after this long and names what is left.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(120);
/// Explicit identities use a 24-bit counter under a per-run prefix.
const IDENTITIES_PER_RUN_MAX: u64 = 1 << 24;

/// Names and identities unique to one run.
#[derive(Debug, Clone)]
pub struct RunIds {
    /// e.g. "bench-3fa9c1"
    pub prefix: String,
    /// One byte of the identity prefix, so concurrent runs do not collide on MACs.
    pub tag: u8,
}

impl RunIds {
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos() ^ (elapsed.as_secs() as u32))
            .unwrap_or_default();
        let mixed = nanos ^ std::process::id().rotate_left(16);
        RunIds {
            prefix: format!("bench-{:06x}", mixed & 0xff_ffff),
            tag: (mixed >> 8) as u8,
        }
    }

    pub fn profile_name(&self, n: u64) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// A locally administered MAC: 02:be:TAG:counter.
    pub fn mac(&self, n: u64) -> String {
        let [_, _, _, _, _, b2, b1, b0] = n.to_be_bytes();
        format!("02:be:{:02x}:{b2:02x}:{b1:02x}:{b0:02x}", self.tag)
    }

    /// WWPN 20:00:02:be:TAG:counter and WWNN 20:01:...: disjoint, as WWNs must be unique across
    /// both kinds.
    pub fn wwns(&self, n: u64) -> (String, String) {
        let [_, _, _, _, _, b2, b1, b0] = n.to_be_bytes();
        let tail = format!("02:be:{:02x}:{b2:02x}:{b1:02x}:{b0:02x}", self.tag);
        (format!("20:00:{tail}"), format!("20:01:{tail}"))
    }

    fn pool_names(&self) -> (String, String) {
        (
            format!("{}-mac", self.prefix),
            format!("{}-wwn", self.prefix),
        )
    }

    fn pools(&self) -> Vec<pb::Pool> {
        let (mac_pool, wwn_pool) = self.pool_names();
        vec![
            pb::Pool {
                name: mac_pool,
                kind: pb::PoolKind::Mac as i32,
                first: format!("02:bf:{:02x}:00:00:00", self.tag),
                last: format!("02:bf:{:02x}:ff:ff:ff", self.tag),
                revision: 0,
            },
            pb::Pool {
                name: wwn_pool,
                kind: pb::PoolKind::Wwn as i32,
                first: format!("20:00:02:bf:{:02x}:00:00:00", self.tag),
                last: format!("20:00:02:bf:{:02x}:ff:ff:ff", self.tag),
                revision: 0,
            },
        ]
    }

    /// The n-th profile of the run: one vNIC and one vHBA.
    pub fn profile(&self, n: u64, identity: BenchIdentity) -> pb::Profile {
        let (mac_pool, wwn_pool) = self.pool_names();
        let (vnic, vhba) = match identity {
            BenchIdentity::Explicit => {
                let (wwpn, wwnn) = self.wwns(n);
                (
                    pb::Vnic {
                        name: "eth0".into(),
                        mac: self.mac(n),
                        network: "bench".into(),
                        vlan: 0,
                        pool: None,
                    },
                    pb::Vhba {
                        name: "fc0".into(),
                        wwpn,
                        wwnn,
                        fabric: "a".into(),
                        pool: None,
                    },
                )
            }
            BenchIdentity::Pool => (
                pb::Vnic {
                    name: "eth0".into(),
                    mac: String::new(),
                    network: "bench".into(),
                    vlan: 0,
                    pool: Some(mac_pool),
                },
                pb::Vhba {
                    name: "fc0".into(),
                    wwpn: String::new(),
                    wwnn: String::new(),
                    fabric: "a".into(),
                    pool: Some(wwn_pool),
                },
            ),
        };
        pb::Profile {
            name: self.profile_name(n),
            server: format!("{}-srv", self.prefix),
            vnics: vec![vnic],
            vhbas: vec![vhba],
            preferred_unit: None,
            failback: pb::FailbackPolicy::Auto as i32,
            revision: 0,
            created_revision: 0,
        }
    }
}

impl Default for RunIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency percentiles and throughput of one level, from the latencies of its successful ops.
pub fn summarize(
    concurrency: usize,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
) -> BenchLevelView {
    latencies.sort_unstable();
    // Nearest-rank percentile: the smallest latency that at least p% of ops did not exceed.
    let percentile = |p: usize| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = (latencies.len() * p).div_ceil(100).max(1);
        latencies[rank - 1].as_secs_f64() * 1000.0
    };
    let ok = latencies.len() as u64;
    let seconds = elapsed.as_secs_f64();
    BenchLevelView {
        concurrency,
        duration_ms: elapsed.as_millis() as u64,
        ok,
        errors,
        ops_per_s: if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        },
        p50_ms: percentile(50),
        p99_ms: percentile(99),
        max_ms: latencies.last().map_or(0.0, |l| l.as_secs_f64() * 1000.0),
        first_error,
    }
}

/// What the workers of one level share.
struct Level {
    next_op: AtomicU64,
    ops_max: u64,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Level {
    /// The next operation number, or None when the level is over.
    fn next(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline {
            return None;
        }
        let n = self.next_op.fetch_add(1, Ordering::Relaxed);
        (n < self.ops_max).then_some(n)
    }

    fn failed(&self, error: &CliError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| error.to_string());
        }
    }
}

pub async fn run(mut session: Session, context: &Context, args: BenchArgs) -> Result<(), CliError> {
    let (do_writes, do_reads) = match (args.writes, args.reads) {
        (false, false) => (true, true),
        selected => selected,
    };
    let levels = args.concurrency.0.clone();
    let writes_needed = if do_writes {
        args.max_ops * levels.len() as u64
    } else {
        0
    };
    if writes_needed + READ_SET_SIZE > IDENTITIES_PER_RUN_MAX {
        return Err(CliError::usage(format!(
            "--max-ops {} x {} levels exceeds the {IDENTITIES_PER_RUN_MAX} profiles one run can name",
            args.max_ops,
            levels.len()
        )));
    }
    // Fails fast with the usual exit code when the cluster is unreachable, and leaves an open
    // connection for the workers' sessions to share.
    cluster::fetch_status(&mut session, pb::ReadConsistency::Linearizable).await?;

    let ids = RunIds::new();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("bench: interrupted; cleaning up");
                stop.store(true, Ordering::Relaxed);
            }
        })
    };
    eprintln!(
        "bench: run {}; worker i starts at endpoint i mod {} of --endpoints, so the workers \
         spread over every node as real clients do (a follower forwards writes to the leader)",
        ids.prefix,
        session.endpoint_count()
    );

    let mut created_pools = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let mut next_profile = 0u64;
    let result = measure(
        &mut session,
        &args,
        &ids,
        &levels,
        (do_writes, do_reads),
        &stop,
        &mut created_pools,
        &mut created,
        &mut next_profile,
    )
    .await;
    stop_on_signal.abort();

    let left = cleanup(&session, &created, &created_pools).await;
    if left > 0 {
        eprintln!(
            "bench: {left} object(s) named {}-* could not be deleted; delete them by hand",
            ids.prefix
        );
    }
    let view = result?;
    emit(context, &view)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    session: &mut Session,
    args: &BenchArgs,
    ids: &RunIds,
    levels: &[usize],
    (do_writes, do_reads): (bool, bool),
    stop: &Arc<AtomicBool>,
    created_pools: &mut Vec<String>,
    created: &mut Vec<String>,
    next_profile: &mut u64,
) -> Result<BenchView, CliError> {
    let mut view = BenchView {
        writes: Vec::new(),
        reads: Vec::new(),
    };
    if args.identity == BenchIdentity::Pool {
        for pool in ids.pools() {
            let name = pool.name.clone();
            pool::create(session, pool).await?;
            created_pools.push(name);
        }
    }
    if do_writes {
        for &concurrency in levels {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (summary, left) = run_level(
                session,
                args,
                ids,
                concurrency,
                stop,
                Op::Write,
                next_profile,
                &[],
            )
            .await;
            created.extend(left);
            view.writes.push(summary);
        }
    }
    if do_reads && !stop.load(Ordering::Relaxed) {
        let mut read_set = Vec::new();
        for _ in 0..READ_SET_SIZE {
            let n = *next_profile;
            *next_profile += 1;
            created.push(ids.profile_name(n));
            let stored = profile::create(session, ids.profile(n, args.identity)).await?;
            read_set.push(stored.name);
        }
        for &concurrency in levels {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (summary, _) = run_level(
                session,
                args,
                ids,
                concurrency,
                stop,
                Op::Read,
                next_profile,
                &read_set,
            )
            .await;
            view.reads.push(summary);
        }
    }
    Ok(view)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// CreateProfile, and DeleteProfile of the worker's oldest profile once it holds
    /// `WORKER_LIVE_PROFILES_MAX`.
    Write,
    /// Linearizable GetProfile of the read set, round robin.
    Read,
}

/// Runs one level; returns its summary and the names of profiles that may still exist.
#[allow(clippy::too_many_arguments)]
async fn run_level(
    session: &Session,
    args: &BenchArgs,
    ids: &RunIds,
    concurrency: usize,
    stop: &Arc<AtomicBool>,
    op: Op,
    next_profile: &mut u64,
    read_set: &[String],
) -> (BenchLevelView, Vec<String>) {
    let level = Arc::new(Level {
        next_op: AtomicU64::new(0),
        ops_max: args.max_ops,
        deadline: Instant::now() + args.duration,
        stop: stop.clone(),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let base = *next_profile;
    let read_set: Arc<[String]> = read_set.into();
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let mut session = session.clone();
        session.prefer(worker);
        let level = level.clone();
        let ids = ids.clone();
        let identity = args.identity;
        let read_set = read_set.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut alive = std::collections::VecDeque::new();
            // Profiles whose create or delete failed: they may exist, so cleanup tries them.
            let mut doubtful = Vec::new();
            let mut errors_in_a_row = 0u32;
            while let Some(n) = level.next() {
                let began = Instant::now();
                let outcome = match op {
                    Op::Write if alive.len() >= WORKER_LIVE_PROFILES_MAX => {
                        let oldest: String = alive.pop_front().unwrap_or_default();
                        let outcome = profile::delete(&mut session, &oldest, 0).await.map(drop);
                        if outcome.is_err() {
                            doubtful.push(oldest);
                        }
                        outcome
                    }
                    Op::Write => {
                        let profile = ids.profile(base + n, identity);
                        let name = profile.name.clone();
                        match profile::create(&mut session, profile).await {
                            Ok(_) => {
                                alive.push_back(name);
                                Ok(())
                            }
                            Err(error) => {
                                doubtful.push(name);
                                Err(error)
                            }
                        }
                    }
                    Op::Read => {
                        let name = &read_set[(n % read_set.len() as u64) as usize];
                        profile::get(&mut session, name, pb::ReadConsistency::Linearizable)
                            .await
                            .map(drop)
                    }
                };
                match outcome {
                    Ok(()) => {
                        latencies.push(began.elapsed());
                        errors_in_a_row = 0;
                    }
                    Err(error) => {
                        level.failed(&error);
                        errors_in_a_row += 1;
                        if errors_in_a_row >= WORKER_ERRORS_IN_A_ROW_MAX {
                            break;
                        }
                    }
                }
            }
            doubtful.extend(alive);
            (latencies, doubtful)
        }));
    }
    let mut latencies = Vec::new();
    let mut left = Vec::new();
    for worker in futures::future::join_all(workers).await {
        match worker {
            Ok((worker_latencies, worker_left)) => {
                latencies.extend(worker_latencies);
                left.extend(worker_left);
            }
            Err(error) => level.failed(&CliError::Local(anyhow::anyhow!("worker failed: {error}"))),
        }
    }
    let elapsed = started.elapsed();
    if op == Op::Write {
        *next_profile = base + level.next_op.load(Ordering::Relaxed).min(args.max_ops);
    }
    let first_error = level
        .first_error
        .lock()
        .ok()
        .and_then(|first| first.clone());
    let summary = summarize(
        concurrency,
        elapsed,
        latencies,
        level.errors.load(Ordering::Relaxed),
        first_error,
    );
    eprintln!(
        "bench: {:?} x{concurrency}: {} ok, {} errors, {:.1} ops/s",
        op, summary.ok, summary.errors, summary.ops_per_s
    );
    (summary, left)
}

/// Deletes what the run created; returns how many objects could not be deleted.
async fn cleanup(session: &Session, profiles: &[String], pools: &[String]) -> usize {
    if profiles.is_empty() && pools.is_empty() {
        return 0;
    }
    eprintln!("bench: deleting {} profile(s)", profiles.len());
    let deadline = tokio::time::Instant::now() + CLEANUP_DEADLINE;
    let queue = Arc::new(Mutex::new(profiles.to_vec()));
    let left = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..CLEANUP_CONCURRENCY.min(profiles.len()) {
        let mut session = session.clone();
        let queue = queue.clone();
        let left = left.clone();
        workers.push(tokio::spawn(async move {
            while let Some(name) = queue.lock().ok().and_then(|mut queue| queue.pop()) {
                if tokio::time::Instant::now() >= deadline {
                    left.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match profile::delete(&mut session, &name, 0).await {
                    Ok(_) => {}
                    // A create that failed never made it: nothing to delete.
                    Err(CliError::Rejected {
                        code: tonic::Code::NotFound,
                        ..
                    }) => {}
                    Err(_) => {
                        left.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for worker in futures::future::join_all(workers).await {
        if worker.is_err() {
            left.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut session = session.clone();
    for name in pools {
        if pool::delete(&mut session, name, 0).await.is_err() {
            left.fetch_add(1, Ordering::Relaxed);
        }
    }
    left.load(Ordering::Relaxed) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let latencies = ms(&(1..=100).rev().collect::<Vec<_>>());
        let summary = summarize(4, Duration::from_secs(2), latencies, 3, None);
        assert_eq!(summary.ok, 100);
        assert_eq!(summary.errors, 3);
        assert_eq!(summary.p50_ms, 50.0);
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 100.0);
        assert_eq!(summary.ops_per_s, 50.0);
        assert_eq!(summary.duration_ms, 2000);
    }

    #[test]
    fn a_level_without_success_reports_zeros_and_the_error() {
        let summary = summarize(
            1,
            Duration::from_secs(1),
            Vec::new(),
            7,
            Some("boom".into()),
        );
        assert_eq!(
            (summary.p50_ms, summary.p99_ms, summary.max_ms),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(summary.ops_per_s, 0.0);
        assert_eq!(summary.first_error.as_deref(), Some("boom"));
        let single = summarize(1, Duration::from_secs(1), ms(&[7]), 0, None);
        assert_eq!((single.p50_ms, single.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn run_identities_are_distinct_and_valid() {
        let ids = RunIds {
            prefix: "bench-abc123".into(),
            tag: 0x5a,
        };
        assert_eq!(ids.mac(0x01_02_03), "02:be:5a:01:02:03");
        let (wwpn, wwnn) = ids.wwns(0xff_ff_ff);
        assert_eq!(wwpn, "20:00:02:be:5a:ff:ff:ff");
        assert_eq!(wwnn, "20:01:02:be:5a:ff:ff:ff");
        for identity in [BenchIdentity::Explicit, BenchIdentity::Pool] {
            let profile = ids.profile(9, identity);
            assert_eq!(profile.name, "bench-abc123-9");
        }
        assert_ne!(
            ids.profile(1, BenchIdentity::Explicit).vnics[0].mac,
            ids.profile(2, BenchIdentity::Explicit).vnics[0].mac
        );
        for pool in ids.pools() {
            let parse = if pool.kind == pb::PoolKind::Mac as i32 {
                crate::spec::parse_mac
            } else {
                crate::spec::parse_wwn
            };
            assert!(
                parse(&pool.first).is_ok() && parse(&pool.last).is_ok(),
                "{pool:?}"
            );
            assert!(pool.name.starts_with("bench-abc123-"));
        }
    }

    #[test]
    fn level_hands_out_each_op_once_and_stops_at_the_bound() {
        let level = Level {
            next_op: AtomicU64::new(0),
            ops_max: 3,
            deadline: Instant::now() + Duration::from_secs(60),
            stop: Arc::new(AtomicBool::new(false)),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        };
        assert_eq!(
            (level.next(), level.next(), level.next(), level.next()),
            (Some(0), Some(1), Some(2), None)
        );
        let stopped = Level {
            next_op: AtomicU64::new(0),
            ops_max: 3,
            deadline: Instant::now() + Duration::from_secs(60),
            stop: Arc::new(AtomicBool::new(true)),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        };
        assert_eq!(stopped.next(), None);
        stopped.failed(&CliError::usage("first"));
        stopped.failed(&CliError::usage("second"));
        assert_eq!(stopped.errors.load(Ordering::Relaxed), 2);
        assert_eq!(
            stopped.first_error.lock().unwrap().as_deref(),
            Some("first")
        );
    }
}
