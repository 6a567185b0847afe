//! Certificates made at run time for the TLS tests (rcgen): a CA, server and client
//! certificates signed by it, written as PEM files. Nothing is checked in, so nothing expires.

use std::path::{Path, PathBuf};

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority whose files live in `dir`.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM): what `--tls-ca` and `--tls-client-ca` take.
    pub ca: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).expect("writing the CA");
        Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer: rcgen::Issuer::new(params, key),
            ca,
        }
    }

    /// The collector's certificate: for `localhost` and 127.0.0.1.
    pub fn server(&self, file: &str) -> CertFiles {
        self.issue(
            file,
            "gpufleet collector",
            &["localhost", "127.0.0.1"],
            None,
        )
    }

    /// A client certificate whose CN is `cn` (and a DNS SAN for each of `sans`).
    pub fn client(&self, file: &str, cn: &str, sans: &[&str]) -> CertFiles {
        self.issue(file, cn, sans, None)
    }

    /// A client certificate that expired in 2020.
    pub fn expired_client(&self, file: &str, cn: &str) -> CertFiles {
        self.issue(file, cn, &[], Some((2019, 2020)))
    }

    fn issue(
        &self,
        file: &str,
        cn: &str,
        sans: &[&str],
        // Valid from January 1st of the first year to January 1st of the second.
        validity: Option<(i32, i32)>,
    ) -> CertFiles {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some((from, until)) = validity {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(until, 1, 1);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        let files = CertFiles {
            cert: self.dir.join(format!("{}-{file}.pem", self.name)),
            key: self.dir.join(format!("{}-{file}.key", self.name)),
        };
        std::fs::write(&files.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("writing a key");
        files
    }
}
