//! The metrics listener: plain HTTP, like etcd's `--listen-metrics-urls`, so Prometheus and load
//! balancers reach it without client certificates or a gRPC client.
//!
//! - `GET /metrics`: every metric, OpenMetrics or text 0.0.4 by the `Accept` header.
//! - `GET /health`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 when the process's own check passes, else 503 with the reason
//!   (readiness: a `vnetd` that knows no leader, a halted switch).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::exposition::{Exposition, Format};

/// Scrapes served at once; more are answered 503 at once. A scrape takes a lock and walks the
/// applied state, so a flood of them must not pile up behind one another.
pub const SCRAPES_IN_FLIGHT_MAX: usize = 4;

/// Whether the process can do its job; `Err` says why not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct Served {
    exposition: Arc<Exposition>,
    ready: Readiness,
    scrapes: Arc<Semaphore>,
}

/// Serves the metrics listener until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    exposition: Arc<Exposition>,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Served {
            exposition,
            ready,
            scrapes: Arc::new(Semaphore::new(SCRAPES_IN_FLIGHT_MAX)),
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(served): State<Served>, headers: HeaderMap) -> Response {
    let Ok(_permit) = served.scrapes.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("more than {SCRAPES_IN_FLIGHT_MAX} scrapes at once\n"),
        )
            .into_response();
    };
    let format = Format::from_accept(
        headers
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok()),
    );
    match served.exposition.render(format) {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(served): State<Served>) -> Response {
    match (served.ready)() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}
