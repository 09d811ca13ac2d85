//! The disk, against real `vnetd` processes: the quota and its replicated `NOSPACE` alarm
//! (writes that add data refused, reads and deletions going on, the alarm in status, disarmed only
//! once back within the quota), a disk that really fills up (the node exits with a clear message
//! and a nonzero status), and signals, which always stop a node within a few seconds.
//!
//! The tests of this file run one at a time (`SERIAL`).

mod common;

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::processes::{Cluster, Proc};
use common::wait_for;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vnet_launch::Signal;
use vnet_metrics::testing::{get, sample};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A profile with eight vNICs and eight vHBAs, so that each write grows the log by a few KB.
fn bulky(i: usize) -> pb::Profile {
    pb::Profile {
        name: format!("bulky-{i}"),
        server: format!("srv-{i}"),
        vnics: (0..8)
            .map(|n| pb::Vnic {
                name: format!("eth{n}"),
                network: format!("network-{n}-{}", "x".repeat(40)),
                ..Default::default()
            })
            .collect(),
        vhbas: (0..8)
            .map(|n| pb::Vhba {
                name: format!("fc{n}"),
                fabric: format!("fabric-{n}-{}", "y".repeat(40)),
                ..Default::default()
            })
            .collect(),
        failback: pb::FailbackPolicy::Manual as i32,
        ..Default::default()
    }
}

async fn create_pools(cluster: &Cluster, leader: u64) {
    common::create_pools(
        cluster.proc(leader).channel(),
        "02:00:00:ff:ff:ff",
        "20:00:00:25:b5:ff:ff:ff",
    )
    .await
    .expect("create a pool");
}

fn store_bytes(data_dir: &Path) -> u64 {
    raft_store::usage::disk_usage(data_dir).expect("measure the store")
}

/// What the node's standard gRPC health service says of the whole server, if it answers.
async fn serving(proc: &Proc) -> Option<ServingStatus> {
    let answer = HealthClient::new(proc.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status())
}

async fn status(proc: &Proc) -> pb::GetClusterStatusResponse {
    ClusterServiceClient::new(proc.channel())
        .get_cluster_status(pb::GetClusterStatusRequest {
            consistency: pb::ReadConsistency::Local as i32,
        })
        .await
        .expect("status")
        .into_inner()
}

