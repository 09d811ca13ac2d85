//! The command line: every flag, subcommand and help text of `vnetctl`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;
use crate::spec::{self, Endpoints};
use vnet_proto::vnet::v1::{Vhba, Vnic};

mod admin;

pub use admin::*;

pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

const TOP_HELP: &str = "\
EXIT CODES:
  0  success
  1  a server rejected the request; its gRPC code and message are printed
     (e.g. NOT_FOUND, ABORTED on a revision mismatch, UNAVAILABLE when no leader is known);
     or `drain --wait` gave up at its deadline (the drain itself goes on)
  2  usage error: bad flags or a bad --file; nothing was sent
  3  no endpoint reachable (every endpoint refused or timed out)
  4  local failure (I/O error, or `demo` could not start vnetd or vnet-switchd)

ENDPOINTS:
  Requests go to the first endpoint that answers; on a connection failure or UNAVAILABLE the
  next one is tried, starting from the one that answered last. A read that times out is tried
  on the next endpoint too; a write that times out is not (it may have been applied), and fails
  with DEADLINE_EXCEEDED.

JSON OUTPUT (-o json):
  One pretty-printed JSON document on stdout per command (JSON lines for `watch`). Field names
  follow the proto (snake_case); every field is always present, absent values are null, enums
  are lower-case words. Errors go to stderr as
  {\"error\": {\"kind\": \"rejected|usage|unreachable|local|timeout\", \"code\": \"NOT_FOUND\",
  \"message\": \"...\", \"endpoint\": \"...\"}, \"exit_code\": 1} (\"code\" and \"endpoint\" only with
  \"rejected\"; \"timeout\" is `drain --wait` giving up, exit code 1).
  profile get/create/update: {name, server, vnics: [{name, mac, network, vlan, pool}],
                              vhbas: [{name, wwpn, wwnn, fabric, pool}], preferred_unit,
                              failback: auto|manual, revision, created_revision}
  profile list:   {profiles: [profile...], revision, truncated}
  profile delete, pool delete: {deleted, revision}
  pool create:    {name, kind: mac|wwn, first, last, revision}
  pool list:      {pools: [pool...], revision}
  pool usage:     {usages: [{name, kind, size, used, near_exhaustion}], revision}
  status:         {leader_id, leader_name, term, commit_index, applied_index, revision,
                   responder_id, members: [member...], units: [unit...],
                   placements: [placement...]}
  unit:           {id, name, lease: healthy|expired|unknown, lease_age_ms, draining,
                   presented: [profile name...], load, capacity}
                   (lease is the leader's view: unknown when a non-leader answered)
  placement:      {profile, desired_unit, presented_unit,
                   state: presented|programming|moving|unplaced|failed_over, reason,
                   failed_over_from, moving_from, moving_to, revision}
                   (unit names are null when there is none; desired_unit is null during a
                   planned move, moving_from/moving_to are set only then)
  member list:    {members: [member...], revision}
  member:         {id, name, role: unit|witness, api_addr, peer_addr, membership: voter|learner,
                   raft_state: leader|follower|candidate|learner|unknown|offline,
                   last_contact_ms, matched_index, cabling: {server: port}, capacity}
  member add/promote: {member, revision}    member remove: {removed, revision}
  leader transfer: {leader_id, term}
  drain:          {unit, revision, profiles: [name...], drained, waited_ms}
                   (profiles: those on the unit when the drain began; drained is true and
                   waited_ms set only when --wait saw the unit empty)
  undrain:        {unit, revision}
  failover:       {profile, from_unit, to_unit, revision, profiles: [name...]}
                   (the request's names, null when not given; profiles: the moves begun)
  watch (per line): {revision, actor, change, ...} where change and the other keys are
                    profile_put {profile} | profile_deleted {name} | pool_put {pool} |
                    pool_deleted {name} | member_put {member} | member_removed {id} |
                    placements {placements: [placement...]} (presented_unit always null) |
                    presented {unit, profiles: [name...]} | drain {unit, draining}
  bench:          {writes: [level...], reads: [level...]}, level = {concurrency, duration_ms,
                   ok, errors, ops_per_s, p50_ms, p99_ms, max_ms, first_error}

EXAMPLES:
  vnetctl demo                                  # a local 3-node cluster to try things on
  vnetctl status
  vnetctl profile list -o json
  vnetctl drain unit-a --wait                   # move every profile off unit-a, with progress
  VNET_ENDPOINTS=10.0.0.1:7001,10.0.0.2:7001 vnetctl watch";

/// vnetctl: operate a vnet-ha cluster through its public gRPC API.
#[derive(Debug, Parser)]
#[command(name = "vnetctl", version, after_long_help = TOP_HELP)]
pub struct Cli {
    /// Comma-separated host:port list of vnetd API endpoints, tried in order.
    #[arg(
        long,
        global = true,
        env = "VNET_ENDPOINTS",
        default_value = DEFAULT_ENDPOINTS,
        value_parser = spec::parse_endpoints,
    )]
    pub endpoints: Endpoints,

    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "table"
    )]
    pub output: Format,

    /// Deadline for each request (and for each connection attempt), e.g. 500ms, 5s, 1m.
    #[arg(long, global = true, default_value = "5s", value_parser = spec::parse_duration)]
    pub timeout: Duration,

    /// Serve reads from the node asked without confirming with the leader: answers even without
    /// a quorum, but may be stale (the printed revision says how stale).
    #[arg(long, global = true)]
    pub local: bool,

    /// The cluster CA certificate (PEM): connect over TLS and verify the servers against it.
    #[arg(long, global = true, env = "VNET_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// This client's certificate (PEM), signed by the cluster CA: its Common Name is who the
    /// cluster knows you as (`vnetctl cert create-client`). Needs --cacert and --key.
    #[arg(long, global = true, env = "VNET_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// This client's private key (PEM).
    #[arg(long, global = true, env = "VNET_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the leader, Raft indexes and every member.
    ///
    /// Example: vnetctl status
    ///
    /// With --local the node asked answers from its own view, which is how to inspect a node
    /// that is cut off from the leader: vnetctl status --local --endpoints 127.0.0.1:7003
    Status,

    /// Ask every endpoint on its own: is it healthy, and what does it see.
    #[command(subcommand)]
    Endpoint(EndpointCommand),

    /// Create a CA, node and client certificates for mutual TLS (for operators without a PKI).
    ///
    /// Example:
    ///   vnetctl cert create-ca --certs-dir certs
    ///   vnetctl cert create-node --certs-dir certs --node-id 1 --host 10.0.0.1,unit-a.example
    ///   vnetctl cert create-client --certs-dir certs --name admin
    ///
    /// Files: ca.crt/ca.key, node-N.crt/node-N.key, client-NAME.crt/client-NAME.key in
    /// --certs-dir; keys are written 0600. Keep ca.key off the nodes (--ca-key reads it from
    /// elsewhere). Existing files are kept unless --overwrite.
    #[command(subcommand, verbatim_doc_comment)]
    Cert(CertCommand),

    /// List, add, promote and remove cluster members.
    #[command(subcommand)]
    Member(MemberCommand),

    /// Move Raft leadership.
    #[command(subcommand)]
    Leader(LeaderCommand),

    /// Back up the whole replicated state to a file, or check a backup file.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),

    /// List and disarm alarms (NOSPACE: a member's store is past its --quota-bytes, and writes
    /// that add data are refused).
    #[command(subcommand)]
    Alarm(AlarmCommand),

    /// Grant, revoke and list the principals' roles (viewer, operator, admin).
    ///
    /// A principal is the identity of a client certificate (its Common Name). viewer reads,
    /// watches and sees status; operator also changes profiles and drains, undrains and fails
    /// over; admin also changes pools, members and leadership, roles and alarms, saves backups
    /// and reads the audit log. The cluster always keeps one admin.
    #[command(subcommand)]
    Role(RoleCommand),

    /// Show the audit log: every write and every refused call, as each node recorded it.
    ///
    /// Examples:
    ///   vnetctl audit --since 1h
    ///   vnetctl audit --principal operator -o json
    ///
    /// Each node keeps the calls made to it, so every endpoint in --endpoints is asked and the
    /// records are merged by time; each names the node that served it.
    #[command(verbatim_doc_comment)]
    Audit(AuditArgs),

    /// Create, read, update and delete server profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),

    /// Create, list and delete identity pools, and see how full they are.
    #[command(subcommand)]
    Pool(PoolCommand),

    /// Move every profile off a unit and keep it empty until `undrain`.
    ///
    /// Examples:
    ///   vnetctl drain unit-a
    ///   vnetctl drain unit-a --wait --timeout-wait 2m
    ///
    /// Prints the profiles that will move. Each one moves break before make: the unit stops
    /// presenting it and reports so before another unit programs it. With --wait, vnetctl polls
    /// `status` and prints a progress line whenever it changes, until the unit presents nothing
    /// and no profile is placed on or moving off it; if --timeout-wait passes first it exits 1,
    /// naming the profiles still on the unit and why (the drain itself goes on).
    #[command(verbatim_doc_comment)]
    Drain(DrainArgs),

    /// End a drain: the unit may be given profiles again.
    ///
    /// Example: vnetctl undrain unit-a
    ///
    /// Profiles with failback auto that prefer the unit move back after the failback hold-down
    /// time; others stay where they are until moved with `failover`.
    Undrain {
        /// Name of the unit.
        #[arg(value_name = "UNIT")]
        unit: String,
    },

    /// Planned move of one profile to a unit, or of every profile off a unit.
    ///
    /// Examples:
    ///   vnetctl failover web-01 --to unit-b      # one profile, to a chosen unit
    ///   vnetctl failover --from unit-a --to unit-b
    ///   vnetctl failover --from unit-a           # each profile to a unit the cluster picks
    ///
    /// Give exactly one of PROFILE or --from. --to is required with PROFILE. Moves are break
    /// before make, like a drain, but the source unit is not marked draining, so profiles may
    /// be placed on it again (failback auto brings back those that prefer it). Prints the
    /// profiles that started moving; follow them in `vnetctl status`. Refused with
    /// FAILED_PRECONDITION when the target is not cabled to the profile's server, is draining,
    /// is not healthy or has no room (the message says which).
    #[command(verbatim_doc_comment)]
    Failover(FailoverArgs),

    /// Print every change as it is applied, one line each, until Ctrl-C.
    ///
    /// Example: vnetctl watch --from 1 -o json
    ///
    /// Each line carries the revision of the change and who made it. If the node serving the
    /// stream goes away, vnetctl reconnects to the next endpoint and resumes after the last
    /// revision printed, so no change is printed twice or skipped. A --from older than the
    /// history the cluster keeps fails with OUT_OF_RANGE, naming the oldest revision available.
    Watch(WatchArgs),

    /// Run a local three-node cluster (unit-a, unit-b, witness) with sample data, until Ctrl-C.
    ///
    /// Example: vnetctl demo --base-port 7000
    ///
    /// Starts on loopback, with temporary data directories: for each unit a simulated switch
    /// (vnet-switchd, ports BASE+201 and BASE+202, host ports 1..6 cabled to servers
    /// rack1-srv01..06) and then its vnetd; then the witness's vnetd. Waits for a leader,
    /// creates a MAC pool, a WWN pool and six profiles (one per server, preferred units
    /// alternating), waits until every profile is presented, and prints the endpoints, the log
    /// files, and commands to try: planned moves (drain, undrain, failover) and a real failover
    /// (kill -9 of unit-a's vnetd and switch). Ctrl-C (or SIGTERM) stops every process (each
    /// vnetd before its switch; SIGTERM, then SIGKILL after a deadline) and removes the data
    /// directories unless --keep-data is given.
    ///
    /// vnetd is taken from --vnetd-bin / VNETD_BIN and vnet-switchd from --vnet-switchd-bin /
    /// VNET_SWITCHD_BIN, else each from the directory of this vnetctl executable (where
    /// `cargo build -p vnet-node -p fabric-agent` puts them).
    Demo(DemoArgs),

    /// Measure write and linearizable-read throughput and latency of a running cluster.
    ///
    /// Example: vnetctl bench --concurrency 1,16,64 --duration 10s
    ///
    /// Writes are CreateProfile calls on profiles named with a prefix unique to this run, each
    /// worker deleting its oldest profile (also a timed write) once it holds two, so a long run
    /// stays within the cluster's profile limit. Reads are linearizable GetProfile calls on 64
    /// profiles created for them. Every profile created is deleted at the end, also after
    /// Ctrl-C. Prints ops/s and p50/p99/max latency per concurrency level.
    ///
    /// Worker i starts at endpoint i mod N of --endpoints, so give every node's endpoint to
    /// measure what real clients see: writes sent to a follower are forwarded to the leader.
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailbackArg {
    /// Move back to the preferred unit once it is healthy again.
    Auto,
    /// Stay on the unit failed over to until an operator moves the profile.
    Manual,
}

