//! `demo`: a local three-node cluster (unit-a, unit-b, witness) with sample data, for trying
//! vnetctl by hand. Each unit is a `vnetd` plus its simulated switch `vnet-switchd`; the witness
//! is a `vnetd` alone. The demo owns its child processes from start to stop: every exit path
//! stops them (each vnetd before the switches, SIGTERM then SIGKILL after a deadline) and
//! removes their data directories.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use vnet_proto::vnet::v1 as pb;

use crate::cli::DemoArgs;
use crate::error::CliError;
use crate::output::Render;
use crate::spec::{self, Endpoints};
use crate::view::PlacementStateView;
use crate::{cluster, emit, pool, profile, session, Context};

/// Between two polls while waiting for a switch to listen, a leader, or profiles to be presented.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long seeding the sample data may take (it retries across a leader change).
const SEED_DEADLINE: Duration = Duration::from_secs(30);
/// Lines of each log shown when the cluster fails to start.
const LOG_TAIL_LINES: usize = 15;
/// The rack servers cabled to both units: host port N of each unit's switch is rack1-srv0N.
pub const SERVERS: [&str; 6] = [
    "rack1-srv01",
    "rack1-srv02",
    "rack1-srv03",
    "rack1-srv04",
    "rack1-srv05",
    "rack1-srv06",
];
/// The unit whose death the printed instructions show.
const FAILOVER_UNIT: &str = "unit-a";

/// One node of the demo cluster, before it is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    pub id: u64,
    pub name: &'static str,
    pub role: &'static str,
    pub api_addr: String,
    pub peer_addr: String,
    /// The unit's switch; `None` for the witness.
    pub switch_addr: Option<String>,
}

/// The three nodes: API ports base+1..base+3, peer ports base+101..base+103, and for the two
/// units switch ports base+201 and base+202.
pub fn plan(base_port: u16) -> Result<Vec<NodePlan>, String> {
    let nodes = [
        (1, "unit-a", "unit"),
        (2, "unit-b", "unit"),
        (3, "witness", "witness"),
    ];
    let port = |offset: u64| -> Result<u16, String> {
        u16::try_from(u64::from(base_port) + offset).map_err(|_| {
            format!("--base-port {base_port}: port {base_port}+{offset} is above 65535")
        })
    };
    nodes
        .into_iter()
        .map(|(id, name, role)| {
            Ok(NodePlan {
                id,
                name,
                role,
                api_addr: format!("127.0.0.1:{}", port(id)?),
                peer_addr: format!("127.0.0.1:{}", port(100 + id)?),
                switch_addr: match role {
                    "unit" => Some(format!("127.0.0.1:{}", port(200 + id)?)),
                    _ => None,
                },
            })
        })
        .collect()
}

