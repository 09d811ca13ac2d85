//! `vnetctl`: parses the command line and hands it to [`cluster_cli::run`]; the exit code
//! comes from the error kind (see `vnetctl --help`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    vnet_tls::install_crypto_provider();
    // clap prints usage errors itself and exits with 2, help and version with 0.
    let cli = cluster_cli::cli::Cli::parse();
    let format = cli.output;
    match cluster_cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => ExitCode::from(cluster_cli::report(format, &error)),
    }
}
