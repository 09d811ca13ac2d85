//! What the benchmarks share: the demo cluster started as a child process, killed on drop.
//!
//! Each benchmark uses part of it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VNETCTL: &str = env!("CARGO_BIN_EXE_vnetctl");

/// Processes killed when dropped, and a directory removed.
pub struct Processes {
    pub children: Vec<Child>,
    pub _dir: tempfile::TempDir,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SIGINT first: `vnetctl demo` stops its processes and removes its data on it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for child in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running demo cluster: its processes, its API endpoints, and each vnetd's pid (unit-a,
/// unit-b, witness), as the demo printed them.
pub struct Demo {
    pub processes: Processes,
    pub endpoints: Vec<String>,
    pub vnetd_pids: Vec<u32>,
}

/// Starts `vnetctl demo --base-port base` and returns once every profile is presented.
pub fn start_demo(base: u16) -> Result<Demo, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.path().join("demo.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(VNETCTL)
        // Plaintext, as the etcd it is compared with runs.
        .args(["demo", "--insecure", "--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("start {VNETCTL} demo: {e}"))?;
    // The demo prints its instructions once every profile is presented.
    let stdout = child.stdout.take().ok_or("demo stdout")?;
    let processes = Processes {
        children: vec![child],
        _dir: dir,
    };
    let mut vnetd_pids = Vec::new();
    let mut reader = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    loop {
        match reader.next() {
            Some(Ok(line)) if line.starts_with("endpoints:") => break,
            Some(Ok(line)) => {
                // "    vnetd  (pid 1234) log: ..."
                if let Some(pid) = line
                    .trim_start()
                    .strip_prefix("vnetd  (pid ")
                    .and_then(|rest| rest.split(')').next())
                    .and_then(|pid| pid.parse().ok())
                {
                    vnetd_pids.push(pid);
                }
            }
            _ => {
                return Err("vnetctl demo ended before it was ready; is vnetd built? \
                            (cargo build --release -p vnet-node -p fabric-agent)"
                    .into())
            }
        }
    }
    std::thread::spawn(move || for _ in reader {});
    let endpoints = (1..=3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    Ok(Demo {
        processes,
        endpoints,
        vnetd_pids,
    })
}
