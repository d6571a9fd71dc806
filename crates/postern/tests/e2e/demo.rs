//! `postern demo` and the CLI surface: the README's first command must print a connection line
//! that works when pasted into a shell, and every command must answer `--help`.

use crate::util::postern_bin;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn demo_prints_a_psql_line_that_works() {
    let mut demo = Command::new(postern_bin())
        .args(["demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start postern demo");
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("PGPASSWORD=") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(120));
    let result = line.map(|line| {
        // Run the printed line exactly as a user would paste it.
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{line} -X -A -t -c 'SELECT count(*) FROM customers' \
                 -c 'SELECT email FROM customers WHERE id = 1' -c '\\conninfo'"
            ))
            .output()
            .expect("run sh")
    });
    // Stop the demo the way a user does, and check it cleans up after itself.
    send_signal(demo.id(), 15);
    let status = demo.wait().expect("wait for demo");
    let output = result.expect("demo printed no PGPASSWORD=... psql line within 120 s");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "psql line failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().next(),
        Some("50"),
        "expected the 50 sample customers: {stdout}"
    );
    assert_eq!(
        stdout.lines().nth(1),
        Some("[masked]"),
        "the demo's policy masks customers' e-mail addresses for the agent: {stdout}"
    );
    assert!(
        stdout.contains("SSL connection"),
        "the printed line should use TLS: {stdout}"
    );
    assert!(
        status.success(),
        "demo did not exit cleanly on SIGTERM: {status}"
    );
}

#[test]
fn every_command_answers_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["demo", "--help"],
        &["token", "--help"],
        &["token", "issue", "--help"],
        &["sessions", "--help"],
        &["verify", "--help"],
        &["replay", "--help"],
        &["approvals", "--help"],
        &["export", "--help"],
    ] {
        let out = Command::new(postern_bin())
            .args(args)
            .output()
            .expect("run postern");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "postern {args:?} failed");
        assert!(
            text.contains("Usage:"),
            "postern {args:?} printed no usage: {text}"
        );
    }
}

fn send_signal(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}
