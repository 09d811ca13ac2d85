//! Backup and restore with real `vnetd` processes: a backup taken while clients write holds every
//! write acknowledged before it began, and `vnetd restore` builds a new three-node cluster from
//! it with every profile's identities and revision, every pool, and a new cluster id that the
//! old members are refused by.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::processes::{cluster_id_of, free_ports, probe_as, Cluster, Proc, NAMES, VNETD};
use common::wait_for;
use futures::StreamExt;
use raft_store::snapshot_file;
use tonic::transport::Channel;
use vnet_launch::Launch;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::pool_service_client::PoolServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

/// A profile with one MAC given explicitly (from `n`) and one drawn from the pool `macs`.
fn profile(name: &str, n: u64) -> pb::Profile {
    let mut profile = common::profile_with_mac(name, n);
    profile.vnics.push(pb::Vnic {
        name: "eth1".into(),
        mac: String::new(),
        network: "backup".into(),
        vlan: 200,
        pool: Some("macs".into()),
    });
    profile
}

async fn create_pool(channel: Channel) {
    PoolServiceClient::new(channel)
        .create_pool(pb::CreatePoolRequest {
            pool: Some(pb::Pool {
                name: "macs".into(),
                kind: pb::PoolKind::Mac as i32,
                first: "02:10:00:00:00:00".into(),
                last: "02:10:00:00:ff:ff".into(),
                revision: 0,
            }),
        })
        .await
        .expect("create pool");
}

/// Streams a backup from the node behind `channel`: its header and its bytes.
async fn save(channel: Channel) -> (pb::SnapshotHeader, Vec<u8>) {
    let mut stream = ClusterServiceClient::new(channel)
        .save_snapshot(pb::SaveSnapshotRequest {})
        .await
        .expect("save snapshot")
        .into_inner();
    let mut header = None;
    let mut bytes = Vec::new();
    while let Some(message) = stream.next().await {
        match message.expect("backup message").part {
            Some(pb::save_snapshot_response::Part::Header(h)) => header = Some(h),
            Some(pb::save_snapshot_response::Part::Chunk(chunk)) => bytes.extend(chunk),
            None => {}
        }
    }
    let header = header.expect("a header");
    assert_eq!(header.size, bytes.len() as u64);
    assert_eq!(header.crc32, crc32fast::hash(&bytes));
    (header, bytes)
}

