//! Finds and starts `vnetd` and `vnet-switchd` processes.
//!
//! The one launcher of the workspace: `vnetctl demo`, the chaos tester and the multi-process
//! tests of `vnet-node` all find the binaries with [`Program::locate`] (or
//! [`Program::default_path`]) and start them with a [`Launch`], which yields a [`Process`].
//!
//! It knows no domain crate (no model, node, proto or fabric type): it deals in paths, flags,
//! environment variables, log files and signals, so the CLI can use it without breaking its rule
//! of speaking only the public API (ARCHITECTURE.md, "cluster-cli").
//!
//! What every launch does the same way:
//! - stdin is `/dev/null`; stdout and stderr are appended to one log file, after an optional
//!   marker line, so a restarted process keeps the earlier runs' lines above its own;
//! - `VNET_*` variables of the caller's environment are removed (flags win over them, but a stray
//!   `VNET_CONFIG` could still add keys) unless [`Launch::inherit_vnet_env`] says otherwise; the
//!   launch's own [`Launch::env`] variables are set after that;
//! - a [`Process`] that is dropped while its child still runs SIGKILLs and reaps it, so no
//!   process outlives its owner, on success and on panic alike.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use nix::unistd::Pid;

pub use nix::sys::signal::Signal;

/// One of the executables this crate starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// A vnet-ha node (crate `vnet-node`).
    Vnetd,
    /// A unit's simulated switch (crate `fabric-agent`).
    Switchd,
}

impl Program {
    pub fn file_name(self) -> &'static str {
        match self {
            Program::Vnetd => "vnetd",
            Program::Switchd => "vnet-switchd",
        }
    }

    /// The command that builds it.
    pub fn build_hint(self) -> &'static str {
        match self {
            Program::Vnetd => "cargo build -p vnet-node",
            Program::Switchd => "cargo build -p fabric-agent",
        }
    }

    /// Where the program is when nobody says otherwise: beside the running executable
    /// (`target/<profile>/vnetd` for `vnetctl` or `chaos-tests`), or one level up when the
    /// executable is a test or benchmark in `target/<profile>/deps/` and nothing is beside it.
    /// The path may not exist; [`Program::locate`] checks.
    pub fn default_path(self) -> PathBuf {
        let dir = current_exe_dir().unwrap_or_default();
        self.path_in(&dir)
    }

    fn path_in(self, exe_dir: &Path) -> PathBuf {
        let beside = exe_dir.join(self.file_name());
        if beside.is_file() || !exe_dir.ends_with("deps") {
            return beside;
        }
        exe_dir
            .parent()
            .map(|dir| dir.join(self.file_name()))
            .unwrap_or(beside)
    }

    /// Finds the program: `explicit` if given (it must be a file), else
    /// [`Program::default_path`]. `how_to_point` says how the caller's user gives an explicit
    /// path (`"--vnetd PATH"`); an error names the path tried, the build command and that.
    pub fn locate(self, explicit: Option<&Path>, how_to_point: &str) -> Result<PathBuf, String> {
        self.locate_from(explicit, current_exe_dir().as_deref(), how_to_point)
    }

    /// [`Program::locate`] with the executable's directory given, for tests.
    pub fn locate_from(
        self,
        explicit: Option<&Path>,
        exe_dir: Option<&Path>,
        how_to_point: &str,
    ) -> Result<PathBuf, String> {
        let name = self.file_name();
        if let Some(path) = explicit {
            return if path.is_file() {
                Ok(path.to_path_buf())
            } else {
                Err(format!(
                    "{name} not found at {} (from {how_to_point})",
                    path.display()
                ))
            };
        }
        match exe_dir.map(|dir| self.path_in(dir)) {
            Some(path) if path.is_file() => Ok(path),
            tried => Err(format!(
                "{name} not found{}. Build it with `{}` (it lands in target/debug beside the \
                 other binaries), or point {how_to_point} at it.",
                tried
                    .map(|path| format!(" at {}", path.display()))
                    .unwrap_or_default(),
                self.build_hint(),
            )),
        }
    }
}

fn current_exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

/// How to start one process; reusable, so a restart starts it the same way again.
#[derive(Debug, Clone)]
pub struct Launch {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    inherit_vnet_env: bool,
    log: Option<PathBuf>,
    netns: Option<String>,
    own_process_group: bool,
}

