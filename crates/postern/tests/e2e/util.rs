//! Shared machinery of the end-to-end tests: an upstream PostgreSQL with sample data, a running
//! `postern serve`, tokens from `postern token issue`, and connection settings for real clients
//! (psql, pgbench, pg_dump, psycopg, tokio-postgres), both through the gateway and directly.
//!
//! Everything panics with context instead of returning errors: a test that cannot set up has
//! failed, and the message (with the gateway's log, printed when a test panics) is the report.

#![allow(dead_code)] // each test module uses a different part

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use postern_testkit::{TempPostgres, free_port};
use tempfile::TempDir;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The target every fixture configures, pointing at the sample database.
pub const SHOP: &str = "shop";

/// The subject of the default test identity.
pub const ALICE: &str = "alice";

/// A table with one column per common type and awkward values (NULLs, unicode, extremes),
/// loaded into the sample database for the client comparisons.
pub const TYPES_SQL: &str = r#"
CREATE TABLE e2e_types (
    id    integer PRIMARY KEY,
    b     boolean,
    i2    smallint,
    i4    integer,
    i8    bigint,
    f4    real,
    f8    double precision,
    num   numeric,
    money_ numeric(12,2),
    t     text,
    vc    varchar(20),
    ch    char(5),
    by    bytea,
    ts    timestamp,
    tstz  timestamptz,
    d     date,
    tm    time,
    iv    interval,
    u     uuid,
    j     json,
    jb    jsonb,
    ai    integer[],
    at    text[],
    ip    inet
);
INSERT INTO e2e_types VALUES
 (1, true, 1, 42, 9000000000, 1.5, 2.25, 12345.678901234567890, 19.99, 'plain', 'short', 'abc',
  '\x00ff10', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.123456+01', '2024-02-29', '23:59:59.5',
  '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"k": [1, 2.5, null, true]}', '{"b": {"ü": "ß"}, "a": [1, 2]}', '{1,2,NULL,4}', '{"x","with,comma","with \"quote\"",NULL}',
  '192.168.0.1/24'),
 (2, false, -32768, -2147483648, 9223372036854775807, 'Infinity', '-Infinity', 'NaN', -0.01,
  '', 'Zoë Ångström', 'ü', '', '0001-01-01 00:00:00', '1970-01-01 00:00:00+00', '2000-01-01',
  '00:00:00', '-1 days +00:00:01', '00000000-0000-0000-0000-000000000000', '[]', '{}', '{}', '{}', '::1'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, true, 32767, 2147483647, -9223372036854775808, 3.4e38, 1e-300, 1e100, 9999999999.99,
  E'山田 太郎 🦀\ttab\nnewline\\backslash', 'Ηλέκτρα', 'x', decode(repeat('ab', 3000), 'hex'),
  '9999-12-31 23:59:59.999999', '2038-01-19 03:14:08+00', '9999-12-31', '12:00:00', '-10000 years -5 mons',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '"just a string"', '[{"deep": {"deeper": [[1], [2]]}}]',
  '{{1,2},{3,4}}', '{"null","NULL",""}', '2001:db8::/32');
"#;

/// Starts a PostgreSQL server with the sample "shop" database (and [`TYPES_SQL`]).
pub fn upstream() -> TempPostgres {
    let pg = TempPostgres::start().expect("starting PostgreSQL");
    load_shop(&pg);
    pg
}

/// Creates and fills the "shop" database on `pg`.
pub fn load_shop(pg: &TempPostgres) {
    pg.create_database(SHOP)
        .expect("creating the shop database");
    pg.load_sample(SHOP).expect("loading the sample data");
    pg.psql(SHOP, TYPES_SQL).expect("loading the types table");
}

// ---------------------------------------------------------------------------------------------
// Gateway configuration

/// Who may open a target: the `allow` table of a target.
#[derive(Debug, Clone, Default)]
pub struct Allow {
    pub groups: Vec<String>,
    pub subjects: Vec<String>,
    pub kinds: Vec<String>,
}

