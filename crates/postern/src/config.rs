//! The configuration file: one TOML document, every key with a default, validated without I/O
//! first ([`RawConfig`]) and then resolved into what the gateway runs with (secrets read, TLS
//! built) by `serve`.

use postern_auth::OidcConfig;
use postern_core::{IdentityKind, TargetAccess, TargetKind};
use postern_policy::{MaskConfig, PolicyConfig, RuleConfig, StatementClass};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the data directory is when the file does not say.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/postern";
/// The PostgreSQL listener's default address.
pub const DEFAULT_POSTGRES_LISTEN: &str = "127.0.0.1:15432";

/// The file as written, with defaults filled in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Metadata (SQLite), keys, TLS material and recordings live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Listener addresses.
    #[serde(default)]
    pub listen: Listen,
    /// The listeners' certificate; absent: a self-signed one is generated in data_dir/tls.
    pub tls: Option<TlsFiles>,
    /// Identity providers and token settings.
    #[serde(default)]
    pub auth: AuthSection,
    /// Resource bounds.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Log output.
    #[serde(default)]
    pub log: LogSection,
    /// The resources callers can reach.
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    /// Session recording.
    #[serde(default)]
    pub recording: RecordingSection,
    /// Guardrails, evaluated in order (see docs/policy.md).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Masking rules (see docs/policy.md).
    #[serde(default)]
    pub masks: Vec<MaskConfig>,
    /// Functions the operator vouches for, by statement class.
    #[serde(default)]
    pub functions: BTreeMap<StatementClass, Vec<String>>,
    /// Approval announcements and polling.
    #[serde(default)]
    pub approvals: ApprovalsSection,
    /// The MCP endpoint on the HTTP listener.
    #[serde(default)]
    pub mcp: McpSection,
    /// Console and REST API roles, by group.
    #[serde(default)]
    pub roles: RolesSection,
    /// Audit events as JSON lines.
    #[serde(default)]
    pub audit: AuditSection,
    /// The web console.
    #[serde(default)]
    pub console: ConsoleSection,
}

/// `[mcp]`: the MCP endpoint (`/mcp` on the HTTP listener).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSection {
    /// Serve `/mcp` when the HTTP listener is on (default true).
    pub enabled: bool,
    /// Most rows one `query` tool call returns; the rest is cut with a note (default 1000).
    pub max_rows: usize,
    /// `Host` header values accepted (DNS-rebinding protection); empty (default): any, since
    /// every request must carry a valid token.
    pub allowed_hosts: Vec<String>,
}

impl Default for McpSection {
    fn default() -> Self {
        McpSection {
            enabled: true,
            max_rows: postern_mcp::DEFAULT_MAX_ROWS,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[console]`: the web console's login options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Log in with an OpenID Connect provider (authorization code + PKCE).
    pub oidc: Option<ConsoleOidc>,
}

/// `[console.oidc]`: the console as an OIDC client of one of the `[[auth.oidc]]` providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleOidc {
    /// The provider: the `issuer` of an `[[auth.oidc]]` table, whose `audience` is `client_id`.
    pub issuer: String,
    /// The console's client id at the provider.
    pub client_id: String,
    /// For a confidential client: the environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// Where the provider sends the browser back; default
    /// `http://<the request's Host>/api/v1/oidc/callback`. Register it at the provider.
    pub redirect_url: Option<String>,
    /// Default: from the issuer's `/.well-known/openid-configuration`.
    pub authorization_endpoint: Option<String>,
    /// Default: from the issuer's `/.well-known/openid-configuration`.
    pub token_endpoint: Option<String>,
    /// Scopes asked for (default `openid profile`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

/// `[audit]`: where audit events are also written as JSON lines, for log aggregation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Append each audit event to this file as a JSON line; `-` writes to standard output.
    pub file: Option<PathBuf>,
}

/// `[roles]`: which groups hold the console's and REST API's roles. The approvers of each
/// `approve` rule are a role of their own (they decide that rule's approvals and read the
/// sessions they concern); everyone else sees only their own sessions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesSection {
    /// Members of these groups read everything and terminate live sessions.
    pub admin: Vec<String>,
    /// Members of these groups read every session and the audit log.
    pub auditor: Vec<String>,
}

/// `[approvals]`: how held statements are announced and watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsSection {
    /// POST a Slack-compatible `{"text": ...}` message here for each held statement.
    pub webhook_url: Option<String>,
    /// How often a node holding a statement looks for a decision in the store.
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        ApprovalsSection {
            webhook_url: None,
            poll_interval: Duration::from_millis(200),
        }
    }
}

