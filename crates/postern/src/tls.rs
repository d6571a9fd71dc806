//! The listeners' TLS identity: the configured certificate, or a self-signed one generated once
//! in `data_dir/tls` so that TLS is always on offer.

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

use crate::config::TlsFiles;

/// Builds the server TLS configuration (ALPN `postgresql` for direct-TLS clients).
pub fn server_config(
    files: Option<&TlsFiles>,
    data_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = match files {
        Some(f) => (f.cert.clone(), f.key.clone()),
        None => self_signed(data_dir)?,
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading certificate {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading private key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// Returns the paths of the generated certificate, creating it on first use.
fn self_signed(data_dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = data_dir.join("tls");
    let cert = dir.join("gateway.crt");
    let key = dir.join("gateway.key");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let host = hostname();
    let generated = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        host,
    ])
    .context("generating a self-signed certificate")?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate; set [tls] cert/key to use your own");
    Ok((cert, key))
}

/// This machine's host name, for certificates and node names.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
