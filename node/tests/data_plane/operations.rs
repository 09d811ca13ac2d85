//! Operating through bad days: recovery without a quorum, member replacement, rolling restart
//! (README, "Operating through bad days").

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::fabric::presents_exactly;
use crate::common::wait_for;
use fabric_agent::journal::{self, Event};
use vnet_launch::{Launch, Signal};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;
use vnet_proto::vnet::v1::watch_service_client::WatchServiceClient;

use crate::harness::*;

/// Runs `vnetd recover` on `data_dir`: its exit code and what it printed.
fn recover(data_dir: &std::path::Path, confirm_lost: Option<&str>) -> (Option<i32>, String) {
    let mut command = Launch::new(VNETD)
        .arg("recover")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--operator", "alice"]);
    if let Some(lost) = confirm_lost {
        command = command.args(["--confirm-lost", lost]);
    }
    let out = command.output().expect("run vnetd recover");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

async fn local_status(api: SocketAddr) -> Option<pb::GetClusterStatusResponse> {
    ClusterServiceClient::new(channel(api))
        .get_cluster_status(pb::GetClusterStatusRequest {
            consistency: pb::ReadConsistency::Local as i32,
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_without_a_quorum_is_guarded_and_the_survivor_presents_again() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    let data_dir = plane.dir.as_ref().expect("dir").path().join("unit-a");
    plane.node("witness").kill9();
    plane.node("unit-b").kill9();
    plane.wait_until_fenced("unit-a").await;
    plane.node("unit-a").kill9();

    // Refused while a member answers: with unit-b up, unit-a and unit-b are a quorum.
    plane.node("unit-b").start();
    let unit_b_api = plane.node("unit-b").api;
    wait_for("unit-b serves again", || async {
        local_status(unit_b_api).await.map(|_| ())
    })
    .await;
    let (code, text) = recover(&data_dir, Some("2,3"));
    println!("with unit-b up: {text}");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("a quorum is reachable"), "{text}");
    plane.node("unit-b").kill9();

    // Refused without a confirmation for every lost member, naming the missing ones.
    let (code, text) = recover(&data_dir, None);
    assert_eq!(code, Some(2), "--confirm-lost is required: {text}");
    let (code, text) = recover(&data_dir, Some("2"));
    println!("only 2 confirmed: {text}");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("not confirmed: 3 (witness@"),
        "the refusal lists the missing member: {text}"
    );
    let (code, text) = recover(&data_dir, Some("2,3"));
    println!("recovered: {text}");
    assert_eq!(code, Some(0), "{text}");

    // The survivor leads alone and presents again.
    let mark = plane.journal_mark("unit-a");
    plane.node("unit-a").start();
    let unit_a_api = plane.node("unit-a").api;
    let status = wait_for("unit-a leads a cluster of one", || async {
        let status = local_status(unit_a_api).await?;
        (status.leader_id == Some(1)).then_some(status)
    })
    .await;
    assert_eq!(
        status.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1],
        "{:?}",
        status.members
    );
    // Its own profiles and, failed over, the lost unit-b's, each with its identities.
    plane
        .wait_presented("unit-a", &plane.profiles.clone())
        .await;
    let presented_again = journal::read(&plane.switch("unit-a").journal).expect("journal");
    println!(
        "unit-a's switch: {} journal records since its restart",
        presented_again.len() - mark
    );

    // The confirmation is in the replicated history, with the operator as its actor.
    let mut events = WatchServiceClient::new(channel(unit_a_api))
        .watch(pb::WatchRequest { from_revision: 1 })
        .await
        .expect("watch")
        .into_inner();
    let recovered = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("the recovery event within the history")
            .expect("watch stream")
            .expect("an event");
        if let Some(pb::watch_event::Change::Recovered(r)) = event.change {
            break (event.actor, r);
        }
    };
    assert_eq!(recovered.0, "alice");
    assert_eq!(recovered.1.survivor, 1);
    assert_eq!(recovered.1.lost, vec![2, 3]);

    // The lost member comes back with its old data: refused, it never gets a lease, and the
    // survivor stays the only voter.
    plane.node("unit-b").start();
    let old_term = local_status(unit_b_api).await.map(|s| s.term);
    wait_for("the old unit-b campaigns", || async {
        let now = local_status(unit_b_api).await?.term;
        (Some(now) > old_term.map(|t| t + 1)).then_some(())
    })
    .await;
    let status = local_status(unit_a_api).await.expect("status");
    assert_eq!(status.leader_id, Some(1));
    assert_eq!(status.members.len(), 1, "{:?}", status.members);
    assert!(
        plane.ports("unit-b").await.is_empty(),
        "the removed unit-b presents"
    );
    let add_again = ClusterServiceClient::new(channel(unit_a_api))
        .add_member(pb::AddMemberRequest {
            id: 2,
            name: "unit-b".into(),
            peer_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
            role: pb::MemberRole::Unit as i32,
        })
        .await
        .expect_err("a removed id is never used again");
    assert_eq!(add_again.code(), tonic::Code::FailedPrecondition);
}

