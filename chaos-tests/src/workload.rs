//! The workload: concurrent clients on the client host doing profile create, update, delete and
//! get against random nodes, each operation recorded with its invocation, completion and
//! outcome.
//!
//! Every write carries identities unique to it (derived from the profile's index and the
//! operation id), and each profile draws from its own identity space, so a read identifies the
//! write it sees, and no write is ever refused for an identity another profile holds: the only
//! refusals are the ones the register model explains (exists, not found, revision mismatch).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

use crate::checks::lost_write::{FinalState, Stored};
use crate::history::{monotonic_now_ns, Call, Hba, History, Nic, Operation, Outcome, ProfileValue};
use crate::rng::Rng;

/// Client-side bound on one operation. Above vnetd's own request timeout, so that vnetd, which
/// knows whether a request reached a leader, usually answers first.
pub const OP_TIMEOUT_MS: u64 = 3_000;
/// Bound on opening a connection to a node.
pub const CONNECT_TIMEOUT_MS: u64 = 500;
/// HTTP/2 keepalive, so a connection to a node that vanished behind a partition is noticed and
/// replaced rather than reused until each request times out.
pub const KEEPALIVE_INTERVAL_MS: u64 = 1_000;
pub const KEEPALIVE_TIMEOUT_MS: u64 = 2_000;
/// Longest pause a client takes between two operations, drawn uniformly from 0. It keeps
/// per-profile histories small enough for the linearizability search over a soak.
pub const THINK_MS_MAX: u64 = 30;
/// The client id of the final reads after healing.
pub const FINAL_CLIENT: u32 = u32::MAX;
/// How long the final read of one profile may keep retrying.
pub const FINAL_READ_DEADLINE_MS: u64 = 30_000;
/// How long the nodes get to catch up before their local states are compared.
pub const REPLICA_CATCH_UP_DEADLINE_MS: u64 = 20_000;
/// How long the cluster gets to come up before the run starts.
pub const READY_DEADLINE_MS: u64 = 30_000;
/// Pause between polls while waiting for a condition.
pub const POLL_INTERVAL_MS: u64 = 100;
/// Largest page asked of ListProfiles.
pub const LIST_PAGE_SIZE: u32 = 1_000;

/// Operation mix, as weights: get, create, update, delete.
pub const OP_WEIGHTS: [u64; 4] = [35, 20, 30, 15];
/// Chance that an update or delete with a known revision is conditional on it.
pub const CONDITIONAL_PERCENT: u64 = 90;
/// Chance that a client writes a profile whose revision it does not know (unconditionally)
/// instead of reading it first. Kept small: an unconditional write whose outcome is unknown can
/// be placed almost anywhere later, and many of them make the linearizability search slow.
pub const BLIND_WRITE_PERCENT: u64 = 20;

/// Every operation of a run, shared by the clients and the harness (which watches for progress
/// after the last heal).
#[derive(Debug, Default)]
pub struct Recorder {
    ops: Mutex<History>,
    next_id: AtomicU64,
}

impl Recorder {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn push(&self, op: Operation) {
        self.ops.lock().expect("recorder lock").push(op);
    }

    pub fn snapshot(&self) -> History {
        self.ops.lock().expect("recorder lock").clone()
    }

    /// Was a write invoked at or after `since_ns` answered definitely?
    pub fn accepted_write_since(&self, since_ns: u64) -> bool {
        self.ops
            .lock()
            .expect("recorder lock")
            .iter()
            .any(|op| op.call.is_write() && op.invoked_ns >= since_ns && op.outcome.is_definite())
    }
}

/// What the workload needs to know.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub clients: u32,
    pub keys: u32,
    /// API addresses (host:port) of every node.
    pub endpoints: Vec<String>,
    /// Node names, parallel to `endpoints`.
    pub node_names: Vec<String>,
}

pub fn key_name(k: u32) -> String {
    format!("chaos-p{k:02}")
}

