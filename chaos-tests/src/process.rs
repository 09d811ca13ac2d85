//! A process on a test host: started by `vnet_launch` inside the host's network namespace
//! (`ip netns exec NS program args...`; ip execs the program, so the child's pid is the
//! program's), logging to a file, killed, paused, resumed and restarted by the harness.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use vnet_launch::{Launch, Process};

use crate::history::monotonic_now_ns;

/// One managed process.
#[derive(Debug)]
pub struct ManagedProcess {
    /// What it is on its host ("vnetd"; "vnet-switchd" on units, later).
    pub name: String,
    ns: String,
    launch: Launch,
    pub log_path: PathBuf,
    child: Option<Process>,
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
            launch: Launch::new(program).args(args).in_netns(ns).log(&log_path),
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
        self.child.as_ref().map(Process::pid)
    }

    /// Starts it (again), appending to its log after a marker line.
    pub fn start(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let marker = format!(
            "=== chaos harness: start #{} of {} at monotonic {} ns ===",
            self.starts,
            self.name,
            monotonic_now_ns()
        );
        let child = self
            .launch
            .spawn_marked(&marker)
            .with_context(|| format!("start {} in {}", self.name, self.ns))?;
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
        let _ = child.kill();
        let killed_at = monotonic_now_ns();
        self.last_kill_ns = Some(killed_at);
        self.kill_times_ns.push(killed_at);
        self.paused = false;
    }

    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.running()?
            .pause()
            .with_context(|| format!("pause {}", self.name))?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.running()?
            .resume()
            .with_context(|| format!("resume {}", self.name))?;
        self.paused = false;
        Ok(())
    }

    fn running(&self) -> anyhow::Result<&Process> {
        self.child
            .as_ref()
            .with_context(|| format!("{} is not running", self.name))
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
        vnet_launch::log_tail(&self.log_path, lines)
    }
}