/// One `[[targets]]` entry.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub allow: Option<Allow>,
    /// Extra TOML lines inside this `[[targets]]` table (e.g. `record_results = "none"`).
    pub raw: Vec<String>,
}

impl Target {
    pub fn new(name: &str, url: impl Into<String>) -> Target {
        Target {
            name: name.into(),
            url: url.into(),
            password_env: None,
            password_file: None,
            tls: None,
            ca_file: None,
            allow: None,
            raw: Vec::new(),
        }
    }

    /// Adds a raw TOML line to this target's table.
    pub fn raw(mut self, line: &str) -> Target {
        self.raw.push(line.into());
        self
    }

    pub fn password_env(mut self, var: &str) -> Target {
        self.password_env = Some(var.into());
        self
    }

    pub fn password_file(mut self, path: &Path) -> Target {
        self.password_file = Some(path.into());
        self
    }

    pub fn tls(mut self, mode: &str) -> Target {
        self.tls = Some(mode.into());
        self
    }

    pub fn ca_file(mut self, path: &Path) -> Target {
        self.ca_file = Some(path.into());
        self
    }

    pub fn allow(mut self, allow: Allow) -> Target {
        self.allow = Some(allow);
        self
    }
}

/// What goes into the gateway's config file, plus the environment of its process.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    pub targets: Vec<Target>,
    pub require_tls: Option<bool>,
    /// `[tls]` listener certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Environment variables for `postern serve` (for `password_env`).
    pub env: Vec<(String, String)>,
    /// Raw TOML appended after everything else (e.g. a `[recording]` section).
    pub raw: String,
}

impl GatewayConfig {
    /// A config with one target named [`SHOP`] for the sample database of `pg`.
    pub fn shop(pg: &TempPostgres) -> GatewayConfig {
        GatewayConfig::default().target(Target::new(SHOP, pg.url(SHOP)))
    }

    pub fn target(mut self, target: Target) -> GatewayConfig {
        self.targets.push(target);
        self
    }

    pub fn env(mut self, var: &str, value: &str) -> GatewayConfig {
        self.env.push((var.into(), value.into()));
        self
    }

    /// Appends raw TOML to the end of the file.
    pub fn raw(mut self, toml: &str) -> GatewayConfig {
        self.raw.push('\n');
        self.raw.push_str(toml);
        self.raw.push('\n');
        self
    }

    pub fn require_tls(mut self, on: bool) -> GatewayConfig {
        self.require_tls = Some(on);
        self
    }