/// The content of a profile, from flags or from a file. Shared by create and update.
#[derive(Debug, Args)]
pub struct ProfileSpecArgs {
    /// Rack server the profile belongs to.
    #[arg(long)]
    pub server: Option<String>,
    /// A vNIC: NAME:net=NETWORK[:vlan=N][:mac=MAC][:pool=POOL]. Repeat for several. Without
    /// mac=, one is allocated from pool= (vlan 0 = untagged).
    #[arg(long = "vnic", value_name = "SPEC", value_parser = spec::parse_vnic)]
    pub vnics: Vec<Vnic>,
    /// A vHBA: NAME:fabric=FABRIC[:wwpn=WWN][:wwnn=WWN][:pool=POOL]. Repeat for several.
    /// Without wwpn=/wwnn=, they are allocated from pool=.
    #[arg(long = "vhba", value_name = "SPEC", value_parser = spec::parse_vhba)]
    pub vhbas: Vec<Vhba>,
    /// Unit that should present the profile when healthy (update: "" clears it).
    #[arg(long)]
    pub preferred_unit: Option<String>,
    /// What happens when the preferred unit recovers after a failover.
    #[arg(long, value_enum)]
    pub failback: Option<FailbackArg>,
    /// Read the whole profile from a JSON file ("-" = stdin), in the shape `profile get -o json`
    /// prints. Excludes the other content flags.
    #[arg(
        long,
        value_name = "PATH",
        conflicts_with_all = ["server", "vnics", "vhbas", "preferred_unit", "failback"],
    )]
    pub file: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Create a profile; identities not given are allocated from the named pools.
    ///
    /// Example:
    ///   vnetctl profile create web-01 --server rack1-srv01 \
    ///     --vnic eth0:net=prod:vlan=100:pool=mac-default \
    ///     --vnic eth1:net=backup:mac=02:00:00:00:10:01 \
    ///     --vhba fc0:fabric=a:pool=wwn-default --preferred-unit unit-a --failback manual
    ///
    ///   vnetctl profile create --file web-01.json
    ///
    /// Prints the profile as stored, with allocated identities.
    #[command(verbatim_doc_comment)]
    Create {
        /// Profile name (taken from the file with --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        #[command(flatten)]
        spec: ProfileSpecArgs,
    },
    /// Show one profile.
    ///
    /// Example: vnetctl profile get web-01 -o json > web-01.json
    Get {
        /// Profile name.
        name: String,
    },
    /// List profiles, optionally only those of one server or placed on one unit.
    ///
    /// Example: vnetctl profile list --server rack1-srv01
    ///
    /// Pages through the whole list unless --limit stops it earlier.
    List(ProfileListArgs),
    /// Change a profile.
    ///
    /// Examples:
    ///   vnetctl profile update web-01 --preferred-unit unit-b
    ///   vnetctl profile update web-01 --vnic eth0:net=prod:vlan=200 \
    ///     --vnic eth1:net=backup:pool=mac-default
    ///   vnetctl profile update --file web-01.json
    ///
    /// With flags, vnetctl reads the profile, changes what the flags name, and writes it back
    /// conditional on the revision it read (ABORTED if someone changed it meanwhile), unless
    /// --expected-revision is given. --vnic/--vhba replace the whole list of vNICs/vHBAs; a
    /// vNIC or vHBA given without an identity keeps the one it had under the same name, so an
    /// edit never changes a MAC or WWN by accident.
    ///
    /// With --file, the file replaces the profile whole (empty identities are allocated anew);
    /// the file's `revision`, if non-zero, is the expected revision unless
    /// --expected-revision is given (0 = unconditional).
    #[command(verbatim_doc_comment)]
    Update {
        /// Profile name (taken from the file with --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        #[command(flatten)]
        spec: ProfileSpecArgs,
        /// Apply only if the profile is still at this revision; 0 = unconditionally.
        #[arg(long)]
        expected_revision: Option<u64>,
    },
    /// Delete a profile and release its identities.
    ///
    /// Example: vnetctl profile delete web-01 --expected-revision 42
    Delete {
        /// Profile name.
        name: String,
        /// Delete only if the profile is still at this revision; 0 = unconditionally.
        #[arg(long, default_value_t = 0)]
        expected_revision: u64,
    },
}

