//! Logging and traces. Logs: `tracing` to stderr, as text or JSON lines, filtered by
//! `--log-level`. Traces (off unless `--otlp-endpoint` is set): this crate's spans exported over
//! OTLP/gRPC to a collector, and the W3C trace context (`traceparent`) carried in gRPC metadata,
//! so a request is one trace from the client through the node it reached to the leader.
//!
//! The spans: `grpc` for each public API call (a child of the client's context if it sent one),
//! `execute` for each request on its way to the leader, `forward` for the hop to the leader,
//! `leader` where the leader runs a forwarded request, and `raft_write` for a proposal until it
//! is committed and applied. A failover is one trace through the Raft log rather than an RPC:
//! `failover` on the leader (with `revoke_lease` and `commit_failover`), then `present` and
//! `report_presented` on the unit that takes over (ARCHITECTURE.md, "Traces").

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Where and as whom to export traces.
#[derive(Debug, Clone)]
pub struct TraceExport {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// This node's name, exported as the resource's `service.instance.id`.
    pub instance: String,
}

/// What must outlive the program's work: the trace pipeline, flushed by [`Telemetry::shutdown`].
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered, then stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("vnetd: traces not flushed at exit: {e}");
            }
        }
    }
}

/// Installs the global subscriber: the log layer, and the trace exporter if `traces` is given.
/// Fails if the filter does not parse (naming it) or the exporter cannot be built. Must run inside
/// the Tokio runtime when exporting: the gRPC exporter's channel lives there.
pub fn init(
    level: &str,
    format: LogFormat,
    traces: Option<&TraceExport>,
) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("invalid log_level {level:?}: {e}"))?;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    }
    .with_filter(filter);
    let (spans, tracer_provider) = match traces {
        Some(export) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(export.endpoint.clone())
                .build()
                .map_err(|e| {
                    anyhow::anyhow!("cannot export traces to {:?}: {e}", export.endpoint)
                })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name("vnetd")
                        .with_attribute(KeyValue::new(
                            "service.instance.id",
                            export.instance.clone(),
                        ))
                        .build(),
                )
                .build();
            // Only this crate's spans: openraft's and tonic's internals would drown them.
            let ours = Targets::new().with_target("vnet_node", tracing::Level::INFO);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("vnetd"))
                .with_filter(ours);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(Telemetry { tracer_provider })
}

/// Writes the current span's trace context into outgoing gRPC metadata (`traceparent`). Writes
/// nothing when traces are off.
pub fn inject(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataCarrier(metadata))
    });
}

/// The W3C `traceparent` of the current span, if traces are on and it is in a trace: what a node
/// writes into a Raft entry so the nodes applying it continue the trace.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut fields = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut fields)
    });
    fields.remove("traceparent")
}

/// Whether `traceparent` is a well-formed W3C trace context of version 00, the only kind a
/// node writes. A Raft entry's trace that is not is dropped, not propagated.
pub fn is_traceparent(traceparent: &str) -> bool {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && traceparent_trace_id(traceparent).is_some()
}

/// Makes `span` (created without a parent) the child of the trace context `traceparent` when
/// there is one — the trace of the Raft entry that caused the work — and returns it.
pub fn span_continuing(traceparent: Option<&str>, span: tracing::Span) -> tracing::Span {
    if let Some(traceparent) = traceparent.filter(|t| is_traceparent(t)) {
        let mut fields = std::collections::HashMap::new();
        fields.insert("traceparent".to_owned(), traceparent.to_owned());
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&fields)
        });
        // Fails only when no trace layer is installed, and then there is nothing to link.
        let _ = span.set_parent(parent);
    }
    span
}

/// Makes the trace context found in incoming gRPC metadata, if any, the parent of `span`, and
/// records the request's trace id in the span's `trace_id` field, so that every log line written
/// inside the request names its trace (text and JSON logs print the fields of the spans a line is
/// in). The id is the exported trace's when traces are on, else the caller's from `traceparent`;
/// a request with neither has no trace to name and the field stays empty.
pub fn continue_trace(span: &tracing::Span, metadata: &MetadataMap) {
    if metadata.contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&MetadataReader(metadata))
        });
        // Fails only when no trace layer is installed, and then there is nothing to link.
        let _ = span.set_parent(parent);
    }
    let exported = span.context().span().span_context().trace_id();
    let trace_id = if exported != opentelemetry::trace::TraceId::INVALID {
        Some(exported.to_string())
    } else {
        metadata
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(traceparent_trace_id)
    };
    if let Some(trace_id) = trace_id {
        span.record("trace_id", trace_id.as_str());
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is one: 32
/// lowercase hex digits, not all zero.
fn traceparent_trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    (trace_id.len() == 32 && trace_id.chars().all(hex) && trace_id.chars().any(|c| c != '0'))
        .then(|| trace_id.to_owned())
}

struct MetadataCarrier<'a>(&'a mut MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataReader<'a>(&'a MetadataMap);

impl Extractor for MetadataReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_wrote() {
        let mut metadata = MetadataMap::new();
        MetadataCarrier(&mut metadata).set(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        let reader = MetadataReader(&metadata);
        assert_eq!(
            reader.get("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(reader.keys(), vec!["traceparent"]);
        // A value gRPC metadata cannot carry is dropped, not sent garbled.
        MetadataCarrier(&mut metadata).set("tracestate", "a=\u{7}".to_owned());
        assert!(metadata.get("tracestate").is_none());
    }

    #[test]
    fn finds_the_trace_id_of_a_traceparent_and_nothing_in_garbage() {
        assert_eq!(
            traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736\n-00f067aa0ba902b7-01",
        ] {
            assert_eq!(traceparent_trace_id(bad), None, "{bad:?}");
            assert!(!is_traceparent(bad), "{bad:?}");
        }
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01"
        ));
    }
}