/// Every profile, linearizably, by name.
async fn profiles(channel: Channel) -> BTreeMap<String, pb::Profile> {
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = ProfileServiceClient::new(channel.clone())
            .list_profiles(pb::ListProfilesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list profiles")
            .into_inner();
        all.extend(page.profiles.into_iter().map(|p| (p.name.clone(), p)));
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn pools(channel: Channel) -> Vec<pb::Pool> {
    PoolServiceClient::new(channel)
        .list_pools(pb::ListPoolsRequest::default())
        .await
        .expect("list pools")
        .into_inner()
        .pools
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_writes_holds_every_write_acknowledged_before_it_began() {
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    create_pool(cluster.proc(leader).channel()).await;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4u64 {
        // Writers spread over every node, so forwarding is part of it.
        let channel = cluster.procs[w as usize % 3].channel();
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        writers.spawn(async move {
            let mut client = ProfileServiceClient::new(channel);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("w{w}-{n}");
                let created = client
                    .create_profile(pb::CreateProfileRequest {
                        profile: Some(profile(&name, w << 16 | n)),
                    })
                    .await;
                if created.is_ok() {
                    acknowledged.lock().unwrap().push(name);
                }
                n += 1;
            }
        });
    }
    wait_for("the writers have 40 acknowledged writes", || {
        let count = acknowledged.lock().unwrap().len();
        async move { (count >= 40).then_some(()) }
    })
    .await;
    // Every write in the list now was acknowledged before the backup began.
    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    let started = Instant::now();
    let follower = cluster.procs.iter().find(|p| p.id != leader).expect("one");
    let (header, bytes) = save(follower.channel()).await;
    let took = started.elapsed();
    let after = acknowledged.lock().unwrap().len();
    stop.store(true, Ordering::SeqCst);
    while let Some(joined) = writers.join_next().await {
        joined.expect("writer");
    }

    let backup = snapshot_file::decode(&bytes).expect("the backup verifies");
    let missing: Vec<&String> = before
        .iter()
        .filter(|name| backup.state.profile(name).is_none())
        .collect();
    println!(
        "backup: {} bytes, revision {}, {} profiles; {} writes acknowledged before it began, {} \
         by its end; it took {took:?}",
        header.size,
        header.revision,
        header.profiles,
        before.len(),
        after
    );
    assert!(
        missing.is_empty(),
        "acknowledged before the backup began, missing from it: {missing:?}"
    );
    assert_eq!(header.revision, backup.state.revision());
    assert_eq!(header.profiles, backup.state.profiles().count() as u64);
    assert_eq!(header.pools, 1);
    assert_eq!(header.members, 3);
    cluster.assert_alive();
}

/// Runs `vnetd restore` for member `name`; it must succeed.
fn restore(backup: &Path, data_dir: &Path, initial_cluster: &str, name: &str) {
    let out = Launch::new(VNETD)
        .arg("restore")
        .arg("--snapshot")
        .arg(backup)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--initial-cluster", initial_cluster, "--name", name])
        .output()
        .expect("run vnetd restore");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "vnetd restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn local_status(channel: Channel) -> Option<pb::GetClusterStatusResponse> {
    ClusterServiceClient::new(channel)
        .get_cluster_status(pb::GetClusterStatusRequest {
            consistency: pb::ReadConsistency::Local as i32,
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_cluster_has_every_profile_and_pool_and_refuses_the_old_members() {
    let mut old = Cluster::start();
    let leader = old.leader().await;
    create_pool(old.proc(leader).channel()).await;
    let mut client = ProfileServiceClient::new(old.proc(1).channel());
    for n in 0..12u64 {
        client
            .create_profile(pb::CreateProfileRequest {
                profile: Some(profile(&format!("p{n:02}"), n)),
            })
            .await
            .expect("create");
    }
    // Updated profiles carry a revision other than their creation's.
    for n in [3u64, 7] {
        let mut p = profile(&format!("p{n:02}"), n);
        p.vnics[0].vlan = 300;
        let got = profiles(old.proc(1).channel()).await;
        p.vnics[1].mac = got[&p.name].vnics[1].mac.clone();
        client
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(p),
                expected_revision: 0,
            })
            .await
            .expect("update");
    }
    let before = profiles(old.proc(2).channel()).await;
    let pools_before = pools(old.proc(2).channel()).await;
    let old_id = cluster_id_of(&old.proc(1).data_dir).expect("the old cluster's id");
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("vnet.snap");
    let (header, bytes) = save(old.proc(3).channel()).await;
    std::fs::write(&backup, &bytes).expect("write backup");
    println!(
        "backup of revision {}: {} bytes",
        header.revision, header.size
    );

    // The old cluster is gone; its nodes 1 and 2 are rebuilt on the same addresses, the witness
    // on a new one.
    let old_addrs: Vec<(SocketAddr, SocketAddr, SocketAddr)> = old
        .procs
        .iter()
        .map(|p| (p.api_addr, p.peer_addr, p.metrics_addr))
        .collect();
    for p in &mut old.procs {
        p.sigkill();
    }
    let witness_ports = free_ports(3);
    let addrs = [
        old_addrs[0],
        old_addrs[1],
        (witness_ports[0], witness_ports[1], witness_ports[2]),
    ];
    let initial_cluster = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{}={name}@{}", i + 1, addrs[i].1))
        .collect::<Vec<_>>()
        .join(",");
    let mut new_procs: Vec<Proc> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let data_dir: PathBuf = dir.path().join(format!("new-{name}"));
            restore(&backup, &data_dir, &initial_cluster, name);
            Proc::new(
                i as u64 + 1,
                name,
                [addrs[i].0, addrs[i].1, addrs[i].2],
                data_dir,
                dir.path().join(format!("new-{name}.log")),
                initial_cluster.clone(),
            )
        })
        .collect();
    let new_ids: Vec<String> = new_procs
        .iter()
        .map(|p| cluster_id_of(&p.data_dir).expect("a restored cluster id"))
        .collect();
    assert!(new_ids.iter().all(|id| *id == new_ids[0]), "{new_ids:?}");
    assert_ne!(new_ids[0], old_id);
    // A second restore into the same directory is refused.
    let again = Launch::new(VNETD)
        .arg("restore")
        .arg("--snapshot")
        .arg(&backup)
        .arg("--data-dir")
        .arg(&new_procs[0].data_dir)
        .args(["--initial-cluster", &initial_cluster, "--name", "unit-a"])
        .output()
        .expect("run vnetd restore");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let mut new = Cluster {
        procs: Vec::new(),
        dir: None,
    };
    new.procs.append(&mut new_procs);
    for p in &mut new.procs {
        p.start();
    }
    let new_leader = new.leader().await;
    let after = profiles(new.proc(3).channel()).await;
    assert_eq!(
        after, before,
        "every profile with its identities and revision"
    );
    assert_eq!(pools(new.proc(1).channel()).await, pools_before);
    // It takes writes, and allocates past what the backup had allocated.
    let created = ProfileServiceClient::new(new.proc(2).channel())
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile("after-restore", 99)),
        })
        .await
        .expect("a write to the restored cluster")
        .into_inner()
        .profile
        .expect("profile");
    assert!(before
        .values()
        .all(|p| p.vnics[1].mac != created.vnics[1].mac));

    // An old member comes back on its old address with its old data: its peers' addresses are
    // the new cluster's, and it is refused.
    let term_before = local_status(new.proc(new_leader).channel())
        .await
        .expect("status")
        .term;
    let mut stale = Proc::new(
        3,
        "witness",
        [old_addrs[2].0, old_addrs[2].1, old_addrs[2].2],
        old.proc(3).data_dir.clone(),
        dir.path().join("stale-witness.log"),
        old.proc(3).initial_cluster.clone(),
    );
    stale.start();
    let stale_api = stale.channel();
    let stale_term = local_status(stale_api.clone()).await.map(|s| s.term);
    wait_for("the old member campaigns (and is refused)", || {
        let stale_api = stale_api.clone();
        async move {
            let now = local_status(stale_api).await?.term;
            (Some(now) > stale_term.map(|t| t + 1)).then_some(())
        }
    })
    .await;
    let status = local_status(new.proc(new_leader).channel())
        .await
        .expect("status");
    assert_eq!(status.leader_id, Some(new_leader));
    assert_eq!(
        status.term, term_before,
        "the old member's campaign reached the new cluster"
    );
    for p in &new.procs {
        let refused = probe_as(p.peer_addr, &old_id, None)
            .await
            .expect_err("the old cluster's id is refused");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains(&old_id) && refused.message().contains(&new_ids[0]));
    }
    let log = std::fs::read_to_string(&stale.log_path).unwrap_or_default();
    println!(
        "old member's log mentions the refusal {} times",
        log.matches("belongs to cluster").count()
    );
    stale.sigkill();
    new.assert_alive();
}
