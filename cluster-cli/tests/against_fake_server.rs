//! Runs the real `vnetctl` binary against an in-process fake of the public API, to check what
//! unit tests cannot: the gRPC plumbing, failover across real sockets, exit codes and stdout.
//!
//! The fake is deliberately small (an in-memory map, no Raft): it stands in for vnetd only as
//! far as the wire contract goes. Tests against real vnetd processes belong to the end-to-end
//! suites.

mod common;

use std::sync::{Arc, Mutex};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_get_skips_a_dead_endpoint_and_prints_the_documented_json() {
    let state = Arc::new(Mutex::new(State::default()));
    let live = serve(node(&state)).await;
    let endpoints = format!("{},{live}", dead_address());

    let created = vnetctl(
        &endpoints,
        &[
            "profile",
            "create",
            "web-01",
            "--server",
            "rack1-srv01",
            "--vnic",
            "eth0:net=prod:vlan=100:pool=macs",
            "--vhba",
            "fc0:fabric=a:wwpn=20:00:00:25:b5:00:00:01:wwnn=20:00:00:25:b5:00:01:01",
            "--failback",
            "manual",
        ],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));

    let got = vnetctl(&endpoints, &["-o", "json", "profile", "get", "web-01"]).await;
    assert_eq!(got.status.code(), Some(0), "{}", stderr(&got));
    let json: serde_json::Value = serde_json::from_str(&stdout(&got)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "web-01",
            "server": "rack1-srv01",
            "vnics": [{
                "name": "eth0", "mac": "02:00:00:00:00:01", "network": "prod", "vlan": 100,
                "pool": "macs",
            }],
            "vhbas": [{
                "name": "fc0", "wwpn": "20:00:00:25:b5:00:00:01",
                "wwnn": "20:00:00:25:b5:00:01:01", "fabric": "a", "pool": null,
            }],
            "preferred_unit": null,
            "failback": "manual",
            "revision": 1,
            "created_revision": 1,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_distinguish_rejected_usage_and_unreachable() {
    let state = Arc::new(Mutex::new(State::default()));
    let live = serve(node(&state)).await.to_string();

    let missing = vnetctl(&live, &["profile", "get", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("NOT_FOUND"),
        "{}",
        stderr(&missing)
    );

    let missing_json = vnetctl(&live, &["-o", "json", "profile", "get", "nope"]).await;
    let error: serde_json::Value = serde_json::from_str(stderr(&missing_json).trim()).unwrap();
    assert_eq!(error["error"]["code"], "NOT_FOUND");
    assert_eq!(error["exit_code"], 1);

    let create_with_vnic = |vnic: &'static str| {
        let live = live.clone();
        async move {
            let args = ["profile", "create", "x", "--server", "s", "--vnic", vnic];
            vnetctl(&live, &args).await
        }
    };
    let usage = create_with_vnic("eth0:net=p:vlan=ten").await;
    assert_eq!(usage.status.code(), Some(2));
    assert!(
        stderr(&usage).contains("vlan \"ten\""),
        "{}",
        stderr(&usage)
    );

    // A rule (here the VLAN range) is the server's: vnetctl sends the request and prints the
    // server's refusal, which names the field.
    let rejected = create_with_vnic("eth0:net=p:vlan=5000").await;
    assert_eq!(rejected.status.code(), Some(1), "{}", stderr(&rejected));
    assert!(
        stderr(&rejected).contains("INVALID_ARGUMENT")
            && stderr(&rejected).contains("invalid profile.vnics[0].vlan \"5000\""),
        "{}",
        stderr(&rejected)
    );

    let nobody = format!("{},{}", dead_address(), dead_address());
    let unreachable = vnetctl(&nobody, &["status"]).await;
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(
        stderr(&unreachable).contains("no endpoint reachable"),
        "{}",
        stderr(&unreachable)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_leader_is_skipped_and_alone_is_reported_as_unavailable() {
    let state = Arc::new(Mutex::new(State::default()));
    let leaderless = serve(FakeNode {
        unavailable: true,
        ..node(&state)
    })
    .await;
    let live = serve(node(&state)).await;

    let ok = vnetctl(&format!("{leaderless},{live}"), &["status"]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("leader:    1 (unit-a)"),
        "{}",
        stdout(&ok)
    );

    let alone = vnetctl(&leaderless.to_string(), &["status"]).await;
    assert_eq!(alone.status.code(), Some(1));
    assert!(stderr(&alone).contains("UNAVAILABLE"), "{}", stderr(&alone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_everything_and_limit_truncates() {
    let state = Arc::new(Mutex::new(State::default()));
    let live = serve(node(&state)).await.to_string();
    for index in 0..7 {
        let name = format!("p{index}");
        let created = vnetctl(
            &live,
            &[
                "profile",
                "create",
                &name,
                "--server",
                "s",
                "--vnic",
                "eth0:net=prod:pool=m",
            ],
        )
        .await;
        assert!(created.status.success(), "{}", stderr(&created));
    }
    let listed = vnetctl(
        &live,
        &["-o", "json", "profile", "list", "--page-size", "3"],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let names: Vec<&str> = json["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    assert_eq!(json["truncated"], false);
    assert_eq!(json["revision"], 7);

    let limited = vnetctl(
        &live,
        &[
            "-o",
            "json",
            "profile",
            "list",
            "--page-size",
            "3",
            "--limit",
            "4",
        ],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&limited)).unwrap();
    assert_eq!(json["profiles"].as_array().unwrap().len(), 4);
    assert_eq!(json["truncated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_by_flags_keeps_the_mac_and_is_conditional_on_what_it_read() {
    let state = Arc::new(Mutex::new(State::default()));
    let live = serve(node(&state)).await.to_string();
    let created = vnetctl(
        &live,
        &[
            "profile",
            "create",
            "web-01",
            "--server",
            "s",
            "--vnic",
            "eth0:net=prod:vlan=100:pool=m",
        ],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));

    let updated = vnetctl(
        &live,
        &[
            "-o",
            "json",
            "profile",
            "update",
            "web-01",
            "--vnic",
            "eth0:net=prod:vlan=200",
        ],
    )
    .await;
    assert_eq!(updated.status.code(), Some(0), "{}", stderr(&updated));
    let json: serde_json::Value = serde_json::from_str(&stdout(&updated)).unwrap();
    assert_eq!(json["vnics"][0]["vlan"], 200);
    assert_eq!(
        json["vnics"][0]["mac"], "02:00:00:00:00:01",
        "the MAC survived the edit"
    );
    assert_eq!(json["revision"], 2);

    let stale = vnetctl(
        &live,
        &[
            "profile",
            "update",
            "web-01",
            "--server",
            "t",
            "--expected-revision",
            "1",
        ],
    )
    .await;
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("ABORTED"), "{}", stderr(&stale));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_commands_ask_every_endpoint_and_fail_if_any_is_unwell() {
    let state = Arc::new(Mutex::new(State::default()));
    let healthy = serve(node(&state)).await.to_string();
    let unavailable = serve(FakeNode {
        unavailable: true,
        ..node(&state)
    })
    .await
    .to_string();
    let dead = dead_address();
    let all = format!("{healthy},{unavailable},{dead}");

    let health = vnetctl(&all, &["-o", "json", "endpoint", "health"]).await;
    assert_eq!(health.status.code(), Some(1), "{}", stderr(&health));
    let rows: serde_json::Value = serde_json::from_slice(&health.stdout).expect("JSON");
    let rows = rows["endpoints"].as_array().expect("endpoints").clone();
    let healthy_of = |endpoint: &str| {
        rows.iter()
            .find(|r| r["endpoint"] == endpoint)
            .unwrap_or_else(|| panic!("no row for {endpoint}: {rows:?}"))["healthy"]
            .clone()
    };
    assert_eq!(healthy_of(&healthy), true);
    assert_eq!(healthy_of(&unavailable), false);
    assert_eq!(healthy_of(&dead), false);
    assert!(
        stderr(&health).contains("2 of 3 endpoint(s) unhealthy"),
        "{}",
        stderr(&health)
    );

    let only_healthy = vnetctl(&healthy, &["endpoint", "health"]).await;
    assert_eq!(
        only_healthy.status.code(),
        Some(0),
        "{}",
        stderr(&only_healthy)
    );

    let status = vnetctl(&all, &["-o", "json", "endpoint", "status"]).await;
    assert_eq!(status.status.code(), Some(1), "{}", stderr(&status));
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let rows = rows["endpoints"].as_array().expect("endpoints");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["endpoint"], healthy.as_str());
    assert_eq!(rows[0]["version"], "fake");
    assert_eq!(rows[0]["data_dir_bytes"], 8192);
    assert_eq!(rows[0]["is_leader"], true);
    assert!(rows[0]["error"].is_null(), "{rows:?}");
    assert_eq!(rows[0]["alarms"], serde_json::json!([]));
    assert!(
        rows[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("UNAVAILABLE")),
        "{rows:?}"
    );
    assert!(rows[2]["error"].is_string(), "{rows:?}");

    let table = vnetctl(&healthy, &["endpoint", "status"]).await;
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("VERSION") && text.contains("8.0 KiB") && text.contains("self"),
        "{text}"
    );
}

/// A backup file in the server's layout (see `SaveSnapshot` in cluster.proto) around `body`.
fn backup_file(body: &str) -> Vec<u8> {
    let mut bytes = b"VNETSNAP".to_vec();
    bytes.extend_from_slice(&1u32.to_be_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&crc32fast::hash(body.as_bytes()).to_be_bytes());
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_writes_a_verified_file_and_status_reads_it_back() {
    let body = r#"{"meta":{},"state":{},"summary":{"revision":41,"applied_index":44,"profiles":6,"pools":2,"members":3}}"#;
    let file = backup_file(body);
    let state = Arc::new(Mutex::new(State::default()));
    {
        let mut s = state.lock().unwrap();
        s.backup_header = vnet_proto::vnet::v1::SnapshotHeader {
            revision: 41,
            applied_index: 44,
            profiles: 6,
            pools: 2,
            members: 3,
            size: file.len() as u64,
            crc32: crc32fast::hash(&file),
        };
        s.backup = file.clone();
    }
    let live = serve(node(&state)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vnet.snap");
    let path_arg = path.to_str().unwrap();

    let saved = vnetctl(&live.to_string(), &["snapshot", "save", path_arg]).await;
    assert_eq!(saved.status.code(), Some(0), "{}", stderr(&saved));
    println!("{}", stdout(&saved));
    assert!(
        stdout(&saved).contains("revision  41"),
        "{}",
        stdout(&saved)
    );
    assert_eq!(std::fs::read(&path).unwrap(), file);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file is left behind"
    );

    // status needs no server.
    let status = vnetctl(
        &dead_address().to_string(),
        &["-o", "json", "snapshot", "status", path_arg],
    )
    .await;
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(json["revision"], 41);
    assert_eq!(json["profiles"], 6);
    assert_eq!(json["pools"], 2);
    assert_eq!(json["members"], 3);
    assert_eq!(json["size"], file.len() as u64);
    assert_eq!(json["verified"], true);

    // A damaged file does not verify, and says why.
    let mut damaged = file.clone();
    let last = damaged.len() - 3;
    damaged[last] ^= 0x20;
    std::fs::write(&path, &damaged).unwrap();
    let status = vnetctl(&live.to_string(), &["snapshot", "status", path_arg]).await;
    assert_eq!(status.status.code(), Some(4), "{}", stdout(&status));
    assert!(stdout(&status).contains("verified  NO: checksum mismatch"));

    // A stream that arrives damaged writes nothing.
    state.lock().unwrap().backup = damaged;
    let other = dir.path().join("other.snap");
    let saved = vnetctl(
        &live.to_string(),
        &["snapshot", "save", other.to_str().unwrap()],
    )
    .await;
    assert_eq!(saved.status.code(), Some(4), "{}", stdout(&saved));
    assert!(
        stderr(&saved).contains("arrived damaged"),
        "{}",
        stderr(&saved)
    );
    assert!(!other.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_listed_shown_in_status_and_disarmed_only_within_quota() {
    let state = Arc::new(Mutex::new(State::default()));
    state
        .lock()
        .unwrap()
        .alarms
        .push(vnet_proto::vnet::v1::Alarm {
            member: "unit-b".into(),
            kind: vnet_proto::vnet::v1::AlarmKind::Nospace as i32,
            raised_revision: 7,
            used_bytes: 3_000,
            quota_bytes: 2_000,
        });
    let live = serve(node(&state)).await;
    let endpoints = live.to_string();

    let listed = vnetctl(&endpoints, &["alarm", "list"]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert!(
        stdout(&listed).contains("NOSPACE on unit-b: 3000 bytes used of a 2000-byte quota"),
        "{}",
        stdout(&listed)
    );
    let status = vnetctl(&endpoints, &["status"]).await;
    assert!(
        stdout(&status).contains("ALARM NOSPACE on unit-b"),
        "{}",
        stdout(&status)
    );
    let json = vnetctl(&endpoints, &["-o", "json", "status"]).await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(json["alarms"][0]["kind"], "NOSPACE");
    assert_eq!(json["alarms"][0]["member"], "unit-b");

    // Still past the quota: refused, exit code 1, the server's reason printed.
    let refused = vnetctl(&endpoints, &["alarm", "disarm"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("still past its quota"),
        "{}",
        stderr(&refused)
    );

    state.lock().unwrap().alarms[0].used_bytes = 1_000;
    let disarmed = vnetctl(&endpoints, &["alarm", "disarm", "--member", "unit-b"]).await;
    assert_eq!(disarmed.status.code(), Some(0), "{}", stderr(&disarmed));
    assert!(
        stdout(&disarmed).contains("1 alarm(s) disarmed"),
        "{}",
        stdout(&disarmed)
    );
    let listed = vnetctl(&endpoints, &["alarm", "list"]).await;
    assert!(
        stdout(&listed).contains("no alarm raised"),
        "{}",
        stdout(&listed)
    );
}
