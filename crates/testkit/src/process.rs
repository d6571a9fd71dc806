//! Running the PostgreSQL command-line tools: finding them, running them as the right user,
//! and turning a failed run into an error that shows what the tool printed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// Environment variables read by libpq that would silently change where or how a tool connects.
/// They are removed from every command this crate runs, so a developer's own `PGHOST` or
/// `PGSSLMODE` cannot leak into a test.
pub(crate) const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLROOTCERT",
    "PGSSLCRL",
    "PGREQUIRESSL",
    "PGGSSENCMODE",
    "PGTARGETSESSIONATTRS",
    "PGCONNECT_TIMEOUT",
    "PGCLIENTENCODING",
    "PGDATESTYLE",
    "PGTZ",
    "PGDATA",
];

/// Whether this process runs with an effective user id of 0.
///
/// `initdb` and `postgres` refuse to run as root, so [`crate::TempPostgres`] has to switch to
/// the `postgres` system user in that case (tests in CI run as root). Read from the owner of
/// `/proc/self`, which is the effective uid on Linux, falling back to `id -u`.
pub fn is_root() -> bool {
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return meta.uid() == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Finds the directory that holds `initdb`, `pg_ctl`, `postgres` and the client tools.
///
/// Debian installs the server binaries in `/usr/lib/postgresql/<major>/bin`, off `PATH`, so they
/// have to be looked up. The order: the `POSTERN_PG_BIN` environment variable (to test against
/// a particular version), the highest `/usr/lib/postgresql/*/bin` that has `initdb`, then
/// `pg_config --bindir`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("POSTERN_PG_BIN") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!("POSTERN_PG_BIN={} has no initdb", dir.display());
        }
        return Ok(dir);
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(major) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    if let Some((_, bin)) = best {
        return Ok(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().context(
        "no PostgreSQL found: set POSTERN_PG_BIN, install postgresql, or put pg_config on PATH",
    )?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !dir.join("initdb").is_file() {
        bail!(
            "no PostgreSQL server binaries found (POSTERN_PG_BIN unset, nothing in /usr/lib/postgresql/*/bin, pg_config --bindir gave {:?})",
            dir
        );
    }
    Ok(dir)
}

/// The numeric uid and gid of the `postgres` system user, needed to hand files over to it.
pub(crate) fn postgres_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .context("running `id postgres`")?;
        if !out.status.success() {
            bail!(
                "running as root needs a `postgres` system user (apt-get install postgresql): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("parsing the output of `id postgres`")
    };
    Ok((id("-u")?, id("-g")?))
}

/// Gives `path` and everything below it to the `postgres` user (only called when root).
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Builds a command for a server-side tool (`initdb`, `pg_ctl`), run as `postgres` when root.
pub(crate) fn server_command(program: &Path, cwd: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.current_dir(cwd);
    for var in LIBPQ_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion and fails with its output if it exits non-zero.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("{what}: could not run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}
