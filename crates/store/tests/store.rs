//! Behaviour of the SQLite store through its public API.

use std::sync::Arc;

use postern_core::{AuditEvent, AuditKind, AuditQuery, Store};
use postern_store::{SessionFilter, SessionRow, SqliteStore};

fn event(at_ms: i64, kind: AuditKind, subject: &str, target: &str) -> AuditEvent {
    AuditEvent {
        at_ms,
        subject: Some(subject.to_owned()),
        target: Some(target.to_owned()),
        ..AuditEvent::now(kind)
    }
}

fn full_event() -> AuditEvent {
    AuditEvent {
        at_ms: 1_700_000_000_123,
        kind: AuditKind::SessionClosed,
        session_id: Some("s-1".into()),
        subject: Some("alice@example.com".into()),
        identity_kind: Some("user".into()),
        groups: vec!["dba".into(), "oncall".into()],
        target: Some("prod-db".into()),
        client_addr: Some("10.0.0.7:51234".into()),
        bytes_in: Some(1234),
        bytes_out: Some(56789),
        duration_ms: Some(4200),
        detail: Some("client closed".into()),
    }
}

fn session(id: &str, subject: &str, target: &str, started_at_ms: i64) -> SessionRow {
    SessionRow {
        id: id.to_owned(),
        subject: subject.to_owned(),
        identity_kind: "user".to_owned(),
        groups: vec!["dev".to_owned()],
        target: target.to_owned(),
        client_addr: Some("127.0.0.1:5000".to_owned()),
        started_at_ms,
        ended_at_ms: None,
        bytes_in: 0,
        bytes_out: 0,
        close_reason: None,
    }
}

fn times(events: &[AuditEvent]) -> Vec<i64> {
    events.iter().map(|e| e.at_ms).collect()
}

async fn seeded() -> SqliteStore {
    let store = SqliteStore::open_in_memory().await.unwrap();
    for e in [
        event(1_000, AuditKind::SessionOpened, "alice", "prod"),
        event(2_000, AuditKind::AccessDenied, "bob", "prod"),
        event(3_000, AuditKind::SessionOpened, "alice", "staging"),
        event(4_000, AuditKind::AuthFailed, "mallory", "prod"),
        event(5_000, AuditKind::SessionClosed, "alice", "prod"),
    ] {
        store.append_audit(&e).await.unwrap();
    }
    store
}

#[tokio::test]
async fn round_trips_every_field() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let sparse = AuditEvent {
        at_ms: 1,
        ..AuditEvent::now(AuditKind::UpstreamFailed)
    };
    store.append_audit(&full_event()).await.unwrap();
    store.append_audit(&sparse).await.unwrap();
    let listed = store.list_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(listed, vec![full_event(), sparse]);
}

#[tokio::test]
async fn lists_newest_first_with_filters() {
    let store = seeded().await;
    let all = store.list_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(times(&all), [5_000, 4_000, 3_000, 2_000, 1_000]);

    let by_subject = AuditQuery {
        subject: Some("alice".into()),
        ..Default::default()
    };
    let got = store.list_audit(&by_subject).await.unwrap();
    assert_eq!(times(&got), [5_000, 3_000, 1_000]);

    let by_target = AuditQuery {
        target: Some("prod".into()),
        ..Default::default()
    };
    let got = store.list_audit(&by_target).await.unwrap();
    assert_eq!(times(&got), [5_000, 4_000, 2_000, 1_000]);

    let since = AuditQuery {
        since_ms: Some(3_000),
        ..Default::default()
    };
    let got = store.list_audit(&since).await.unwrap();
    assert_eq!(times(&got), [5_000, 4_000, 3_000]);

    let combined = AuditQuery {
        subject: Some("alice".into()),
        target: Some("prod".into()),
        since_ms: Some(2_000),
        limit: None,
    };
    let got = store.list_audit(&combined).await.unwrap();
    assert_eq!(times(&got), [5_000]);
    assert_eq!(got[0].kind, AuditKind::SessionClosed);

    let nobody = AuditQuery {
        subject: Some("nobody".into()),
        ..Default::default()
    };
    assert!(store.list_audit(&nobody).await.unwrap().is_empty());
}

#[tokio::test]
async fn equal_timestamps_list_latest_insert_first() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    for subject in ["first", "second", "third"] {
        store
            .append_audit(&event(7, AuditKind::AuthFailed, subject, "t"))
            .await
            .unwrap();
    }
    let got = store.list_audit(&AuditQuery::default()).await.unwrap();
    let subjects: Vec<_> = got.iter().map(|e| e.subject.as_deref().unwrap()).collect();
    assert_eq!(subjects, ["third", "second", "first"]);
}

#[tokio::test]
async fn limit_defaults_to_100_and_is_honoured() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    for at in 0..150 {
        store
            .append_audit(&event(at, AuditKind::SessionOpened, "s", "t"))
            .await
            .unwrap();
    }
    let default = store.list_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(default.len(), 100);
    assert_eq!(default[0].at_ms, 149);
    assert_eq!(default[99].at_ms, 50);

    let three = AuditQuery {
        limit: Some(3),
        ..Default::default()
    };
    assert_eq!(
        times(&store.list_audit(&three).await.unwrap()),
        [149, 148, 147]
    );

    let huge = AuditQuery {
        limit: Some(u32::MAX),
        ..Default::default()
    };
    assert_eq!(store.list_audit(&huge).await.unwrap().len(), 150);

    let zero = AuditQuery {
        limit: Some(0),
        ..Default::default()
    };
    assert!(store.list_audit(&zero).await.unwrap().is_empty());
}

