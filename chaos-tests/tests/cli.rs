//! The command's contract: a schedule is a function of the seed, and a run that cannot build
//! its hosts stops with exit code 2 and the reason, never a pass.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_chaos-tests");

#[test]
fn schedule_only_prints_the_same_schedule_for_the_same_seed() {
    let run = |seed: &str| {
        let out = Command::new(BIN)
            .args(["--schedule-only", "--seed", seed, "--duration", "30s"])
            .output()
            .expect("run chaos-tests");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let first = run("11");
    assert!(first.contains("faults:"), "{first}");
    assert!(first.contains("inject"), "{first}");
    assert_eq!(first, run("11"));
    assert_ne!(first, run("12"));
}

#[test]
fn without_root_it_refuses_and_says_why() {
    // A copy nobody may run: the build tree may sit under a directory only root can enter.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open the directory to everyone");
    let copy = dir.path().join("chaos-tests");
    std::fs::copy(BIN, &copy).expect("copy the binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .expect("make the copy executable by everyone");
    // setpriv (util-linux) drops to nobody for the one process.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["--seed", "1", "--duration", "1s"])
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("must run as root"), "{stderr}");
}

#[test]
fn without_nft_it_refuses_and_says_why() {
    // A PATH with `ip` and nothing else.
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("iproute2's ip is installed");
    std::os::unix::fs::symlink(ip, dir.path().join("ip")).expect("symlink ip");
    let out = Command::new(BIN)
        .args(["--seed", "1", "--duration", "1s"])
        .env("PATH", dir.path())
        .output()
        .expect("run chaos-tests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    if nix::unistd::geteuid().is_root() {
        assert!(stderr.contains("nftables"), "{stderr}");
    } else {
        assert!(stderr.contains("must run as root"), "{stderr}");
    }
}

#[test]
fn check_history_judges_a_recorded_history() {
    // A create, an update acknowledged before the get starts, and a get that returns the
    // create's value: a stale read. The same history with the get seeing the update passes.
    let value = |mac: &str| {
        format!(
            r#"{{"server":"srv-00","vnics":[{{"name":"eth0","mac":"{mac}","network":"n","vlan":1}}],"vhbas":[]}}"#
        )
    };
    let (v1, v2) = (value("02:00:00:00:00:01"), value("02:00:00:00:00:02"));
    let history = |seen: &str, revision: u64| {
        [
            format!(
                r#"{{"id":1,"client":0,"key":"p","call":{{"Create":{{"value":{v1}}}}},"endpoint":"e","invoked_ns":0,"completed_ns":10,"outcome":{{"Written":{{"revision":5}}}}}}"#
            ),
            format!(
                r#"{{"id":2,"client":0,"key":"p","call":{{"Update":{{"value":{v2},"expected_revision":5}}}},"endpoint":"e","invoked_ns":20,"completed_ns":30,"outcome":{{"Written":{{"revision":9}}}}}}"#
            ),
            format!(
                r#"{{"id":3,"client":1,"key":"p","call":"Get","endpoint":"e","invoked_ns":40,"completed_ns":50,"outcome":{{"Found":{{"value":{seen},"revision":{revision},"created_revision":5,"read_revision":9}}}}}}"#
            ),
        ]
        .join("\n")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write history");
        let out = Command::new(BIN)
            .arg("--check-history")
            .arg(&path)
            .output()
            .expect("run chaos-tests");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = check("fresh.jsonl", history(&v2, 9));
    assert_eq!(code, Some(0), "{stdout}");
    let (code, stdout) = check("stale.jsonl", history(&v1, 5));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("could not place op #3"), "{stdout}");
}

#[test]
fn sweep_refuses_a_bad_seed_range_naming_it() {
    for (range, says) in [
        ("9..3", "ends at 3, below its start 9"),
        ("5..5", "is empty"),
        ("0..20000", "holds 20000 seeds; a sweep runs at most 10000"),
        ("7-9", "is not a seed range"),
        ("1..y", "the end \"y\""),
    ] {
        let out = Command::new(BIN)
            .args(["sweep", "--seeds", range, "--duration", "1s"])
            .output()
            .expect("run chaos-tests");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{range}: {stderr}");
        assert!(stderr.contains(range), "{range}: {stderr}");
        assert!(stderr.contains(says), "{range}: {stderr}");
        assert!(out.stdout.is_empty(), "{range}: nothing ran");
    }
}

#[test]
fn single_run_flags_do_not_mix_with_sweep() {
    let out = Command::new(BIN)
        .args(["--seed", "1", "sweep", "--seeds", "1..2"])
        .output()
        .expect("run chaos-tests");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn a_sweep_that_cannot_run_says_why_before_any_seed() {
    // Without nft (or without root) no seed can run: one message, exit 2, no seed lines.
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("iproute2's ip is installed");
    std::os::unix::fs::symlink(ip, dir.path().join("ip")).expect("symlink ip");
    let out = Command::new(BIN)
        .args(["sweep", "--seeds", "1..=3", "--duration", "1s"])
        .env("PATH", dir.path())
        .output()
        .expect("run chaos-tests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sweep cannot run"), "{stderr}");
    if nix::unistd::geteuid().is_root() {
        assert!(stderr.contains("nftables"), "{stderr}");
    } else {
        assert!(stderr.contains("must run as root"), "{stderr}");
    }
    assert!(out.stdout.is_empty(), "no seed ran: {out:?}");
}
