//! `docs/recording-format.md` is the specification. These tests keep it honest:
//!
//! - the worked example is built here *by hand*, following the document, and must verify
//!   with the real verifier and read back with the real reader; its hashes, root and signed
//!   notes are the values printed in the document;
//! - a small independent verifier, written from the document (its own Merkle code, its own
//!   note parsing, `ed25519-dalek` directly), must accept what the real recorder writes.
//!
//! Run with `--nocapture` to print the example's values.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Verifier as _};
use sha2::{Digest, Sha256};

use common::*;
use postern_record::*;

const SID: &str = "demo-1";
const NAME: &str = "postern.example";

fn example_events() -> Vec<(u64, EventBody)> {
    vec![
        (
            0,
            EventBody::SessionStart(SessionStart {
                started_at_unix_us: 1_714_566_896_000_000,
                ..start(SID)
            }),
        ),
        (1250, EventBody::Command(Command::query("select 1"))),
        (
            1262,
            EventBody::Decision(DecisionRecord::new(DecisionKind::Allow)),
        ),
        (
            2040,
            EventBody::RowDescription(RowDescription {
                columns: vec![Column {
                    name: "?column?".into(),
                    type_id: Some(23),
                    type_name: None,
                }],
            }),
        ),
        (
            2041,
            EventBody::Rows(Rows {
                rows: vec![vec![Value::from("1")]],
            }),
        ),
        (
            2042,
            EventBody::CommandComplete(CommandComplete {
                tag: "SELECT 1".into(),
            }),
        ),
        (
            5100,
            EventBody::SessionEnd(SessionEnd {
                bytes_from_client: Some(52),
                bytes_to_client: Some(71),
                ..SessionEnd::new("client closed")
            }),
        ),
    ]
}

/// The body JSON of an event: the JSON of its inner struct.
fn body_json(body: &EventBody) -> Vec<u8> {
    match body {
        EventBody::SessionStart(b) => serde_json::to_vec(b),
        EventBody::Command(b) => serde_json::to_vec(b),
        EventBody::Decision(b) => serde_json::to_vec(b),
        EventBody::RowDescription(b) => serde_json::to_vec(b),
        EventBody::Rows(b) => serde_json::to_vec(b),
        EventBody::CommandComplete(b) => serde_json::to_vec(b),
        EventBody::SessionEnd(b) => serde_json::to_vec(b),
        other => unreachable!("{other:?}"),
    }
    .unwrap()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RFC 9162 MTH, straight from its definition.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            sha256(&[&[1], &mth(&leaves[..k]), &mth(&leaves[k..])])
        }
    }
}

fn sign(key: &SigningKey, text: &str) -> String {
    use ed25519_dalek::Signer as _;
    let origin = text.lines().next().unwrap();
    let id = &sha256(&[
        origin.as_bytes(),
        b"\n",
        &[1],
        key.verifying_key().as_bytes(),
    ])[..4];
    let sig = key.sign(text.as_bytes()).to_bytes();
    format!(
        "{text}\n\u{2014} {origin} {}\n",
        B64.encode([id, &sig[..]].concat())
    )
}

