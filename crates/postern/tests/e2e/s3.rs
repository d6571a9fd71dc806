//! Recordings in an S3-compatible object store (`[recording] sink = "s3://bucket/prefix"`),
//! against a real S3 server: `moto_server` (`pip install "moto[server]"`), started by the test
//! on a free port and killed on drop. Without moto the tests are skipped with a message, unless
//! `CI` is set: then they fail.
//!
//! - A psql session is uploaded while it runs (its statement is in the bucket before psql
//!   disconnects), and after it the bucket alone — downloaded, parts concatenated — verifies
//!   with the gateway's public key, manifest log included.
//! - The store stopped mid-session (SIGSTOP: connections hang): the next statement fails with
//!   SQLSTATE 58030 naming the recording and never reaches the upstream; once the store is
//!   back and the gateway restarted, the broken recording is sealed as interrupted in the
//!   bucket and everything verifies.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use postern_record::{
    EventBody, S3Config, S3Store, SealStatus, VerifyingKey, load_verifying_key, read_events,
    verify_all, verify_session,
};

use crate::util::*;

const KEY_VAR: &str = "POSTERN_E2E_S3_KEY";
const SECRET_VAR: &str = "POSTERN_E2E_S3_SECRET";
const BUCKET: &str = "recordings";
const PREFIX: &str = "gw/e2e";

/// moto (`postern_testkit::Moto`) with the test's bucket, and the gateway settings that send
/// recordings to it.
struct Moto(postern_testkit::Moto);

impl std::ops::Deref for Moto {
    type Target = postern_testkit::Moto;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Moto {
    /// Starts moto with the bucket created; `None` with a message when moto is not installed
    /// and `CI` is unset.
    fn start() -> Option<Moto> {
        let moto = postern_testkit::Moto::start()?;
        moto.create_bucket(BUCKET);
        Some(Moto(moto))
    }

    /// The `[recording]` section that sends recordings to this server.
    fn recording_toml(&self) -> String {
        format!(
            "[recording]\n\
             sink = \"s3://{BUCKET}/{PREFIX}\"\n\
             s3_endpoint = {}\n\
             s3_allow_http = true\n\
             s3_access_key_env = \"{KEY_VAR}\"\n\
             s3_secret_key_env = \"{SECRET_VAR}\"\n\
             s3_timeout = \"2s\"\n",
            toml_str(&self.endpoint())
        )
    }

    /// The environment the gateway reads the credentials from.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (KEY_VAR.into(), "testing".into()),
            (SECRET_VAR.into(), "testing".into()),
        ]
    }

    fn gateway_config(&self, pg: &postern_testkit::TempPostgres) -> GatewayConfig {
        let mut config = GatewayConfig::shop(pg).raw(&self.recording_toml());
        for (k, v) in self.env() {
            config = config.env(&k, &v);
        }
        config
    }

    /// The test's own view of the bucket.
    fn store(&self) -> S3Store {
        S3Store::new(S3Config {
            endpoint: Some(self.endpoint()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
            timeout: Duration::from_secs(5),
            ..S3Config::from_url(&format!("s3://{BUCKET}/{PREFIX}")).unwrap()
        })
        .unwrap()
    }
}

fn public_key(gw: &Gateway) -> VerifyingKey {
    let path = gw.data_dir.join("keys").join("gateway.pub");
    load_verifying_key(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The `command` texts of the recording in `dir`.
fn command_texts(dir: &Path) -> Vec<String> {
    read_events(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())))
        .filter_map(|e| match e.body {
            EventBody::Command(c) => c.text,
            _ => None,
        })
        .collect()
}

/// Session directories (not `_log`, `_s3`) directly under `dir`.
fn session_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(['_', '.']))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_psql_session_is_uploaded_while_it_runs_and_verifies_from_the_bucket() {
    let Some(moto) = Moto::start() else { return };
    let fx = Fixture::with(|pg| moto.gateway_config(pg));
    fx.direct(SHOP)
        .query("CREATE TABLE s3_t (id int PRIMARY KEY, note text)");
    let store = moto.store();
    let key = public_key(&fx.gw);

    let mut cmd = fx.gateway(SHOP).command("psql");
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut psql = cmd.spawn().expect("starting psql");
    let mut stdin = psql.stdin.take().unwrap();
    writeln!(
        stdin,
        "INSERT INTO s3_t VALUES (1, 'while the session is open');"
    )
    .unwrap();
    stdin.flush().unwrap();

    // The statement ran and its recording is in the bucket while psql is still connected.
    let scratch = tempfile::tempdir().unwrap();
    let (id, texts) = eventually(Duration::from_secs(30), || {
        let ids = store.list_sessions().ok()?;
        let [id] = &ids[..] else { return None };
        let into = scratch.path().join(format!("try-{}", rand_suffix()));
        let dir = store.download_session(id, &into).ok()?;
        let texts = command_texts(&dir);
        texts
            .iter()
            .any(|t| t.contains("INSERT INTO s3_t VALUES (1"))
            .then(|| (id.clone(), texts))
    })
    .unwrap_or_else(|| {
        panic!(
            "the INSERT never appeared in the bucket; objects: {:?}\n{}",
            store.list_sessions(),
            fx.gw.log()
        )
    });
    assert!(
        psql.try_wait().unwrap().is_none(),
        "psql is still connected when its statement is read back from the bucket"
    );
    assert_eq!(fx.direct(SHOP).query("SELECT count(*) FROM s3_t"), "1");
    eprintln!("open session {id}, commands in the bucket so far: {texts:?}");

    writeln!(stdin, "SELECT note FROM s3_t WHERE id = 1;").unwrap();
    writeln!(stdin, "\\q").unwrap();
    drop(stdin);
    let out = psql.wait_with_output().unwrap();
    assert_success(&out, "psql through the gateway");
    assert_eq!(stdout(&out).trim(), "while the session is open");

    // Sealed: the downloaded recording verifies offline with the public key alone.
    let report = eventually(Duration::from_secs(30), || {
        let into = scratch.path().join(format!("sealed-{}", rand_suffix()));
        let dir = store.download_session(&id, &into).ok()?;
        verify_session(&dir, &key).ok().map(|r| (r, dir))
    });
    let (report, dir) =
        report.unwrap_or_else(|| panic!("never sealed in the bucket\n{}", fx.gw.log()));
    assert_eq!(report.status, SealStatus::Closed, "{}", report.summary());
    let texts = command_texts(&dir);
    assert!(
        texts.iter().any(|t| t.contains("INSERT INTO s3_t"))
            && texts.iter().any(|t| t.contains("SELECT note FROM s3_t")),
        "{texts:?}"
    );
    // Nothing of the session went to the local recordings directory.
    let local = fx.gw.data_dir.join("recordings");
    assert_eq!(session_dirs(&local), Vec::<String>::new());

    // The whole prefix — recordings and the mirrored manifest log — verifies.
    let all = eventually(Duration::from_secs(30), || {
        let into = scratch.path().join(format!("all-{}", rand_suffix()));
        store.download_all(&into).ok()?;
        let all = verify_all(&into, &key).ok()?;
        (all.is_intact() && all.sessions.iter().any(|s| s.logged)).then_some(all)
    })
    .unwrap_or_else(|| panic!("the bucket never verified as a whole\n{}", fx.gw.log()));
    assert_eq!(all.sessions.len(), 1, "{:?}", all.sessions);
}

