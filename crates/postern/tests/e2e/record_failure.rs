//! A recorder that cannot write. The recordings directory is a 2 MiB tmpfs that the test fills
//! mid-session with `dd` (the tests run as root, which ignores permission bits, so a full disk
//! is the way to make the directory unwritable; the tmpfs is skipped with a message only when
//! it cannot be mounted and `CI` is unset).
//!
//! Statements sent while the disk is full carry 16 KiB of padding: an append that fits in the
//! slack of a chunk file's last page would still succeed (and be durable, so forwarding it is
//! right), and the padding makes sure the event needs space the disk no longer has.
//!
//! - fail-closed (default): the statement is refused with SQLSTATE 58030 naming the recording,
//!   never reaches the upstream, and the session ends; the gateway keeps serving others and,
//!   after a restart, seals the broken recording as interrupted.
//! - best-effort: statements keep working; the loss is recorded as a signed `gap`.

use std::time::Duration;

use postern_record::{EventBody, SealStatus, verify_all};

use crate::recording::*;
use crate::util::*;

fn padded_insert(id: u32) -> String {
    format!(
        "INSERT INTO rec_t VALUES ({id}, '{}')",
        "x".repeat(16 * 1024)
    )
}

fn upstream_ids(fx: &Fixture) -> String {
    fx.direct(SHOP)
        .query("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM rec_t")
}

