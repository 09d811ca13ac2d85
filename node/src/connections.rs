//! What each server port accepts (invariant 8 in ARCHITECTURE.md): at most a configured number
//! of connections at once, each closed once it has sent nothing for the idle timeout.
//!
//! Without a cap, idle TCP connections use up the process's descriptors; then accept fails,
//! every new client (and every peer reconnecting) hangs, and the Raft log cannot open a segment. So:
//!
//! - A connection past the cap is accepted and closed at once, never left in the kernel's
//!   backlog, where its client would hang until its own timeout. A client is told "no" quickly
//!   and retries; the refusal is logged (at most one line per [`REFUSAL_LOG_EVERY`]).
//! - A connection that sends nothing for `idle_timeout_ms` is closed, which frees its slot. The
//!   servers send an HTTP/2 PING every `keepalive_interval_ms` (at most half the idle timeout,
//!   checked by `config`), and every HTTP/2 client answers one at once, even a client that reads
//!   none of its streams; so only a peer that is dead, or never spoke HTTP/2 at all, goes idle.
//! - An accept error (say `EMFILE`) is logged and retried after [`ACCEPT_ERROR_BACKOFF_MS`],
//!   not in a busy loop.
//!
//! At start, [`raise_open_file_limit`] lifts the soft descriptor limit to the hard one and refuses
//! to start if both ports' caps and [`FDS_RESERVED`] cannot fit under it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// At most one log line per limit and this period; the next line counts the refusals between.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after a failed accept, so a full descriptor table does not spin the accept loop.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;
/// Descriptors kept for everything but served connections: the log's segments, snapshots, peer
/// channels, the switch, metrics scrapes, logs.
pub const FDS_RESERVED: u64 = 256;