/// Sends `signal` and waits (up to 30 s) for the process to exit; returns its status and how
/// long it took.
fn stop_with(proc: &mut Proc, signal: Signal) -> (ExitStatus, Duration) {
    let mut child = proc.child.take().expect("running");
    let sent = Instant::now();
    child.signal(signal).expect("signal");
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, sent.elapsed());
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "vnetd {} ignored {signal:?} for 30 s",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_quota_writes_are_refused_until_the_alarm_is_disarmed() {
    let _serial = SERIAL.lock().await;
    // Each node's log keeps its next 8 MiB segment filled ahead of need, which counts; then
    // 3 MiB of records and snapshots.
    let quota: u64 = (8 + 3) * 1024 * 1024;
    let mut cluster = Cluster::start_with(&["--quota-bytes".into(), quota.to_string()], &[]);
    let leader = cluster.leader().await;
    create_pools(&cluster, leader).await;
    let leader = cluster.leader().await;
    let mut profiles = ProfileServiceClient::new(cluster.proc(leader).channel());

    // Write until the alarm refuses a write.
    let mut written = 0;
    let refused = loop {
        assert!(
            written < 5_000,
            "no alarm after {written} writes past a {quota}-byte quota"
        );
        match profiles
            .create_profile(pb::CreateProfileRequest {
                profile: Some(bulky(written)),
            })
            .await
        {
            Ok(_) => written += 1,
            Err(status) => break status,
        }
    };
    println!(
        "quota {quota} bytes: alarm after {written} writes; store sizes now {:?}",
        cluster
            .procs
            .iter()
            .map(|p| store_bytes(&p.data_dir))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("NOSPACE"),
        "{}",
        refused.message()
    );
    // Every node refuses, whichever is asked, and shows the alarm in its status.
    for proc in &cluster.procs {
        let refused = ProfileServiceClient::new(proc.channel())
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(bulky(0)),
                expected_revision: 0,
            })
            .await
            .expect_err("an update under NOSPACE");
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        let alarms = wait_for("the node's status shows the alarm", || async {
            let alarms = status(proc).await.alarms;
            (!alarms.is_empty()).then_some(alarms)
        })
        .await;
        assert!(alarms
            .iter()
            .all(|a| a.kind == pb::AlarmKind::Nospace as i32 && a.used_bytes > a.quota_bytes));
        // Monitoring sees it: gRPC health and /readyz say not serving, and the metric is set.
        wait_for(
            "the node's health says NOT_SERVING under the alarm",
            || async { (serving(proc).await == Some(ServingStatus::NotServing)).then_some(()) },
        )
        .await;
        let metrics_addr = proc.metrics_addr;
        let (readyz, exposition) = tokio::task::spawn_blocking(move || {
            let readyz = get(metrics_addr, "/readyz", None).expect("GET /readyz");
            let metrics = get(metrics_addr, "/metrics", None).expect("GET /metrics");
            (readyz, metrics)
        })
        .await
        .expect("the requests ran");
        assert_eq!(readyz.0, 503, "{}", readyz.1);
        assert!(readyz.1.contains("NOSPACE"), "{}", readyz.1);
        let raised: Vec<_> = alarms.iter().map(|a| a.member.clone()).collect();
        for member in &raised {
            assert_eq!(
                sample(
                    &exposition.1,
                    &format!("vnet_alarm_active{{member=\"{member}\",alarm=\"NOSPACE\"}}")
                ),
                Some(1.0),
                "{}",
                exposition.1
            );
        }
    }
    // Reads go on, and so do deletions.
    let read = profiles
        .get_profile(pb::GetProfileRequest {
            name: "bulky-2".into(),
            consistency: pb::ReadConsistency::Linearizable as i32,
        })
        .await
        .expect("a linearizable read under NOSPACE");
    assert!(read.into_inner().profile.is_some());
    profiles
        .delete_profile(pb::DeleteProfileRequest {
            name: "bulky-1".into(),
            expected_revision: 0,
        })
        .await
        .expect("a delete under NOSPACE");
    // Still past the quota: disarming is refused.
    let mut cluster_api = ClusterServiceClient::new(cluster.proc(leader).channel());
    let listed = cluster_api
        .list_alarms(pb::ListAlarmsRequest { consistency: 0 })
        .await
        .expect("list alarms")
        .into_inner();
    assert!(!listed.alarms.is_empty());
    let refused = cluster_api
        .disarm_alarm(pb::DisarmAlarmRequest::default())
        .await
        .expect_err("disarm while over quota");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("still past its quota"),
        "{}",
        refused.message()
    );

    // Room made (here: a larger quota, as after moving to a larger disk): each node reports
    // itself back within it, and the alarm may be disarmed.
    for id in 1..=3 {
        let proc = cluster.proc_mut(id);
        let (exit, _) = stop_with(proc, Signal::SIGINT);
        assert!(exit.success(), "SIGINT: {exit}");
        proc.extra_args = vec!["--quota-bytes".into(), (1u64 << 30).to_string()];
        proc.start();
    }
    let leader = cluster.leader().await;
    let mut cluster_api = ClusterServiceClient::new(cluster.proc(leader).channel());
    let disarmed = wait_for("the alarms can be disarmed", || {
        let mut cluster_api = cluster_api.clone();
        async move {
            cluster_api
                .disarm_alarm(pb::DisarmAlarmRequest::default())
                .await
                .ok()
        }
    })
    .await
    .into_inner();
    assert!(!disarmed.disarmed.is_empty());
    let listed = cluster_api
        .list_alarms(pb::ListAlarmsRequest { consistency: 0 })
        .await
        .expect("list alarms")
        .into_inner();
    assert!(listed.alarms.is_empty(), "{:?}", listed.alarms);
    for proc in &cluster.procs {
        wait_for("the node's health says SERVING once disarmed", || async {
            (serving(proc).await == Some(ServingStatus::Serving)).then_some(())
        })
        .await;
    }
    ProfileServiceClient::new(cluster.proc(leader).channel())
        .create_profile(pb::CreateProfileRequest {
            profile: Some(bulky(written + 1)),
        })
        .await
        .expect("writes resume once disarmed");
    cluster.assert_alive();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            // Keeps a log segment's unwritten space a hole: its bytes up to the last one that
            // is not zero, then the same length.
            let bytes = std::fs::read(entry.path()).expect("read");
            let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
            std::fs::write(&target, &bytes[..written]).expect("copy");
            std::fs::File::options()
                .write(true)
                .open(&target)
                .and_then(|f| f.set_len(bytes.len() as u64))
                .expect("copy's length");
        }
    }
}

