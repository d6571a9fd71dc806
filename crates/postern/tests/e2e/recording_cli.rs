//! The recording commands on real sessions: a psql session and a pgbench run through the
//! gateway each leave a recording that `postern verify` accepts offline with only the public
//! key; `sessions list --json` indexes them; `sessions show` prints the timeline; `export`
//! writes JSON lines and asciicast; `replay --against` a fresh copy of the database matches
//! every statement and reports the difference once the sandbox's data differ; and a flipped
//! byte makes `verify` fail naming the event.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Runs `postern ARGS --config <the gateway's config>`.
fn postern(gw: &Gateway, args: &[&str]) -> Output {
    let mut cmd = Command::new(postern_bin());
    cmd.args(args)
        .arg("--config")
        .arg(&gw.config_path)
        .env_remove("POSTERN_CONFIG");
    run_with_timeout(cmd, None, Duration::from_secs(120))
}

/// Runs `postern ARGS` in `dir` with no configuration at all (an auditor's machine).
fn postern_offline(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(postern_bin());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("POSTERN_CONFIG")
        .stdin(Stdio::null());
    run_with_timeout(cmd, None, Duration::from_secs(120))
}

fn recordings_dir(gw: &Gateway) -> PathBuf {
    gw.data_dir.join("recordings")
}

/// `sessions list --json` as values.
fn list_sessions(gw: &Gateway, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["sessions", "list", "--json"];
    args.extend_from_slice(extra);
    let out = postern(gw, &args);
    assert_success(&out, "postern sessions list --json");
    let value: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("sessions list --json is not JSON ({e}):\n{}", stdout(&out)));
    value.as_array().expect("a JSON array").clone()
}

/// Waits until the one session against `target` has ended and its recording verifies, and
/// returns its index entry.
fn wait_for_sealed_session(gw: &Gateway, target: &str) -> Value {
    let session = eventually(Duration::from_secs(30), || {
        let sessions = list_sessions(gw, &["--target", target]);
        sessions.into_iter().find(|s| !s["ended_at"].is_null())
    })
    .unwrap_or_else(|| {
        panic!(
            "no ended session against {target} in the index after 30 s: {:?}",
            list_sessions(gw, &[])
        )
    });
    let id = session["id"].as_str().expect("an id").to_owned();
    let sealed = eventually(Duration::from_secs(30), || {
        postern(gw, &["verify", &id]).status.success().then_some(())
    });
    if sealed.is_none() {
        let out = postern(gw, &["verify", &id]);
        panic!(
            "the recording of {id} did not verify within 30 s:\n{}{}\nrecordings: {:?}",
            stdout(&out),
            stderr(&out),
            std::fs::read_dir(recordings_dir(gw)).map(|d| d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect::<Vec<_>>())
        );
    }
    session
}

/// Copies a directory tree (one level of subdirectories is all a recording has).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Copies the public key and the recording of `id` to a fresh directory and verifies the copy
/// there, without any configuration. Returns the directory and the copied recording's path.
fn verify_offline(gw: &Gateway, id: &str) -> (tempfile::TempDir, PathBuf) {
    let auditor = tempfile::Builder::new()
        .prefix("postern-auditor-")
        .tempdir()
        .unwrap();
    let key = auditor.path().join("gateway.pub");
    std::fs::copy(gw.data_dir.join("keys").join("gateway.pub"), &key)
        .expect("copying the gateway's public key");
    let copy = auditor.path().join(id);
    copy_dir(&recordings_dir(gw).join(id), &copy);
    let out = postern_offline(
        auditor.path(),
        &["verify", copy.to_str().unwrap(), "--key", "gateway.pub"],
    );
    assert_success(&out, "postern verify offline with only the public key");
    let line = stdout(&out);
    assert_eq!(line.lines().count(), 1, "verify prints one line: {line}");
    assert!(
        line.starts_with(&format!("intact: session {id} (alice → ")),
        "unexpected summary: {line}"
    );
    assert!(line.contains("sealed closed"), "{line}");
    (auditor, copy)
}

const PSQL_SCRIPT: &str = "\
select count(*) from customers;
select id, name, email from customers order by id limit 5;
select * from no_such_table;
begin;
update customers set name = 'Renamed' where id = 7;
select name from customers where id = 7;
rollback;
select sku, price, tags from products order by id limit 3;
select id, b, i4, t, by, tstz, ai from e2e_types order by id;
create temp table pasted (x int, y text);
copy pasted from stdin;
1\tone
2\ttwo
\\.
select * from pasted order by x;
copy pasted to stdout;
";

