//! TLS between the client and the gateway: `sslmode=require` works with the gateway's own
//! self-signed certificate, `verify-full` works with a configured certificate, and with
//! `require_tls = true` a plaintext client is refused with a message saying TLS is required.

use postern_testkit::TestCerts;
use tokio_postgres::error::SqlState;

use crate::util::*;

/// What psql's `\conninfo` says about the connection's encryption.
fn conninfo_line(conn: &Conn) -> String {
    let out = conn.psql(&["-c", r"\conninfo", "-c", "select 'ok'"], None);
    assert_success(&out, &format!("psql {}", conn.describe()));
    stdout(&out)
}

#[test]
fn sslmode_require_with_the_default_certificate() {
    let fx = Fixture::start();
    let conn = fx.gateway(SHOP).sslmode("require");
    let text = conninfo_line(&conn);
    assert!(
        text.contains("SSL connection (protocol: TLSv1."),
        "not encrypted:\n{text}"
    );
    assert!(text.contains("ok"), "{text}");
    // The default certificate was generated in the data directory.
    assert!(
        fx.gw.data_dir.join("tls").is_dir(),
        "no data_dir/tls directory with the generated certificate"
    );
    // sslmode=disable is allowed on a loopback listener by default.
    let plain = conninfo_line(&fx.gateway(SHOP).sslmode("disable"));
    assert!(!plain.contains("SSL connection"), "{plain}");
}

#[test]
fn verify_full_with_a_configured_certificate() {
    let scratch = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(scratch.path()).unwrap();
    let fx = Fixture::with(|pg| GatewayConfig::shop(pg).listener_cert(&certs.cert, &certs.key));
    let mut conn = fx.gateway(SHOP).sslmode("verify-full");
    conn.host = "localhost".into();
    conn.sslrootcert = Some(certs.ca_cert.clone());
    let text = conninfo_line(&conn);
    assert!(text.contains("SSL connection"), "{text}");
    assert_eq!(conn.query("select count(*) from products"), "20");

    // A client trusting another CA refuses the gateway's certificate.
    let other = TestCerts::generate(&scratch.path().join("other")).unwrap();
    conn.sslrootcert = Some(other.ca_cert);
    let out = conn.psql(&["-c", "select 1"], None);
    assert!(
        !out.status.success(),
        "verify-full accepted a certificate from an untrusted CA"
    );
    assert!(
        stderr(&out).contains("certificate verify failed"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn require_tls_refuses_plaintext_clients() {
    let mut fx = Fixture::with(|pg| GatewayConfig::shop(pg).require_tls(true));
    let err = fx.gateway(SHOP).refusal().await;
    assert!(
        err.code() == &SqlState::PROTOCOL_VIOLATION
            || err.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        "expected 08P01 or 28000, got {} {}",
        err.code().code(),
        err.message()
    );
    let message = err.message().to_lowercase();
    assert!(
        message.contains("tls") || message.contains("ssl"),
        "the message does not mention TLS: {message}"
    );

    let out = fx
        .gateway(SHOP)
        .sslmode("disable")
        .psql(&["-c", "select 1"], None);
    assert!(
        !out.status.success(),
        "psql with sslmode=disable got through"
    );
    let text = stderr(&out);
    assert!(
        text.contains("TLS") || text.contains("SSL"),
        "psql's message does not mention TLS:\n{text}"
    );

    let text = conninfo_line(&fx.gateway(SHOP).sslmode("require"));
    assert!(text.contains("SSL connection"), "{text}");
    fx.assert_still_serving();
}
