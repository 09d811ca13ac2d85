//! Where a request's principal and method are put beside it, for the API edge to check
//! (`api::Api::guarded`).
//!
//! [`EdgeLayer`] wraps the public server inside `auth::PrincipalLayer`. It records the called
//! method (the request's path) as a [`CalledMethod`] extension, since tonic hands a handler no
//! path. The principal is the transport's (`PrincipalLayer`), except under a
//! [`PrincipalSource::Test`] (reachable only through `run_with`, which `vnetd` never calls with
//! one), which decides it from the request, so in-process tests can act as any principal without
//! certificates. No header a client sends is ever read as a principal by `vnetd` itself.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::Principal;

/// The full gRPC path of the call, e.g. `/vnet.v1.ProfileService/CreateProfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalledMethod(pub String);

/// Decides a test request's principal from its headers; `None` leaves it without one.
pub type TestPrincipals = Arc<dyn Fn(&http::HeaderMap) -> Option<Principal> + Send + Sync>;

/// Where the principal of a public call comes from.
#[derive(Clone, Default)]
pub enum PrincipalSource {
    /// The transport: the connection's certificate, or `Insecure` without TLS.
    #[default]
    Transport,
    /// In-process tests only: the function decides.
    Test(TestPrincipals),
}

impl std::fmt::Debug for PrincipalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrincipalSource::Transport => f.write_str("Transport"),
            PrincipalSource::Test(_) => f.write_str("Test"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct EdgeLayer {
    source: PrincipalSource,
}

impl EdgeLayer {
    pub fn new(source: PrincipalSource) -> EdgeLayer {
        EdgeLayer { source }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeService {
            inner,
            source: self.source.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EdgeService<S> {
    inner: S,
    source: PrincipalSource,
}

impl<S, B> Service<http::Request<B>> for EdgeService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = CalledMethod(request.uri().path().to_string());
        if let PrincipalSource::Test(decide) = &self.source {
            let principal = decide(request.headers());
            let extensions = request.extensions_mut();
            extensions.remove::<Principal>();
            if let Some(principal) = principal {
                extensions.insert(principal);
            }
        }
        request.extensions_mut().insert(method);
        self.inner.call(request)
    }
}
