//! The PostgreSQL wire-protocol engine.
//!
//! It terminates the caller's connection (TLS, startup, a token as the password), opens its own
//! connection to the target with the credentials the gateway holds, and relays frames between
//! the two, handing every statement to the core's decision point on the way. It knows the wire
//! format; it does not know how tokens are verified, how policy decides or where audit events
//! are stored — those arrive as `postern-core` traits.
//!
//! Layout: [`frame`] (framing and the few messages the gateway writes), [`startup`] (the
//! caller's handshake), [`upstream`] (the gateway's login to the target), [`relay`] (the two
//! pumps), [`session`] (one connection from accept to audit), [`engine`] (shared state and the
//! accept loop), [`cancel`] (cancel-key mapping), [`live`] (the sessions live on this node), [`error`] (refusals and their SQLSTATEs).

pub mod cancel;
pub mod capture;
pub mod catalog;
pub mod engine;
pub mod error;
pub mod frame;
pub mod live;
pub mod mask;
pub mod metrics;
pub mod relay;
pub mod session;
pub mod startup;
pub mod stream;
pub mod target;
pub mod upstream;
pub mod workers;

pub use engine::{Limits, PgEngine, Seams};
pub use error::Refusal;
pub use live::{LiveSession, LiveSessions, Termination};
pub use target::{PgTarget, PgUrl, Secret, UpstreamTlsMode, client_tls_config};