/// A tmpfs of `bytes` mounted at `path`, unmounted on drop. Needs root (as the chaos tests do).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, bytes: u64) -> SmallDisk {
        std::fs::create_dir_all(path).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount (this test needs root)");
        assert!(
            status.success(),
            "mount a tmpfs at {} (needs root)",
            path.display()
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A node whose Raft log sits on a disk that fills up stops by itself: a clear message naming
/// the cause and the data directory, exit status 1 (never a panic's 101, never hanging on with
/// DEADLINE_EXCEEDED), while the other two go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_node_cleanly_and_the_others_go_on() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    create_pools(&cluster, leader).await;
    // A follower's Raft log moves to a 1 MiB disk (its log file and snapshots stay where they
    // are, so the message can be written).
    let victim = cluster
        .procs
        .iter()
        .find(|p| p.id != leader)
        .expect("a follower")
        .id;
    let (exit, _) = stop_with(cluster.proc_mut(victim), Signal::SIGTERM);
    assert!(exit.success(), "{exit}");
    let data_dir = cluster.proc(victim).data_dir.clone();
    let log_dir = data_dir.join("wal");
    let moved = data_dir.join("wal.moved");
    std::fs::rename(&log_dir, &moved).expect("move the log aside");
    let _disk = SmallDisk::mount(&log_dir, 1024 * 1024);
    copy_dir(&moved, &log_dir);
    cluster.proc_mut(victim).start();

    let mut profiles = ProfileServiceClient::new(cluster.proc(leader).channel());
    let mut written = 0;
    let exit = loop {
        if let Ok(Some(status)) = cluster
            .proc_mut(victim)
            .child
            .as_mut()
            .expect("started")
            .try_wait()
        {
            break status;
        }
        assert!(
            written < 5_000,
            "the node on a full disk still runs after {written} writes"
        );
        profiles
            .create_profile(pb::CreateProfileRequest {
                profile: Some(bulky(written)),
            })
            .await
            .expect("the other two commit");
        written += 1;
    };
    cluster.proc_mut(victim).child = None;
    let log = std::fs::read_to_string(&cluster.proc(victim).log_path).expect("log");
    let last: Vec<&str> = log.lines().rev().take(5).collect();
    println!(
        "the node on a 1 MiB disk exited with {exit} after {written} writes; last lines: {last:#?}"
    );
    assert_eq!(exit.code(), Some(1), "{exit}");
    assert!(log.contains("the Raft core stopped"), "{last:#?}");
    assert!(log.contains(&data_dir.display().to_string()), "{last:#?}");
    assert!(!log.contains("panicked"), "{last:#?}");
    // The others still commit.
    profiles
        .create_profile(pb::CreateProfileRequest {
            profile: Some(bulky(written + 1)),
        })
        .await
        .expect("a write after the node stopped");
}

/// SIGTERM stops a busy leader promptly and cleanly: a thousand watch streams that never read
/// and hundreds of idle connections hold nothing open past the bounded grace periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_leader_held_by_watchers_and_idle_connections() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    let api = cluster.proc(leader).api_addr;
    let mut watchers = Vec::new();
    for _ in 0..10 {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
            .expect("endpoint")
            .initial_stream_window_size(Some(1024))
            .connect()
            .await
            .expect("connect");
        for _ in 0..100 {
            watchers.push(
                vnet_proto::vnet::v1::watch_service_client::WatchServiceClient::new(
                    channel.clone(),
                )
                .watch(pb::WatchRequest { from_revision: 1 })
                .await
                .expect("watch")
                .into_inner(),
            );
        }
    }
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(api).await.expect("connect"));
    }
    let (exit, took) = stop_with(cluster.proc_mut(leader), Signal::SIGTERM);
    println!(
        "the leader, holding {} watchers and {} idle connections, exited with {exit} {took:?} after SIGTERM",
        watchers.len(),
        idle.len()
    );
    assert!(exit.success(), "{exit}");
    let log = std::fs::read_to_string(&cluster.proc(leader).log_path).expect("log");
    assert!(log.contains("shut down on request"), "no clean stop logged");
}
