//! The threads that run sessions: one single-threaded Tokio runtime per thread, one thread per
//! core by default, and every connection kept on one of them for its whole life.
//!
//! Why not the multi-threaded scheduler: relaying a small round trip costs a few microseconds
//! of the gateway's own work, and the rest is the kernel. On the multi-threaded scheduler the
//! worker that polls the I/O driver hands woken sessions to the others, and idle workers are
//! woken (a futex wake and a context switch) to look for work they rarely find. With a runtime
//! per thread, the thread that waits in `epoll_wait` for a session's sockets is the one that
//! runs it: no cross-thread wake-ups, and a session's buffers stay in one core's cache. This
//! is the layout of haproxy and pgbouncer (an event loop per thread). Measured with
//! `pgbench -S` at 16 clients on 2 cores, the gateway's CPU per transaction dropped by 20-30 %
//! and its context switches per transaction by 25-35 % (docs/performance.md).
//!
//! The price: a session that blocks its thread (a synchronous recording flush that waits for
//! the disk, for instance) delays the other sessions on that thread, where the multi-threaded
//! scheduler could have moved them. The recording's page-cache writes take microseconds; the
//! slow durabilities are documented as such.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A set of session threads. Dropping it stops them; sessions still running on them are
/// dropped, so drop it only after every session has ended.
pub struct SessionThreads {
    threads: Vec<Thread>,
    next: AtomicUsize,
}

struct Thread {
    handle: Handle,
    /// Sessions placed on this thread and not yet ended.
    load: Arc<AtomicUsize>,
    /// Dropped to stop the thread's runtime.
    _stop: oneshot::Sender<()>,
}

/// A session's place on a thread: counts toward the thread's load until dropped.
pub struct Placement {
    load: Arc<AtomicUsize>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SessionThreads {
    /// Starts `n` threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let n = n.max(1);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("postern-pg-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
            threads.push(Thread {
                handle,
                load: Arc::default(),
                _stop: stop,
            });
        }
        Ok(SessionThreads {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The least loaded thread for a new session (ties go round-robin, so sessions that open
    /// together spread out), and the placement that counts it there.
    pub fn place(&self) -> (&Handle, Placement) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.threads.len();
        let thread = (0..n)
            .map(|k| &self.threads[(start + k) % n])
            .min_by_key(|t| t.load.load(Ordering::Relaxed))
            .expect("at least one session thread");
        thread.load.fetch_add(1, Ordering::Relaxed);
        (
            &thread.handle,
            Placement {
                load: thread.load.clone(),
            },
        )
    }
}