#[derive(Debug, Args)]
pub struct ProfileListArgs {
    /// Only profiles of this server.
    #[arg(long, default_value = "")]
    pub server: String,
    /// Only profiles placed on this unit (their desired unit, as `status` shows it).
    #[arg(long, default_value = "")]
    pub unit: String,
    /// Profiles per request.
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// Stop after this many profiles.
    #[arg(long, default_value_t = 100_000)]
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolKindArg {
    /// MAC addresses, for vNICs.
    Mac,
    /// World Wide Names, for vHBAs.
    Wwn,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool of MACs or WWNs (first and last inclusive).
    ///
    /// Examples:
    ///   vnetctl pool create mac-default --kind mac \
    ///     --first 02:00:00:00:00:00 --last 02:00:00:00:ff:ff
    ///   vnetctl pool create wwn-default --kind wwn \
    ///     --first 20:00:00:25:b5:00:00:00 --last 20:00:00:25:b5:00:ff:ff
    #[command(verbatim_doc_comment)]
    Create {
        /// Pool name.
        name: String,
        /// Kind of identity.
        #[arg(long, value_enum)]
        kind: PoolKindArg,
        /// First identity of the range.
        #[arg(long)]
        first: String,
        /// Last identity of the range.
        #[arg(long)]
        last: String,
    },
    /// List every pool.
    ///
    /// Example: vnetctl pool list
    List,
    /// Show size, use and exhaustion warning of one pool, or of all.
    ///
    /// Example: vnetctl pool usage mac-default
    Usage {
        /// Pool name; all pools when left out.
        name: Option<String>,
    },
    /// Delete a pool; refused while profiles hold identities from it.
    ///
    /// Example: vnetctl pool delete mac-old
    Delete {
        /// Pool name.
        name: String,
        /// Delete only if the pool is still at this revision; 0 = unconditionally.
        #[arg(long, default_value_t = 0)]
        expected_revision: u64,
    },
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Name of the unit, e.g. unit-a.
    #[arg(value_name = "UNIT")]
    pub unit: String,
    /// Wait until the unit presents nothing and no profile is placed on or moving off it,
    /// printing progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits before giving up with exit code 1 [default: 60s].
    #[arg(long, value_name = "DURATION", requires = "wait", value_parser = spec::parse_duration)]
    pub timeout_wait: Option<Duration>,
}

/// `--timeout-wait` when not given.
pub const DRAIN_WAIT_DEFAULT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["profile", "from"])))]
pub struct FailoverArgs {
    /// The profile to move (give --to too).
    #[arg(requires = "to")]
    pub profile: Option<String>,
    /// Move every profile off this unit.
    #[arg(long, value_name = "UNIT")]
    pub from: Option<String>,
    /// The unit to move to. Required with PROFILE; with --from, leaving it out lets the
    /// cluster choose a unit per profile.
    #[arg(long, value_name = "UNIT")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Replay changes from this revision on (inclusive); 0 = only changes from now on.
    #[arg(long = "from", default_value_t = 0)]
    pub from_revision: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// API ports are BASE+1..BASE+3, peer ports BASE+101..BASE+103, switch ports BASE+201 and
    /// BASE+202.
    #[arg(long, default_value_t = 7000, value_parser = clap::value_parser!(u16).range(1..=65_000))]
    pub base_port: u16,
    /// Path of the vnetd binary.
    #[arg(long, env = "VNETD_BIN")]
    pub vnetd_bin: Option<std::path::PathBuf>,
    /// Path of the vnet-switchd binary (the simulated switch of each unit).
    #[arg(long, env = "VNET_SWITCHD_BIN")]
    pub vnet_switchd_bin: Option<std::path::PathBuf>,
    /// Keep the data directories (and logs) when the demo stops.
    #[arg(long)]
    pub keep_data: bool,
    /// How long to wait for the cluster to elect a leader, and then again for every sample
    /// profile to be presented.
    #[arg(long, default_value = "30s", value_parser = spec::parse_duration)]
    pub startup_timeout: Duration,
    /// What the switches present: `sim` (recorded only) or `linux` (ROOT ONLY: real vNICs).
    /// With `linux` each server is a network namespace (vnetdemo-rack1-srv01..06) cabled to
    /// both units, a LAN host namespace (vnetdemo-lan) has a bridge per network+VLAN, and each
    /// unit's switch runs with --backend linux, so the servers' vNICs appear with the
    /// profiles' MACs and move with them: ping a server from the LAN host, kill unit-a, and
    /// watch the ping resume through unit-b. Needs `ip` (iproute2); everything is removed when
    /// the demo stops.
    #[arg(long, value_enum, default_value = "sim")]
    pub dataplane: DemoDataPlane,
    /// Run the nodes and switches in plaintext, without TLS or authentication (every caller may
    /// do everything). By default the demo makes a throwaway CA, node certificates and the
    /// client certificates admin, operator and viewer in its directory, and prints the
    /// `export VNET_CACERT=... VNET_CERT=... VNET_KEY=...` line that makes vnetctl work.
    #[arg(long)]
    pub insecure: bool,
}

