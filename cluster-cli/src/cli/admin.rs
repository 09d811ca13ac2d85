//! The subcommands that administer the cluster rather than its profiles: certificates, endpoints,
//! members, snapshots, alarms, roles, the audit log and leadership.

use super::*;

/// Where `vnetctl cert` writes, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct CertOptions {
    /// Directory of the certificates: holds ca.crt (and by default ca.key).
    #[arg(long, env = "VNET_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: PathBuf,
    /// The CA's private key, if not in --certs-dir.
    #[arg(long, value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
    /// How long the certificate is valid, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub lifetime_days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// A new CA: ca.crt and ca.key.
    ///
    /// Example: vnetctl cert create-ca --certs-dir certs
    CreateCa {
        #[command(flatten)]
        options: CertOptions,
    },
    /// A node certificate (server and client authentication) with SAN URI vnet://node/N and a
    /// SAN for every --host: node-N.crt and node-N.key.
    ///
    /// Example: vnetctl cert create-node --certs-dir certs --node-id 1 --host 10.0.0.1,127.0.0.1
    CreateNode {
        #[command(flatten)]
        options: CertOptions,
        /// The node's member id (vnetd --id).
        #[arg(long)]
        node_id: u64,
        /// Every host name and IP address the node (and its switch) is reached by, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        host: Vec<String>,
    },
    /// A client certificate (client authentication) whose Common Name is NAME, the principal:
    /// client-NAME.crt and client-NAME.key.
    ///
    /// Example: vnetctl cert create-client --certs-dir certs --name admin
    CreateClient {
        #[command(flatten)]
        options: CertOptions,
        /// The principal's name, e.g. admin ([A-Za-z0-9._@-], at most 64 characters).
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// The standard gRPC health check of every endpoint, all at once.
    ///
    /// Example: vnetctl endpoint health --endpoints 10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001
    ///
    /// An endpoint is healthy when its node knows a leader and has applied up to it (the
    /// grpc.health.v1 service reports SERVING; grpc_health_probe sees the same). Prints one row
    /// per endpoint with the time the check took and, when not healthy, why. Exits 1 if any
    /// endpoint is unhealthy or does not answer within --timeout.
    #[command(verbatim_doc_comment)]
    Health,
    /// Each endpoint's own view: id, name, version, data directory size, leader, term, commit
    /// and applied index, revision.
    ///
    /// Example: vnetctl endpoint status -o json
    ///
    /// Read locally on each node (not through the leader), so it works without a quorum and
    /// shows how far each node lags. Exits 1 if any endpoint does not answer within --timeout.
    #[command(verbatim_doc_comment)]
    Status,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members (the member table of `status`).
    ///
    /// Example: vnetctl member list -o json
    List,
    /// Add a node as a learner; it starts catching up on the log at once.
    ///
    /// Example: vnetctl member add --id 4 --name unit-c --peer-addr 10.0.0.4:7101 --api-addr 10.0.0.4:7001
    ///
    /// Start the new vnetd first, then add it, wait until `member list` shows its matched index
    /// close to the leader's, then `member promote 4`.
    Add(MemberAddArgs),
    /// Turn a caught-up learner into a voter.
    ///
    /// Example: vnetctl member promote 4
    Promote {
        /// Id of the learner.
        id: u64,
    },
    /// Remove a member from the cluster. Its id can never be used again.
    ///
    /// Example: vnetctl member remove 4
    Remove {
        /// Id of the member.
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct MemberAddArgs {
    /// Raft id of the new node: non-zero and never used before in this cluster.
    #[arg(long)]
    pub id: u64,
    /// Unique name, e.g. unit-c.
    #[arg(long)]
    pub name: String,
    /// host:port of the new node's peer (Raft) listener.
    #[arg(long)]
    pub peer_addr: String,
    /// host:port of the new node's public API listener (required by the server).
    #[arg(long)]
    pub api_addr: String,
    /// What the node is.
    #[arg(long, value_enum, default_value = "unit")]
    pub role: RoleArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Unit,
    Witness,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a consistent backup from the cluster into FILE: it holds every write acknowledged
    /// before the command began. Written to a temporary file, fsynced, then renamed into place.
    ///
    /// Example: vnetctl snapshot save /var/backups/vnet-$(date +%F).snap
    ///
    /// Restore it into a new cluster with `vnetd restore --snapshot FILE ...` on each new member.
    Save {
        /// Where to write the backup.
        file: std::path::PathBuf,
    },
    /// Print a backup's revision, counts of profiles, pools and members, its size, and whether
    /// its checksum verifies (exit 4 if it does not). Reads only the file.
    ///
    /// Example: vnetctl snapshot status /var/backups/vnet-2026-12-06.snap
    Status {
        /// The backup file.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// List the raised alarms.
    ///
    /// Example: vnetctl alarm list
    List,
    /// Disarm alarms once their cause is gone (refused while a member is still past its quota).
    ///
    /// Example: vnetctl alarm disarm
    Disarm {
        /// Only this member's alarms (default: every member's).
        #[arg(long)]
        member: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Every principal with its role.
    ///
    /// Example: vnetctl role list
    List,
    /// Give a principal a role, replacing the one it had.
    ///
    /// Example: vnetctl role grant alice operator
    Grant {
        /// The principal: a client certificate's Common Name.
        #[arg(value_name = "PRINCIPAL")]
        principal: String,
        #[arg(value_name = "ROLE", value_enum)]
        role: AccessRoleArg,
    },
    /// Take a principal's role away (refused for the only admin).
    ///
    /// Example: vnetctl role revoke alice
    Revoke {
        #[arg(value_name = "PRINCIPAL")]
        principal: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessRoleArg {
    Viewer,
    Operator,
    Admin,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only records this recent, e.g. 10m, 2h.
    #[arg(long, value_parser = spec::parse_duration)]
    pub since: Option<Duration>,
    /// Only this principal's records.
    #[arg(long)]
    pub principal: Option<String>,
    /// At most this many records from each node, the newest (0: the server's most, 2000).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to another voter and wait until it leads.
    ///
    /// Example: vnetctl leader transfer --to 2
    Transfer {
        /// Id of the voter that should lead.
        #[arg(long)]
        to: u64,
    },
}
