//! The command's contract: a schedule is a function of the seed, and a run that cannot build
//! its hosts stops with exit code 2 and the reason, never a pass.

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
    // setpriv (util-linux) drops to nobody for the one process.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
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
