//! `postern approvals list|approve|deny` against a metadata store filled through the store API
//! (as a gateway holding statements fills it): the JSON listing, the JIT window, and every
//! refusal of a decision — no token, a bad or foreign token, the requester, a non-approver, an
//! already decided or expired request, an unknown id.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use postern_core::approval::now_ms;
use postern_core::{ApprovalRow, ApprovalState, AuditKind, AuditQuery, Store, new_approval_id};
use postern_store::SqliteStore;
use serde_json::Value;
use tempfile::TempDir;

use crate::util::*;

const RULE: &str = "agent-writes-need-approval";
const MINUTE: i64 = 60_000;

/// A config (defaults, its own data_dir) and the store a gateway with it would use.
struct Setup {
    _dir: TempDir,
    config: PathBuf,
    db: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("postern-approvals-")
            .tempdir()
            .unwrap();
        let data_dir = dir.path().join("data");
        let config = dir.path().join("postern.toml");
        std::fs::write(
            &config,
            format!("data_dir = {}\n", toml_str(&data_dir.display().to_string())),
        )
        .unwrap();
        let db = data_dir.join("postern.db");
        Setup {
            _dir: dir,
            config,
            db,
        }
    }

    /// Runs `postern ARGS --config CONFIG` with `token` in POSTERN_TOKEN (none: unset).
    fn postern(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut cmd = Command::new(postern_bin());
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("POSTERN_CONFIG")
            .env_remove("POSTERN_TOKEN");
        if let Some(token) = token {
            cmd.env("POSTERN_TOKEN", token);
        }
        run_with_timeout(cmd, None, Duration::from_secs(60))
    }

    fn token(&self, subject: &str, groups: &[&str]) -> String {
        let mut args = vec!["--subject", subject, "--kind", "human", "--ttl", "1h"];
        for g in groups {
            args.extend(["--group", g]);
        }
        issue_token(&self.config, &args)
    }

    fn store<T>(&self, f: impl AsyncFnOnce(&SqliteStore) -> T) -> T {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = SqliteStore::open(&self.db).await.unwrap();
            let out = f(&store).await;
            store.close().await;
            out
        })
    }

    /// Stores a pending request of `subject` expiring `expires_in_ms` from now.
    fn hold(&self, subject: &str, statement: &str, expires_in_ms: i64) -> ApprovalRow {
        let now = now_ms();
        let row = ApprovalRow {
            id: new_approval_id(),
            state: ApprovalState::Pending,
            session_id: uuid_like(now),
            subject: subject.into(),
            identity_kind: "agent".into(),
            groups: vec!["agents".into()],
            target: SHOP.into(),
            rule: RULE.into(),
            statement: statement.into(),
            approvers: vec!["dba".into()],
            requested_at_ms: now,
            expires_at_ms: now + expires_in_ms,
            decided_by: None,
            decided_at_ms: None,
            reason: None,
            window_until_ms: None,
            used_at_ms: None,
        };
        self.store(async |s| s.create_approval(&row).await.unwrap());
        row
    }

    fn get(&self, id: &str) -> ApprovalRow {
        let id = id.to_owned();
        self.store(async move |s| s.get_approval(&id).await.unwrap())
            .expect("the approval exists")
    }

    fn list_json(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["approvals", "list", "--json"];
        args.extend_from_slice(extra);
        let out = self.postern(&args, None);
        assert_success(&out, "postern approvals list --json");
        let value: Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
            panic!("approvals list --json is not JSON ({e}):\n{}", stdout(&out))
        });
        value.as_array().expect("a JSON array").clone()
    }
}

fn uuid_like(n: i64) -> String {
    format!("0190{n:012x}-0000-7000-8000-000000000000")
}

/// Asserts that `out` failed and that stderr says `says` (and nothing of `token`).
fn assert_refused(out: &Output, says: &str, token: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected a refusal saying {says:?}, but it succeeded:\n{}{err}",
        stdout(out)
    );
    assert!(err.contains(says), "expected {says:?} in:\n{err}");
    assert!(
        token.len() < 20 || !err.contains(token),
        "the token leaked into the error:\n{err}"
    );
}

