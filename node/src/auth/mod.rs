//! Who is calling: the identity the transport established for a connection, handed to every
//! request as a [`Principal`] in its extensions.
//!
//! The server's incoming connections ([`vnet_tls::secure_incoming`]) carry a
//! [`ConnectionIdentity`] (tonic puts a connection's `Connected::ConnectInfo` into each of its
//! requests' extensions): the TCP addresses and, over TLS, the identity the client's verified
//! certificate names. [`PrincipalLayer`], a tower layer on every server, turns it into a
//! [`Principal`] and copies the addresses out, so a handler
//! reads `request.extensions().get::<Principal>()` (or calls [`principal`]) and
//! `request.remote_addr()` works as before. A request that carries no principal is answered
//! `UNAUTHENTICATED`: no connection of a vnetd server is without one, so this means a server was
//! put together without the layer, and refusing is the safe answer.
//!
//! What follows from the principal: [`roles`] (may it make this call; what actor it writes as),
//! [`audit`] (the record of the call) and [`edge`] (the called method beside it, and the
//! test-only principal source).
//!
//! How a principal is named (ARCHITECTURE.md, "Security"):
//! - a client certificate: [`Principal::Client`] with the certificate's subject Common Name;
//! - a node certificate (a SAN URI `vnet://node/<id>`): [`Principal::Node`] with that id;
//! - a plaintext connection, served only with `--insecure` or on loopback: [`Principal::Insecure`].

pub mod audit;
pub mod edge;
pub mod roles;

use std::task::{Context, Poll};

use tonic::transport::server::TcpConnectInfo;

/// Who is calling, as established by the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A client certificate's identity: its subject Common Name.
    Client(String),
    /// A cluster member's certificate (names the node id, SAN URI `vnet://node/<id>`).
    Node(u64),
    /// No TLS: the server runs with --insecure (or on loopback without TLS).
    Insecure,
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Client(name) => write!(f, "client {name}"),
            Principal::Node(id) => write!(f, "node {id}"),
            Principal::Insecure => f.write_str("insecure (no TLS)"),
        }
    }
}

/// What a served connection tells each of its requests: its addresses and, over TLS, the
/// identity of its client's certificate (`None`: plaintext).
pub type ConnectionIdentity = vnet_tls::ConnInfo<TcpConnectInfo>;

impl Principal {
    /// The principal of a connection: what its certificate names, or [`Principal::Insecure`]
    /// without TLS.
    pub fn of(peer: Option<&vnet_tls::PeerIdentity>) -> Principal {
        match peer {
            None => Principal::Insecure,
            Some(vnet_tls::PeerIdentity::Node(id)) => Principal::Node(*id),
            Some(vnet_tls::PeerIdentity::Client(name)) => Principal::Client(name.clone()),
        }
    }
}

/// The caller of `request`, or `UNAUTHENTICATED` if the transport established none.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("the connection established no principal"))
}

/// A tower layer for a tonic server: copies each request's [`ConnectionIdentity`] into a
/// [`Principal`] and a `TcpConnectInfo` in its extensions.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrincipalLayer;

impl<S> tower::Layer<S> for PrincipalLayer {
    type Service = PrincipalService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PrincipalService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct PrincipalService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for PrincipalService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Whatever a client sent cannot be here: extensions are never read off the wire.
        request.extensions_mut().remove::<Principal>();
        if let Some(identity) = request.extensions().get::<ConnectionIdentity>().cloned() {
            request.extensions_mut().insert(identity.inner);
            request
                .extensions_mut()
                .insert(Principal::of(identity.peer.as_ref()));
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    /// Answers with what the layer left in the request's extensions.
    struct Capture;

    impl Service<http::Request<()>> for Capture {
        type Response = (Option<Principal>, Option<std::net::SocketAddr>);
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let principal = request.extensions().get::<Principal>().cloned();
            let remote = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|info| info.remote_addr());
            std::future::ready(Ok((principal, remote)))
        }
    }

    #[tokio::test]
    async fn the_layer_hands_the_connection_principal_and_address_to_the_request() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        use tonic::transport::server::Connected;
        let tcp = accepted.connect_info();
        let mut service = PrincipalLayer.layer(Capture);
        let mut request = http::Request::new(());
        request.extensions_mut().insert(ConnectionIdentity {
            inner: tcp.clone(),
            peer: Some(vnet_tls::PeerIdentity::Client("alice".into())),
        });
        let (principal, remote) = service.call(request).await.expect("infallible");
        assert_eq!(principal, Some(Principal::Client("alice".into())));
        assert_eq!(remote, Some(client.local_addr().expect("addr")));
        let mut request = http::Request::new(());
        request.extensions_mut().insert(ConnectionIdentity {
            inner: tcp,
            peer: None,
        });
        let (principal, _) = service.call(request).await.expect("infallible");
        assert_eq!(principal, Some(Principal::Insecure));
        // No connection identity: no principal, whatever else the request holds.
        let mut request = http::Request::new(());
        request.extensions_mut().insert(Principal::Node(1));
        let (principal, _) = service.call(request).await.expect("infallible");
        assert_eq!(principal, None);
    }

    #[test]
    fn a_request_without_a_principal_is_unauthenticated() {
        let request = tonic::Request::new(());
        let status = principal(&request).expect_err("no principal");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut request = tonic::Request::new(());
        request.extensions_mut().insert(Principal::Node(2));
        assert_eq!(principal(&request).expect("one"), Principal::Node(2));
    }
}
