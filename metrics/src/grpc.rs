//! gRPC server metrics in the shape of go-grpc-prometheus, so its dashboards and alerts work
//! unchanged:
//!
//! - `grpc_server_started_total{grpc_type, grpc_service, grpc_method}`
//! - `grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}`
//! - `grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}` (histogram)
//!
//! [`GrpcMetricsLayer`] wraps a tonic server. A call counts as handled when its status is known:
//! from the response headers for a trailers-only answer (how tonic answers an error), else from
//! the trailers at the end of the body, so a server stream is timed until it ends. A call whose
//! response is dropped before its status was sent (the client went away) counts as `Canceled`.
//!
//! Labels come from [`GrpcMethods`], built from the protobuf descriptors of the served services:
//! a path that names no served method counts as `unknown`/`unknown`, so a client sending made-up
//! paths cannot grow the label sets. (The messages-sent/received counters of go-grpc-prometheus
//! are not kept: counting them means parsing every frame.)

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use prost::Message;
use tower::{Layer, Service};

/// What identifies a call in every family.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub grpc_type: &'static str,
    pub grpc_service: String,
    pub grpc_method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    pub grpc_type: &'static str,
    pub grpc_service: String,
    pub grpc_method: String,
    pub grpc_code: &'static str,
}

type HistogramFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

fn handling_histogram() -> Histogram {
    Histogram::new(crate::LATENCY_BUCKETS_SECONDS)
}

/// The three families; one per process, shared by all its servers.
#[derive(Debug, Clone)]
pub struct GrpcServerMetrics {
    pub started: Family<CallLabels, Counter>,
    pub handled: Family<HandledLabels, Counter>,
    pub handling: HistogramFamily,
}

impl GrpcServerMetrics {
    /// Registers the families in `registry` (the root one: these names carry no `vnet_` prefix).
    pub fn register(registry: &mut Registry) -> GrpcServerMetrics {
        let metrics = GrpcServerMetrics {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(handling_histogram),
        };
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            metrics.handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Histogram of response latency of gRPC calls handled by the server, until the status is sent",
            Unit::Seconds,
            metrics.handling.clone(),
        );
        metrics
    }
}

/// The served methods by request path (`/package.Service/Method`), with their labels.
#[derive(Debug, Clone, Default)]
pub struct GrpcMethods {
    by_path: HashMap<String, CallLabels>,
}

/// A path that names no served method.
const UNKNOWN: &str = "unknown";

impl GrpcMethods {
    /// The methods of `services` (full names, `vnet.v1.ProfileService`) as described in encoded
    /// `FileDescriptorSet`s. Fails if a set does not decode or a service is in none of them,
    /// which is a build error, not an operating one.
    pub fn from_descriptor_sets(
        encoded: &[&[u8]],
        services: &[&str],
    ) -> Result<GrpcMethods, String> {
        let mut files = Vec::new();
        for set in encoded {
            let set = prost_types::FileDescriptorSet::decode(*set)
                .map_err(|e| format!("a descriptor set does not decode: {e}"))?;
            files.extend(set.file);
        }
        let mut by_path = HashMap::new();
        for wanted in services {
            let mut found = false;
            for file in &files {
                for service in &file.service {
                    let full_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    if full_name != *wanted {
                        continue;
                    }
                    found = true;
                    for method in &service.method {
                        let grpc_type = match (
                            method.client_streaming.unwrap_or(false),
                            method.server_streaming.unwrap_or(false),
                        ) {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        by_path.insert(
                            format!("/{full_name}/{}", method.name()),
                            CallLabels {
                                grpc_type,
                                grpc_service: full_name.clone(),
                                grpc_method: method.name().to_owned(),
                            },
                        );
                    }
                }
            }
            if !found {
                return Err(format!("service {wanted} is not in the descriptor set"));
            }
        }
        Ok(GrpcMethods { by_path })
    }

    /// The labels of the call at `path`; `unknown` for a path that is not a served method.
    pub fn labels(&self, path: &str) -> CallLabels {
        self.by_path.get(path).cloned().unwrap_or(CallLabels {
            grpc_type: "unary",
            grpc_service: UNKNOWN.to_owned(),
            grpc_method: UNKNOWN.to_owned(),
        })
    }
}

/// Meters every call of the server it wraps.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: GrpcServerMetrics,
    methods: Arc<GrpcMethods>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: GrpcServerMetrics, methods: GrpcMethods) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics,
            methods: Arc::new(methods),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for GrpcMetricsService<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
{
    type Response = http::Response<MeteredBody<ResponseBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let labels = self.layer.methods.labels(request.uri().path());
        self.layer.metrics.started.get_or_create(&labels).inc();
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(Call {
                labels,
                started_at: Instant::now(),
                metrics: self.layer.metrics.clone(),
                finished: false,
            }),
        }
    }
}

/// One call in flight; counted as handled exactly once, `Canceled` if dropped unfinished.
struct Call {
    labels: CallLabels,
    started_at: Instant,
    metrics: GrpcServerMetrics,
    finished: bool,
}

