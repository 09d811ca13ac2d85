//! `vnet-switchd` as a library: the [`Switch`] model behind a lock, its journal, the watchdog
//! thread, and the gRPC service; [`run`] serves them until a shutdown future completes.
//!
//! Every call goes the same way, under one lock: read CLOCK_MONOTONIC, apply the call to the
//! model (which fences first if the deadline has passed), write the events it produced to the
//! journal (one `write()` per record, then one `fdatasync`), and only then answer. So the journal
//! order is the order of changes, each record's `mono_ns` is the time its change took effect, and
//! nothing is acknowledged before it is durable.
//!
//! If the journal cannot be written the switch halts: it drops everything it presents (as a
//! unit losing power would), refuses every later call, and [`run`] returns an error. A switch
//! that presented something it could not record would make the journal a lie.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing_subscriber::EnvFilter;
use vnet_proto::vnet::switch::v1 as pb;
use vnet_proto::vnet::switch::v1::switch_server::SwitchServer;

use crate::clock::{monotonic_now_ns, wall_now_ms};
use crate::config::{Config, DataPlaneConfig};
use crate::convert::{function_to_wire, program_from_wire};
use crate::journal::{self, ClearReason, Event, JournalError, JournalWriter};
use crate::linux::{DataPlaneError, LinuxDataPlane};
use crate::metrics::SwitchMetrics;
use crate::switch::{PortView, StateView, Switch, SwitchError, WatchdogMode};

/// How often the watchdog thread checks the deadline. A fence happens at most this long (plus
/// scheduling delay) after the deadline; `drift_margin` (200 ms by default) must cover it. Any
/// call that arrives in between fences first, so none can act on the lapsed lease.
pub const WATCHDOG_TICK_MS: u64 = 5;

/// Journal records in one `ReadJournal` reply, at most.
pub const JOURNAL_PAGE_RECORDS_MAX: u32 = 1024;

/// How long in-flight calls may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE_MS: u64 = 3_000;

