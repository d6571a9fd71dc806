//! Every way a connection is turned away, as a client sees it: the SQLSTATE (read with
//! tokio-postgres), the message psql prints, and a gateway that keeps serving afterwards.

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use postern_testkit::free_port;
use tokio_postgres::error::SqlState;

use crate::util::*;

/// Asserts the refusal's SQLSTATE and that its message contains `words` (case-insensitive),
/// and that psql fails with the same message.
async fn assert_refused(fx: &mut Fixture, conn: Conn, code: SqlState, words: &[&str], what: &str) {
    let err = conn.refusal().await;
    assert_eq!(
        err.code(),
        &code,
        "{what}: wrong SQLSTATE (message: {})",
        err.message()
    );
    assert_eq!(err.severity(), "FATAL", "{what}");
    let message = err.message().to_lowercase();
    for w in words {
        assert!(
            message.contains(&w.to_lowercase()),
            "{what}: the message does not say {w:?}: {}",
            err.message()
        );
    }
    let out = conn.psql(&["-c", "select 1"], None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: psql should fail to connect:\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(err.message()),
        "{what}: psql does not show the gateway's message {:?}:\n{}",
        err.message(),
        stderr(&out)
    );
    fx.assert_still_serving();
}

/// A token with the gateway's claims, signed with the Ed25519 key in `key_pem`.
fn sign_token(key_pem: &Path, subject: &str, iat: i64, exp: i64) -> String {
    let pem = std::fs::read(key_pem).expect("reading the gateway key");
    let key = EncodingKey::from_ed_pem(&pem).expect("the gateway key is PKCS#8 PEM Ed25519");
    let claims = serde_json::json!({
        "iss": "postern", "aud": "postern", "sub": subject, "groups": [], "kind": "human",
        "iat": iat, "nbf": iat, "exp": exp, "jti": format!("e2e-{iat}-{exp}"),
    });
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).expect("signing")
}

#[tokio::test]
async fn bad_credentials_are_refused_with_28p01() {
    let mut fx = Fixture::start();
    let base = fx.gateway(SHOP);

    // Sanity: a token signed here the same way, but valid, is accepted; so the refusals below
    // are about what they change, not about how the token was made.
    let now = unix_now();
    let good = sign_token(&fx.gw.key_path(), ALICE, now - 60, now + 600);
    assert_eq!(
        base.clone()
            .password(Some(&good))
            .query("select 'hand-made token works'"),
        "hand-made token works"
    );

    // No token: an empty password. (psql itself refuses to send an empty password, so only
    // tokio-postgres and a raw socket can show this one.)
    let err = base.clone().password(Some("")).refusal().await;
    assert_eq!(
        err.code(),
        &SqlState::INVALID_PASSWORD,
        "empty password: {}",
        err.message()
    );
    assert!(
        err.message().to_lowercase().contains("no token"),
        "empty password: {}",
        err.message()
    );
    fx.assert_still_serving();

    assert_refused(
        &mut fx,
        base.clone().password(Some("not-a-token")),
        SqlState::INVALID_PASSWORD,
        &["token"],
        "garbage token",
    )
    .await;
    // A valid token with one character of its signature changed.
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let mut sig: Vec<char> = signature.chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{signed}.{}", sig.into_iter().collect::<String>());
    assert_refused(
        &mut fx,
        base.clone().password(Some(&tampered)),
        SqlState::INVALID_PASSWORD,
        &["signature"],
        "tampered signature",
    )
    .await;

    let expired = sign_token(&fx.gw.key_path(), ALICE, now - 7200, now - 3600);
    assert_refused(
        &mut fx,
        base.clone().password(Some(&expired)),
        SqlState::INVALID_PASSWORD,
        &["expired"],
        "expired token",
    )
    .await;

    // A token from another gateway (another data_dir, so another signing key).
    let other = tempfile::tempdir().unwrap();
    let other_config = other.path().join("other.toml");
    let text = std::fs::read_to_string(&fx.gw.config_path).unwrap();
    let data_line = text
        .lines()
        .find(|l| l.starts_with("data_dir"))
        .unwrap()
        .to_owned();
    let other_data = other.path().join("data");
    std::fs::write(
        &other_config,
        text.replace(
            &data_line,
            &format!("data_dir = {:?}", other_data.display().to_string()),
        ),
    )
    .unwrap();
    let forged = issue_token(&other_config, &["--subject", ALICE, "--kind", "human"]);
    assert!(
        other_data.join("keys/gateway.key").exists(),
        "token issue did not create a key in the other data_dir"
    );
    assert_ne!(
        std::fs::read(other_data.join("keys/gateway.key")).unwrap(),
        std::fs::read(fx.gw.key_path()).unwrap(),
        "two data_dirs got the same key"
    );
    assert_refused(
        &mut fx,
        base.clone().password(Some(&forged)),
        SqlState::INVALID_PASSWORD,
        &["signature"],
        "forged token",
    )
    .await;

    // The user name must be the token's subject.
    let mut mallory = base.clone();
    mallory.user = "mallory".into();
    assert_refused(
        &mut fx,
        mallory,
        SqlState::INVALID_PASSWORD,
        &["subject", "mallory", ALICE],
        "user is not the token's subject",
    )
    .await;
}