/// The statements psql sends for [`PSQL_SCRIPT`] (the COPY data lines are not statements).
const PSQL_STATEMENTS: usize = 13;

#[test]
fn a_psql_session_is_recorded_verified_shown_exported_and_replayed() {
    let fx = Fixture::start();
    let out = fx.gateway(SHOP).psql(
        &["-v", "ON_ERROR_STOP=0", "-f", "-"],
        Some(PSQL_SCRIPT.as_bytes()),
    );
    assert!(
        stderr(&out).contains("no_such_table"),
        "psql should have reported the error: {}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("Renamed"), "{}", stdout(&out));

    // The index lists the session with the documented fields.
    let session = wait_for_sealed_session(&fx.gw, SHOP);
    let id = session["id"].as_str().unwrap().to_owned();
    assert_eq!(session["subject"], ALICE, "{session}");
    assert_eq!(session["kind"], "human", "{session}");
    assert_eq!(session["target"], SHOP, "{session}");
    for field in ["started_at", "ended_at"] {
        let text = session[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {session}"));
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{field} {text:?} is not RFC 3339: {e}"));
    }
    assert!(session["bytes_in"].as_u64().unwrap() > 0, "{session}");
    assert!(session["recording"].is_string(), "{session}");
    let table = postern(&fx.gw, &["sessions", "list", "--identity", ALICE]);
    assert_success(&table, "sessions list");
    assert!(stdout(&table).contains(&id), "{}", stdout(&table));
    let nobody = list_sessions(&fx.gw, &["--identity", "nobody"]);
    assert!(nobody.is_empty(), "{nobody:?}");

    // Verified offline, with only the public key.
    let (auditor, copy) = verify_offline(&fx.gw, &id);
    // ... and by id, and the whole recordings directory.
    assert_success(&postern(&fx.gw, &["verify", &id]), "verify ID");
    let all = postern(
        &fx.gw,
        &["verify", recordings_dir(&fx.gw).to_str().unwrap()],
    );
    assert_success(&all, "verify of the recordings directory");
    assert!(stdout(&all).starts_with("intact: "), "{}", stdout(&all));

    // The timeline names the statements, the decisions, the results and the error.
    let show = postern(&fx.gw, &["sessions", "show", &id[..13]]);
    assert_success(&show, "sessions show");
    let timeline = stdout(&show);
    for needle in [
        "who:     alice (human",
        "target:  shop (postgres)",
        "recording: verified intact",
        "select count(*) from customers;",
        "allowed",
        "✓ SELECT 1",
        "5 rows",
        "select * from no_such_table;",
        "ERROR 42P01: relation \"no_such_table\" does not exist",
        "✓ UPDATE 1",
        "✓ ROLLBACK",
        "copy data to the server: ",
        "✓ COPY 2",
        "copy data to the client: ",
        "end ",
    ] {
        assert!(
            timeline.contains(needle),
            "no {needle:?} in the timeline:\n{timeline}"
        );
    }

    // JSON lines: every line an event, from session_start to session_end.
    let export = postern(&fx.gw, &["export", &id, "--format", "jsonl"]);
    assert_success(&export, "export --format jsonl");
    let events: Vec<Value> = stdout(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(events.first().unwrap()["type"], "session_start");
    assert_eq!(events.last().unwrap()["type"], "session_end");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "{e}");
    }
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "command" && e["text"] == "select * from no_such_table;")
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "error" && e["code"] == "42P01")
    );
    // COPY out: what the client received, whole (the server's one message per row recorded
    // as one batch).
    let copied_out: String = events
        .iter()
        .filter(|e| e["type"] == "copy_data" && e["direction"] == "to_client")
        .map(|e| e["data"].as_str().expect("text COPY data"))
        .collect();
    assert_eq!(copied_out, "1\tone\n2\ttwo\n");
    let shown = postern(&fx.gw, &["sessions", "show", &id, "--json"]);
    assert_eq!(
        stdout(&shown),
        stdout(&export),
        "show --json prints the export"
    );

    // asciicast: a header, then timed output that reads like psql.
    let cast_path = auditor.path().join("session.cast");
    let cast = postern(
        &fx.gw,
        &[
            "export",
            &id,
            "--format",
            "asciicast",
            "--output",
            cast_path.to_str().unwrap(),
        ],
    );
    assert_success(&cast, "export --format asciicast");
    let cast = std::fs::read_to_string(&cast_path).unwrap();
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{header}");
    assert!(header["width"].as_u64().unwrap() >= 80);
    let mut text = String::new();
    let mut last = 0.0;
    for line in lines {
        let frame: Value = serde_json::from_str(line).unwrap();
        let t = frame[0].as_f64().unwrap();
        assert!(t >= last, "asciicast times go backwards: {line}");
        last = t;
        assert_eq!(frame[1], "o");
        text.push_str(frame[2].as_str().unwrap());
    }
    for needle in [
        "shop=> select count(*) from customers;\r\n",
        "(5 rows)",
        "ERROR:  relation \"no_such_table\" does not exist",
        "UPDATE 1\r\n",
    ] {
        assert!(
            text.contains(needle),
            "no {needle:?} in the asciicast:\n{text}"
        );
    }

    // Replay on a fresh copy of the database: everything matches.
    fx.pg.create_database("sandbox").unwrap();
    fx.pg.load_sample("sandbox").unwrap();
    fx.pg.psql("sandbox", TYPES_SQL).unwrap();
    let sandbox = fx.pg.url("sandbox");
    let replay = postern(&fx.gw, &["replay", &id, "--against", &sandbox]);
    let report = stdout(&replay);
    assert!(
        replay.status.success(),
        "replay on a fresh copy should match:\n{report}{}",
        stderr(&replay)
    );
    let statements = PSQL_STATEMENTS;
    assert!(
        report.contains(&format!(
            "replayed {statements} of {statements} statements: {statements} matched, 0 differed"
        )),
        "{report}"
    );
    assert!(report.contains("error 42P01, as recorded"), "{report}");
    assert!(report.contains("copied 2 rows, as recorded"), "{report}");
    assert!(
        report.contains("bytes of COPY data, as recorded"),
        "{report}"
    );

    // A changed row in the sandbox shows up as a difference, and the exit code says so.
    fx.pg
        .psql(
            "sandbox",
            "update customers set email = 'changed@example.com' where id = 2",
        )
        .unwrap();
    let replay = postern(&fx.gw, &["replay", &id, "--against", &sandbox]);
    let report = stdout(&replay);
    assert_eq!(replay.status.code(), Some(1), "{report}{}", stderr(&replay));
    let diff = report
        .lines()
        .find(|l| l.contains("DIFF"))
        .unwrap_or_else(|| panic!("no DIFF line:\n{report}"));
    assert!(
        diff.contains("row 2 differs") && diff.contains("changed@example.com"),
        "{diff}"
    );
    assert!(report.contains("1 differed"), "{report}");

    // Flip one byte in the middle of the copied chunk: verify fails, naming the event.
    let chunk = copy.join("chunk-00000000.rec");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&chunk, &bytes).unwrap();
    let out = postern_offline(
        auditor.path(),
        &["verify", copy.to_str().unwrap(), "--key", "gateway.pub"],
    );
    assert!(!out.status.success(), "verify accepted a flipped byte");
    let text = stdout(&out);
    assert!(text.contains("FAILED") && text.contains("event "), "{text}");
}