#[test]
fn the_worked_example_is_what_the_document_says() {
    let key = SigningKey::from_bytes(&[1; 32]);
    let mut chunk = format!("postern-chunk/1 {SID} 0 0\n").into_bytes();
    let mut leaves = Vec::new();
    let mut frame_hex = Vec::new();
    for (seq, (offset, body)) in example_events().iter().enumerate() {
        let mut record = Vec::new();
        record.extend_from_slice(&(seq as u64).to_be_bytes());
        record.extend_from_slice(&offset.to_be_bytes());
        record.push(body.kind() as u8);
        record.extend_from_slice(&body_json(body));
        let leaf = sha256(&[&[0], &[SID.len() as u8], SID.as_bytes(), &record]);
        let mut frame = (record.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&leaf[..8]);
        frame.extend_from_slice(&record);
        frame_hex.push(hex::encode(&frame));
        chunk.extend_from_slice(&frame);
        leaves.push(leaf);
        println!(
            "event {seq} {:<17} leaf {}  json {}",
            body.kind().as_str(),
            hex::encode(leaf),
            String::from_utf8(body_json(body)).unwrap()
        );
    }
    let origin = format!("{NAME}/session/{SID}");
    let cp2 = sign(
        &key,
        &format!("{origin}\n2\n{}\n", B64.encode(mth(&leaves[..2]))),
    );
    let seal = sign(
        &key,
        &format!("{origin}\n7\n{}\n", B64.encode(mth(&leaves))),
    );
    println!("frame 1: {}", frame_hex[1]);
    println!("root(2) {}", hex::encode(mth(&leaves[..2])));
    println!("root(7) {}", hex::encode(mth(&leaves)));
    println!("checkpoints file:\n{cp2}{seal}");
    println!("chunk bytes: {}", chunk.len());
    let vk = key.verifying_key();
    println!("public key (raw, base64): {}", B64.encode(vk.as_bytes()));
    {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        println!(
            "{}",
            vk.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .unwrap()
        );
    }
    println!("vkey: {}", postern_record::note::verifier_key(&origin, &vk));

    // The hand-built files are a valid recording for the real verifier and reader.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(SID);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("chunk-00000000.rec"), &chunk).unwrap();
    std::fs::write(dir.join("checkpoints"), format!("{cp2}{seal}")).unwrap();
    let rep = verify_session(&dir, &vk).unwrap();
    println!("{}", rep.summary());
    assert_eq!(rep.root, mth(&leaves));
    let read: Vec<(u64, EventBody)> = read_events(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.offset_us, e.body)
        })
        .collect();
    assert_eq!(read, example_events());

    // The manifest and the log checkpoint of the example.
    let manifest = Manifest {
        session_id: SID.into(),
        origin: origin.clone(),
        size: 7,
        root: B64.encode(rep.root),
        status: SealStatus::Closed,
        chunks: 1,
        bytes: chunk.len() as u64,
    };
    let mjson = serde_json::to_vec(&manifest).unwrap();
    let mleaf = sha256(&[&[0], &mjson]);
    println!("manifest: {}", String::from_utf8(mjson.clone()).unwrap());
    println!("manifest leaf: {}", hex::encode(mleaf));
    let log_cp = sign(
        &key,
        &format!("{NAME}/manifests/node-1\n1\n{}\n", B64.encode(mleaf)),
    );
    println!("log checkpoint:\n{log_cp}");

    // The values printed in docs/recording-format.md.
    assert_eq!(frame_hex[1], FRAME_1);
    assert_eq!(hex::encode(leaves[1]), LEAF_1);
    assert_eq!(hex::encode(mth(&leaves)), ROOT_7);
    assert_eq!(format!("{cp2}{seal}"), CHECKPOINTS);
    assert_eq!(log_cp, LOG_CHECKPOINT);
}

const FRAME_1: &str = "0000003317a74de37fdaa36f000000000000000100000000000004e2027b226b696e64223a227175657279222c2274657874223a2273656c6563742031227d";
const LEAF_1: &str = "17a74de37fdaa36f8d56426c9616c529529acee7b1df4a3237f9dea8f87630dc";
const ROOT_7: &str = "fb2f559e114d1985dd210a57ac82c8b8d69980b566527de11ef0b7910ef7dce2";
const CHECKPOINTS: &str = "\
postern.example/session/demo-1
2
eoAizdNX7E9piBc4Sx+AoFc0yP9DgYZ0RHHUtJ5utLc=

\u{2014} postern.example/session/demo-1 IiZUkF9vLR7OxBxiqV3JIOVfSxEo9MnB37scl48rb2BdEdmdRySH6ZDK5rhzxfgbYUGlMyigHdouM3dzc0BwzP6JPAg=
postern.example/session/demo-1
7
+y9VnhFNGYXdIQpXrILIuNaZgLVmUn3hHvC3kQ733OI=