/// The text of the command events that insert into rec_t, as their ids.
fn recorded_insert_ids(events: &[postern_record::Event]) -> Vec<u32> {
    commands(events)
        .into_iter()
        .filter_map(|(_, text)| {
            let text = text?;
            let rest = text.strip_prefix("INSERT INTO rec_t VALUES (")?;
            rest.split(',').next()?.trim().parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn fail_closed_a_full_disk_stops_the_statement_before_the_upstream() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    let mut fx = Fixture::with(|pg| GatewayConfig::shop(pg).raw(&recording_dir_toml(disk.path())));
    fx.direct(SHOP)
        .query("CREATE TABLE rec_t (id int PRIMARY KEY, note text)");

    let (client, _messages) = fx.gateway(SHOP).client().await;
    client
        .batch_execute("INSERT INTO rec_t VALUES (1, 'before the disk filled')")
        .await
        .expect("a statement while the recording works");

    disk.fill();
    let err = client
        .batch_execute(&padded_insert(2))
        .await
        .expect_err("an INSERT whose event cannot be made durable must fail");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse from the gateway, got {err:?}"));
    assert_eq!(
        db.code().code(),
        "58030",
        "SQLSTATE; message: {}",
        db.message()
    );
    assert!(
        db.message().contains("recording"),
        "the error must say the recording failed: {}",
        db.message()
    );
    assert!(
        db.message().contains("No space left on device"),
        "the error must name the cause: {}",
        db.message()
    );
    // The session is over.
    let next = tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await;
    assert!(
        matches!(next, Ok(Err(_))),
        "the session went on after the recording failed: {next:?}"
    );
    // The statement never reached the upstream.
    assert_eq!(upstream_ids(&fx), "1", "rows in rec_t (checked directly)");

    // While the disk is still full, a new session cannot be recorded either: refused.
    let refusal = fx.gateway(SHOP).refusal().await;
    assert_eq!(
        refusal.code().code(),
        "58030",
        "a new session while the disk is full: {}",
        refusal.message()
    );

    // Space back: the gateway serves (and records) new sessions.
    disk.free();
    fx.assert_still_serving();
    let (client, messages) = fx.gateway(SHOP).client().await;
    client
        .batch_execute("INSERT INTO rec_t VALUES (3, 'after the disk was freed')")
        .await
        .expect("a statement after space was freed");
    close(client, messages).await;
    assert_eq!(upstream_ids(&fx), "1,3", "rows in rec_t (checked directly)");

    // After a restart every recording verifies: the failed session is sealed as interrupted
    // and holds the first INSERT but not the refused one; the session refused at its start is
    // sealed as interrupted too; the later sessions are closed.
    let key = public_key(&fx.gw);
    fx.gw.kill9();
    fx.gw.restart(&[]);
    let dirs = recording_dirs(disk.path());
    let mut seen = Vec::new();
    let mut unverified = Vec::new();
    for dir in &dirs {
        let report = match postern_record::verify_session(dir, &key) {
            Ok(r) => r,
            Err(e) => {
                let files: Vec<String> = std::fs::read_dir(dir)
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        format!(
                            "{} ({} bytes)",
                            e.file_name().to_string_lossy(),
                            e.metadata().unwrap().len()
                        )
                    })
                    .collect();
                unverified.push(format!(
                    "{}: {e} [files: {}]",
                    dir.display(),
                    files.join(", ")
                ));
                continue;
            }
        };
        let ids = recorded_insert_ids(&events(dir));
        seen.extend(ids.iter().copied());
        if ids.contains(&1) {
            assert_eq!(
                report.status,
                SealStatus::Interrupted,
                "the failed session's recording: {}",
                report.summary()
            );
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [1, 3],
        "INSERTs in the recordings: the refused one (2) must not be there"
    );
    // No session is left "open" in the sessions index (what `postern sessions list --open`
    // shows): the gateway was restarted with no session running.
    let open = sqlite_rows(
        &fx.gw.store_path(),
        "SELECT id, close_reason FROM sessions WHERE ended_at_ms IS NULL",
    );
    assert!(
        open.is_empty(),
        "sessions still open in the index after every session ended: {open:?}"
    );
    assert!(
        unverified.is_empty(),
        "recordings that do not verify after the restart (recovery should have sealed them \
         as interrupted):\n{}",
        unverified.join("\n")
    );
    let all = verify_all(disk.path(), &key).unwrap();
    assert!(
        all.is_intact(),
        "verify_all after restart: {:?}",
        all.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn best_effort_a_full_disk_records_a_signed_gap_and_the_session_goes_on() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    let fx = Fixture::with(|pg| {
        GatewayConfig::default()
            .target(Target::new(SHOP, pg.url(SHOP)).raw("on_record_failure = \"best-effort\""))
            .raw(&recording_dir_toml(disk.path()))
    });
    fx.direct(SHOP)
        .query("CREATE TABLE rec_t (id int PRIMARY KEY, note text)");

    let (client, messages) = fx.gateway(SHOP).client().await;
    client
        .batch_execute("INSERT INTO rec_t VALUES (1, 'before the disk filled')")
        .await
        .unwrap();
    disk.fill();
    for id in 2..=4 {
        client
            .batch_execute(&padded_insert(id))
            .await
            .unwrap_or_else(|e| panic!("INSERT {id} while the disk is full (best-effort): {e:?}"));
    }
    let count: i64 = client
        .query_one("SELECT count(*) FROM rec_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 4, "the session works while nothing can be recorded");
    disk.free();
    client
        .batch_execute("INSERT INTO rec_t VALUES (5, 'after the disk was freed')")
        .await
        .unwrap();
    close(client, messages).await;
    assert_eq!(upstream_ids(&fx), "1,2,3,4,5");

    let dirs = recording_dirs(disk.path());
    assert_eq!(dirs.len(), 1, "one session, one recording: {dirs:?}");
    let key = public_key(&fx.gw);
    let report = wait_verified(&dirs[0], &key, Duration::from_secs(10));
    assert_eq!(report.status, SealStatus::Closed, "{}", report.summary());
    assert!(report.gaps >= 1, "no gap declared: {}", report.summary());
    // INSERT 2..4 and the SELECT: a command, a decision and a completion each, at least.
    assert!(
        report.lost_events >= 3,
        "the gap must account for the lost commands: {}",
        report.summary()
    );

    let evs = events(&dirs[0]);
    let gaps: Vec<_> = evs
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::Gap(g) => Some((e.seq, g)),
            _ => None,
        })
        .collect();
    assert!(!gaps.is_empty());
    for (_, g) in &gaps {
        assert!(
            g.reason.contains("No space left on device"),
            "the gap names the cause: {g:?}"
        );
        assert!(g.lost_events > 0, "{g:?}");
    }
    let lost_bytes: u64 = gaps.iter().map(|(_, g)| g.lost_bytes).sum();
    assert!(
        lost_bytes > 3 * 16 * 1024,
        "three 16 KiB statements were lost, the gaps say {lost_bytes} bytes: {gaps:?}"
    );
    // The recording says what it could: INSERT 1 before the gap, INSERT 5 after it; the
    // statements sent while the disk was full are declared lost, not silently missing.
    let seq_of = |id: u32| {
        evs.iter().find_map(|e| match &e.body {
            EventBody::Command(c)
                if c.text.as_deref().is_some_and(|t| {
                    t.starts_with(&format!("INSERT INTO rec_t VALUES ({id},"))
                }) =>
            {
                Some(e.seq)
            }
            _ => None,
        })
    };
    let first = seq_of(1).expect("INSERT 1 is recorded");
    let last = seq_of(5).expect("INSERT 5 (after space came back) is recorded");
    assert!(
        gaps.iter().all(|(seq, _)| first < *seq && *seq < last),
        "the gap sits between INSERT 1 (event {first}) and INSERT 5 (event {last}): {gaps:?}"
    );
    assert_eq!(
        recorded_insert_ids(&evs),
        [1, 5],
        "only the statements that could be written are in the recording"
    );
}
