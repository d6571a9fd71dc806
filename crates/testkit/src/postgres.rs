//! [`TempPostgres`]: one private PostgreSQL server per test, and its [`Builder`].

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::certs::TestCerts;
use crate::process::{
    LIBPQ_ENV, chown_tree, find_bin_dir, is_root, postgres_ids, run, server_command,
};
use crate::{SAMPLE_SQL, free_port};

/// How many times [`Builder::start`] picks a new port when another process took the first one.
const START_ATTEMPTS: usize = 5;

/// A password authentication method for a role created by [`Builder::role`].
///
/// Both matter to a gateway that logs in upstream with credentials it holds: older servers and
/// many managed services still store md5 hashes, newer ones SCRAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `md5`: the password is stored as an md5 hash and the server asks for an md5 response.
    Md5,
    /// `scram-sha-256`: the password is stored as a SCRAM verifier and the server runs SCRAM.
    ScramSha256,
}

impl AuthMethod {
    /// The name used both in `pg_hba.conf` and for the `password_encryption` setting.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
        }
    }
}

#[derive(Debug, Clone)]
struct Role {
    name: String,
    password: String,
    method: AuthMethod,
}

/// Options for a [`TempPostgres`] beyond the defaults of [`TempPostgres::start`].
///
/// The defaults give a server where everyone connecting from 127.0.0.1 or the socket is trusted
/// as any user. Each option exists because a gateway test needs it: custom settings and
/// `pg_hba.conf` lines, TLS with a CA the test controls, and password-protected roles so that
/// the gateway's upstream authentication is exercised.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Builder {
    conf: Vec<String>,
    hba: Vec<String>,
    ssl: bool,
    superuser_password: Option<String>,
    roles: Vec<Role>,
    bin_dir: Option<PathBuf>,
}

impl Builder {
    /// Appends a line to `postgresql.conf` (for example `"max_connections = 20"`).
    pub fn conf(mut self, line: impl Into<String>) -> Self {
        self.conf.push(line.into());
        self
    }

    /// Adds a `pg_hba.conf` line. These lines come before all generated ones, so they win
    /// (for example `"hostnossl all all 127.0.0.1/32 reject"` to force TLS over TCP).
    pub fn hba(mut self, line: impl Into<String>) -> Self {
        self.hba.push(line.into());
        self
    }

    /// Turns TLS on with a fresh CA and a server certificate for `localhost` and `127.0.0.1`;
    /// the files are available from [`TempPostgres::certs`] (clients verify with `ca_cert`).
    pub fn ssl(mut self, on: bool) -> Self {
        self.ssl = on;
        self
    }

    /// Gives the `postgres` superuser a password and makes TCP connections from every role
    /// not given its own rule use `scram-sha-256` instead of trust. The unix socket stays
    /// trusted, and [`TempPostgres::psql`] supplies the password itself.
    pub fn superuser_password(mut self, password: impl Into<String>) -> Self {
        self.superuser_password = Some(password.into());
        self
    }

    /// Creates a login role whose password is stored with `method` and which must authenticate
    /// with that method over TCP. The role has no privileges beyond `LOGIN`; grant what a test
    /// needs with [`TempPostgres::psql`].
    pub fn role(
        mut self,
        name: impl Into<String>,
        password: impl Into<String>,
        method: AuthMethod,
    ) -> Self {
        self.roles.push(Role {
            name: name.into(),
            password: password.into(),
            method,
        });
        self
    }

    /// Uses the server binaries in `dir` instead of looking them up with [`find_bin_dir`].
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Creates, starts and configures the server; returns once it accepts connections.
    pub fn start(self) -> Result<TempPostgres> {
        let bin_dir = match self.bin_dir.clone() {
            Some(dir) => dir,
            None => find_bin_dir()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("postern-pg-")
            .tempdir()
            .context("creating a temporary directory for PostgreSQL")?;
        let root = dir.path().to_path_buf();
        let data_dir = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir(&socket_dir)?;
        let certs = if self.ssl {
            Some(TestCerts::generate(&root.join("certs"))?)
        } else {
            None
        };
        let owner = if is_root() {
            Some(postgres_ids()?)
        } else {
            None
        };
        if let Some((uid, gid)) = owner {
            chown_tree(&root, uid, gid)?;
        }

        run(
            server_command(&bin_dir.join("initdb"), &root)
                .arg("-D")
                .arg(&data_dir)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]),
            "initdb",
        )?;

