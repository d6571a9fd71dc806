//! Statement-level approval in a live session, end to end: an agent's write is held (the client
//! just waits), a `dba` decides it with `postern approvals`, and the statement runs or the client
//! gets a 42501 error carrying the reason and the approval id. Self-approval is refused, an
//! undecided request expires, and a JIT window lets the next matching statement through.

use crate::util::*;
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

fn rules(timeout: &str) -> String {
    format!(
        r#"
[[rules]]
name = "agent-writes-need-approval"
when = {{ kind = "agent", statements = ["write"] }}
action = "approve"
approvers = ["dba"]
timeout = "{timeout}"
"#
    )
}

struct Flow {
    fx: Fixture,
    agent: Conn,
    agent_token: String,
    dba_token: String,
}

fn flow(timeout: &str) -> Flow {
    let fx = Fixture::with(|pg| GatewayConfig::shop(pg).raw(&rules(timeout)));
    let agent_token = fx.gw.issue(&[
        "--subject",
        "agent-7",
        "--kind",
        "agent",
        "--group",
        "agents",
    ]);
    let dba_token = fx
        .gw
        .issue(&["--subject", "dana", "--kind", "human", "--group", "dba"]);
    let agent = fx
        .gw
        .conn_with(SHOP, "agent-7", &agent_token, fx.pg.bin_dir());
    Flow {
        fx,
        agent,
        agent_token,
        dba_token,
    }
}

impl Flow {
    fn approvals(&self, token: &str, args: &[&str]) -> Output {
        Command::new(postern_bin())
            .arg("--config")
            .arg(&self.fx.gw.config_path)
            .arg("approvals")
            .args(args)
            .env("POSTERN_TOKEN", token)
            .output()
            .expect("run postern approvals")
    }

    fn list(&self, state: &str) -> Vec<Value> {
        let out = self.approvals(&self.dba_token, &["list", "--state", state, "--json"]);
        assert!(
            out.status.success(),
            "approvals list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("JSON")
            .as_array()
            .cloned()
            .unwrap()
    }

    /// Waits until exactly one request is pending and returns it.
    fn pending(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pending = self.list("pending");
            if let Some(first) = pending.first() {
                assert_eq!(pending.len(), 1, "{pending:?}");
                return first.clone();
            }
            assert!(Instant::now() < deadline, "no pending approval appeared");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn quantity(&self) -> String {
        self.fx
            .direct(SHOP)
            .query("SELECT quantity FROM orders WHERE id = 1000")
    }
}

/// A held write of `agent` in a live session: the task completes when it is decided.
pub async fn held(
    agent: &Conn,
    sql: &'static str,
) -> tokio::task::JoinHandle<Result<u64, tokio_postgres::Error>> {
    let (client, _messages) = agent.client().await;
    tokio::spawn(async move { client.execute(sql, &[]).await })
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_runs_the_held_statement_once() {
    let f = flow("5m");
    let task = held(&f.agent, "UPDATE orders SET quantity = 77 WHERE id = 1000").await;
    let request = f.pending();
    assert_eq!(request["subject"], "agent-7");
    assert_eq!(request["target"], SHOP);
    assert_eq!(request["rule"], "agent-writes-need-approval");
    assert!(
        request["statement"]
            .as_str()
            .unwrap()
            .contains("quantity = 77")
    );
    assert_ne!(
        f.quantity(),
        "77",
        "the held statement must not run before approval"
    );
    let id = request["id"].as_str().unwrap().to_owned();

    // The requester cannot approve their own statement.
    let own = f.approvals(&f.agent_token, &["approve", &id]);
    assert!(!own.status.success(), "self-approval must be refused");

    let ok = f.approvals(&f.dba_token, &["approve", &id]);
    assert!(
        ok.status.success(),
        "approve: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let rows = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.unwrap(), 1);
    assert_eq!(f.quantity(), "77");
    assert_eq!(f.list("approved").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_gives_the_client_the_reason_and_the_id() {
    let f = flow("5m");
    let task = held(&f.agent, "UPDATE orders SET quantity = 88 WHERE id = 1000").await;
    let id = f.pending()["id"].as_str().unwrap().to_owned();
    let out = f.approvals(
        &f.dba_token,
        &["deny", &id, "--reason", "not during the freeze"],
    );
    assert!(
        out.status.success(),
        "deny: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(
        db.message().contains("not during the freeze"),
        "{}",
        db.message()
    );
    assert!(db.message().contains(&id), "{}", db.message());
    assert_ne!(f.quantity(), "88");
    // The session is still usable.
    let (client, _m) = f.agent.client().await;
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecided_request_expires_with_a_clear_error() {
    let f = flow("2s");
    let (client, _m) = f.agent.client().await;
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        client.execute("UPDATE orders SET quantity = 99 WHERE id = 1000", &[]),
    )
    .await
    .unwrap()
    .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(db.message().contains("expired"), "{}", db.message());
    assert_ne!(f.quantity(), "99");
    assert_eq!(f.list("expired").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jit_window_lets_the_next_matching_statement_through() {
    let f = flow("5m");
    let task = held(&f.agent, "UPDATE orders SET quantity = 5 WHERE id = 1000").await;
    let id = f.pending()["id"].as_str().unwrap().to_owned();
    let ok = f.approvals(&f.dba_token, &["approve", &id, "--for", "30m"]);
    assert!(
        ok.status.success(),
        "approve --for: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The next write passes at once, without a new request.
    let (client, _m) = f.agent.client().await;
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        client.execute("UPDATE orders SET quantity = 6 WHERE id = 1000", &[]),
    )
    .await
    .expect("the windowed statement should not wait")
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(f.quantity(), "6");
    assert!(f.list("pending").is_empty());
    assert_eq!(f.list("all").len(), 1, "no new request inside the window");
}

#[test]
fn a_client_that_leaves_withdraws_its_request() {
    let f = flow("5m");
    let mut psql = f
        .agent
        .command("psql")
        .args([
            "-X",
            "-c",
            "UPDATE orders SET quantity = 42 WHERE id = 1000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start psql");
    f.pending();
    psql.kill().expect("kill psql");
    let _ = psql.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.list("expired").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request stayed pending after the client left"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(f.list("pending").is_empty());
    assert_ne!(f.quantity(), "42");
}
