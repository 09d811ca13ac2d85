//! The server limits: what each port and the watch service accept, their defaults, and their
//! validation (invariant 8 and "Server limits" in ARCHITECTURE.md).

use super::{invalid, Args, ConfigError};

// Server limits (invariant 8 and "Server limits" in ARCHITECTURE.md). Each default leaves a
// two-core appliance able to keep leading while every limit is used up at once: a watcher that
// reads nothing costs about 11 KiB (4,096 of them: ~45 MiB), and both ports' connections fit a
// 4,096 open-file limit with room for the store.
pub const DEFAULT_API_CONNECTIONS_MAX: usize = 1_024;
/// Peers are at most `MEMBERS_MAX` nodes, each with one channel to every other; the rest is
/// room for reconnects while old sockets close.
pub const DEFAULT_PEER_CONNECTIONS_MAX: usize = 128;
pub const DEFAULT_STREAMS_PER_CONNECTION_MAX: u32 = 128;
pub const DEFAULT_KEEPALIVE_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_WATCHERS_MAX: usize = 4_096;
pub const DEFAULT_WATCH_BUFFER_EVENTS: usize = 64;
pub const DEFAULT_WATCH_STALL_TIMEOUT_MS: u64 = 5_000;
/// The store's disk quota, as etcd's default `--quota-backend-bytes`: far above what a cluster of
/// `PROFILES_MAX` profiles needs (its log tail and a snapshot are a few tens of MB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The smallest quota accepted: below it a fresh store would raise the alarm at once.
pub const QUOTA_BYTES_MIN: u64 = 64 * 1024;
/// Upper bounds on what the server-limit keys accept: past these, a typo rather than a choice.
pub const CONNECTIONS_MAX_LIMIT: usize = 1_000_000;
pub const STREAMS_PER_CONNECTION_LIMIT: u32 = 10_000;
pub const WATCHERS_MAX_LIMIT: usize = 1_000_000;
/// Margin of the server's own deadline past the node's request timeout, so that a request the
/// node gives up on is answered with the node's own error rather than cut off.
pub const REQUEST_DEADLINE_MARGIN_MS: u64 = 1_000;
/// Election timeouts a leader transfer may take (replication wait plus campaign, each up to
/// four), which the server deadline must leave room for.
pub const TRANSFER_ELECTION_TIMEOUTS_MAX: u64 = 10;

/// What the servers accept (invariant 8 in ARCHITECTURE.md); see `connections` and
/// `api::watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    pub api_connections_max: usize,
    pub peer_connections_max: usize,
    pub streams_per_connection_max: u32,
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub request_deadline_ms: u64,
    pub watchers_max: usize,
    pub watch_buffer_events: usize,
    pub watch_stall_timeout_ms: u64,
}

impl Args {
    pub(super) fn server_limits(
        &self,
        request_timeout_ms: u64,
        election_max_ms: u64,
    ) -> Result<ServerLimits, ConfigError> {
        fn within<T: PartialOrd + std::fmt::Display + Copy>(
            key: &'static str,
            value: T,
            min: T,
            max: T,
        ) -> Result<T, ConfigError> {
            if value < min || value > max {
                return Err(invalid(
                    key,
                    value.to_string(),
                    format!("must be in {min}..={max}"),
                ));
            }
            Ok(value)
        }
        let limits = ServerLimits {
            api_connections_max: within(
                "api_connections_max",
                self.api_connections_max
                    .unwrap_or(DEFAULT_API_CONNECTIONS_MAX),
                1,
                CONNECTIONS_MAX_LIMIT,
            )?,
            peer_connections_max: within(
                "peer_connections_max",
                self.peer_connections_max
                    .unwrap_or(DEFAULT_PEER_CONNECTIONS_MAX),
                1,
                CONNECTIONS_MAX_LIMIT,
            )?,
            streams_per_connection_max: within(
                "streams_per_connection_max",
                self.streams_per_connection_max
                    .unwrap_or(DEFAULT_STREAMS_PER_CONNECTION_MAX),
                1,
                STREAMS_PER_CONNECTION_LIMIT,
            )?,
            keepalive_interval_ms: within(
                "keepalive_interval_ms",
                self.keepalive_interval_ms
                    .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL_MS),
                100,
                3_600_000,
            )?,
            keepalive_timeout_ms: within(
                "keepalive_timeout_ms",
                self.keepalive_timeout_ms
                    .unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT_MS),
                100,
                3_600_000,
            )?,
            idle_timeout_ms: within(
                "idle_timeout_ms",
                self.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
                200,
                86_400_000,
            )?,
            request_deadline_ms: 0,
            watchers_max: within(
                "watchers_max",
                self.watchers_max.unwrap_or(DEFAULT_WATCHERS_MAX),
                0,
                WATCHERS_MAX_LIMIT,
            )?,
            watch_buffer_events: within(
                "watch_buffer_events",
                self.watch_buffer_events
                    .unwrap_or(DEFAULT_WATCH_BUFFER_EVENTS),
                1,
                vnet_model::limits::EVENT_HISTORY_MAX,
            )?,
            watch_stall_timeout_ms: within(
                "watch_stall_timeout_ms",
                self.watch_stall_timeout_ms
                    .unwrap_or(DEFAULT_WATCH_STALL_TIMEOUT_MS),
                10,
                3_600_000,
            )?,
        };
        // A live client answers each PING at once, so it sends something at least once per
        // keepalive interval; twice that leaves room for a slow answer before it counts as idle.
        if limits.idle_timeout_ms < 2 * limits.keepalive_interval_ms {
            return Err(invalid(
                "idle_timeout_ms",
                limits.idle_timeout_ms.to_string(),
                format!(
                    "must be at least twice keepalive_interval_ms ({}), or live clients that \
                     only answer PINGs are cut off as idle",
                    limits.keepalive_interval_ms
                ),
            ));
        }
        // The server's deadline must not cut off what the node itself still waits for: a
        // request (request_timeout_ms) or a leader transfer (up to ten election timeouts).
        let deadline_min = request_timeout_ms
            .max(election_max_ms.saturating_mul(TRANSFER_ELECTION_TIMEOUTS_MAX))
            .saturating_add(REQUEST_DEADLINE_MARGIN_MS);
        let request_deadline_ms = self.request_deadline_ms.unwrap_or(deadline_min);
        if request_deadline_ms < deadline_min || request_deadline_ms > 3_600_000 {
            return Err(invalid(
                "request_deadline_ms",
                request_deadline_ms.to_string(),
                format!(
                    "must be in {deadline_min}..=3600000: at least request_timeout_ms \
                     ({request_timeout_ms}) and ten election_max_ms ({election_max_ms}), plus \
                     {REQUEST_DEADLINE_MARGIN_MS}"
                ),
            ));
        }
        Ok(ServerLimits {
            request_deadline_ms,
            ..limits
        })
    }
}