#[tokio::test]
async fn reopen_keeps_data_and_creates_parent_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/postern.db");

    let store = SqliteStore::open(&path).await.unwrap();
    store.append_audit(&full_event()).await.unwrap();
    store
        .session_opened(&session("s-1", "alice", "prod", 10))
        .await
        .unwrap();
    store.close().await;
    assert!(path.exists());

    // Reopening runs the (already applied) migrations again without harm.
    let store = SqliteStore::open(&path).await.unwrap();
    let events = store.list_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(events, vec![full_event()]);
    let sessions = store
        .list_sessions(&SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(sessions, vec![session("s-1", "alice", "prod", 10)]);
    assert_eq!(
        store.get_session("s-1").await.unwrap(),
        Some(session("s-1", "alice", "prod", 10))
    );
    assert_eq!(store.get_session("s-2").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_all_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("p.db")).await.unwrap());
    const TASKS: i64 = 20;
    const PER_TASK: i64 = 25;

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            for n in 0..PER_TASK {
                let e = event(
                    task * PER_TASK + n,
                    AuditKind::SessionOpened,
                    &format!("task-{task}"),
                    "t",
                );
                store.append_audit(&e).await?;
            }
            Ok::<_, postern_core::StoreError>(())
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }

    let all = store
        .list_audit(&AuditQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len() as i64, TASKS * PER_TASK);
    let mut stamps = times(&all);
    stamps.sort_unstable();
    assert_eq!(stamps, (0..TASKS * PER_TASK).collect::<Vec<_>>());
    let one_task = AuditQuery {
        subject: Some("task-7".into()),
        ..Default::default()
    };
    assert_eq!(
        store.list_audit(&one_task).await.unwrap().len() as i64,
        PER_TASK
    );
}

#[tokio::test]
async fn write_errors_reach_the_caller() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.close().await;
    let err = store.append_audit(&full_event()).await.unwrap_err();
    assert!(
        err.to_string().contains("cannot append audit event"),
        "{err}"
    );

    let store = SqliteStore::open_in_memory().await.unwrap();
    let too_big = AuditEvent {
        bytes_in: Some(u64::MAX),
        ..full_event()
    };
    assert!(store.append_audit(&too_big).await.is_err());
    assert!(
        store
            .list_audit(&AuditQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn sessions_open_close_and_list() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store
        .session_opened(&session("a", "alice", "prod", 100))
        .await
        .unwrap();
    store
        .session_opened(&session("b", "bob", "prod", 200))
        .await
        .unwrap();
    store
        .session_opened(&session("c", "alice", "staging", 300))
        .await
        .unwrap();

    // A duplicate id is refused, not merged.
    assert!(
        store
            .session_opened(&session("a", "eve", "prod", 400))
            .await
            .is_err()
    );

    store
        .session_closed("a", 150, 10, 20, "client closed")
        .await
        .unwrap();
    // Closing twice, or closing an unknown session, is reported.
    assert!(store.session_closed("a", 160, 1, 1, "again").await.is_err());
    assert!(
        store
            .session_closed("nope", 160, 1, 1, "unknown")
            .await
            .is_err()
    );

    let ids = |rows: Vec<SessionRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

    let all = store
        .list_sessions(&SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(all.clone()), ["c", "b", "a"]);
    let closed = all.iter().find(|r| r.id == "a").unwrap();
    assert_eq!(closed.ended_at_ms, Some(150));
    assert_eq!((closed.bytes_in, closed.bytes_out), (10, 20));
    assert_eq!(closed.close_reason.as_deref(), Some("client closed"));
    assert_eq!(closed.groups, ["dev"]);

    let filter = |f: SessionFilter| {
        let store = store.clone();
        async move { ids(store.list_sessions(&f).await.unwrap()) }
    };
    assert_eq!(
        filter(SessionFilter {
            open_only: true,
            ..Default::default()
        })
        .await,
        ["c", "b"]
    );
    assert_eq!(
        filter(SessionFilter {
            subject: Some("alice".into()),
            ..Default::default()
        })
        .await,
        ["c", "a"]
    );
    assert_eq!(
        filter(SessionFilter {
            target: Some("prod".into()),
            ..Default::default()
        })
        .await,
        ["b", "a"]
    );
    assert_eq!(
        filter(SessionFilter {
            since_ms: Some(200),
            ..Default::default()
        })
        .await,
        ["c", "b"]
    );
    assert_eq!(
        filter(SessionFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await,
        ["c"]
    );

    // Rows serialize for the console API.
    let json = serde_json::to_value(closed).unwrap();
    assert_eq!(json["close_reason"], "client closed");
    assert_eq!(json["ended_at_ms"], 150);
}
