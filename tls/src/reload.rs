//! rustls configurations built from files and rebuilt when the files change.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The three files of a TLS identity: the CA that signs every certificate of the cluster (and
/// verifies the other side's), this side's certificate (chain) and its private key, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a file looked like when it was read: a rotation (write in place, or rename over) changes
/// at least one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
    len: u64,
    inode: u64,
}

/// One per file; `None` for a file that cannot be read now.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Vec<Option<FileStamp>>);

fn stamp(paths: &[&Path]) -> Stamp {
    Stamp(
        paths
            .iter()
            .map(|path| {
                std::fs::metadata(path).ok().map(|m| FileStamp {
                    mtime: (m.mtime(), m.mtime_nsec()),
                    ctime: (m.ctime(), m.ctime_nsec()),
                    len: m.len(),
                    inode: m.ino(),
                })
            })
            .collect(),
    )
}

fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "cannot read a private key from --key {}: {e}",
            path.display()
        )
    })
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("--cacert", path)? {
        roots
            .add(cert)
            .map_err(|e| format!("--cacert {}: not a CA certificate: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

fn build_server(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let roots = read_roots(&files.ca)?;
    // Client certificates are required and must chain to the CA, be within their validity
    // period and allow client authentication (webpki's checks).
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, crate::provider())
        .build()
        .map_err(|e| format!("--cacert {}: {e}", files.ca.display()))?;
    let chain = read_certs("--cert", &files.cert)?;
    let key = read_key(&files.key)?;
    let mut config = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "--cert {} with --key {}: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

fn build_client(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, String> {
    let roots = read_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = read_certs("--cert", cert)?;
            let key_der = read_key(key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "--cert {} with --key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A configuration cached with the stamps of the files it was built from.
struct Cached<T> {
    paths: Vec<PathBuf>,
    state: Mutex<(Stamp, Arc<T>)>,
    build: Box<dyn Fn() -> Result<Arc<T>, String> + Send + Sync>,
    what: &'static str,
}

impl<T> Cached<T> {
    fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: Box<dyn Fn() -> Result<Arc<T>, String> + Send + Sync>,
    ) -> Result<Self, String> {
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let before = stamp(&refs);
        let config = build()?;
        Ok(Self {
            paths,
            state: Mutex::new((before, config)),
            build,
            what,
        })
    }

    /// The configuration for the next handshake: rebuilt first if a file changed since the last
    /// build. A failed rebuild keeps the last good configuration (and is retried at the next
    /// handshake, since the stamp is not recorded).
    fn get(&self) -> Arc<T> {
        let refs: Vec<&Path> = self.paths.iter().map(PathBuf::as_path).collect();
        let now = stamp(&refs);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 != now {
            match (self.build)() {
                Ok(config) => {
                    tracing::info!(what = self.what, "TLS certificates reloaded from disk");
                    *state = (now, config);
                }
                Err(e) => {
                    tracing::warn!(
                        what = self.what,
                        error = %e,
                        "TLS files changed but do not load; still using the previous ones"
                    );
                }
            }
        }
        state.1.clone()
    }
}

/// A server's TLS: client certificates required, from the CA in `files.ca`.
pub struct ServerTls {
    cached: Cached<ServerConfig>,
}

impl ServerTls {
    /// Loads the files now, so a bad file stops the server at start with a message naming it.
    pub fn new(files: TlsFiles) -> Result<Self, String> {
        let paths = vec![files.ca.clone(), files.cert.clone(), files.key.clone()];
        let cached = Cached::new("server", paths, Box::new(move || build_server(&files)))?;
        Ok(Self { cached })
    }

    /// The configuration for the next handshake (reloaded if the files changed).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.cached.get()
    }
}

/// A client's TLS: servers verified against `ca`; a client certificate if one is given.
pub struct ClientTls {
    cached: Cached<ClientConfig>,
}

impl ClientTls {
    pub fn new(ca: PathBuf, identity: Option<(PathBuf, PathBuf)>) -> Result<Self, String> {
        let mut paths = vec![ca.clone()];
        if let Some((cert, key)) = &identity {
            paths.push(cert.clone());
            paths.push(key.clone());
        }
        let cached = Cached::new(
            "client",
            paths,
            Box::new(move || {
                build_client(
                    &ca,
                    identity
                        .as_ref()
                        .map(|(cert, key)| (cert.as_path(), key.as_path())),
                )
            }),
        )?;
        Ok(Self { cached })
    }

    /// A client with the three files of a node or client identity.
    pub fn from_files(files: &TlsFiles) -> Result<Self, String> {
        Self::new(
            files.ca.clone(),
            Some((files.cert.clone(), files.key.clone())),
        )
    }

    /// The configuration for the next connection (reloaded if the files changed).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.cached.get()
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.cached.paths)
            .finish()
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.cached.paths)
            .finish()
    }
}
