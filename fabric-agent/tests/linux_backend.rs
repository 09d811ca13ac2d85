//! `vnet-switchd --backend linux` as a process, on network namespaces: presenting puts a vNIC
//! with the profile's MAC, up, into the server's namespace; clearing, the watchdog's fence and
//! the switch's death (SIGKILL) each take it away; a vNIC on a segment the switch does not carry
//! is refused by name and changes nothing.
//!
//! Needs root and `ip` (iproute2) to build the namespaces, like the chaos tests; without them it
//! FAILS with the reason, it never skips. Namespaces are named `vd<pid>x<n>-*` and removed on
//! drop; those of dead test processes are swept first.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{hba, MS_NS};
use fabric_agent::{monotonic_now_ns, DriverError, FabricDriver, Function, PortProgram, SimDriver};
use vnet_launch::{Launch, Process};

const PREFIX: &str = "vd";
static SEQ: AtomicU32 = AtomicU32::new(0);
const DEADLINE: Duration = Duration::from_secs(10);

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` ({e}): install iproute2 (.ci/run does)"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Removes namespaces `vd<pid>x*` whose pid is no longer a process.
fn sweep_dead_runs() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || !rest[digits.len()..].starts_with('x') {
            continue;
        }
        if !std::path::Path::new(&format!("/proc/{digits}")).exists() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A unit namespace with bridge `lan0`, a server namespace, and a switch in the unit.
struct Rig {
    unit: String,
    server: String,
    switch: Option<Process>,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut child) = self.switch.take() {
            let _ = child.kill();
        }
        let _ = ip(&["netns", "del", &self.unit]);
        let _ = ip(&["netns", "del", &self.server]);
    }
}

impl Rig {
    fn start() -> Rig {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test must run as root: it creates network namespaces and interfaces (CI runs \
             as root; run `sudo -E cargo test -p fabric-agent --test linux_backend` by hand)"
        );
        must(&["-V"]);
        sweep_dead_runs();
        let prefix = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::tempdir().unwrap();
        let mut rig = Rig {
            unit: format!("{prefix}-unit"),
            server: format!("{prefix}-srv"),
            switch: None,
            _dir: dir,
        };
        for ns in [&rig.unit, &rig.server] {
            let _ = ip(&["netns", "del", ns]);
            must(&["netns", "add", ns]);
            must(&["-n", ns, "link", "set", "lo", "up"]);
        }
        must(&["-n", &rig.unit, "link", "add", "lan0", "type", "bridge"]);
        must(&["-n", &rig.unit, "link", "set", "lan0", "up"]);
        let journal = rig._dir.path().join("switch.journal.jsonl");
        let child = Launch::new(env!("CARGO_BIN_EXE_vnet-switchd"))
            .args(["--listen", "127.0.0.1:7201", "--journal"])
            .arg(&journal)
            .args(["--host-ports", "1=srv", "--backend", "linux"])
            .args(["--linux-segments", "prod:100=lan0"])
            .arg(format!("--linux-servers=srv=/run/netns/{}", rig.server))
            .in_netns(&rig.unit)
            .log(rig._dir.path().join("switch.log"))
            .spawn()
            .expect("start vnet-switchd");
        rig.switch = Some(child);
        rig
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("switch.log")).unwrap_or_default()
    }

    /// `ip -o link show` of the server's `eth0`, if it has one.
    fn server_nic(&self) -> Option<String> {
        ip(&["-n", &self.server, "-o", "link", "show", "eth0"]).ok()
    }

    fn wait_nic(&self, what: &str, present: bool) -> Duration {
        let started = Instant::now();
        loop {
            if self.server_nic().is_some() == present {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out waiting for {what}\nswitch log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Runs `work` with a driver of the switch, from a thread inside the unit's namespace
    /// (the switch listens on the unit's loopback).
    fn with_driver<T: Send + 'static>(
        &self,
        work: impl FnOnce(SimDriver) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
            + Send
            + 'static,
    ) -> T {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.unit)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let driver = SimDriver::connect_lazy("127.0.0.1:7201").unwrap();
                work(driver).await
            })
        })
        .join()
        .unwrap()
    }
}

fn nic(name: &str, mac: &str, vlan: u16) -> Function {
    Function::Nic {
        name: name.into(),
        mac: mac.parse().unwrap(),
        network: "prod".into(),
        vlan: Some(vlan),
    }
}

fn web() -> PortProgram {
    PortProgram {
        profile: "web".into(),
        revision: 1,
        functions: vec![
            nic("eth0", "02:00:00:00:00:01", 100),
            hba("fc0", "20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:01:01"),
        ],
    }
}

async fn ready(driver: &SimDriver) {
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = driver.state().await {
        assert!(Instant::now() < deadline, "switch never answered: {e}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn presents_real_interfaces_and_takes_them_away_on_clear_fence_and_death() {
    let rig = Rig::start();
    // A lease of 2 s: program, check, refuse an unknown segment, clear, program again, and
    // then leave the watchdog to fence by itself.
    let refused = rig.with_driver(|driver| {
        Box::pin(async move {
            ready(&driver).await;
            driver
                .arm_watchdog(monotonic_now_ns() + 2_000 * MS_NS)
                .await
                .unwrap();
            driver.program(1, &web()).await.unwrap();
            let mut wrong = web();
            wrong.functions[0] = nic("eth1", "02:00:00:00:00:02", 200);
            driver.program(1, &wrong).await.unwrap_err()
        })
    });
    let DriverError::Refused { code, message } = refused else {
        panic!("an unknown segment must be refused, got {refused:?}");
    };
    assert_eq!(code, "INVALID_ARGUMENT");
    assert!(
        message.contains("functions[0].vnic.network") && message.contains("prod:200"),
        "{message}"
    );
    let shown = rig.server_nic().expect("eth0 presented in the server");
    assert!(shown.contains("02:00:00:00:00:01"), "{shown}");
    assert!(shown.contains("UP"), "{shown}");
    // The refused program changed nothing: still the first one.
    assert!(ip(&["-n", &rig.server, "link", "show", "eth1"]).is_err());

    rig.with_driver(|driver| Box::pin(async move { driver.clear(1).await.unwrap() }));
    assert!(
        rig.server_nic().is_none(),
        "cleared, yet eth0 is still there"
    );

    rig.with_driver(|driver| Box::pin(async move { driver.program(1, &web()).await.unwrap() }));
    assert!(rig.server_nic().is_some());
    let fenced_after = rig.wait_nic("the fence to remove eth0", false);
    println!(
        "the fence removed eth0 {} ms after the last program (lease 2 s)",
        fenced_after.as_millis()
    );

    // Death: present again, SIGKILL the switch, and eth0 goes with it.
    rig.with_driver(|driver| {
        Box::pin(async move {
            driver
                .arm_watchdog(monotonic_now_ns() + 60_000 * MS_NS)
                .await
                .unwrap();
            driver.program(1, &web()).await.unwrap();
        })
    });
    assert!(rig.server_nic().is_some());
    let mut rig = rig;
    let mut child = rig.switch.take().unwrap();
    child.kill().expect("SIGKILL the switch and reap it");
    let gone_after = rig.wait_nic("the dead switch's eth0 to vanish", false);
    println!(
        "a SIGKILLed switch's vNIC vanished {} ms after its death",
        gone_after.as_millis()
    );
    // The journal says what this switch's presenting was: vNICs real, vHBAs simulated.
    let records =
        fabric_agent::journal::read(&rig._dir.path().join("switch.journal.jsonl")).unwrap();
    let fabric_agent::journal::Event::Started { data_plane, .. } = &records[0].event else {
        panic!("the journal starts with {:?}", records[0].event);
    };
    let label = data_plane.as_deref().unwrap_or_default();
    assert!(
        label.starts_with("linux:") && label.contains("vHBAs are simulated fabric logins"),
        "{label:?}"
    );
    // Nothing of the switch is left on the unit either (its adapter port's peer).
    let unit_links = must(&["-n", &rig.unit, "-o", "link", "show"]);
    assert!(!unit_links.contains(" vs"), "{unit_links}");
}

#[test]
fn a_program_the_kernel_refuses_is_neither_presented_nor_journaled() {
    let rig = Rig::start();
    // Something in the server already holds the name the vNIC would take.
    must(&[
        "-n",
        &rig.server,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
    ]);
    let (error, state) = rig.with_driver(|driver| {
        Box::pin(async move {
            ready(&driver).await;
            driver
                .arm_watchdog(monotonic_now_ns() + 60_000 * MS_NS)
                .await
                .unwrap();
            let error = driver.program(1, &web()).await.unwrap_err();
            (error, driver.state().await.unwrap())
        })
    });
    // UNAVAILABLE: the caller reads the state again and retries, as after a lost answer.
    let DriverError::Unreachable(message) = &error else {
        panic!("expected UNAVAILABLE, got {error:?}");
    };
    assert!(
        message.contains("could not present host port 1") && message.contains("already exists"),
        "{message}"
    );
    assert!(state.ports.is_empty(), "{:?}", state.ports);
    // The server's own eth0 is untouched, and the journal never claimed the program.
    let shown = rig.server_nic().unwrap();
    assert!(!shown.contains("02:00:00:00:00:01"), "{shown}");
    let records =
        fabric_agent::journal::read(&rig._dir.path().join("switch.journal.jsonl")).unwrap();
    assert!(
        !records
            .iter()
            .any(|r| matches!(r.event, fabric_agent::journal::Event::Programmed { .. })),
        "{records:?}"
    );
}