/// Installs the global `tracing` subscriber (stderr). Fails if the filter does not parse.
pub fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Runs a switch until `shutdown` completes (or the switch halts), serving the switch API on
/// `listener` and, if given, `/metrics`, `/health` and `/readyz` on `metrics_listener`.
///
/// Opens (and checks) the journal first and refuses to start if it is damaged; records
/// `Started`; every port starts clear and the watchdog unarmed. Returns an error if the switch
/// halted because its journal failed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (journal, report) = JournalWriter::open(&config.journal)
        .with_context(|| "the switch does not start on a journal it cannot trust")?;
    if report.truncated_bytes > 0 {
        tracing::warn!(
            journal = %config.journal.display(),
            bytes = report.truncated_bytes,
            "cut off a torn last line (a write that never completed, so never acknowledged)"
        );
    }
    let data_plane = match &config.data_plane {
        DataPlaneConfig::Sim => None,
        DataPlaneConfig::Linux(spec) => Some(
            LinuxDataPlane::start(spec.clone())
                .context("the switch does not start without its Linux data plane")?,
        ),
    };
    let instance = format!("{}-{}", std::process::id(), monotonic_now_ns());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = SwitchMetrics::register(&mut registry);
    let shared = Arc::new(Shared::new(
        Switch::new(config.spec.clone()),
        journal,
        instance.clone(),
        metrics.clone(),
        data_plane,
    ));
    shared
        .record_start()
        .context("cannot record the start in the journal")?;
    if config.spec.watchdog == WatchdogMode::UnsafeDisabled {
        tracing::warn!(
            "--unsafe-disable-watchdog: this switch never fences; it can present identities \
             after its lease expired. TEST ONLY: this breaks the no-double-presentation invariant"
        );
    }
    let (watchdog_stop, watchdog) = spawn_watchdog(shared.clone())?;

    let local_addr = listener.local_addr()?;
    let mut halted = shared.halted_rx.clone();
    // Tells the metrics listener too when the API server stops.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            _ = halted.wait_for(|halted| *halted) => {}
        }
        let _ = stop_tx.send(true);
    };
    let (server_tls, unit_node_id) = match &config.tls {
        Some(tls) => (
            Some(Arc::new(
                vnet_tls::ServerTls::new(tls.files.clone())
                    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
            )),
            Some(tls.unit_node_id),
        ),
        None => {
            if !local_addr.ip().is_loopback() {
                tracing::warn!(
                    %local_addr,
                    "serving the switch API in PLAINTEXT on a non-loopback address (--insecure): \
                     anyone who reaches it can program this switch"
                );
            }
            (None, None)
        }
    };
    let server = tonic::transport::Server::builder()
        .layer(vnet_metrics::grpc::GrpcMetricsLayer::new(
            metrics.grpc.clone(),
            SwitchMetrics::methods(),
        ))
        .add_service(SwitchServer::with_interceptor(
            SwitchService {
                shared: shared.clone(),
            },
            move |request: tonic::Request<()>| only_the_unit(request, unit_node_id),
        ))
        .serve_with_incoming_shutdown(
            vnet_tls::secure_incoming(
                crate::transport::nodelay_incoming(listener),
                server_tls,
                "switch",
            ),
            stop,
        );
    let metrics_task = metrics_listener.map(|listener| {
        let refreshed = shared.clone();
        let exposition = Arc::new(vnet_metrics::Exposition::new(
            registry,
            Some(Box::new(move || {
                // A halted switch refuses calls; its gauges keep their last values.
                let _ = refreshed.call(|switch, now_mono_ns| {
                    refreshed
                        .metrics
                        .refresh(&switch.state(now_mono_ns), now_mono_ns);
                    Ok(())
                });
            })),
        ));
        let checked = shared.clone();
        let ready: vnet_metrics::http::Readiness =
            Arc::new(move || match checked.halted_reason() {
                Some(reason) => Err(format!("switch halted: {reason}")),
                None => Ok(()),
            });
        let mut stopped = stop_rx;
        tokio::spawn(vnet_metrics::http::serve(
            listener,
            exposition,
            ready,
            async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            },
        ))
    });
    tracing::info!(
        addr = %local_addr,
        journal = %config.journal.display(),
        instance = %instance,
        records = report.records,
        "switch is serving with every port clear"
    );
    let task = tokio::spawn(server);
    let abort = task.abort_handle();
    let served = task.await;
    if let Some(metrics_task) = metrics_task {
        match tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), metrics_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "metrics server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics server task failed"),
            Err(_) => tracing::warn!("metrics server did not stop within the grace period"),
        }
    }
    let _ = watchdog_stop.send(());
    let _ = tokio::task::spawn_blocking(move || watchdog.join()).await;
    if let Some(reason) = shared.halted_reason() {
        anyhow::bail!("switch halted: {reason}");
    }
    match served {
        Ok(result) => result.context("switch API server failed")?,
        Err(e) => {
            abort.abort();
            anyhow::bail!("switch API server task failed: {e}");
        }
    }
    tracing::info!("switch stopped");
    Ok(())
}

/// The model and its journal, always changed together.
struct Core {
    switch: Switch,
    journal: JournalWriter,
    /// Why the switch halted, once it has.
    halted: Option<String>,
}

/// What the service and the watchdog share.
struct Shared {
    core: Mutex<Core>,
    journal_path: PathBuf,
    instance: String,
    halted_tx: watch::Sender<bool>,
    halted_rx: watch::Receiver<bool>,
    metrics: Arc<SwitchMetrics>,
    /// The kernel side of presenting (`--backend linux`); `None` on the simulated switch.
    data_plane: Option<LinuxDataPlane>,
}

impl Shared {
    fn new(
        switch: Switch,
        journal: JournalWriter,
        instance: String,
        metrics: Arc<SwitchMetrics>,
        data_plane: Option<LinuxDataPlane>,
    ) -> Shared {
        let (halted_tx, halted_rx) = watch::channel(false);
        Shared {
            journal_path: journal.path().to_owned(),
            core: Mutex::new(Core {
                switch,
                journal,
                halted: None,
            }),
            instance,
            halted_tx,
            halted_rx,
            metrics,
            data_plane,
        }
    }