    pub fn listener_cert(mut self, cert: &Path, key: &Path) -> GatewayConfig {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// The TOML text for a gateway keeping its state in `data_dir` and listening on `port`.
    pub fn render(&self, data_dir: &Path, port: u16, http_port: u16) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "data_dir = {}",
            toml_str(&data_dir.display().to_string())
        );
        let _ = writeln!(out, "\n[listen]");
        let _ = writeln!(out, "postgres = {}", toml_str(&format!("127.0.0.1:{port}")));
        let _ = writeln!(
            out,
            "http = {}",
            toml_str(&format!("127.0.0.1:{http_port}"))
        );
        if let Some(on) = self.require_tls {
            let _ = writeln!(out, "require_tls = {on}");
        }
        if let Some((cert, key)) = &self.tls {
            let _ = writeln!(out, "\n[tls]");
            let _ = writeln!(out, "cert = {}", toml_str(&cert.display().to_string()));
            let _ = writeln!(out, "key = {}", toml_str(&key.display().to_string()));
        }
        for t in &self.targets {
            let _ = writeln!(out, "\n[[targets]]");
            let _ = writeln!(out, "name = {}", toml_str(&t.name));
            let _ = writeln!(out, "kind = \"postgres\"");
            let _ = writeln!(out, "url = {}", toml_str(&t.url));
            if let Some(v) = &t.password_env {
                let _ = writeln!(out, "password_env = {}", toml_str(v));
            }
            if let Some(v) = &t.password_file {
                let _ = writeln!(
                    out,
                    "password_file = {}",
                    toml_str(&v.display().to_string())
                );
            }
            if let Some(v) = &t.tls {
                let _ = writeln!(out, "tls = {}", toml_str(v));
            }
            if let Some(v) = &t.ca_file {
                let _ = writeln!(out, "ca_file = {}", toml_str(&v.display().to_string()));
            }
            if let Some(a) = &t.allow {
                let list = |items: &[String]| {
                    items
                        .iter()
                        .map(|s| toml_str(s))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut parts = Vec::new();
                if !a.groups.is_empty() {
                    parts.push(format!("groups = [{}]", list(&a.groups)));
                }
                if !a.subjects.is_empty() {
                    parts.push(format!("subjects = [{}]", list(&a.subjects)));
                }
                if !a.kinds.is_empty() {
                    parts.push(format!("kinds = [{}]", list(&a.kinds)));
                }
                let _ = writeln!(out, "allow = {{ {} }}", parts.join(", "));
            }
            for line in &t.raw {
                let _ = writeln!(out, "{line}");
            }
        }
        out.push_str(&self.raw);
        out
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

// ---------------------------------------------------------------------------------------------
// The gateway process

/// A running `postern serve`, killed on drop. Its stdout and stderr go to a log file, which is
/// printed when the test that owns it panics.
pub struct Gateway {
    child: Child,
    dir: TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub port: u16,
    pub http_port: u16,
}

/// The gateway binary under test.
pub fn postern_bin() -> &'static str {
    env!("CARGO_BIN_EXE_postern")
}

impl Gateway {
    /// Writes `config`, starts the gateway and waits until its PostgreSQL port accepts TCP.
    pub fn start(config: &GatewayConfig) -> Gateway {
        let mut last_log = String::new();
        // A port picked by free_port can be taken by another process before the gateway binds
        // it: retry with new ports when that is what the log says.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("postern-e2e-")
                .tempdir()
                .expect("tempdir");
            let data_dir = dir.path().join("data");
            let config_path = dir.path().join("postern.toml");
            let log_path = dir.path().join("postern.log");
            let port = free_port();
            let http_port = free_port();
            std::fs::write(&config_path, config.render(&data_dir, port, http_port)).unwrap();
            let log = std::fs::File::create(&log_path).unwrap();
            let mut cmd = Command::new(postern_bin());
            cmd.arg("serve")
                .arg("--config")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            for (k, v) in &config.env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawning postern serve");
            let mut gw = Gateway {
                child,
                dir,
                config_path,
                data_dir,
                log_path,
                port,
                http_port,
            };
            match gw.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return gw,
                Err(why) => {
                    last_log = gw.log();
                    let port_taken = last_log.contains("in use");
                    let config_text = std::fs::read_to_string(&gw.config_path).unwrap_or_default();
                    if !port_taken {
                        // The gateway's Drop prints its log while this panic unwinds.
                        panic!(
                            "the gateway did not become ready: {why}\n--- config\n{config_text}"
                        );
                    }
                }
            }
        }
        panic!("the gateway could not bind a free port in 3 attempts; last log:\n{last_log}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("postern serve exited with {status}"));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "port {} not accepting after {timeout:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the gateway has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The SQLite store of the gateway.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("postern.db")
    }

    /// The gateway's signing key (PKCS#8 PEM).
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("keys").join("gateway.key")
    }