#[test]
fn a_pgbench_run_is_recorded_verified_and_replayed() {
    let fx = Fixture::with(|pg| {
        pg.create_database("bench")
            .expect("creating the bench database");
        GatewayConfig::shop(pg).target(Target::new("bench", pg.url("bench")))
    });
    fx.direct("bench").pgbench_init();
    // The sandbox: a copy of the database as it was before the run.
    fx.pg
        .psql("postgres", "CREATE DATABASE bench_sandbox TEMPLATE bench")
        .unwrap();

    let mut cmd = fx.gateway("bench").command("pgbench");
    cmd.args(["-n", "-t", "50", "-M", "prepared"]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(180));
    assert_success(&out, "pgbench -M prepared through the gateway");
    assert!(
        stdout(&out).contains("number of transactions actually processed: 50/50"),
        "{}",
        stdout(&out)
    );

    let session = wait_for_sealed_session(&fx.gw, "bench");
    let id = session["id"].as_str().unwrap().to_owned();
    verify_offline(&fx.gw, &id);

    let show = postern(&fx.gw, &["sessions", "show", &id]);
    assert_success(&show, "sessions show");
    let timeline = stdout(&show);
    for needle in [
        "parse ",
        "bind ",
        "execute ",
        "UPDATE pgbench_accounts",
        "✓ UPDATE 1",
    ] {
        assert!(
            timeline.contains(needle),
            "no {needle:?} in the timeline:\n{timeline}"
        );
    }

    // Replayed on the copy, every statement matches (the balances read back included).
    let sandbox = fx.pg.url("bench_sandbox");
    let replay = postern(&fx.gw, &["replay", &id, "--against", &sandbox]);
    let report = stdout(&replay);
    assert!(
        replay.status.success(),
        "replay of pgbench on a fresh copy should match:\n{report}{}",
        stderr(&replay)
    );
    assert!(report.contains(" 0 differed, 0 skipped"), "{report}");
    let matched: usize = report.lines().filter(|l| l.contains("  ok  ")).count();
    assert!(
        matched >= 50 * 7,
        "only {matched} statements replayed:\n{report}"
    );

    // Replayed again, the sandbox's balances have moved on: the reads differ.
    let again = postern(&fx.gw, &["replay", &id, "--against", &sandbox]);
    let report = stdout(&again);
    assert_eq!(again.status.code(), Some(1), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.contains("DIFF") && l.contains("SELECT abalance")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_postgres_session_replays_in_binary() {
    let fx = Fixture::start();
    {
        let (client, _messages) = fx.gateway(SHOP).client().await;
        let rows = client
            .query(
                "select id, name, created_at from customers where id <= $1 order by id",
                &[&5i64],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 5);
        client
            .query("select count(*), sum(total) from orders", &[])
            .await
            .unwrap();
        client
            .query("select true as yes, false as no, null::int as nothing", &[])
            .await
            .unwrap();
        let updated = client
            .execute("update products set price = price where id = $1", &[&1i32])
            .await
            .unwrap();
        assert_eq!(updated, 1);
        let err = client.query("select 1/0", &[]).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), "22012");
        client
            .batch_execute("select 1; select 'two'")
            .await
            .unwrap();
    }
    let gw = &fx.gw;
    let session = tokio::task::block_in_place(|| wait_for_sealed_session(gw, SHOP));
    let id = session["id"].as_str().unwrap().to_owned();

    fx.pg.create_database("sandbox").unwrap();
    fx.pg.load_sample("sandbox").unwrap();
    let sandbox = fx.pg.url("sandbox");
    let replay =
        tokio::task::block_in_place(|| postern(&fx.gw, &["replay", &id, "--against", &sandbox]));
    let report = stdout(&replay);
    assert!(
        replay.status.success(),
        "replay of a tokio-postgres session on a fresh copy should match:\n{report}{}",
        stderr(&replay)
    );
    assert!(report.contains("compared in binary"), "{report}");
    assert!(report.contains("error 22012, as recorded"), "{report}");
    assert!(report.contains(" 0 differed, 0 skipped"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_statements_are_shown_and_not_replayed() {
    let fx = Fixture::with(|pg| {
        GatewayConfig::shop(pg).raw(
            r#"
[[rules]]
name = "no-ddl"
when = { statements = ["ddl"] }
action = "block"
"#,
        )
    });
    {
        let (client, _messages) = fx.gateway(SHOP).client().await;
        client.batch_execute("select 1").await.unwrap();
        let simple = client.batch_execute("drop table orders").await.unwrap_err();
        assert_eq!(simple.code().unwrap().code(), "42501", "{simple:?}");
        let extended = client.query("drop table products", &[]).await.unwrap_err();
        assert_eq!(extended.code().unwrap().code(), "42501", "{extended:?}");
        client
            .query("select count(*) from orders", &[])
            .await
            .unwrap();
    }
    let gw = &fx.gw;
    let session = tokio::task::block_in_place(|| wait_for_sealed_session(gw, SHOP));
    let id = session["id"].as_str().unwrap().to_owned();

    let show = tokio::task::block_in_place(|| postern(gw, &["sessions", "show", &id]));
    assert_success(&show, "sessions show");
    let timeline = stdout(&show);
    assert_eq!(
        timeline.matches("BLOCKED by rule \"no-ddl\"").count(),
        2,
        "{timeline}"
    );

    fx.pg.create_database("sandbox").unwrap();
    fx.pg.load_sample("sandbox").unwrap();
    let sandbox = fx.pg.url("sandbox");
    let replay =
        tokio::task::block_in_place(|| postern(gw, &["replay", &id, "--against", &sandbox]));
    let report = stdout(&replay);
    assert!(replay.status.success(), "{report}{}", stderr(&replay));
    assert!(
        report.contains("replayed 2 of 4 statements: 2 matched, 0 differed, 2 skipped"),
        "{report}"
    );
    assert_eq!(
        report
            .lines()
            .filter(|l| l.contains("  skip  ") && l.contains("rule \"no-ddl\""))
            .count(),
        2,
        "{report}"
    );
    // Nothing was dropped in the sandbox.
    assert_eq!(
        fx.pg
            .psql(
                "sandbox",
                "select count(*) from pg_tables where tablename in ('orders', 'products')"
            )
            .unwrap(),
        "2"
    );
}