/// The `--initial-cluster` value every node gets: `id=name@peer_addr,...`.
pub fn initial_cluster(nodes: &[NodePlan]) -> String {
    nodes
        .iter()
        .map(|node| format!("{}={}@{}", node.id, node.name, node.peer_addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// vnetd's `--cabling`: `rack1-srv01=1,...` (the same on both units).
pub fn cabling() -> String {
    SERVERS
        .iter()
        .enumerate()
        .map(|(index, server)| format!("{server}={}", index + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// vnet-switchd's `--host-ports`: `1=rack1-srv01,...`, the switch's side of [`cabling`].
pub fn host_ports() -> String {
    SERVERS
        .iter()
        .enumerate()
        .map(|(index, server)| format!("{}={server}", index + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// The vnetd command line for one node. A unit also gets its switch and cabling.
pub fn vnetd_args(node: &NodePlan, data_dir: &Path, initial_cluster: &str) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--id".into(),
        node.id.to_string(),
        "--name".into(),
        node.name.into(),
        "--role".into(),
        node.role.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--api-listen".into(),
        node.api_addr.clone(),
        "--peer-listen".into(),
        node.peer_addr.clone(),
        "--initial-cluster".into(),
        initial_cluster.into(),
    ];
    if let Some(switch) = &node.switch_addr {
        args.extend([
            "--switch".into(),
            switch.clone(),
            "--cabling".into(),
            cabling(),
        ]);
    }
    args.extend([
        "--log-format".into(),
        "text".into(),
        "--log-level".into(),
        "info".into(),
    ]);
    args
}

/// The vnet-switchd command line for a unit's switch.
pub fn switchd_args(listen: &str, journal: &Path) -> Vec<String> {
    vec![
        "--listen".into(),
        listen.into(),
        "--journal".into(),
        journal.display().to_string(),
        "--host-ports".into(),
        host_ports(),
        "--eth-ports".into(),
        "2".into(),
        "--vfs-per-eth-port".into(),
        "32".into(),
        "--fc-ports".into(),
        "2".into(),
        "--npiv-per-fc-port".into(),
        "32".into(),
    ]
}

/// One of the executables the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Vnetd,
    Switchd,
}

impl Program {
    fn file_name(self) -> &'static str {
        match self {
            Program::Vnetd => "vnetd",
            Program::Switchd => "vnet-switchd",
        }
    }

    /// Where the explicit path comes from, for error messages.
    fn flag(self) -> &'static str {
        match self {
            Program::Vnetd => "--vnetd-bin or VNETD_BIN",
            Program::Switchd => "--vnet-switchd-bin or VNET_SWITCHD_BIN",
        }
    }

    fn build_hint(self) -> &'static str {
        match self {
            Program::Vnetd => "cargo build -p vnet-node",
            Program::Switchd => "cargo build -p fabric-agent",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Program::Vnetd => "VNETD_BIN",
            Program::Switchd => "VNET_SWITCHD_BIN",
        }
    }
}

/// Finds a program: the explicit path (flag or environment variable), else next to this
/// executable.
pub fn locate(
    program: Program,
    explicit: Option<&Path>,
    exe_dir: Option<&Path>,
) -> Result<PathBuf, String> {
    let name = program.file_name();
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "{name} not found at {} (from {})",
                path.display(),
                program.flag()
            ))
        };
    }
    let beside = exe_dir.map(|dir| dir.join(name));
    match beside {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(format!(
            "{name} not found{}. Build it with `{}` (it lands next to vnetctl in target/debug), \
             or point {} at it.",
            exe_dir
                .map(|dir| format!(" in {}", dir.display()))
                .unwrap_or_default(),
            program.build_hint(),
            program.env()
        )),
    }
}

/// Fails with the first port of the plan that something already listens on.
fn check_ports_free(nodes: &[NodePlan], base_port: u16) -> Result<(), CliError> {
    for node in nodes {
        let mut addresses = vec![("api", &node.api_addr), ("peer", &node.peer_addr)];
        if let Some(switch) = &node.switch_addr {
            addresses.push(("switch", switch));
        }
        for (what, address) in addresses {
            // Binding and releasing leaves a small window, but it turns the common case (an
            // earlier demo still running) into a clear message instead of a crash in a log.
            if let Err(error) = std::net::TcpListener::bind(address.as_str()) {
                return Err(CliError::Local(anyhow::anyhow!(
                    "{address} ({what} of {}) is not free: {error}. Stop what uses it, or pick \
                     other ports with --base-port (now {base_port}).",
                    node.name
                )));
            }
        }
    }
    Ok(())
}

/// One child process of the demo.
struct Running {
    node: &'static str,
    program: Program,
    log: PathBuf,
    pid: u32,
    child: tokio::process::Child,
    exited: Option<std::process::ExitStatus>,
}

impl Running {
    fn label(&self) -> String {
        match self.program {
            Program::Vnetd => format!("{} vnetd", self.node),
            Program::Switchd => format!("{} switch", self.node),
        }
    }
}

/// What the demo prints once it is ready.
#[derive(Debug, Serialize)]
struct DemoView {
    endpoints: String,
    data_dir: String,
    profiles_presented: usize,
    nodes: Vec<DemoNodeView>,
    /// What to run first in another terminal, when the ports are not vnetctl's defaults.
    setup: Option<String>,
    try_commands: Vec<String>,
    planned_moves: Vec<String>,
    failover: FailoverDemoView,
}

#[derive(Debug, Serialize)]
struct DemoNodeView {
    #[serde(flatten)]
    plan: NodePlan,
    data_dir: String,
    log: String,
    pid: u32,
    switch: Option<DemoSwitchView>,
}

#[derive(Debug, Serialize)]
struct DemoSwitchView {
    log: String,
    journal: String,
    pid: u32,
}

/// How to watch a real failover: kill a unit's vnetd and switch, then look.
#[derive(Debug, Serialize)]
struct FailoverDemoView {
    unit: &'static str,
    kill_command: String,
    then: Vec<String>,
}

