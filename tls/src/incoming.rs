//! A server's incoming connections with TLS: handshakes done concurrently, each connection
//! tagged with the identity its client certificate names.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::identity::{identity_of, PeerIdentity};
use crate::reload::ServerTls;

/// A served connection: plaintext (a server without TLS) or TLS with its client's identity.
pub enum Secured<IO> {
    Plain(IO),
    Tls(Box<TlsStream<IO>>, PeerIdentity),
}

/// What a served connection tells each of its requests (tonic puts it in their extensions): the
/// inner connection's information and, over TLS, the identity of the client's certificate.
#[derive(Clone, Debug)]
pub struct ConnInfo<T> {
    pub inner: T,
    /// `None` on a plaintext connection.
    pub peer: Option<PeerIdentity>,
}

impl<IO: Connected> Connected for Secured<IO> {
    type ConnectInfo = ConnInfo<IO::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Secured::Plain(io) => ConnInfo {
                inner: io.connect_info(),
                peer: None,
            },
            Secured::Tls(stream, peer) => ConnInfo {
                inner: stream.get_ref().0.connect_info(),
                peer: Some(peer.clone()),
            },
        }
    }
}

/// The connections of `incoming`, secured with `tls` if given (else passed through as plaintext).
/// Each handshake runs in its own task, bounded by [`crate::HANDSHAKE_TIMEOUT`]; a connection
/// whose handshake fails (no certificate, another CA's, expired, not naming anyone) is closed
/// and logged at most once per `port` and 10 seconds, and never reaches the server.
pub fn secure_incoming<S, IO>(
    incoming: S,
    tls: Option<Arc<ServerTls>>,
    port: &'static str,
) -> Pin<Box<dyn Stream<Item = io::Result<Secured<IO>>> + Send>>
where
    S: Stream<Item = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = tls else {
        return Box::pin(MapPlain {
            inner: Box::pin(incoming),
        });
    };
    // Buffered a little: the server takes connections as fast as it can serve them.
    let (sender, receiver) = mpsc::channel::<io::Result<Secured<IO>>>(64);
    tokio::spawn(async move {
        let mut incoming = Box::pin(incoming);
        let refusals = Arc::new(RefusalLog::default());
        loop {
            let next = tokio::select! {
                () = sender.closed() => return,
                next = std::future::poll_fn(|cx| incoming.as_mut().poll_next(cx)) => next,
            };
            let io = match next {
                None => return,
                Some(Err(e)) => {
                    if sender.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(io)) => io,
            };
            let config = tls.config();
            let sender = sender.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let refused = |why: String| {
                    if refusals.due() {
                        tracing::warn!(port, "refused a TLS connection: {why}");
                    }
                };
                let stream =
                    match tokio::time::timeout(crate::HANDSHAKE_TIMEOUT, acceptor.accept(io)).await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return refused(format!("handshake failed: {e}")),
                        Err(_) => {
                            return refused("the handshake did not finish in time".to_string())
                        }
                    };
                let peer = match stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                {
                    Some(cert) => identity_of(cert),
                    None => Err("no client certificate".to_string()),
                };
                match peer {
                    Ok(peer) => {
                        let _ = sender.send(Ok(Secured::Tls(Box::new(stream), peer))).await;
                    }
                    Err(why) => refused(why),
                }
            });
        }
    });
    Box::pin(Receiver { inner: receiver })
}

/// At most one refusal line per 10 seconds per port: a scanner must not flood the log.
#[derive(Default)]
struct RefusalLog {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl RefusalLog {
    fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < std::time::Duration::from_secs(10) => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

struct MapPlain<IO> {
    inner: Pin<Box<dyn Stream<Item = io::Result<IO>> + Send>>,
}

impl<IO> Stream for MapPlain<IO> {
    type Item = io::Result<Secured<IO>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner
            .as_mut()
            .poll_next(cx)
            .map(|next| next.map(|item| item.map(Secured::Plain)))
    }
}

struct Receiver<IO> {
    inner: mpsc::Receiver<io::Result<Secured<IO>>>,
}

impl<IO> Stream for Receiver<IO> {
    type Item = io::Result<Secured<IO>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_recv(cx)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Secured<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Secured::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Secured::Tls(stream, _) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Secured<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Secured::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Secured::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Secured::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Secured::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Secured::Plain(io) => io.is_write_vectored(),
            Secured::Tls(stream, _) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Secured::Plain(io) => Pin::new(io).poll_flush(cx),
            Secured::Tls(stream, _) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Secured::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Secured::Tls(stream, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;
    use crate::reload::{ClientTls, TlsFiles};
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    };
    use rustls_pki_types::ServerName;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::wrappers::TcpListenerStream;
    use tokio_stream::StreamExt;

