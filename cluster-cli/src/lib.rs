//! `vnetctl`, the operator CLI of vnet-ha. It speaks only the public gRPC API (`vnet.v1`).
//!
//! Layout, from the outside in:
//!
//! - [`cli`]: the command line (clap), with the help texts, exit codes and JSON shapes.
//! - [`run`] dispatches a parsed command to its module: [`cluster`] (status, members, leader),
//!   [`moves`] (drain, undrain, failover), [`profile`], [`pool`], [`watch`], [`demo`] (a
//!   local three-node cluster with simulated switches), [`bench`] and [`endpoint`] (each
//!   endpoint asked on its own).
//! - [`session`] opens gRPC channels; [`retry`] decides which endpoint a request goes to
//!   and when to try the next one (pure policy, tested without a server).
//! - [`spec`] parses and checks what the operator typed (endpoints, `--vnic`/`--vhba` specs,
//!   durations) before anything is sent.
//! - [`view`] holds the JSON shapes and their conversions from the wire types; [`output`]
//!   prints them as tables or JSON.
//! - [`error`] maps every failure to an exit code.

pub mod access;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod demo;
pub mod endpoint;
pub mod error;
pub mod moves;
pub mod output;
pub mod pool;
pub mod profile;
pub mod retry;
pub mod session;
pub mod snapshot;
pub mod spec;
pub mod view;
pub mod watch;

use std::io::Write;

use vnet_proto::vnet::v1 as pb;

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::output::{render, Format, Render};

/// What every command needs to know besides its own arguments.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub format: Format,
    pub consistency: pb::ReadConsistency,
}

/// Runs one parsed command line to its end.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let context = Context {
        format: cli.output,
        consistency: if cli.local {
            pb::ReadConsistency::Local
        } else {
            pb::ReadConsistency::Linearizable
        },
    };
    // Commands that talk to the cluster through the endpoint policy open a session; the demo
    // starts its own cluster, `endpoint` asks each endpoint on its own, `snapshot status`
    // reads a local file and `cert` writes local files.
    let tls = || {
        session::tls_from_flags(
            cli.cacert.as_deref(),
            cli.cert.as_deref(),
            cli.key.as_deref(),
        )
        .map_err(CliError::usage)
    };
    let session = || Ok::<_, CliError>(session::open(&cli.endpoints, cli.timeout, tls()?));
    match cli.command {
        Command::Demo(args) => demo::run(&context, args, cli.timeout).await,
        Command::Cert(command) => cert(command),
        Command::Endpoint(command) => {
            endpoint::run(&context, &cli.endpoints, cli.timeout, tls()?, command).await
        }
        Command::Snapshot(cli::SnapshotCommand::Status { file }) => {
            snapshot::status(&context, &file)
        }
        Command::Snapshot(cli::SnapshotCommand::Save { file }) => {
            snapshot::save(&mut session()?, &context, &file).await
        }
        Command::Status => cluster::status(&mut session()?, &context).await,
        Command::Member(command) => cluster::member(&mut session()?, &context, command).await,
        Command::Leader(command) => cluster::leader(&mut session()?, &context, command).await,
        Command::Alarm(command) => cluster::alarm(&mut session()?, &context, command).await,
        Command::Role(command) => access::role(&mut session()?, &context, command).await,
        Command::Audit(args) => {
            access::audit(&cli.endpoints, cli.timeout, tls()?, &context, args).await
        }
        Command::Drain(args) => moves::drain(&mut session()?, &context, args).await,
        Command::Undrain { unit } => moves::undrain(&mut session()?, &context, unit).await,
        Command::Failover(args) => moves::failover(&mut session()?, &context, args).await,
        Command::Profile(command) => profile::run(&mut session()?, &context, command).await,
        Command::Pool(command) => pool::run(&mut session()?, &context, command).await,
        Command::Watch(args) => watch::run(&mut session()?, &context, args).await,
        Command::Bench(args) => bench::run(session()?, &context, args).await,
    }
}

/// `vnetctl cert ...`: writes the files and says what it wrote.
fn cert(command: cli::CertCommand) -> Result<(), CliError> {
    use vnet_tls::certs;
    let (written, what) = match command {
        cli::CertCommand::CreateCa { options } => (
            certs::create_ca(&options.certs_dir, options.lifetime_days, options.overwrite),
            "CA".to_string(),
        ),
        cli::CertCommand::CreateNode {
            options,
            node_id,
            host,
        } => (
            certs::create_node(
                &options.certs_dir,
                options.ca_key.as_deref(),
                node_id,
                &host,
                options.lifetime_days,
                options.overwrite,
            ),
            format!("node {node_id}"),
        ),
        cli::CertCommand::CreateClient { options, name } => (
            certs::create_client(
                &options.certs_dir,
                options.ca_key.as_deref(),
                &name,
                options.lifetime_days,
                options.overwrite,
            ),
            format!("client {name}"),
        ),
    };
    let written = written.map_err(CliError::usage)?;
    write_stdout(&format!(
        "{what}: certificate {}\n{what}: key {} (mode 0600)\n",
        written.cert.display(),
        written.key.display()
    ))
}

/// Prints one result on stdout in the chosen format.
pub fn emit(context: &Context, value: &impl Render) -> Result<(), CliError> {
    write_stdout(&render(context.format, value))
}

/// Writes to stdout without panicking when it is closed (`vnetctl watch | head`).
pub fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(CliError::from)
}

/// Prints a failure on stderr: plain text, or JSON in `-o json` mode. Returns the exit code.
pub fn report(format: Format, error: &CliError) -> u8 {
    if is_stdout_closed(error) {
        // The reader went away (e.g. `| head`): that is how such a pipeline ends, not a failure.
        return error::EXIT_OK;
    }
    let text = match format {
        Format::Table => format!("error: {error}\n"),
        Format::Json => output::json_line(&error.to_json()) + "\n",
    };
    // Nothing sensible is left to do if stderr is gone too.
    let _ = std::io::stderr().write_all(text.as_bytes());
    error.exit_code()
}

fn is_stdout_closed(error: &CliError) -> bool {
    match error {
        CliError::Local(error) => error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe),
        _ => false,
    }
}
