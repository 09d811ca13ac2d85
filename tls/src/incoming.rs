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
