//! `demo`: a local three-node cluster (unit-a, unit-b, witness) with sample data, for trying
//! vnetctl by hand. It owns its child processes from start to stop: every exit path stops them
//! (SIGTERM, then SIGKILL after a deadline) and removes their data directories.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use vnet_proto::vnet::v1 as pb;

use crate::cli::DemoArgs;
use crate::error::CliError;
use crate::output::Render;
use crate::spec::{self, Endpoints};
use crate::{cluster, emit, pool, profile, session, Context};

/// Between two status polls while waiting for a leader.
const LEADER_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a node gets to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long seeding the sample data may take (it retries across a leader change).
const SEED_DEADLINE: Duration = Duration::from_secs(30);
/// Lines of each log shown when the cluster fails to start.
const LOG_TAIL_LINES: usize = 15;

/// One node of the demo cluster, before it is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    pub id: u64,
    pub name: &'static str,
    pub role: &'static str,
    pub api_addr: String,
    pub peer_addr: String,
}

/// The three nodes: API ports base+1..base+3, peer ports base+101..base+103.
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

/// The vnetd command line for one node.
pub fn vnetd_args(node: &NodePlan, data_dir: &Path, initial_cluster: &str) -> Vec<String> {
    vec![
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
        "--log-format".into(),
        "text".into(),
        "--log-level".into(),
        "info".into(),
    ]
}

/// Finds vnetd: the explicit path (flag or VNETD_BIN), else next to this executable.
pub fn locate_vnetd(explicit: Option<&Path>, exe_dir: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "vnetd not found at {} (from --vnetd-bin or VNETD_BIN)",
                path.display()
            ))
        };
    }
    let beside = exe_dir.map(|dir| dir.join("vnetd"));
    match beside {
        Some(path) if path.is_file() => Ok(path),
        _ => Err(format!(
            "vnetd not found{}. Build it with `cargo build -p vnet-node` (it lands next to \
             vnetctl in target/debug), or point VNETD_BIN at it.",
            exe_dir
                .map(|dir| format!(" in {}", dir.display()))
                .unwrap_or_default()
        )),
    }
}

/// Fails with the first port of the plan that something already listens on.
fn check_ports_free(nodes: &[NodePlan], base_port: u16) -> Result<(), CliError> {
    for node in nodes {
        for address in [&node.api_addr, &node.peer_addr] {
            // Binding and releasing leaves a small window, but it turns the common case (an
            // earlier demo still running) into a clear message instead of a crash in a log.
            if let Err(error) = std::net::TcpListener::bind(address.as_str()) {
                return Err(CliError::Local(anyhow::anyhow!(
                    "{address} ({} of {}) is not free: {error}. Stop what uses it, or pick \
                     other ports with --base-port (now {base_port}).",
                    if address == &node.api_addr {
                        "api"
                    } else {
                        "peer"
                    },
                    node.name
                )));
            }
        }
    }
    Ok(())
}

struct RunningNode {
    plan: NodePlan,
    data_dir: PathBuf,
    log: PathBuf,
    child: tokio::process::Child,
    exited: Option<std::process::ExitStatus>,
}

