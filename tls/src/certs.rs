//! Certificates for operators without a PKI (`vnetctl cert`, after `cockroach cert`): a CA, node
//! certificates and client certificates, ECDSA P-256, written as PEM into a certificates
//! directory with private keys readable by their owner only (0600).
//!
//! What each holds (the requirements for a certificate from your own CA are the same):
//! - CA (`ca.crt`, `ca.key`): a CA certificate (basic constraints CA, key usage certificate
//!   and CRL signing). Only `ca.crt` goes to the nodes and clients; keep `ca.key` offline.
//! - node N (`node-N.crt`, `node-N.key`): SAN URI `vnet://node/N` (its member identity), a DNS
//!   or IP SAN for every host name and address it is reached by, key usage digital signature and
//!   key encipherment, extended key usage server *and* client authentication (it serves, and it
//!   dials its peers and its switch).
//! - client NAME (`client-NAME.crt`, `client-NAME.key`): subject Common Name NAME (the
//!   principal), extended key usage client authentication, no node URI.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::NODE_URI_PREFIX;

/// The CA's file names in a certificates directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// A node's certificate and key file names.
pub fn node_files(node_id: u64) -> (String, String) {
    (format!("node-{node_id}.crt"), format!("node-{node_id}.key"))
}

/// A client's certificate and key file names.
pub fn client_files(name: &str) -> (String, String) {
    (format!("client-{name}.crt"), format!("client-{name}.key"))
}

/// Longest client name: it becomes a principal, and an actor in the history.
pub const CLIENT_NAME_LEN_MAX: usize = 64;

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn validity(days: u32) -> Result<(time::OffsetDateTime, time::OffsetDateTime), String> {
    if days == 0 {
        return Err("--lifetime-days must be at least 1".to_string());
    }
    let now = time::OffsetDateTime::now_utc();
    // A little slack before now, for clocks a minute or two apart.
    Ok((
        now - time::Duration::minutes(5),
        now + time::Duration::days(i64::from(days)),
    ))
}

/// Refuses to replace existing files unless `overwrite`, before writing either.
fn check_absent(paths: &[&Path], overwrite: bool) -> Result<(), String> {
    if overwrite {
        return Ok(());
    }
    for path in paths {
        if path.exists() {
            return Err(format!(
                "{} exists; pass --overwrite to replace it",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Writes `contents` to `path` with `mode`, atomically (a temporary file renamed over), so a
/// server reloading certificates never reads half a file.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        format!("cannot write {}: {e}", path.display())
    })
}

fn write_pair(
    dir: &Path,
    (cert_name, key_name): (String, String),
    cert_pem: &str,
    key_pem: &str,
    overwrite: bool,
) -> Result<Written, String> {
    let cert = dir.join(cert_name);
    let key = dir.join(key_name);
    check_absent(&[&cert, &key], overwrite)?;
    write_file(&key, key_pem, 0o600)?;
    write_file(&cert, cert_pem, 0o644)?;
    Ok(Written { cert, key })
}

/// Creates `ca.crt` and `ca.key` in `dir`.
pub fn create_ca(dir: &Path, lifetime_days: u32, overwrite: bool) -> Result<Written, String> {
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "vnet-ha CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(lifetime_days)?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
    write_pair(
        dir,
        (CA_CERT.to_string(), CA_KEY.to_string()),
        &cert.pem(),
        &key.serialize_pem(),
        overwrite,
    )
}

/// The CA in `dir` (`ca.crt`) with its key (`ca_key`, by default `dir/ca.key`).
fn load_ca(dir: &Path, ca_key: Option<&Path>) -> Result<Issuer<'static, KeyPair>, String> {
    let cert_path = dir.join(CA_CERT);
    let key_path = ca_key
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(CA_KEY));
    let cert = std::fs::read_to_string(&cert_path).map_err(|e| {
        format!(
            "cannot read the CA certificate {}: {e} (create one with `vnetctl cert create-ca`)",
            cert_path.display()
        )
    })?;
    let key = std::fs::read_to_string(&key_path)
        .map_err(|e| format!("cannot read the CA key {}: {e}", key_path.display()))?;
    let key = KeyPair::from_pem(&key)
        .map_err(|e| format!("{} is not a private key: {e}", key_path.display()))?;
    Issuer::from_ca_cert_pem(&cert, key)
        .map_err(|e| format!("{} is not a CA certificate: {e}", cert_path.display()))
}

