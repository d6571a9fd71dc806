//! Hostile and unusual bytes on a raw socket. Each malformed or oversized frame gets a FATAL
//! ErrorResponse with SQLSTATE 08P01 and the connection is closed, and the gateway goes on
//! serving everyone else (checked with psql after each case). Also the one-byte answers to
//! SSLRequest ('S') and GSSENCRequest ('N').

use std::io::{Read, Write};

use crate::util::*;

const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// Sends `bytes` as the first thing on a new connection and expects an 08P01 refusal.
fn assert_refused_08p01(fx: &mut Fixture, bytes: &[u8], what: &str) -> ErrorFields {
    let mut s = raw_connect(fx.gw.port);
    // The gateway may close before reading everything; a failed write is fine then.
    let _ = s.write_all(bytes);
    let err = expect_error(&mut s, what);
    assert_eq!(err.code, "08P01", "{what}: {err:?}");
    assert_eq!(err.severity, "FATAL", "{what}: {err:?}");
    expect_closed(&mut s, what);
    fx.assert_still_serving();
    err
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn malformed_startup_packets_get_08p01() {
    let mut fx = Fixture::start();

    // An HTTP request sent to the PostgreSQL port: "GET " read as a length is ~1.2 GB.
    assert_refused_08p01(
        &mut fx,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "HTTP request",
    );

    // A length of 2^31 (negative as a signed 32-bit integer).
    let mut msg = 0x8000_0000u32.to_be_bytes().to_vec();
    msg.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    assert_refused_08p01(&mut fx, &msg, "startup length 2^31");

    // A length shorter than the length field plus the protocol version.
    assert_refused_08p01(&mut fx, &[0, 0, 0, 4, 0, 0, 0, 0], "startup length 4");

    // A plausible but far too long startup packet (PostgreSQL allows 10,000 bytes).
    let mut msg = 1_000_000u32.to_be_bytes().to_vec();
    msg.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    msg.extend_from_slice(&noise(2000, 1));
    assert_refused_08p01(&mut fx, &msg, "startup length 1,000,000");

    // Random bytes inside a correctly framed protocol 3.0 startup packet: not a list of
    // NUL-terminated key/value strings.
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(&noise(1000, 42));
    body.push(0xff);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    assert_refused_08p01(&mut fx, &msg, "random startup parameters");

    // Pure noise.
    let mut msg = noise(4096, 7);
    msg[0] |= 0x80; // keep the length invalid whatever the seed gives
    assert_refused_08p01(&mut fx, &msg, "4 KiB of random bytes");
}

#[test]
fn unsupported_protocol_version_is_refused() {
    let mut fx = Fixture::start();
    let mut s = raw_connect(fx.gw.port);
    s.write_all(&startup_message(
        (9 << 16) | 9,
        &[("user", ALICE), ("database", SHOP)],
    ))
    .unwrap();
    let err = expect_error(&mut s, "protocol 9.9");
    // The contract says 08P01; PostgreSQL itself answers 0A000 (feature_not_supported), which
    // clients handle the same way. Either is a clear refusal.
    assert!(
        err.code == "08P01" || err.code == "0A000",
        "protocol 9.9: {err:?}"
    );
    assert!(err.message.contains("protocol"), "protocol 9.9: {err:?}");
    expect_closed(&mut s, "protocol 9.9");
    fx.assert_still_serving();
}

#[test]
fn bad_frames_after_login_get_08p01() {
    let mut fx = Fixture::start();
    let token = fx.gw.token(ALICE);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a Query claiming 2 GiB", {
            let mut m = vec![b'Q'];
            m.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
            m.extend_from_slice(b"SELECT 1");
            m
        }),
        ("a Query claiming 1.5 GiB followed by 1 MiB of data", {
            let mut m = vec![b'Q'];
            m.extend_from_slice(&0x6000_0000u32.to_be_bytes());
            m.extend_from_slice(&noise(1 << 20, 3));
            m
        }),
        ("a message length of 2", vec![b'Q', 0, 0, 0, 2]),
        ("a message length of 2^31", {
            let mut m = vec![b'P'];
            m.extend_from_slice(&0x8000_0000u32.to_be_bytes());
            m
        }),
        ("an unknown message type", frontend_message(b'j', b"junk\0")),
    ];
    for (what, bytes) in cases {
        let mut s = raw_login(fx.gw.port, SHOP, ALICE, &token);
        let _ = s.write_all(&bytes);
        let err = expect_error(&mut s, what);
        assert_eq!(err.code, "08P01", "{what}: {err:?}");
        expect_closed(&mut s, what);
        fx.assert_still_serving();
    }

    // A well-formed query on a raw connection works, so the cases above failed for their bytes.
    let mut s = raw_login(fx.gw.port, SHOP, ALICE, &token);
    s.write_all(&frontend_message(b'Q', b"SELECT 'raw ok'\0"))
        .unwrap();
    let mut saw_row = false;
    loop {
        match read_message(&mut s).unwrap() {
            Some((b'D', body)) => saw_row = String::from_utf8_lossy(&body).contains("raw ok"),
            Some((b'Z', _)) => break,
            Some((b'E', body)) => panic!("{:?}", parse_error_fields(&body)),
            Some(_) => {}
            None => panic!("closed during a simple query"),
        }
    }
    assert!(saw_row, "no DataRow with the result");
    s.write_all(&frontend_message(b'X', b"")).unwrap();
    expect_closed(&mut s, "after Terminate");
}

