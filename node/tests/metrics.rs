//! The metrics listeners, checked by the real tools: every endpoint's exposition passes
//! `promtool check metrics` and says what the cluster is doing, and a real Prometheus server
//! scraping three `vnetd` processes finds exactly one leader among them.
//!
//! Both need Debian's `prometheus` package (`promtool` and `prometheus`), which `.ci/run`
//! installs.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::fabric::Fabric;
use common::processes::{free_ports, Cluster};
use common::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vnet_metrics::testing::{get, promtool_check_metrics, sample};
use vnet_proto::vnet::v1 as pb;

async fn fetch(addr: SocketAddr, path: impl Into<String>) -> Option<(u16, String)> {
    let path = path.into();
    tokio::task::spawn_blocking(move || get(addr, &path, None))
        .await
        .expect("the request task ran")
        .ok()
}

async fn scrape(addr: SocketAddr) -> Option<String> {
    match fetch(addr, "/metrics").await? {
        (200, body) => Some(body),
        _ => None,
    }
}

fn handled(service: &str, method: &str, code: &str) -> String {
    format!(
        "grpc_server_handled_total{{grpc_type=\"unary\",grpc_service=\"{service}\",\
         grpc_method=\"{method}\",grpc_code=\"{code}\"}}"
    )
}

/// The metric names (ours, gRPC's and the process's) mentioned in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["vnet_", "grpc_server_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            if text[..at].chars().next_back().is_some_and(is_name_char) {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| is_name_char(*c))
                .collect();
            names.insert(name);
        }
    }
    names
}

/// Whether a text exposition has a family or a sample called `name`, or, for a name written as
/// a prefix (`vnet_pool_*`), one that starts with it.
fn exports(exposition: &str, name: &str) -> bool {
    exposition.lines().any(|line| {
        let line = line.strip_prefix("# TYPE ").unwrap_or(line);
        line.strip_prefix(name).is_some_and(|rest| {
            name.ends_with('_') || rest.starts_with(' ') || rest.starts_with('{')
        })
    })
}

