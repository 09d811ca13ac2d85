//! `vnet-switchd` end to end: the library's `run` on a port-0 listener, driven through
//! `SimDriver` (and a raw client for what the driver's types cannot express), with its journal
//! read back from the API and from the file.

mod common;

use std::collections::BTreeMap;

use common::{nic, wait_for, web, RunningSwitch, MS_NS};
use fabric_agent::journal::{self, ClearReason, Event};
use fabric_agent::switch::WatchdogMode;
use fabric_agent::{monotonic_now_ns, DriverError, FabricDriver, PortProgram};
use vnet_proto::vnet::switch::v1 as pb;
use vnet_proto::vnet::switch::v1::switch_client::SwitchClient;

/// Attempts at arming a short lease and programming within it, for a loaded machine.
const SHORT_LEASE_ATTEMPTS_MAX: usize = 20;

fn refused(error: DriverError) -> (String, String) {
    match error {
        DriverError::Refused { code, message } => (code, message),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_clears_and_refuses_with_clear_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.journal");
    let switch = RunningSwitch::start(&path, WatchdogMode::Enforced).await;
    let driver = &switch.driver;

    let state = driver.state().await.unwrap();
    assert!(state.ports.is_empty());
    assert_eq!(state.watchdog_deadline_mono_ns, None);
    assert!(!state.fenced);

    // No lease, no programming.
    let (code, message) = refused(driver.program(1, &web()).await.unwrap_err());
    assert_eq!(code, "FAILED_PRECONDITION");
    assert!(message.starts_with("watchdog not armed"), "{message}");

    let deadline = monotonic_now_ns() + 60_000 * MS_NS;
    driver.arm_watchdog(deadline).await.unwrap();
    driver.program(1, &web()).await.unwrap();
    let state = driver.state().await.unwrap();
    assert_eq!(state.ports, BTreeMap::from([(1, web())]));
    assert_eq!(state.watchdog_deadline_mono_ns, Some(deadline));

    // An older deadline arriving late does not shorten the lease.
    driver.arm_watchdog(deadline - 1).await.unwrap();
    let state = driver.state().await.unwrap();
    assert_eq!(state.watchdog_deadline_mono_ns, Some(deadline));

    // The same identities on another port: refused, naming the identity and the port.
    let (code, message) = refused(driver.program(2, &web()).await.unwrap_err());
    assert_eq!(code, "ALREADY_EXISTS");
    assert!(
        message.contains("MAC 02:00:00:00:00:01") && message.contains("host port 1"),
        "{message}"
    );

    // Past capacity: 8 VFs in all, one in use.
    let eight_nics = PortProgram {
        profile: "big".into(),
        revision: 1,
        functions: (0..8)
            .map(|i| nic(&format!("eth{i}"), &format!("02:00:00:00:01:{i:02x}")))
            .collect(),
    };
    let (code, message) = refused(driver.program(3, &eight_nics).await.unwrap_err());
    assert_eq!(code, "RESOURCE_EXHAUSTED");
    assert!(message.contains("no free virtual function"), "{message}");

    // What the driver's types cannot express, through a raw client.
    let mut raw = SwitchClient::connect(format!("http://{}", switch.addr))
        .await
        .unwrap();
    let bad_mac = pb::ProgramRequest {
        host_port: 3,
        profile: "db".into(),
        revision: 1,
        functions: vec![pb::Function {
            kind: Some(pb::function::Kind::Vnic(pb::Vnic {
                name: "eth0".into(),
                mac: "zz:00:00:00:00:01".into(),
                network: "prod".into(),
                vlan: 0,
            })),
        }],
    };
    let status = raw.program(bad_mac).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("functions[0].vnic.mac"),
        "{}",
        status.message()
    );
    for (port, expected) in [(31, "outside 1..=30"), (7, "not cabled")] {
        let status = raw
            .clear(pb::ClearRequest { host_port: port })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(expected), "{}", status.message());
    }

    // Break before make: the identity moves from port 1 to port 2.
    driver.clear(1).await.unwrap();
    driver.program(2, &web()).await.unwrap();
    let raw_state = driver.raw_state().await.unwrap();
    let port_2 = &raw_state.ports[1];
    assert_eq!(
        (port_2.host_port, port_2.server.as_str()),
        (2, "rack1-srv02")
    );
    let slots: Vec<(u32, u32)> = port_2
        .functions
        .iter()
        .map(|f| (f.adapter_port, f.slot))
        .collect();
    assert_eq!(slots, [(1, 0), (1, 0)]);
    let capacity = raw_state.capacity.unwrap();
    assert_eq!((capacity.vfs_used, capacity.npiv_used), (1, 1));
    assert_eq!(raw_state.ports.len(), 4);

    driver.clear_all().await.unwrap();
    assert!(driver.state().await.unwrap().ports.is_empty());

    switch.stop().await.unwrap();
    let events: Vec<Event> = journal::read(&path)
        .unwrap()
        .into_iter()
        .map(|record| record.event)
        .collect();
    assert!(matches!(events[0], Event::Started { .. }));
    let changes: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Programmed { .. } | Event::Cleared { .. }))
        .collect();
    assert!(matches!(changes[0], Event::Programmed { port: 1, .. }));
    assert_eq!(
        changes[1],
        &Event::Cleared {
            port: 1,
            reason: ClearReason::Clear
        }
    );
    assert!(matches!(changes[2], Event::Programmed { port: 2, .. }));
    assert_eq!(
        changes[3],
        &Event::Cleared {
            port: 2,
            reason: ClearReason::ClearAll
        }
    );
    assert_eq!(
        changes.len(),
        4,
        "refused calls journal nothing: {changes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_fences_by_itself_and_a_restart_starts_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.journal");

    // A first run leaves something presented, then stops: the restart must start clear.
    let first = RunningSwitch::start(&path, WatchdogMode::Enforced).await;
    first
        .driver
        .arm_watchdog(monotonic_now_ns() + 60_000 * MS_NS)
        .await
        .unwrap();
    first.driver.program(4, &web()).await.unwrap();
    first.stop().await.unwrap();

    let switch = RunningSwitch::start(&path, WatchdogMode::Enforced).await;
    let driver = &switch.driver;
    let state = driver.state().await.unwrap();
    assert!(state.ports.is_empty(), "a restarted switch starts clear");
    assert_eq!(state.watchdog_deadline_mono_ns, None);

    // Arm a 100 ms lease and program inside it. On a loaded machine the lease may lapse before
    // the program arrives; the switch then refuses, and we try again with a fresh lease.
    let mut attempts = 0;
    let deadline = loop {
        attempts += 1;
        let deadline = monotonic_now_ns() + 100 * MS_NS;
        driver.arm_watchdog(deadline).await.unwrap();
        match driver.program(1, &web()).await {
            Ok(()) => break deadline,
            Err(e) if e.is_lease_refusal() && attempts < SHORT_LEASE_ATTEMPTS_MAX => continue,
            Err(e) => panic!("program within a fresh lease failed: {e}"),
        }
    };

    // Nobody clears the port or asks for the state: the watchdog must fence by itself. Only
    // the journal is read while waiting, because every other call applies a passed deadline
    // on its own and would hide a watchdog that never runs.
    wait_for("the watchdog to journal a fence of port 1", || async {
        let records = driver.read_journal_all(1).await.unwrap();
        records
            .iter()
            .any(|r| matches!(&r.event, Event::Fenced { ports, .. } if ports == &[1]))
            .then_some(())
    })
    .await;
    let state = driver.state().await.unwrap();
    assert!(state.fenced);
    assert!(state.ports.is_empty());
    assert!(monotonic_now_ns() >= deadline);
    let (code, message) = refused(driver.program(1, &web()).await.unwrap_err());
    assert_eq!(code, "FAILED_PRECONDITION");
    assert!(message.starts_with("lease expired at"), "{message}");

    // The journal, through the API and from the file, says the same.
    let records = driver.read_journal_all(1).await.unwrap();
    assert_eq!(records, journal::read(&path).unwrap());
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>());
    let starts = records
        .iter()
        .filter(|r| matches!(r.event, Event::Started { .. }))
        .count();
    assert_eq!(starts, 2);
    let (first_page, next) = driver.read_journal(2).await.unwrap();
    assert_eq!(first_page.first().map(|r| r.seq), Some(2));
    assert_eq!(next, records.len() as u64 + 1);

    let fence = records
        .iter()
        .rev()
        .find(|r| matches!(r.event, Event::Fenced { .. }))
        .expect("a Fenced record");
    // The last successful arm set the deadline; earlier attempts had earlier ones.
    assert_eq!(
        fence.event,
        Event::Fenced {
            ports: vec![1],
            deadline_mono_ns: deadline
        }
    );
    assert!(fence.mono_ns >= deadline, "fenced before the deadline");

    // The checker's view: each identity of `web` was presented on this switch from its
    // programming to the fence, and the first run's ended at the restart.
    let presented = journal::presentations(&records, "unit-a", None);
    let last_run: Vec<_> = presented
        .iter()
        .filter(|p| p.to_ns == Some(fence.mono_ns))
        .collect();
    assert_eq!(last_run.len(), 3, "{presented:?}");
    assert!(presented.iter().all(|p| p.to_ns.is_some()));

    // A future deadline lifts the fence.
    driver
        .arm_watchdog(monotonic_now_ns() + 60_000 * MS_NS)
        .await
        .unwrap();
    assert!(!driver.state().await.unwrap().fenced);
    driver.program(1, &web()).await.unwrap();
    switch.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_on_a_damaged_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switch.journal");
    let switch = RunningSwitch::start(&path, WatchdogMode::Enforced).await;
    switch
        .driver
        .arm_watchdog(monotonic_now_ns() + 60_000 * MS_NS)
        .await
        .unwrap();
    switch.driver.program(1, &web()).await.unwrap();
    switch.stop().await.unwrap();

    let mut bytes = std::fs::read(&path).unwrap();
    let line_2 = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes[line_2 + 20] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();

    let refused = RunningSwitch::start(&path, WatchdogMode::Enforced).await;
    let error = format!("{:#}", refused.stop().await.unwrap_err());
    assert!(
        error.contains("line 2") && error.contains(&format!("byte offset {line_2}")),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a refused journal is left as it was"
    );
}

