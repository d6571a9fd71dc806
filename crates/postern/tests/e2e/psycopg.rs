//! psycopg 3 (libpq underneath, but driven very differently from psql): binary results,
//! server-side parameters, pipeline mode, named cursors, COPY and LISTEN/NOTIFY, each compared
//! with a direct connection by `tests/py/psycopg_e2e.py`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether psycopg 3 can be imported; outside CI a missing psycopg skips the test with a
/// message, under CI (env `CI` set) it is a failure, because scripts/test installs it.
fn psycopg_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import psycopg"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "psycopg 3 cannot be imported by {} and CI is set: scripts/test must install it (pip install \"psycopg[binary]\")",
            python()
        );
        eprintln!(
            "SKIPPED psycopg_features_match_direct: `{} -c 'import psycopg'` failed; install it with pip install \"psycopg[binary]\"",
            python()
        );
    }
    ok
}

#[test]
fn psycopg_features_match_direct() {
    if !psycopg_available() {
        return;
    }
    let fx = Fixture::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/psycopg_e2e.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .env("POSTERN_GW_DSN", fx.gateway(SHOP).conninfo())
        .env("POSTERN_DIRECT_DSN", fx.direct(SHOP).conninfo())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PGPASSFILE", "/nonexistent/pgpass");
    let out = run_with_timeout(cmd, None, Duration::from_secs(180));
    let text = stdout(&out);
    assert_success(&out, "tests/py/psycopg_e2e.py");
    assert!(
        text.contains(" 0 failed"),
        "unexpected script output:\n{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}