    /// A scratch directory that lives as long as the gateway.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The process id of `postern serve`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no chance to seal anything) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts `postern serve` again with the same config, data directory and ports (after
    /// [`Gateway::kill9`] or an exit), appending to the same log; waits until it is ready.
    pub fn restart(&mut self, env: &[(String, String)]) {
        assert!(!self.is_running(), "restart: the gateway is still running");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(postern_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = cmd.spawn().expect("spawning postern serve again");
        if let Err(why) = self.wait_ready(Duration::from_secs(30)) {
            panic!("the restarted gateway did not become ready: {why}");
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `postern token issue --config <this config> ARGS` and returns the token.
    pub fn issue(&self, args: &[&str]) -> String {
        issue_token(&self.config_path, args)
    }

    /// A one-hour human token for `subject`, without groups.
    pub fn token(&self, subject: &str) -> String {
        self.issue(&["--subject", subject, "--kind", "human", "--ttl", "1h"])
    }

    /// Settings for a client that connects to `target` through the gateway as `user` with
    /// `token` as the password.
    pub fn conn_with(&self, target: &str, user: &str, token: &str, bin_dir: &Path) -> Conn {
        Conn {
            host: "127.0.0.1".into(),
            port: self.port,
            user: user.into(),
            password: Some(token.into()),
            dbname: target.into(),
            sslmode: "prefer".into(),
            sslrootcert: None,
            bin_dir: bin_dir.into(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(300);
            eprintln!(
                "\n===== postern log ({}; last {} lines) =====\n{}\n===== end of postern log =====",
                self.log_path.display(),
                lines.len() - from,
                lines[from..].join("\n")
            );
        }
    }
}

/// Runs `postern token issue --config CONFIG ARGS` and returns the token it printed.
pub fn issue_token(config: &Path, args: &[&str]) -> String {
    let out = Command::new(postern_bin())
        .args(["token", "issue", "--config"])
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running postern token issue");
    assert!(
        out.status.success(),
        "postern token issue {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("token is UTF-8");
    let token = stdout.trim();
    assert_eq!(
        token.lines().count(),
        1,
        "postern token issue must print only the token, got:\n{stdout}"
    );
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    token.to_owned()
}

// ---------------------------------------------------------------------------------------------
// Fixture: upstream + gateway

/// The usual setup: an upstream with the sample database, and a gateway with the [`SHOP`]
/// target pointing at it.
pub struct Fixture {
    // Field order matters: the gateway is stopped before the upstream.
    pub gw: Gateway,
    pub pg: TempPostgres,
}

impl Fixture {
    pub fn start() -> Fixture {
        let pg = upstream();
        let gw = Gateway::start(&GatewayConfig::shop(&pg));
        Fixture { gw, pg }
    }

    /// A fixture whose gateway config is made from the started upstream by `config`.
    pub fn with(config: impl FnOnce(&TempPostgres) -> GatewayConfig) -> Fixture {
        let pg = upstream();
        let gw = Gateway::start(&config(&pg));
        Fixture { gw, pg }
    }

    /// Alice, through the gateway, to `target`.
    pub fn gateway(&self, target: &str) -> Conn {
        let token = self.gw.token(ALICE);
        self.gw.conn_with(target, ALICE, &token, self.pg.bin_dir())
    }

    /// The superuser, directly to database `db` on the upstream.
    pub fn direct(&self, db: &str) -> Conn {
        direct(&self.pg, db)
    }

    /// Asserts that a plain psql query through the gateway still works: used after every
    /// hostile or failing connection to show the gateway kept serving.
    pub fn assert_still_serving(&mut self) {
        assert!(
            self.gw.is_running(),
            "the gateway process exited:\n{}",
            self.gw.log()
        );
        let out = self
            .gateway(SHOP)
            .psql(&["-A", "-t", "-c", "select count(*) from customers"], None);
        assert_success(&out, "psql through the gateway after the previous check");
        assert_eq!(
            stdout(&out).trim(),
            "50",
            "psql through the gateway after the previous check"
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.pg.log_file()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(40);
            eprintln!(
                "\n===== upstream PostgreSQL log (last lines) =====\n{}",
                lines[from..].join("\n")
            );
        }
    }
}

/// Settings for the superuser connecting straight to `db` on `pg`.
pub fn direct(pg: &TempPostgres, db: &str) -> Conn {
    Conn {
        host: pg.host().into(),
        port: pg.port(),
        user: "postgres".into(),
        password: pg.password().map(str::to_owned),
        dbname: db.into(),
        sslmode: "prefer".into(),
        sslrootcert: None,
        bin_dir: pg.bin_dir().into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Connections for real clients

/// Where and as whom a client connects; turned into libpq environment variables, a libpq
/// conninfo string, or a tokio-postgres config.
#[derive(Debug, Clone)]
pub struct Conn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: String,
    pub sslrootcert: Option<PathBuf>,
    /// Where psql, pg_dump and friends are taken from.
    pub bin_dir: PathBuf,
}

impl Conn {
    /// `pgbench -i -s 1` on this connection's database (pgbench's tables, 100,000 accounts).
    pub fn pgbench_init(&self) {
        let mut init = self.command("pgbench");
        init.args(["-i", "-s", "1", "-q"]);
        assert_success(
            &run_with_timeout(init, None, Duration::from_secs(120)),
            "pgbench -i",
        );
    }

    pub fn sslmode(mut self, mode: &str) -> Conn {
        self.sslmode = mode.into();
        self
    }

    pub fn dbname(mut self, db: &str) -> Conn {
        self.dbname = db.into();
        self
    }

    pub fn password(mut self, password: Option<&str>) -> Conn {
        self.password = password.map(str::to_owned);
        self
    }

    /// A command for the client tool `tool` (psql, pg_dump, ...), with the libpq environment
    /// set for this connection and everything else from the caller's environment removed.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.dbname)
            .env("PGSSLMODE", &self.sslmode)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGCLIENTENCODING", "UTF8")
            // Never read the developer's ~/.pgpass or ~/.psqlrc.
            .env("PGPASSFILE", "/nonexistent/pgpass")
            .env("PSQLRC", "/nonexistent/psqlrc");
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        if let Some(ca) = &self.sslrootcert {
            cmd.env("PGSSLROOTCERT", ca);
        }
        cmd
    }

    /// Runs `psql -X ARGS` (stdin from `input`, if any) and returns what it did.
    pub fn psql(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut cmd = self.command("psql");
        cmd.arg("-X").args(args);
        run_with_timeout(cmd, input, Duration::from_secs(120))
    }

    /// Runs one query with unaligned, tuples-only output; panics if psql fails.
    pub fn query(&self, sql: &str) -> String {
        let out = self.psql(
            &["-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
            None,
        );
        assert_success(&out, &format!("psql -c {sql:?} ({})", self.describe()));
        stdout(&out).trim_end_matches('\n').to_owned()
    }

    /// A libpq conninfo string (for psycopg), password included.
    pub fn conninfo(&self) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s = format!(
            "host={} port={} user={} dbname={} sslmode={} connect_timeout=10",
            q(&self.host),
            self.port,
            q(&self.user),
            q(&self.dbname),
            q(&self.sslmode)
        );
        if let Some(p) = &self.password {
            let _ = write!(s, " password={}", q(p));
        }
        if let Some(ca) = &self.sslrootcert {
            let _ = write!(s, " sslrootcert={}", q(&ca.display().to_string()));
        }
        s
    }

    /// A tokio-postgres config without TLS (the gateway is on loopback, where it allows that).
    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect_timeout(Duration::from_secs(10));
        if let Some(p) = &self.password {
            config.password(p);
        }
        config
    }

    /// Connects with tokio-postgres; notices and notifications arrive on the returned channel.
    pub async fn connect(&self) -> Result<(Client, Messages), tokio_postgres::Error> {
        let (client, mut connection) = self.tokio_config().connect(NoTls).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(message)) => {
                        let _ = tx.send(message);
                    }
                    Some(Err(e)) => {
                        eprintln!("tokio-postgres connection ended with an error: {e}");
                        break;
                    }
                    None => break,
                }
            }
        });
        Ok((client, rx))
    }

    /// Connects with tokio-postgres and panics with the error if that fails.
    pub async fn client(&self) -> (Client, Messages) {
        match self.connect().await {
            Ok(c) => c,
            Err(e) => panic!("connecting to {}: {e:?}", self.describe()),
        }
    }

    /// Connects with tokio-postgres, expecting the server (the gateway) to refuse with an
    /// ErrorResponse; returns it.
    pub async fn refusal(&self) -> DbError {
        match self.connect().await {
            Ok(_) => panic!(
                "connecting to {} succeeded but should have been refused",
                self.describe()
            ),
            Err(e) => match e.as_db_error() {
                Some(db) => db.clone(),
                None => panic!(
                    "connecting to {} failed without an ErrorResponse from the server: {e:?}",
                    self.describe()
                ),
            },
        }
    }

    /// Where this connects, for messages (never the password).
    pub fn describe(&self) -> String {
        format!(
            "{}@{}:{}/{} sslmode={}",
            self.user, self.host, self.port, self.dbname, self.sslmode
        )
    }
}

