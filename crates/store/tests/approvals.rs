//! Approval requests in the SQLite store: creation, listing, the atomic decision and its refusals,
//! expiry, and JIT windows.

use postern_core::approval::now_ms;
use postern_core::{ApprovalFilter, ApprovalRow, ApprovalState, Store, new_approval_id};
use postern_store::SqliteStore;

fn pending(subject: &str, target: &str, rule: &str, expires_in_ms: i64) -> ApprovalRow {
    let now = now_ms();
    ApprovalRow {
        id: new_approval_id(),
        state: ApprovalState::Pending,
        session_id: "0190-session".into(),
        subject: subject.into(),
        identity_kind: "agent".into(),
        groups: vec!["agents".into()],
        target: target.into(),
        rule: rule.into(),
        statement: "UPDATE orders SET total = 0 WHERE id = 7".into(),
        approvers: vec!["dba".into(), "oncall".into()],
        requested_at_ms: now,
        expires_at_ms: now + expires_in_ms,
        decided_by: None,
        decided_at_ms: None,
        reason: None,
        window_until_ms: None,
        used_at_ms: None,
    }
}

async fn store_with(rows: &[&ApprovalRow]) -> SqliteStore {
    let store = SqliteStore::open_in_memory().await.unwrap();
    for row in rows {
        store.create_approval(row).await.unwrap();
    }
    store
}

const MINUTE: i64 = 60_000;

#[tokio::test]
async fn a_request_round_trips_every_field() {
    let mut row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let store = store_with(&[&row]).await;
    assert_eq!(
        store.get_approval(&row.id).await.unwrap(),
        Some(row.clone())
    );
    assert_eq!(store.get_approval("APR-NOPE").await.unwrap(), None);

    // A fully decided row (as another backend might copy it) keeps every column too.
    row.id = new_approval_id();
    row.state = ApprovalState::Approved;
    row.decided_by = Some("dana".into());
    row.decided_at_ms = Some(row.requested_at_ms + 5);
    row.reason = Some("looks fine".into());
    row.window_until_ms = Some(row.requested_at_ms + 30 * MINUTE);
    store.create_approval(&row).await.unwrap();
    assert_eq!(
        store.get_approval(&row.id).await.unwrap(),
        Some(row.clone())
    );

    let err = store.create_approval(&row).await.unwrap_err().to_string();
    assert!(err.contains("approval"), "{err}");
}

