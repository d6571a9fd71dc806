//! How the gateway reaches a PostgreSQL target: address, the credentials it holds, and TLS.

use postern_core::Target;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::fmt;
use std::sync::Arc;

/// How the gateway secures its connection to the target, with libpq's `sslmode` meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTlsMode {
    /// Never use TLS.
    Disable,
    /// Use TLS if the server offers it, without verifying the certificate.
    Prefer,
    /// Require TLS, without verifying the certificate.
    Require,
    /// Require TLS and a certificate signed by a trusted CA (any host name).
    VerifyCa,
    /// Require TLS, a trusted certificate, and a host name that matches it.
    VerifyFull,
}

impl std::str::FromStr for UpstreamTlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" | "allow" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "unknown TLS mode {other:?} (expected disable, prefer, require, verify-ca or verify-full)"
                ));
            }
        })
    }
}

/// A secret the gateway holds; its `Debug` never shows the value.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything the engine needs to open a session on a PostgreSQL target.
#[derive(Clone)]
pub struct PgTarget {
    /// The protocol-neutral target (name, access rules).
    pub target: Target,
    /// Host name or IP address of the server.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The role the gateway logs in as.
    pub user: String,
    /// The database on the server.
    pub database: String,
    /// Password for md5/SCRAM/cleartext upstream authentication.
    pub password: Option<Secret>,
    /// TLS mode.
    pub tls_mode: UpstreamTlsMode,
    /// Client TLS configuration used for `require` and stronger (built once at start).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Extra startup parameters sent upstream (from the URL's `options=` etc.).
    pub params: Vec<(String, String)>,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTarget")
            .field("name", &self.target.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("tls_mode", &self.tls_mode)
            .finish_non_exhaustive()
    }
}

/// The parts of a `postgres://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// Host (default `localhost`).
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// User (default `postgres`).
    pub user: String,
    /// Password embedded in the URL, if any.
    pub password: Option<String>,
    /// Database (default: the user name).
    pub database: String,
    /// Query parameters (`sslmode`, `options`, `application_name`, ...).
    pub query: Vec<(String, String)>,
}

/// Why a target URL was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid postgres URL: {0}")]
pub struct UrlError(String);

impl PgUrl {
    /// Parses `postgres://[user[:password]@]host[:port][/database][?k=v&...]`.
    pub fn parse(url: &str) -> Result<PgUrl, UrlError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| UrlError("must start with postgres://".into()))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (decode(user)?, Some(decode(pass)?)),
                None => (decode(u)?, None),
            },
            None => (String::new(), None),
        };
        let (host, port) = split_host_port(hostport)?;
        let user = if user.is_empty() {
            "postgres".to_owned()
        } else {
            user
        };
        let database = decode(database)?;
        let database = if database.is_empty() {
            user.clone()
        } else {
            database
        };
        let query = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                Ok((decode(k)?, decode(v)?))
            })
            .collect::<Result<_, UrlError>>()?;
        Ok(PgUrl {
            host,
            port,
            user,
            password,
            database,
            query,
        })
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlError("unclosed [ in host".into()))?;
        (host.to_owned(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| UrlError(format!("invalid port {p:?}")))?,
        None => 5432,
    };
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        decode(&host)?
    };
    Ok((host, port))
}

fn decode(s: &str) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UrlError("bad percent-encoding".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError("percent-encoding is not UTF-8".into()))
}

/// Builds the rustls client configuration for `mode`, trusting `roots` for verifying modes.
pub fn client_tls_config(
    mode: UpstreamTlsMode,
    roots: rustls::RootCertStore,
) -> Result<Option<Arc<rustls::ClientConfig>>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyCa => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
                .with_no_client_auth()
        }
        UpstreamTlsMode::VerifyFull => builder.with_root_certificates(roots).with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// `prefer`/`require`: encrypt but do not authenticate the server, as libpq does.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: a trusted chain is required, the host name is not checked.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u = PgUrl::parse("postgres://app:p%40ss@db.example:6543/shop?sslmode=require").unwrap();
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!((u.host.as_str(), u.port), ("db.example", 6543));
        assert_eq!(u.database, "shop");
        assert_eq!(u.query, vec![("sslmode".into(), "require".into())]);
    }

    #[test]
    fn defaults_and_ipv6() {
        let u = PgUrl::parse("postgresql://[::1]").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user.as_str()),
            ("::1", 5432, "postgres")
        );
        assert_eq!(u.database, "postgres");
        assert!(PgUrl::parse("mysql://x").is_err());
        assert!(PgUrl::parse("postgres://h:notaport/db").is_err());
        assert!(PgUrl::parse("postgres://u%zz@h/db").is_err());
    }

    #[test]
    fn secret_debug_hides_value() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".into())),
            "Secret(***)"
        );
    }
}
