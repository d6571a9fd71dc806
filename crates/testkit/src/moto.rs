//! A throwaway S3 server for the recording sink's tests: `moto_server` (`pip install
//! "moto[server]"`) on a free loopback port, killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`. It checks no signatures: any access key works.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts moto; `None` (with a message) when it is not installed and `CI` is unset. Under
    /// CI a missing moto fails the test instead, since the test script installs it.
    pub fn start() -> Option<Moto> {
        // `moto_server` from pip's script directory if it is on PATH, else the module.
        let candidates: [(&str, &[&str]); 2] =
            [("moto_server", &[]), ("python3", &["-m", "moto.server"])];
        let mut tried = Vec::new();
        for (program, pre) in candidates {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let spawned = Command::new(program)
                .args(pre)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    tried.push(format!("{program}: {e}"));
                    continue;
                }
            };
            let mut moto = Moto { child, port };
            match moto.wait_listening(program) {
                None => return Some(moto),
                Some(status) => tried.push(format!("{program} {pre:?}: exited with {status}")),
            }
        }
        let why = tried.join("; ");
        if std::env::var_os("CI").is_some() {
            panic!("moto cannot be started under CI ({why}): pip install \"moto[server]\"");
        }
        eprintln!(
            "SKIPPED: moto cannot be started ({why}); install it with \
             `pip install \"moto[server]\"` to run the S3 tests"
        );
        None
    }

    /// Waits until the server accepts connections; the exit status if it died instead.
    fn wait_listening(&mut self, program: &str) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().expect("polling moto_server") {
                return Some(status);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{program} did not listen on {} within 60 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `http://127.0.0.1:PORT`, for the S3 endpoint setting.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `PUT /<bucket>` (moto does not check signatures); panics unless it is created.
    pub fn create_bucket(&self, bucket: &str) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to moto");
        write!(
            conn,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .expect("sending to moto");
        let mut response = String::new();
        conn.read_to_string(&mut response)
            .expect("reading moto's answer");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "creating bucket {bucket}: {response}"
        );
    }

    fn signal(&self, sig: &str) -> bool {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGSTOP: the kernel still accepts connections, nothing answers them (an S3 outage
    /// that hangs rather than refuses).
    pub fn pause(&self) {
        assert!(self.signal("-STOP"), "kill -STOP moto_server");
    }

    /// SIGCONT after [`Moto::pause`].
    pub fn resume(&self) {
        assert!(self.signal("-CONT"), "kill -CONT moto_server");
    }

    /// Stops the server for good (an S3 outage that refuses connections).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.signal("-CONT");
        self.kill();
    }
}
