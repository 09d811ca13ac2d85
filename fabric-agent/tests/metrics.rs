//! `vnet-switchd`'s metrics listener: what it exports passes `promtool check metrics`, and the
//! values follow what the switch does (programs, a fence, refused calls).

mod common;

use std::net::SocketAddr;

use common::{wait_for, web, RunningSwitch, MS_NS};
use fabric_agent::switch::WatchdogMode;
use fabric_agent::{monotonic_now_ns, FabricDriver};
use vnet_metrics::testing::{get, promtool_check_metrics, sample};

/// Attempts at arming a short lease and programming within it, for a loaded machine.
const SHORT_LEASE_ATTEMPTS_MAX: usize = 20;

const PROGRAM_OK: &str = "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"vnet.switch.v1.Switch\",grpc_method=\"Program\",grpc_code=\"OK\"}";
const PROGRAM_INVALID: &str = "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"vnet.switch.v1.Switch\",grpc_method=\"Program\",grpc_code=\"InvalidArgument\"}";

async fn scrape(addr: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || get(addr, "/metrics", None))
        .await
        .unwrap()
        .map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body
        })
        .expect("scrape /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_checked_metrics_that_follow_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let switch =
        RunningSwitch::start(&dir.path().join("switch.journal"), WatchdogMode::Enforced).await;
    let driver = &switch.driver;
    let addr = switch.metrics_addr;

    let fresh = scrape(addr).await;
    promtool_check_metrics(&fresh).unwrap();
    assert_eq!(sample(&fresh, "vnet_switch_ports_programmed"), Some(0.0));
    assert_eq!(sample(&fresh, "vnet_switch_ports_cabled"), Some(4.0));
    assert_eq!(sample(&fresh, "vnet_switch_watchdog_armed"), Some(0.0));
    assert_eq!(sample(&fresh, "vnet_switch_fences_total"), Some(0.0));
    assert_eq!(sample(&fresh, "vnet_switch_halted"), Some(0.0));
    assert!(fresh.contains("vnet_build_info{program=\"vnet-switchd\",version=\""));
    assert!(sample(&fresh, "process_resident_memory_bytes").is_some_and(|rss| rss > 0.0));
    assert_eq!(
        get(addr, "/health", None).unwrap(),
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        get(addr, "/readyz", None).unwrap(),
        (200, "ok\n".to_owned())
    );

    // A short lease, programmed within, then left to lapse: the switch fences once.
    let mut attempts = 0;
    loop {
        attempts += 1;
        driver
            .arm_watchdog(monotonic_now_ns() + 100 * MS_NS)
            .await
            .unwrap();
        match driver.program(1, &web()).await {
            Ok(()) => break,
            Err(e) if e.is_lease_refusal() && attempts < SHORT_LEASE_ATTEMPTS_MAX => continue,
            Err(e) => panic!("program within a fresh lease failed: {e}"),
        }
    }
    // Port 1 is programmed now; only a fence clears it. On a loaded machine an earlier attempt's
    // lease may have lapsed (and fenced) before its program call, so each attempt may add one.
    let fenced = wait_for("the fence to clear the port in the metrics", || async {
        let text = scrape(addr).await;
        let cleared = sample(&text, "vnet_switch_ports_programmed") == Some(0.0);
        let fences = sample(&text, "vnet_switch_fences_total").unwrap_or(0.0);
        (cleared && fences >= 1.0).then_some(text)
    })
    .await;
    let fences = sample(&fenced, "vnet_switch_fences_total").unwrap_or(0.0);
    assert!(
        (1.0..=attempts as f64).contains(&fences),
        "{fences} fences after {attempts} short leases"
    );
    assert_eq!(sample(&fenced, "vnet_switch_watchdog_armed"), Some(0.0));
    assert_eq!(
        sample(&fenced, "vnet_switch_watchdog_remaining_seconds"),
        Some(0.0)
    );

    // A long lease: programmed, armed, and every call counted by method and code.
    driver
        .arm_watchdog(monotonic_now_ns() + 60_000 * MS_NS)
        .await
        .unwrap();
    driver.program(2, &web()).await.unwrap();
    assert!(
        driver.program(29, &web()).await.is_err(),
        "port 29 is not cabled"
    );
    let armed = scrape(addr).await;
    promtool_check_metrics(&armed).unwrap();
    assert_eq!(sample(&armed, "vnet_switch_ports_programmed"), Some(1.0));
    assert_eq!(sample(&armed, "vnet_switch_vfs_used"), Some(1.0));
    assert_eq!(sample(&armed, "vnet_switch_watchdog_armed"), Some(1.0));
    let remaining = sample(&armed, "vnet_switch_watchdog_remaining_seconds").unwrap();
    assert!((50.0..=60.0).contains(&remaining), "{remaining}");
    assert_eq!(sample(&armed, PROGRAM_OK), Some(2.0));
    assert_eq!(sample(&armed, PROGRAM_INVALID), Some(1.0));
    assert!(
        sample(&armed, "vnet_switch_journal_sync_duration_seconds_count").unwrap() >= 3.0,
        "every journaled change was synced"
    );

    // Prometheus asks for OpenMetrics and gets it.
    let (status, openmetrics) = get(
        addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(openmetrics.contains("# TYPE vnet_switch_fences counter\n"));
    assert!(openmetrics.ends_with("# EOF\n"));

    switch.stop().await.unwrap();
}
