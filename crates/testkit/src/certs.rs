//! A throwaway certificate authority and one server certificate signed by it.
//!
//! TLS tests need more than a self-signed certificate: `verify-full` checks a chain against a CA
//! file and the host name against the certificate, and a "wrong CA" test needs a second,
//! unrelated CA. The `openssl` command does the work (it is on every machine that has
//! PostgreSQL), with P-256 keys because they are generated in milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::run;

/// Paths of a generated CA and a server certificate/key signed by it, all PEM.
///
/// The server certificate is valid for `localhost` and `127.0.0.1` (or the names given to
/// [`TestCerts::generate_for`]) for two days, long enough for any test run and short enough
/// that a leaked file is worthless.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate: what a client passes as `sslrootcert` / `ca_file`.
    pub ca_cert: PathBuf,
    /// The CA private key (kept so that more certificates could be signed).
    pub ca_key: PathBuf,
    /// The server certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8 PEM).
    pub key: PathBuf,
}

impl TestCerts {
    /// Generates a CA and a server certificate for `localhost` and `127.0.0.1` in `dir`.
    pub fn generate(dir: &Path) -> Result<TestCerts> {
        Self::generate_for(dir, &["DNS:localhost", "IP:127.0.0.1"])
    }

    /// Like [`TestCerts::generate`], with explicit subjectAltName entries (`DNS:name`,
    /// `IP:addr`); the first DNS entry, if any, is also the certificate's common name.
    pub fn generate_for(dir: &Path, alt_names: &[&str]) -> Result<TestCerts> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let certs = TestCerts {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(ec)
                .arg("-keyout")
                .arg(&certs.ca_key)
                .arg("-out")
                .arg(&certs.ca_cert)
                .args(["-days", "2", "-subj", "/CN=Postern test CA"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
            "openssl: generating the test CA",
        )?;
        let cn = alt_names
            .iter()
            .find_map(|n| n.strip_prefix("DNS:"))
            .unwrap_or("localhost");
        let csr = dir.join("server.csr");
        run(
            Command::new("openssl")
                .args(["req", "-new"])
                .args(ec)
                .arg("-keyout")
                .arg(&certs.key)
                .arg("-out")
                .arg(&csr)
                .args(["-subj", &format!("/CN={cn}")]),
            "openssl: generating the server key",
        )?;
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
                alt_names.join(",")
            ),
        )?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&certs.ca_cert)
                .arg("-CAkey")
                .arg(&certs.ca_key)
                .args(["-set_serial", &format!("{}", rand::random::<u32>())])
                .args(["-days", "2", "-sha256", "-extfile"])
                .arg(&ext)
                .arg("-out")
                .arg(&certs.cert),
            "openssl: signing the server certificate",
        )?;
        Ok(certs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certificate_verifies_against_its_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = TestCerts::generate(&dir.path().join("a")).unwrap();
        let b = TestCerts::generate(&dir.path().join("b")).unwrap();
        let verify = |ca: &Path, cert: &Path| {
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca)
                .args(["-verify_hostname", "localhost"])
                .arg(cert)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(
            verify(&a.ca_cert, &a.cert),
            "cert must verify against its own CA"
        );
        assert!(
            !verify(&b.ca_cert, &a.cert),
            "cert must not verify against another CA"
        );
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&a.cert)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("DNS:localhost"), "{text}");
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    }
}
