//! The collector's TLS listener: certificates and keys from files, reloaded on SIGHUP so
//! rotation needs no restart, and (with a client CA) client certificates required and their
//! names read to bind a stream to its node.
//!
//! tonic's own `ServerTlsConfig` is fixed when the server starts. So `serve` accepts TCP
//! itself ([`crate::connections`]) and runs each handshake with tokio-rustls against the rustls config in force at that
//! moment ([`ServerTls::reload`] swaps it); tonic then serves the finished TLS streams, whose
//! peer certificates reach every request as `TlsConnectInfo`. Connections already open keep
//! the certificate they were made with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::refusals::{Reason, Refusals};
use crate::connections::Handshake;
use crate::metrics::IngestMetrics;
use crate::metrics::ingest::ConnRefused;

/// Most handshakes under way at once; connections past it are closed at once.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// `serve --tls-cert --tls-key [--tls-client-ca]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The collector's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificate(s) (PEM) that sign client certificates: set, every client must present
    /// one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError(format!("cannot read the {what} {}: {e}", path.display())))
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("the {what} {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "the {what} {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The rustls server config the files describe.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, "certificate (--tls-cert)")?;
    let key_pem = read(&files.key, "private key (--tls-key)")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError(format!(
            "the private key (--tls-key) {} holds no usable key: {e}",
            files.key.display()
        ))
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca, "client CA (--tls-client-ca)")? {
                roots.add(c).map_err(|e| {
                    TlsError(format!(
                        "the client CA (--tls-client-ca) {} is not a usable CA certificate: {e}",
                        ca.display()
                    ))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    TlsError(format!(
                        "the client CA {} cannot be used: {e}",
                        ca.display()
                    ))
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "the certificate {} and key {} do not go together: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    // gRPC is HTTP/2 only; tonic's clients insist on negotiating it.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS settings in force, swappable while the collector runs.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let config = server_config(&files)?;
        Ok(ServerTls {
            files,
            current: RwLock::new(config),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files; on an error the settings in force stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The TLS handshake of [`crate::connections::incoming`]'s accept loop, run off the loop (a
/// slow or silent client holds up no one) within `timeout` (`limits.hello_timeout`), at most
/// [`MAX_PENDING_HANDSHAKES`] at once (more are closed at once, counted as `handshakes`).
/// Failed handshakes are refusals (`tls_handshake`).
pub fn handshake(
    tls: Arc<ServerTls>,
    refusals: Arc<Refusals>,
    metrics: IngestMetrics,
    timeout: Duration,
) -> impl Fn(TcpStream, SocketAddr) -> Handshake<TlsStream<TcpStream>> + Send + 'static {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    move |tcp, peer| {
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            metrics.connection_refused(ConnRefused::Handshakes);
            tracing::debug!(%peer, "too many TLS handshakes under way; closing");
            return Box::pin(std::future::ready(None));
        };
        let acceptor = tls.acceptor();
        let refusals = refusals.clone();
        Box::pin(async move {
            let r = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
            drop(permit);
            match r {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    refusals.refuse(
                        Reason::TlsHandshake,
                        Some(peer.ip()),
                        &format!("TLS handshake failed: {e}"),
                    );
                    None
                }
                Err(_) => {
                    refusals.refuse(
                        Reason::TlsHandshake,
                        Some(peer.ip()),
                        &format!(
                            "no TLS handshake within {} s (limits.hello_timeout)",
                            timeout.as_secs()
                        ),
                    );
                    None
                }
            }
        })
    }
}

/// The names a client certificate stands for: its subject's common names and its DNS
/// subject alternative names. Empty for a certificate that cannot be parsed (rustls has
/// verified its chain already; a name is what it may lack).
pub fn cert_names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        dir: tempfile::TempDir,
        ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl Pki {
        fn new() -> Pki {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test CA");
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
            Pki {
                dir,
                ca: rcgen::Issuer::new(params, key),
            }
        }

        fn leaf(&self, name: &str, cn: &str, sans: &[&str]) -> TlsFiles {
            let mut params = rcgen::CertificateParams::new(
                sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            let cert_path = self.dir.path().join(format!("{name}.pem"));
            let key_path = self.dir.path().join(format!("{name}.key"));
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            TlsFiles {
                cert: cert_path,
                key: key_path,
                client_ca: Some(self.dir.path().join("ca.pem")),
            }
        }
    }

    #[test]
    fn names_are_the_common_name_and_the_dns_sans() {
        let pki = Pki::new();
        let f = pki.leaf("n", "gpu-node-01", &["gpu-node-01.example", "alias"]);
        let der = &certificates(&f.cert, "cert").unwrap()[0];
        assert_eq!(
            cert_names(der),
            ["gpu-node-01", "gpu-node-01.example", "alias"]
        );
        assert!(cert_names(&CertificateDer::from(vec![1, 2, 3])).is_empty());
    }

    #[test]
    fn bad_files_are_named_and_a_failed_reload_keeps_what_is_in_force() {
        let pki = Pki::new();
        let good = pki.leaf("server", "collector", &["localhost"]);
        let tls = ServerTls::load(good.clone()).unwrap();
        let other = pki.leaf("other", "other", &["other"]);
        // A key that is not the certificate's.
        let mismatched = TlsFiles {
            key: other.key.clone(),
            ..good.clone()
        };
        let e = server_config(&mismatched).unwrap_err().to_string();
        assert!(e.contains("do not go together"), "{e}");
        let e = server_config(&TlsFiles {
            cert: pki.dir.path().join("missing.pem"),
            ..good.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing.pem") && e.contains("--tls-cert"), "{e}");
        std::fs::write(&good.cert, "not pem").unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        std::fs::copy(&other.cert, &good.cert).unwrap();
        std::fs::copy(&other.key, &good.key).unwrap();
        tls.reload().unwrap();
    }
}