#[test]
fn list_prints_every_state_as_json_and_as_a_table() {
    let s = Setup::new();
    // A token issue creates the gateway key, as `serve` does; the store appears with the first
    // request.
    let dba = s.token("dana", &["dba"]);
    let pending = s.hold(
        "agent-7",
        "UPDATE orders SET total = 0 WHERE id = 7",
        5 * MINUTE,
    );
    let approved = s.hold("agent-7", "DELETE FROM orders WHERE id = 8", 5 * MINUTE);
    let denied = s.hold("agent-8", "INSERT INTO orders VALUES (9)", 5 * MINUTE);
    let stale = s.hold(
        "agent-9",
        "UPDATE customers SET email = NULL WHERE id = 1",
        -1,
    );
    for (id, verb) in [(&approved.id, "approve"), (&denied.id, "deny")] {
        let out = s.postern(&["approvals", verb, id], Some(&dba));
        assert_success(&out, &format!("approvals {verb}"));
    }

    let all = s.list_json(&[]);
    let states: Vec<(String, String)> = all
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (row, state) in [
        (&pending, "pending"),
        (&approved, "approved"),
        (&denied, "denied"),
        (&stale, "expired"),
    ] {
        assert!(
            states.contains(&(row.id.clone(), state.to_owned())),
            "{} should be {state}: {states:?}",
            row.id
        );
    }
    let first = all.iter().find(|a| a["id"] == pending.id.as_str()).unwrap();
    for (key, want) in [
        ("subject", "agent-7"),
        ("target", SHOP),
        ("rule", RULE),
        ("statement", "UPDATE orders SET total = 0 WHERE id = 7"),
        ("kind", "agent"),
    ] {
        assert_eq!(first[key], want, "{key} in {first}");
    }
    assert_eq!(first["approvers"], serde_json::json!(["dba"]));
    assert!(first["decided_by"].is_null() && first["requested_at"].is_string());
    let decided = all
        .iter()
        .find(|a| a["id"] == approved.id.as_str())
        .unwrap();
    assert_eq!(decided["decided_by"], "dana");

    for (state, row) in [
        ("pending", &pending),
        ("approved", &approved),
        ("denied", &denied),
        ("expired", &stale),
    ] {
        let only = s.list_json(&["--state", state]);
        assert_eq!(only.len(), 1, "--state {state}: {only:?}");
        assert_eq!(only[0]["id"], row.id.as_str());
    }
    assert_eq!(s.list_json(&["--identity", "agent-8"]).len(), 1);
    assert_eq!(s.list_json(&["--target", "crm"]).len(), 0);

    let table = s.postern(&["approvals", "list", "--state", "pending"], None);
    assert_success(&table, "approvals list");
    let text = stdout(&table);
    assert!(
        text.contains(&pending.id) && text.contains("agent-7") && text.contains("expires in"),
        "{text}"
    );
    let bad = s.postern(&["approvals", "list", "--state", "held"], None);
    assert_refused(&bad, "held", "");
}

