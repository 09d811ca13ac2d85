//! A process on a test host: started with `ip netns exec NS program args...` (ip execs the
//! program, so the child's pid is the program's), logging to a file, killed, paused, resumed
//! and restarted by the harness.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::history::monotonic_now_ns;

/// One managed process.
#[derive(Debug)]
pub struct ManagedProcess {
    /// What it is on its host ("vnetd"; "vnet-switchd" on units, later).
    pub name: String,
    ns: String,
    program: PathBuf,
    args: Vec<OsString>,
    pub log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
    /// Exits the harness did not cause (a crash): each a description with its time.
    pub unexpected_exits: Vec<String>,
    /// When the harness last killed it (CLOCK_MONOTONIC ns, after the process was reaped).
    pub last_kill_ns: Option<u64>,
    /// Every SIGKILL, in order (CLOCK_MONOTONIC ns after the process was reaped).
    pub kill_times_ns: Vec<u64>,
}

impl ManagedProcess {
    pub fn new(
        name: &str,
        ns: &str,
        program: PathBuf,
        args: Vec<OsString>,
        log_path: PathBuf,
    ) -> Self {
        Self {
            name: name.to_string(),
            ns: ns.to_string(),
            program,
            args,
            log_path,
            child: None,
            paused: false,
            starts: 0,
            unexpected_exits: Vec::new(),
            last_kill_ns: None,
            kill_times_ns: Vec::new(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts it (again), appending to its log after a marker line.
    pub fn start(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        writeln!(
            log,
            "=== chaos harness: start #{} of {} at monotonic {} ns ===",
            self.starts,
            self.name,
            monotonic_now_ns()
        )?;
        let log_err = log.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.arg("netns")
            .arg("exec")
            .arg(&self.ns)
            .arg(&self.program);
        cmd.args(&self.args);
        // Flags win over VNET_* variables, but a stray VNET_CONFIG could still add keys.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("VNET_") {
                cmd.env_remove(key);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} in {}", self.program.display(), self.ns))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// SIGKILL and reap. A no-op if not running.
    pub fn kill(&mut self) {
        self.note_exit();
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGKILL ends a stopped process too, so no SIGCONT first.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
        let killed_at = monotonic_now_ns();
        self.last_kill_ns = Some(killed_at);
        self.kill_times_ns.push(killed_at);
        self.paused = false;
    }

    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("send {signal} to {} ({pid})", self.name))
    }

    /// Checks whether it exited by itself; if so records it and forgets the child, so a later
    /// heal restarts it. Returns true if it had exited.
    pub fn note_exit(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.unexpected_exits.push(format!(
                    "{} exited by itself with {status} at monotonic {} ns (start #{}); log {}",
                    self.name,
                    monotonic_now_ns(),
                    self.starts,
                    self.log_path.display()
                ));
                self.child = None;
                self.paused = false;
                true
            }
            _ => false,
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}
