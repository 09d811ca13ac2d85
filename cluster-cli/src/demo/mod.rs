//! `demo`: a local three-node cluster (unit-a, unit-b, witness) with sample data, for trying
//! vnetctl by hand. Each unit is a `vnetd` plus its simulated switch `vnet-switchd`; the witness
//! is a `vnetd` alone. The demo owns its child processes from start to stop: every exit path
//! stops them (each vnetd before the switches, SIGTERM then SIGKILL after a deadline) and
//! removes their data directories.
//!
//! [`plan`] lays out the nodes, ports and command lines; [`sample`] is the data the demo
//! writes; [`view`] is what it prints. This file starts, watches and stops the processes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vnet_launch::{Launch, Process, Program};
use vnet_proto::vnet::v1 as pb;

use crate::cli::{DemoArgs, DemoDataPlane};
use crate::error::CliError;
use crate::spec::Endpoints;
use crate::view::PlacementStateView;
use crate::{cluster, emit, session, Context};

pub mod linux;
pub mod plan;
pub mod sample;
pub mod view;

use plan::{check_ports_free, initial_cluster, plan, switchd_args, vnetd_args, NodePlan};
use sample::{sample_data, seed};
use view::{
    failover_commands, planned_moves, try_commands, DemoNodeView, DemoSwitchView, DemoView,
    FailoverDemoView, FAILOVER_UNIT,
};

/// Between two polls while waiting for a switch to listen, a leader, or profiles to be presented.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Between two looks at a stopping process.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Lines of each log shown when the cluster fails to start.
const LOG_TAIL_LINES: usize = 15;

/// How the operator points the demo at a program explicitly, for error messages.
fn how_to_point(program: Program) -> &'static str {
    match program {
        Program::Vnetd => "--vnetd-bin or VNETD_BIN",
        Program::Switchd => "--vnet-switchd-bin or VNET_SWITCHD_BIN",
    }
}

/// One child process of the demo.
struct Running {
    node: &'static str,
    program: Program,
    log: PathBuf,
    pid: u32,
    process: Process,
    /// Set once it is known to have exited (and is reaped).
    exited: bool,
}

impl Running {
    fn label(&self) -> String {
        match self.program {
            Program::Vnetd => format!("{} vnetd", self.node),
            Program::Switchd => format!("{} switch", self.node),
        }
    }
}