pub fn server_name(k: u32) -> String {
    format!("srv-{k:02}")
}

/// The value write `id` puts into profile `k`: identities unique to (k, id).
pub fn value_for(k: u32, id: u64) -> ProfileValue {
    let id = id as u32;
    let [a, b, c, d] = id.to_be_bytes();
    let mut vnics = vec![Nic {
        name: "eth0".into(),
        // 02: locally administered unicast.
        mac: format!("02:{k:02x}:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
        network: "net-chaos".into(),
        vlan: 1 + id % 4094,
    }];
    if id.is_multiple_of(3) {
        vnics.push(Nic {
            name: "eth1".into(),
            // 06: also locally administered unicast, a space of its own.
            mac: format!("06:{k:02x}:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
            network: "net-backup".into(),
            vlan: 0,
        });
    }
    ProfileValue {
        server: server_name(k),
        vnics,
        vhbas: vec![Hba {
            name: "fc0".into(),
            // NAA 2 (IEEE extended): the first nibble is 2.
            wwpn: format!("21:00:{k:02x}:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
            wwnn: format!("20:00:{k:02x}:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
            fabric: "a".into(),
        }],
    }
}

pub fn to_wire(name: &str, value: &ProfileValue) -> pb::Profile {
    pb::Profile {
        name: name.to_string(),
        server: value.server.clone(),
        vnics: value
            .vnics
            .iter()
            .map(|n| pb::Vnic {
                name: n.name.clone(),
                mac: n.mac.clone(),
                network: n.network.clone(),
                vlan: n.vlan,
                pool: None,
            })
            .collect(),
        vhbas: value
            .vhbas
            .iter()
            .map(|h| pb::Vhba {
                name: h.name.clone(),
                wwpn: h.wwpn.clone(),
                wwnn: h.wwnn.clone(),
                fabric: h.fabric.clone(),
                pool: None,
            })
            .collect(),
        preferred_unit: None,
        failback: pb::FailbackPolicy::Manual as i32,
        revision: 0,
        created_revision: 0,
    }
}

pub fn from_wire(profile: &pb::Profile) -> ProfileValue {
    ProfileValue {
        server: profile.server.clone(),
        vnics: profile
            .vnics
            .iter()
            .map(|n| Nic {
                name: n.name.clone(),
                mac: n.mac.clone(),
                network: n.network.clone(),
                vlan: n.vlan,
            })
            .collect(),
        vhbas: profile
            .vhbas
            .iter()
            .map(|h| Hba {
                name: h.name.clone(),
                wwpn: h.wwpn.clone(),
                wwnn: h.wwnn.clone(),
                fabric: h.fabric.clone(),
            })
            .collect(),
    }
}

/// Did a failed call certainly never reach vnetd? Only when the connection could not be opened
/// (refused, or timed out while connecting): tonic wraps exactly those in `ConnectError`, and
/// nothing was sent on a connection that never opened.
fn never_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The outcome of a call that ended in `status`, by the API's error contract
/// (`node/src/error.rs`): UNAVAILABLE from vnetd means no leader took it; DEADLINE_EXCEEDED
/// means it may have been applied; model refusals are definite.
pub fn classify(status: &Status) -> Outcome {
    let message = status.message();
    match status.code() {
        Code::NotFound => Outcome::NotFound,
        // IdentityInUse shares the code; the workload never reuses an identity, so that answer
        // would be a bug to see, not something the model should explain.
        Code::AlreadyExists if !message.contains("already held by") => Outcome::AlreadyExists,
        Code::Aborted => Outcome::RevisionMismatch,
        Code::Unavailable if std::error::Error::source(status).is_none() => Outcome::Failed {
            reason: format!("UNAVAILABLE from vnetd: {message}"),
        },
        _ if never_sent(status) => Outcome::Failed {
            reason: format!("not sent: {message}"),
        },
        // The model refused it for a reason the workload never provokes: not applied, and the
        // report counts it so it does not go unnoticed.
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::ResourceExhausted
        | Code::AlreadyExists => Outcome::Failed {
            reason: format!("refused ({:?}): {message}", status.code()),
        },
        code => Outcome::Indeterminate {
            reason: format!("{code:?}: {message}"),
        },
    }
}

pub fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{endpoint}"))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(OP_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(KEEPALIVE_TIMEOUT_MS))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Sends `call` on profile `key` and returns its outcome.
async fn invoke(channel: Channel, key: &str, call: &Call) -> Outcome {
    let mut client = ProfileServiceClient::new(channel);
    match call {
        Call::Create { value } => match client
            .create_profile(pb::CreateProfileRequest {
                profile: Some(to_wire(key, value)),
            })
            .await
        {
            Ok(r) => match r.into_inner().profile {
                Some(p) => Outcome::Written {
                    revision: p.revision,
                },
                None => Outcome::Indeterminate {
                    reason: "create answered without a profile".into(),
                },
            },
            Err(status) => classify(&status),
        },
        Call::Update {
            value,
            expected_revision,
        } => match client
            .update_profile(pb::UpdateProfileRequest {
                profile: Some(to_wire(key, value)),
                expected_revision: *expected_revision,
            })
            .await
        {
            Ok(r) => match r.into_inner().profile {
                Some(p) => Outcome::Written {
                    revision: p.revision,
                },
                None => Outcome::Indeterminate {
                    reason: "update answered without a profile".into(),
                },
            },
            Err(status) => classify(&status),
        },
        Call::Delete { expected_revision } => match client
            .delete_profile(pb::DeleteProfileRequest {
                name: key.to_string(),
                expected_revision: *expected_revision,
            })
            .await
        {
            Ok(r) => Outcome::Deleted {
                revision: r.into_inner().revision,
            },
            Err(status) => classify(&status),
        },
        Call::Get => match client
            .get_profile(pb::GetProfileRequest {
                name: key.to_string(),
                consistency: pb::ReadConsistency::Linearizable as i32,
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                match r.profile {
                    Some(p) => Outcome::Found {
                        value: from_wire(&p),
                        revision: p.revision,
                        created_revision: p.created_revision,
                        read_revision: r.revision,
                    },
                    None => Outcome::Indeterminate {
                        reason: "get answered without a profile".into(),
                    },
                }
            }
            Err(status) => classify(&status),
        },
    }
}

/// Invokes and records one operation.
async fn record(
    recorder: &Recorder,
    client: u32,
    id: u64,
    key: &str,
    call: Call,
    endpoint: &str,
    channel: Channel,
) -> Outcome {
    let invoked_ns = monotonic_now_ns();
    let outcome = invoke(channel, key, &call).await;
    let completed_ns = monotonic_now_ns();
    recorder.push(Operation {
        id,
        client,
        key: key.to_string(),
        call,
        endpoint: endpoint.to_string(),
        invoked_ns,
        completed_ns,
        outcome: outcome.clone(),
    });
    outcome
}

/// One client: until `stop`, draw an operation, a profile and a node, and record it.
async fn client_loop(
    client: u32,
    mut rng: Rng,
    config: Arc<WorkloadConfig>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let channels: Vec<Channel> = config
        .endpoints
        .iter()
        .map(|e| channel(e))
        .collect::<anyhow::Result<_>>()?;
    // What this client last learned of each profile's revision (None: absent or unknown).
    let mut known: BTreeMap<u32, u64> = BTreeMap::new();
    while !*stop.borrow() {
        let k = rng.below(config.keys as u64) as u32;
        let key = key_name(k);
        let id = recorder.next_id();
        let call = match rng.weighted(&OP_WEIGHTS).expect("weights are positive") {
            0 => Call::Get,
            1 => Call::Create {
                value: value_for(k, id),
            },
            kind => {
                let expected_revision = match known.get(&k) {
                    Some(&r) if rng.chance(CONDITIONAL_PERCENT) => Some(r),
                    Some(_) => Some(0),
                    None if rng.chance(BLIND_WRITE_PERCENT) => Some(0),
                    // A careful client reads before it writes what it has not seen.
                    None => None,
                };
                match (kind, expected_revision) {
                    (_, None) => Call::Get,
                    (2, Some(expected_revision)) => Call::Update {
                        value: value_for(k, id),
                        expected_revision,
                    },
                    (_, Some(expected_revision)) => Call::Delete { expected_revision },
                }
            }
        };
        let node = rng.below(channels.len() as u64) as usize;
        let outcome = record(
            &recorder,
            client,
            id,
            &key,
            call,
            &config.endpoints[node],
            channels[node].clone(),
        )
        .await;
        match outcome {
            Outcome::Written { revision } => {
                known.insert(k, revision);
            }
            Outcome::Found { revision, .. } => {
                known.insert(k, revision);
            }
            Outcome::Deleted { .. } | Outcome::NotFound => {
                known.remove(&k);
            }
            // A refused or uncertain write leaves the revision unknown to this client.
            Outcome::Indeterminate { .. } | Outcome::RevisionMismatch => {
                known.remove(&k);
            }
            _ => {}
        }
        let think = rng.below(THINK_MS_MAX + 1);
        if think > 0 {
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }
    Ok(())
}

/// Waits until every node answers a linearizable read (so each reaches a leader), or fails
/// after [`READY_DEADLINE_MS`] naming the last answer of each node.
pub async fn wait_ready(config: &WorkloadConfig) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(READY_DEADLINE_MS);
    let channels: Vec<Channel> = config
        .endpoints
        .iter()
        .map(|e| channel(e))
        .collect::<anyhow::Result<_>>()?;
    let mut last: Vec<String> = vec!["not asked yet".into(); channels.len()];
    loop {
        let mut all = true;
        for (i, ch) in channels.iter().enumerate() {
            let outcome = invoke(ch.clone(), "chaos-ready-probe", &Call::Get).await;
            if outcome != Outcome::NotFound {
                all = false;
                last[i] = format!("{outcome:?}");
            }
        }
        if all {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the cluster did not serve linearizable reads on every node within {} ms; last \
                 answers: {:?}",
                READY_DEADLINE_MS,
                config.node_names.iter().zip(&last).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// Runs every client until `stop` turns true, then waits for their last operations.
pub async fn run_clients(
    config: Arc<WorkloadConfig>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut root = Rng::new(config.seed).fork(2);
    let tasks: Vec<_> = (0..config.clients)
        .map(|c| {
            tokio::spawn(client_loop(
                c,
                root.fork(c as u64 + 100),
                config.clone(),
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Reads every profile with a linearizable get, retrying across nodes until a definite answer
/// or [`FINAL_READ_DEADLINE_MS`]. Each attempt is recorded in the history too, so the
/// linearizability checker judges the final reads along with everything else.
pub async fn final_reads(
    config: &WorkloadConfig,
    recorder: &Recorder,
) -> anyhow::Result<FinalState> {
    let channels: Vec<Channel> = config
        .endpoints
        .iter()
        .map(|e| channel(e))
        .collect::<anyhow::Result<_>>()?;
    let mut state = FinalState::new();
    for k in 0..config.keys {
        let key = key_name(k);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(FINAL_READ_DEADLINE_MS);
        let mut attempt = 0usize;
        loop {
            let node = attempt % channels.len();
            attempt += 1;
            let id = recorder.next_id();
            let outcome = record(
                recorder,
                FINAL_CLIENT,
                id,
                &key,
                Call::Get,
                &config.endpoints[node],
                channels[node].clone(),
            )
            .await;
            match outcome {
                Outcome::Found {
                    value, revision, ..
                } => {
                    state.insert(key, Some(Stored { value, revision }));
                    break;
                }
                Outcome::NotFound => {
                    state.insert(key, None);
                    break;
                }
                other => {
                    if tokio::time::Instant::now() >= deadline {
                        anyhow::bail!(
                            "no definite final read of {key} within {FINAL_READ_DEADLINE_MS} ms \
                             after healing; last answer {other:?}"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
                }
            }
        }
    }
    Ok(state)
}

/// One node's own state of the workload's profiles (a LOCAL list: no leader involved).
async fn local_state(channel: Channel, keys: u32) -> Result<FinalState, Status> {
    let mut client = ProfileServiceClient::new(channel);
    let mut found = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_profiles(pb::ListProfilesRequest {
                page_size: LIST_PAGE_SIZE,
                page_token,
                consistency: pb::ReadConsistency::Local as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        for p in page.profiles {
            found.insert(
                p.name.clone(),
                Stored {
                    value: from_wire(&p),
                    revision: p.revision,
                },
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok((0..keys)
        .map(|k| {
            let key = key_name(k);
            let stored = found.remove(&key);
            (key, stored)
        })
        .collect())
}

/// Each node's local state once it equals `want`, or the last one seen at the deadline.
pub async fn replica_states(
    config: &WorkloadConfig,
    want: &FinalState,
) -> anyhow::Result<BTreeMap<String, FinalState>> {
    let mut states = BTreeMap::new();
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(REPLICA_CATCH_UP_DEADLINE_MS);
    for (endpoint, name) in config.endpoints.iter().zip(&config.node_names) {
        let ch = channel(endpoint)?;
        let mut last = None;
        loop {
            match local_state(ch.clone(), config.keys).await {
                Ok(state) if &state == want => {
                    last = Some(state);
                    break;
                }
                Ok(state) => last = Some(state),
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
        let state = last.ok_or_else(|| {
            anyhow::anyhow!("{name} ({endpoint}) never answered a local list after healing")
        })?;
        states.insert(name.clone(), state);
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unique_and_round_trip() {
        let a = value_for(1, 3);
        let b = value_for(1, 4);
        let c = value_for(2, 3);
        assert_ne!(a.vnics[0].mac, b.vnics[0].mac);
        assert_ne!(a.vnics[0].mac, c.vnics[0].mac);
        assert_ne!(a.vhbas[0].wwpn, c.vhbas[0].wwpn);
        assert_eq!(a.vnics.len(), 2, "every third write has a second vNIC");
        assert_eq!(from_wire(&to_wire("p", &a)), a);
    }

    #[test]
    fn status_codes_map_to_the_contract() {
        assert_eq!(
            classify(&Status::not_found("profile \"x\" does not exist")),
            Outcome::NotFound
        );
        assert_eq!(
            classify(&Status::already_exists("profile \"x\" already exists")),
            Outcome::AlreadyExists
        );
        assert!(matches!(
            classify(&Status::already_exists(
                "identity 02:00:00:00:00:01 is already held by profile \"y\""
            )),
            Outcome::Failed { .. }
        ));
        assert_eq!(
            classify(&Status::aborted("expected 3, current 4")),
            Outcome::RevisionMismatch
        );
        assert!(matches!(
            classify(&Status::unavailable("no leader is reachable: gave up")),
            Outcome::Failed { .. }
        ));
        for status in [
            Status::deadline_exceeded("outcome unknown"),
            Status::unknown("h2 protocol error"),
            Status::cancelled("timeout expired"),
            Status::internal("bug"),
        ] {
            assert!(
                matches!(classify(&status), Outcome::Indeterminate { .. }),
                "{status:?}"
            );
        }
        // A transport failure after sending (here: an error underneath the status) is not
        // vnetd's UNAVAILABLE: it may have been applied.
        let broken = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        assert!(
            matches!(classify(&broken), Outcome::Indeterminate { .. }),
            "{broken:?}"
        );
        let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
        ))));
        assert!(
            matches!(classify(&refused), Outcome::Failed { .. }),
            "{refused:?}"
        );
    }
}