#[test]
fn approve_opens_a_window_only_for_an_approver_who_is_not_the_requester() {
    let s = Setup::new();
    let requester = s.token("agent-7", &["dba", "agents"]);
    let developer = s.token("devin", &["dev"]);
    let dba = s.token("dana", &["dba"]);
    let row = s.hold(
        "agent-7",
        "UPDATE orders SET total = 0 WHERE id = 7",
        5 * MINUTE,
    );
    let id = row.id.as_str();

    // No token at all.
    let out = s.postern(&["approvals", "approve", id], None);
    assert_refused(&out, "POSTERN_TOKEN", "");
    // Not a token; a token signed by another gateway's key.
    let out = s.postern(&["approvals", "approve", id, "--token", "hunter2"], None);
    assert_refused(&out, "token was refused", "");
    let other = Setup::new();
    let foreign = other.token("dana", &["dba"]);
    let out = s.postern(&["approvals", "approve", id, "--token", &foreign], None);
    assert_refused(&out, "signature", &foreign);
    // The requester, although in the approvers group; as env and as --token.
    let out = s.postern(&["approvals", "approve", id], Some(&requester));
    assert_refused(&out, "requester", &requester);
    let out = s.postern(&["approvals", "deny", id, "--token", &requester], None);
    assert_refused(&out, "requester", &requester);
    // Not an approver.
    let out = s.postern(&["approvals", "approve", id], Some(&developer));
    assert_refused(&out, "only members of dba", &developer);
    assert_eq!(
        s.get(id).state,
        ApprovalState::Pending,
        "refusals change nothing"
    );

    // A dba approves with a 30-minute window (--token wins over the environment).
    let before = now_ms();
    let out = s.postern(
        &["approvals", "approve", id, "--for", "30m", "--token", &dba],
        Some(&developer),
    );
    assert_success(&out, "approvals approve --for 30m");
    let said = stdout(&out);
    assert!(said.contains(id) && said.contains("window"), "{said}");
    let decided = s.get(id);
    assert_eq!(decided.state, ApprovalState::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("dana"));
    let until = decided.window_until_ms.expect("a window");
    assert!(
        until >= before + 30 * MINUTE && until <= now_ms() + 30 * MINUTE,
        "window ends at {until}, approved at {before}"
    );
    let window = s.store(async |st| {
        st.active_window("agent-7", SHOP, RULE, now_ms())
            .await
            .unwrap()
    });
    assert_eq!(window.map(|w| w.id), Some(row.id.clone()));
    let listed = s.list_json(&["--state", "approved"]);
    assert!(listed[0]["window_until"].is_string(), "{listed:?}");

    // Decided once: a second decision is refused.
    let out = s.postern(&["approvals", "deny", id, "--token", &dba], None);
    assert_refused(&out, "already approved by dana", &dba);

    // The decision is in the audit trail, as the decider.
    let audit = s.store(async |st| st.list_audit(&AuditQuery::default()).await.unwrap());
    let event = audit
        .iter()
        .find(|e| e.kind == AuditKind::ApprovalDecided)
        .expect("an approval_decided audit event");
    assert_eq!(event.subject.as_deref(), Some("dana"));
    assert_eq!(event.session_id.as_deref(), Some(row.session_id.as_str()));
    let detail = event.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains(id) && detail.contains("30m") && detail.contains("agent-7"),
        "{detail}"
    );
}

#[test]
fn deny_records_the_reason_and_late_or_unknown_decisions_are_refused() {
    let s = Setup::new();
    let dba = s.token("dana", &["dba"]);
    let row = s.hold("agent-7", "DELETE FROM orders WHERE id = 7", 5 * MINUTE);
    let out = s.postern(
        &[
            "approvals",
            "deny",
            &row.id,
            "--reason",
            "not during the sale",
        ],
        Some(&dba),
    );
    assert_success(&out, "approvals deny --reason");
    assert!(
        stdout(&out).contains("not during the sale"),
        "{}",
        stdout(&out)
    );
    let denied = s.get(&row.id);
    assert_eq!(denied.state, ApprovalState::Denied);
    assert_eq!(denied.reason.as_deref(), Some("not during the sale"));
    assert_eq!(denied.window_until_ms, None);
    let out = s.postern(&["approvals", "approve", &row.id], Some(&dba));
    assert_refused(&out, "already denied by dana", &dba);

    // Nobody decided in time.
    let stale = s.hold("agent-7", "DELETE FROM orders WHERE id = 8", -1);
    let out = s.postern(&["approvals", "approve", &stale.id], Some(&dba));
    assert_refused(&out, "expired", &dba);
    assert_eq!(s.get(&stale.id).state, ApprovalState::Expired);

    let out = s.postern(&["approvals", "approve", "APR-NOSUCHID00"], Some(&dba));
    assert_refused(&out, "no approval APR-NOSUCHID00", &dba);

    // --for belongs to approve only; a zero window is refused before anything happens.
    let row = s.hold("agent-7", "DELETE FROM orders WHERE id = 9", 5 * MINUTE);
    let out = s.postern(&["approvals", "deny", &row.id, "--for", "30m"], Some(&dba));
    assert!(!out.status.success());
    let out = s.postern(
        &["approvals", "approve", &row.id, "--for", "0s"],
        Some(&dba),
    );
    assert_refused(&out, "at least 1s", &dba);
    assert_eq!(s.get(&row.id).state, ApprovalState::Pending);
}

#[test]
fn without_a_gateway_store_the_commands_say_so() {
    let s = Setup::new();
    let dba = s.token("dana", &["dba"]);
    let out = s.postern(&["approvals", "list"], None);
    assert_refused(&out, "no approvals store", "");
    let out = s.postern(&["approvals", "approve", "APR-0000000000"], Some(&dba));
    assert_refused(&out, "no approvals store", &dba);
    assert!(
        !Path::new(&s.db).exists(),
        "a read must not create the store"
    );
}