    /// Carries out `events` on the data plane, if there is one.
    fn apply_data_plane(&self, events: &[Event]) -> Result<(), DataPlaneError> {
        match &self.data_plane {
            Some(data_plane) => data_plane.apply(events),
            None => Ok(()),
        }
    }

    /// The data plane could not remove what it presents: nothing here can say the identities
    /// are gone, so the process ends, and its end removes them (the data plane's namespace dies
    /// with the process; see `crate::linux`). Never returns.
    fn data_plane_lost(&self, error: &DataPlaneError) -> ! {
        tracing::error!(
            error = %error,
            "the data plane cannot withdraw what it presents: aborting, which removes it all"
        );
        std::process::abort();
    }

    /// Locks the core. A panic while it was held means a bug left the model in an unknown
    /// state: the switch halts rather than present from it.
    fn lock(&self) -> MutexGuard<'_, Core> {
        match self.core.lock() {
            Ok(core) => core,
            Err(poisoned) => {
                let mut core = poisoned.into_inner();
                self.halt_locked(&mut core, "a panic while changing the switch".to_owned());
                core
            }
        }
    }

    fn halt_locked(&self, core: &mut Core, reason: String) {
        if core.halted.is_none() {
            tracing::error!(reason = %reason, "switch halted: every port dropped, every call refused");
            let held: Vec<Event> = core
                .switch
                .held_ports()
                .into_iter()
                .map(|port| Event::Cleared {
                    port,
                    reason: ClearReason::ClearAll,
                })
                .collect();
            if let Err(e) = self.apply_data_plane(&held) {
                self.data_plane_lost(&e);
            }
            core.switch.halt();
            core.halted = Some(reason);
            self.metrics.halted.set(1);
            let _ = self.halted_tx.send(true);
        }
    }

    fn halt(&self, reason: String) {
        let mut core = self.lock();
        self.halt_locked(&mut core, reason);
    }

    fn halted_reason(&self) -> Option<String> {
        self.lock().halted.clone()
    }

    fn record_start(&self) -> Result<(), JournalError> {
        let mut core = self.lock();
        let event = Event::Started {
            instance: self.instance.clone(),
            data_plane: self.data_plane.as_ref().map(|_| {
                "linux: vNICs are kernel interfaces in the servers' namespaces; vHBAs are \
                 simulated fabric logins (no kernel counterpart)"
                    .to_owned()
            }),
        };
        write_events(
            &mut core.journal,
            monotonic_now_ns(),
            vec![event],
            &self.metrics,
        )
    }

    /// Applies `op` to the model at the current time and journals what it changed before
    /// returning. See the module documentation.
    fn call<T>(
        &self,
        op: impl FnOnce(&mut Switch, u64) -> Result<T, SwitchError>,
    ) -> Result<T, Status> {
        let mut guard = self.lock();
        let core = &mut *guard;
        if let Some(reason) = &core.halted {
            return Err(Status::unavailable(format!(
                "switch halted: {reason}; restart it"
            )));
        }
        // Read under the lock, so records are in time order and each `mono_ns` is the moment
        // the change took effect relative to every other change.
        let now_mono_ns = monotonic_now_ns();
        // The watchdog first, on the model itself: a lapse is fenced, on the data plane too,
        // whatever becomes of the call.
        core.switch.tick(now_mono_ns);
        let mut events = core.switch.take_events();
        if let Err(e) = self.apply_data_plane(&events) {
            self.data_plane_lost(&e);
        }
        // The call runs on a copy that replaces the model only once the data plane has
        // carried it out, so the model (and the journal) never claim what the kernel refused.
        let mut next = core.switch.clone();
        let mut result = op(&mut next, now_mono_ns);
        let changes = next.take_events();
        match self.apply_data_plane(&changes) {
            Ok(()) => {
                core.switch = next;
                events.extend(changes);
            }
            Err(DataPlaneError::PresentFailed { port, message }) => {
                // The data plane removed whatever it had on `port` (a replaced program
                // included): the model clears it too, and the journal says so.
                let _ = core.switch.clear(now_mono_ns, u32::from(port));
                events.extend(core.switch.take_events());
                tracing::warn!(port, error = %message, "the data plane refused a program");
                result = Err(SwitchError::DataPlane {
                    port,
                    reason: message,
                });
            }
            Err(e @ DataPlaneError::WithdrawFailed(_)) => self.data_plane_lost(&e),
        }
        if let Err(e) = write_events(&mut core.journal, now_mono_ns, events, &self.metrics) {
            let reason = format!("the journal cannot be written: {e}");
            self.halt_locked(core, reason.clone());
            return Err(Status::internal(reason));
        }
        result.map_err(status_of)
    }
}

