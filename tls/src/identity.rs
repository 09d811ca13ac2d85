//! The identity a certificate names.
//!
//! - A node certificate carries a SAN URI `vnet://node/<id>` (`vnetctl cert create-node`); it
//!   is a cluster member's identity, [`PeerIdentity::Node`]. A certificate with more than one
//!   such URI, or one whose id is not a positive number, names nothing and is refused.
//! - Any other certificate names a client by its subject Common Name,
//!   [`PeerIdentity::Client`]. A certificate without a Common Name names nothing.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The SAN URI prefix of a node certificate; the node id follows.
pub const NODE_URI_PREFIX: &str = "vnet://node/";

/// Who a verified certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A cluster member: the id in its `vnet://node/<id>` SAN URI.
    Node(u64),
    /// A client: its subject Common Name.
    Client(String),
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerIdentity::Node(id) => write!(f, "node {id}"),
            PeerIdentity::Client(name) => write!(f, "client {name}"),
        }
    }
}

/// The identity `cert` names, or why it names none.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<PeerIdentity, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let mut node = None;
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                if let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) {
                    let id: u64 = id
                        .parse()
                        .ok()
                        .filter(|id| *id > 0)
                        .ok_or_else(|| format!("SAN URI {uri:?} does not name a node id"))?;
                    if node.replace(id).is_some() {
                        return Err("the certificate names more than one node".to_string());
                    }
                }
            }
        }
    }
    if let Some(id) = node {
        return Ok(PeerIdentity::Node(id));
    }
    let common_name = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| {
            format!("the certificate has neither a {NODE_URI_PREFIX}<id> SAN URI nor a Common Name")
        })?;
    Ok(PeerIdentity::Client(common_name.to_string()))
}