#[test]
fn gssenc_request_is_declined_and_ssl_request_accepted() {
    let mut fx = Fixture::start();
    let token = fx.gw.token(ALICE);

    // GSSENCRequest: 'N', then the client goes on with a normal startup on the same socket.
    let mut s = raw_connect(fx.gw.port);
    let mut req = 8u32.to_be_bytes().to_vec();
    req.extend_from_slice(&GSSENC_REQUEST.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], b'N', "GSSENCRequest answer");
    s.write_all(&startup_message(
        PROTOCOL_3_0,
        &[("user", ALICE), ("database", SHOP)],
    ))
    .unwrap();
    let (tag, body) = read_message(&mut s)
        .unwrap()
        .expect("an answer to the startup message");
    assert_eq!(
        tag, b'R',
        "expected an authentication request after GSSENC was declined"
    );
    assert_eq!(
        &body[..4],
        &3u32.to_be_bytes(),
        "expected AuthenticationCleartextPassword"
    );
    let mut pw = token.as_bytes().to_vec();
    pw.push(0);
    s.write_all(&frontend_message(b'p', &pw)).unwrap();
    loop {
        match read_message(&mut s).unwrap() {
            Some((b'Z', _)) => break,
            Some((b'E', body)) => panic!(
                "login after GSSENC refused: {:?}",
                parse_error_fields(&body)
            ),
            Some(_) => {}
            None => panic!("closed during login after GSSENC"),
        }
    }

    // SSLRequest: 'S' (a TLS handshake would follow; clients test that part).
    let mut s = raw_connect(fx.gw.port);
    let mut req = 8u32.to_be_bytes().to_vec();
    req.extend_from_slice(&SSL_REQUEST.to_be_bytes());
    s.write_all(&req).unwrap();
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], b'S', "SSLRequest answer");
    drop(s);

    // A client that connects and says nothing, and one that hangs up mid-packet, harm no one.
    let _idle = raw_connect(fx.gw.port);
    let mut half = raw_connect(fx.gw.port);
    half.write_all(&[0, 0, 0]).unwrap();
    drop(half);
    fx.assert_still_serving();
}

/// A client that vanishes without a Terminate message must not leave its upstream connection
/// behind.
#[test]
fn an_abandoned_client_releases_its_upstream_connection() {
    let fx = Fixture::start();
    let token = fx.gw.token(ALICE);
    let count = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' \
                 AND backend_type = 'client backend' AND pid <> pg_backend_pid()";
    let direct = fx.direct(SHOP);
    let s = raw_login(fx.gw.port, SHOP, ALICE, &token);
    assert_eq!(
        direct.query(count),
        "1",
        "the raw session's upstream connection"
    );
    drop(s);
    let gone = eventually(std::time::Duration::from_secs(10), || {
        (direct.query(count) == "0").then_some(())
    });
    assert!(
        gone.is_some(),
        "the upstream connection outlived its client by 10 s"
    );
}
