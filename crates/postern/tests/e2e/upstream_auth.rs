//! The gateway logs in to the upstream with credentials it holds: md5 and SCRAM-SHA-256 roles,
//! passwords from an environment variable or a file. A wrong upstream password is reported as
//! a connection failure naming the target, never echoing the password.

use postern_testkit::{AuthMethod, TempPostgres};
use tokio_postgres::error::SqlState;

use crate::util::*;

const MD5_PASSWORD: &str = "md5-Secret-1";
const SCRAM_PASSWORD: &str = "scram Secret 2 ü";
const WRONG_PASSWORD: &str = "definitely-not-the-password";

fn role_url(pg: &TempPostgres, role: &str) -> String {
    format!("postgres://{role}@127.0.0.1:{}/{SHOP}", pg.port())
}

#[tokio::test]
async fn md5_and_scram_roles_with_password_env_and_file() {
    let pg = TempPostgres::builder()
        .superuser_password("superuser-pw")
        .role("md5_user", MD5_PASSWORD, AuthMethod::Md5)
        .role("scram_user", SCRAM_PASSWORD, AuthMethod::ScramSha256)
        .start()
        .expect("starting PostgreSQL with password roles");
    load_shop(&pg);
    pg.psql(
        SHOP,
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO md5_user, scram_user",
    )
    .unwrap();

    let secrets = tempfile::tempdir().unwrap();
    let scram_file = secrets.path().join("scram.pw");
    std::fs::write(&scram_file, SCRAM_PASSWORD).unwrap();
    let md5_file = secrets.path().join("md5.pw");
    std::fs::write(&md5_file, MD5_PASSWORD).unwrap();
    let wrong_file = secrets.path().join("wrong.pw");
    std::fs::write(&wrong_file, WRONG_PASSWORD).unwrap();

    let config = GatewayConfig::default()
        .target(Target::new("md5_env", role_url(&pg, "md5_user")).password_env("E2E_MD5_PASSWORD"))
        .target(Target::new("md5_file", role_url(&pg, "md5_user")).password_file(&md5_file))
        .target(
            Target::new("scram_env", role_url(&pg, "scram_user"))
                .password_env("E2E_SCRAM_PASSWORD"),
        )
        .target(Target::new("scram_file", role_url(&pg, "scram_user")).password_file(&scram_file))
        .target(
            Target::new("wrong_env", role_url(&pg, "scram_user"))
                .password_env("E2E_WRONG_PASSWORD"),
        )
        .target(Target::new("wrong_md5_file", role_url(&pg, "md5_user")).password_file(&wrong_file))
        .target(Target::new("no_password", role_url(&pg, "scram_user")))
        .env("E2E_MD5_PASSWORD", MD5_PASSWORD)
        .env("E2E_SCRAM_PASSWORD", SCRAM_PASSWORD)
        .env("E2E_WRONG_PASSWORD", WRONG_PASSWORD);
    let gw = Gateway::start(&config);
    let token = gw.token(ALICE);

    for (target, role) in [
        ("md5_env", "md5_user"),
        ("md5_file", "md5_user"),
        ("scram_env", "scram_user"),
        ("scram_file", "scram_user"),
    ] {
        let conn = gw.conn_with(target, ALICE, &token, pg.bin_dir());
        assert_eq!(
            conn.query("SELECT current_user, count(*) FROM customers GROUP BY 1"),
            format!("{role}|50"),
            "target {target}"
        );
        let (client, _) = conn.client().await;
        let row = client
            .query_one("SELECT session_user::text", &[])
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            role,
            "target {target} (tokio-postgres)"
        );
    }

    for target in ["wrong_env", "wrong_md5_file", "no_password"] {
        let conn = gw.conn_with(target, ALICE, &token, pg.bin_dir());
        let err = conn.refusal().await;
        let text = format!("{} {:?} {:?}", err.message(), err.detail(), err.hint());
        assert!(
            text.contains(target),
            "{target}: the error ({}) does not name the target: {text}",
            err.code().code()
        );
        assert_ne!(
            err.code(),
            &SqlState::INVALID_PASSWORD,
            "{target}: an upstream failure is not the caller's bad token"
        );
        for secret in [WRONG_PASSWORD, SCRAM_PASSWORD, MD5_PASSWORD] {
            assert!(
                !text.contains(secret),
                "{target}: the error leaks a password: {text}"
            );
        }
        let out = conn.psql(&["-c", "select 1"], None);
        assert!(
            !out.status.success(),
            "{target}: psql connected with a wrong upstream password"
        );
        assert!(
            stderr(&out).contains(target),
            "{target}: psql's message does not name the target:\n{}",
            stderr(&out)
        );
        assert!(
            !gw.log().contains(WRONG_PASSWORD),
            "the gateway log contains the wrong password"
        );
    }

    // And the good targets still work afterwards.
    let conn = gw.conn_with("scram_env", ALICE, &token, pg.bin_dir());
    assert_eq!(conn.query("SELECT current_user"), "scram_user");
    let log = gw.log();
    for secret in [MD5_PASSWORD, SCRAM_PASSWORD] {
        assert!(
            !log.contains(secret),
            "the gateway log contains an upstream password"
        );
    }
}
