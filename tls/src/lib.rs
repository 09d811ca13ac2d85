//! Transport security for vnet-ha: mutual TLS with rustls on every port (the public API, the peer
//! API and the switch API), certificates reloaded from disk without a restart, the identity a
//! certificate names, and certificate creation for operators without a PKI (`vnetctl cert`).
//!
//! - One crypto provider, `ring`, installed explicitly by [`install_crypto_provider`] at the
//!   start of every binary (and by every constructor here, so a library user cannot forget it).
//! - [`ServerTls`] / [`ClientTls`]: rustls configurations built from a CA, a certificate and a
//!   key file, rebuilt when one of the files changes (checked at each handshake: three `stat`s).
//!   A rebuild that fails (a file half-written, a key that does not match) keeps the previous
//!   configuration and logs why, so a rotation in progress never takes a port down.
//! - [`secure_incoming`]: a server's accepted connections with their TLS handshakes done
//!   concurrently (one slow or silent client does not hold up the next), each with the
//!   [`PeerIdentity`] its certificate names; [`Connector`] is the client side for tonic.
//! - [`identity`]: how a certificate names a node (a SAN URI `vnet://node/<id>`) or a client
//!   (its subject Common Name). ARCHITECTURE.md ("Security") has the whole scheme.
//! - [`certs`]: a CA, node and client certificates with the right SANs and key usages (rcgen).

pub mod certs;
pub mod connector;
pub mod identity;
pub mod incoming;
pub mod reload;

pub use connector::Connector;
pub use identity::{identity_of, PeerIdentity, NODE_URI_PREFIX};
pub use incoming::{secure_incoming, ConnInfo, Secured};
pub use reload::{ClientTls, ServerTls, TlsFiles};

/// Installs `ring` as the process's rustls crypto provider. Idempotent; call it at the start of
/// `main` so no other provider can be picked implicitly.
pub fn install_crypto_provider() {
    // An error means a provider is installed already: ours, by an earlier call (this crate
    // depends on no other provider, so `cargo tree -i rustls` shows one rustls with ring).
    let _ = ring_provider().install_default();
}

/// `ring`, not rustls's default aws-lc-rs, because it builds without a C toolchain (CMake, a C
/// compiler). rustls marks it deprecated only because it lacks the post-quantum hybrid key
/// exchange; its classical suites (TLS 1.3 with X25519 / P-256, ECDSA and RSA) are supported.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The provider every configuration here is built with, whatever is installed process-wide.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    install_crypto_provider();
    std::sync::Arc::new(ring_provider())
}

/// How long a server waits for a client to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The ALPN protocol every port speaks: gRPC is HTTP/2 (grpcio and other clients insist on it).
pub(crate) const ALPN_H2: &[u8] = b"h2";
