//! Reaching a target the way a wire client does: through the gateway's own PostgreSQL
//! listener, as the caller, so the statement meets the same policy, approvals, masking and
//! recording.

use crate::tls::RustlsConnect;
use futures::StreamExt;
use postern_core::Identity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Mints a short-lived gateway token for an identity (same subject, groups and kind).
pub type MintToken = Arc<dyn Fn(&Identity) -> Result<String, String> + Send + Sync>;

/// The gateway's own PostgreSQL listener, seen from inside the gateway.
#[derive(Clone)]
pub struct Loopback {
    /// Where to connect (the listener's address, loopback when it listens everywhere).
    pub addr: SocketAddr,
    /// TLS settings when the listener requires TLS (the gateway's certificate is accepted as
    /// it is: the connection never leaves the host).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Mints the caller's credential for one connection.
    pub mint: MintToken,
    /// How long connecting and logging in may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Loopback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loopback")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// One connection of a tool call: one gateway session.
pub struct Connection {
    client: Option<Client>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a closing connection may take to say goodbye before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl Connection {
    /// Ends the session: Terminate, then the socket closes (cut after a short grace, e.g.
    /// when a result past the row cap is still streaming).
    pub async fn close(mut self) {
        drop(self.client.take());
        if tokio::time::timeout(CLOSE_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }

    /// The session's client.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("open until closed")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Not closed (the tool call was cancelled): cut it.
        self.task.abort();
    }
}

/// Why a tool could not open its session.
#[derive(Debug)]
pub enum ConnectError {
    /// The caller's loopback credential could not be minted.
    Mint(String),
    /// The listener could not be reached in time.
    Unreachable(String),
    /// The gateway (or the target behind it) refused or failed the login.
    Login(tokio_postgres::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Mint(e) => write!(f, "cannot mint a session credential: {e}"),
            ConnectError::Unreachable(e) => {
                write!(f, "the gateway's PostgreSQL listener is unreachable: {e}")
            }
            ConnectError::Login(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}", db.message()),
                None => write!(f, "{e}"),
            },
        }
    }
}

impl Loopback {
    /// Opens a session of `identity` on `target`: the gateway's refusal (as a wire client
    /// would see it) or why the listener could not be reached otherwise.
    pub async fn connect(
        &self,
        identity: &Identity,
        target: &str,
    ) -> Result<Connection, ConnectError> {
        let token = (self.mint)(identity).map_err(ConnectError::Mint)?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(&identity.subject)
            .password(token)
            .dbname(target)
            .application_name("postern-mcp");
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| {
                ConnectError::Unreachable(format!("no answer from {} in time", self.addr))
            })?
            .map_err(|e| ConnectError::Unreachable(format!("{}: {e}", self.addr)))?;
        let _ = stream.set_nodelay(true);
        let timeout = self.connect_timeout;
        let late = || ConnectError::Unreachable(format!("no login at {} in time", self.addr));
        let (client, task) = match &self.tls {
            None => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, connection) = tokio::time::timeout(
                    timeout,
                    config.connect_raw(stream, tokio_postgres::NoTls),
                )
                .await
                .map_err(|_| late())?
                .map_err(ConnectError::Login)?;
                (client, tokio::spawn(drive(connection)))
            }
            Some(tls) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let connect = RustlsConnect {
                    config: tls.clone(),
                    server_name: rustls_pki_types::ServerName::IpAddress(self.addr.ip().into()),
                };
                let (client, connection) =
                    tokio::time::timeout(timeout, config.connect_raw(stream, connect))
                        .await
                        .map_err(|_| late())?
                        .map_err(ConnectError::Login)?;
                (client, tokio::spawn(drive(connection)))
            }
        };
        Ok(Connection {
            client: Some(client),
            task,
        })
    }
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "loopback connection ended");
    }
}

/// The rows (or the count) of one statement.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResultSet {
    /// The column names; empty for a statement that returns no rows (INSERT, UPDATE, ...).
    pub columns: Vec<String>,
    /// The rows as PostgreSQL prints them (text); `None` is NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// Whether the statement returns rows at all.
    pub returns_rows: bool,
    /// Rows returned or affected, from the command tag (`None` when cut short).
    pub count: Option<u64>,
}

/// What a text of one or more statements returned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One per statement, in order.
    pub results: Vec<ResultSet>,
    /// Rows were left out after `max_rows`.
    pub truncated: bool,
}

/// Runs `text` (simple query protocol) and collects at most `max_rows` rows over all its
/// statements. Past the cap the rest is not read: the caller drops the connection.
pub async fn run(
    client: &Client,
    text: &str,
    max_rows: usize,
) -> Result<Outcome, tokio_postgres::Error> {
    let stream = client.simple_query_raw(text).await?;
    futures::pin_mut!(stream);
    let mut outcome = Outcome::default();
    let mut current: Option<ResultSet> = None;
    let mut shown = 0usize;
    while let Some(message) = stream.next().await {
        match message? {
            SimpleQueryMessage::RowDescription(columns) => {
                current = Some(ResultSet {
                    columns: columns.iter().map(|c| c.name().to_owned()).collect(),
                    returns_rows: true,
                    ..ResultSet::default()
                });
            }
            SimpleQueryMessage::Row(row) => {
                if shown == max_rows {
                    outcome.truncated = true;
                    break;
                }
                shown += 1;
                let set = current.get_or_insert_with(|| ResultSet {
                    columns: row.columns().iter().map(|c| c.name().to_owned()).collect(),
                    returns_rows: true,
                    ..ResultSet::default()
                });
                set.rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(count) => {
                let mut set = current.take().unwrap_or_default();
                set.count = Some(count);
                outcome.results.push(set);
            }
            _ => {}
        }
    }
    if let Some(set) = current.take() {
        outcome.results.push(set);
    }
    Ok(outcome)
}
