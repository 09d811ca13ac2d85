//! Traces across processes: three `vnetd` processes export spans over OTLP to a collector run by
//! this test (a tonic server for the OTLP trace service), and a write sent to a follower with a
//! client's trace context is one trace: the client's span, the follower's call, its hop to the
//! leader, and the leader's Raft write, each the child of the one before, across processes.

mod common;

use std::collections::BTreeMap;

use common::otlp::{self, Received};
use common::processes::Cluster;
use common::{sample_profile, wait_for};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

/// The client's trace and span, as a caller instrumented with OpenTelemetry would send them.
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_is_one_trace_across_follower_and_leader() {
    let collector = otlp::Running::start().await;
    let mut cluster = Cluster::start_with(
        &[
            "--otlp-endpoint".to_owned(),
            collector.endpoint.clone(),
            "--log-format".to_owned(),
            "json".to_owned(),
            "--log-level".to_owned(),
            "info,vnet_node=debug".to_owned(),
        ],
        // Export within 100 ms rather than the default 5 s, so the test waits less.
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let leader = cluster.leader().await;
    let follower = cluster
        .procs
        .iter()
        .find(|p| p.id != leader)
        .expect("a follower");
    let follower_name = follower.name.to_owned();
    let follower_id = follower.id;
    let leader_name = cluster.proc(leader).name.to_owned();

    let mut request = tonic::Request::new(pb::CreateProfileRequest {
        profile: Some(sample_profile("traced", 1)),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01")
            .parse()
            .expect("ascii"),
    );
    ProfileServiceClient::new(follower.channel())
        .create_profile(request)
        .await
        .expect("the follower forwards the write to the leader");

    let spans: BTreeMap<&str, Received> = wait_for("the whole trace is exported", || async {
        let received = collector.spans();
        let in_trace: Vec<&Received> = received
            .iter()
            .filter(|s| s.trace_id == CLIENT_TRACE_ID)
            .collect();
        let find = |node: &str, name: &str| {
            in_trace
                .iter()
                .find(|s| s.node == node && s.name == name)
                .map(|s| (*s).clone())
        };
        Some(BTreeMap::from([
            ("grpc", find(&follower_name, "grpc")?),
            ("execute", find(&follower_name, "execute")?),
            ("forward", find(&follower_name, "forward")?),
            ("leader", find(&leader_name, "leader")?),
            ("raft_write", find(&leader_name, "raft_write")?),
        ]))
    })
    .await;

    // Each span is the child of the one before; the leader's continues the follower's hop.
    assert_eq!(spans["grpc"].parent_span_id, CLIENT_SPAN_ID);
    assert_eq!(spans["execute"].parent_span_id, spans["grpc"].span_id);
    assert_eq!(spans["forward"].parent_span_id, spans["execute"].span_id);
    assert_eq!(spans["leader"].parent_span_id, spans["forward"].span_id);
    assert_eq!(spans["raft_write"].parent_span_id, spans["leader"].span_id);
    assert_ne!(follower_name, leader_name);

    // The log lines written inside the request name its trace, on both nodes.
    for (id, message) in [
        (follower_id, "request done"),
        (leader, "forwarded request done"),
    ] {
        let log = &cluster.proc(id).log_path;
        let lines = logged_in_trace(log, CLIENT_TRACE_ID);
        assert!(
            lines
                .iter()
                .any(|line| line["fields"]["message"] == message),
            "{}: no JSON log line {message:?} naming trace {CLIENT_TRACE_ID}; lines in the \
             trace: {lines:?}",
            log.display()
        );
    }

    cluster.assert_alive();
}

/// The JSON log lines in `log` written inside a span whose `trace_id` is `trace_id`. Every line
/// must be JSON: `--log-format json` writes nothing else.
fn logged_in_trace(log: &std::path::Path, trace_id: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).expect("read the vnetd log");
    text.lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", log.display()))
        })
        .filter(|line| {
            line["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|span| span["trace_id"] == trace_id))
        })
        .collect()
}
