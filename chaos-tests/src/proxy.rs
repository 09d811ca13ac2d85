//! A delaying TCP proxy on the peer path: the kernel here has no `netem`, so added delay comes
//! from holding bytes back in user space.
//!
//! Each node advertises its peer address on its host's address, where this proxy listens; the
//! node's own peer listener is on the host's loopback, reachable only through the proxy. So
//! every Raft message *into* a node passes its proxy (in both directions of the connection),
//! and nftables rules on the host address still apply to it. Each chunk read is forwarded no
//! earlier than its arrival plus the current delay; chunks stay in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::netns::spawn_in_netns;

/// Largest chunk read and forwarded at once.
pub const PROXY_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Chunks held back per direction of one connection; a full queue stops reading, so a delayed
/// link pushes back on its sender instead of buffering without bound.
pub const PROXY_CHUNKS_QUEUED_MAX: usize = 256;
/// How long connecting to the node behind the proxy may take. It is on the same host, so a
/// slow connect means the node is stopped (SIGSTOP) or gone.
pub const PROXY_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// A running proxy; dropping it stops it and closes every connection through it.
pub struct DelayProxy {
    pub listen: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl DelayProxy {
    /// Starts a proxy from `listen` to `upstream`, both in namespace `ns`. Returns once it
    /// listens.
    pub fn start(ns: &str, listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<Self> {
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let delay = delay_ms.clone();
        let thread = spawn_in_netns(ns, "delay-proxy", move || async move {
            let listener = match TcpListener::bind(listen).await {
                Ok(l) => {
                    let _ = bound_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e.to_string()));
                    return Ok(());
                }
            };
            serve(listener, upstream, delay, shutdown_rx).await;
            Ok(())
        })?;
        match bound_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("delay proxy cannot listen on {listen} in {ns}: {e}"),
            Err(_) => {
                let outcome = thread.join();
                anyhow::bail!("delay proxy thread for {listen} in {ns} ended: {outcome:?}")
            }
        }
        Ok(Self {
            listen,
            delay_ms,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Sets the delay applied from now on to every chunk in both directions.
    pub fn set_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn delay_ms(&self) -> u64 {
        self.delay_ms.load(Ordering::SeqCst)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((downstream, _)) = accepted else { continue };
                let delay_ms = delay_ms.clone();
                // Tasks die with the runtime when `serve` returns, closing their sockets.
                tokio::spawn(async move {
                    let connect = tokio::time::timeout(
                        Duration::from_millis(PROXY_UPSTREAM_CONNECT_TIMEOUT_MS),
                        TcpStream::connect(upstream),
                    )
                    .await;
                    let Ok(Ok(upstream)) = connect else {
                        // The node is down: closing tells the peer at once, as a dead
                        // process's host would (with a reset).
                        return;
                    };
                    let _ = downstream.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let (down_read, down_write) = downstream.into_split();
                    let (up_read, up_write) = upstream.into_split();
                    // Either direction ending ends the connection: gRPC never half-closes.
                    tokio::select! {
                        _ = pump(down_read, up_write, delay_ms.clone()) => {}
                        _ = pump(up_read, down_write, delay_ms) => {}
                    }
                });
            }
        }
    }
}

/// Copies `from` to `to`, each chunk no earlier than its arrival plus the delay.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay_ms: Arc<AtomicU64>) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(PROXY_CHUNKS_QUEUED_MAX);
    let reader = async move {
        let mut buf = vec![0u8; PROXY_CHUNK_BYTES_MAX];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due =
                        Instant::now() + Duration::from_millis(delay_ms.load(Ordering::SeqCst));
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // The writer drains what the reader queued before the reader ended.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pump_delays_and_keeps_order() {
        // Loopback in the test's own namespace: pump two sockets together and time a round.
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.expect("accept");
            let mut buf = [0u8; 64];
            loop {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                s.write_all(&buf[..n]).await.expect("write");
            }
        });
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let front_addr = front.local_addr().expect("addr");
        let delay = Arc::new(AtomicU64::new(100));
        let (_stop, stop_rx) = watch::channel(false);
        tokio::spawn(serve(front, echo_addr, delay.clone(), stop_rx));

        let mut client = TcpStream::connect(front_addr).await.expect("connect");
        let started = Instant::now();
        client.write_all(b"abc").await.expect("write");
        let mut got = [0u8; 3];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"abc");
        // Held back once on the way in and once on the way out: never earlier than that.
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "round trip {:?} shorter than the added delay",
            started.elapsed()
        );
        delay.store(0, Ordering::SeqCst);
        client.write_all(b"defgh").await.expect("write");
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"defgh");
    }
}
