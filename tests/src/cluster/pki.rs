//! The test control plane's key material, made fresh for each control plane: a CA, the API
//! server's serving certificate (for 127.0.0.1 and `localhost`) and the key that signs
//! service-account tokens. Nothing is reused across runs, so nothing secret is committed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// Where the files were written.
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// ECDSA P-256 key, PKCS#8 PEM: signs service-account tokens.
    pub service_account_key: PathBuf,
    /// Its public half, which verifies them.
    pub service_account_public_key: PathBuf,
}

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Pki {
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "wsfleet-test-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");

        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes.default.svc".into(),
        ])
        .expect("serving certificate names");
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let serving_key = KeyPair::generate().expect("serving key");
        let serving = serving
            .signed_by(&serving_key, &ca)
            .expect("serving certificate");

        let service_account_key = KeyPair::generate().expect("service-account key");
        let write = |name: &str, contents: String| {
            let path = dir.join(name);
            std::fs::write(&path, contents).expect("writing key material");
            path
        };
        Pki {
            ca_cert: write("ca.crt", ca.pem()),
            serving_cert: write("apiserver.crt", serving.pem()),
            serving_key: write("apiserver.key", serving_key.serialize_pem()),
            service_account_key: write("sa.key", service_account_key.serialize_pem()),
            service_account_public_key: write("sa.pub", service_account_key.public_key_pem()),
        }
    }
}
