//! `vnetd`: parse configuration, set up logging, serve until SIGINT or SIGTERM.

use clap::Parser;
use vnet_node::{config::Args, run, telemetry, Listeners};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match serve().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnetd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let config = Args::parse().resolve()?;
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
    telemetry.shutdown();
    served
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