/// Clients creating profiles one after another through `apis` in turn (moving to the next
/// endpoint after any failure), recording what was acknowledged.
struct Load {
    acknowledged: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(apis: Vec<SocketAddr>, writers: usize) -> Load {
        use std::sync::atomic::Ordering;
        let mut load = Load {
            acknowledged: Default::default(),
            errors: Default::default(),
            stop: Default::default(),
            tasks: tokio::task::JoinSet::new(),
        };
        for w in 0..writers {
            let apis = apis.clone();
            let acknowledged = load.acknowledged.clone();
            let errors = load.errors.clone();
            let stop = load.stop.clone();
            load.tasks.spawn(async move {
                let mut endpoint = w;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("load-{w}-{n}");
                    let profile = pb::Profile {
                        name: name.clone(),
                        server: format!("srv-load-{w}"),
                        vnics: vec![pb::Vnic {
                            name: "eth0".into(),
                            network: "prod".into(),
                            ..Default::default()
                        }],
                        failback: pb::FailbackPolicy::Manual as i32,
                        ..Default::default()
                    };
                    let created = ProfileServiceClient::new(channel(apis[endpoint % apis.len()]))
                        .create_profile(pb::CreateProfileRequest {
                            profile: Some(profile),
                        })
                        .await;
                    match created {
                        Ok(_) => {
                            acknowledged.lock().expect("lock").push(name);
                            n += 1;
                        }
                        Err(e) if e.code() == tonic::Code::AlreadyExists => n += 1,
                        Err(_) => {
                            errors.fetch_add(1, Ordering::SeqCst);
                            endpoint += 1;
                        }
                    }
                }
            });
        }
        load
    }

    /// Stops the writers; what they had acknowledged and how many calls failed.
    async fn stop(mut self) -> (Vec<String>, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        while let Some(joined) = self.tasks.join_next().await {
            joined.expect("writer");
        }
        let acknowledged = self.acknowledged.lock().expect("lock").clone();
        (acknowledged, self.errors.load(Ordering::SeqCst))
    }
}

