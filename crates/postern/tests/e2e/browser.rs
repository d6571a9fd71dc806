//! The console in a real browser: `tests/browser/console.mjs` drives headless Chromium (the
//! Debian `chromium` package, through `playwright-core` from npm) and real psql sessions
//! through a gateway this test starts. Skipped, saying why, only when Chromium is not
//! installed (`scripts/test` installs it as root).
//!
//! With `POSTERN_SCREENSHOTS=docs` the screenshots go to docs/screenshots (how the ones in the
//! repository are made); otherwise to a scratch directory.

use crate::api::{People, fixture};
use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(path.into());
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `tests/browser` with its npm packages installed (`npm ci` when they are missing).
fn browser_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("running npm ci (Node.js and npm are needed for the browser tests)");
        assert_success(&out, "npm ci in tests/browser");
    }
    dir
}

#[test]
fn console_end_to_end() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED browser::console_end_to_end: Chromium is not installed (apt-get install \
             chromium; scripts/test does it when run as root)"
        );
        return;
    };
    let dir = browser_dir();
    let (fx, p): (Fixture, People) = fixture();
    let shots = match std::env::var("POSTERN_SCREENSHOTS").as_deref() {
        Ok("docs") => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"),
        _ => fx.gw.scratch().join("screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node");
    node.arg(dir.join("console.mjs"))
        .current_dir(&dir)
        .env(
            "POSTERN_URL",
            format!("http://127.0.0.1:{}", fx.gw.http_port),
        )
        .env("CHROMIUM", &chromium)
        .env("PSQL", fx.pg.bin_dir().join("psql"))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", fx.gw.port.to_string())
        .env("TARGET", SHOP)
        .env("SCREENSHOTS", &shots)
        .env("AGENT_TOKEN", &p.agent)
        .env("DBA_TOKEN", &p.dba)
        .env("ADMIN_TOKEN", &p.admin)
        .env("AUDITOR_TOKEN", &p.auditor)
        .env("PLAIN_TOKEN", &p.plain);
    let log_path = fx.gw.scratch().join("browser.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = node
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("running node (Node.js is needed for the browser tests)");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()) && text.contains("all steps passed"),
        "the browser test failed (screenshots in {}):\n{text}",
        shots.display()
    );
    println!("{text}");
    // What the browser decided happened in the database.
    let direct = fx.direct(SHOP);
    assert_eq!(
        direct.query("SELECT quantity FROM orders WHERE id = 1000"),
        "55"
    );
    assert_eq!(
        direct.query("SELECT count(*) FROM orders WHERE id = 1001"),
        "1"
    );
}
