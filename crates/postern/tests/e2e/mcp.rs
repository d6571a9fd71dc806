//! The MCP endpoint, driven by the official MCP Python SDK client over streamable HTTP
//! (`tests/mcp/mcp_client.py`): initialize, list tools, describe a target, a query with an
//! intent, a blocked statement, a masked column, and an approval (pending → approved from the
//! CLI → re-submitted → runs once). Then the recordings: the tool calls' sessions verify, and
//! `sessions show` prints intent → tool call → SQL → decision → result. Requests without a
//! valid token get 401 and create no session.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// The policy of the test: agents may not run DDL, their writes need a dba's approval, and
/// customers' e-mail addresses are masked for them.
const POLICY: &str = r#"
[mcp]
max_rows = 20

[[rules]]
name = "agents-no-ddl"
when = { kind = "agent", targets = ["shop"], statements = ["ddl", "privilege", "admin", "unknown"] }
action = "block"

[[rules]]
name = "agent-writes-need-approval"
when = { kind = "agent", statements = ["write"] }
action = "approve"
approvers = ["dba"]
timeout = "5m"

[[masks]]
name = "customer-pii"
when = { kind = "agent", targets = ["shop"] }
columns = ["customers.email"]
strategy = "redact"
"#;

/// A raw value of the masked column (the sample data's first customer).
const MASKED_VALUE: &str = "customer1@example.com";

/// What the policy says while the masking engine is not in the build: such a statement is
/// refused rather than run unmasked.
const NO_MASKING_YET: &str = "masking is not available in this build";

/// Runs `postern ARGS --config <the gateway's config>`.
fn postern(gw: &Gateway, args: &[&str]) -> Output {
    let mut cmd = Command::new(postern_bin());
    cmd.args(args)
        .arg("--config")
        .arg(&gw.config_path)
        .env_remove("POSTERN_CONFIG")
        .env_remove("POSTERN_TOKEN");
    run_with_timeout(cmd, None, Duration::from_secs(120))
}

