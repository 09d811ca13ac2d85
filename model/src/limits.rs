//! Every bound the state machine enforces, in one place so that the API edge, the CLI and the
//! documentation quote the same numbers. Each bound keeps the replicated state, and so snapshots
//! and the time to apply one command, small enough for a control plane on a two-core appliance.

/// Profiles in the cluster: one per rack server, with room for many units' worth of servers
/// and profiles kept unplaced. The state of a full cluster of ordinary profiles (a vNIC and a
/// vHBA each) is a few tens of MB; the scale benchmark measures it (README, "Benchmarks").
pub const PROFILES_MAX: usize = 16_384;

/// Most placement changes the leader puts in one `Place` or `FailOver` command; more are
/// written as several commands (a failover's revocation ends with the part that leaves the unit
/// holding nothing). A change with every name and its reason at their limits encodes to about
/// 600 bytes, so a command stays under the 256 KiB a follower is sent per AppendEntries: no one
/// entry takes longer than a batch to replicate, however many profiles move
/// (`model/tests/limits.rs` checks it). `apply` itself accepts up to `PROFILES_MAX` changes
/// per command, so a log written with a larger part still replays.
pub const PLACEMENT_CHANGES_PER_COMMAND_MAX: usize = 256;

/// Bytes of the AppendEntries batch a leader sends a follower at once (an entry larger than
/// this goes alone); why 256 KiB is argued where vnetd cuts batches (`peer/client.rs`).
pub const APPEND_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Most client requests the leader puts in one `Batch` entry. Concurrent writes share an entry
/// (and so one fsync on each node) instead of each paying for its own; a request larger than
/// [`WRITE_BATCH_BYTES_MAX`] goes alone.
pub const WRITE_BATCH_REQUESTS_MAX: usize = 128;

/// Bytes of encoded requests the leader puts in one `Batch` entry: half an AppendEntries batch,
/// so a batched entry replicates in one round trip like any ordinary entry.
pub const WRITE_BATCH_BYTES_MAX: usize = APPEND_BATCH_BYTES_MAX / 2;

/// Virtual NICs in one profile.
pub const VNICS_PER_PROFILE_MAX: usize = 8;

/// Virtual HBAs in one profile.
pub const VHBAS_PER_PROFILE_MAX: usize = 8;

/// Identity pools (MAC and WWN together) in the cluster.
pub const POOLS_MAX: usize = 64;

/// Identities in one pool. The allocator tracks free ranges, so a large pool costs memory only in
/// proportion to its fragmentation; the bound keeps usage arithmetic and operator mistakes sane.
pub const POOL_SIZE_MAX: u64 = 1 << 24;

/// Raft members (units and witnesses).
pub const MEMBERS_MAX: usize = 16;
/// Most member ids a cluster remembers as removed by recoveries (each refused ever after).
pub const REMOVED_IDS_MAX: usize = 1024;

/// Events kept for `Watch` and audit; older ones are dropped, oldest first. Enough for a watcher
/// to catch up on a full cluster's worth of profile changes.
pub const EVENT_HISTORY_MAX: usize = 16_384;

/// Characters in any name: profile, server, pool, member, vNIC, vHBA, network, fabric. 63 so a
/// name fits a DNS label.
pub const NAME_LEN_MAX: usize = 63;

/// Host ports on a unit's switch, numbered `1..=HOST_PORTS_MAX`; one rack server per port.
pub const HOST_PORTS_MAX: u8 = 30;

/// The lowest and highest usable 802.1Q VLAN id (0 means untagged, 4095 is reserved).
pub const VLAN_ID_MIN: u16 = 1;
pub const VLAN_ID_MAX: u16 = 4094;

/// Characters in a member's API or peer address.
pub const ADDR_LEN_MAX: usize = 255;

/// Characters in a request's actor (the client identity recorded for audit).
pub const ACTOR_LEN_MAX: usize = 255;

/// Characters in a principal's name (the identity a client certificate carries), as granted a
/// role. Shorter than `ACTOR_LEN_MAX`, so a principal is always a valid actor.
pub const PRINCIPAL_LEN_MAX: usize = 128;

/// Principals the replicated role map holds: enough for every person and program of a site, and
/// small enough that the map adds little to a snapshot.
pub const ROLES_MAX: usize = 1024;

/// Characters of an offending value that an error message echoes before cutting it short.
pub const VALUE_SHOWN_LEN_MAX: usize = 80;

/// Bytes of one log entry's command (a `Request`: actor and command) in the log's JSON encoding;
/// the leader refuses a larger one before proposing it, as etcd's `--max-request-bytes` (1.5 MiB
/// by default) does. A client's command is bounded field by field (names, counts, the actor), so
/// the largest is about 5 KB; the largest the system builds is a unit's report of presenting
/// every one of `PROFILES_MAX` profiles, about 1.5 MB (placements are written in parts of
/// `PLACEMENT_CHANGES_PER_COMMAND_MAX`, about 150 KB at most; `model/tests/limits.rs` builds
/// them and checks they fit). 4 MiB leaves room above both; the bound is the backstop
/// that keeps a field without its own bound (or a bug) from putting an entry in the log that
/// followers cannot take in within an AppendEntries timeout (ARCHITECTURE.md, "Limits").
pub const ENTRY_BYTES_MAX: usize = 4 * 1024 * 1024;
