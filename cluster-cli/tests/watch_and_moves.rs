//! Runs the real `vnetctl` binary against the in-process fake of the public API for what
//! follows changes over time: watch resuming across endpoints, drain waiting for its moves,
//! and failover's modes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_on_the_next_endpoint_without_gaps_or_repeats() {
    let state = Arc::new(Mutex::new(State::default()));
    let breaking = serve(FakeNode {
        watch_breaks_after: Some(2),
        ..node(&state)
    })
    .await;
    let steady = serve(node(&state)).await;
    for index in 0..4 {
        let name = format!("w{index}");
        let created = vnetctl(
            &steady.to_string(),
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

    let mut child = Command::new(env!("CARGO_BIN_EXE_vnetctl"))
        .args([
            "--endpoints",
            &format!("{breaking},{steady}"),
            "-o",
            "json",
            "watch",
            "--from",
            "1",
        ])
        .env_remove("VNET_ENDPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + RUN_DEADLINE;
        let mut lines = Vec::new();
        for line in BufReader::new(out).lines() {
            lines.push(line.unwrap());
            if lines.len() == 4 || Instant::now() > deadline {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(RUN_DEADLINE, lines).await;
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let lines = lines.expect("four events within the deadline").unwrap();
    let revisions: Vec<u64> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["revision"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(revisions, vec![1, 2, 3, 4], "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).contains("resuming at revision 3"),
        "{}",
        stderr(&output)
    );
}

/// unit-a presents web-01 and db-01, unit-b presents app-01.
fn two_units() -> State {
    let mut state = State::default();
    for (unit, profiles) in [
        ("unit-a", &["web-01", "db-01"][..]),
        ("unit-b", &["app-01"][..]),
    ] {
        state.units.insert(
            unit.into(),
            FakeUnit {
                draining: false,
                presented: profiles.iter().map(|p| p.to_string()).collect(),
            },
        );
        for profile in profiles {
            state.placements.insert(
                profile.to_string(),
                FakePlacement {
                    unit: Some(unit.into()),
                    moving: None,
                    reason: "preferred unit".into(),
                },
            );
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_follows_the_moves_until_the_unit_is_empty() {
    let state = Arc::new(Mutex::new(two_units()));
    let live = serve(node(&state)).await.to_string();

    let drained = vnetctl(
        &live,
        &["drain", "unit-a", "--wait", "--timeout-wait", "20s"],
    )
    .await;
    assert_eq!(drained.status.code(), Some(0), "{}", stderr(&drained));
    let out = stdout(&drained);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("unit-a is draining (revision 1); 2 profile(s) will move off: db-01, web-01"),
        "{out}"
    );
    assert!(
        lines.contains(
            &"unit-a: 0 of 2 profiles moved off; moving: db-01 -> unit-b, web-01 -> unit-b"
        ),
        "{out}"
    );
    assert!(
        lines.contains(&"unit-a: 1 of 2 profiles moved off; moving: web-01 -> unit-b"),
        "{out}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("unit-a: drained; 2 of 2 profiles moved off"),
        "{out}"
    );
    {
        let state = state.lock().unwrap();
        assert!(state.units["unit-a"].presented.is_empty());
        assert_eq!(state.units["unit-b"].presented.len(), 3);
    }

    // A second drain has nowhere to go (unit-a is draining): the wait gives up, exit 1.
    let stuck = vnetctl(
        &live,
        &[
            "-o",
            "json",
            "drain",
            "unit-b",
            "--wait",
            "--timeout-wait",
            "1s",
        ],
    )
    .await;
    assert_eq!(stuck.status.code(), Some(1), "{}", stderr(&stuck));
    assert_eq!(
        stdout(&stuck),
        "",
        "no JSON document for a drain that did not finish"
    );
    let error: serde_json::Value =
        serde_json::from_str(stderr(&stuck).lines().last().expect("an error line")).unwrap();
    assert_eq!(error["error"]["kind"], "timeout");
    assert_eq!(error["exit_code"], 1);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unit-b is not drained after 1s"),
        "{message}"
    );
    for profile in ["app-01", "db-01", "web-01"] {
        assert!(
            message.contains(&format!(
                "{profile}: still placed on unit-b (presented), no move started"
            )),
            "{message}"
        );
    }
    assert!(message.contains("(reason: drain of unit-a)"), "{message}");
    assert!(
        message.ends_with("Other units: unit-a (draining)"),
        "{message}"
    );

    let undrained = vnetctl(&live, &["-o", "json", "undrain", "unit-a"]).await;
    assert_eq!(undrained.status.code(), Some(0), "{}", stderr(&undrained));
    let json: serde_json::Value = serde_json::from_str(&stdout(&undrained)).unwrap();
    assert_eq!(json, serde_json::json!({"unit": "unit-a", "revision": 3}));

    let missing = vnetctl(&live, &["drain", "unit-z"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("NOT_FOUND"),
        "{}",
        stderr(&missing)
    );

    assert_eq!(
        state.lock().unwrap().requests,
        vec![
            "drain unit-a",
            "drain unit-b",
            "undrain unit-a",
            "drain unit-z"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_sends_exactly_one_mode_and_reports_the_moves() {
    let state = Arc::new(Mutex::new(two_units()));
    let live = serve(node(&state)).await.to_string();

    let one = vnetctl(
        &live,
        &["-o", "json", "failover", "web-01", "--to", "unit-b"],
    )
    .await;
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    let json: serde_json::Value = serde_json::from_str(&stdout(&one)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "profile": "web-01", "from_unit": null, "to_unit": "unit-b", "revision": 1,
            "profiles": ["web-01"],
        })
    );

    let status = vnetctl(&live, &["-o", "json", "status"]).await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let web = json["placements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "web-01")
        .unwrap();
    assert_eq!(web["moving_from"], "unit-a", "{json}");
    assert_eq!(web["moving_to"], "unit-b", "{json}");
    assert_eq!(web["desired_unit"], serde_json::Value::Null, "{json}");
    assert_eq!(json["units"][0]["name"], "unit-a");
    assert_eq!(json["units"][0]["lease"], "healthy");

    // The fake moves on by one step per status read: the move has been handed over now.
    let table = vnetctl(&live, &["status"]).await;
    let text = stdout(&table);
    assert!(
        text.contains(
            "unit-b  healthy  100ms      -       -           -       no        2          2/30"
        ),
        "{text}"
    );
    assert!(
        text.contains("web-01   unit-b   unit-b     presented  operator failover"),
        "{text}"
    );

    let off = vnetctl(&live, &["failover", "--from", "unit-b"]).await;
    assert_eq!(off.status.code(), Some(0), "{}", stderr(&off));
    assert!(
        stdout(&off)
            .starts_with("started moving 2 profile(s) off unit-b at revision 2: app-01, web-01"),
        "{}",
        stdout(&off)
    );

    let refused = vnetctl(&live, &["failover", "db-01", "--to", "unit-c"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("FAILED_PRECONDITION"),
        "{}",
        stderr(&refused)
    );

    // Usage errors are caught before anything is sent.
    for args in [
        &["failover", "db-01"][..],
        &["failover", "db-01", "--from", "unit-a", "--to", "unit-b"][..],
        &["failover", "--from", "unit-a", "--to", "unit-a"][..],
        &["failover"][..],
    ] {
        let usage = vnetctl(&live, args).await;
        assert_eq!(usage.status.code(), Some(2), "{args:?}: {}", stderr(&usage));
    }

    assert_eq!(
        state.lock().unwrap().requests,
        vec![
            r#"failover profile="web-01" from="" to="unit-b""#,
            r#"failover profile="" from="unit-b" to="""#,
            r#"failover profile="db-01" from="" to="unit-c""#,
        ]
    );
}