/// Creates `node-<id>.crt` and `node-<id>.key` in `dir`, signed by the CA there.
pub fn create_node(
    dir: &Path,
    ca_key: Option<&Path>,
    node_id: u64,
    hosts: &[String],
    lifetime_days: u32,
    overwrite: bool,
) -> Result<Written, String> {
    if node_id == 0 {
        return Err("--node-id must be a positive member id".to_string());
    }
    if hosts.is_empty() {
        return Err(
            "--host: give every host name and address the node is reached by (e.g. \
             --host 10.0.0.1,unit-a.example)"
                .to_string(),
        );
    }
    let issuer = load_ca(dir, ca_key)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("vnet-node-{node_id}"));
    params.distinguished_name = name;
    let uri = format!("{NODE_URI_PREFIX}{node_id}");
    params.subject_alt_names = vec![SanType::URI(
        uri.clone().try_into().map_err(|e| format!("{uri}: {e}"))?,
    )];
    for host in hosts {
        let host = host.trim();
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                if host.is_empty()
                    || !host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*')
                {
                    return Err(format!("--host {host:?}: not an IP address or a DNS name"));
                }
                SanType::DnsName(
                    host.to_string()
                        .try_into()
                        .map_err(|e| format!("--host {host:?}: {e}"))?,
                )
            }
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(lifetime_days)?;
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("cannot sign the node certificate: {e}"))?;
    write_pair(
        dir,
        node_files(node_id),
        &cert.pem(),
        &key.serialize_pem(),
        overwrite,
    )
}

/// Checks a client name: it becomes the principal, so it is short and plain.
pub fn validate_client_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > CLIENT_NAME_LEN_MAX {
        return Err(format!(
            "--name {name:?}: must be 1..={CLIENT_NAME_LEN_MAX} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(format!(
            "--name {name:?}: only letters, digits and - _ . @ are allowed"
        ));
    }
    Ok(())
}

/// Creates `client-<name>.crt` and `client-<name>.key` in `dir`, signed by the CA there.
pub fn create_client(
    dir: &Path,
    ca_key: Option<&Path>,
    name: &str,
    lifetime_days: u32,
    overwrite: bool,
) -> Result<Written, String> {
    validate_client_name(name)?;
    let issuer = load_ca(dir, ca_key)?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, name);
    params.distinguished_name = subject;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(lifetime_days)?;
    let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("cannot sign the client certificate: {e}"))?;
    write_pair(
        dir,
        client_files(name),
        &cert.pem(),
        &key.serialize_pem(),
        overwrite,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{identity_of, PeerIdentity};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use std::os::unix::fs::PermissionsExt;

    fn identity(path: &Path) -> PeerIdentity {
        let cert = CertificateDer::from_pem_file(path).expect("a certificate");
        identity_of(&cert).expect("an identity")
    }

    #[test]
    fn certificates_name_their_holder_keys_are_private_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = create_ca(dir.path(), 30, false).expect("ca");
        assert_eq!(
            std::fs::metadata(&ca.key)
                .expect("key")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let err = create_ca(dir.path(), 30, false).expect_err("exists");
        assert!(err.contains("--overwrite"), "{err}");
        let node = create_node(
            dir.path(),
            None,
            2,
            &["127.0.0.1".into(), "localhost".into()],
            30,
            false,
        )
        .expect("node");
        assert_eq!(identity(&node.cert), PeerIdentity::Node(2));
        assert_eq!(
            std::fs::metadata(&node.key)
                .expect("key")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let client = create_client(dir.path(), None, "admin", 30, false).expect("client");
        assert_eq!(identity(&client.cert), PeerIdentity::Client("admin".into()));
        assert!(create_client(dir.path(), None, "admin", 30, false).is_err());
        create_client(dir.path(), None, "admin", 30, true).expect("overwrite");
        let err = create_client(dir.path(), None, "a b", 30, false).expect_err("bad name");
        assert!(err.contains("--name"), "{err}");
        let err = create_node(dir.path(), None, 0, &["h".into()], 30, false).expect_err("id 0");
        assert!(err.contains("--node-id"), "{err}");
        let other = tempfile::tempdir().expect("tempdir");
        let err = create_node(other.path(), None, 1, &["h".into()], 30, false).expect_err("no ca");
        assert!(err.contains("create-ca"), "{err}");
    }
}
