//! Crash tests against real `vnetd` processes: SIGKILL gives a node no chance to flush or say
//! goodbye, so these check that what the cluster acknowledged is on disk (Raft log fsynced
//! before an entry counts as replicated) and survives a leader crash under load and a crash of
//! the whole cluster.
//!
//! The processes are `common::processes`'s [`Cluster`].

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::processes::{Cluster, Proc};
use common::{profile_with_mac, wait_for};
use tonic::transport::Channel;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

async fn create(channel: Channel, profile: pb::Profile) -> Result<pb::Profile, tonic::Status> {
    ProfileServiceClient::new(channel)
        .create_profile(pb::CreateProfileRequest {
            profile: Some(profile),
        })
        .await
        .map(|r| r.into_inner().profile.expect("created profile returned"))
}

async fn get(
    channel: Channel,
    name: &str,
    consistency: pb::ReadConsistency,
) -> Result<pb::Profile, tonic::Status> {
    ProfileServiceClient::new(channel)
        .get_profile(pb::GetProfileRequest {
            name: name.to_string(),
            consistency: consistency as i32,
        })
        .await
        .map(|r| r.into_inner().profile.expect("profile returned"))
}

/// Every profile, paging through ListProfiles.
async fn list_all(
    channel: Channel,
    consistency: pb::ReadConsistency,
) -> Result<BTreeMap<String, pb::Profile>, tonic::Status> {
    let mut client = ProfileServiceClient::new(channel);
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_profiles(pb::ListProfilesRequest {
                page_size: 500,
                page_token,
                consistency: consistency as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        for p in page.profiles {
            all.insert(p.name.clone(), p);
        }
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// Names of `expected` profiles missing from, or different in, `actual`.
fn discrepancies(
    expected: &BTreeMap<String, pb::Profile>,
    actual: &BTreeMap<String, pb::Profile>,
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(name, want)| match actual.get(name) {
            None => Some(format!("{name}: missing")),
            Some(got) if got != want => {
                Some(format!("{name}: stored {got:?}, acknowledged {want:?}"))
            }
            Some(_) => None,
        })
        .collect()
}

/// State shared by the writer tasks of the leader-crash test.
struct Writers {
    /// Endpoints writers may use; the killed node is taken out before it is killed.
    live: Mutex<Vec<(u64, Channel)>>,
    next: AtomicU64,
    stop: AtomicBool,
    /// True once the old leader is dead and reaped: a request sent after that can only be
    /// acknowledged by a new leader.
    leader_dead: AtomicBool,
    /// Every acknowledged profile, as the create returned it.
    acked: Mutex<BTreeMap<String, pb::Profile>>,
    acked_after_kill: AtomicU64,
    /// Requests sent and not yet answered.
    in_flight: AtomicU64,
    /// Failed (unacknowledged) writes by status code: how many, and the first message.
    failed: Mutex<BTreeMap<String, (u64, String)>>,
}

impl Writers {
    fn acked(&self) -> usize {
        self.acked.lock().expect("acked lock").len()
    }

    async fn run(self: Arc<Self>, writer: u64) {
        while !self.stop.load(Ordering::SeqCst) {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            let channel = {
                let live = self.live.lock().expect("live lock");
                live[(n + writer) as usize % live.len()].1.clone()
            };
            let after_kill = self.leader_dead.load(Ordering::SeqCst);
            let name = format!("crash-{n:06}");
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let result = create(channel, profile_with_mac(&name, n)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(stored) => {
                    self.acked.lock().expect("acked lock").insert(name, stored);
                    if after_kill {
                        self.acked_after_kill.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(status) => {
                    let mut failed = self.failed.lock().expect("failed lock");
                    let entry = failed
                        .entry(format!("{:?}", status.code()))
                        .or_insert_with(|| (0, status.message().to_string()));
                    entry.0 += 1;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_during_writes_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    cluster.leader().await;

    let writers = Arc::new(Writers {
        live: Mutex::new(cluster.procs.iter().map(|p| (p.id, p.channel())).collect()),
        next: AtomicU64::new(1),
        stop: AtomicBool::new(false),
        leader_dead: AtomicBool::new(false),
        acked: Mutex::new(BTreeMap::new()),
        acked_after_kill: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        failed: Mutex::new(BTreeMap::new()),
    });
    let tasks: Vec<_> = (0..4)
        .map(|w| tokio::spawn(writers.clone().run(w)))
        .collect();

    wait_for("30 writes are acknowledged before the crash", || {
        let writers = writers.clone();
        async move { (writers.acked() >= 30).then_some(()) }
    })
    .await;

    // Kill whoever leads now, mid-stream: writers have requests in flight to every node.
    let old_leader = cluster.leader().await;
    writers
        .live
        .lock()
        .expect("live lock")
        .retain(|(id, _)| *id != old_leader);
    let in_flight_at_kill = writers.in_flight.load(Ordering::SeqCst);
    cluster.proc_mut(old_leader).sigkill();
    writers.leader_dead.store(true, Ordering::SeqCst);
    let acked_at_kill = writers.acked();

    wait_for("a new leader acknowledges 30 writes", || {
        let writers = writers.clone();
        async move { (writers.acked_after_kill.load(Ordering::SeqCst) >= 30).then_some(()) }
    })
    .await;
    writers.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("writer task");
    }
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader, "the killed node cannot lead");
    let acked = writers.acked.lock().expect("acked lock").clone();
    eprintln!(
        "leader {old_leader} killed after {acked_at_kill} acknowledged writes, with \
         {in_flight_at_kill} in flight; new leader {new_leader}; {} acknowledged in all, {} \
         after the kill; failed: {:?}",
        acked.len(),
        writers.acked_after_kill.load(Ordering::SeqCst),
        writers.failed.lock().expect("failed lock")
    );

    // The killed node comes back on its data dir and ports.
    cluster.proc_mut(old_leader).start();

    // Linearizable: every acknowledged write is there, unchanged, whichever node is asked.
    for p in cluster.procs.iter().filter(|p| p.id != old_leader) {
        let stored = list_all(p.channel(), pb::ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("linearizable list through node {}: {e:?}", p.id));
        let wrong = discrepancies(&acked, &stored);
        assert!(
            wrong.is_empty(),
            "{} of {} acknowledged writes lost or altered (linearizable list via node {}): {:#?}",
            wrong.len(),
            acked.len(),
            p.id,
            wrong
        );
    }
    let survivor = cluster
        .procs
        .iter()
        .find(|p| p.id != old_leader)
        .expect("a survivor")
        .channel();
    for (name, want) in &acked {
        let got = get(survivor.clone(), name, pb::ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("linearizable get of acknowledged {name}: {e:?}"));
        assert_eq!(&got, want, "acknowledged {name}");
    }

    // The restarted node keeps what it had and catches up: a local read serves every
    // acknowledged write.
    let restarted = cluster.proc(old_leader).channel();
    let mut last_wrong = Vec::new();
    let caught_up = tokio::time::timeout(common::WAIT_DEADLINE, async {
        loop {
            if let Ok(stored) = list_all(restarted.clone(), pb::ReadConsistency::Local).await {
                last_wrong = discrepancies(&acked, &stored);
                if last_wrong.is_empty() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    cluster.assert_alive();
    assert!(
        caught_up.is_ok(),
        "the restarted node {old_leader} does not serve every acknowledged write locally \
         within {:?}; last local read differs in {} profiles: {:#?}",
        common::WAIT_DEADLINE,
        last_wrong.len(),
        last_wrong.iter().take(20).collect::<Vec<_>>()
    );
    for (name, want) in acked.iter().take(5).chain(acked.iter().rev().take(5)) {
        let got = get(restarted.clone(), name, pb::ReadConsistency::Local)
            .await
            .unwrap_or_else(|e| panic!("local get of {name} on the restarted node: {e:?}"));
        assert_eq!(&got, want, "restarted node, local read of {name}");
    }
    // And it takes part again: a linearizable read through it sees everything too.
    let stored = list_all(restarted, pb::ReadConsistency::Linearizable)
        .await
        .expect("linearizable list through the restarted node");
    assert!(discrepancies(&acked, &stored).is_empty());
    eprintln!("test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_keeps_everything() {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    cluster.leader().await;

    // Spread the writes over every node (followers forward to the leader).
    let channels: Vec<Channel> = cluster.procs.iter().map(Proc::channel).collect();
    let mut created = BTreeMap::new();
    for n in 1..=50u64 {
        let name = format!("keep-{n:03}");
        let stored = create(
            channels[n as usize % channels.len()].clone(),
            profile_with_mac(&name, n),
        )
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
        created.insert(name, stored);
    }
    let last_revision = created
        .values()
        .map(|p| p.revision)
        .max()
        .expect("revisions");

    // No clean shutdown for anyone, right after the last acknowledgement.
    for p in &mut cluster.procs {
        p.sigkill();
    }
    for p in &mut cluster.procs {
        p.start();
    }
    cluster.leader().await;

    for (i, p) in cluster.procs.iter().enumerate() {
        let stored = list_all(p.channel(), pb::ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|e| panic!("linearizable list through node {}: {e:?}", p.id));
        let wrong = discrepancies(&created, &stored);
        assert!(
            wrong.is_empty(),
            "after a whole-cluster restart, {} of 50 profiles lost or altered (via node {}): \
             {:#?}",
            wrong.len(),
            p.id,
            wrong
        );
        assert_eq!(
            stored.len(),
            created.len(),
            "no profile appears that was never created: {:?}",
            stored
                .keys()
                .filter(|k| !created.contains_key(*k))
                .collect::<Vec<_>>()
        );
        // Spot-check single-profile reads too, a different slice through each node.
        for (name, want) in created.iter().skip(i).step_by(cluster.procs.len()) {
            let got = get(p.channel(), name, pb::ReadConsistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("linearizable get of {name} via node {}: {e:?}", p.id));
            assert_eq!(&got, want, "{name} via node {}", p.id);
        }
    }

    // The revision counter carries on from where it was: it never goes back.
    let after = create(channels[0].clone(), profile_with_mac("keep-after", 1000))
        .await
        .expect("create after the restart");
    assert!(
        after.revision > last_revision,
        "revision after restart {} is not above the last acknowledged revision {last_revision}",
        after.revision
    );
    eprintln!("test took {:?}", started.elapsed());
}