/// What the demo's switches present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoDataPlane {
    /// The simulated switch: state and journal only.
    Sim,
    /// Real interfaces in network namespaces (root only).
    Linux,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchIdentity {
    /// Give every vNIC/vHBA an explicit identity from a range unique to this run.
    Explicit,
    /// Create a temporary pool for this run and allocate from it.
    Pool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrency levels to measure, in order.
    #[arg(long, default_value = "1,16,64", value_parser = spec::parse_concurrency_levels)]
    pub concurrency: spec::ConcurrencyLevels,
    /// How long to run each level.
    #[arg(long, default_value = "10s", value_parser = spec::parse_duration)]
    pub duration: Duration,
    /// Measure writes (default: both writes and reads).
    #[arg(long)]
    pub writes: bool,
    /// Measure linearizable reads (default: both writes and reads).
    #[arg(long)]
    pub reads: bool,
    /// Where written identities come from.
    #[arg(long, value_enum, default_value = "explicit")]
    pub identity: BenchIdentity,
    /// Stop a level after this many operations even if --duration has not passed.
    #[arg(long, default_value_t = 100_000)]
    pub max_ops: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vnetctl").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_have_documented_defaults() {
        let cli = parse(&["status"]).unwrap();
        assert_eq!(
            cli.endpoints.0,
            vec!["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
        );
        assert_eq!(cli.output, Format::Table);
        assert_eq!(cli.timeout, Duration::from_secs(5));
    }

    #[test]
    fn globals_may_follow_the_subcommand() {
        let cli = parse(&[
            "profile",
            "list",
            "-o",
            "json",
            "--endpoints",
            "h:1",
            "--timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!(cli.output, Format::Json);
        assert_eq!(cli.endpoints.0, vec!["h:1"]);
        assert_eq!(cli.timeout, Duration::from_millis(250));
    }

    #[test]
    fn profile_create_collects_repeated_specs() {
        let cli = parse(&[
            "profile",
            "create",
            "web-01",
            "--server",
            "s1",
            "--vnic",
            "eth0:net=prod:pool=m",
            "--vnic",
            "eth1:net=backup:mac=02:00:00:00:00:01",
            "--vhba",
            "fc0:fabric=a:pool=w",
            "--failback",
            "manual",
        ])
        .unwrap();
        let Command::Profile(ProfileCommand::Create { name, spec }) = cli.command else {
            panic!("parsed into the wrong command");
        };
        assert_eq!(name.as_deref(), Some("web-01"));
        assert_eq!(spec.vnics.len(), 2);
        assert_eq!(spec.vnics[1].mac, "02:00:00:00:00:01");
        assert_eq!(spec.vhbas[0].fabric, "a");
        assert_eq!(spec.failback, Some(FailbackArg::Manual));
    }

    #[test]
    fn bad_vnic_flag_is_a_usage_error_naming_the_spec() {
        let error = parse(&[
            "profile",
            "create",
            "x",
            "--server",
            "s",
            "--vnic",
            "eth0:net=p:vlan=ten:pool=m",
        ])
        .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("vlan \"ten\""), "{error}");
    }

    #[test]
    fn file_excludes_name_and_content_flags() {
        assert!(parse(&["profile", "create", "--file", "p.json"]).is_ok());
        for args in [
            &["profile", "create", "x", "--file", "p.json"][..],
            &["profile", "create", "--file", "p.json", "--server", "s"][..],
            &[
                "profile",
                "update",
                "--file",
                "p.json",
                "--vnic",
                "e:net=a:pool=b",
            ][..],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
        assert_eq!(parse(&["profile", "create"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn failover_takes_exactly_one_of_profile_and_from() {
        let failover = |args: &[&str]| -> Result<FailoverArgs, clap::Error> {
            let mut all = vec!["failover"];
            all.extend_from_slice(args);
            match parse(&all)?.command {
                Command::Failover(args) => Ok(args),
                other => panic!("parsed into {other:?}"),
            }
        };
        let one = failover(&["web-01", "--to", "unit-b"]).unwrap();
        assert_eq!(
            (
                one.profile.as_deref(),
                one.from.as_deref(),
                one.to.as_deref()
            ),
            (Some("web-01"), None, Some("unit-b"))
        );
        let off = failover(&["--from", "unit-a"]).unwrap();
        assert_eq!(
            (
                off.profile.as_deref(),
                off.from.as_deref(),
                off.to.as_deref()
            ),
            (None, Some("unit-a"), None)
        );
        let off_to = failover(&["--from", "unit-a", "--to", "unit-b"]).unwrap();
        assert_eq!(off_to.to.as_deref(), Some("unit-b"));
        for (args, needle) in [
            (&[][..], "<PROFILE|--from <UNIT>>"),
            (&["--to", "unit-b"][..], "<PROFILE|--from <UNIT>>"),
            (&["web-01"][..], "--to <UNIT>"),
            (
                &["web-01", "--from", "unit-a", "--to", "unit-b"][..],
                "cannot be used with",
            ),
        ] {
            let error = failover(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}");
            assert!(error.to_string().contains(needle), "{args:?}: {error}");
        }
        // Names are the server's to judge (it names the field); they are passed on as typed.
        let args = failover(&["Web-01", "--to", "unit b"]).unwrap();
        assert_eq!(args.profile.as_deref(), Some("Web-01"));
        assert_eq!(args.to.as_deref(), Some("unit b"));
    }

    #[test]
    fn drain_wait_flags_and_undrain() {
        let drain = |args: &[&str]| -> Result<DrainArgs, clap::Error> {
            let mut all = vec!["drain"];
            all.extend_from_slice(args);
            match parse(&all)?.command {
                Command::Drain(args) => Ok(args),
                other => panic!("parsed into {other:?}"),
            }
        };
        let plain = drain(&["unit-a"]).unwrap();
        assert_eq!((plain.unit.as_str(), plain.wait), ("unit-a", false));
        assert_eq!(plain.timeout_wait, None);
        let waiting = drain(&["unit-a", "--wait", "--timeout-wait", "90s"]).unwrap();
        assert!(waiting.wait);
        assert_eq!(waiting.timeout_wait, Some(Duration::from_secs(90)));
        // --timeout-wait means nothing without --wait: say so rather than ignore it.
        let error = drain(&["unit-a", "--timeout-wait", "90s"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("--wait"), "{error}");
        assert_eq!(drain(&[]).unwrap_err().exit_code(), 2);
        assert_eq!(
            drain(&["unit-a", "--wait", "--timeout-wait", "0s"])
                .unwrap_err()
                .exit_code(),
            2
        );

        let Command::Undrain { unit } = parse(&["undrain", "unit-a"]).unwrap().command else {
            panic!("parsed into the wrong command");
        };
        assert_eq!(unit, "unit-a");
        assert_eq!(parse(&["undrain"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["undrain", "a", "b"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn bad_endpoints_are_a_usage_error() {
        let error = parse(&["status", "--endpoints", "nohost"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("is not host:port"), "{error}");
    }

    #[test]
    fn every_subcommand_has_help_with_an_example() {
        fn visit(command: &clap::Command, path: &str) {
            let path = format!("{path} {}", command.get_name());
            if command.has_subcommands() {
                for sub in command.get_subcommands() {
                    if sub.get_name() != "help" {
                        visit(sub, &path);
                    }
                }
            } else {
                let help = command
                    .get_long_about()
                    .or(command.get_about())
                    .map(|text| text.to_string())
                    .unwrap_or_default();
                assert!(
                    help.contains("vnetctl "),
                    "{path} has no example in its help"
                );
            }
        }
        let mut root = Cli::command();
        root.build();
        visit(&root, "");
    }
}