/// Journals `events`, logs them, and makes them durable with one `fdatasync` (none if empty).
fn write_events(
    journal: &mut JournalWriter,
    now_mono_ns: u64,
    events: Vec<Event>,
    metrics: &SwitchMetrics,
) -> Result<(), JournalError> {
    if events.is_empty() {
        return Ok(());
    }
    let wall_ms = wall_now_ms();
    for event in events {
        if matches!(event, Event::Fenced { .. }) {
            metrics.fences.inc();
        }
        let record = journal.append(now_mono_ns, wall_ms, event)?;
        metrics.journal_records.inc();
        log_record(&record);
    }
    let started = std::time::Instant::now();
    let synced = journal.sync();
    metrics
        .journal_sync
        .observe(started.elapsed().as_secs_f64());
    synced
}

fn log_record(record: &journal::Record) {
    match &record.event {
        Event::Fenced {
            ports,
            deadline_mono_ns,
        } => tracing::warn!(
            seq = record.seq,
            ?ports,
            late_ms = record.mono_ns.saturating_sub(*deadline_mono_ns) / 1_000_000,
            "watchdog deadline passed: fenced, every port cleared"
        ),
        Event::Programmed {
            port,
            profile,
            revision,
            functions,
        } => tracing::info!(
            seq = record.seq,
            port,
            profile = %profile,
            revision,
            functions = functions.len(),
            "programmed"
        ),
        Event::Cleared { port, reason } => {
            tracing::info!(seq = record.seq, port, ?reason, "cleared")
        }
        Event::Started {
            instance,
            data_plane,
        } => {
            tracing::info!(seq = record.seq, instance = %instance, data_plane = ?data_plane, "started")
        }
        Event::MacAnnounced { .. } | Event::FabricLogin { .. } => {
            tracing::debug!(seq = record.seq, event = ?record.event, "announced")
        }
    }
}

/// The watchdog: a plain thread rather than an async task, so a starved or blocked async
/// runtime cannot delay the fence, like a hardware timer that runs whatever the firmware does.
/// If it panics, the switch halts: a switch without its watchdog must not go on presenting.
fn spawn_watchdog(
    shared: Arc<Shared>,
) -> anyhow::Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let tick = Duration::from_millis(WATCHDOG_TICK_MS);
    let handle = std::thread::Builder::new()
        .name("switch-watchdog".to_owned())
        .spawn(move || {
            let watched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
                match stop_rx.recv_timeout(tick) {
                    Err(RecvTimeoutError::Timeout) => {
                        // Errors here are a halted switch, which has nothing left to fence.
                        let _ = shared.call(|switch, now_mono_ns| {
                            switch.tick(now_mono_ns);
                            Ok(())
                        });
                    }
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }));
            if watched.is_err() {
                shared.halt("the watchdog thread panicked".to_owned());
            }
        })
        .context("cannot start the watchdog thread")?;
    Ok((stop_tx, handle))
}

