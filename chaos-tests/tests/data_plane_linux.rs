//! Failover measured in packets, on `vnet-switchd --backend linux` (see
//! `chaos_tests::data_plane` for the topology): servers as namespaces cabled to both units, a
//! LAN host sending UDP to every presented server every 10 ms, and unit-a killed whole (its
//! vnetd and its vnet-switchd). For each server it measures the gap in echoes and checks:
//!
//! - traffic resumes through unit-b with the **same MAC** (the LAN host's neighbour entry, and
//!   the source MAC of the frames on unit-b's uplink), and unit-b announced the MAC (a RARP
//!   frame from it on its uplink);
//! - frames of a profile's MAC appear only on the uplinks of the profile's segment;
//! - no frame of a profile's MAC comes through both units in the same interval: every frame
//!   through unit-a precedes every frame through unit-b (from the uplink captures, not from the
//!   journals);
//! - the dead switch's vNICs left the servers (the switch's death removed them).
//!
//! It prints per-server outage (min / p50 / max) beside the journal-based failover time (kill
//! to unit-b's `Programmed`). Timing is printed, not asserted.
//!
//! A second test does the same for a vnetd-only kill (the switch's watchdog fences), a partition
//! of the presenting unit from the quorum (its control link cut, its uplinks kept) and a drain
//! (planned, break before make), each on the unit presenting at the time, healed before the next.
//!
//! Needs root and `ip`; without them it FAILS with the reason. `VNET_DP_FAILOVERS=N` repeats
//! the kill N times (2 by default: each unit dies once), alternating units and restarting the
//! killed one, for a benchmark.

use std::collections::BTreeMap;
use std::time::Duration;

use chaos_tests::data_plane::{
    check_frames, in_netns, lan_neighbour, largest_gap_ms, mac_text, min_p50_max, preflight,
    quantile, resumed_at, sweep_leftovers, DataPlaneCluster, Traffic, SEGMENTS, SWITCH_PORT, UNITS,
    WITNESS,
};
use chaos_tests::history::monotonic_now_ns;
use chaos_tests::run::{default_switchd_path, default_vnetd_path};
use fabric_agent::journal::{self, Event};
use fabric_agent::{FabricDriver, SimDriver};
use vnet_proto::vnet::v1 as pb;
use vnet_proto::vnet::v1::cluster_service_client::ClusterServiceClient;
use vnet_proto::vnet::v1::profile_service_client::ProfileServiceClient;

const SERVERS: usize = 4;
const MS: u64 = 1_000_000;
/// How long traffic must flow before a kill, and after every server answered again.
const STEADY_MS: u64 = 1_000;
const RESUME_DEADLINE_MS: u64 = 20_000;
const SETUP_DEADLINE_MS: u64 = 40_000;

fn profile(server: &chaos_tests::data_plane::ServerSpec, k: usize) -> pb::Profile {
    let (network, vlan) = SEGMENTS[server.segment];
    pb::Profile {
        name: server.profile.clone(),
        server: server.name.clone(),
        vnics: vec![pb::Vnic {
            name: "eth0".into(),
            mac: server.mac_text(),
            network: network.into(),
            vlan: vlan.map_or(0, u32::from),
            pool: None,
        }],
        // No kernel counterpart: a simulated fabric login on either backend.
        vhbas: vec![pb::Vhba {
            name: "fc0".into(),
            wwpn: format!("21:00:00:19:00:00:00:{:02x}", k + 1),
            wwnn: format!("20:00:00:19:00:00:00:{:02x}", k + 1),
            fabric: "a".into(),
            pool: None,
        }],
        preferred_unit: Some(UNITS[0].into()),
        failback: pb::FailbackPolicy::Manual as i32,
        revision: 0,
        created_revision: 0,
    }
}