/// `[recording]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingSection {
    /// Record sessions at all (default true).
    pub enabled: bool,
    /// Where recordings go (default data_dir/recordings). With an S3 `sink` it keeps this
    /// node's manifest log and the markers crash recovery needs.
    pub dir: Option<PathBuf>,
    /// Absent: recordings are written to `dir`. `s3://bucket/prefix`: to an S3-compatible
    /// object store, uploaded part by part as they are written (every command before it is
    /// forwarded).
    pub sink: Option<String>,
    /// The S3 endpoint URL, for S3-compatible stores (MinIO, Ceph, R2, ...); absent: AWS.
    pub s3_endpoint: Option<String>,
    /// The S3 region (default `us-east-1`).
    pub s3_region: String,
    /// The environment variable holding the access key id (default `AWS_ACCESS_KEY_ID`).
    pub s3_access_key_env: Option<String>,
    /// The environment variable holding the secret access key (default
    /// `AWS_SECRET_ACCESS_KEY`).
    pub s3_secret_key_env: Option<String>,
    /// Allow an `http://` endpoint (default false).
    pub s3_allow_http: bool,
    /// How long one upload may take, retries included, before the session's recording fails
    /// and the session stops (default 5s).
    #[serde(with = "humantime_serde_compat")]
    pub s3_timeout: Duration,
    /// `write` (survives a gateway crash; default) or `fsync` (survives power loss).
    pub durability: String,
    /// Sign a checkpoint after this many events.
    pub checkpoint_events: u64,
    /// ... or after this long.
    #[serde(with = "humantime_serde_compat")]
    pub checkpoint_interval: Duration,
    /// The name that signs checkpoints (the C2SP key name and origin prefix).
    pub name: String,
    /// This node's name in recordings and its manifest log (default: the host name).
    pub node: Option<String>,
    /// Who is recorded how; first match wins, default full.
    pub rules: Vec<RecordingRule>,
}

impl Default for RecordingSection {
    fn default() -> Self {
        RecordingSection {
            enabled: true,
            dir: None,
            sink: None,
            s3_endpoint: None,
            s3_region: postern_record::S3Config::DEFAULT_REGION.into(),
            s3_access_key_env: None,
            s3_secret_key_env: None,
            s3_allow_http: false,
            s3_timeout: postern_record::S3Config::DEFAULT_TIMEOUT,
            durability: "write".into(),
            checkpoint_events: 1000,
            checkpoint_interval: Duration::from_secs(10),
            name: "postern".into(),
            node: None,
            rules: Vec::new(),
        }
    }
}