#[tokio::test]
async fn approving_is_atomic_and_happens_once() {
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let store = store_with(&[&row]).await;
    let until = now_ms() + 30 * MINUTE;
    let decided = store
        .decide_approval(&row.id, ApprovalState::Approved, "dana", None, Some(until))
        .await
        .unwrap();
    assert_eq!(decided.state, ApprovalState::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("dana"));
    assert_eq!(decided.window_until_ms, Some(until));
    assert!(decided.decided_at_ms.unwrap() >= row.requested_at_ms);
    assert_eq!(store.get_approval(&row.id).await.unwrap(), Some(decided));

    for (state, by) in [
        (ApprovalState::Denied, "erin"),
        (ApprovalState::Approved, "erin"),
    ] {
        let err = store
            .decide_approval(&row.id, state, by, Some("no"), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already approved by dana"), "{err}");
    }
}

#[tokio::test]
async fn denial_keeps_the_reason() {
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let store = store_with(&[&row]).await;
    let denied = store
        .decide_approval(
            &row.id,
            ApprovalState::Denied,
            "dana",
            Some("not during the sale"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(denied.state, ApprovalState::Denied);
    assert_eq!(denied.reason.as_deref(), Some("not during the sale"));
    assert_eq!(denied.window_until_ms, None);
    let err = store
        .decide_approval(&row.id, ApprovalState::Approved, "erin", None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already denied by dana"), "{err}");
}

#[tokio::test]
async fn the_requester_never_decides() {
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let store = store_with(&[&row]).await;
    for state in [ApprovalState::Approved, ApprovalState::Denied] {
        let err = store
            .decide_approval(&row.id, state, "agent-7", None, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("requested by agent-7") && err.contains("own request"),
            "{err}"
        );
    }
    assert_eq!(
        store.get_approval(&row.id).await.unwrap().unwrap().state,
        ApprovalState::Pending
    );
}

#[tokio::test]
async fn malformed_decisions_are_refused() {
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let store = store_with(&[&row]).await;
    let until = Some(now_ms() + MINUTE);
    for (state, by, window, says) in [
        (ApprovalState::Pending, "dana", None, "not pending"),
        (ApprovalState::Expired, "dana", None, "not expired"),
        (ApprovalState::Denied, "dana", until, "no window"),
        (ApprovalState::Approved, " ", None, "no name"),
    ] {
        let err = store
            .decide_approval(&row.id, state, by, None, window)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{state}: {err}");
    }
    let err = store
        .decide_approval("APR-UNKNOWN", ApprovalState::Approved, "dana", None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no approval APR-UNKNOWN"), "{err}");
    assert_eq!(
        store.get_approval(&row.id).await.unwrap().unwrap().state,
        ApprovalState::Pending
    );
}

#[tokio::test]
async fn an_expired_request_cannot_be_decided() {
    let stale = pending("agent-7", "shop", "writes", -1);
    let store = store_with(&[&stale]).await;
    // Reported as expired before anyone marks it.
    assert_eq!(
        store.get_approval(&stale.id).await.unwrap().unwrap().state,
        ApprovalState::Expired
    );
    let err = store
        .decide_approval(&stale.id, ApprovalState::Approved, "dana", None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has expired"), "{err}");

    let marked = store
        .expire_approval(&stale.id, "nobody decided within 5m")
        .await
        .unwrap();
    assert_eq!(marked.state, ApprovalState::Expired);
    assert_eq!(marked.reason.as_deref(), Some("nobody decided within 5m"));
    assert!(marked.decided_at_ms.is_some());
    let err = store
        .decide_approval(&stale.id, ApprovalState::Denied, "dana", None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has expired"), "{err}");
}

#[tokio::test]
async fn expiry_never_overwrites_a_decision() {
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let store = store_with(&[&row]).await;
    store
        .decide_approval(&row.id, ApprovalState::Approved, "dana", None, None)
        .await
        .unwrap();
    let after = store.expire_approval(&row.id, "timeout").await.unwrap();
    assert_eq!(after.state, ApprovalState::Approved);
    assert_eq!(after.reason, None);
    let err = store
        .expire_approval("APR-UNKNOWN", "timeout")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no approval APR-UNKNOWN"), "{err}");
}

#[tokio::test]
async fn listing_filters_by_state_as_of_now() {
    let a = pending("agent-1", "shop", "writes", 5 * MINUTE);
    let mut b = pending("agent-2", "shop", "writes", 5 * MINUTE);
    b.requested_at_ms += 1;
    let mut c = pending("agent-3", "crm", "writes", -1);
    c.requested_at_ms = a.requested_at_ms + 2;
    let mut d = pending("agent-1", "crm", "ddl", 5 * MINUTE);
    d.requested_at_ms = a.requested_at_ms + 3;
    let store = store_with(&[&a, &b, &c, &d]).await;
    store
        .decide_approval(&b.id, ApprovalState::Denied, "dana", Some("no"), None)
        .await
        .unwrap();
    store
        .decide_approval(&d.id, ApprovalState::Approved, "dana", None, None)
        .await
        .unwrap();

    let ids = |rows: Vec<ApprovalRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let list = |filter: ApprovalFilter| {
        let store = store.clone();
        async move { ids(store.list_approvals(&filter).await.unwrap()) }
    };
    let all = store
        .list_approvals(&ApprovalFilter::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|r| (r.id.clone(), r.state))
            .collect::<Vec<_>>(),
        vec![
            (d.id.clone(), ApprovalState::Approved),
            (c.id.clone(), ApprovalState::Expired),
            (b.id.clone(), ApprovalState::Denied),
            (a.id.clone(), ApprovalState::Pending),
        ],
        "newest first, stale pending shown as expired"
    );
    let by_state = |state| ApprovalFilter {
        state: Some(state),
        ..Default::default()
    };
    assert_eq!(
        list(by_state(ApprovalState::Pending)).await,
        vec![a.id.clone()]
    );
    assert_eq!(
        list(by_state(ApprovalState::Expired)).await,
        vec![c.id.clone()]
    );
    assert_eq!(
        list(by_state(ApprovalState::Denied)).await,
        vec![b.id.clone()]
    );
    assert_eq!(
        list(by_state(ApprovalState::Approved)).await,
        vec![d.id.clone()]
    );
    assert_eq!(
        list(ApprovalFilter {
            subject: Some("agent-1".into()),
            ..Default::default()
        })
        .await,
        vec![d.id.clone(), a.id.clone()]
    );
    assert_eq!(
        list(ApprovalFilter {
            target: Some("crm".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await,
        vec![d.id.clone()]
    );
    assert_eq!(
        list(ApprovalFilter {
            session_id: Some("other".into()),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_window_covers_only_its_subject_target_and_rule_until_it_ends() {
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let once = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let denied = pending("agent-8", "shop", "writes", 5 * MINUTE);
    let store = store_with(&[&row, &once, &denied]).await;
    let now = now_ms();
    assert_eq!(
        store
            .active_window("agent-7", "shop", "writes", now)
            .await
            .unwrap(),
        None
    );
    // An approval without a window covers nothing later.
    store
        .decide_approval(&once.id, ApprovalState::Approved, "dana", None, None)
        .await
        .unwrap();
    store
        .decide_approval(&denied.id, ApprovalState::Denied, "dana", None, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .active_window("agent-7", "shop", "writes", now)
            .await
            .unwrap(),
        None
    );
    let until = now + 30 * MINUTE;
    store
        .decide_approval(&row.id, ApprovalState::Approved, "dana", None, Some(until))
        .await
        .unwrap();
    let window = store
        .active_window("agent-7", "shop", "writes", now)
        .await
        .unwrap()
        .expect("the window covers it");
    assert_eq!(window.id, row.id);
    assert_eq!(
        store
            .active_window("agent-7", "shop", "writes", until - 1)
            .await
            .unwrap()
            .map(|w| w.id),
        Some(row.id.clone())
    );
    for (subject, target, rule, at) in [
        ("agent-7", "shop", "writes", until),
        ("agent-8", "shop", "writes", now),
        ("agent-7", "crm", "writes", now),
        ("agent-7", "shop", "ddl", now),
    ] {
        assert_eq!(
            store
                .active_window(subject, target, rule, at)
                .await
                .unwrap(),
            None,
            "{subject} {target} {rule} at +{}",
            at - now
        );
    }
}

#[tokio::test]
async fn concurrent_deciders_on_one_file_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.db");
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    SqliteStore::open(&path)
        .await
        .unwrap()
        .create_approval(&row)
        .await
        .unwrap();
    // Separate stores (as separate nodes or CLI processes would have) on the same file.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let path = path.clone();
        let id = row.id.clone();
        tasks.push(tokio::spawn(async move {
            let store = SqliteStore::open(&path).await.unwrap();
            let state = if i % 2 == 0 {
                ApprovalState::Approved
            } else {
                ApprovalState::Denied
            };
            store
                .decide_approval(&id, state, &format!("dba-{i}"), None, None)
                .await
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(row) => winners.push(row),
            Err(e) => assert!(e.to_string().contains("already"), "{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store.get_approval(&row.id).await.unwrap().unwrap(),
        winners[0]
    );
}

#[tokio::test]
async fn an_approval_is_used_once_and_only_as_granted() {
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let statement = row.statement.clone();
    let store = store_with(&[&row]).await;
    let use_it = |subject: &'static str, target: &'static str, rule: &'static str| {
        let store = store.clone();
        let id = row.id.clone();
        let statement = statement.clone();
        async move {
            store
                .use_approval(&id, subject, target, rule, &statement)
                .await
        }
    };
    // Pending: not usable yet.
    let err = use_it("agent-7", "shop", "writes").await.unwrap_err();
    assert!(err.to_string().contains("is pending"), "{err}");
    store
        .decide_approval(&row.id, ApprovalState::Approved, "dana", None, None)
        .await
        .unwrap();
    // Someone else's, another target, another rule, another statement: refused, unchanged.
    for (subject, target, rule, says) in [
        (
            "agent-8",
            "shop",
            "writes",
            "requested by agent-7, not by agent-8",
        ),
        ("agent-7", "crm", "writes", "for target shop, not crm"),
        ("agent-7", "shop", "ddl", "under rule writes, not ddl"),
    ] {
        let err = use_it(subject, target, rule).await.unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
    let err = store
        .use_approval(&row.id, "agent-7", "shop", "writes", "DELETE FROM orders")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another statement"), "{err}");
    assert_eq!(
        store
            .get_approval(&row.id)
            .await
            .unwrap()
            .unwrap()
            .used_at_ms,
        None
    );
    // The requester, as granted: used once, stamped.
    let used = use_it("agent-7", "shop", "writes").await.unwrap();
    assert!(used.used_at_ms.unwrap() >= row.requested_at_ms);
    assert_eq!(store.get_approval(&row.id).await.unwrap(), Some(used));
    let err = use_it("agent-7", "shop", "writes").await.unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    let err = store
        .use_approval("APR-NOPE", "agent-7", "shop", "writes", &statement)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no approval APR-NOPE"), "{err}");
}

#[tokio::test]
async fn concurrent_uses_on_one_file_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.db");
    let row = pending("agent-7", "shop", "writes", 5 * MINUTE);
    let first = SqliteStore::open(&path).await.unwrap();
    first.create_approval(&row).await.unwrap();
    first
        .decide_approval(&row.id, ApprovalState::Approved, "dana", None, None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let path = path.clone();
        let row = row.clone();
        tasks.push(tokio::spawn(async move {
            let store = SqliteStore::open(&path).await.unwrap();
            store
                .use_approval(
                    &row.id,
                    &row.subject,
                    &row.target,
                    &row.rule,
                    &row.statement,
                )
                .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(e) => assert!(e.to_string().contains("already used"), "{e}"),
        }
    }
    assert_eq!(winners, 1);
}