#[test]
fn help_documents_every_flag_and_the_unsafe_one_says_so() {
    let output = vnet_launch::Launch::new(env!("CARGO_BIN_EXE_vnet-switchd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--journal",
        "--host-ports",
        "--eth-ports",
        "--vfs-per-eth-port",
        "--fc-ports",
        "--npiv-per-fc-port",
        "--log-level",
        "--unsafe-disable-watchdog",
        "VNET_SWITCH_LISTEN",
        "VNET_SWITCH_JOURNAL",
        "VNET_SWITCH_HOST_PORTS",
        "VNET_SWITCH_ETH_PORTS",
        "VNET_SWITCH_VFS_PER_ETH_PORT",
        "VNET_SWITCH_FC_PORTS",
        "VNET_SWITCH_NPIV_PER_FC_PORT",
        "VNET_SWITCH_LOG_LEVEL",
        "VNET_SWITCH_UNSAFE_DISABLE_WATCHDOG",
        "BREAKS SAFETY",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn the_binary_refuses_bad_flags_naming_them() {
    let output = vnet_launch::Launch::new(env!("CARGO_BIN_EXE_vnet-switchd"))
        .args(["--journal", "/nonexistent/j", "--host-ports", "31=srv"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("invalid --host-ports \"31=srv\"") && stderr.contains("1..=30"),
        "{stderr}"
    );
}