impl Launch {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            inherit_vnet_env: false,
            log: None,
            netns: None,
            own_process_group: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets a variable in the child's environment (after the `VNET_*` ones are removed).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self = self.env(key, value);
        }
        self
    }

    /// Passes the caller's `VNET_*` variables on (an operator's `vnetctl demo` may set them on
    /// purpose); by default they are removed.
    pub fn inherit_vnet_env(mut self) -> Self {
        self.inherit_vnet_env = true;
        self
    }

    /// Appends stdout and stderr to `path` (created if missing). Without a log both go to
    /// `/dev/null`.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Runs the program inside network namespace `ns`, as `ip netns exec NS program args...`
    /// (`ip` execs the program, so the child's pid is the program's).
    pub fn in_netns(mut self, ns: impl Into<String>) -> Self {
        self.netns = Some(ns.into());
        self
    }

    /// Puts the child in a process group of its own, so a Ctrl-C in the caller's terminal (sent
    /// to the whole foreground group) does not reach it and the caller can stop it in order.
    pub fn own_process_group(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Replaces every argument, keeping the rest.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.clear();
        self.args(args)
    }

    /// The program and its arguments, as a shell would show them (for messages).
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Command {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.arg("netns").arg("exec").arg(ns).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        };
        command.args(&self.args);
        if !self.inherit_vnet_env {
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("VNET_") {
                    command.env_remove(key);
                }
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.own_process_group {
            command.process_group(0);
        }
        command.stdin(Stdio::null());
        command
    }

    fn context(&self, what: &str, error: io::Error) -> io::Error {
        let place = self
            .netns
            .as_ref()
            .map(|ns| format!(" in network namespace {ns}"))
            .unwrap_or_default();
        io::Error::new(
            error.kind(),
            format!("{what} {}{place}: {error}", self.program.display()),
        )
    }

    /// Starts the process.
    pub fn spawn(&self) -> io::Result<Process> {
        self.spawn_after(None)
    }

    /// Starts the process after writing `marker` as a line of its own to the log, so each start
    /// of a restarted process can be told apart in one file.
    pub fn spawn_marked(&self, marker: &str) -> io::Result<Process> {
        self.spawn_after(Some(marker))
    }

    fn spawn_after(&self, marker: Option<&str>) -> io::Result<Process> {
        let mut command = self.command();
        match &self.log {
            Some(path) => {
                let mut log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                    })?;
                if let Some(marker) = marker {
                    writeln!(log, "{marker}")?;
                }
                let log_err = log.try_clone()?;
                command
                    .stdout(Stdio::from(log))
                    .stderr(Stdio::from(log_err));
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = command.spawn().map_err(|e| self.context("starting", e))?;
        Ok(Process {
            pid: child.id(),
            child,
            exit: None,
            log: self.log.clone(),
        })
    }

    /// Runs the process to its end (an offline command such as `vnetd restore`) and returns what
    /// it printed on stdout and stderr; the log, if any, is not used.
    pub fn output(&self) -> io::Result<Output> {
        let mut command = self.command();
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command.output().map_err(|e| self.context("running", e))
    }
}

