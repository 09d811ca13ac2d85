//! Serving gRPC on a listener the caller bound (so tests and the chaos harness can bind port 0).

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};

/// The connections accepted on `listener`, each with Nagle's algorithm off.
///
/// tonic sets `TCP_NODELAY` only on sockets it accepts itself; on an incoming stream it takes
/// the sockets as they come. A gRPC answer is several small writes (headers, message,
/// trailers): with Nagle on, the later writes wait for the peer's ACK of the first, and Linux
/// delays that ACK by up to 40 ms, so every call through such a server paid about 40 ms (the
/// forwarded writes and the peer round trips of vnetd, the switch API). A socket whose option
/// cannot be set is still served.
pub fn nodelay_incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "could not turn Nagle off on an accepted connection");
        }
        Ok(stream)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = Box::pin(nodelay_incoming(listener));
        let _client = TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming.next().await.expect("one").expect("accepted");
        assert!(accepted.nodelay().expect("read the option"));
    }
}
