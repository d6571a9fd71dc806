//! Arbitrary client bytes through the relay's frontend path: the 5-byte header scan, the tag
//! check, and the decode of `Query` and `Parse` bodies that builds each `Command` (see
//! `crates/pg/src/relay.rs`, `client_to_server` and `inspect`). Every frame body also goes
//! through `ErrorFields::decode`, and `split_frame` must cut exactly the frames the scan saw.
//!
//! Nothing here may panic, loop forever or allocate by a declared length.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern_pg::frame::{self, ErrorFields, Reader};

/// The relay's default limit for a client frame (`Limits::max_client_frame`).
const MAX_CLIENT_FRAME: usize = 64 << 20;

fn decode(tag: u8, body: &[u8]) {
    match tag {
        b'Q' => {
            let mut r = Reader::new(body, "Query");
            let _ = r.cstr();
        }
        b'P' => {
            let mut r = Reader::new(body, "Parse");
            let Ok(_name) = r.cstr() else { return };
            let Ok(_text) = r.cstr() else { return };
            let Ok(n) = r.i16() else { return };
            for _ in 0..n.max(0) {
                if r.i32().is_err() {
                    return;
                }
            }
            let _ = r.is_empty();
        }
        b'B' => {
            // Bind: portal, statement, formats, parameters, result formats.
            let mut r = Reader::new(body, "Bind");
            let (Ok(_), Ok(_)) = (r.cstr(), r.cstr()) else {
                return;
            };
            let Ok(n) = r.i16() else { return };
            for _ in 0..n.max(0) {
                if r.i16().is_err() {
                    return;
                }
            }
            let Ok(n) = r.i16() else { return };
            for _ in 0..n.max(0) {
                let Ok(len) = r.i32() else { return };
                if len >= 0 && r.bytes(len as usize).is_err() {
                    return;
                }
            }
            let _ = r.rest();
        }
        _ => {}
    }
    let _ = ErrorFields::decode(body);
}

fuzz_target!(|data: &[u8]| {
    // The scan, as in client_to_server.
    let mut pos = 0;
    let mut frames = Vec::new();
    while let Ok(Some((tag, total))) = frame::peek_header(&data[pos..], MAX_CLIENT_FRAME) {
        assert!((frame::HEADER_LEN..=MAX_CLIENT_FRAME + 1).contains(&total));
        if !frame::is_frontend_tag(tag) {
            break;
        }
        if data.len() - pos < total {
            break;
        }
        let bytes = &data[pos..pos + total];
        decode(tag, frame::body(bytes));
        frames.push((pos, total));
        pos += total;
        if tag == b'X' {
            break;
        }
    }

    // split_frame over the same bytes cuts the same frames.
    let mut buf = BytesMut::from(data);
    for &(at, total) in &frames {
        let f = frame::split_frame(&mut buf, MAX_CLIENT_FRAME)
            .expect("the scan accepted this header")
            .expect("the scan saw a complete frame");
        assert_eq!(&f[..], &data[at..at + total]);
    }
    assert_eq!(buf.len(), data.len() - pos);
});