impl Call {
    fn finish(&mut self, code: &'static str) {
        if self.finished {
            return;
        }
        self.finished = true;
        let CallLabels {
            grpc_type,
            grpc_service,
            grpc_method,
        } = self.labels.clone();
        self.metrics
            .handled
            .get_or_create(&HandledLabels {
                grpc_type,
                grpc_service,
                grpc_method,
                grpc_code: code,
            })
            .inc();
        self.metrics
            .handling
            .get_or_create(&self.labels)
            .observe(self.started_at.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("Canceled");
    }
}

pin_project_lite::pin_project! {
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResponseBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResponseBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(code) = status_code(response.headers()) {
                    if let Some(call) = call.as_mut() {
                        call.finish(code);
                    }
                    call = None;
                }
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(e) => {
                if let Some(call) = call.as_mut() {
                    call.finish("Unknown");
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's status when its trailers pass.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(code) = frame.trailers_ref().and_then(status_code) {
                        call.finish(code);
                    }
                }
                // A gRPC body always ends with trailers; one that fails or ends without them
                // gave the client no status.
                Some(Err(_)) | None => call.finish("Unknown"),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `grpc-status` in `headers`, named as gRPC's `codes.Code.String()` names it.
fn status_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    let code = value.to_str().ok()?.parse::<u8>().ok();
    Some(match code {
        Some(0) => "OK",
        Some(1) => "Canceled",
        Some(3) => "InvalidArgument",
        Some(4) => "DeadlineExceeded",
        Some(5) => "NotFound",
        Some(6) => "AlreadyExists",
        Some(7) => "PermissionDenied",
        Some(8) => "ResourceExhausted",
        Some(9) => "FailedPrecondition",
        Some(10) => "Aborted",
        Some(11) => "OutOfRange",
        Some(12) => "Unimplemented",
        Some(13) => "Internal",
        Some(14) => "Unavailable",
        Some(15) => "DataLoss",
        Some(16) => "Unauthenticated",
        _ => "Unknown",
    })
}

#[cfg(test)]
mod tests {
    use prost_types::{
        FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
    };

    use super::*;

    fn descriptor_set() -> Vec<u8> {
        let method = |name: &str, server_streaming: bool| MethodDescriptorProto {
            name: Some(name.to_owned()),
            server_streaming: Some(server_streaming),
            ..Default::default()
        };
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("vnet.v1".to_owned()),
                service: vec![ServiceDescriptorProto {
                    name: Some("WatchService".to_owned()),
                    method: vec![method("Watch", true), method("Get", false)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn labels_come_from_served_methods_only() {
        let methods =
            GrpcMethods::from_descriptor_sets(&[&descriptor_set()], &["vnet.v1.WatchService"])
                .unwrap();
        let watch = methods.labels("/vnet.v1.WatchService/Watch");
        assert_eq!(
            (
                watch.grpc_type,
                watch.grpc_service.as_str(),
                watch.grpc_method.as_str()
            ),
            ("server_stream", "vnet.v1.WatchService", "Watch")
        );
        assert_eq!(
            methods.labels("/vnet.v1.WatchService/Get").grpc_type,
            "unary"
        );
        let made_up = methods.labels("/vnet.v1.WatchService/x\u{7}y");
        assert_eq!(
            (made_up.grpc_service.as_str(), made_up.grpc_method.as_str()),
            ("unknown", "unknown")
        );
        assert!(
            GrpcMethods::from_descriptor_sets(&[&descriptor_set()], &["vnet.v1.Nope"]).is_err()
        );
    }

    #[test]
    fn status_names_match_grpc_go() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_code(&headers), None);
        for (value, name) in [
            ("0", "OK"),
            ("5", "NotFound"),
            ("14", "Unavailable"),
            ("99", "Unknown"),
        ] {
            headers.insert("grpc-status", value.parse().unwrap());
            assert_eq!(status_code(&headers), Some(name));
        }
    }

    #[test]
    fn a_dropped_call_counts_as_canceled_once() {
        let metrics = GrpcServerMetrics::register(&mut Registry::default());
        let labels = CallLabels {
            grpc_type: "unary",
            grpc_service: "s".to_owned(),
            grpc_method: "m".to_owned(),
        };
        let handled = |code| HandledLabels {
            grpc_type: "unary",
            grpc_service: "s".to_owned(),
            grpc_method: "m".to_owned(),
            grpc_code: code,
        };
        let call = |metrics: &GrpcServerMetrics| Call {
            labels: labels.clone(),
            started_at: Instant::now(),
            metrics: metrics.clone(),
            finished: false,
        };
        drop(call(&metrics));
        let mut finished = call(&metrics);
        finished.finish("OK");
        finished.finish("Internal");
        drop(finished);
        assert_eq!(metrics.handled.get_or_create(&handled("Canceled")).get(), 1);
        assert_eq!(metrics.handled.get_or_create(&handled("OK")).get(), 1);
        assert_eq!(metrics.handled.get_or_create(&handled("Internal")).get(), 0);
    }
}
