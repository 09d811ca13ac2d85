//! Limits at the edge, against real `vnetd` processes (ARCHITECTURE.md, invariant 8 and
//! "Limits"): a request the model would refuse is refused before it reaches the Raft log, so it
//! cannot stall replication for everyone else.
//!
//! The processes are `common::processes`'s [`Cluster`].

mod common;

use std::time::Instant;

use common::processes::Cluster;
use common::sample_profile;
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

/// A `DeleteProfile` whose name is 4,000,000 U+0001 characters (just under the public port's
/// 4 MiB request limit; about 25 MB once JSON writes each as `\u0001`) is answered at once with
/// `INVALID_ARGUMENT` naming the field and echoing only the start of the value, and a write
/// right after it commits. Sent to a follower, so a name that slipped past the edge would be
/// forwarded, proposed and replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_million_character_name_is_refused_at_the_edge_and_writes_go_on() {
    common::init_test_logging();
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    let follower = cluster
        .procs
        .iter()
        .find(|p| p.id != leader)
        .expect("a follower");
    let mut profiles = ProfileServiceClient::new(follower.channel());
    profiles
        .create_profile(pb::CreateProfileRequest {
            profile: Some(sample_profile("before", 1)),
        })
        .await
        .expect("a write before the huge name commits");

    let huge = "\u{1}".repeat(4_000_000);
    let sent = Instant::now();
    let refused = profiles
        .delete_profile(pb::DeleteProfileRequest {
            name: huge,
            expected_revision: 0,
        })
        .await
        .expect_err("a name of control characters is refused");
    let refused_after = sent.elapsed();
    assert_eq!(
        refused.code(),
        tonic::Code::InvalidArgument,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("invalid name"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().len() < 600,
        "a {} byte message",
        refused.message().len()
    );

    let sent = Instant::now();
    profiles
        .create_profile(pb::CreateProfileRequest {
            profile: Some(sample_profile("after", 2)),
        })
        .await
        .expect("a write right after the huge name commits");
    let committed_after = sent.elapsed();
    println!(
        "4,000,000-character name refused in {} ms; next write committed in {} ms",
        refused_after.as_millis(),
        committed_after.as_millis()
    );
    cluster.assert_alive();
}

/// A profile with every name at `NAME_LEN_MAX` and the most vNICs and vHBAs, identities given
/// (distinct for each `n`), so its log entry is about as large as a client's can be (~5 KB).
fn largest_profile(n: u16) -> pb::Profile {
    use vnet_model::limits::{NAME_LEN_MAX, VHBAS_PER_PROFILE_MAX, VNICS_PER_PROFILE_MAX};
    let long = |tag: &str| {
        let head = format!("{tag}-{n}-");
        format!("{head}{}", "x".repeat(NAME_LEN_MAX - head.len()))
    };
    let [hi, lo] = n.to_be_bytes();
    pb::Profile {
        name: long("p"),
        server: long("s"),
        vnics: (0..VNICS_PER_PROFILE_MAX)
            .map(|i| pb::Vnic {
                name: long(&format!("eth{i}")),
                mac: format!("02:aa:{hi:02x}:{lo:02x}:00:{i:02x}"),
                network: long(&format!("net{i}")),
                vlan: 4094,
                pool: None,
            })
            .collect(),
        vhbas: (0..VHBAS_PER_PROFILE_MAX)
            .map(|i| pb::Vhba {
                name: long(&format!("fc{i}")),
                wwpn: format!("20:00:{hi:02x}:{lo:02x}:00:00:01:{i:02x}"),
                wwnn: format!("20:00:{hi:02x}:{lo:02x}:00:00:02:{i:02x}"),
                fabric: long(&format!("fab{i}")),
                pool: None,
            })
            .collect(),
        preferred_unit: None,
        failback: pb::FailbackPolicy::Manual as i32,
        revision: 0,
        created_revision: 0,
    }
}

/// A follower that missed 600 writes of the largest entries a client can make (about 3 MB of
/// log) catches up: the leader sends the backlog in AppendEntries of at most
/// `APPEND_BATCH_BYTES_MAX`, each of which fits openraft's AppendEntries timeout (the heartbeat
/// interval), instead of 300-entry batches that time out and are sent again from the same place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_on_large_entries_catches_up() {
    const WRITES: u16 = 600;
    common::init_test_logging();
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    let behind = cluster
        .procs
        .iter()
        .find(|p| p.id != leader)
        .expect("a follower")
        .id;
    cluster.proc_mut(behind).sigkill();

    let channel = cluster.proc(leader).channel();
    let mut writers = tokio::task::JoinSet::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    for _ in 0..16 {
        let mut profiles = ProfileServiceClient::new(channel.clone());
        let next = next.clone();
        writers.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= WRITES {
                    return;
                }
                profiles
                    .create_profile(pb::CreateProfileRequest {
                        profile: Some(largest_profile(n)),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("create {n}: {e:?}"));
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }

    let restarted = std::time::Instant::now();
    cluster.proc_mut(behind).start();
    let mut follower = ProfileServiceClient::new(cluster.proc(behind).channel());
    let last = largest_profile(WRITES - 1).name;
    common::wait_for("the restarted follower has applied the last write", || {
        let mut follower = follower.clone();
        let last = last.clone();
        async move {
            follower
                .get_profile(pb::GetProfileRequest {
                    name: last,
                    consistency: pb::ReadConsistency::Local as i32,
                })
                .await
                .ok()
        }
    })
    .await;
    println!(
        "follower caught up on {WRITES} writes of {} wire bytes each in {} ms",
        prost::Message::encoded_len(&largest_profile(0)),
        restarted.elapsed().as_millis()
    );
    follower
        .create_profile(pb::CreateProfileRequest {
            profile: Some(sample_profile("after", 1)),
        })
        .await
        .expect("a write through the caught-up follower");
    cluster.assert_alive();
}