/// The one mapping from model errors to gRPC codes (documented in switch.proto).
fn status_of(error: SwitchError) -> Status {
    let message = error.to_string();
    match error {
        SwitchError::PortOutOfRange { .. }
        | SwitchError::PortNotCabled { .. }
        | SwitchError::InvalidArgument { .. } => Status::invalid_argument(message),
        SwitchError::WatchdogNotArmed | SwitchError::LeaseExpired { .. } => {
            Status::failed_precondition(message)
        }
        SwitchError::IdentityPresented { .. } => Status::already_exists(message),
        // The port was cleared; the caller reads the state again and retries.
        SwitchError::DataPlane { .. } => Status::unavailable(message),
        SwitchError::TooManyFunctions { .. }
        | SwitchError::NoFreeVf { .. }
        | SwitchError::NoFreeNpiv { .. } => Status::resource_exhausted(message),
    }
}

fn port_to_wire(view: &PortView) -> pb::PortState {
    let mut port = pb::PortState {
        host_port: u32::from(view.port),
        server: view.server.clone(),
        ..Default::default()
    };
    if let Some(held) = &view.held {
        port.programmed = true;
        port.profile = held.program.profile.clone();
        port.revision = held.program.revision;
        port.functions = held
            .program
            .functions
            .iter()
            .zip(&held.slots)
            .map(|(function, slot)| pb::PresentedFunction {
                function: Some(function_to_wire(function)),
                adapter_port: u32::from(slot.adapter_port),
                slot: u32::from(slot.index),
            })
            .collect();
    }
    port
}

fn state_to_wire(state: &StateView, now_mono_ns: u64, instance: &str) -> pb::GetStateResponse {
    let capacity = state.capacity;
    pb::GetStateResponse {
        ports: state.ports.iter().map(port_to_wire).collect(),
        watchdog_deadline_mono_ns: state.watchdog_deadline_mono_ns,
        fenced: state.fenced,
        now_mono_ns,
        capacity: Some(pb::Capacity {
            eth_ports: u32::from(capacity.eth_ports),
            vfs_per_eth_port: u32::from(capacity.vfs_per_eth_port),
            vfs_used: state.vfs_used,
            fc_ports: u32::from(capacity.fc_ports),
            npiv_per_fc_port: u32::from(capacity.npiv_per_fc_port),
            npiv_used: state.npiv_used,
        }),
        instance: instance.to_owned(),
        watchdog_disabled: state.watchdog == WatchdogMode::UnsafeDisabled,
    }
}

/// The gRPC face of the switch.
#[derive(Clone)]
struct SwitchService {
    shared: Arc<Shared>,
}

impl SwitchService {
    /// Runs `work` on a blocking thread: it takes the lock and writes and syncs the journal,
    /// which must not stall the async workers serving other calls.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|e| Status::internal(format!("switch call did not complete: {e}")))?
    }
}

#[tonic::async_trait]
impl pb::switch_server::Switch for SwitchService {
    async fn program(
        &self,
        request: Request<pb::ProgramRequest>,
    ) -> Result<Response<pb::ProgramResponse>, Status> {
        let request = request.into_inner();
        let program = program_from_wire(&request.profile, request.revision, &request.functions)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(data_plane) = &self.shared.data_plane {
            data_plane
                .spec()
                .check(&program)
                .map_err(|(field, value, reason)| {
                    Status::invalid_argument(format!("invalid {field} {value:?}: {reason}"))
                })?;
        }
        let port = request.host_port;
        let view = self
            .blocking(move |shared| {
                shared.call(move |switch, now_mono_ns| switch.program(now_mono_ns, port, program))
            })
            .await?;
        Ok(Response::new(pb::ProgramResponse {
            port: Some(port_to_wire(&view)),
        }))
    }

    async fn clear(
        &self,
        request: Request<pb::ClearRequest>,
    ) -> Result<Response<pb::ClearResponse>, Status> {
        let port = request.into_inner().host_port;
        let cleared = self
            .blocking(move |shared| {
                shared.call(move |switch, now_mono_ns| switch.clear(now_mono_ns, port))
            })
            .await?;
        Ok(Response::new(pb::ClearResponse { cleared }))
    }