impl Render for DemoView {
    fn text(&self) -> String {
        let mut out = format!(
            "vnet-ha demo cluster is up; {} profiles are presented.\n\n",
            self.profiles_presented
        );
        for node in &self.nodes {
            out.push_str(&format!(
                "  {} (id {}, {}): api {}  peer {}",
                node.plan.name,
                node.plan.id,
                node.plan.role,
                node.plan.api_addr,
                node.plan.peer_addr,
            ));
            if let Some(switch) = &node.plan.switch_addr {
                out.push_str(&format!("  switch {switch}"));
            }
            out.push_str(&format!(
                "\n    vnetd  (pid {}) log: {}\n",
                node.pid, node.log
            ));
            if let Some(switch) = &node.switch {
                out.push_str(&format!(
                    "    switch (pid {}) log: {}\n",
                    switch.pid, switch.log
                ));
            }
        }
        out.push_str(&format!("\nendpoints: {}\n", self.endpoints));
        if let Some(setup) = &self.setup {
            out.push_str(&format!("\nIn another terminal, first:\n  {setup}\n"));
        }
        out.push_str("\nTry:\n");
        for command in &self.try_commands {
            out.push_str(&format!("  {command}\n"));
        }
        out.push_str("\nPlanned moves (break before make; run them in order):\n");
        for command in &self.planned_moves {
            out.push_str(&format!("  {command}\n"));
        }
        out.push_str(&format!(
            "\nTo watch a failover, kill {}'s vnetd and its switch (it stays down until the \
             demo restarts):\n  {}\n",
            self.failover.unit, self.failover.kill_command
        ));
        for command in &self.failover.then {
            out.push_str(&format!("  {command}\n"));
        }
        out.push_str("\nCtrl-C stops the cluster and removes its data.\n");
        out
    }
}

pub async fn run(context: &Context, args: DemoArgs, timeout: Duration) -> Result<(), CliError> {
    let nodes = plan(args.base_port).map_err(CliError::Usage)?;
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let local = |e: String| CliError::Local(anyhow::anyhow!(e));
    let vnetd = locate(
        Program::Vnetd,
        args.vnetd_bin.as_deref(),
        exe_dir.as_deref(),
    )
    .map_err(local)?;
    let switchd = locate(
        Program::Switchd,
        args.vnet_switchd_bin.as_deref(),
        exe_dir.as_deref(),
    )
    .map_err(local)?;
    check_ports_free(&nodes, args.base_port)?;

    let root = tempfile::Builder::new()
        .prefix("vnetctl-demo-")
        .tempdir()
        .map_err(|e| CliError::Local(anyhow::anyhow!("creating the demo's data directory: {e}")))?;
    let mut running = Vec::new();
    let started = start_all(
        &Binaries {
            vnetd: &vnetd,
            switchd: &switchd,
        },
        &nodes,
        root.path(),
        args.startup_timeout,
        &mut running,
    )
    .await;
    let result = match started {
        Ok(()) => serve(context, &args, timeout, &nodes, root.path(), &mut running).await,
        Err(error) => Err(error),
    };
    stop_all(&mut running).await;
    if args.keep_data {
        let kept = root.keep();
        eprintln!("data and logs kept in {}", kept.display());
    } else {
        let path = root.path().display().to_string();
        match root.close() {
            Ok(()) => eprintln!("removed {path}"),
            Err(error) => eprintln!("could not remove {path}: {error}"),
        }
    }
    result
}

struct Binaries<'a> {
    vnetd: &'a Path,
    switchd: &'a Path,
}

/// Starts every process: for each unit its switch (waiting until it listens) and then its
/// vnetd; then the witness. What was started is in `running`, also on failure.
async fn start_all(
    binaries: &Binaries<'_>,
    nodes: &[NodePlan],
    root: &Path,
    startup_timeout: Duration,
    running: &mut Vec<Running>,
) -> Result<(), CliError> {
    let initial = initial_cluster(nodes);
    for node in nodes {
        let data_dir = root.join(node.name);
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            CliError::Local(anyhow::anyhow!("creating {}: {e}", data_dir.display()))
        })?;
        if let Some(switch) = &node.switch_addr {
            let args = switchd_args(switch, &data_dir.join("switch.journal"));
            let log = data_dir.join("switch.log");
            running.push(spawn(
                binaries.switchd,
                &args,
                node.name,
                Program::Switchd,
                log,
            )?);
            let index = running.len() - 1;
            wait_until_listening(switch, &mut running[index], startup_timeout).await?;
        }
        let args = vnetd_args(node, &data_dir, &initial);
        let log = data_dir.join("vnetd.log");
        running.push(spawn(
            binaries.vnetd,
            &args,
            node.name,
            Program::Vnetd,
            log,
        )?);
    }
    Ok(())
}

