//! `vnetd`: parse configuration, set up logging, serve until SIGINT or SIGTERM. `vnetd restore`
//! and `vnetd recover` are offline operations on a data directory (`vnet_node::offline`).

use std::path::PathBuf;

use std::time::Duration;

use clap::Parser;
use vnet_node::{config::Args, run, telemetry, Listeners};

/// Every request allocates dozens of small, short-lived buffers (h2 frames, protobuf and JSON
/// strings, model values) across worker threads; under write load glibc's allocator took about
/// a seventh of the node's CPU. With mimalloc, 64 writers spread over a three-node cluster on one
/// two-core machine cost 283 µs of node CPU per write instead of 337, and went at 5,458 writes/s
/// instead of 4,647 (means of five alternating runs of `vnetctl bench --writes`). Transparent
/// huge pages are off (`no_thp`): with them every thread's heap became resident in 2 MiB pages,
/// and a node at 10,000 profiles held 107 MiB instead of 48–52 (`cargo bench --bench scale`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Offline operations on a data directory; run them while no vnetd serves it.
#[derive(Debug, Parser)]
#[command(name = "vnetd")]
enum Offline {
    /// Build a new member's data directory from a backup (`vnetctl snapshot save`), for a new
    /// cluster with a new cluster id: run it once per new member, with the same --snapshot,
    /// --initial-cluster and --cluster-token, then start each vnetd with that --id, --name and
    /// --initial-cluster.
    Restore {
        /// The backup file.
        #[arg(long)]
        snapshot: PathBuf,
        /// The new member's data directory; must be empty or absent.
        #[arg(long)]
        data_dir: PathBuf,
        /// Every member of the new cluster, id=name@host:port,...
        #[arg(long)]
        initial_cluster: String,
        /// Which member of --initial-cluster this directory is for.
        #[arg(long)]
        name: String,
        /// Mixed into the new cluster id: restoring the same backup into the same members twice
        /// gives two distinct clusters only if their tokens differ.
        #[arg(long, default_value = "")]
        cluster_token: String,
    },
    /// Make this surviving voter the only voter of its cluster, from its own data, after losing
    /// the quorum for good. Refused unless every other member is named in --confirm-lost, and
    /// if any of them answers. The lost ids are refused from then on: they come back only as
    /// new members with new ids.
    Recover {
        /// This node's data directory (vnetd must not be running on it).
        #[arg(long)]
        data_dir: PathBuf,
        /// Every other member, by id, each confirmed powered off or cut off for good.
        #[arg(long, value_delimiter = ',', required = true)]
        confirm_lost: Vec<u64>,
        /// Who confirmed it, recorded as the actor of the recovery in the history.
        #[arg(long, env = "USER", default_value = "operator")]
        operator: String,
        /// How long to wait, once the lost members are found silent, before the survivor may
        /// present again: at least the cluster's lease_ttl_ms + drift_margin_ms (the default is
        /// that of vnetd's defaults), so that any lease a lost unit still held has ended.
        #[arg(long, default_value_t = vnet_node::config::DEFAULT_LEASE_TTL_MS
            + vnet_node::config::DEFAULT_DRIFT_MARGIN_MS,
            value_parser = clap::value_parser!(u64).range(0..=600_000))]
        lease_wait_ms: u64,
        /// The cluster CA, when the cluster speaks TLS: the lost members are probed over TLS
        /// (a plaintext probe of a TLS member would find it silent while it runs).
        #[arg(long, env = "VNET_CACERT", requires_all = ["cert", "key"])]
        cacert: Option<PathBuf>,
        /// This node's certificate, for the probes.
        #[arg(long, env = "VNET_CERT", requires_all = ["cacert", "key"])]
        cert: Option<PathBuf>,
        /// This node's key, for the probes.
        #[arg(long, env = "VNET_KEY", requires_all = ["cacert", "cert"])]
        key: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    vnet_tls::install_crypto_provider();
    let offline = std::env::args_os()
        .nth(1)
        .is_some_and(|first| first == "restore" || first == "recover");
    let result = if offline {
        let command = Offline::parse();
        runtime(1).and_then(|runtime| runtime.block_on(run_offline(command)))
    } else {
        Args::parse()
            .resolve()
            .map_err(anyhow::Error::from)
            .and_then(|config| runtime(config.worker_threads)?.block_on(serve(config)))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnetd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_offline(command: Offline) -> anyhow::Result<()> {
    match command {
        Offline::Restore {
            snapshot,
            data_dir,
            initial_cluster,
            name,
            cluster_token,
        } => {
            let seeded = vnet_node::offline::restore(
                &snapshot,
                &data_dir,
                &initial_cluster,
                &name,
                &cluster_token,
            )?;
            println!("restored {seeded}");
            println!(
                "start it with: vnetd --id {} --name {name} --data-dir {} --initial-cluster \
                 {initial_cluster:?} (and this member's other flags)",
                seeded.node_id,
                data_dir.display()
            );
        }
        Offline::Recover {
            data_dir,
            confirm_lost,
            operator,
            lease_wait_ms,
            cacert,
            cert,
            key,
        } => {
            let tls = match (cacert, cert, key) {
                (Some(ca), Some(cert), Some(key)) => Some(vnet_tls::TlsFiles { ca, cert, key }),
                _ => None,
            };
            vnet_model::name::validate_name("operator", &operator)?;
            let lost = confirm_lost.into_iter().collect();
            let lease_wait = std::time::Duration::from_millis(lease_wait_ms);
            let seeded =
                vnet_node::offline::recover(&data_dir, &lost, &operator, lease_wait, tls).await?;
            println!("recovered {seeded}");
            println!(
                "node {} is now the only voter; start vnetd on it as before. Lost ids are \
                 refused from now on: bring replacements in with new ids (`vnetctl member add`)",
                seeded.node_id
            );
        }
    }
    Ok(())
}

/// The async runtime: on this thread alone for one thread (see `Args::worker_threads`), else
/// a pool of `threads` workers.
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
}

async fn serve(config: vnet_node::config::Config) -> anyhow::Result<()> {
    let traces = config
        .otlp_endpoint
        .as_ref()
        .map(|endpoint| telemetry::TraceExport {
            endpoint: endpoint.clone(),
            instance: config.name.clone(),
        });
    let telemetry = telemetry::init(&config.log_level, config.log_format, traces.as_ref())?;
    let listeners = Listeners::bind(&config).await?;
    let served = run(config, listeners, shutdown_signal()).await;
    // The flush waits on the exporter's connection, which this runtime drives: wait for it off
    // the runtime's threads, or with one thread nothing would drive it.
    if let Err(e) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
        eprintln!("vnetd: traces not flushed at exit: {e}");
    }
    served
}

/// How long a stop may take, from the first signal, before the process exits regardless. Every
/// wait of `run`'s shutdown is bounded well within it; this guards against one that is not.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            exit_if_stuck();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    exit_if_stuck();
    // A second signal stops the process at once.
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("vnetd: a second signal; exiting at once");
        std::process::exit(1);
    });
}

/// Exits the process if it is still running [`STOP_DEADLINE`] from now. A plain thread, so that
/// it fires even if every runtime worker is stuck.
fn exit_if_stuck() {
    std::thread::spawn(|| {
        std::thread::sleep(STOP_DEADLINE);
        eprintln!("vnetd: did not stop within {STOP_DEADLINE:?} of the signal; exiting");
        std::process::exit(1);
    });
}