/// What the demo prints once it is ready.
#[derive(Debug, Serialize)]
struct DemoView {
    endpoints: String,
    data_dir: String,
    nodes: Vec<DemoNodeView>,
    try_commands: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DemoNodeView {
    #[serde(flatten)]
    plan: NodePlan,
    data_dir: String,
    log: String,
}

impl Render for DemoView {
    fn text(&self) -> String {
        let mut out = String::from("vnet-ha demo cluster is up.\n\n");
        for node in &self.nodes {
            out.push_str(&format!(
                "  {} (id {}, {}): api {}  peer {}\n    log: {}\n",
                node.plan.name,
                node.plan.id,
                node.plan.role,
                node.plan.api_addr,
                node.plan.peer_addr,
                node.log
            ));
        }
        out.push_str(&format!("\nendpoints: {}\n\nTry:\n", self.endpoints));
        for command in &self.try_commands {
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
    let vnetd = locate_vnetd(args.vnetd_bin.as_deref(), exe_dir.as_deref())
        .map_err(|e| CliError::Local(anyhow::anyhow!(e)))?;
    check_ports_free(&nodes, args.base_port)?;

    let root = tempfile::Builder::new()
        .prefix("vnetctl-demo-")
        .tempdir()
        .map_err(|e| CliError::Local(anyhow::anyhow!("creating the demo's data directory: {e}")))?;
    let mut running = Vec::new();
    let started = start_nodes(&vnetd, &nodes, root.path(), &mut running);
    let result = match started {
        Ok(()) => serve(context, &args, timeout, &nodes, root.path(), &mut running).await,
        Err(error) => Err(error),
    };
    stop_nodes(&mut running).await;
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

fn start_nodes(
    vnetd: &Path,
    nodes: &[NodePlan],
    root: &Path,
    running: &mut Vec<RunningNode>,
) -> Result<(), CliError> {
    let initial = initial_cluster(nodes);
    for node in nodes {
        let data_dir = root.join(node.name);
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            CliError::Local(anyhow::anyhow!("creating {}: {e}", data_dir.display()))
        })?;
        let log = data_dir.join("vnetd.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|e| CliError::Local(anyhow::anyhow!("creating {}: {e}", log.display())))?;
        let log_err = log_file.try_clone()?;
        let child = tokio::process::Command::new(vnetd)
            .args(vnetd_args(node, &data_dir, &initial))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            // Ctrl-C in the terminal reaches the whole foreground process group; keeping the
            // nodes in their own group lets vnetctl stop them in order instead.
            .process_group(0)
            // The last line of defence if this process unwinds without reaching stop_nodes.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CliError::Local(anyhow::anyhow!(
                    "starting {} as {}: {e}",
                    vnetd.display(),
                    node.name
                ))
            })?;
        running.push(RunningNode {
            plan: node.clone(),
            data_dir,
            log,
            child,
            exited: None,
        });
    }
    Ok(())
}

async fn serve(
    context: &Context,
    args: &DemoArgs,
    timeout: Duration,
    nodes: &[NodePlan],
    root: &Path,
    running: &mut [RunningNode],
) -> Result<(), CliError> {
    let endpoints = Endpoints(nodes.iter().map(|node| node.api_addr.clone()).collect());
    let mut session = session::open(&endpoints, timeout.min(Duration::from_secs(2)));
    wait_for_leader(&mut session, running, args.startup_timeout).await?;
    seed(&mut session).await?;

    let endpoints_flag = endpoints.0.join(",");
    let prefix = if args.base_port == 7000 {
        "vnetctl".to_string()
    } else {
        format!("VNET_ENDPOINTS={endpoints_flag} vnetctl")
    };
    let view = DemoView {
        endpoints: endpoints_flag,
        data_dir: root.display().to_string(),
        nodes: running
            .iter()
            .map(|node| DemoNodeView {
                plan: node.plan.clone(),
                data_dir: node.data_dir.display().to_string(),
                log: node.log.display().to_string(),
            })
            .collect(),
        try_commands: vec![
            format!("{prefix} status"),
            format!("{prefix} profile list"),
            format!("{prefix} profile get web-01"),
            format!("{prefix} pool usage"),
            format!("{prefix} watch            # in another terminal, then:"),
            format!("{prefix} profile create app-01 --server rack1-srv04 --vnic eth0:net=prod:pool=demo-mac --vhba fc0:fabric=a:pool=demo-wwn"),
            format!("{prefix} leader transfer --to 2"),
        ],
    };
    emit(context, &view)?;
    wait_for_stop(running).await
}