/// Runs the client script in `mode` and returns its output (asserting every check passed).
fn client(gw: &Gateway, mode: &str, env: &[(&str, &str)]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/mcp_client.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg(mode)
        .env(
            "POSTERN_MCP_URL",
            format!("http://127.0.0.1:{}/mcp", gw.http_port),
        )
        .env("POSTERN_BIN", postern_bin())
        .env("POSTERN_CONFIG", &gw.config_path)
        .env("POSTERN_MASKED", "customers.email")
        .env("POSTERN_MASKED_VALUE", MASKED_VALUE)
        .env("POSTERN_MAX_ROWS", "20")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("POSTERN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(cmd, None, Duration::from_secs(180));
    let text = stdout(&out);
    assert!(
        out.status.success() && text.contains(" 0 failed"),
        "tests/mcp/mcp_client.py {mode} failed ({}):\n{text}\n--- stderr\n{}",
        out.status,
        stderr(&out)
    );
    text
}

/// A token with its signature's first character changed.
fn forged(token: &str) -> String {
    let (head, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    format!("{head}.{first}{}", &signature[1..])
}

/// The sessions index, as `sessions list --json` prints it.
fn sessions(gw: &Gateway) -> Vec<Value> {
    let out = postern(gw, &["sessions", "list", "--json"]);
    assert_success(&out, "sessions list --json");
    serde_json::from_str::<Value>(&stdout(&out))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The id and `sessions show` text of the recording holding `causal_id`, once sealed.
fn recording_of(gw: &Gateway, causal_id: &str) -> (String, String) {
    eventually(Duration::from_secs(20), || {
        sessions(gw).iter().find_map(|s| {
            let id = s["id"].as_str()?.to_owned();
            if s["open"] == true {
                return None;
            }
            let out = postern(gw, &["sessions", "show", &id, "--rows", "5"]);
            let text = stdout(&out);
            text.contains(causal_id).then_some((id, text))
        })
    })
    .unwrap_or_else(|| panic!("no sealed recording holds causal id {causal_id}"))
}

/// Asserts that `needles` appear in `text` in this order.
fn assert_in_order(text: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match text[from..].find(needle) {
            Some(at) => from += at + needle.len(),
            None => panic!("{needle:?} missing (or out of order) in:\n{text}"),
        }
    }
}

#[test]
fn an_agent_works_through_the_mcp_endpoint() {
    if !python_has("mcp, httpx2", "pip install mcp", "mcp") {
        return;
    }
    let fx = Fixture::with(|pg| GatewayConfig::shop(pg).raw(POLICY));
    let gw = &fx.gw;
    let agent = gw.issue(&[
        "--subject",
        "agent-7",
        "--kind",
        "agent",
        "--group",
        "agents",
    ]);
    let dba = gw.issue(&["--subject", "dana", "--kind", "human", "--group", "dba"]);
    let forged = forged(&agent);

    // Unauthenticated and forged: 401, and no session.
    client(gw, "unauthenticated", &[("POSTERN_FORGED_TOKEN", &forged)]);
    assert_eq!(
        sessions(gw),
        Vec::<Value>::new(),
        "a refused request opened a session"
    );
    let refused = sqlite_rows(
        &gw.store_path(),
        "SELECT detail FROM audit_events WHERE kind = 'auth_failed'",
    );
    assert!(
        refused
            .iter()
            .any(|r| r["detail"].as_str().unwrap_or("").contains("MCP endpoint")),
        "{refused:?}"
    );

    // The whole agent session.
    let out = client(
        gw,
        "session",
        &[
            ("POSTERN_AGENT_TOKEN", &agent),
            ("POSTERN_DBA_TOKEN", &dba),
            ("POSTERN_FORGED_TOKEN", &forged),
        ],
    );
    let result: Value = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .expect("the script's RESULT line");

    // Masking: the raw value never reached the agent (the script checked). With the masking
    // engine in the build the statement runs and the column is masked; without it the policy
    // refuses the statement instead of running it unmasked.
    let masked = &result["masked_answer"];
    if result["masked_is_error"] == true
        && masked["message"]
            .as_str()
            .unwrap_or("")
            .contains(NO_MASKING_YET)
    {
        eprintln!(
            "NOTE: this build has no masking engine yet: the masked column was refused \
             ({masked}); the masked-values assertions are skipped until it lands"
        );
    } else {
        assert_eq!(result["masked_is_error"], false, "{masked}");
        let rows = masked["results"][0]["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{masked}");
        assert_eq!(result["describe_marks_masked"], true, "{result}");
    }

    // The approval ran exactly once: order 1001 was cancelled once, by the re-submission.
    let approval_id = result["approval_id"].as_str().unwrap();
    let approvals = sqlite_rows(
        &gw.store_path(),
        &format!(
            "SELECT state, decided_by, used_at_ms, statement FROM approvals WHERE id = '{approval_id}'"
        ),
    );
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["state"], "approved");
    assert_eq!(approvals[0]["decided_by"], "dana");
    assert!(approvals[0]["used_at_ms"].is_i64(), "{approvals:?}");
    assert_eq!(
        approvals[0]["statement"],
        "UPDATE orders SET status = 'cancelled' WHERE id = 1001"
    );
    assert_eq!(
        fx.direct(SHOP)
            .query("SELECT status FROM orders WHERE id = 1001")
            .trim(),
        "cancelled"
    );

    // Every tool call that touched the target is a session of the agent's own.
    let all = sessions(gw);
    assert!(all.len() >= 8, "{all:#?}");
    assert!(
        all.iter()
            .all(|s| s["subject"] == "agent-7" && s["kind"] == "agent")
    );

    // The query with an intent: intent → tool call → SQL → decision → result, verified.
    let causal = result["query_causal_id"].as_str().unwrap();
    let (id, shown) = recording_of(gw, causal);
    assert_success(&postern(gw, &["verify", &id]), "postern verify");
    assert!(shown.contains("recording: verified"), "{shown}");
    assert_in_order(
        &shown,
        &[
            "intent",
            "tool call query",
            causal,
            "intent: count open orders for the weekly report",
            "prompt: How many open orders do we have?",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736",
            "query",
            "SELECT id, status FROM orders ORDER BY id LIMIT 3",
            &format!("caused by {causal}"),
            "→ allowed",
            "columns: id, status",
            "3 rows",
            "✓ SELECT 3",
        ],
    );
    assert!(
        !shown.contains("/* postern-lineage"),
        "the lineage comment is shown as the intent, not inside the SQL:\n{shown}"
    );

    // The blocked statement.
    let (_, shown) = recording_of(gw, result["blocked_causal_id"].as_str().unwrap());
    assert_in_order(
        &shown,
        &[
            "tool call query",
            "intent: clean up",
            "DROP TABLE orders",
            "→ BLOCKED by rule \"agents-no-ddl\"",
        ],
    );

    // The approved re-submission.
    let causal = result["resubmitted_causal_id"].as_str().unwrap();
    let (id, shown) = recording_of(gw, causal);
    assert_success(&postern(gw, &["verify", &id]), "postern verify");
    assert_in_order(
        &shown,
        &[
            "tool call query",
            "intent: cancel order 1001, approved",
            &format!("approval id: {approval_id}"),
            "UPDATE orders SET status = 'cancelled' WHERE id = 1001",
            "→ HELD for approval by rule \"agent-writes-need-approval\"",
            &format!(
                "→ approved by rule \"agent-writes-need-approval\": approved by dana (approval {approval_id})"
            ),
            "✓ UPDATE 1",
        ],
    );
}

/// One JSON-RPC request to the endpoint, as any HTTP client would send it; the response's
/// status and JSON body.
async fn rpc(gw: &Gateway, token: &str, method: &str, params: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/mcp", gw.http_port))
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-11-25")
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .expect("POST /mcp");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[tokio::test]
async fn tools_reach_a_listener_that_requires_tls() {
    let fx = Fixture::with(|pg| GatewayConfig::shop(pg).require_tls(true));
    let token = fx.gw.issue(&["--subject", "agent-7", "--kind", "agent"]);
    let (status, body) = rpc(
        &fx.gw,
        &token,
        "tools/call",
        serde_json::json!({"name": "query", "arguments": {"target": SHOP, "sql": "SELECT 41 + 1 AS answer"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    assert_eq!(result["isError"], false, "{body}");
    assert_eq!(
        result["structuredContent"]["results"][0]["rows"],
        serde_json::json!([["42"]]),
        "{body}"
    );
    // The tool's session came in over TLS, like any client of this listener must.
    let (id, shown) = recording_of(
        &fx.gw,
        result["structuredContent"]["causal_id"].as_str().unwrap(),
    );
    assert!(shown.contains("client_tls: true"), "{id}:\n{shown}");
    // Without a token: 401, challenge, nothing indexed beyond that one session.
    let (status, body) = rpc(&fx.gw, "", "tools/list", serde_json::json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(sessions(&fx.gw).len(), 1);
}
