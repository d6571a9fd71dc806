//! Bulk data through the gateway, both ways: a million rows out with `\copy ... to stdout`
//! (byte-for-byte what a direct connection gets) and a million rows in with `COPY FROM STDIN`
//! (every row lands, intact).

use std::fmt::Write as _;
use std::time::Duration;

use crate::util::*;

const ROWS: u64 = 1_000_000;

/// A cheap content fingerprint (FNV-1a, 64 bits) for messages: the comparison itself is on the
/// bytes.
fn fingerprint(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{} bytes, fnv1a {h:016x}", data.len())
}

#[test]
fn copy_out_of_a_million_rows_matches_direct() {
    let fx = Fixture::start();
    fx.direct(SHOP).query(&format!(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS hash, g * 0.25 AS amount, \
         timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' AS at, \
         CASE WHEN g % 10 = 0 THEN NULL ELSE 'row ' || g || ' ü' END AS note \
         FROM generate_series(1, {ROWS}) AS g"
    ));
    let copy = r"\copy (SELECT * FROM big ORDER BY id) TO STDOUT";
    let run = |conn: Conn| {
        let mut cmd = conn.command("psql");
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-c", copy]);
        run_with_timeout(cmd, None, Duration::from_secs(200))
    };
    let direct = run(fx.direct(SHOP));
    assert_success(&direct, "\\copy to stdout (direct)");
    assert_eq!(
        direct.stdout.iter().filter(|&&b| b == b'\n').count() as u64,
        ROWS,
        "the direct run did not produce one line per row"
    );
    let gateway = run(fx.gateway(SHOP));
    assert_success(&gateway, "\\copy to stdout through the gateway");
    if direct.stdout != gateway.stdout {
        let first = direct
            .stdout
            .iter()
            .zip(&gateway.stdout)
            .position(|(a, b)| a != b)
            .unwrap_or(direct.stdout.len().min(gateway.stdout.len()));
        let line = direct.stdout[..first]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        panic!(
            "COPY output differs: direct {} vs gateway {}; first difference at byte {first} (line {line})",
            fingerprint(&direct.stdout),
            fingerprint(&gateway.stdout)
        );
    }
}

#[test]
fn copy_in_of_a_million_rows_lands_every_row() {
    let fx = Fixture::start();
    fx.direct(SHOP).query(
        "CREATE TABLE loaded (id bigint PRIMARY KEY, name text NOT NULL, amount numeric NOT NULL)",
    );
    let mut data = String::with_capacity(40 * ROWS as usize);
    for i in 1..=ROWS {
        let _ = writeln!(data, "{i}\trow-{i}-ü\t{}.{:02}", i / 4, (i % 4) * 25);
    }
    let mut cmd = fx.gateway(SHOP).command("psql");
    cmd.args([
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        r"\copy loaded FROM STDIN",
    ]);
    let out = run_with_timeout(cmd, Some(data.as_bytes()), Duration::from_secs(200));
    assert_success(&out, "\\copy from stdin through the gateway");
    assert_eq!(
        stdout(&out).trim(),
        format!("COPY {ROWS}"),
        "psql's COPY tag"
    );

    let check = fx.direct(SHOP).query(
        "SELECT count(*), sum(id), \
         bool_and(name = 'row-' || id || '-ü'), bool_and(amount = id * 0.25) FROM loaded",
    );
    assert_eq!(check, format!("{ROWS}|{}|t|t", ROWS * (ROWS + 1) / 2));
}
