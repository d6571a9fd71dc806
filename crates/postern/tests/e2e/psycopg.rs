//! psycopg 3 (libpq underneath, but driven very differently from psql): binary results,
//! server-side parameters, pipeline mode, named cursors, COPY and LISTEN/NOTIFY, each compared
//! with a direct connection by `tests/py/psycopg_e2e.py`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

#[test]
fn psycopg_features_match_direct() {
    if !python_has(
        "psycopg",
        "pip install \"psycopg[binary]\"",
        "psycopg_features_match_direct",
    ) {
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