/// Polls cluster status until some node reports a leader, failing early if a node exits.
async fn wait_for_leader(
    session: &mut session::Session,
    running: &mut [RunningNode],
    deadline_after: Duration,
) -> Result<(), CliError> {
    let deadline = Instant::now() + deadline_after;
    loop {
        for node in running.iter_mut() {
            if let Some(status) = node.child.try_wait()? {
                node.exited = Some(status);
                return Err(CliError::Local(anyhow::anyhow!(
                    "{} exited during startup ({status}).\n{}",
                    node.plan.name,
                    log_tail(&node.log)
                )));
            }
        }
        let last_error =
            match cluster::fetch_status(session, pb::ReadConsistency::Linearizable).await {
                Ok(status) if status.leader_id.is_some() => return Ok(()),
                Ok(_) => "the nodes answer but know no leader".to_string(),
                Err(error) => error.to_string(),
            };
        if Instant::now() >= deadline {
            let tails: Vec<String> = running.iter().map(|node| log_tail(&node.log)).collect();
            return Err(CliError::Local(anyhow::anyhow!(
                "no leader within {deadline_after:?} (last: {last_error}).\n{}",
                tails.join("\n")
            )));
        }
        tokio::time::sleep(LEADER_POLL_INTERVAL).await;
    }
}

/// The last lines of a node's log, for error messages.
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

/// The sample pools and profiles.
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
    let profile =
        |name: &str, server: &str, vnics: &[&str], vhbas: &[&str], unit: &str, failback| {
            pb::Profile {
                name: name.into(),
                server: server.into(),
                // The specs below are constants checked by the sample_data test.
                vnics: vnics
                    .iter()
                    .filter_map(|s| spec::parse_vnic(s).ok())
                    .collect(),
                vhbas: vhbas
                    .iter()
                    .filter_map(|s| spec::parse_vhba(s).ok())
                    .collect(),
                preferred_unit: Some(unit.into()),
                failback: failback as i32,
                revision: 0,
                created_revision: 0,
            }
        };
    let profiles = vec![
        profile(
            "web-01",
            "rack1-srv01",
            &[
                "eth0:net=prod:vlan=100:pool=demo-mac",
                "eth1:net=backup:pool=demo-mac",
            ],
            &["fc0:fabric=a:pool=demo-wwn", "fc1:fabric=b:pool=demo-wwn"],
            "unit-a",
            pb::FailbackPolicy::Auto,
        ),
        profile(
            "web-02",
            "rack1-srv02",
            &[
                "eth0:net=prod:vlan=100:pool=demo-mac",
                "eth1:net=backup:pool=demo-mac",
            ],
            &["fc0:fabric=a:pool=demo-wwn", "fc1:fabric=b:pool=demo-wwn"],
            "unit-b",
            pb::FailbackPolicy::Auto,
        ),
        profile(
            "db-01",
            "rack1-srv03",
            &["eth0:net=prod:vlan=200:mac=02:00:00:00:10:01"],
            &["fc0:fabric=a:wwpn=20:00:00:25:b5:00:10:01:wwnn=20:00:00:25:b5:01:10:01"],
            "unit-a",
            pb::FailbackPolicy::Manual,
        ),
    ];
    (pools, profiles)
}

