//! `vnet-switchd`: parse flags, set up logging, serve the simulated switch until SIGINT or
//! SIGTERM. Everything else is in the `fabric_agent` library (`server::run`).

use anyhow::Context;
use clap::Parser;
use fabric_agent::config::{Args, DataPlaneArgs};
use fabric_agent::server::{init_logging, run};

fn main() -> std::process::ExitCode {
    // A panic anywhere (the watchdog thread included) ends the process: a switch whose model or
    // watchdog is broken must stop presenting, and a dead switch process presents nothing.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vnet-switchd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnet-switchd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// vnet-switchd — a vNet switch: host ports, Ethernet and FC adapter ports, a watchdog that
/// fences by itself, and a journal of everything it presents.
///
/// The switch serves the vnet.switch.v1 API to the unit's vnetd. It programs nothing without a
/// live lease (an armed watchdog with a future deadline), clears every host port by itself when
/// that deadline passes, and writes every change to the journal before answering. A restart
/// starts with every port clear, like hardware after a reset. With --backend sim (the default)
/// presenting is recorded only; with --backend linux each vNIC also appears as a real interface
/// with the profile's MAC in the server's network namespace, and the switch's death removes
/// them all. Every flag can also be set by the VNET_SWITCH_* environment variable shown.
#[derive(Debug, Parser)]
#[command(
    name = "vnet-switchd",
    version,
    about,
    long_about,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    switch: Args,
    #[command(flatten)]
    data_plane: DataPlaneArgs,
}

async fn serve() -> anyhow::Result<()> {
    vnet_tls::install_crypto_provider();
    let cli = Cli::parse();
    let mut config = cli.switch.resolve()?;
    config.data_plane = cli.data_plane.resolve(&config.spec.cabling)?;
    init_logging(&config.log_level)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", config.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --metrics-listen {addr}"))?,
        ),
        None => None,
    };
    run(config, listener, metrics_listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
