//! TLS between the gateway and the upstream: `verify-full` with the right CA and `require`
//! work (and the session really is encrypted), `verify-full` with the wrong CA is refused
//! with an error that says why and names the target.

use postern_testkit::{TempPostgres, TestCerts};

use crate::util::*;

#[tokio::test]
async fn upstream_tls_modes() {
    // The upstream rejects unencrypted TCP logins, so a gateway that silently falls back to
    // plaintext fails here.
    let pg = TempPostgres::builder()
        .ssl(true)
        .hba("hostnossl all all 127.0.0.1/32 reject")
        .start()
        .expect("starting PostgreSQL with TLS");
    load_shop(&pg);
    let certs = pg.certs().unwrap().clone();
    let scratch = tempfile::tempdir().unwrap();
    let other_ca = TestCerts::generate(scratch.path()).unwrap();

    let url = pg.url(SHOP);
    let config = GatewayConfig::default()
        .target(
            Target::new("verify_full", url.clone())
                .tls("verify-full")
                .ca_file(&certs.ca_cert),
        )
        .target(
            Target::new("verify_ca", url.clone())
                .tls("verify-ca")
                .ca_file(&certs.ca_cert),
        )
        .target(Target::new("require", url.clone()).tls("require"))
        .target(
            Target::new("wrong_ca", url.clone())
                .tls("verify-full")
                .ca_file(&other_ca.ca_cert),
        )
        .target(Target::new("plaintext", url.clone()).tls("disable"));
    let gw = Gateway::start(&config);
    let token = gw.token(ALICE);

    for target in ["verify_full", "verify_ca", "require"] {
        let conn = gw.conn_with(target, ALICE, &token, pg.bin_dir());
        assert_eq!(
            conn.query("SELECT ssl, count(*) FROM pg_stat_ssl JOIN customers ON true WHERE pid = pg_backend_pid() GROUP BY ssl"),
            "t|50",
            "target {target}: the upstream session is not on TLS"
        );
        let (client, _) = conn.client().await;
        let row = client
            .query_one(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(
            row.get::<_, String>(0).starts_with("TLSv1."),
            "target {target}"
        );
    }

    let conn = gw.conn_with("wrong_ca", ALICE, &token, pg.bin_dir());
    let err = conn.refusal().await;
    let text = format!("{} {:?}", err.message(), err.detail()).to_lowercase();
    assert!(
        text.contains("wrong_ca"),
        "the error does not name the target: {text}"
    );
    assert!(
        ["certificate", "tls", "ssl", "issuer"]
            .iter()
            .any(|w| text.contains(w)),
        "the error does not say it is a certificate problem: {text}"
    );
    let out = conn.psql(&["-c", "select 1"], None);
    assert!(
        !out.status.success(),
        "psql connected through a target with the wrong CA"
    );

    // tls = "disable" against a server that refuses plaintext: refused, and said so.
    let err = gw
        .conn_with("plaintext", ALICE, &token, pg.bin_dir())
        .refusal()
        .await;
    assert!(
        err.message().contains("plaintext"),
        "the error does not name the target: {}",
        err.message()
    );

    let conn = gw.conn_with("verify_full", ALICE, &token, pg.bin_dir());
    assert_eq!(
        conn.query("SELECT 1"),
        "1",
        "the gateway stopped serving after the refusals"
    );
}
