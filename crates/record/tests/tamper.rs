//! Every way an attacker (or a bad disk) can change a recording is caught, and the error says
//! where and what.

mod common;

use std::path::Path;

use common::*;
use postern_record::*;

const A: &str = "sess-a";
const B: &str = "sess-b";

/// Small chunks so recordings span several; checkpoints every 4 events.
fn cfg() -> RecorderConfig {
    RecorderConfig {
        chunk_bytes: 700,
        ..config()
    }
}

/// Session A (and B, recorded the same way) with 6 statements: 32 events, checkpoints at
/// 6, 11, 16, 21, 26, 31 and the seal at 32.
fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    record(tmp.path(), A, 6, cfg());
    record(tmp.path(), B, 6, cfg());
    let rep = verify_session(&tmp.path().join(A), &key()).unwrap();
    assert_eq!(rep.events, 32);
    assert_eq!(rep.checkpoints, 7);
    assert!(rep.chunks >= 3, "{rep:?}");
    tmp
}

/// Find the chunk and index within it of event `seq`.
fn locate(dir: &Path, id: &str, seq: u64) -> (u32, usize) {
    for chunk in 0.. {
        let (_, fs) = frames(&std::fs::read(chunk_path(dir, id, chunk)).unwrap());
        if let Some(i) = fs.iter().position(|f| f.seq() == seq) {
            return (chunk, i);
        }
    }
    unreachable!()
}

fn edit_chunk(dir: &Path, id: &str, chunk: u32, f: impl FnOnce(&mut Vec<Frame>)) {
    let path = chunk_path(dir, id, chunk);
    let (header, mut fs) = frames(&std::fs::read(&path).unwrap());
    f(&mut fs);
    std::fs::write(&path, join(&header, &fs)).unwrap();
}

fn verify(dir: &Path, id: &str) -> VerifyError {
    let err = verify_session(&dir.join(id), &key()).expect_err("tampering must be detected");
    println!("{id}: {err}");
    err
}

#[test]
fn flipping_any_single_byte_of_any_file_is_detected() {
    let tmp = setup();
    let dir = tmp.path().join(A);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut flips = 0;
    for path in files {
        let original = std::fs::read(&path).unwrap();
        for i in 0..original.len() {
            let mut bytes = original.clone();
            bytes[i] ^= 0x01;
            std::fs::write(&path, &bytes).unwrap();
            let result = verify_session(&dir, &key());
            assert!(
                result.is_err(),
                "flipping byte {i} of {} went unnoticed",
                path.display()
            );
            flips += 1;
        }
        std::fs::write(&path, &original).unwrap();
    }
    assert!(flips > 3000, "{flips}");
    verify_session(&dir, &key()).unwrap();
}

#[test]
fn a_flipped_byte_names_the_event() {
    let tmp = setup();
    let (chunk, i) = locate(tmp.path(), A, 10);
    edit_chunk(tmp.path(), A, chunk, |fs| {
        let last = fs[i].bytes.len() - 3;
        fs[i].bytes[last] ^= 0x01;
    });
    let err = verify(tmp.path(), A);
    assert!(
        matches!(err, VerifyError::Event { seq: 10, chunk: c, .. } if c == chunk),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does not match its check"),
        "{err}"
    );
}

#[test]
fn a_dropped_event_is_named() {
    let tmp = setup();
    let (chunk, i) = locate(tmp.path(), A, 10);
    edit_chunk(tmp.path(), A, chunk, |fs| {
        fs.remove(i);
    });
    let err = verify(tmp.path(), A);
    assert!(matches!(err, VerifyError::Event { seq: 10, .. }), "{err:?}");
    assert!(err.to_string().contains("1 event was dropped"), "{err}");
}

#[test]
fn reordered_events_are_named() {
    let tmp = setup();
    let (chunk, i) = locate(tmp.path(), A, 12);
    edit_chunk(tmp.path(), A, chunk, |fs| fs.swap(i, i + 1));
    let err = verify(tmp.path(), A);
    assert!(matches!(err, VerifyError::Event { seq: 12, .. }), "{err:?}");
    assert!(err.to_string().contains("reordered"), "{err}");
}