    /// A client certificate for `name` from the CA in `dir` that expired yesterday.
    fn expired_client(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let ca = std::fs::read_to_string(dir.join(certs::CA_CERT)).expect("ca");
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(dir.join(certs::CA_KEY)).unwrap())
            .expect("ca key");
        let issuer = Issuer::from_ca_cert_pem(&ca, ca_key).expect("issuer");
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let (cert_path, key_path) = (dir.join("expired.crt"), dir.join("expired.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        (cert_path, key_path)
    }

    /// Connects with `client`, sends a byte and reads one back: `Ok` only if the server kept
    /// the connection (the test server below echoes).
    async fn exchange(addr: std::net::SocketAddr, client: &ClientTls) -> Result<(), String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let mut stream = tokio_rustls::TlsConnector::from(client.config())
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => Ok(()),
            Ok(_) => Err("closed".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn only_a_current_certificate_of_the_ca_gets_through_and_names_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        for d in [dir.path(), other.path()] {
            certs::create_ca(d, 1, false).expect("ca");
            certs::create_node(d, None, 1, &["127.0.0.1".into()], 1, false).expect("node");
            certs::create_client(d, None, "alice", 1, false).expect("client");
        }
        let files = |d: &Path| TlsFiles {
            ca: d.join(certs::CA_CERT),
            cert: d.join("node-1.crt"),
            key: d.join("node-1.key"),
        };
        let server = Arc::new(ServerTls::new(files(dir.path())).expect("server tls"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let incoming = TcpListenerStream::new(listener);
        let mut secured = secure_incoming(incoming, Some(server), "test");
        // Echo one byte on every connection that gets through, and report who it was.
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(connection)) = secured.next().await {
                let Secured::Tls(mut stream, peer) = connection else {
                    panic!("a plaintext connection came through a TLS port");
                };
                let _ = seen_tx.send(peer);
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    if stream.read(&mut byte).await.is_ok() {
                        let _ = stream.write_all(&byte).await;
                    }
                });
            }
        });
        let ca = dir.path().join(certs::CA_CERT);
        let client = |cert: &Path, key: &Path| {
            ClientTls::new(ca.clone(), Some((cert.to_path_buf(), key.to_path_buf())))
                .expect("client tls")
        };
        let (expired_cert, expired_key) = expired_client(dir.path(), "mallory");
        let refused = [
            (
                "no certificate",
                ClientTls::new(ca.clone(), None).expect("tls"),
            ),
            (
                "another CA's",
                client(
                    &other.path().join("client-alice.crt"),
                    &other.path().join("client-alice.key"),
                ),
            ),
            ("an expired one", client(&expired_cert, &expired_key)),
        ];
        for (what, tls) in &refused {
            let error = exchange(addr, tls).await.expect_err(what);
            println!("{what}: {error}");
        }
        exchange(
            addr,
            &client(
                &dir.path().join("client-alice.crt"),
                &dir.path().join("client-alice.key"),
            ),
        )
        .await
        .expect("the CA's current client certificate");
        // The refused connections never reached the server: the first one it saw is alice's.
        assert_eq!(
            seen.recv().await,
            Some(PeerIdentity::Client("alice".into()))
        );
        exchange(
            addr,
            &client(
                &dir.path().join("node-1.crt"),
                &dir.path().join("node-1.key"),
            ),
        )
        .await
        .expect("a node certificate");
        assert_eq!(seen.recv().await, Some(PeerIdentity::Node(1)));
    }
}
