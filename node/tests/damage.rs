//! A damaged data directory, against real `vnetd` processes: a store truncated, overwritten or
//! missing a file, and a damaged snapshot, each make the node refuse to start with an error
//! that names the file and points to README's "Recovering a damaged data directory", with exit
//! status 1, never a panic (101); the other two nodes go on.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::processes::Cluster;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a test damages a stopped node's data directory; returns the file it damaged.
type Damage = fn(&Path) -> PathBuf;

/// The newest segment of the node's Raft log.
fn last_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .expect("the log directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

fn truncate_log(data_dir: &Path) -> PathBuf {
    let segment = last_segment(data_dir);
    // A segment is created at its full size; its records end at the last byte that is not zero.
    let bytes = std::fs::read(&segment).expect("segment");
    let written = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment")
        .set_len(written as u64 / 3)
        .expect("truncate");
    segment
}

fn overwrite_log(data_dir: &Path) -> PathBuf {
    let segment = last_segment(data_dir);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment");
    file.seek(SeekFrom::Start(64)).expect("seek");
    file.write_all(&vec![0xA5; 64 * 1024]).expect("overwrite");
    segment
}

fn remove_log(data_dir: &Path) -> PathBuf {
    let segment = last_segment(data_dir);
    std::fs::remove_file(&segment).expect("remove segment");
    segment
}

fn damage_snapshot(data_dir: &Path) -> PathBuf {
    let snapshot = data_dir.join("snapshots/snapshot.current");
    let mut bytes = std::fs::read(&snapshot).expect("a snapshot was taken");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&snapshot, bytes).expect("write");
    snapshot
}

async fn damaged_node_refuses_to_start(damage: Damage) {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(&["--snapshot-every".into(), "20".into()], &[]);
    let leader = cluster.leader().await;
    let mut profiles = ProfileServiceClient::new(cluster.proc(leader).channel());
    for i in 0..60 {
        profiles
            .create_profile(pb::CreateProfileRequest {
                profile: Some(pb::Profile {
                    name: format!("p-{i}"),
                    server: format!("s-{i}"),
                    failback: pb::FailbackPolicy::Manual as i32,
                    ..Default::default()
                }),
            })
            .await
            .expect("create");
    }
    let victim = cluster
        .procs
        .iter()
        .find(|p| p.id != leader)
        .expect("a follower")
        .id;
    {
        let proc = cluster.proc_mut(victim);
        let mut child = proc.child.take().expect("running");
        child.terminate().expect("signal");
        child.wait().expect("stopped");
    }
    let data_dir = cluster.proc(victim).data_dir.clone();
    let damaged = damage(&data_dir);
    let log_len = std::fs::metadata(&cluster.proc(victim).log_path)
        .map(|m| m.len())
        .unwrap_or(0);
    cluster.proc_mut(victim).start();
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = cluster
            .proc_mut(victim)
            .child
            .as_mut()
            .expect("started")
            .try_wait()
            .expect("wait")
        {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "vnetd started on a store damaged at {}",
            damaged.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.proc_mut(victim).child = None;
    let log = std::fs::read(&cluster.proc(victim).log_path).expect("log");
    let log = String::from_utf8_lossy(&log[log_len as usize..]).to_string();
    println!(
        "damaged {}: exit {exit}; it said:\n{log}",
        damaged.display()
    );
    assert_eq!(exit.code(), Some(1), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("Recovering a damaged data directory"),
        "no pointer to the recovery steps: {log}"
    );
    assert!(log.contains(&data_dir.display().to_string()), "{log}");
    // The other two still serve writes.
    profiles
        .create_profile(pb::CreateProfileRequest {
            profile: Some(pb::Profile {
                name: "after".into(),
                server: "s-after".into(),
                failback: pb::FailbackPolicy::Manual as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("a write after the damaged node stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_is_refused_by_name() {
    damaged_node_refuses_to_start(truncate_log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_log_is_refused_by_name() {
    damaged_node_refuses_to_start(overwrite_log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_log_file_is_refused_by_name() {
    damaged_node_refuses_to_start(remove_log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_refused_by_name() {
    damaged_node_refuses_to_start(damage_snapshot).await;
}