        std::fs::write(data_dir.join("pg_hba.conf"), self.hba_conf())?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data_dir.join("postgresql.conf"))?;
        conf.write_all(
            self.postgresql_conf(&socket_dir, &data_dir, certs.as_ref())?
                .as_bytes(),
        )?;
        drop(conf);
        if let Some((uid, gid)) = owner {
            chown_tree(&root, uid, gid)?;
        }

        let mut pg = TempPostgres {
            log_file: root.join("server.log"),
            data_dir,
            socket_dir,
            bin_dir,
            port: 0,
            password: self.superuser_password.clone(),
            certs,
            running: false,
            dir: Some(dir),
        };
        pg.start_server()?;
        self.create_roles(&pg)?;
        Ok(pg)
    }

    fn hba_conf(&self) -> String {
        let mut hba = String::from("# generated by postern-testkit\n");
        for line in &self.hba {
            let _ = writeln!(hba, "{line}");
        }
        for role in &self.roles {
            for net in ["127.0.0.1/32", "::1/128"] {
                let _ = writeln!(
                    hba,
                    "host all \"{}\" {net} {}",
                    role.name,
                    role.method.as_str()
                );
            }
        }
        let tcp = if self.superuser_password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let _ = writeln!(hba, "local all all trust");
        let _ = writeln!(hba, "local replication all trust");
        for net in ["127.0.0.1/32", "::1/128"] {
            let _ = writeln!(hba, "host all all {net} {tcp}");
            let _ = writeln!(hba, "host replication all {net} {tcp}");
        }
        hba
    }

    fn postgresql_conf(
        &self,
        socket_dir: &Path,
        data_dir: &Path,
        certs: Option<&TestCerts>,
    ) -> Result<String> {
        let mut conf = String::from("\n# added by postern-testkit\n");
        let _ = writeln!(conf, "listen_addresses = '127.0.0.1'");
        let _ = writeln!(conf, "unix_socket_directories = '{}'", socket_dir.display());
        // A throwaway server needs no durability; these make it several times faster.
        let _ = writeln!(
            conf,
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off"
        );
        let _ = writeln!(conf, "max_connections = 100\nshared_buffers = 64MB");
        let _ = writeln!(conf, "log_line_prefix = '%m [%p] %u@%d '");
        if let Some(certs) = certs {
            // The server insists that its key is private to it: copy both files into the data
            // directory (which becomes postgres-owned) with mode 0600.
            let cert = data_dir.join("server.crt");
            let key = data_dir.join("server.key");
            std::fs::copy(&certs.cert, &cert)?;
            std::fs::copy(&certs.key, &key)?;
            set_mode(&key, 0o600)?;
            let _ = writeln!(conf, "ssl = on");
            let _ = writeln!(conf, "ssl_cert_file = '{}'", cert.display());
            let _ = writeln!(conf, "ssl_key_file = '{}'", key.display());
        }
        for line in &self.conf {
            let _ = writeln!(conf, "{line}");
        }
        Ok(conf)
    }

    fn create_roles(&self, pg: &TempPostgres) -> Result<()> {
        let mut sql = String::new();
        if let Some(password) = &self.superuser_password {
            let _ = writeln!(sql, "ALTER ROLE postgres PASSWORD {};", literal(password));
        }
        for role in &self.roles {
            let _ = writeln!(sql, "SET password_encryption = '{}';", role.method.as_str());
            let _ = writeln!(
                sql,
                "CREATE ROLE {} LOGIN PASSWORD {};",
                ident(&role.name),
                literal(&role.password)
            );
        }
        if !sql.is_empty() {
            pg.psql_socket("postgres", &sql).context("creating roles")?;
        }
        Ok(())
    }
}

/// A PostgreSQL server that lives as long as this value.
///
/// Everything it owns (data directory, unix socket, log, certificates) sits in one private
/// temporary directory, and it listens on 127.0.0.1 only, on a port chosen by [`free_port`].
/// Dropping it stops the server (`pg_ctl stop -m immediate`: nothing of a test database is worth
/// a clean shutdown) and removes the directory.
#[derive(Debug)]
pub struct TempPostgres {
    // `Option` so that `Drop` can stop the server before the directory goes away.
    dir: Option<TempDir>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    password: Option<String>,
    certs: Option<TestCerts>,
    running: bool,
}

