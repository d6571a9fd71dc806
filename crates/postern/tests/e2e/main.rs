//! End-to-end tests: real PostgreSQL clients talk to a real PostgreSQL server through a running
//! `postern serve`, and what they see is compared with what they see connected directly.
//!
//! Each test starts its own upstream server (postern-testkit) and gateway process on free
//! ports, so tests run in parallel; `.config/nextest.toml` limits how many run at once. The
//! helpers are in `util`; each module covers one client or one area of the contract.

mod util;

mod api;
mod approval_flow;
mod approvals_cli;
mod audit;
mod browser;
mod client_tls;
mod copy;
mod demo;
mod dump;
mod lifecycle;
mod masking;
mod mcp;
mod metrics;
mod oidc;
mod pgbench;
mod policy;
mod psql;
mod psycopg;
mod raw_protocol;
mod record_crash;
mod record_failure;
mod recording;
mod recording_cli;
mod refusals;
mod s3;
mod terminate;
mod tokio_pg;
mod upstream_auth;
mod upstream_tls;
