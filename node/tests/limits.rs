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