impl RecordingSection {
    /// The `sink` URL and the `s3_*` keys that go with it.
    fn validate_sink(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| ConfigError::Invalid(format!("[recording] {msg}"));
        let Some(sink) = &self.sink else {
            let defaults = RecordingSection::default();
            let s3_keys = self.s3_endpoint.is_some()
                || self.s3_access_key_env.is_some()
                || self.s3_secret_key_env.is_some()
                || self.s3_allow_http
                || self.s3_region != defaults.s3_region
                || self.s3_timeout != defaults.s3_timeout;
            if s3_keys {
                return Err(invalid(
                    "s3_* keys are set but sink is not: add sink = \"s3://bucket/prefix\"".into(),
                ));
            }
            return Ok(());
        };
        postern_record::s3::parse_s3_url(sink).map_err(|e| invalid(format!("sink: {e}")))?;
        if let Some(endpoint) = &self.s3_endpoint {
            if endpoint.starts_with("http://") {
                if !self.s3_allow_http {
                    return Err(invalid(format!(
                        "s3_endpoint {endpoint:?} is plain http: set s3_allow_http = true to \
                         allow it"
                    )));
                }
            } else if !endpoint.starts_with("https://") {
                return Err(invalid(format!(
                    "s3_endpoint {endpoint:?} is not an http(s) URL"
                )));
            }
        }
        if self.s3_region.trim().is_empty() {
            return Err(invalid("s3_region is empty".into()));
        }
        for var in [&self.s3_access_key_env, &self.s3_secret_key_env]
            .into_iter()
            .flatten()
        {
            if var.is_empty() || var.contains('=') {
                return Err(invalid(format!(
                    "{var:?} is not an environment variable name"
                )));
            }
        }
        let t = self.s3_timeout;
        if t < Duration::from_millis(100) || t > Duration::from_secs(300) {
            return Err(invalid(format!(
                "s3_timeout {} must be between 100ms and 5m",
                humantime::format_duration(t)
            )));
        }
        Ok(())
    }
}

/// `[[recording.rules]]`: how much to record for a set of identities and targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRule {
    /// Names the rule in logs.
    pub name: String,
    /// Which sessions it covers (empty lists match everything).
    #[serde(default)]
    pub when: RecordingWhen,
    /// `full`, `commands` (no result data) or `off`.
    pub mode: RecordingMode,
}

/// The sessions a [`RecordingRule`] covers; every non-empty list must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingWhen {
    /// Subjects.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Groups (any).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Identity kinds.
    #[serde(default)]
    pub kinds: Vec<IdentityKind>,
    /// Targets.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// How much of a session is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingMode {
    /// Commands, decisions and results.
    Full,
    /// Commands and decisions, no result data.
    Commands,
    /// Nothing.
    Off,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// PostgreSQL listener.
    #[serde(default = "default_postgres_listen")]
    pub postgres: SocketAddr,
    /// HTTP listener (health now; console, REST and MCP as they land).
    pub http: Option<SocketAddr>,
    /// Refuse clients that do not use TLS. Default: true unless the listener is on loopback.
    pub require_tls: Option<bool>,
}

fn default_postgres_listen() -> SocketAddr {
    DEFAULT_POSTGRES_LISTEN
        .parse()
        .expect("valid default address")
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            postgres: default_postgres_listen(),
            http: None,
            require_tls: None,
        }
    }
}

impl Listen {
    /// Whether plaintext clients are refused.
    pub fn require_tls(&self) -> bool {
        self.require_tls
            .unwrap_or(!self.postgres.ip().is_loopback())
    }
}

/// `[tls]`: PEM files for the listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Longest lifetime `postern token issue` grants.
    #[serde(default = "default_max_ttl", with = "humantime_serde_compat")]
    pub token_max_ttl: Duration,
    /// OpenID Connect providers whose tokens are accepted.
    #[serde(default)]
    pub oidc: Vec<OidcConfig>,
}