#[tokio::test]
async fn access_rules_unknown_targets_and_dead_upstreams() {
    let dead_port = free_port();
    let mut fx = Fixture::with(|pg| {
        GatewayConfig::shop(pg)
            .target(Target::new("dba_only", pg.url(SHOP)).allow(Allow {
                groups: vec!["dba".into()],
                ..Allow::default()
            }))
            .target(Target::new("humans_only", pg.url(SHOP)).allow(Allow {
                kinds: vec!["human".into()],
                ..Allow::default()
            }))
            .target(Target::new("bob_only", pg.url(SHOP)).allow(Allow {
                subjects: vec!["bob".into()],
                ..Allow::default()
            }))
            .target(Target::new(
                "nowhere",
                format!("postgres://postgres@127.0.0.1:{dead_port}/{SHOP}"),
            ))
    });
    let bin = fx.pg.bin_dir().to_path_buf();

    // allow.groups
    let plain = fx.gw.token(ALICE);
    let dba = fx
        .gw
        .issue(&["--subject", ALICE, "--group", "dba", "--group", "other"]);
    let conn = fx.gw.conn_with("dba_only", ALICE, &plain, &bin);
    assert_refused(
        &mut fx,
        conn,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        &[ALICE, "dba_only"],
        "not in group dba",
    )
    .await;
    assert_eq!(
        fx.gw
            .conn_with("dba_only", ALICE, &dba, &bin)
            .query("select 'in dba'"),
        "in dba"
    );

    // allow.kinds
    let agent = fx.gw.issue(&["--subject", ALICE, "--kind", "agent"]);
    let conn = fx.gw.conn_with("humans_only", ALICE, &agent, &bin);
    assert_refused(
        &mut fx,
        conn,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        &["humans_only"],
        "agent on a humans-only target",
    )
    .await;
    assert_eq!(
        fx.gw
            .conn_with("humans_only", ALICE, &plain, &bin)
            .query("select 'human'"),
        "human"
    );

    // allow.subjects
    let conn = fx.gw.conn_with("bob_only", ALICE, &plain, &bin);
    assert_refused(
        &mut fx,
        conn,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        &["bob_only"],
        "alice on bob's target",
    )
    .await;
    let bob = fx.gw.token("bob");
    assert_eq!(
        fx.gw
            .conn_with("bob_only", "bob", &bob, &bin)
            .query("select current_user"),
        "postgres"
    );

    // Unknown target.
    let conn = fx.gw.conn_with("no_such_target", ALICE, &plain, &bin);
    assert_refused(
        &mut fx,
        conn,
        SqlState::INVALID_CATALOG_NAME,
        &["no_such_target"],
        "unknown target",
    )
    .await;

    // Upstream not listening.
    let conn = fx.gw.conn_with("nowhere", ALICE, &plain, &bin);
    assert_refused(
        &mut fx,
        conn,
        SqlState::CONNECTION_FAILURE,
        &["nowhere"],
        "upstream not listening",
    )
    .await;

    // The upstream goes away, then comes back.
    fx.pg.stop().unwrap();
    let err = fx.gateway(SHOP).refusal().await;
    assert_eq!(
        err.code(),
        &SqlState::CONNECTION_FAILURE,
        "upstream stopped: {}",
        err.message()
    );
    assert!(
        err.message().contains(SHOP),
        "the error does not name the target: {}",
        err.message()
    );
    fx.pg.restart().unwrap();
    fx.assert_still_serving();
}
