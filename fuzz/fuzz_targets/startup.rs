//! Arbitrary bytes as the first thing a client sends: `startup::negotiate` (SSLRequest and
//! GSSENCRequest answered and looped, CancelRequest, StartupMessage parameters, protocol
//! version) and then, for a session, the PasswordMessage read.
//!
//! `negotiate` takes a real `TcpStream`, so the target keeps one loopback listener and a
//! current-thread runtime for the whole run and, per input, connects, writes the bytes,
//! half-closes and drives the server side. The client is kept open until the server is done
//! so that the gateway's replies ('N', AuthenticationCleartextPassword) are written normally.
//!
//! With the client half-closed, every path must end: a run that does not finish within the
//! timeout is reported as a crash (a hang in startup handling).
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_pg::startup::{self, Opening};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

struct Harness {
    rt: Runtime,
    listener: TcpListener,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("loopback listener");
        Harness { rt, listener }
    })
}

const LIMIT: Duration = Duration::from_secs(5);

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.rt.block_on(async {
        let addr = h.listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), h.listener.accept());
        let mut client = client.expect("connect");
        let (server, _) = accepted.expect("accept");
        client.write_all(data).await.expect("client write");
        client.shutdown().await.expect("client half-close");

        let opened = tokio::time::timeout(LIMIT, startup::negotiate(server, None))
            .await
            .expect("negotiate did not finish although the client had hung up");
        if let Ok(Opening::Session(mut session)) = opened {
            let _ = session.param("user");
            let mut reply = bytes::BytesMut::new();
            startup::negotiation_reply(&session, &mut reply);
            let _ = tokio::time::timeout(LIMIT, session.read_password())
                .await
                .expect("read_password did not finish although the client had hung up");
        }
        drop(client);
    });
});