/// Creates the sample data. A leader change right after the first election is normal, so
/// UNAVAILABLE is retried until a deadline; ALREADY_EXISTS after such a retry means the first
/// attempt went through.
async fn seed(session: &mut session::Session) -> Result<(), CliError> {
    let deadline = Instant::now() + SEED_DEADLINE;
    let (pools, profiles) = sample_data();
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
        Err(error) if is_transient(&error) && Instant::now() < deadline => {
            tokio::time::sleep(LEADER_POLL_INTERVAL).await;
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// Failures that a new leader settling in explains.
fn is_transient(error: &CliError) -> bool {
    matches!(
        error,
        CliError::Unreachable { .. }
            | CliError::Rejected {
                code: tonic::Code::Unavailable | tonic::Code::DeadlineExceeded,
                ..
            }
    )
}

/// Runs until SIGINT or SIGTERM. A node that dies meanwhile is reported and the rest keep going
/// (with two of three the cluster still has a quorum, which is worth seeing).
async fn wait_for_stop(running: &mut [RunningNode]) -> Result<(), CliError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let alive: Vec<&mut RunningNode> = running
            .iter_mut()
            .filter(|node| node.exited.is_none())
            .collect();
        let mut exits = Vec::new();
        for node in alive {
            let name = node.plan.name;
            let log = node.log.clone();
            exits.push(Box::pin(async move {
                let status = node.child.wait().await;
                if let Ok(status) = &status {
                    node.exited = Some(*status);
                }
                (name, log, status)
            }));
        }
        let any_exit = async {
            if exits.is_empty() {
                std::future::pending::<()>().await;
            }
            let ((name, log, status), _, _) = futures::future::select_all(exits).await;
            match status {
                Ok(status) => eprintln!(
                    "{name} exited ({status}); see {}. The others keep running.",
                    log.display()
                ),
                Err(error) => eprintln!("waiting for {name}: {error}"),
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

/// SIGTERM to every live node, then SIGKILL to any still running after STOP_DEADLINE.
async fn stop_nodes(running: &mut [RunningNode]) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for node in running.iter_mut() {
        if node.exited.is_some() {
            continue;
        }
        if let Some(pid) = node.child.id().and_then(|id| i32::try_from(id).ok()) {
            if let Err(error) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
                eprintln!("SIGTERM to {}: {error}", node.plan.name);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    for node in running.iter_mut() {
        if node.exited.is_some() {
            continue;
        }
        match tokio::time::timeout_at(deadline, node.child.wait()).await {
            Ok(Ok(status)) => node.exited = Some(status),
            Ok(Err(error)) => eprintln!("waiting for {}: {error}", node.plan.name),
            Err(_elapsed) => {
                eprintln!(
                    "{} did not stop within {STOP_DEADLINE:?}; killing it",
                    node.plan.name
                );
                if let Err(error) = node.child.kill().await {
                    eprintln!("SIGKILL to {}: {error}", node.plan.name);
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
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, "unit-a", "unit", "127.0.0.1:7001", "127.0.0.1:7101"),
                (2, "unit-b", "unit", "127.0.0.1:7002", "127.0.0.1:7102"),
                (3, "witness", "witness", "127.0.0.1:7003", "127.0.0.1:7103"),
            ]
        );
        assert_eq!(
            initial_cluster(&nodes),
            "1=unit-a@127.0.0.1:7101,2=unit-b@127.0.0.1:7102,3=witness@127.0.0.1:7103"
        );
    }

    #[test]
    fn plan_refuses_ports_past_65535() {
        assert!(plan(65_433).unwrap_err().contains("above 65535"));
        assert!(plan(65_432).is_ok());
    }

    #[test]
    fn vnetd_gets_exactly_the_agreed_flags() {
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
    fn vnetd_is_found_explicitly_or_beside_vnetctl() {
        let dir = tempfile::tempdir().unwrap();
        let error = locate_vnetd(None, Some(dir.path())).unwrap_err();
        assert!(error.contains("cargo build -p vnet-node"), "{error}");
        let missing = dir.path().join("nope");
        let error = locate_vnetd(Some(&missing), Some(dir.path())).unwrap_err();
        assert!(error.contains("VNETD_BIN"), "{error}");

        let beside = dir.path().join("vnetd");
        std::fs::write(&beside, b"").unwrap();
        assert_eq!(locate_vnetd(None, Some(dir.path())).unwrap(), beside);
        let other = dir.path().join("custom-vnetd");
        std::fs::write(&other, b"").unwrap();
        assert_eq!(locate_vnetd(Some(&other), Some(dir.path())).unwrap(), other);
    }

    #[test]
    fn a_taken_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = listener.local_addr().unwrap().to_string();
        let nodes = vec![NodePlan {
            id: 1,
            name: "unit-a",
            role: "unit",
            api_addr: taken.clone(),
            peer_addr: "127.0.0.1:0".into(),
        }];
        let error = check_ports_free(&nodes, 7000).unwrap_err().to_string();
        assert!(
            error.contains(&taken) && error.contains("--base-port"),
            "{error}"
        );
    }

    #[test]
    fn sample_data_is_valid_and_complete() {
        let (pools, profiles) = sample_data();
        assert_eq!(pools.len(), 2);
        assert_eq!(profiles.len(), 3);
        for profile in &profiles {
            assert_eq!(spec::check_profile(profile), Ok(()), "{}", profile.name);
        }
        let functions: usize = profiles.iter().map(|p| p.vnics.len() + p.vhbas.len()).sum();
        // Catches a spec that failed to parse and was dropped by `filter_map`.
        assert_eq!(functions, 4 + 4 + 2);
    }
}