pub async fn run(context: &Context, args: DemoArgs, timeout: Duration) -> Result<(), CliError> {
    let nodes = plan(args.base_port).map_err(CliError::Usage)?;
    let local = |e: String| CliError::Local(anyhow::anyhow!(e));
    let vnetd = Program::Vnetd
        .locate(args.vnetd_bin.as_deref(), how_to_point(Program::Vnetd))
        .map_err(local)?;
    let switchd = Program::Switchd
        .locate(
            args.vnet_switchd_bin.as_deref(),
            how_to_point(Program::Switchd),
        )
        .map_err(local)?;
    check_ports_free(&nodes, args.base_port)?;
    let rack = match args.dataplane {
        DemoDataPlane::Sim => None,
        DemoDataPlane::Linux => Some(linux::Rack::build().map_err(local)?),
    };

    let root = tempfile::Builder::new()
        .prefix("vnetctl-demo-")
        .tempdir()
        .map_err(|e| CliError::Local(anyhow::anyhow!("creating the demo's data directory: {e}")))?;
    let certs = if args.insecure {
        None
    } else {
        let certs = root.path().join("certs");
        plan::make_certs(&certs, &nodes)
            .map_err(|e| local(format!("creating the demo's certificates: {e}")))?;
        Some(certs)
    };
    let mut running = Vec::new();
    let started = start_all(
        &Binaries {
            vnetd: &vnetd,
            switchd: &switchd,
            rack: rack.as_ref(),
            certs: certs.as_deref(),
        },
        &nodes,
        root.path(),
        args.startup_timeout,
        &mut running,
    )
    .await;
    let result = match started {
        Ok(()) => {
            serve(
                context,
                &args,
                timeout,
                &nodes,
                root.path(),
                rack.as_ref(),
                &mut running,
            )
            .await
        }
        Err(error) => Err(error),
    };
    stop_all(&mut running).await;
    // After the switches: their vNICs went with them; the rack goes now.
    drop(rack);
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
    /// `--dataplane linux`: the namespaces the switches present into.
    rack: Option<&'a linux::Rack>,
    /// The certificates every process serves and calls with; `None`: plaintext (`--insecure`).
    certs: Option<&'a Path>,
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
        if let (Some(switch), Some(metrics)) = (&node.switch_addr, &node.switch_metrics_addr) {
            let mut args = switchd_args(switch, metrics, &data_dir.join("switch.journal"));
            if let Some(rack) = binaries.rack {
                args.extend(rack.switch_args(usize::from(node.name != "unit-a")));
            }
            if let Some(certs) = binaries.certs {
                // The switch accepts only its unit's vnetd, by its node certificate.
                args.extend(plan::tls_args(certs, node.id));
                args.extend(["--unit-node-id".into(), node.id.to_string()]);
            }
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
        let mut args = vnetd_args(node, &data_dir, &initial);
        if let Some(certs) = binaries.certs {
            args.extend(plan::tls_args(certs, node.id));
        }
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
    let process = Launch::new(path)
        .args(args)
        // The operator's VNET_* settings reach the demo's nodes as they would reach any vnetd.
        .inherit_vnet_env()
        // Ctrl-C in the terminal reaches the whole foreground process group; keeping the
        // children in their own group lets vnetctl stop them in order instead.
        .own_process_group()
        .log(&log)
        .spawn()
        // Dropping the Process kills the child: the last line of defence if this process
        // unwinds without reaching stop_all.
        .map_err(|e| CliError::Local(anyhow::anyhow!("{e} (for {node})")))?;
    Ok(Running {
        node,
        program,
        log,
        pid: process.pid(),
        process,
        exited: false,
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
        fail_if_exited(process)?;
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
    rack: Option<&linux::Rack>,
    running: &mut [Running],
) -> Result<(), CliError> {
    let endpoints = Endpoints(nodes.iter().map(|node| node.api_addr.clone()).collect());
    let certs = (!args.insecure).then(|| root.join("certs"));
    let client_files = |name: &str| {
        let certs = certs.as_deref()?;
        let (cert, key) = vnet_tls::certs::client_files(name);
        Some((
            certs.join(vnet_tls::certs::CA_CERT),
            certs.join(cert),
            certs.join(key),
        ))
    };
    let tls = match client_files("admin") {
        Some((ca, cert, key)) => Some(std::sync::Arc::new(
            vnet_tls::ClientTls::new(ca, Some((cert, key))).map_err(|e| {
                CliError::Local(anyhow::anyhow!("the demo's admin certificate: {e}"))
            })?,
        )),
        None => None,
    };
    let mut session = session::open(&endpoints, timeout.min(Duration::from_secs(2)), tls);
    wait_for_leader(&mut session, running, args.startup_timeout).await?;
    let (pools, profiles) = sample_data();
    seed(&mut session, pools, &profiles).await?;
    sample::grant_roles(&mut session).await?;
    wait_for_presented(&mut session, running, profiles.len(), args.startup_timeout).await?;

    let endpoints_flag = endpoints.0.join(",");
    // vnetctl's default endpoints are the demo's on the default ports.
    let mut setup = Vec::new();
    if args.base_port != 7000 {
        setup.push(format!("export VNET_ENDPOINTS={endpoints_flag}"));
    }
    if let Some((ca, cert, key)) = client_files("admin") {
        setup.push(format!(
            "export VNET_CACERT={} VNET_CERT={} VNET_KEY={}",
            ca.display(),
            cert.display(),
            key.display()
        ));
        for role in ["operator", "viewer"] {
            if let Some((_, cert, key)) = client_files(role) {
                setup.push(format!(
                    "# as {role}: vnetctl --cert {} --key {} ...",
                    cert.display(),
                    key.display()
                ));
            }
        }
    }
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
        data_plane: rack.map(linux::Rack::instructions).unwrap_or_default(),
    };
    emit(context, &view)?;
    wait_for_stop(running).await
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
    running.iter_mut().try_for_each(fail_if_exited)
}

/// Fails, showing the end of its log, if the process has exited.
fn fail_if_exited(process: &mut Running) -> Result<(), CliError> {
    match process.process.try_wait()? {
        None => Ok(()),
        Some(status) => {
            process.exited = true;
            Err(CliError::Local(anyhow::anyhow!(
                "{} exited during startup ({status}).\n{}",
                process.label(),
                log_tail(&process.log)
            )))
        }
    }
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
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        vnet_launch::log_tail(path, LOG_TAIL_LINES).join("\n")
    )
}

/// Runs until SIGINT or SIGTERM. A process that dies meanwhile is reported and the rest keep
/// going: with two of three nodes the cluster keeps its quorum, and a unit whose vnetd and
/// switch are gone is exactly what a failover is for.
async fn wait_for_stop(running: &mut [Running]) -> Result<(), CliError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = tokio::time::sleep(POLL_INTERVAL) => report_exits(running),
        }
    }
    eprintln!("stopping the demo cluster...");
    Ok(())
}

/// Reports each process that exited since the last call.
fn report_exits(running: &mut [Running]) {
    for process in running.iter_mut().filter(|p| !p.exited) {
        match process.process.try_wait() {
            Ok(Some(status)) => {
                process.exited = true;
                eprintln!(
                    "{} exited ({status}); see {}. The others keep running.",
                    process.label(),
                    process.log.display()
                );
            }
            Ok(None) => {}
            Err(error) => {
                // Reported once: without a status it is treated as gone.
                process.exited = true;
                eprintln!("waiting for {}: {error}", process.label());
            }
        }
    }
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
    for process in group.iter_mut() {
        if process.exited {
            continue;
        }
        if let Err(error) = process.process.terminate() {
            eprintln!("SIGTERM to {}: {error}", process.label());
        }
    }
    let deadline = Instant::now() + STOP_DEADLINE;
    for process in group.iter_mut() {
        loop {
            if process.exited {
                break;
            }
            match process.process.try_wait() {
                Ok(Some(_)) => process.exited = true,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(STOP_POLL).await,
                Ok(None) => {
                    eprintln!(
                        "{} did not stop within {STOP_DEADLINE:?}; killing it",
                        process.label()
                    );
                    match process.process.kill() {
                        Ok(_) => process.exited = true,
                        Err(error) => {
                            eprintln!("SIGKILL to {}: {error}", process.label());
                            break;
                        }
                    }
                }
                Err(error) => {
                    eprintln!("waiting for {}: {error}", process.label());
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_the_flag_and_variable_that_point_at_it() {
        let dir = tempfile::tempdir().unwrap();
        for (program, hint, env) in [
            (Program::Vnetd, "cargo build -p vnet-node", "VNETD_BIN"),
            (
                Program::Switchd,
                "cargo build -p fabric-agent",
                "VNET_SWITCHD_BIN",
            ),
        ] {
            let error = program
                .locate_from(None, Some(dir.path()), how_to_point(program))
                .unwrap_err();
            assert!(error.contains(hint) && error.contains(env), "{error}");
            let missing = dir.path().join("nope");
            let error = program
                .locate_from(Some(&missing), Some(dir.path()), how_to_point(program))
                .unwrap_err();
            assert!(error.contains(env), "{error}");
        }
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
}