\u{2014} postern.example/session/demo-1 IiZUkJn32rUq8me9+EnUJuP3x/j2EqKK1UU/XIYp+J0sN/+NnGgGXy3/QGPcXbdJ2nbfuRQifrdawldbDqmmgcU3jwo=
";
const LOG_CHECKPOINT: &str = "\
postern.example/manifests/node-1
1
QHtoMA+FAm5Ro/JMBMPocGSgIx3uc7uAG1bb1YkvD1U=

\u{2014} postern.example/manifests/node-1 NbSe/HLIY3HAsfTyvcw9H1F65Q3jn5/yC1y+vw5INm6KPfpy0TXOstFC2LH++lPsJR/OxrdJ11rjvRN+en5kczrt2g4=
";

/// An independent verifier written from the document, run on what the recorder writes.
#[test]
fn an_independent_verifier_accepts_real_recordings() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RecorderConfig {
        chunk_bytes: 600,
        ..config()
    };
    record(tmp.path(), "indep", 8, cfg);
    let dir = tmp.path().join("indep");
    let vk = key();

    // Checkpoints: notes back to back; text up to the blank line, then "— " lines.
    let notes = std::fs::read_to_string(dir.join("checkpoints")).unwrap();
    let mut signed = Vec::new();
    let mut rest = notes.as_str();
    while !rest.is_empty() {
        let blank = rest.find("\n\n").unwrap();
        let text = &rest[..=blank];
        let after = &rest[blank + 2..];
        let sig_line_end = after.find('\n').unwrap();
        let sig_line = &after[..sig_line_end];
        rest = &after[sig_line_end + 1..];
        let mut lines = text.lines();
        let (origin, size, root) = (
            lines.next().unwrap(),
            lines.next().unwrap().parse::<u64>().unwrap(),
            B64.decode(lines.next().unwrap()).unwrap(),
        );
        let (name, blob) = sig_line
            .strip_prefix("\u{2014} ")
            .unwrap()
            .split_once(' ')
            .unwrap();
        assert_eq!(name, origin);
        let blob = B64.decode(blob).unwrap();
        let id = &sha256(&[origin.as_bytes(), b"\n", &[1], vk.as_bytes()])[..4];
        assert_eq!(&blob[..4], id);
        let sig = Signature::from_bytes(&blob[4..].try_into().unwrap());
        vk.verify(text.as_bytes(), &sig).unwrap();
        assert_eq!(origin, "postern.test/session/indep");
        signed.push((size, root));
    }

    // Chunks: header line, then frames; leaves bind the session id.
    let mut leaves = Vec::new();
    let mut last_kind = 0;
    for chunk in 0.. {
        let Ok(bytes) = std::fs::read(dir.join(format!("chunk-{chunk:08}.rec"))) else {
            break;
        };
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let header = std::str::from_utf8(&bytes[..nl]).unwrap();
        assert_eq!(
            header,
            format!("postern-chunk/1 indep {chunk} {}", leaves.len())
        );
        let mut at = nl + 1;
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let check = &bytes[at + 4..at + 12];
            let record = &bytes[at + 12..at + 12 + len];
            let leaf = sha256(&[&[0], &[5], b"indep", record]);
            assert_eq!(check, &leaf[..8]);
            assert_eq!(
                u64::from_be_bytes(record[..8].try_into().unwrap()),
                leaves.len() as u64
            );
            serde_json::from_slice::<serde_json::Value>(&record[17..]).unwrap();
            last_kind = record[16];
            leaves.push(leaf);
            at += 12 + len;
        }
    }
    assert!(signed.len() > 2);
    for (size, root) in &signed {
        assert_eq!(mth(&leaves[..*size as usize]).to_vec(), *root);
    }
    assert_eq!(signed.last().unwrap().0, leaves.len() as u64);
    assert_eq!(last_kind, 14, "sealed by a session_end");
}