impl TempPostgres {
    /// Starts a server with the defaults: superuser `postgres`, trust authentication, no TLS.
    pub fn start() -> Result<TempPostgres> {
        Builder::default().start()
    }

    /// Options for a server that needs more than the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The TCP port the server listens on (at 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host to connect to: always `127.0.0.1`, never `localhost`, so that nothing depends on
    /// how the machine resolves names or whether it prefers IPv6.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The directory of the PostgreSQL binaries this server runs, for running matching client
    /// tools (`psql`, `pg_dump`, `pgbench`) against it.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server's log file: read it when a test fails for a reason the client cannot see.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The superuser's password, if [`Builder::superuser_password`] set one.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The CA and server certificate, if [`Builder::ssl`] turned TLS on.
    pub fn certs(&self) -> Option<&TestCerts> {
        self.certs.as_ref()
    }

    /// Whether the server is running (false after [`TempPostgres::stop`]).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// A connection URL for the superuser and database `db`, without the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}:{}/{}", self.host(), self.port, db)
    }

    /// Creates an empty database named `name`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE {}", ident(name)))?;
        Ok(())
    }

    /// Loads the sample "shop" schema ([`SAMPLE_SQL`]) into the existing database `db`.
    pub fn load_sample(&self, db: &str) -> Result<()> {
        self.psql(db, SAMPLE_SQL)?;
        Ok(())
    }

    /// Runs `sql` with `psql -X -A -t -q -v ON_ERROR_STOP=1` as the superuser over TCP,
    /// and returns what it printed on stdout, without the final newline.
    ///
    /// The SQL is fed on standard input, so it may hold several statements (each result is
    /// printed, unaligned and without headers, one row per line) and psql meta-commands. The
    /// first error stops the script and becomes the returned error, with psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.psql_command(db);
        cmd.args(["-h", self.host()]);
        run_psql(cmd, sql)
    }

    /// Stops the server now (`pg_ctl stop -m immediate`), keeping its files until drop: for
    /// tests of what happens when an upstream goes away. Stopping twice is not an error.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        run(
            server_command(&self.bin_dir.join("pg_ctl"), self.root())
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        )?;
        Ok(())
    }

    /// Starts the server again after [`TempPostgres::stop`], on the same port.
    pub fn restart(&mut self) -> Result<()> {
        if self.running {
            return Ok(());
        }
        self.pg_ctl_start(self.port)
    }

    fn root(&self) -> &Path {
        self.data_dir.parent().expect("data dir has a parent")
    }

    fn start_server(&mut self) -> Result<()> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match self.pg_ctl_start(port) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
                    let port_taken =
                        log.contains("could not bind") || log.contains("Address already in use");
                    if !port_taken {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error
            .expect("at least one attempt")
            .context("no free port after several attempts"))
    }

    fn pg_ctl_start(&mut self, port: u16) -> Result<()> {
        let result = run(
            server_command(&self.bin_dir.join("pg_ctl"), self.root())
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .args(["-w", "-t", "60", "-o", &format!("-p {port}"), "start"]),
            "pg_ctl start",
        );
        match result {
            Ok(_) => {
                self.port = port;
                self.running = true;
                Ok(())
            }
            Err(e) => {
                // A start that timed out may have left a postmaster behind; make sure it is gone.
                let _ = server_command(&self.bin_dir.join("pg_ctl"), self.root())
                    .arg("-D")
                    .arg(&self.data_dir)
                    .args(["-m", "immediate", "-w", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Err(e.context(format!(
                    "PostgreSQL did not start on port {port}; server log:\n{}",
                    tail.join("\n")
                )))
            }
        }
    }

    /// psql over the unix socket: used for setup before the TCP rules (passwords) are in force.
    fn psql_socket(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.psql_command(db);
        cmd.arg("-h").arg(&self.socket_dir);
        run_psql(cmd, sql)
    }

    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        for var in LIBPQ_ENV {
            cmd.env_remove(var);
        }
        if let Some(password) = &self.password {
            cmd.env("PGPASSWORD", password);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db]);
        cmd
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!(
                "postern-testkit: stopping PostgreSQL in {}: {e:#}",
                self.root().display()
            );
        }
        drop(self.dir.take());
    }
}