/// A log line that is written at most once per [`REFUSAL_LOG_EVERY`]: a flood of refusals must
/// not become a flood of log lines.
pub struct RateLimitedLog {
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimitedLog {
    pub const fn new() -> Self {
        Self {
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line is due now, `n` being the events not logged since the last line;
    /// `None` when this event is only counted.
    pub fn due(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < REFUSAL_LOG_EVERY => {
                state.1 += 1;
                None
            }
            _ => {
                let skipped = state.1;
                *state = (Some(now), 0);
                Some(skipped)
            }
        }
    }
}

impl Default for RateLimitedLog {
    fn default() -> Self {
        Self::new()
    }
}

/// The limits of one port.
#[derive(Debug, Clone, Copy)]
pub struct PortLimits {
    /// Which port, as in log lines: `api` or `peer`.
    pub port: &'static str,
    /// The configuration key of `max`, named in log lines.
    pub max_key: &'static str,
    pub max: usize,
    pub idle_timeout: Duration,
}

struct Logs {
    refused: RateLimitedLog,
    idle: RateLimitedLog,
    accept_failed: RateLimitedLog,
}

/// The connections accepted on `listener` within `limits`, each with Nagle's algorithm off (see
/// `fabric_agent::transport::nodelay_incoming` for why).
pub fn limited_incoming(
    listener: TcpListener,
    limits: PortLimits,
) -> impl Stream<Item = io::Result<Limited>> {
    let slots = Arc::new(Semaphore::new(limits.max));
    let logs = Arc::new(Logs {
        refused: RateLimitedLog::new(),
        idle: RateLimitedLog::new(),
        accept_failed: RateLimitedLog::new(),
    });
    futures::stream::unfold(
        (listener, slots, logs),
        move |(listener, slots, logs)| async move {
            loop {
                let (stream, from) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        if let Some(skipped) = logs.accept_failed.due() {
                            tracing::warn!(
                                port = limits.port,
                                error = %e,
                                failed_before = skipped,
                                "cannot accept a connection; retrying"
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    if let Some(skipped) = logs.refused.due() {
                        tracing::warn!(
                            port = limits.port,
                            %from,
                            refused_before = skipped,
                            "refused a connection: {} ({}) connections are open",
                            limits.max_key,
                            limits.max
                        );
                    }
                    drop(stream);
                    continue;
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::warn!(error = %e, "could not turn Nagle off on an accepted connection");
                }
                let connection = Limited {
                    inner: stream,
                    _slot: slot,
                    idle_timeout: limits.idle_timeout,
                    last_read: Instant::now(),
                    idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                    port: limits.port,
                    logs: logs.clone(),
                };
                return Some((Ok(connection), (listener, slots, logs)));
            }
        },
    )
}

/// An accepted connection holding one of its port's slots until it is dropped, and failing its
/// next read once its peer has sent nothing for the idle timeout (hyper then closes it).
pub struct Limited {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle_timeout: Duration,
    last_read: Instant,
    /// Fires at or after `last_read + idle_timeout`; moved forward lazily when it fires, so a
    /// busy connection costs no timer update per read.
    idle: Pin<Box<Sleep>>,
    port: &'static str,
    logs: Arc<Logs>,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.last_read = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => loop {
                // The read is pending, so the task is woken by data or by this timer, whichever
                // comes first.
                match self.idle.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => {
                        let deadline = self.last_read + self.idle_timeout;
                        if Instant::now() >= deadline {
                            if let Some(skipped) = self.logs.idle.due() {
                                let from = self.inner.peer_addr().ok();
                                tracing::info!(
                                    port = self.port,
                                    from = ?from,
                                    closed_before = skipped,
                                    "closed a connection idle for idle_timeout_ms ({} ms)",
                                    self.idle_timeout.as_millis()
                                );
                            }
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the peer sent nothing for idle_timeout_ms",
                            )));
                        }
                        self.idle.as_mut().reset(deadline);
                    }
                }
            },
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft open-file limit to the hard limit (as Go's runtime does), and checks that
/// both ports' connection caps plus [`FDS_RESERVED`] fit under it. Returns the limit in force.
pub fn raise_open_file_limit(
    api_connections_max: usize,
    peer_connections_max: usize,
) -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| anyhow::anyhow!("cannot read the open-file limit: {e}"))?;
    let mut limit = soft;
    if hard > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => limit = hard,
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        }
    }
    let needed = (api_connections_max as u64)
        .saturating_add(peer_connections_max as u64)
        .saturating_add(FDS_RESERVED);
    if needed > limit {
        anyhow::bail!(
            "api_connections_max ({api_connections_max}) + peer_connections_max \
             ({peer_connections_max}) + {FDS_RESERVED} descriptors for files and peers need an \
             open-file limit of {needed}, but it is {limit} (hard limit {hard}); raise it \
             (LimitNOFILE= in the systemd unit, ulimit -n) or lower the caps"
        );
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    fn limits(max: usize, idle_ms: u64) -> PortLimits {
        PortLimits {
            port: "test",
            max_key: "test_connections_max",
            max,
            idle_timeout: Duration::from_millis(idle_ms),
        }
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_is_closed_and_a_freed_slot_is_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = Box::pin(limited_incoming(listener, limits(1, 60_000)));
        let _first = TcpStream::connect(addr).await.expect("connect");
        let held = incoming.next().await.expect("one").expect("accepted");
        assert!(held.inner.nodelay().expect("read the option"));
        let mut second = TcpStream::connect(addr).await.expect("connect");
        // The second is accepted and closed inside the stream, which is waiting for a third.
        let accepting = tokio::spawn(async move {
            let next = incoming.next().await;
            (incoming, next)
        });
        let mut byte = [0u8; 1];
        let read = second.read(&mut byte).await;
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "the connection past the cap was closed: {read:?}"
        );
        drop(held);
        let _third = TcpStream::connect(addr).await.expect("connect");
        let (_incoming, next) = accepting.await.expect("accept task");
        next.expect("a connection")
            .expect("the freed slot serves the third");
    }

    #[tokio::test]
    async fn a_silent_connection_fails_its_read_and_a_talking_one_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = Box::pin(limited_incoming(listener, limits(4, 300)));
        let mut talker = TcpStream::connect(addr).await.expect("connect");
        let mut served = incoming.next().await.expect("one").expect("accepted");
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let mut idle = incoming.next().await.expect("two").expect("accepted");
        let writer = tokio::spawn(async move {
            // Bytes every 100 ms for 900 ms: three idle timeouts, never one without a byte.
            for _ in 0..9 {
                talker.write_all(b"x").await.expect("write");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            talker
        });
        let mut buf = [0u8; 16];
        let mut received = 0;
        while received < 9 {
            let n = served
                .read(&mut buf)
                .await
                .expect("a talking peer is not idle");
            assert!(n > 0, "closed early");
            received += n;
        }
        let err = idle
            .read(&mut buf)
            .await
            .expect_err("the silent peer is idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(writer.await.expect("writer"));
    }

    #[test]
    fn a_rate_limited_log_counts_what_it_skips() {
        let log = RateLimitedLog::new();
        assert_eq!(log.due(), Some(0));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        *log.state.lock().expect("lock") = (Some(std::time::Instant::now() - REFUSAL_LOG_EVERY), 2);
        assert_eq!(log.due(), Some(2));
    }

    #[test]
    fn the_open_file_limit_must_fit_the_caps() {
        let limit = raise_open_file_limit(1, 1).expect("two connections fit");
        let err = raise_open_file_limit(limit as usize, 1)
            .expect_err("more connections than descriptors")
            .to_string();
        assert!(err.contains("api_connections_max"), "{err}");
    }
}
