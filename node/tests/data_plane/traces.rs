//! A failover is one trace across processes, through the replicated log.

use crate::common::wait_for;

use crate::harness::*;

/// A failover is one trace: the leader's `failover` span (from the revocation of the dead unit's
/// lease) is the parent of the revocation and failover writes, and the surviving unit's
/// presentation of each moved profile, and its report of it, continue the same trace from the
/// failover's Raft entry — across processes, through the replicated log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_one_trace_from_the_revocation_to_the_peers_presentation() {
    let _serial = SERIAL.lock().await;
    let collector = crate::common::otlp::Running::start().await;
    let mut plane = DataPlane::start_with(
        &["--otlp-endpoint".to_owned(), collector.endpoint.clone()],
        // Export within 100 ms rather than the default 5 s, so the test waits less.
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    // The witness leads, so the leader's spans and the survivor's come from different processes.
    plane.transfer(3).await;
    let moved = plane.placed_on("unit-a");
    assert!(!moved.is_empty(), "unit-a presents profiles to fail over");
    plane.node("unit-a").kill9();
    plane
        .wait_presented("unit-b", &plane.profiles.clone())
        .await;

    let (failover, steps, presented, report) = wait_for(
        "the failover's spans are exported by the leader and the survivor",
        || async {
            let spans = collector.spans();
            let failover = spans
                .iter()
                .find(|s| s.node == "witness" && s.name == "failover")?
                .clone();
            let in_trace: Vec<_> = spans
                .iter()
                .filter(|s| s.trace_id == failover.trace_id)
                .cloned()
                .collect();
            let steps: Vec<_> = ["revoke_lease", "commit_failover"]
                .iter()
                .map(|name| {
                    in_trace
                        .iter()
                        .find(|s| s.node == "witness" && s.name == *name)
                        .cloned()
                })
                .collect::<Option<_>>()?;
            let presented: Vec<_> = in_trace
                .iter()
                .filter(|s| s.node == "unit-b" && s.name == "present")
                .cloned()
                .collect();
            let report = in_trace
                .iter()
                .find(|s| s.node == "unit-b" && s.name == "report_presented")?
                .clone();
            (presented.len() >= moved.len()).then_some((failover, steps, presented, report))
        },
    )
    .await;
    for step in &steps {
        assert_eq!(
            step.parent_span_id, failover.span_id,
            "{} is a child of failover",
            step.name
        );
    }
    // The survivor continues from the failover's Raft entry, written inside commit_failover.
    let commit = &steps[1];
    let commit_children: Vec<String> = collector
        .spans()
        .iter()
        .filter(|s| s.trace_id == failover.trace_id && s.parent_span_id == commit.span_id)
        .map(|s| s.span_id.clone())
        .collect();
    for span in &presented {
        assert!(
            span.parent_span_id == commit.span_id || commit_children.contains(&span.parent_span_id),
            "present on unit-b continues the failover's commit: {span:?}, commit {commit:?}"
        );
    }
    assert!(
        presented.iter().any(|p| p.span_id == report.parent_span_id),
        "the report is a child of a presentation: {report:?}"
    );
}
