//! Connecting to the cluster over gRPC: the tonic side of [`crate::retry`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::CliError;
use crate::retry::{CallKind, Connector, Failover};
use crate::spec::Endpoints;

/// How vnetctl reaches the cluster: plaintext, or TLS with the given configuration.
pub type Tls = Option<Arc<vnet_tls::ClientTls>>;

/// The TLS of `--cacert`, `--cert`, `--key` (or `VNET_CACERT`, `VNET_CERT`, `VNET_KEY`):
/// none without --cacert; a client certificate needs both --cert and --key.
pub fn tls_from_flags(
    cacert: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<Tls, String> {
    let identity = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert.to_path_buf(), key.to_path_buf())),
        (None, None) => None,
        (Some(_), None) => return Err("--cert needs --key (or VNET_KEY)".to_string()),
        (None, Some(_)) => return Err("--key needs --cert (or VNET_CERT)".to_string()),
    };
    match cacert {
        Some(ca) => {
            vnet_tls::ClientTls::new(ca.to_path_buf(), identity).map(|tls| Some(Arc::new(tls)))
        }
        None if identity.is_some() => Err(
            "--cert and --key need --cacert (or VNET_CACERT), the CA the cluster's \
             certificates come from"
                .to_string(),
        ),
        None => Ok(None),
    }
}

/// Opens HTTP/2 channels to vnetd's public API, over TLS if configured.
#[derive(Debug, Clone)]
pub struct GrpcConnector {
    connect_timeout: Duration,
    tls: Tls,
}

impl GrpcConnector {
    /// Connections that give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration, tls: Tls) -> Self {
        GrpcConnector {
            connect_timeout,
            tls,
        }
    }
}

/// What to do about a connection that failed, when the failure says it: a server that wants
/// TLS, a client certificate, or another CA.
pub fn tls_hint(error: &str, tls: bool) -> Option<&'static str> {
    let lower = error.to_ascii_lowercase();
    if tls {
        if lower.contains("unknownissuer")
            || lower.contains("unknown issuer")
            || lower.contains("badsignature")
        {
            Some(
                "the server's certificate is not signed by --cacert (VNET_CACERT): is it the \
                 cluster's CA?",
            )
        } else if lower.contains("certificaterequired") || lower.contains("certificate required") {
            Some("the server requires a client certificate: give --cert and --key (VNET_CERT, VNET_KEY)")
        } else if lower.contains("badcertificate")
            || lower.contains("unknownca")
            || lower.contains("decrypterror")
            || lower.contains("certificateexpired")
            || lower.contains("certificaterevoked")
        {
            Some(
                "the server refused this client certificate: is it signed by the cluster's CA \
                 and still valid?",
            )
        } else if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
            Some("the server does not speak TLS: leave out --cacert for a plaintext cluster")
        } else if lower.contains("broken pipe") || lower.contains("connection reset") {
            Some(
                "the server closed the connection after the handshake: is --cert signed by the \
                 cluster's CA and still valid?",
            )
        } else {
            None
        }
    } else if lower.contains("connection reset")
        || lower.contains("broken pipe")
        || lower.contains("connection closed")
        || lower.contains("frame")
        || lower.contains("unexpected end")
        || lower.contains("h2 protocol error")
    {
        Some(
            "if the cluster uses TLS, give --cacert, --cert and --key (or VNET_CACERT, VNET_CERT, \
             VNET_KEY)",
        )
    } else {
        None
    }
}

impl Connector for GrpcConnector {
    type Conn = Channel;

    fn hint(&self, error: &str) -> Option<&'static str> {
        tls_hint(error, self.tls.is_some())
    }

    fn connect(
        &self,
        endpoint: &str,
    ) -> impl std::future::Future<Output = Result<Channel, String>> + Send {
        let target = format!("http://{endpoint}");
        let connect_timeout = self.connect_timeout;
        let tls = self.tls.clone();
        async move {
            let endpoint = Endpoint::from_shared(target)
                .map_err(|e| error_chain(&e))?
                .connect_timeout(connect_timeout)
                .tcp_nodelay(true);
            let secure = tls.is_some();
            let connected = match tls {
                Some(tls) => {
                    endpoint
                        .connect_with_connector(vnet_tls::Connector::new(tls))
                        .await
                }
                None => endpoint.connect().await,
            };
            connected.map_err(|e| {
                let text = error_chain(&e);
                match tls_hint(&text, secure) {
                    Some(hint) => format!("{text} ({hint})"),
                    None => text,
                }
            })
        }
    }
}