/// Every sample of `name` as its label text (`{...}`) and value.
fn series(exposition: &str, name: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            labels
                .starts_with('{')
                .then(|| (labels.to_owned(), value.parse().ok()))
                .and_then(|(labels, value)| Some((labels, value?)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_passes_promtool_and_reports_the_cluster() {
    let mut fabric = Fabric::start(60_000).await;
    let profiles = fabric.profiles("unit-a", pb::FailbackPolicy::Manual).await;
    let count = profiles.len() as f64;
    let nodes = [
        ("unit-a", fabric.units[0].metrics),
        ("unit-b", fabric.units[1].metrics),
        ("witness", fabric.witness_metrics),
    ];
    assert_eq!(fabric.units[0].name, "unit-a");
    // A linearizable read: wherever it lands, the leader confirms its read index.
    pb::profile_service_client::ProfileServiceClient::new(fabric.api())
        .get_profile(pb::GetProfileRequest {
            name: profiles[0].name.clone(),
            consistency: pb::ReadConsistency::Linearizable as i32,
        })
        .await
        .expect("a linearizable read");

    // Each replica applies the switches' reports in its own time.
    let scrapes: Vec<(&str, String)> = wait_for(
        "every node's metrics show every profile presented",
        || async {
            let mut scrapes = Vec::new();
            for (name, addr) in nodes {
                let text = scrape(addr).await?;
                let presented = sample(&text, "vnet_profiles{state=\"presented\"}")?;
                let on_a = sample(&text, "vnet_unit_presented_profiles{unit=\"unit-a\"}")?;
                (presented == count && on_a == count).then_some(())?;
                scrapes.push((name, text));
            }
            Some(scrapes)
        },
    )
    .await;

    for (name, text) in &scrapes {
        promtool_check_metrics(text).unwrap_or_else(|e| panic!("vnetd {name}: {e}"));
        assert_eq!(sample(text, "vnet_raft_has_leader"), Some(1.0), "{name}");
        assert_eq!(sample(text, "vnet_raft_voters"), Some(3.0), "{name}");
        assert_eq!(
            sample(text, "vnet_unit_presented_profiles{unit=\"unit-b\"}"),
            Some(0.0)
        );
        assert_eq!(sample(text, "vnet_profiles{state=\"unplaced\"}"), Some(0.0));
        assert_eq!(sample(text, "vnet_drains_in_progress"), Some(0.0));
        assert!(text.contains("vnet_build_info{program=\"vnetd\",version=\""));
        assert!(sample(text, "process_open_fds").is_some_and(|fds| fds > 0.0));
        let applied = sample(text, "vnet_raft_applied_index").unwrap();
        assert!(applied > 0.0 && sample(text, "vnet_raft_commit_index") >= Some(applied));
        assert!(sample(text, "vnet_raft_log_sync_duration_seconds_count") > Some(0.0));
        for family in [
            "read_index_rounds",
            "read_index_reads",
            "append_entries_received",
        ] {
            let family = format!("vnet_raft_{family}_total");
            assert!(
                sample(text, &family).is_some(),
                "{name} exports no {family}"
            );
        }
        // Pools: every identity is used or free.
        let sizes = series(text, "vnet_pool_size_identities");
        let used = series(text, "vnet_pool_used_identities");
        let free = series(text, "vnet_pool_free_identities");
        assert_eq!(sizes.len(), 2, "{name}: {sizes:?}");
        for (labels, size) in &sizes {
            assert_eq!(used[labels] + free[labels], *size, "{name} {labels}");
        }
        assert!(used.values().sum::<f64>() >= count);
    }
    let leaders: Vec<&str> = scrapes
        .iter()
        .filter(|(_, text)| sample(text, "vnet_raft_is_leader") == Some(1.0))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one node leads: {leaders:?}");
    for (name, text) in &scrapes {
        let lags = series(text, "vnet_raft_peer_replication_lag_entries");
        if *name == leaders[0] {
            assert_eq!(lags.len(), 2, "the leader reports both peers: {lags:?}");
            assert!(sample(text, "vnet_raft_proposals_committed_total") >= Some(count));
            // Every committed write was carried by a proposed entry: the batch sizes add up.
            assert!(sample(text, "vnet_raft_write_batch_size_sum") >= Some(count));
            assert_eq!(sample(text, "vnet_raft_proposals_pending"), Some(0.0));
            // Each confirmation round answers at least one read.
            let rounds = sample(text, "vnet_raft_read_index_rounds_total");
            assert!(rounds >= Some(1.0), "read index rounds: {rounds:?}");
            assert!(sample(text, "vnet_raft_read_index_reads_total") >= rounds);
        } else {
            assert!(lags.is_empty(), "a follower reports no lag: {lags:?}");
            // The leader's AppendEntries come over streams it keeps open.
            let streams = "grpc_server_started_total{grpc_type=\"bidi_stream\",\
                 grpc_service=\"vnet.raft.v1.RaftPeer\",grpc_method=\"AppendEntriesStream\"}";
            assert!(sample(text, streams) > Some(0.0), "{name}");
            let appends = sample(text, "vnet_raft_append_entries_received_total");
            assert!(appends > Some(0.0), "{name} handled no AppendEntries");
        }
    }
    // Leases: every voter grants both units; the units hold grants from all three voters.
    for (name, text) in &scrapes {
        assert!(
            sample(text, "vnet_lease_grants_total") > Some(0.0),
            "{name} grants"
        );
        assert_eq!(
            sample(text, "vnet_unit_lease_revoked{unit=\"unit-a\"}"),
            Some(0.0),
            "{name}"
        );
        let granting = format!("vnet_lease_voters_granting{{unit=\"{name}\"}}");
        let remaining = format!("vnet_lease_remaining_seconds{{unit=\"{name}\"}}");
        if *name == "witness" {
            assert!(
                !exports(text, "vnet_lease_voters_granting"),
                "a witness holds no lease"
            );
        } else {
            assert!(
                sample(text, &granting) >= Some(2.0),
                "{name} holds a majority"
            );
            assert!(sample(text, &remaining) > Some(0.0), "{name}");
        }
    }
    let leader = &scrapes
        .iter()
        .find(|(n, _)| *n == leaders[0])
        .expect("leader")
        .1;
    for unit in ["unit-a", "unit-b"] {
        let healthy = format!("vnet_unit_lease_healthy{{unit=\"{unit}\"}}");
        assert_eq!(sample(leader, &healthy), Some(1.0), "{unit} on the leader");
    }
    // The profiles were created through the witness's API.
    let witness = &scrapes[2].1;
    let creates = handled("vnet.v1.ProfileService", "CreateProfile", "OK");
    assert_eq!(sample(witness, &creates), Some(count));
    assert!(
        sample(witness, "grpc_server_handling_seconds_count{grpc_type=\"unary\",grpc_service=\"vnet.v1.ProfileService\",grpc_method=\"CreateProfile\"}")
            == Some(count)
    );

    let mut exported: Vec<String> = scrapes.iter().map(|(_, text)| text.clone()).collect();
    for (unit, programmed) in [(0, count), (1, 0.0)] {
        let text = scrape(fabric.units[unit].switch_metrics)
            .await
            .expect("switch metrics");
        exported.push(text.clone());
        promtool_check_metrics(&text)
            .unwrap_or_else(|e| panic!("vnet-switchd of {}: {e}", fabric.units[unit].name));
        assert_eq!(
            sample(&text, "vnet_switch_ports_programmed"),
            Some(programmed)
        );
        assert_eq!(sample(&text, "vnet_switch_watchdog_armed"), Some(1.0));
    }
    for (name, addr) in nodes {
        assert_eq!(fetch(addr, "/health").await.unwrap().0, 200, "{name}");
        assert_eq!(fetch(addr, "/readyz").await.unwrap().0, 200, "{name}");
    }

    // promtool checks the rules' syntax, not that they name metrics that exist: a renamed
    // family would leave an alert that never fires. Every name they and the dashboard use must
    // be exported by some endpoint.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["prometheus/alerts.yml", "grafana/vnet-ha.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).expect("read a deploy file");
        let names = metric_names(&text);
        assert!(names.len() > 5, "{file} names metrics: {names:?}");
        for name in names {
            assert!(
                exported.iter().any(|e| exports(e, &name)),
                "{file} uses {name}, which no endpoint exports"
            );
        }
    }
    fabric.stop_all().await;
}

/// A Prometheus server run by the test; killed on drop.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
}

impl Prometheus {
    /// Starts `prometheus` scraping `targets` every second, with the deploy/ alert rules
    /// loaded (so the server also shows they load).
    fn start(dir: &Path, targets: &[SocketAddr]) -> Prometheus {
        let addr = free_ports(1)[0];
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files: ['{}']\n\
                 scrape_configs:\n  - job_name: vnetd\n    static_configs:\n      - targets: [{targets}]\n",
                rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus: install Debian's `prometheus` package, as .ci/run does");
        Prometheus { addr, child }
    }

    /// The result vector of an instant query, by `instance` label.
    async fn query(&self, query: &'static str) -> Option<BTreeMap<String, f64>> {
        let (status, body) = fetch(self.addr, format!("/api/v1/query?query={query}")).await?;
        if status != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"]
            .as_array()?
            .iter()
            .map(|series| {
                let instance = series["metric"]["instance"].as_str()?.to_owned();
                let value = series["value"][1].as_str()?.parse().ok()?;
                Some((instance, value))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_three_node_cluster_and_finds_its_leader() {
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    let instances: BTreeMap<String, u64> = cluster
        .procs
        .iter()
        .map(|p| (p.metrics_addr.to_string(), p.id))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let targets: Vec<SocketAddr> = cluster.procs.iter().map(|p| p.metrics_addr).collect();
    let prometheus = Prometheus::start(dir.path(), &targets);

    let up = wait_for("prometheus scrapes all three nodes", || async {
        let up = prometheus.query("up").await?;
        (up.len() == 3 && up.values().all(|v| *v == 1.0)).then_some(up)
    })
    .await;
    assert_eq!(
        up.keys().collect::<Vec<_>>(),
        instances.keys().collect::<Vec<_>>()
    );
    let is_leader = wait_for("prometheus has every node's leader metric", || async {
        let is_leader = prometheus.query("vnet_raft_is_leader").await?;
        (is_leader.len() == 3).then_some(is_leader)
    })
    .await;
    let leaders: Vec<u64> = is_leader
        .iter()
        .filter(|(_, value)| **value == 1.0)
        .map(|(instance, _)| instances[instance])
        .collect();
    assert_eq!(leaders, vec![leader], "{is_leader:?}");
    let has_leader = prometheus
        .query("vnet_raft_has_leader")
        .await
        .expect("query has_leader");
    assert_eq!(has_leader.values().sum::<f64>(), 3.0, "{has_leader:?}");
    // The server read the OpenMetrics exposition: counters keep their _total samples.
    let changes = prometheus
        .query("vnet_raft_leader_changes_total")
        .await
        .expect("query leader changes");
    assert!(changes.values().all(|v| *v >= 1.0), "{changes:?}");
    cluster.assert_alive();
}