/// Notices and notifications of one tokio-postgres connection.
pub type Messages = tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>;

// ---------------------------------------------------------------------------------------------
// Processes and output

/// Runs `cmd` with `input` on stdin; kills it and panics with what it printed if it takes longer
/// than `timeout` (a hung gateway must fail the test, not stall the suite).
pub fn run_with_timeout(mut cmd: Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let what = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let writer = input.map(|data| {
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let out = out_reader.join().unwrap();
            let err = err_reader.join().unwrap();
            panic!(
                "{what} did not finish within {timeout:?}\n--- stdout (first 4000 bytes)\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out[..out.len().min(4000)]),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics with the command's output unless it exited 0.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        truncate(&stdout(out), 6000),
        truncate(&stderr(out), 6000)
    );
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n… ({} more bytes)", &s[..end], s.len() - end)
}

/// Asserts two texts are equal, showing the first differing line with context when not.
pub fn assert_same_text(what: &str, expected: &str, actual: &str) {
    if expected == actual {
        return;
    }
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let first = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let from = first.saturating_sub(3);
    let show = |lines: &[&str]| {
        lines
            .iter()
            .enumerate()
            .skip(from)
            .take(10)
            .map(|(i, l)| format!("{:>5}{} {l}", i + 1, if i == first { ">" } else { ":" }))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{what}: outputs differ at line {} (direct has {} lines, gateway {})\n--- direct\n{}\n--- through the gateway\n{}",
        first + 1,
        e.len(),
        a.len(),
        show(&e),
        show(&a)
    );
}

/// Asserts that a client run directly and through the gateway did exactly the same thing.
pub fn assert_same_output(what: &str, direct: &Output, gateway: &Output) {
    assert_same_text(
        &format!("{what} (stdout)"),
        &stdout(direct),
        &stdout(gateway),
    );
    assert_same_text(
        &format!("{what} (stderr)"),
        &stderr(direct),
        &stderr(gateway),
    );
    assert_eq!(
        direct.status.code(),
        gateway.status.code(),
        "{what}: exit codes differ"
    );
}

// ---------------------------------------------------------------------------------------------
// Raw protocol helpers

/// An ErrorResponse (or NoticeResponse) as its fields.
#[derive(Debug, Clone, Default)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub fields: Vec<(u8, String)>,
}

/// Parses the body of an ErrorResponse (everything after the type byte and length).
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut rest = body;
    while let Some((&tag, tail)) = rest.split_first() {
        if tag == 0 {
            break;
        }
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .expect("unterminated ErrorResponse field");
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match tag {
            b'S' => out.severity = value.clone(),
            b'C' => out.code = value.clone(),
            b'M' => out.message = value.clone(),
            _ => {}
        }
        out.fields.push((tag, value));
        rest = &tail[end + 1..];
    }
    out
}