/// A session with the cluster: the endpoints, their connections, and the failover policy.
pub type Session = Failover<GrpcConnector>;

pub fn open(endpoints: &Endpoints, timeout: Duration, tls: Tls) -> Session {
    Failover::new(
        GrpcConnector::new(timeout, tls),
        endpoints.0.clone(),
        timeout,
    )
}

/// An error and its causes on one line: tonic's own message is only "transport error", and the
/// useful part ("Connection refused") is in the source chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A request carrying the per-request deadline, so the server can give up when the client has.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// One unary RPC through the session: `message` goes out with the per-request deadline to the
/// endpoint the policy picks (and again to the next one when `kind` allows, see
/// [`crate::retry`]); the answer's body comes back, a failure as the policy's [`CliError`].
///
/// `rpc` makes the call on a channel; [`rpc!`] writes it for one method of a generated client:
/// `unary(session, CallKind::Read, message, rpc!(PoolServiceClient::list_pools))`.
pub async fn unary<Req, Resp, F, Fut>(
    session: &mut Session,
    kind: CallKind,
    message: Req,
    rpc: F,
) -> Result<Resp, CliError>
where
    Req: Clone,
    F: Fn(Channel, tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let timeout = session.timeout();
    session
        .call(kind, |channel| {
            rpc(channel, request(message.clone(), timeout))
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The `rpc` argument of [`unary`] for one method of a generated client, e.g.
/// `rpc!(PoolServiceClient::list_pools)`.
macro_rules! rpc {
    ($client:ident :: $method:ident) => {
        |channel, request| async move { $client::new(channel).$method(request).await }
    };
}
pub(crate) use rpc;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_shows_the_cause() {
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(error_chain(&error), "transport error: Connection refused");
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_fails_with_a_reason() {
        // Bind then drop to get a port that nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let connector = GrpcConnector::new(Duration::from_secs(2), None);
        let error = connector.connect(&address.to_string()).await.unwrap_err();
        assert!(error.to_lowercase().contains("refused"), "{error}");
    }

    #[test]
    fn tls_failures_say_what_to_do() {
        let hint = tls_hint("h2 protocol error: http2 error", false).expect("a hint");
        assert!(hint.contains("--cacert"), "{hint}");
        let hint = tls_hint("invalid peer certificate: UnknownIssuer", true).expect("a hint");
        assert!(hint.contains("--cacert"), "{hint}");
        let hint = tls_hint("received fatal alert: CertificateRequired", true).expect("a hint");
        assert!(hint.contains("--cert"), "{hint}");
        let hint = tls_hint("invalid peer certificate: BadSignature", true).expect("a hint");
        assert!(hint.contains("--cacert"), "{hint}");
        let hint = tls_hint("stream closed because of a broken pipe", true).expect("a hint");
        assert!(hint.contains("--cert"), "{hint}");
        assert_eq!(tls_hint("Connection refused", true), None);
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_ca() {
        let cert = std::path::Path::new("c.crt");
        let key = std::path::Path::new("c.key");
        assert!(tls_from_flags(None, None, None)
            .expect("plaintext")
            .is_none());
        let error = tls_from_flags(None, Some(cert), Some(key)).unwrap_err();
        assert!(error.contains("--cacert"), "{error}");
        let error = tls_from_flags(None, Some(cert), None).unwrap_err();
        assert!(error.contains("--key"), "{error}");
        let error = tls_from_flags(
            Some(std::path::Path::new("/nonexistent/ca.crt")),
            None,
            None,
        )
        .unwrap_err();
        assert!(error.contains("/nonexistent/ca.crt"), "{error}");
    }
}