/// Fails unless every name in `acknowledged` is a profile, read linearizably through `api`.
async fn assert_all_present(api: SocketAddr, acknowledged: &[String]) {
    let mut names = std::collections::BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = ProfileServiceClient::new(channel(api))
            .list_profiles(pb::ListProfilesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .expect("list profiles")
            .into_inner();
        names.extend(page.profiles.into_iter().map(|p| p.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_unit_under_load_with_a_new_id_that_catches_up_then_removing_the_old_id() {
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    let apis = vec![plane.node("unit-a").api, plane.node("witness").api];
    let load = Load::start(apis.clone(), 2);
    // unit-b's hardware dies; unit-a takes its profiles.
    plane.node("unit-b").kill9();
    plane
        .wait_presented("unit-a", &plane.profiles.clone())
        .await;
    let mark_a = plane.journal_mark("unit-a");

    // The replacement: new hardware (its own switch), a new id and name, an empty data dir.
    let dir = plane.dir.as_ref().expect("dir").path().to_path_buf();
    let switch = start_switch(&dir, "unit-c").await;
    let (api, peer) = (free_port(), free_port());
    let cabling = SERVERS
        .iter()
        .enumerate()
        .map(|(p, s)| format!("{s}={}", p + 1))
        .collect::<Vec<_>>()
        .join(",");
    let args: Vec<String> = [
        "--id",
        "4",
        "--name",
        "unit-c",
        "--role",
        "unit",
        "--data-dir",
        &dir.join("unit-c").display().to_string(),
        "--api-listen",
        &api.to_string(),
        "--peer-listen",
        &peer.to_string(),
        "--initial-cluster",
        "",
        "--switch",
        &switch.addr.to_string(),
        "--cabling",
        &cabling,
        "--request-timeout-ms",
        "3000",
        "--log-level",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    plane.switches.push(switch);
    plane.nodes.push(Node {
        id: 4,
        name: "unit-c",
        api,
        args,
        env: vec![],
        log: dir.join("unit-c.log"),
        child: None,
        stopped: false,
    });
    plane.node("unit-c").start();
    let started = std::time::Instant::now();
    let mut cluster = ClusterServiceClient::new(channel(apis[0]));
    cluster
        .add_member(pb::AddMemberRequest {
            id: 4,
            name: "unit-c".into(),
            peer_addr: peer.to_string(),
            api_addr: api.to_string(),
            role: pb::MemberRole::Unit as i32,
        })
        .await
        .expect("add unit-c as a learner");
    // Promotion is refused until the learner has caught up.
    let refusals = std::sync::atomic::AtomicU32::new(0);
    wait_for("unit-c catches up and is promoted", || {
        let mut cluster = cluster.clone();
        let refusals = &refusals;
        async move {
            match cluster
                .promote_member(pb::PromoteMemberRequest { id: 4 })
                .await
            {
                Ok(_) => Some(()),
                Err(_) => {
                    refusals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    None
                }
            }
        }
    })
    .await;
    let refusals = refusals.into_inner();
    let caught_up = started.elapsed();
    cluster
        .remove_member(pb::RemoveMemberRequest { id: 2 })
        .await
        .expect("remove the old id");
    let status = wait_for("unit-c is a voter and unit-b is gone", || async {
        let status = local_status(apis[0]).await?;
        let voters: Vec<u64> = status
            .members
            .iter()
            .filter(|m| m.membership == pb::RaftMembership::Voter as i32)
            .map(|m| m.id)
            .collect();
        (voters == vec![1, 3, 4]).then_some(status)
    })
    .await;
    assert!(status.members.iter().all(|m| m.id != 2));
    plane
        .wait_leases_outlived(&["unit-a"], fabric_agent::monotonic_now_ns())
        .await;
    plane.assert_no_fence_since("unit-a", mark_a, "the replacement of unit-b");
    let (acknowledged, errors) = load.stop().await;
    assert_all_present(apis[1], &acknowledged).await;
    println!(
        "unit-c added, caught up and promoted in {caught_up:?} ({refusals} promotions refused \
         while catching up); {} writes acknowledged during the replacement, {errors} failed \
         calls",
        acknowledged.len()
    );

    // The new unit takes work: a profile moved to it keeps its identities.
    let moved = plane.profiles[1].clone();
    cluster
        .failover(pb::FailoverRequest {
            profile: moved.name.clone(),
            to_unit: "unit-c".into(),
            from_unit: String::new(),
        })
        .await
        .expect("move a profile to unit-c");
    plane.wait_presented("unit-c", &[moved]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_keeps_writes_and_fences_no_healthy_unit() {
    use std::time::Instant;
    let _serial = SERIAL.lock().await;
    let mut plane = DataPlane::start().await;
    let apis: Vec<SocketAddr> = plane.nodes.iter().map(|n| n.api).collect();
    let load = Load::start(apis.clone(), 2);
    for name in ["witness", "unit-b", "unit-a"] {
        let healthy: Vec<&str> = ["unit-a", "unit-b"]
            .into_iter()
            .filter(|u| *u != name)
            .collect();
        let marks: Vec<usize> = healthy.iter().map(|u| plane.journal_mark(u)).collect();
        let own_mark = (name != "witness").then(|| plane.journal_mark(name));
        let since = fabric_agent::monotonic_now_ns();
        let started = Instant::now();
        // The restart an upgrade does: SIGTERM, wait for the exit, start (the new binary).
        plane.node(name).signal(Signal::SIGTERM);
        let mut child = plane.node(name).child.take().expect("running");
        let status = wait_for(&format!("{name} exits on SIGTERM"), || {
            let exited = child.try_wait().expect("try_wait");
            async move { exited }
        })
        .await;
        assert!(status.success(), "{name} exited with {status}");
        plane.node(name).start();
        let api = plane.node(name).api;
        wait_for(&format!("{name} is back and caught up"), || async {
            let status = local_status(api).await?;
            status.leader_id?;
            (status.applied_index + 64 >= status.commit_index && status.applied_index > 0)
                .then_some(())
        })
        .await;
        let back = started.elapsed();
        plane.wait_leases_outlived(&healthy, since).await;
        for (unit, mark) in healthy.iter().zip(&marks) {
            plane.assert_no_fence_since(unit, *mark, &format!("the restart of {name}"));
        }
        let own_fences = own_mark.map(|mark| {
            journal::read(&plane.switch(name).journal).expect("journal")[mark..]
                .iter()
                .filter(|r| matches!(r.event, Event::Fenced { .. }))
                .count()
        });
        println!(
            "{name}: back and caught up {back:?} after SIGTERM; its own switch fenced {} times",
            own_fences.map_or("-".to_string(), |n| n.to_string())
        );
    }
    let (acknowledged, errors) = load.stop().await;
    assert_all_present(apis[2], &acknowledged).await;
    println!(
        "{} writes acknowledged during the rolling restart, {errors} failed calls",
        acknowledged.len()
    );
    // Every profile is presented once again, by one of the units.
    let servers: Vec<String> = SERVERS.iter().map(|s| s.to_string()).collect();
    wait_for("every profile is presented after the restarts", || async {
        let a = plane.ports("unit-a").await;
        let b = plane.ports("unit-b").await;
        plane
            .profiles
            .iter()
            .all(|p| presents_exactly(&a, &servers, p) ^ presents_exactly(&b, &servers, p))
            .then_some(())
    })
    .await;
}