    async fn clear_all(
        &self,
        _request: Request<pb::ClearAllRequest>,
    ) -> Result<Response<pb::ClearAllResponse>, Status> {
        let cleared = self
            .blocking(|shared| shared.call(|switch, now_mono_ns| Ok(switch.clear_all(now_mono_ns))))
            .await?;
        Ok(Response::new(pb::ClearAllResponse {
            cleared_ports: cleared.into_iter().map(u32::from).collect(),
        }))
    }

    async fn get_state(
        &self,
        _request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        let (state, now_mono_ns) = self
            .blocking(|shared| {
                shared.call(|switch, now_mono_ns| Ok((switch.state(now_mono_ns), now_mono_ns)))
            })
            .await?;
        Ok(Response::new(state_to_wire(
            &state,
            now_mono_ns,
            &self.shared.instance,
        )))
    }

    async fn arm_watchdog(
        &self,
        request: Request<pb::ArmWatchdogRequest>,
    ) -> Result<Response<pb::ArmWatchdogResponse>, Status> {
        let deadline_mono_ns = request.into_inner().deadline_mono_ns;
        let (outcome, now_mono_ns) = self
            .blocking(move |shared| {
                shared.call(move |switch, now_mono_ns| {
                    Ok((
                        switch.arm_watchdog(now_mono_ns, deadline_mono_ns),
                        now_mono_ns,
                    ))
                })
            })
            .await?;
        Ok(Response::new(pb::ArmWatchdogResponse {
            deadline_mono_ns: outcome.deadline_mono_ns,
            fenced: outcome.fenced,
            now_mono_ns,
        }))
    }

    async fn read_journal(
        &self,
        request: Request<pb::ReadJournalRequest>,
    ) -> Result<Response<pb::ReadJournalResponse>, Status> {
        let request = request.into_inner();
        let from_seq = request.from_seq.max(1);
        let count = match request.max_records {
            0 => JOURNAL_PAGE_RECORDS_MAX,
            asked => asked.min(JOURNAL_PAGE_RECORDS_MAX),
        };
        let records = self
            .blocking(move |shared| {
                // Only the bounds are read under the lock; written lines never change, so the
                // reading itself does not hold up the switch.
                let page = shared
                    .lock()
                    .journal
                    .page(from_seq, usize::try_from(count).unwrap_or(usize::MAX));
                let Some((first_seq, start, end)) = page else {
                    return Ok(Vec::new());
                };
                read_page(&shared.journal_path, first_seq, start, end)
            })
            .await?;
        let next_seq = records.last().map_or(from_seq, |record| record.seq + 1);
        Ok(Response::new(pb::ReadJournalResponse { records, next_seq }))
    }
}

fn read_page(
    path: &Path,
    first_seq: u64,
    start: u64,
    end: u64,
) -> Result<Vec<pb::JournalRecord>, Status> {
    let lines = journal::read_range(path, first_seq, start, end)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(lines
        .into_iter()
        .map(|(record, json)| pb::JournalRecord {
            seq: record.seq,
            mono_ns: record.mono_ns,
            wall_ms: record.wall_ms,
            json,
        })
        .collect())
}

/// Over TLS, only the unit's own vnetd may call the switch: its node certificate names
/// `unit_node_id` (ARCHITECTURE.md, "Security"). Another node's valid certificate, or a client's,
/// is refused with `PERMISSION_DENIED`. Without TLS (`unit_node_id` is `None`) the switch serves
/// loopback only, unless started with --insecure.
fn only_the_unit(
    request: tonic::Request<()>,
    unit_node_id: Option<u64>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let Some(unit) = unit_node_id else {
        return Ok(request);
    };
    let peer = request
        .extensions()
        .get::<vnet_tls::ConnInfo<tonic::transport::server::TcpConnectInfo>>()
        .and_then(|info| info.peer.clone());
    match peer {
        Some(vnet_tls::PeerIdentity::Node(id)) if id == unit => Ok(request),
        Some(other) => Err(tonic::Status::permission_denied(format!(
            "this switch belongs to node {unit}; {other} may not program it"
        ))),
        None => Err(tonic::Status::unauthenticated(
            "no client certificate: this switch accepts only its unit's vnetd certificate",
        )),
    }
}
