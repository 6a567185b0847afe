//! How an agent or the CLI reaches a collector: its address, TLS (the CA that signed the
//! collector's certificate, and the client's own certificate for mutual TLS) and the bearer
//! token sent as `authorization` metadata (docs/security.md).
//!
//! Files are read each time an endpoint is made, so a rotated certificate or token takes
//! effect at the next connection without a restart.

use std::path::{Path, PathBuf};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The metadata key of the bearer token (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// Where the client's token comes from.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum TokenSource {
    /// Send none.
    #[default]
    None,
    /// Read from this file (`--token-file`), re-read at every connect.
    File(PathBuf),
    /// Given as is (`GPUFLEET_TOKEN`).
    Value(String),
}

impl std::fmt::Debug for TokenSource {
    // A token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::None => f.write_str("None"),
            TokenSource::File(p) => write!(f, "File({})", p.display()),
            TokenSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// A client's TLS files and token. [`Credentials::default`] is none: plain HTTP/2, no token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// CA certificate(s), PEM, that signed the collector's certificate. Turns TLS on.
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate chain (PEM), for a collector that requires client
    /// certificates (`serve --tls-client-ca`).
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    pub token: TokenSource,
}

/// Adds the bearer token, when there is one, to every request.
#[derive(Clone, Default)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl BearerToken {
    pub fn none() -> Self {
        BearerToken(None)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(<redacted>)"
        } else {
            "BearerToken(None)"
        })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
        Ok(r)
    }
}

impl Credentials {
    /// Settings each fine alone but unusable together, named by their flags.
    pub fn check(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err("--tls-cert needs --tls-key (its private key)".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert (its certificate)".into()),
            _ => {}
        }
        if self.tls_ca.is_none() && self.tls_cert.is_some() {
            return Err(
                "--tls-cert needs --tls-ca: a client certificate is only sent over TLS, and TLS \
                 needs the CA that signed the collector's certificate"
                    .into(),
            );
        }
        Ok(())
    }

    /// The endpoint for `collector` (see [`crate::collector_url`]; a bare `host:port` is
    /// `https://` when TLS is configured) and the token interceptor, reading every file now.
    pub fn endpoint(&self, collector: &str) -> Result<(Endpoint, BearerToken), String> {
        self.check()?;
        let mut url = crate::collector_url(collector)?;
        let explicit_scheme = collector.trim().contains("://");
        let https = url.starts_with("https://");
        match (&self.tls_ca, https) {
            (Some(_), false) if explicit_scheme => {
                return Err(format!(
                    "collector address {collector:?} is plain http:// but --tls-ca is set; use \
                     https://HOST:PORT"
                ));
            }
            (Some(_), false) => url = url.replacen("http://", "https://", 1),
            (None, true) => {
                return Err(format!(
                    "collector address {collector:?} is https:// but no --tls-ca is given: pass \
                     the CA certificate that signed the collector's (PEM)"
                ));
            }
            _ => {}
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("{collector:?} is not a valid collector address: {e}"))?;
        if let Some(ca) = &self.tls_ca {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(
                ca,
                "--tls-ca (the CA certificate)",
            )?));
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "--tls-cert (the client certificate)")?,
                    read(key, "--tls-key (the client's private key)")?,
                ));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("cannot use the TLS settings for {url}: {e}"))?;
        }
        Ok((endpoint, self.bearer()?))
    }

    /// The token interceptor (reads the token file now).
    pub fn bearer(&self) -> Result<BearerToken, String> {
        let token = match &self.token {
            TokenSource::None => return Ok(BearerToken(None)),
            TokenSource::File(p) => {
                let text = String::from_utf8(read(p, "--token-file")?)
                    .map_err(|_| format!("token file {} is not text", p.display()))?;
                let t = text.trim().to_string();
                if t.is_empty() {
                    return Err(format!(
                        "token file {} is empty (`gpufleet token create` prints a token)",
                        p.display()
                    ));
                }
                t
            }
            TokenSource::Value(v) if v.trim().is_empty() => {
                return Err("GPUFLEET_TOKEN is set but empty".into());
            }
            TokenSource::Value(v) => v.trim().to_string(),
        };
        let value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token has characters a header cannot carry; use the token `gpufleet token create` printed".to_string())?;
        Ok(BearerToken(Some(value)))
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_pick_the_scheme_and_refuse_what_cannot_work() {
        let dir = std::env::temp_dir().join(format!("gpufleet-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        // Not a certificate, but the endpoint only parses it when connecting.
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let tls = Credentials {
            tls_ca: Some(ca.clone()),
            ..Credentials::default()
        };
        let (e, _) = tls.endpoint("127.0.0.1:50051").unwrap();
        assert_eq!(e.uri().scheme_str(), Some("https"));
        let err = tls.endpoint("http://127.0.0.1:50051").unwrap_err();
        assert!(err.contains("use https://"), "{err}");
        let err = Credentials::default()
            .endpoint("https://127.0.0.1:50051")
            .unwrap_err();
        assert!(err.contains("no --tls-ca"), "{err}");
        let (e, _) = Credentials::default().endpoint("127.0.0.1:50051").unwrap();
        assert_eq!(e.uri().scheme_str(), Some("http"));
        let half = Credentials {
            tls_ca: Some(ca),
            tls_cert: Some(dir.join("c.pem")),
            ..Credentials::default()
        };
        assert!(half.check().unwrap_err().contains("--tls-key"));
        let err = Credentials {
            tls_ca: Some(dir.join("missing.pem")),
            ..Credentials::default()
        }
        .endpoint("127.0.0.1:1")
        .unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment_and_never_reach_debug_output() {
        let dir = std::env::temp_dir().join(format!("gpufleet-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "gpft_secret\n").unwrap();
        let mut c = Credentials {
            token: TokenSource::File(file.clone()),
            ..Credentials::default()
        };
        let mut bearer = c.bearer().unwrap();
        let r = bearer.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            r.metadata().get(AUTHORIZATION).unwrap(),
            "Bearer gpft_secret"
        );
        assert!(!format!("{c:?}{bearer:?}").contains("secret"));
        std::fs::write(&file, "  \n").unwrap();
        assert!(c.bearer().unwrap_err().contains("is empty"));
        c.token = TokenSource::Value("gpft_other".into());
        assert!(!format!("{c:?}").contains("other"));
        let r = c.bearer().unwrap().call(tonic::Request::new(())).unwrap();
        assert_eq!(
            r.metadata().get(AUTHORIZATION).unwrap(),
            "Bearer gpft_other"
        );
        let r = Credentials::default()
            .bearer()
            .unwrap()
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(r.metadata().get(AUTHORIZATION).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