fn spawn(
    path: &Path,
    args: &[String],
    node: &'static str,
    program: Program,
    log: PathBuf,
) -> Result<Running, CliError> {
    let log_file = std::fs::File::create(&log)
        .map_err(|e| CliError::Local(anyhow::anyhow!("creating {}: {e}", log.display())))?;
    let log_err = log_file.try_clone()?;
    let child = tokio::process::Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        // Ctrl-C in the terminal reaches the whole foreground process group; keeping the
        // children in their own group lets vnetctl stop them in order instead.
        .process_group(0)
        // The last line of defence if this process unwinds without reaching stop_all.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            CliError::Local(anyhow::anyhow!(
                "starting {} for {node}: {e}",
                path.display()
            ))
        })?;
    Ok(Running {
        node,
        program,
        log,
        pid: child.id().unwrap_or_default(),
        child,
        exited: None,
    })
}

/// Polls until `address` accepts a connection, failing early if the process exits.
async fn wait_until_listening(
    address: &str,
    process: &mut Running,
    deadline_after: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + deadline_after;
    loop {
        if let Some(status) = process.child.try_wait()? {
            process.exited = Some(status);
            return Err(CliError::Local(anyhow::anyhow!(
                "{} exited during startup ({status}).\n{}",
                process.label(),
                log_tail(&process.log)
            )));
        }
        let error = match tokio::net::TcpStream::connect(address).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            return Err(CliError::Local(anyhow::anyhow!(
                "{} does not listen on {address} after {deadline_after:?} ({error}).\n{}",
                process.label(),
                log_tail(&process.log)
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn serve(
    context: &Context,
    args: &DemoArgs,
    timeout: Duration,
    nodes: &[NodePlan],
    root: &Path,
    running: &mut [Running],
) -> Result<(), CliError> {
    let endpoints = Endpoints(nodes.iter().map(|node| node.api_addr.clone()).collect());
    let mut session = session::open(&endpoints, timeout.min(Duration::from_secs(2)));
    wait_for_leader(&mut session, running, args.startup_timeout).await?;
    let (pools, profiles) = sample_data();
    seed(&mut session, pools, &profiles).await?;
    wait_for_presented(&mut session, running, profiles.len(), args.startup_timeout).await?;

    let endpoints_flag = endpoints.0.join(",");
    // vnetctl's default endpoints are the demo's on the default ports.
    let setup = (args.base_port != 7000).then(|| format!("export VNET_ENDPOINTS={endpoints_flag}"));
    let process = |node: &str, program: Program| {
        running
            .iter()
            .find(|p| p.node == node && p.program == program)
    };
    let node_views = nodes
        .iter()
        .map(|node| DemoNodeView {
            plan: node.clone(),
            data_dir: root.join(node.name).display().to_string(),
            log: root.join(node.name).join("vnetd.log").display().to_string(),
            pid: process(node.name, Program::Vnetd).map_or(0, |p| p.pid),
            switch: process(node.name, Program::Switchd).map(|p| DemoSwitchView {
                log: p.log.display().to_string(),
                journal: root
                    .join(node.name)
                    .join("switch.journal")
                    .display()
                    .to_string(),
                pid: p.pid,
            }),
        })
        .collect();
    let pids: Vec<String> = [Program::Vnetd, Program::Switchd]
        .into_iter()
        .filter_map(|program| process(FAILOVER_UNIT, program).map(|p| p.pid.to_string()))
        .collect();
    let view = DemoView {
        endpoints: endpoints_flag,
        data_dir: root.display().to_string(),
        profiles_presented: profiles.len(),
        nodes: node_views,
        setup,
        try_commands: try_commands(),
        planned_moves: planned_moves(),
        failover: FailoverDemoView {
            unit: FAILOVER_UNIT,
            kill_command: format!("kill -9 {}", pids.join(" ")),
            then: failover_commands(),
        },
    };
    emit(context, &view)?;
    wait_for_stop(running).await
}

/// Commands with their comments aligned in one column, as printed.
fn aligned(commands: &[(&str, &str)]) -> Vec<String> {
    let width = commands
        .iter()
        .map(|(command, _)| command.len())
        .max()
        .unwrap_or(0);
    commands
        .iter()
        .map(|(command, comment)| match comment {
            &"" => command.to_string(),
            comment => format!("{command:width$}  # {comment}"),
        })
        .collect()
}

fn try_commands() -> Vec<String> {
    aligned(&[
        (
            "vnetctl status",
            "members, units, and where each profile is",
        ),
        ("vnetctl profile get web-01", ""),
        ("vnetctl pool usage", ""),
        ("vnetctl watch", "in another terminal, then:"),
        ("vnetctl leader transfer --to 2", ""),
    ])
}

fn planned_moves() -> Vec<String> {
    aligned(&[
        (
            "vnetctl drain unit-a --wait",
            "web-01, db-01, app-01 move to unit-b",
        ),
        (
            "vnetctl undrain unit-a",
            "web-01, app-01 (failback auto) return after the hold-down",
        ),
        (
            "vnetctl failover db-01 --to unit-a",
            "db-01 (failback manual) by hand",
        ),
        (
            "vnetctl failover --from unit-b",
            "all off unit-b; web-02 (failback auto) comes back",
        ),
    ])
}

fn failover_commands() -> Vec<String> {
    aligned(&[
        (
            "vnetctl status",
            "within ~2 s unit-a's profiles show failed_over on unit-b",
        ),
        (
            "vnetctl watch --from 1 | tail",
            "the placements and presented events",
        ),
    ])
}

/// Polls cluster status until some node reports a leader, failing early if a process exits.
async fn wait_for_leader(
    session: &mut session::Session,
    running: &mut [Running],
    deadline_after: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + deadline_after;
    loop {
        check_alive(running)?;
        let last_error =
            match cluster::fetch_status(session, pb::ReadConsistency::Linearizable).await {
                Ok(status) if status.leader_id.is_some() => return Ok(()),
                Ok(_) => "the nodes answer but know no leader".to_string(),
                Err(error) => error.to_string(),
            };
        if Instant::now() >= deadline {
            return Err(CliError::Local(anyhow::anyhow!(
                "no leader within {deadline_after:?} (last: {last_error}).\n{}",
                all_tails(running)
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether every one of `expected` profiles is presented by the unit it is placed on.
pub fn all_presented(status: &pb::GetClusterStatusResponse, expected: usize) -> bool {
    status.placements.len() >= expected
        && status.placements.iter().all(|placement| {
            matches!(
                crate::view::PlacementView::from(placement).state,
                PlacementStateView::Presented | PlacementStateView::FailedOver
            )
        })
}

/// Polls cluster status until every sample profile is presented, failing early if a process
/// exits, and naming the profiles that are not at the deadline.
async fn wait_for_presented(
    session: &mut session::Session,
    running: &mut [Running],
    expected: usize,
    deadline_after: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + deadline_after;
    loop {
        check_alive(running)?;
        let last = match cluster::fetch_status(session, pb::ReadConsistency::Linearizable).await {
            Ok(status) if all_presented(&status, expected) => return Ok(()),
            Ok(status) => {
                let placements: Vec<crate::view::PlacementView> = status
                    .placements
                    .iter()
                    .map(crate::view::PlacementView::from)
                    .collect();
                crate::output::placements_table(&placements)
            }
            Err(error) if error.is_transient() => error.to_string(),
            Err(error) => return Err(error),
        };
        if Instant::now() >= deadline {
            return Err(CliError::Local(anyhow::anyhow!(
                "the sample profiles are not all presented after {deadline_after:?}; last seen:\n\
                 {last}\n{}",
                all_tails(running)
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Fails if any process has exited.
fn check_alive(running: &mut [Running]) -> Result<(), CliError> {
    for process in running.iter_mut() {
        if let Some(status) = process.child.try_wait()? {
            process.exited = Some(status);
            return Err(CliError::Local(anyhow::anyhow!(
                "{} exited during startup ({status}).\n{}",
                process.label(),
                log_tail(&process.log)
            )));
        }
    }
    Ok(())
}

fn all_tails(running: &[Running]) -> String {
    running
        .iter()
        .map(|process| log_tail(&process.log))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last lines of a process's log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        tail.join("\n")
    )
}

/// The sample pools and profiles: one profile per rack server, each with two vNICs (prod and
/// storage) and two vHBAs (fabrics a and b) from the pools, preferred units alternating between
/// unit-a and unit-b, failback auto on half.
pub fn sample_data() -> (Vec<pb::Pool>, Vec<pb::Profile>) {
    let pools = vec![
        pb::Pool {
            name: "demo-mac".into(),
            kind: pb::PoolKind::Mac as i32,
            first: "02:00:00:00:00:00".into(),
            last: "02:00:00:00:0f:ff".into(),
            revision: 0,
        },
        pb::Pool {
            name: "demo-wwn".into(),
            kind: pb::PoolKind::Wwn as i32,
            first: "20:00:00:25:b5:00:00:00".into(),
            last: "20:00:00:25:b5:00:0f:ff".into(),
            revision: 0,
        },
    ];
    let profile = |name: &str, server: &str, unit: &str, failback: pb::FailbackPolicy| {
        pb::Profile {
            name: name.into(),
            server: server.into(),
            // The specs below are constants checked by the sample_data test.
            vnics: [
                "eth0:net=prod:vlan=100:pool=demo-mac",
                "eth1:net=storage:vlan=200:pool=demo-mac",
            ]
            .iter()
            .filter_map(|s| spec::parse_vnic(s).ok())
            .collect(),
            vhbas: ["fc0:fabric=a:pool=demo-wwn", "fc1:fabric=b:pool=demo-wwn"]
                .iter()
                .filter_map(|s| spec::parse_vhba(s).ok())
                .collect(),
            preferred_unit: Some(unit.into()),
            failback: failback as i32,
            revision: 0,
            created_revision: 0,
        }
    };
    use pb::FailbackPolicy::{Auto, Manual};
    let profiles = vec![
        profile("web-01", SERVERS[0], "unit-a", Auto),
        profile("web-02", SERVERS[1], "unit-b", Auto),
        profile("db-01", SERVERS[2], "unit-a", Manual),
        profile("db-02", SERVERS[3], "unit-b", Manual),
        profile("app-01", SERVERS[4], "unit-a", Auto),
        profile("app-02", SERVERS[5], "unit-b", Manual),
    ];
    (pools, profiles)
}

/// Creates the sample data. A leader change right after the first election is normal, so
/// UNAVAILABLE is retried until a deadline; ALREADY_EXISTS after such a retry means the first
/// attempt went through.
async fn seed(
    session: &mut session::Session,
    pools: Vec<pb::Pool>,
    profiles: &[pb::Profile],
) -> Result<(), CliError> {
    let deadline = Instant::now() + SEED_DEADLINE;
    for pool in pools {
        while !settled(
            pool::create(session, pool.clone()).await.map(drop),
            deadline,
        )
        .await?
        {}
    }
    for profile in profiles {
        while !settled(
            profile::create(session, profile.clone()).await.map(drop),
            deadline,
        )
        .await?
        {}
    }
    Ok(())
}

/// Whether a seeding write is done (true), worth another try after a pause (false), or failed.
async fn settled(outcome: Result<(), CliError>, deadline: Instant) -> Result<bool, CliError> {
    match outcome {
        Ok(()) => Ok(true),
        Err(CliError::Rejected {
            code: tonic::Code::AlreadyExists,
            ..
        }) => Ok(true),
        Err(error) if error.is_transient() && Instant::now() < deadline => {
            tokio::time::sleep(POLL_INTERVAL).await;
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// Runs until SIGINT or SIGTERM. A process that dies meanwhile is reported and the rest keep
/// going: with two of three nodes the cluster keeps its quorum, and a unit whose vnetd and
/// switch are gone is exactly what a failover is for.
async fn wait_for_stop(running: &mut [Running]) -> Result<(), CliError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let mut exits = Vec::new();
        for process in running.iter_mut().filter(|p| p.exited.is_none()) {
            let label = process.label();
            let log = process.log.clone();
            exits.push(Box::pin(async move {
                let status = process.child.wait().await;
                if let Ok(status) = &status {
                    process.exited = Some(*status);
                }
                (label, log, status)
            }));
        }
        let any_exit = async {
            if exits.is_empty() {
                std::future::pending::<()>().await;
            }
            let ((label, log, status), _, _) = futures::future::select_all(exits).await;
            match status {
                Ok(status) => eprintln!(
                    "{label} exited ({status}); see {}. The others keep running.",
                    log.display()
                ),
                Err(error) => eprintln!("waiting for {label}: {error}"),
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = any_exit => {}
        }
    }
    eprintln!("stopping the demo cluster...");
    Ok(())
}

/// Stops every vnetd, then every switch: a unit's agent must not find its switch gone while it
/// still runs (it would only log errors, but the order is the one a real unit shuts down in).
async fn stop_all(running: &mut [Running]) {
    for program in [Program::Vnetd, Program::Switchd] {
        let mut group: Vec<&mut Running> = running
            .iter_mut()
            .filter(|process| process.program == program)
            .collect();
        stop_group(&mut group).await;
    }
}

/// SIGTERM to every live process of the group, then SIGKILL to any still running after
/// STOP_DEADLINE.
async fn stop_group(group: &mut [&mut Running]) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for process in group.iter_mut() {
        if process.exited.is_some() {
            continue;
        }
        if let Some(pid) = process.child.id().and_then(|id| i32::try_from(id).ok()) {
            if let Err(error) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
                eprintln!("SIGTERM to {}: {error}", process.label());
            }
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    for process in group.iter_mut() {
        if process.exited.is_some() {
            continue;
        }
        match tokio::time::timeout_at(deadline, process.child.wait()).await {
            Ok(Ok(status)) => process.exited = Some(status),
            Ok(Err(error)) => eprintln!("waiting for {}: {error}", process.label()),
            Err(_elapsed) => {
                eprintln!(
                    "{} did not stop within {STOP_DEADLINE:?}; killing it",
                    process.label()
                );
                if let Err(error) = process.child.kill().await {
                    eprintln!("SIGKILL to {}: {error}", process.label());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_uses_the_documented_ports() {
        let nodes = plan(7000).unwrap();
        let summary: Vec<_> = nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    n.name,
                    n.role,
                    n.api_addr.as_str(),
                    n.peer_addr.as_str(),
                    n.switch_addr.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    1,
                    "unit-a",
                    "unit",
                    "127.0.0.1:7001",
                    "127.0.0.1:7101",
                    Some("127.0.0.1:7201")
                ),
                (
                    2,
                    "unit-b",
                    "unit",
                    "127.0.0.1:7002",
                    "127.0.0.1:7102",
                    Some("127.0.0.1:7202")
                ),
                (
                    3,
                    "witness",
                    "witness",
                    "127.0.0.1:7003",
                    "127.0.0.1:7103",
                    None
                ),
            ]
        );
        assert_eq!(
            initial_cluster(&nodes),
            "1=unit-a@127.0.0.1:7101,2=unit-b@127.0.0.1:7102,3=witness@127.0.0.1:7103"
        );
    }

    #[test]
    fn plan_refuses_ports_past_65535() {
        assert!(plan(65_334).unwrap_err().contains("above 65535"));
        assert!(plan(65_333).is_ok());
    }

    #[test]
    fn witness_vnetd_gets_no_switch_and_no_cabling() {
        let nodes = plan(9000).unwrap();
        let args = vnetd_args(&nodes[2], Path::new("/tmp/d/witness"), "CLUSTER");
        assert_eq!(
            args.join(" "),
            "--id 3 --name witness --role witness --data-dir /tmp/d/witness \
             --api-listen 127.0.0.1:9003 --peer-listen 127.0.0.1:9103 \
             --initial-cluster CLUSTER --log-format text --log-level info"
        );
    }

    #[test]
    fn unit_vnetd_gets_its_switch_and_the_shared_cabling() {
        let nodes = plan(9000).unwrap();
        for (node, switch) in [(&nodes[0], "9201"), (&nodes[1], "9202")] {
            let args = vnetd_args(node, Path::new("/d"), "CLUSTER");
            let joined = args.join(" ");
            assert!(
                joined.contains(&format!(
                    "--switch 127.0.0.1:{switch} --cabling rack1-srv01=1,rack1-srv02=2,\
                     rack1-srv03=3,rack1-srv04=4,rack1-srv05=5,rack1-srv06=6 "
                )),
                "{joined}"
            );
        }
    }

    #[test]
    fn switchd_gets_exactly_the_agreed_flags() {
        let args = switchd_args("127.0.0.1:7201", Path::new("/d/unit-a/switch.journal"));
        assert_eq!(
            args.join(" "),
            "--listen 127.0.0.1:7201 --journal /d/unit-a/switch.journal \
             --host-ports 1=rack1-srv01,2=rack1-srv02,3=rack1-srv03,4=rack1-srv04,\
             5=rack1-srv05,6=rack1-srv06 --eth-ports 2 --vfs-per-eth-port 32 --fc-ports 2 \
             --npiv-per-fc-port 32"
        );
    }

    #[test]
    fn programs_are_found_explicitly_or_beside_vnetctl() {
        let dir = tempfile::tempdir().unwrap();
        for (program, file, hint, env) in [
            (
                Program::Vnetd,
                "vnetd",
                "cargo build -p vnet-node",
                "VNETD_BIN",
            ),
            (
                Program::Switchd,
                "vnet-switchd",
                "cargo build -p fabric-agent",
                "VNET_SWITCHD_BIN",
            ),
        ] {
            let error = locate(program, None, Some(dir.path())).unwrap_err();
            assert!(error.contains(hint) && error.contains(env), "{error}");
            let missing = dir.path().join("nope");
            let error = locate(program, Some(&missing), Some(dir.path())).unwrap_err();
            assert!(error.contains(env), "{error}");

            let beside = dir.path().join(file);
            std::fs::write(&beside, b"").unwrap();
            assert_eq!(locate(program, None, Some(dir.path())).unwrap(), beside);
            let other = dir.path().join(format!("custom-{file}"));
            std::fs::write(&other, b"").unwrap();
            assert_eq!(
                locate(program, Some(&other), Some(dir.path())).unwrap(),
                other
            );
        }
    }

    #[test]
    fn a_taken_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = listener.local_addr().unwrap().to_string();
        let free = || {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let nodes = vec![NodePlan {
            id: 1,
            name: "unit-a",
            role: "unit",
            api_addr: free(),
            peer_addr: free(),
            switch_addr: Some(taken.clone()),
        }];
        let error = check_ports_free(&nodes, 7000).unwrap_err().to_string();
        assert!(
            error.contains(&taken)
                && error.contains("switch of unit-a")
                && error.contains("--base-port"),
            "{error}"
        );
    }

    #[test]
    fn sample_data_is_valid_and_complete() {
        let (pools, profiles) = sample_data();
        assert_eq!(pools.len(), 2);
        assert_eq!(profiles.len(), 6);
        for profile in &profiles {
            assert_eq!(spec::check_profile(profile), Ok(()), "{}", profile.name);
            // Catches a spec that failed to parse and was dropped by `filter_map`.
            assert_eq!(profile.vnics.len(), 2, "{}", profile.name);
            assert_eq!(profile.vhbas.len(), 2, "{}", profile.name);
        }
        let servers: Vec<&str> = profiles.iter().map(|p| p.server.as_str()).collect();
        assert_eq!(servers, SERVERS.to_vec(), "one profile per cabled server");
        let on = |unit: &str| {
            profiles
                .iter()
                .filter(|p| p.preferred_unit.as_deref() == Some(unit))
                .count()
        };
        assert_eq!((on("unit-a"), on("unit-b")), (3, 3));
        let auto = profiles
            .iter()
            .filter(|p| p.failback == pb::FailbackPolicy::Auto as i32)
            .count();
        assert_eq!(auto, 3);
    }

    #[test]
    fn comments_line_up() {
        assert_eq!(
            aligned(&[
                ("vnetctl a", "one"),
                ("vnetctl bbb", ""),
                ("vnetctl cc", "two")
            ]),
            vec!["vnetctl a    # one", "vnetctl bbb", "vnetctl cc   # two"]
        );
    }

    #[test]
    fn every_profile_must_be_presented_by_its_unit() {
        let placement = |state: pb::PlacementState| pb::ProfilePlacement {
            profile: "web-01".into(),
            state: state as i32,
            ..Default::default()
        };
        let status = |placements| pb::GetClusterStatusResponse {
            placements,
            ..Default::default()
        };
        assert!(all_presented(
            &status(vec![placement(pb::PlacementState::Presented)]),
            1
        ));
        assert!(!all_presented(
            &status(vec![placement(pb::PlacementState::Programming)]),
            1
        ));
        assert!(!all_presented(
            &status(vec![placement(pb::PlacementState::Presented)]),
            2
        ));
    }

    #[test]
    fn printed_instructions_name_the_pids_to_kill_and_the_commands() {
        let view = DemoView {
            endpoints: "127.0.0.1:7001".into(),
            data_dir: "/d".into(),
            profiles_presented: 6,
            nodes: vec![],
            setup: Some("export VNET_ENDPOINTS=127.0.0.1:9001".into()),
            try_commands: try_commands(),
            planned_moves: planned_moves(),
            failover: FailoverDemoView {
                unit: FAILOVER_UNIT,
                kill_command: "kill -9 11 12".into(),
                then: failover_commands(),
            },
        };
        let text = view.text();
        assert!(text.contains("6 profiles are presented"), "{text}");
        assert!(
            text.contains("first:\n  export VNET_ENDPOINTS=127.0.0.1:9001\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "kill unit-a's vnetd and its switch (it stays down until the demo \
                 restarts):\n  kill -9 11 12\n"
            ),
            "{text}"
        );
        for command in [
            "vnetctl drain unit-a --wait",
            "vnetctl undrain unit-a",
            "vnetctl failover db-01 --to unit-a",
            "vnetctl failover --from unit-b",
            "failed_over on unit-b",
        ] {
            assert!(text.contains(command), "{command} missing from:\n{text}");
        }
    }
}