#[tokio::test]
async fn fail_closed_a_stopped_store_stops_the_statement_before_the_upstream() {
    let Some(moto) = Moto::start() else { return };
    let mut fx = Fixture::with(|pg| moto.gateway_config(pg));
    fx.direct(SHOP)
        .query("CREATE TABLE s3_t (id int PRIMARY KEY, note text)");
    let upstream_ids = |fx: &Fixture| {
        fx.direct(SHOP)
            .query("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM s3_t")
    };

    let (client, _messages) = fx.gateway(SHOP).client().await;
    client
        .batch_execute("INSERT INTO s3_t VALUES (1, 'before the store stopped')")
        .await
        .expect("a statement while the store works");

    moto.pause();
    let started = Instant::now();
    let err = client
        .batch_execute("INSERT INTO s3_t VALUES (2, 'while the store is stopped')")
        .await
        .expect_err("an INSERT whose event cannot be uploaded must fail");
    let took = started.elapsed();
    eprintln!("refused after {took:?}: {err:?}");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse from the gateway, got {err:?}"));
    assert_eq!(
        db.code().code(),
        "58030",
        "SQLSTATE; message: {}",
        db.message()
    );
    assert!(
        db.message().contains("recording") && db.message().contains("s3://"),
        "the error must say the recording in the store failed: {}",
        db.message()
    );
    assert!(took < Duration::from_secs(15), "the refusal took {took:?}");
    let next = tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await;
    assert!(
        matches!(next, Ok(Err(_))),
        "the session went on after the recording failed: {next:?}"
    );
    assert_eq!(upstream_ids(&fx), "1", "rows in s3_t (checked directly)");

    // While the store is stopped, a new session cannot be recorded: refused.
    let refusal = fx.gateway(SHOP).refusal().await;
    assert_eq!(
        refusal.code().code(),
        "58030",
        "a new session while the store is stopped: {}",
        refusal.message()
    );

    // The store is back: new sessions are served and recorded.
    moto.resume();
    fx.assert_still_serving();
    assert_eq!(upstream_ids(&fx), "1");

    // After a restart the broken recording is sealed in the bucket as interrupted, and the
    // bucket verifies as a whole.
    let key = public_key(&fx.gw);
    fx.gw.kill9();
    fx.gw.restart(&moto.env());
    let store = moto.store();
    let scratch = tempfile::tempdir().unwrap();
    let all = eventually(Duration::from_secs(30), || {
        let into = scratch.path().join(format!("all-{}", rand_suffix()));
        store.download_all(&into).ok()?;
        let all = verify_all(&into, &key).ok()?;
        all.is_intact().then_some((all, into))
    });
    let (all, root) = all.unwrap_or_else(|| {
        let into = scratch.path().join("last");
        let _ = store.download_all(&into);
        let last = verify_all(&into, &key).map(|a| {
            a.problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        });
        panic!(
            "the bucket does not verify after the restart: {last:?}\n{}",
            fx.gw.log()
        )
    });
    let mut interrupted = 0;
    for session in &all.sessions {
        let dir = root.join(&session.session_id);
        let report = verify_session(&dir, &key).unwrap();
        let texts = command_texts(&dir);
        if texts
            .iter()
            .any(|t| t.contains("INSERT INTO s3_t VALUES (1"))
        {
            assert_eq!(
                report.status,
                SealStatus::Interrupted,
                "{}",
                report.summary()
            );
            interrupted += 1;
        }
    }
    assert_eq!(
        interrupted, 1,
        "the failed session's recording: {:?}",
        all.sessions
    );
}

/// A unique name for a download directory (each try downloads afresh).
fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}