#[test]
fn renumbered_reorders_fail_the_signed_root() {
    // A careful attacker swaps two events and rewrites their numbers and checks.
    let tmp = setup();
    let (chunk, i) = locate(tmp.path(), A, 12);
    edit_chunk(tmp.path(), A, chunk, |fs| {
        // Keep numbers and times where they were; move only the contents.
        let header = |f: &Frame| f.bytes[12..28].to_vec();
        let (h0, h1) = (header(&fs[i]), header(&fs[i + 1]));
        fs.swap(i, i + 1);
        fs[i].bytes[12..28].copy_from_slice(&h0);
        fs[i + 1].bytes[12..28].copy_from_slice(&h1);
        recheck(&mut fs[i], A);
        recheck(&mut fs[i + 1], A);
    });
    let err = verify(tmp.path(), A);
    assert!(
        matches!(
            err,
            VerifyError::RootMismatch {
                size: 16,
                from: 11,
                to: 15,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn truncation_after_a_checkpoint_is_detected() {
    // Cut everything after event 15 (checkpoint at 16), and drop the later checkpoints too:
    // what is left verifies up to a point, but has no seal.
    let tmp = setup();
    let (chunk, i) = locate(tmp.path(), A, 15);
    edit_chunk(tmp.path(), A, chunk, |fs| fs.truncate(i + 1));
    for later in chunk + 1.. {
        let p = chunk_path(tmp.path(), A, later);
        if !p.exists() {
            break;
        }
        std::fs::remove_file(p).unwrap();
    }
    let cps = tmp.path().join(A).join("checkpoints");
    let notes = std::fs::read_to_string(&cps).unwrap();
    let keep: String = notes
        .split_inclusive("=\n")
        .take_while(|n| !n.contains("\n21\n"))
        .collect();
    assert!(keep.contains("\n16\n"));
    std::fs::write(&cps, &keep).unwrap();
    let err = verify(tmp.path(), A);
    assert!(
        matches!(
            err,
            VerifyError::Unsealed {
                events: 16,
                signed: 16,
                ..
            }
        ),
        "{err:?}"
    );

    // With the later checkpoints left in place, the truncation is named as such.
    std::fs::write(&cps, &notes).unwrap();
    let err = verify(tmp.path(), A);
    assert!(
        matches!(
            err,
            VerifyError::Truncated {
                size: 21,
                present: 16,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_event_spliced_from_another_session_is_named() {
    let tmp = setup();
    let (chunk, i) = locate(tmp.path(), A, 10);
    let (bchunk, bi) = locate(tmp.path(), B, 10);
    let (_, bfs) = frames(&std::fs::read(chunk_path(tmp.path(), B, bchunk)).unwrap());
    let foreign = bfs[bi].clone();
    edit_chunk(tmp.path(), A, chunk, |fs| {
        fs[i].bytes = foreign.bytes.clone()
    });
    let err = verify(tmp.path(), A);
    assert!(matches!(err, VerifyError::Event { seq: 10, .. }), "{err:?}");
    assert!(err.to_string().contains("spliced"), "{err}");

    // With a plausible time and its check recomputed for session A, the signed root still
    // refuses it.
    edit_chunk(tmp.path(), A, chunk, |fs| {
        let prev = fs[i - 1].bytes[20..28].to_vec();
        fs[i].bytes[20..28].copy_from_slice(&prev);
        recheck(&mut fs[i], A)
    });
    let err = verify(tmp.path(), A);
    assert!(
        matches!(
            err,
            VerifyError::RootMismatch {
                size: 11,
                from: 6,
                to: 10,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_replaced_chunk_is_named() {
    let tmp = setup();
    // B's chunk 1 dropped in as A's chunk 1.
    std::fs::copy(chunk_path(tmp.path(), B, 1), chunk_path(tmp.path(), A, 1)).unwrap();
    let err = verify(tmp.path(), A);
    assert!(
        matches!(err, VerifyError::Chunk { chunk: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("belongs to session sess-b"),
        "{err}"
    );

    // With the header rewritten to claim session A, its first event fails its check.
    let b1 = std::fs::read(chunk_path(tmp.path(), B, 1)).unwrap();
    let (header, fs) = frames(&b1);
    let header = String::from_utf8(header).unwrap().replace(B, A);
    std::fs::write(chunk_path(tmp.path(), A, 1), join(header.as_bytes(), &fs)).unwrap();
    let err = verify(tmp.path(), A);
    assert!(
        matches!(err, VerifyError::Event { chunk: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn a_forged_self_consistent_chunk_fails_the_signed_root() {
    // The attacker records a different session under A's id (say, with their own key) where
    // one statement differs, and swaps in that chunk: headers, numbers and checks are all
    // right for session A — only the gateway's signed roots give it away.
    let tmp = setup();
    let forged = tempfile::tempdir().unwrap();
    let mut rec = open(forged.path(), A, cfg());
    for i in 0..6 {
        if i == 2 {
            rec.append_durable(EventBody::Command(Command::query(
                "select id, email from users where id = 9",
            )))
            .unwrap();
            for body in [
                EventBody::Decision(DecisionRecord::new(DecisionKind::Allow)),
                EventBody::RowDescription(RowDescription {
                    columns: vec![Column::named("id"), Column::named("email")],
                }),
                EventBody::Rows(Rows {
                    rows: vec![vec![Value::from("9"), Value::from("a***@example.com")]],
                }),
                EventBody::CommandComplete(CommandComplete {
                    tag: "SELECT 1".into(),
                }),
            ] {
                rec.append(body).unwrap();
            }
            rec.flush().unwrap();
        } else {
            statement(&mut rec, i);
        }
    }
    rec.seal(SessionEnd::new("client closed")).unwrap();
    let (chunk, _) = locate(tmp.path(), A, 12);
    let (fchunk, _) = locate(forged.path(), A, 12);
    assert_eq!(chunk, fchunk, "same layout");
    // Keep A's timestamps so nothing but the content differs, and fix the checks.
    let (_, original) = frames(&std::fs::read(chunk_path(tmp.path(), A, chunk)).unwrap());
    let (header, mut swapped) =
        frames(&std::fs::read(chunk_path(forged.path(), A, chunk)).unwrap());
    assert_eq!(original.len(), swapped.len());
    for (f, o) in swapped.iter_mut().zip(&original) {
        f.bytes[20..28].copy_from_slice(&o.bytes[20..28]);
        recheck(f, A);
    }
    std::fs::write(chunk_path(tmp.path(), A, chunk), join(&header, &swapped)).unwrap();
    let err = verify(tmp.path(), A);
    let VerifyError::RootMismatch {
        from,
        to,
        first_chunk,
        last_chunk,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    // Statement 2 (events 11..=15) differs: the checkpoint at 16 fails.
    assert_eq!((from, to), (11, 15));
    assert!(
        first_chunk <= chunk && chunk <= last_chunk,
        "{first_chunk}..={last_chunk}"
    );
}

#[test]
fn forged_or_foreign_checkpoints_are_refused() {
    let tmp = setup();
    let cps = tmp.path().join(A).join("checkpoints");
    let notes = std::fs::read_to_string(&cps).unwrap();
    // Claim the seal is smaller.
    std::fs::write(&cps, notes.replacen("\n32\n", "\n31\n", 1)).unwrap();
    let err = verify(tmp.path(), A);
    assert!(
        matches!(err, VerifyError::Checkpoint { index: 6, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not verify"), "{err}");
    std::fs::write(&cps, &notes).unwrap();

    // Checked with another key.
    let other = SigningKey::from_bytes(&[2; 32]).verifying_key();
    let err = verify_session(&tmp.path().join(A), &other).unwrap_err();
    assert!(
        err.to_string().contains("not signed by the given key"),
        "{err}"
    );

    // B's checkpoints in A's recording.
    std::fs::copy(tmp.path().join(B).join("checkpoints"), &cps).unwrap();
    let err = verify(tmp.path(), A);
    assert!(err.to_string().contains("sess-b"), "{err}");
}

#[test]
fn a_deleted_recording_is_detected_by_the_manifest_log() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = Recordings::open(
        tmp.path(),
        "node-1",
        Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap(),
    )
    .unwrap();
    for id in ["s1", "s2", "s3"] {
        let mut rec = recs.start(start(id), config()).unwrap();
        statement(&mut rec, 1);
        let receipt = rec.seal(SessionEnd::new("client closed")).unwrap();
        assert!(receipt.logged);
    }
    let all = verify_all(tmp.path(), &key()).unwrap();
    assert!(all.is_intact(), "{:?}", all.problems);
    assert_eq!(all.logs[0].size, 3);
    assert_eq!(all.sessions.len(), 3);

    std::fs::remove_dir_all(tmp.path().join("s2")).unwrap();
    let all = verify_all(tmp.path(), &key()).unwrap();
    assert_eq!(all.problems.len(), 1, "{:?}", all.problems);
    let err = &all.problems[0];
    println!("{err}");
    assert!(
        matches!(err, VerifyError::Missing { session_id, entry: 1, .. } if session_id == "s2"),
        "{err:?}"
    );

    // Removing its manifest too breaks the log's signed checkpoints.
    drop(recs);
    let log = tmp.path().join("_log/node-1/manifests");
    let bytes = std::fs::read(&log).unwrap();
    let (header, fs) = frames(&bytes);
    let kept: Vec<_> = fs
        .into_iter()
        .filter(|f| !String::from_utf8_lossy(&f.bytes).contains("\"s2\""))
        .collect();
    std::fs::write(&log, join(&header, &kept)).unwrap();
    let all = verify_all(tmp.path(), &key()).unwrap();
    assert!(!all.is_intact());
    println!("{}", all.problems[0]);
    assert!(
        matches!(all.problems[0], VerifyError::Log { .. }),
        "{:?}",
        all.problems
    );
    // And the gateway refuses to sign over it.
    let reopened = Recordings::open(
        tmp.path(),
        "node-1",
        Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap(),
    );
    assert!(reopened.is_err());
}

#[test]
fn a_replaced_recording_does_not_match_its_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let recs = Recordings::open(
        tmp.path(),
        "node-1",
        Signer::new("postern.test", SigningKey::from_bytes(&[1; 32])).unwrap(),
    )
    .unwrap();
    let mut rec = recs.start(start("s1"), config()).unwrap();
    statement(&mut rec, 1);
    rec.seal(SessionEnd::new("client closed")).unwrap();
    // A different, validly signed recording of the same id (e.g. an older copy of the key
    // holder's choosing) put in its place.
    let other = tempfile::tempdir().unwrap();
    record(other.path(), "s1", 2, config());
    std::fs::remove_dir_all(tmp.path().join("s1")).unwrap();
    copy_dir(&other.path().join("s1"), &tmp.path().join("s1"));
    let all = verify_all(tmp.path(), &key()).unwrap();
    assert!(
        matches!(&all.problems[..], [VerifyError::ManifestMismatch { .. }]),
        "{:?}",
        all.problems
    );
}
