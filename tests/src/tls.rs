//! TLS key material for test servers, made fresh for each use so nothing secret is committed:
//! a CA, a server certificate for `127.0.0.1`/`localhost` signed by it, and a client
//! certificate for servers that require one. A second `TlsFiles` is an unrelated CA, which is
//! what a "wrong CA" test hands the client.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::TempDir;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// PEM files in a scratch directory that is removed on drop.
pub struct TlsFiles {
    /// Holds the files; removes them when dropped.
    _dir: TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Generates a CA and the certificates it signs; `label` names the CA (seen in errors).
    pub fn generate(label: &str) -> TlsFiles {
        let dir = TempDir::new(&format!("tls-{label}"));

        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("wsfleet-test-{label}-ca"));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");

        let mut server = CertificateParams::new(vec!["localhost".to_string()]).expect("names");
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server.distinguished_name.push(DnType::CommonName, "redis");
        // Cluster nodes also present it to each other as clients on the TLS cluster bus.
        server.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_key = KeyPair::generate().expect("server key");
        let server = server
            .signed_by(&server_key, &ca)
            .expect("server certificate");

        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client
            .distinguished_name
            .push(DnType::CommonName, "wsfleet-gateway");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("client key");
        let client = client
            .signed_by(&client_key, &ca)
            .expect("client certificate");

        let write = |name: &str, contents: String| dir.file(name, &contents);
        TlsFiles {
            ca_cert: write("ca.crt", ca.pem()),
            server_cert: write("server.crt", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.crt", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            _dir: dir,
        }
    }
}