fn run_psql(mut cmd: Command, sql: &str) -> Result<String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("running psql")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let sql = sql.to_owned();
    // Write from another thread: a script with large output would otherwise deadlock on pipes.
    let writer = std::thread::spawn(move || stdin.write_all(sql.as_bytes()));
    let out = child.wait_with_output().context("waiting for psql")?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let mut stdout = String::from_utf8(out.stdout).context("psql printed invalid UTF-8")?;
    while stdout.ends_with('\n') {
        stdout.pop();
    }
    Ok(stdout)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Quotes a SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes a SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_stops() {
        let mut pg = TempPostgres::start().unwrap();
        assert_eq!(pg.psql("postgres", "select 1 + 1").unwrap(), "2");
        assert_eq!(
            pg.psql("postgres", "show server_encoding; show fsync")
                .unwrap(),
            "UTF8\noff"
        );
        let err = pg.psql("postgres", "select 1/0").unwrap_err();
        assert!(format!("{err:#}").contains("division by zero"), "{err:#}");

        pg.create_database("shop").unwrap();
        pg.load_sample("shop").unwrap();
        assert_eq!(
            pg.psql(
                "shop",
                "select count(*) from customers; select name from customers where id = 1"
            )
            .unwrap(),
            "50\nZoë Ångström"
        );

        let data_dir = pg.data_dir().to_path_buf();
        let port = pg.port();
        pg.stop().unwrap();
        assert!(!pg.is_running());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port still open after stop"
        );
        pg.restart().unwrap();
        assert_eq!(
            pg.psql("shop", "select count(*) from orders").unwrap(),
            "200"
        );
        drop(pg);
        assert!(!data_dir.exists(), "data directory left behind");
    }

    #[test]
    fn two_servers_run_side_by_side() {
        let a = TempPostgres::start().unwrap();
        let b = TempPostgres::start().unwrap();
        assert_ne!(a.port(), b.port());
        a.create_database("only_in_a").unwrap();
        let list = "select count(*) from pg_database where datname = 'only_in_a'";
        assert_eq!(a.psql("postgres", list).unwrap(), "1");
        assert_eq!(b.psql("postgres", list).unwrap(), "0");
    }

    #[test]
    fn password_roles_and_tls() {
        let pg = TempPostgres::builder()
            .ssl(true)
            .superuser_password("sup3r'secret")
            .role("md5_user", "md5-pass", AuthMethod::Md5)
            .role("scram_user", "scram-pass", AuthMethod::ScramSha256)
            .conf("work_mem = '8MB'")
            .start()
            .unwrap();
        assert_eq!(pg.psql("postgres", "show work_mem").unwrap(), "8MB");
        assert_eq!(
            pg.psql(
                "postgres",
                "select rolname, case when rolpassword like 'md5%' then 'md5' \
                 when rolpassword like 'SCRAM-SHA-256$%' then 'scram' end \
                 from pg_authid where rolname in ('md5_user', 'scram_user') order by 1"
            )
            .unwrap(),
            "md5_user|md5\nscram_user|scram",
            "passwords must be stored with the requested method"
        );

        // Connect as each role over TCP with TLS verified against the generated CA.
        let certs = pg.certs().unwrap();
        let connect = |user: &str, password: &str| {
            Command::new(pg.bin_dir().join("psql"))
                .env("PGPASSWORD", password)
                .arg(format!(
                    "host=localhost port={} user={user} dbname=postgres sslmode=verify-full sslrootcert={}",
                    pg.port(),
                    certs.ca_cert.display()
                ))
                .args(["-X", "-A", "-t", "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()"])
                .output()
                .unwrap()
        };
        for (user, password) in [
            ("md5_user", "md5-pass"),
            ("scram_user", "scram-pass"),
            ("postgres", "sup3r'secret"),
        ] {
            let out = connect(user, password);
            assert!(
                out.status.success(),
                "{user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "t",
                "{user} not on TLS"
            );
        }
        let out = connect("md5_user", "wrong");
        assert!(!out.status.success(), "a wrong password was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn finds_server_binaries() {
        let dir = find_bin_dir().unwrap();
        assert!(dir.join("initdb").is_file());
        assert!(dir.join("pg_ctl").is_file());
    }
}
