//! `/metrics` (Prometheus text format) counts what happened through real clients, and every
//! audit event is also written as a JSON line to `[audit] file`.

use crate::api::{Http, POLICY, People};
use crate::approval_flow::held;
use crate::util::*;
use serde_json::{Value, json};
use std::time::Duration;

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_audit_lines_follow_what_clients_do() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("logs/audit.jsonl");
    let dead = format!(
        "postgres://postgres@127.0.0.1:{}/x",
        postern_testkit::free_port()
    );
    let fx = Fixture::with(|pg| {
        GatewayConfig::shop(pg)
            .target(Target::new("dead", dead))
            .raw(POLICY)
            .raw(&format!(
                "[[rules]]\nname = \"no-ddl\"\nwhen = {{ statements = [\"ddl\"] }}\naction = \"block\"\n\n\
                 [audit]\nfile = {}\n",
                toml_str(&audit_file.display().to_string())
            ))
    });
    let p = People::issue(&fx.gw);
    let http = Http::new(&fx.gw);

    let bob = fx.gw.conn_with(SHOP, "bob", &p.plain, fx.pg.bin_dir());
    assert_success(&bob.psql(&["-X", "-c", "SELECT 1"], None), "a read");
    let refused = bob.psql(&["-X", "-c", "DROP TABLE orders"], None);
    assert!(!refused.status.success(), "the DDL is blocked");
    let dead_out = fx
        .gw
        .conn_with("dead", "bob", &p.plain, fx.pg.bin_dir())
        .psql(&["-X", "-c", "SELECT 1"], None);
    assert!(!dead_out.status.success(), "the dead target fails");

    let agent = fx.gw.conn_with(SHOP, "agent-7", &p.agent, fx.pg.bin_dir());
    let task = held(&agent, "UPDATE orders SET quantity = 3 WHERE id = 1000").await;
    let approval = http.pending(&p.dba).await;
    let scrape = |http: &Http| {
        let http = Http {
            base: http.base.clone(),
            client: http.client.clone(),
        };
        async move {
            let (status, body) = http.send("GET", "/metrics", None, None).await;
            assert_eq!(status, 200);
            body.as_str().unwrap().to_owned()
        }
    };
    let text = scrape(&http).await;
    assert_eq!(
        sample(&text, "postern_approvals_pending"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "postern_sessions_active{target=\"shop\"}"),
        Some(1.0),
        "{text}"
    );

    let id = approval["id"].as_str().unwrap();
    let (status, _) = http
        .send(
            "POST",
            &format!("/api/v1/approvals/{id}/deny"),
            Some(&p.dba),
            Some(&json!({ "reason": "no" })),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();

    let text = scrape(&http).await;
    let at_least = |series: &str, min: f64| {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(v >= min, "{series} = {v}, expected at least {min}\n{text}");
    };
    at_least("postern_sessions_total{target=\"shop\"}", 3.0);
    at_least("postern_statements_total{decision=\"allow\"}", 1.0);
    at_least("postern_statements_total{decision=\"block\"}", 1.0);
    at_least("postern_statements_total{decision=\"approve\"}", 1.0);
    at_least("postern_statements_total{decision=\"denied\"}", 1.0);
    at_least("postern_upstream_errors_total{target=\"dead\"}", 1.0);
    at_least("postern_recording_bytes_total", 1000.0);
    at_least(
        "postern_statement_duration_seconds_count{target=\"shop\"}",
        2.0,
    );
    at_least(
        "postern_upstream_connect_seconds_count{target=\"shop\"}",
        3.0,
    );
    at_least("postern_approval_wait_seconds_count", 1.0);
    assert_eq!(sample(&text, "postern_approvals_pending"), Some(0.0));
    assert_eq!(
        sample(&text, "postern_upstream_errors_total{target=\"shop\"}"),
        Some(0.0)
    );
    assert!(
        text.contains("# TYPE postern_statement_duration_seconds histogram"),
        "{text}"
    );

    // A decision made with the CLI goes to the same file.
    let task = held(&agent, "UPDATE orders SET quantity = 4 WHERE id = 1000").await;
    let id = http.pending(&p.dba).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = std::process::Command::new(postern_bin())
        .arg("--config")
        .arg(&fx.gw.config_path)
        .args(["approvals", "approve", &id])
        .env("POSTERN_TOKEN", &p.dba)
        .output()
        .unwrap();
    assert_success(&out, "postern approvals approve");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // The audit lines: one JSON object per stored event.
    let lines = std::fs::read_to_string(&audit_file).expect("the audit file");
    let events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in [
        "session_opened",
        "session_closed",
        "upstream_failed",
        "approval_requested",
        "approval_decided",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let decided: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "approval_decided")
        .collect();
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_eq!(decided[0]["subject"], "dana");
    assert!(decided[1]["detail"].as_str().unwrap().contains(&id));
    assert!(decided[0]["at"].as_str().unwrap().ends_with('Z'));
}

/// `pgbench -M simple` writes each account id into the statement text; the analysis cache
/// shares one analysis among those texts (same shape), so the gateway parses a handful of
/// statements, not one per transaction, and `/metrics` says so.
#[tokio::test(flavor = "multi_thread")]
async fn statements_differing_only_in_values_are_parsed_once() {
    let fx = Fixture::with(|pg| GatewayConfig::shop(pg).raw(POLICY));
    fx.direct(SHOP).pgbench_init();
    let p = People::issue(&fx.gw);
    let agent = fx.gw.conn_with(SHOP, "agent-7", &p.agent, fx.pg.bin_dir());
    let run = agent
        .command("pgbench")
        .args(["-n", "-S", "-M", "simple", "-t", "300", "-c", "2"])
        .output()
        .unwrap();
    assert_success(&run, "pgbench -S -M simple through the gateway");
    assert!(
        String::from_utf8_lossy(&run.stdout)
            .contains("number of transactions actually processed: 600"),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );

    let (status, body) = Http::new(&fx.gw).send("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    let hits = sample(text, "postern_analysis_cache_hits_total").expect(text);
    let misses = sample(text, "postern_analysis_cache_misses_total").expect(text);
    // Every statement is read once (its decision and its masking plan share the reading).
    assert!(
        hits + misses >= 600.0,
        "hits {hits}, misses {misses}\n{text}"
    );
    assert!(hits >= 580.0, "hits {hits}\n{text}");
    assert!(
        misses <= 20.0,
        "600 statements of one shape: misses {misses}\n{text}"
    );
    assert!(sample(text, "postern_analysis_cache_entries").expect(text) >= 1.0);
}
