//! Throwaway PostgreSQL servers and fixtures for Postern's tests and for `postern demo`.
//!
//! Postern is a gateway in front of real databases, so the only tests that prove anything run
//! real clients against a real server through it. This crate makes such a server cheap to get:
//! [`TempPostgres::start`] runs `initdb` into a private temporary directory, starts the server
//! with `pg_ctl` on a free loopback port and a private unix-socket directory, and tears all of
//! it down when the value is dropped. Every server gets its own directory and port, so tests can
//! run in parallel in one process or in many.
//!
//! What it needs from the machine: the PostgreSQL server binaries (found through
//! `POSTERN_PG_BIN`, the highest `/usr/lib/postgresql/*/bin`, or `pg_config --bindir`; see
//! [`find_bin_dir`]) and, for TLS, the `openssl` command. `initdb` refuses to run as root, so
//! when the current user is root the server commands run as the `postgres` system user through
//! `runuser`, and the files they need are handed over to that user.
//!
//! The API is blocking on purpose: starting a server is a handful of short-lived child
//! processes, and a blocking call is easy to use from a plain `#[test]`, from async code
//! (a couple of seconds of blocking in a test is harmless) and from the `postern demo` command.

#![deny(missing_docs)]

mod certs;
mod moto;
mod postgres;
mod process;
mod sample;

pub use certs::TestCerts;
pub use moto::Moto;
pub use postgres::{AuthMethod, Builder, TempPostgres};
pub use process::{find_bin_dir, is_root};
pub use sample::{SAMPLE_SQL, SAMPLE_TABLES};

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

use rand::Rng;

/// Ports this process has already handed out, so two servers started by the same test binary
/// never race for the same number.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// Servers started by tests (PostgreSQL, the gateway) need a port number *before* they bind,
/// because it goes into their command line or config file. Asking the kernel for port 0 would
/// return a number from the ephemeral range, which outgoing connections of parallel tests keep
/// taking; so the port is drawn at random from 20000..32000 (below Linux's default ephemeral
/// range), checked by binding it, and never returned twice by the same process. Another process
/// can still take it before the server binds: callers that can detect "address in use" should
/// retry with a new port, as [`TempPostgres::start`] does.
pub fn free_port() -> u16 {
    let mut rng = rand::rng();
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port: u16 = rng.random_range(20000..32000);
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    // Practically unreachable; fall back to whatever the kernel offers.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    used.insert(port);
    port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable_and_unique() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b, "the same port was handed out twice");
        TcpListener::bind((Ipv4Addr::LOCALHOST, a)).expect("port a should be free");
        TcpListener::bind((Ipv4Addr::LOCALHOST, b)).expect("port b should be free");
    }
}