fn default_max_ttl() -> Duration {
    postern_auth::DEFAULT_MAX_TTL
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            token_max_ttl: default_max_ttl(),
            oidc: Vec::new(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest message a client may send, in bytes.
    pub max_client_message_bytes: usize,
    /// Time from accept to the end of authentication.
    #[serde(with = "humantime_serde_compat")]
    pub handshake_timeout: Duration,
    /// Time to connect and log in to a target.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Concurrent client connections.
    pub max_connections: usize,
    /// Threads that run PostgreSQL sessions, each with its own event loop; 0: sessions share
    /// the gateway's multi-threaded runtime. Absent: see [`RawConfig::session_threads`].
    pub session_threads: Option<usize>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = postern_pg::Limits::default();
        LimitsSection {
            max_client_message_bytes: d.max_client_frame,
            handshake_timeout: d.handshake_timeout,
            connect_timeout: d.connect_timeout,
            max_connections: d.max_connections,
            session_threads: None,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `json` (one object per line) or `text`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `postern_pg=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines, for log aggregation.
    Json,
    /// Human-readable lines.
    Text,
}

/// `[[targets]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// The name callers use (the PostgreSQL `dbname`).
    pub name: String,
    /// Protocol.
    pub kind: TargetKind,
    /// `postgres://user[:password]@host:port/database[?sslmode=...]`: credentials the gateway holds.
    pub url: String,
    /// Read the upstream password from this environment variable.
    pub password_env: Option<String>,
    /// Read the upstream password from this file (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Upstream TLS: disable, prefer, require, verify-ca, verify-full (default: the URL's
    /// `sslmode`, else prefer).
    pub tls: Option<String>,
    /// CA certificates (PEM) trusted for verify-ca / verify-full; default: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Who may open the target (absent: any verified identity).
    #[serde(default)]
    pub allow: TargetAccess,
    /// How much result data to record: `full` (default), `first:10MB`, `none`.
    pub record_results: Option<String>,
    /// When the recording cannot be written: `fail-closed` (default) or `best-effort`.
    pub on_record_failure: Option<String>,
}

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

impl RawConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text` (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        let config: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without touching the outside world.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for target in &self.targets {
            if target.name.trim().is_empty() {
                return Err(ConfigError::Invalid("a target has an empty name".into()));
            }
            if !names.insert(target.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "target \"{}\" is defined twice",
                    target.name
                )));
            }
            let invalid =
                |msg: String| ConfigError::Invalid(format!("target \"{}\": {msg}", target.name));
            let url = postern_pg::PgUrl::parse(&target.url).map_err(|e| invalid(e.to_string()))?;
            let sources = [
                url.password.is_some(),
                target.password_env.is_some(),
                target.password_file.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() > 1 {
                return Err(invalid(
                    "give the password in only one of url, password_env, password_file".into(),
                ));
            }
            if let Some(mode) = &target.tls {
                mode.parse::<postern_pg::UpstreamTlsMode>()
                    .map_err(invalid)?;
            }
        }
        if let Some(url) = &self.approvals.webhook_url {
            let ok = url
                .parse::<reqwest::Url>()
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "[approvals] webhook_url {url:?} is not an http(s) URL"
                )));
            }
        }
        let poll = self.approvals.poll_interval;
        if poll < Duration::from_millis(10) || poll > Duration::from_secs(60) {
            return Err(ConfigError::Invalid(format!(
                "[approvals] poll_interval {} must be between 10ms and 60s",
                humantime::format_duration(poll)
            )));
        }
        if self.mcp.max_rows == 0 || self.mcp.max_rows > 1_000_000 {
            return Err(ConfigError::Invalid(format!(
                "[mcp] max_rows {} must be between 1 and 1000000",
                self.mcp.max_rows
            )));
        }
        self.recording.validate_sink()?;
        for provider in &self.auth.oidc {
            provider.validate().map_err(|e| {
                ConfigError::Invalid(format!("[[auth.oidc]] {}: {e}", provider.issuer))
            })?;
        }
        if let Some(console) = &self.console.oidc {
            let invalid = |msg: String| ConfigError::Invalid(format!("[console.oidc] {msg}"));
            let Some(provider) = self.auth.oidc.iter().find(|p| p.issuer == console.issuer) else {
                return Err(invalid(format!(
                    "issuer {:?} is not one of the [[auth.oidc]] providers (its tokens must be \
                     verified by one)",
                    console.issuer
                )));
            };
            if provider.audience != console.client_id {
                return Err(invalid(format!(
                    "client_id {:?} differs from the provider's audience {:?}: ID tokens are \
                     issued to the client id",
                    console.client_id, provider.audience
                )));
            }
            let urls = [
                &console.redirect_url,
                &console.authorization_endpoint,
                &console.token_endpoint,
            ];
            for url in urls.into_iter().flatten() {
                let ok = url
                    .parse::<reqwest::Url>()
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
                if !ok {
                    return Err(invalid(format!("{url:?} is not an http(s) URL")));
                }
            }
            if !console.scopes.iter().any(|s| s == "openid") {
                return Err(invalid("scopes must include \"openid\"".into()));
            }
        }
        Ok(())
    }
}

impl RawConfig {
    /// The policy part of the file.
    pub fn policy(&self) -> PolicyConfig {
        PolicyConfig {
            rules: self.rules.clone(),
            masks: self.masks.clone(),
            functions: self.functions.clone(),
        }
    }

    /// How many threads run PostgreSQL sessions: `[limits] session_threads`, else one per
    /// core, unless a recording's commit waits for the disk (`durability = "fsync"`) or for
    /// the object store (an S3 sink). A commit runs on the session's thread before the
    /// statement is forwarded; on a thread of its own it would stall every session sharing
    /// that thread, where the shared multi-threaded runtime moves them to another worker.
    pub fn session_threads(&self) -> usize {
        if let Some(n) = self.limits.session_threads {
            return n;
        }
        let recording = &self.recording;
        let commits_wait =
            recording.enabled && (recording.sink.is_some() || recording.durability == "fsync");
        if commits_wait {
            0
        } else {
            postern_pg::Limits::default().session_threads
        }
    }

    /// Where recordings are written and looked up.
    pub fn recordings_dir(&self) -> PathBuf {
        self.recording
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("recordings"))
    }
}

/// `"30s"`, `"5m"`, `"1h"` durations in TOML.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
data_dir = "/var/lib/postern"

[listen]
postgres = "127.0.0.1:15432"
http = "127.0.0.1:18080"

[[targets]]
name = "shop"
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/shop"
"#;

    #[test]
    fn the_minimal_example_parses() {
        let c = RawConfig::parse(ISSUE_EXAMPLE, Path::new("x.toml")).unwrap();
        assert_eq!(c.targets[0].name, "shop");
        assert!(!c.listen.require_tls());
        assert_eq!(c.limits.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn require_tls_defaults_on_for_public_listeners() {
        let c =
            RawConfig::parse("[listen]\npostgres = \"0.0.0.0:5432\"\n", Path::new("x")).unwrap();
        assert!(c.listen.require_tls());
    }

    #[test]
    fn the_approvals_section_has_defaults_and_is_checked() {
        let c = RawConfig::parse("", Path::new("x")).unwrap();
        assert_eq!(c.approvals.webhook_url, None);
        assert_eq!(c.approvals.poll_interval, Duration::from_millis(200));
        let c = RawConfig::parse(
            "[approvals]\nwebhook_url = \"https://hooks.slack.com/services/T/B/x\"\npoll_interval = \"1s\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            c.approvals.webhook_url.as_deref(),
            Some("https://hooks.slack.com/services/T/B/x")
        );
        assert_eq!(c.approvals.poll_interval, Duration::from_secs(1));
        for bad in [
            "webhook_url = \"hooks.slack.com/x\"",
            "webhook_url = \"ftp://h/x\"",
            "poll_interval = \"0s\"",
            "poll_interval = \"5m\"",
            "webhook = \"https://h/x\"",
        ] {
            let err = RawConfig::parse(&format!("[approvals]\n{bad}\n"), Path::new("x"));
            assert!(err.is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_mcp_section_has_defaults_and_is_checked() {
        let c = RawConfig::parse("", Path::new("x")).unwrap();
        assert!(c.mcp.enabled);
        assert_eq!(c.mcp.max_rows, 1000);
        assert!(c.mcp.allowed_hosts.is_empty());
        let c = RawConfig::parse(
            "[mcp]\nenabled = false\nmax_rows = 50\nallowed_hosts = [\"gw.example.com\"]\n",
            Path::new("x"),
        )
        .unwrap();
        assert!(!c.mcp.enabled);
        assert_eq!(c.mcp.max_rows, 50);
        assert_eq!(c.mcp.allowed_hosts, ["gw.example.com"]);
        for bad in ["max_rows = 0", "max_rows = -1", "rows = 5"] {
            assert!(
                RawConfig::parse(&format!("[mcp]\n{bad}\n"), Path::new("x")).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn the_s3_sink_keys_are_checked() {
        let c = RawConfig::parse("", Path::new("x")).unwrap();
        assert_eq!(c.recording.sink, None);
        assert_eq!(c.recording.s3_region, "us-east-1");
        let ok = "[recording]\nsink = \"s3://rec/gw\"\ns3_endpoint = \"http://127.0.0.1:9000\"\n\
                  s3_allow_http = true\ns3_access_key_env = \"K\"\ns3_secret_key_env = \"S\"\n\
                  s3_timeout = \"2s\"\n";
        let c = RawConfig::parse(ok, Path::new("x")).unwrap();
        assert_eq!(c.recording.sink.as_deref(), Some("s3://rec/gw"));
        assert_eq!(c.recording.s3_timeout, Duration::from_secs(2));
        for (bad, says) in [
            ("[recording]\nsink = \"rec/gw\"\n", "s3://"),
            ("[recording]\ns3_region = \"eu-west-1\"\n", "sink"),
            (
                "[recording]\nsink = \"s3://rec\"\ns3_endpoint = \"http://h:9000\"\n",
                "s3_allow_http",
            ),
            (
                "[recording]\nsink = \"s3://rec\"\ns3_timeout = \"1h\"\n",
                "s3_timeout",
            ),
        ] {
            let err = RawConfig::parse(bad, Path::new("x"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn console_oidc_must_name_a_provider_whose_audience_is_the_client() {
        let provider = "[[auth.oidc]]\nissuer = \"https://idp/\"\naudience = \"console\"\n\
                        jwks_file = \"/dev/null\"\n";
        let ok = format!(
            "{provider}[console.oidc]\nissuer = \"https://idp/\"\nclient_id = \"console\"\n"
        );
        let c = RawConfig::parse(&ok, Path::new("x")).unwrap();
        let oidc = c.console.oidc.unwrap();
        assert_eq!(oidc.scopes, ["openid", "profile"]);
        assert_eq!(oidc.redirect_url, None);
        for (bad, says) in [
            (
                "[console.oidc]\nissuer = \"https://other/\"\nclient_id = \"console\"\n",
                "not one of",
            ),
            (
                "[console.oidc]\nissuer = \"https://idp/\"\nclient_id = \"web\"\n",
                "audience",
            ),
            (
                "[console.oidc]\nissuer = \"https://idp/\"\nclient_id = \"console\"\nscopes = [\"profile\"]\n",
                "openid",
            ),
            (
                "[console.oidc]\nissuer = \"https://idp/\"\nclient_id = \"console\"\nredirect_url = \"/cb\"\n",
                "http(s)",
            ),
        ] {
            let err = RawConfig::parse(&format!("{provider}{bad}"), Path::new("x"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let roles = RawConfig::parse("[roles]\nadmin = [\"ops\"]\n", Path::new("x")).unwrap();
        assert_eq!(roles.roles.admin, ["ops"]);
        assert!(RawConfig::parse("[roles]\nadmins = [\"ops\"]\n", Path::new("x")).is_err());
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let dup = format!(
            "{ISSUE_EXAMPLE}\n[[targets]]\nname = \"shop\"\nkind = \"postgres\"\nurl = \"postgres://h/db\"\n"
        );
        let err = RawConfig::parse(&dup, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("defined twice"), "{err}");
        let err = RawConfig::parse("[listen]\npostgress = \"x\"", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml") && err.contains("postgress"), "{err}");
        let two_passwords =
            "[[targets]]\nname='a'\nkind='postgres'\nurl='postgres://u:p@h/db'\npassword_env='X'\n";
        assert!(RawConfig::parse(two_passwords, Path::new("x")).is_err());
        let bad_tls =
            "[[targets]]\nname='a'\nkind='postgres'\nurl='postgres://h/db'\ntls='maybe'\n";
        assert!(
            RawConfig::parse(bad_tls, Path::new("x"))
                .unwrap_err()
                .to_string()
                .contains("maybe")
        );
    }
}