/// Runs `work` with the API endpoints on a thread in the witness's namespace (the control
/// network), on its own runtime.
fn with_api<T: Send + 'static, F>(cluster: &DataPlaneCluster, work: F) -> anyhow::Result<T>
where
    F: FnOnce(
            Vec<String>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>>>>
        + Send
        + 'static,
{
    let endpoints = cluster.api_endpoints();
    in_netns(&cluster.ns(WITNESS), "dp-client", move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work(endpoints))
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
}

/// Sends one call to each endpoint in turn until one accepts it (`AlreadyExists` counts: a
/// retried create), or fails after [`SETUP_DEADLINE_MS`] with the last refusal.
async fn until_accepted<F, Fut>(endpoints: &[String], what: &str, mut call: F) -> anyhow::Result<()>
where
    F: FnMut(tonic::transport::Channel) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let deadline = monotonic_now_ns() + SETUP_DEADLINE_MS * MS;
    let mut last = String::new();
    loop {
        for endpoint in endpoints {
            match call(chaos_tests::workload::channel(endpoint)?).await {
                Ok(()) => return Ok(()),
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
                Err(s) => last = format!("{endpoint}: {s}"),
            }
        }
        if monotonic_now_ns() > deadline {
            anyhow::bail!("{what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates every profile, retrying until a leader takes them.
fn create_profiles(cluster: &DataPlaneCluster) -> anyhow::Result<()> {
    let profiles: Vec<pb::Profile> = cluster
        .servers
        .iter()
        .enumerate()
        .map(|(k, s)| profile(s, k))
        .collect();
    with_api(cluster, move |endpoints| {
        Box::pin(async move {
            for p in profiles {
                until_accepted(&endpoints, &format!("create profile {}", p.name), |ch| {
                    let p = p.clone();
                    async move {
                        ProfileServiceClient::new(ch)
                            .create_profile(pb::CreateProfileRequest { profile: Some(p) })
                            .await
                            .map(drop)
                    }
                })
                .await?;
            }
            Ok(())
        })
    })
}

/// Drains `unit`, or ends its drain.
fn drain(cluster: &DataPlaneCluster, unit: &str, on: bool) -> anyhow::Result<()> {
    let unit = unit.to_owned();
    with_api(cluster, move |endpoints| {
        Box::pin(async move {
            until_accepted(&endpoints, &format!("drain {unit} {on}"), |ch| {
                let unit = unit.clone();
                async move {
                    let mut client = ClusterServiceClient::new(ch);
                    if on {
                        client.drain(pb::DrainRequest { unit }).await.map(drop)
                    } else {
                        client.undrain(pb::UndrainRequest { unit }).await.map(drop)
                    }
                }
            })
            .await
        })
    })
}

/// Waits until `unit`'s switch holds a live lease (armed, not fenced): the unit is back.
fn wait_unit_leased(cluster: &DataPlaneCluster, unit: &str) -> anyhow::Result<()> {
    in_netns(&cluster.ns(unit), "dp-switch-state", move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let driver = SimDriver::connect_lazy(&format!("127.0.0.1:{SWITCH_PORT}"))?;
                let deadline = monotonic_now_ns() + SETUP_DEADLINE_MS * MS;
                loop {
                    if let Ok(state) = driver.state().await {
                        let now = monotonic_now_ns();
                        if !state.fenced && state.watchdog_deadline_mono_ns.is_some_and(|d| d > now)
                        {
                            return Ok(());
                        }
                    }
                    if monotonic_now_ns() > deadline {
                        anyhow::bail!("the switch never held a live lease again");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("the state thread panicked"))?
}

/// A fault on the unit that presents every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Its vnetd and its vnet-switchd SIGKILLed.
    KillUnit,
    /// Its vnetd SIGKILLed: the switch fences by itself at the lease's end.
    KillVnetd,
    /// Its control link cut: it loses the quorum, its uplinks stay.
    Partition,
    /// `Drain`: planned, break before make.
    Drain,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::KillUnit => "whole-unit kill",
            Fault::KillVnetd => "vnetd-only kill",
            Fault::Partition => "partition from the quorum",
            Fault::Drain => "drain",
        }
    }

    fn inject(self, cluster: &mut DataPlaneCluster, unit: &str) -> anyhow::Result<u64> {
        Ok(match self {
            Fault::KillUnit => cluster.kill_unit(unit),
            Fault::KillVnetd => cluster.kill_vnetd(unit),
            Fault::Partition => cluster.set_control_link(unit, false)?,
            Fault::Drain => {
                let at = monotonic_now_ns();
                drain(cluster, unit, true)?;
                at
            }
        })
    }

    fn heal(self, cluster: &mut DataPlaneCluster, unit: &str) -> anyhow::Result<()> {
        match self {
            Fault::KillUnit | Fault::KillVnetd => cluster.restart_unit(unit)?,
            Fault::Partition => {
                cluster.set_control_link(unit, true)?;
            }
            Fault::Drain => drain(cluster, unit, false)?,
        }
        wait_unit_leased(cluster, unit)
    }
}

/// Waits until every server answered at or after `since_ns` (after losing its NIC then, if
/// `after_loss`), or fails after `deadline_ms`.
fn wait_all_answer(
    traffic: &Traffic,
    since_ns: u64,
    after_loss: bool,
    deadline_ms: u64,
    what: &str,
) -> anyhow::Result<u64> {
    let deadline = monotonic_now_ns() + deadline_ms * MS;
    loop {
        let answered = if after_loss {
            traffic.resumed_since(since_ns)
        } else {
            traffic.answered_since(since_ns)
        };
        if answered.len() == SERVERS {
            return Ok(monotonic_now_ns());
        }
        if monotonic_now_ns() > deadline {
            anyhow::bail!("{what}: only servers {answered:?} answered within {deadline_ms} ms");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The unit every server's frames came through in the last `window_ms`, if it is one unit.
fn presenting_unit(traffic: &Traffic, window_ms: u64) -> Result<usize, String> {
    let since = monotonic_now_ns().saturating_sub(window_ms * MS);
    let recorded = traffic.recorded.lock().unwrap();
    let mut units: BTreeMap<[u8; 6], std::collections::BTreeSet<usize>> = BTreeMap::new();
    for f in recorded.frames.iter().filter(|f| f.at_ns >= since) {
        units.entry(f.src).or_default().insert(f.unit);
    }
    let all: std::collections::BTreeSet<usize> = units.values().flatten().copied().collect();
    match (units.len(), all.len()) {
        (SERVERS, 1) => Ok(*all.iter().next().unwrap_or(&0)),
        _ => Err(format!(
            "the servers are not all presented through one unit in the last {window_ms} ms: \
             {:?}",
            units
                .iter()
                .map(|(mac, units)| (mac_text(mac), units.clone()))
                .collect::<Vec<_>>()
        )),
    }
}

/// One failover's figures and verdicts.
struct Failover {
    fault: Fault,
    from: usize,
    kill_ns: u64,
    outage_ms: Vec<f64>,
    journal_ms: Vec<f64>,
    vanish_ms: Vec<f64>,
    /// Kill to the first echo through the new path.
    resumed_ms: Vec<f64>,
}

fn journal_failover_ms(
    cluster: &DataPlaneCluster,
    to_unit: &str,
    profile: &str,
    kill_ns: u64,
) -> anyhow::Result<f64> {
    let records = journal::read(&cluster.journal_path(to_unit))?;
    records
        .iter()
        .find(|r| {
            r.mono_ns >= kill_ns
                && matches!(&r.event, Event::Programmed { profile: p, .. } if p == profile)
        })
        .map(|r| (r.mono_ns - kill_ns) as f64 / 1e6)
        .ok_or_else(|| {
            anyhow::anyhow!("{to_unit}'s journal never programmed {profile} after the kill")
        })
}

fn run_failover(
    cluster: &mut DataPlaneCluster,
    traffic: &Traffic,
    fault: Fault,
    from: usize,
) -> anyhow::Result<(Failover, u64)> {
    let to = 1 - from;
    let kill_ns = fault.inject(cluster, UNITS[from])?;
    let resumed = wait_all_answer(traffic, kill_ns, true, RESUME_DEADLINE_MS, "after the kill")?;
    // Steady traffic after the last server came back, so the window closes on settled flow.
    std::thread::sleep(Duration::from_millis(STEADY_MS));
    let end_ns = monotonic_now_ns();
    let recorded = traffic.recorded.lock().unwrap();
    let mut failover = Failover {
        fault,
        from,
        kill_ns,
        outage_ms: Vec::new(),
        journal_ms: Vec::new(),
        vanish_ms: Vec::new(),
        resumed_ms: Vec::new(),
    };
    for (k, server) in cluster.servers.iter().enumerate() {
        let echoes = recorded.echoes.get(&k).map(Vec::as_slice).unwrap_or(&[]);
        failover.outage_ms.push(
            largest_gap_ms(echoes, kill_ns, end_ns)
                .ok_or_else(|| anyhow::anyhow!("{}: no echo around the kill", server.profile))?,
        );
        failover.journal_ms.push(journal_failover_ms(
            cluster,
            UNITS[to],
            &server.profile,
            kill_ns,
        )?);
        if let Some(gone) = recorded
            .links
            .get(&k)
            .and_then(|events| events.iter().find(|e| !e.present && e.at_ns >= kill_ns))
        {
            failover.vanish_ms.push((gone.at_ns - kill_ns) as f64 / 1e6);
            if let Some(first) = resumed_at(&recorded, k, kill_ns) {
                failover.resumed_ms.push((first - kill_ns) as f64 / 1e6);
            }
        }
    }
    let _ = resumed;
    Ok((failover, end_ns))
}

fn print_failover(number: usize, cluster: &DataPlaneCluster, f: &Failover) {
    let (omin, op50, omax) = min_p50_max(&f.outage_ms);
    let (jmin, jp50, jmax) = min_p50_max(&f.journal_ms);
    println!(
        "failover {number}: {} of {} -> {}: data-plane outage min/p50/max {omin:.0}/{op50:.0}/{omax:.0} ms; journal failover (fault -> Programmed) {jmin:.0}/{jp50:.0}/{jmax:.0} ms; old path's vNICs gone after {:?} ms",
        f.fault.label(),
        UNITS[f.from],
        UNITS[1 - f.from],
        f.vanish_ms.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
    for (k, server) in cluster.servers.iter().enumerate() {
        println!(
            "  {} {} ({}{}): outage {:.0} ms, traffic back {:.0} ms after the fault, journal {:.0} ms",
            server.profile,
            server.mac_text(),
            SEGMENTS[server.segment].0,
            SEGMENTS[server.segment]
                .1
                .map_or(String::new(), |v| format!(":{v}")),
            f.outage_ms[k],
            f.resumed_ms.get(k).copied().unwrap_or(f64::NAN),
            f.journal_ms[k]
        );
    }
}

/// Builds the cluster, waits for steady traffic, then runs `faults` in order, each on the unit
/// that presents every server at the time, healing it before the next; checks and prints
/// each, then the totals.
fn run_scenario(faults: &[Fault]) {
    preflight().unwrap_or_else(|e| panic!("{e:#}"));
    let swept = sweep_leftovers().unwrap_or_else(|e| panic!("{e:#}"));
    if !swept.is_empty() {
        eprintln!("removed namespaces left by earlier runs: {swept:?}");
    }
    let (vnetd, switchd) = (default_vnetd_path(), default_switchd_path());
    for path in [&vnetd, &switchd] {
        assert!(
            path.exists(),
            "{} not found: build the binaries first (`cargo build --bins`; `cargo test \
             --workspace` builds them)",
            path.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DataPlaneCluster::start(dir.path(), SERVERS, &vnetd, &switchd)
        .unwrap_or_else(|e| panic!("cannot build the data-plane cluster: {e:#}"));
    let traffic = Traffic::start(&cluster).unwrap_or_else(|e| panic!("{e:#}"));
    let setup = (|| -> anyhow::Result<()> {
        // Both units hold leases before any profile exists, so placement follows the profiles'
        // preferred unit instead of whichever unit was ready first.
        for unit in UNITS {
            wait_unit_leased(&cluster, unit)?;
        }
        create_profiles(&cluster)?;
        wait_all_answer(
            &traffic,
            monotonic_now_ns(),
            false,
            SETUP_DEADLINE_MS,
            "before any fault",
        )?;
        Ok(())
    })();
    if let Err(e) = setup {
        panic!("{e:#}\n{}", cluster.log_tails());
    }
    std::thread::sleep(Duration::from_millis(STEADY_MS));
    // The profiles prefer unit-a, but a unit that was not ready when they were placed leaves
    // them on its peer (failback is manual): the first kill is of the unit that carries them.
    let mut from = presenting_unit(&traffic, STEADY_MS)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails()));
    println!("every server is presented through {}", UNITS[from]);

    let mut results = Vec::new();
    for (i, &fault) in faults.iter().enumerate() {
        let number = i + 1;
        let (failover, end_ns) = run_failover(&mut cluster, &traffic, fault, from)
            .unwrap_or_else(|e| panic!("failover {number}: {e:#}\n{}", cluster.log_tails()));
        let violations = {
            let recorded = traffic.recorded.lock().unwrap();
            check_frames(
                &cluster.servers,
                &recorded.frames,
                failover.from,
                failover.kill_ns,
                failover.kill_ns.saturating_sub(STEADY_MS * MS),
                end_ns,
            )
        };
        print_failover(number, &cluster, &failover);
        assert!(violations.is_empty(), "failover {number}: {violations:#?}");
        // The LAN host's neighbour entry of each server still names the profile's MAC.
        for server in &cluster.servers {
            let entry = lan_neighbour(&cluster, server.addr).unwrap();
            assert!(
                entry.contains(&server.mac_text()),
                "{}: the LAN host's neighbour entry is {entry:?}, not {}",
                server.profile,
                server.mac_text()
            );
        }
        assert_eq!(
            failover.vanish_ms.len(),
            SERVERS,
            "every server's NIC through {} must vanish after the {}",
            UNITS[from],
            fault.label()
        );
        results.push(failover);
        if number < faults.len() {
            fault
                .heal(&mut cluster, UNITS[from])
                .unwrap_or_else(|e| panic!("heal {}: {e:#}\n{}", UNITS[from], cluster.log_tails()));
            // The servers stay where they went (failback is manual): the next fault is on the
            // unit that now presents them.
            from = 1 - from;
        }
    }
    let recorded = traffic.stop().unwrap_or_else(|e| panic!("{e:#}"));
    let all_outages: Vec<f64> = results.iter().flat_map(|f| f.outage_ms.clone()).collect();
    let all_journal: Vec<f64> = results.iter().flat_map(|f| f.journal_ms.clone()).collect();
    let (omin, op50, omax) = min_p50_max(&all_outages);
    let (jmin, jp50, jmax) = min_p50_max(&all_journal);
    let (op99, jp99) = (quantile(&all_outages, 0.99), quantile(&all_journal, 0.99));
    let sent: u64 = recorded.sent.values().sum();
    let echoed: usize = recorded.echoes.values().map(Vec::len).sum();
    println!(
        "{} failover(s), {} server-failovers: data-plane outage min/p50/p99/max {omin:.0}/{op50:.0}/{op99:.0}/{omax:.0} ms beside journal failover {jmin:.0}/{jp50:.0}/{jp99:.0}/{jmax:.0} ms; {echoed} of {sent} datagrams echoed; {} frames captured from profile MACs, none through both units at once",
        results.len(),
        all_outages.len(),
        recorded.frames.len()
    );
    println!("vHBAs: simulated fabric logins (no kernel counterpart), journal only");
    let per_unit: BTreeMap<usize, usize> =
        recorded.frames.iter().fold(BTreeMap::new(), |mut m, f| {
            *m.entry(f.unit).or_default() += 1;
            m
        });
    println!(
        "frames per unit uplink: {per_unit:?}; MACs {:?}",
        cluster
            .servers
            .iter()
            .map(|s| mac_text(&s.mac))
            .collect::<Vec<_>>()
    );
}

/// One cluster at a time: each is short, and taking turns keeps their timings away from each
/// other's CPU use on small machines.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn whole_unit_kill_moves_every_server_to_the_peer_with_the_same_mac() {
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let kills: usize = std::env::var("VNET_DP_FAILOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    run_scenario(&vec![Fault::KillUnit; kills]);
}

#[test]
fn vnetd_kill_partition_and_drain_move_every_server_with_the_same_mac() {
    let _turn = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run_scenario(&[Fault::KillVnetd, Fault::Partition, Fault::Drain]);
}