/// A started process. Dropping it while the child runs SIGKILLs and reaps the child.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    child: Child,
    /// Set once the child is reaped: no signal is sent after that (its pid may be reused).
    exit: Option<ExitStatus>,
    log: Option<PathBuf>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Its exit status if it has exited (reaping it), without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait()?;
        }
        Ok(self.exit)
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        match self.exit {
            Some(status) => Ok(status),
            None => {
                let status = self.child.wait()?;
                self.exit = Some(status);
                Ok(status)
            }
        }
    }

    /// Sends `signal`. Refused once the process is reaped: its pid may belong to another
    /// process by then.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if let Some(status) = self.exit {
            return Err(io::Error::other(format!(
                "pid {} already exited ({status}); not sending {signal}",
                self.pid
            )));
        }
        let pid = i32::try_from(self.pid).map_err(io::Error::other)?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|errno| {
            io::Error::other(format!("sending {signal} to pid {}: {errno}", self.pid))
        })
    }

    /// SIGTERM: asks it to stop.
    pub fn terminate(&self) -> io::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// SIGSTOP: freezes it.
    pub fn pause(&self) -> io::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT: lets a paused process run again.
    pub fn resume(&self) -> io::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// SIGKILLs it (a stopped process too) and reaps it. Returns `Some(status)` when it had
    /// already exited by itself before the kill, `None` when the kill ended it.
    pub fn kill(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.try_wait()? {
            return Ok(Some(status));
        }
        // It may exit between try_wait and the signal; it is not reaped yet, so its pid is
        // still its own and the signal reaches nothing else.
        let _ = self.signal(Signal::SIGKILL);
        self.wait()?;
        Ok(None)
    }

    /// The last `lines` lines of its log (none without a log or when it cannot be read).
    pub fn log_tail(&self, lines: usize) -> Vec<String> {
        self.log
            .as_deref()
            .map(|path| log_tail(path, lines))
            .unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The last `lines` lines of the file at `path` (none when it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| line.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Launch {
        Launch::new("/bin/sh").args(["-c", script])
    }

    #[test]
    fn programs_are_found_explicitly_beside_the_executable_or_above_deps() {
        let dir = tempfile::tempdir().unwrap();
        let deps = dir.path().join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        for program in [Program::Vnetd, Program::Switchd] {
            let name = program.file_name();
            let error = program
                .locate_from(None, Some(dir.path()), "--bin")
                .unwrap_err();
            assert!(
                error.contains(program.build_hint()) && error.contains("--bin"),
                "{error}"
            );
            let missing = dir.path().join("nope");
            let error = program
                .locate_from(Some(&missing), Some(dir.path()), "--bin")
                .unwrap_err();
            assert!(error.contains("--bin") && error.contains("nope"), "{error}");

            let beside = dir.path().join(name);
            std::fs::write(&beside, b"").unwrap();
            assert_eq!(
                program.locate_from(None, Some(dir.path()), "--bin"),
                Ok(beside.clone())
            );
            // A test binary in deps/ finds the program one level up...
            assert_eq!(
                program.locate_from(None, Some(&deps), "--bin"),
                Ok(beside.clone())
            );
            // ...unless one is beside it.
            let in_deps = deps.join(name);
            std::fs::write(&in_deps, b"").unwrap();
            assert_eq!(program.locate_from(None, Some(&deps), "--bin"), Ok(in_deps));
            let other = dir.path().join(format!("custom-{name}"));
            std::fs::write(&other, b"").unwrap();
            assert_eq!(
                program.locate_from(Some(&other), Some(dir.path()), "--bin"),
                Ok(other)
            );
        }
    }

    #[test]
    fn output_goes_to_the_log_after_the_marker_and_vnet_variables_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("p.log");
        // A variable of this name is set only here; std serialises set_var with spawning.
        std::env::set_var("VNET_LAUNCH_TEST_STRAY", "stray");
        let launch = sh("echo out \"${VNET_LAUNCH_TEST_STRAY:-none}\" \"$GIVEN\"; echo err >&2")
            .env("GIVEN", "given")
            .log(&log);
        let mut first = launch.spawn_marked("=== start 1 ===").unwrap();
        assert!(first.wait().unwrap().success());
        let mut second = launch.clone().inherit_vnet_env().spawn().unwrap();
        assert!(second.wait().unwrap().success());
        let lines = log_tail(&log, 10);
        assert_eq!(
            lines,
            [
                "=== start 1 ===",
                "out none given",
                "err",
                "out stray given",
                "err"
            ]
        );
        assert_eq!(second.log_tail(2), ["out stray given", "err"]);
    }

    #[test]
    fn signals_pause_resume_terminate_and_kill() {
        let mut process = sh("sleep 30").spawn().unwrap();
        assert!(process.pid() > 0);
        assert_eq!(process.try_wait().unwrap(), None);
        process.pause().unwrap();
        process.resume().unwrap();
        process.terminate().unwrap();
        let status = process.wait().unwrap();
        assert!(!status.success());
        // Reaped: no further signal goes to its (possibly reused) pid.
        assert!(process.terminate().is_err());
        // kill reports that it had already exited.
        assert_eq!(process.kill().unwrap(), Some(status));

        let mut stopped = sh("sleep 30").spawn().unwrap();
        stopped.pause().unwrap();
        assert_eq!(
            stopped.kill().unwrap(),
            None,
            "SIGKILL ends a stopped process"
        );
        assert!(stopped.try_wait().unwrap().is_some());
    }

    #[test]
    fn dropping_a_running_process_kills_it() {
        let process = sh("sleep 30").spawn().unwrap();
        let pid = Pid::from_raw(process.pid() as i32);
        drop(process);
        // Reaped by the drop: the pid no longer names our child.
        assert!(nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)).is_err());
    }

    #[test]
    fn a_missing_program_is_named_and_output_captures_both_streams() {
        let error = Launch::new("/nonexistent/vnetd").spawn().unwrap_err();
        assert!(error.to_string().contains("/nonexistent/vnetd"), "{error}");
        let out = sh("echo a; echo b >&2; exit 3").output().unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"a\n");
        assert_eq!(out.stderr, b"b\n");
        assert_eq!(
            sh("true").command_line(),
            "/bin/sh -c true",
            "the command line shows program and arguments"
        );
    }
}