/// Reads one backend message: (type byte, body). `None` on a clean end of stream.
pub fn read_message(stream: &mut TcpStream) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut tag = [0u8; 1];
    if stream.read(&mut tag)? == 0 {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(
        (4..=64 << 20).contains(&len),
        "implausible message length {len} for type {:?}",
        tag[0] as char
    );
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body)?;
    Ok(Some((tag[0], body)))
}

/// Reads messages until an ErrorResponse and returns it; panics on anything but notices and
/// parameter statuses before it, or on a close without one.
pub fn expect_error(stream: &mut TcpStream, what: &str) -> ErrorFields {
    loop {
        match read_message(stream) {
            Ok(Some((b'E', body))) => return parse_error_fields(&body),
            Ok(Some((b'N' | b'S', _))) => continue,
            Ok(Some((tag, body))) => {
                panic!(
                    "{what}: expected an ErrorResponse, got message {:?} ({} bytes)",
                    tag as char,
                    body.len()
                )
            }
            Ok(None) => {
                panic!("{what}: the gateway closed the connection without an ErrorResponse")
            }
            Err(e) => panic!("{what}: reading the gateway's answer failed: {e}"),
        }
    }
}

/// Asserts the gateway closes the connection (EOF or reset) within the stream's read timeout.
pub fn expect_closed(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if start.elapsed() > Duration::from_secs(10) {
                    panic!("{what}: the gateway kept sending data ({n} bytes) instead of closing");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the connection was not closed after the error: {e}"),
        }
    }
}

