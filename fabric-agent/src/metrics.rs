//! Every metric `vnet-switchd` exports, registered in one place: [`SwitchMetrics::register`].
//!
//! Fences, journal records and journal sync times are counted where they happen (in
//! `server`); ports, slots and the watchdog are read from the switch model at each scrape
//! ([`SwitchMetrics::refresh`]), through the same locked call as any API request, so a scrape
//! after a lapsed deadline fences first and reports the switch as it is.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use vnet_metrics::grpc::{GrpcMethods, GrpcServerMetrics};

use crate::switch::StateView;

/// The service of the switch API, as the protobuf files name it.
pub const SWITCH_SERVICES: [&str; 1] = ["vnet.switch.v1.Switch"];

#[derive(Debug)]
pub struct SwitchMetrics {
    pub fences: Counter,
    pub journal_records: Counter,
    pub journal_sync: Histogram,
    ports_programmed: Gauge,
    ports_cabled: Gauge,
    vfs_used: Gauge,
    npiv_used: Gauge,
    watchdog_armed: Gauge,
    watchdog_remaining: Gauge<f64, AtomicU64>,
    pub halted: Gauge,
    pub grpc: GrpcServerMetrics,
}

impl SwitchMetrics {
    /// Registers every family `vnet-switchd` exports in `registry` (the root registry).
    pub fn register(registry: &mut Registry) -> Arc<SwitchMetrics> {
        let grpc = GrpcServerMetrics::register(registry);
        vnet_metrics::process::register(registry);
        let m = SwitchMetrics {
            fences: Counter::default(),
            journal_records: Counter::default(),
            journal_sync: Histogram::new(vnet_metrics::LATENCY_BUCKETS_SECONDS),
            ports_programmed: Gauge::default(),
            ports_cabled: Gauge::default(),
            vfs_used: Gauge::default(),
            npiv_used: Gauge::default(),
            watchdog_armed: Gauge::default(),
            watchdog_remaining: Gauge::default(),
            halted: Gauge::default(),
            grpc,
        };
        let r = registry.sub_registry_with_prefix(vnet_metrics::PREFIX);
        vnet_metrics::process::register_build_info(r, "vnet-switchd", env!("CARGO_PKG_VERSION"));
        let s = r.sub_registry_with_prefix("switch");
        s.register(
            "fences",
            "Times the watchdog deadline passed and the switch cleared every port",
            m.fences.clone(),
        );
        s.register(
            "journal_records",
            "Records written to the journal",
            m.journal_records.clone(),
        );
        s.register_with_unit(
            "journal_sync_duration",
            "Time to fdatasync the journal before answering a change",
            Unit::Seconds,
            m.journal_sync.clone(),
        );
        s.register(
            "ports_programmed",
            "Host ports presenting a profile",
            m.ports_programmed.clone(),
        );
        s.register(
            "ports_cabled",
            "Host ports cabled to a server",
            m.ports_cabled.clone(),
        );
        s.register(
            "vfs_used",
            "Ethernet virtual functions in use",
            m.vfs_used.clone(),
        );
        s.register(
            "npiv_used",
            "Fibre Channel NPIV logins in use",
            m.npiv_used.clone(),
        );
        s.register(
            "watchdog_armed",
            "1 if the watchdog holds a deadline that has not passed, else 0",
            m.watchdog_armed.clone(),
        );
        s.register_with_unit(
            "watchdog_remaining",
            "Time left before the watchdog fences (0 when unarmed or passed)",
            Unit::Seconds,
            m.watchdog_remaining.clone(),
        );
        s.register(
            "halted",
            "1 if the switch halted because its journal failed, else 0",
            m.halted.clone(),
        );
        Arc::new(m)
    }

    /// The gRPC method table for the switch API.
    pub fn methods() -> GrpcMethods {
        // The descriptor set is generated from the same files as the service; a test checks it.
        GrpcMethods::from_descriptor_sets(&[vnet_proto::FILE_DESCRIPTOR_SET], &SWITCH_SERVICES)
            .unwrap_or_default()
    }

    /// Sets the scrape-time values from the switch's state at `now_mono_ns`.
    pub fn refresh(&self, state: &StateView, now_mono_ns: u64) {
        let programmed = state.ports.iter().filter(|p| p.held.is_some()).count();
        self.ports_programmed.set(programmed as i64);
        self.ports_cabled.set(state.ports.len() as i64);
        self.vfs_used.set(i64::from(state.vfs_used));
        self.npiv_used.set(i64::from(state.npiv_used));
        let remaining_ns = state
            .watchdog_deadline_mono_ns
            .map_or(0, |deadline| deadline.saturating_sub(now_mono_ns));
        self.watchdog_armed.set(i64::from(remaining_ns > 0));
        self.watchdog_remaining
            .set(Duration::from_nanos(remaining_ns).as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_service_is_in_the_descriptor_set() {
        GrpcMethods::from_descriptor_sets(&[vnet_proto::FILE_DESCRIPTOR_SET], &SWITCH_SERVICES)
            .expect("the switch service is described");
    }
}