/// A StartupMessage for protocol `version` with the given parameters.
pub fn startup_message(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// A typed frontend message (`tag`, then length, then `body`).
pub fn frontend_message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut msg = vec![tag];
    msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(body);
    msg
}

/// Opens a raw TCP connection to the gateway with a 10 s read timeout.
pub fn raw_connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Logs in over a raw socket without TLS (startup, cleartext token, wait for ReadyForQuery).
pub fn raw_login(port: u16, target: &str, user: &str, token: &str) -> TcpStream {
    let mut s = raw_connect(port);
    s.write_all(&startup_message(
        196608,
        &[("user", user), ("database", target)],
    ))
    .unwrap();
    loop {
        match read_message(&mut s).expect("reading during login") {
            Some((b'R', body)) => {
                let code = u32::from_be_bytes(body[..4].try_into().unwrap());
                match code {
                    0 => {}
                    3 => {
                        let mut pw = token.as_bytes().to_vec();
                        pw.push(0);
                        s.write_all(&frontend_message(b'p', &pw)).unwrap();
                    }
                    other => panic!(
                        "the gateway asked for authentication method {other}, expected cleartext (3)"
                    ),
                }
            }
            Some((b'Z', _)) => return s,
            Some((b'E', body)) => panic!("login refused: {:?}", parse_error_fields(&body)),
            Some(_) => {}
            None => panic!("the gateway closed the connection during login"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python clients

/// The Python interpreter the client scripts run under (`$PYTHON`, else python3).
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether `python -c "import {modules}"` works. Outside CI a missing module skips `test` with a
/// message naming `install`; under CI (env `CI` set) it is a failure, because scripts/test
/// installs it.
pub fn python_has(modules: &str, install: &str, test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{modules} cannot be imported by {} and CI is set: scripts/test must install it \
             ({install})",
            python()
        );
        eprintln!(
            "SKIPPED {test}: `{} -c 'import {modules}'` failed; {install}",
            python()
        );
    }
    ok
}

// ---------------------------------------------------------------------------------------------
// Store

/// Runs a query on the gateway's SQLite store with the sqlite3 CLI and returns the rows as JSON
/// objects.
pub fn sqlite_rows(db: &Path, sql: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let out = Command::new("sqlite3")
        .arg("-json")
        .arg(db)
        .arg(sql)
        .output()
        .expect("running sqlite3 (apt-get install sqlite3)");
    assert_success(&out, &format!("sqlite3 {sql:?}"));
    let text = stdout(&out);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let value: serde_json::Value = serde_json::from_str(&text).expect("sqlite3 -json output");
    value
        .as_array()
        .expect("an array of rows")
        .iter()
        .map(|row| row.as_object().expect("a row object").clone())
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
