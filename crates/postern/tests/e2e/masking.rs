//! Masking through real clients, with the example policy of docs/policy.md: an agent's results
//! never carry a raw value of a masked column (lineage masking) or a detected entity (content
//! detectors), whatever the query does to reach it — a corpus of exfiltration attempts runs
//! through psql (simple protocol, text) and psycopg (extended protocol, binary and text) — the
//! recording holds only masked values, and ordinary queries are neither refused nor changed.

use crate::policy::fixture;
use crate::util::*;
use std::path::PathBuf;
use std::process::Command;

/// Every raw value of the masked columns, in the forms an attacker might get them out in.
fn secrets(fx: &Fixture) -> Vec<String> {
    let rows = fx
        .direct(SHOP)
        .query("SELECT email, coalesce(ssn, ''), coalesce(card, ''), phone FROM customers");
    let mut out = Vec::new();
    for line in rows.lines() {
        let cols: Vec<&str> = line.split('|').collect();
        for value in cols.iter().filter(|v| v.len() >= 6) {
            out.push(value.to_string());
            out.push(value.to_uppercase());
            out.push(value.chars().rev().collect());
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            if digits.len() >= 9 {
                out.push(digits);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Attempts to read masked data (customers.email, customers.ssn, customers.card) or detected
/// entities (the phone column is not masked by lineage, only by the phone detector).
const EXFILTRATION: &[&str] = &[
    // direct and renamed
    "SELECT email, ssn, card FROM customers",
    "SELECT * FROM customers",
    "SELECT c.* FROM customers c",
    "TABLE customers",
    "SELECT email AS e FROM customers",
    "SELECT \"email\" FROM \"customers\"",
    "SELECT public.customers.email FROM public.customers",
    "sElEcT EmAiL fRoM CuStOmErS",
    "SELECT /* hi */ email -- x\n FROM customers",
    "SELECT phone FROM customers",
    // expressions and casts
    "SELECT email || '' FROM customers",
    "SELECT upper(email) FROM customers",
    "SELECT lower(upper(email)) FROM customers",
    "SELECT reverse(reverse(email)) FROM customers",
    "SELECT email::varchar FROM customers",
    "SELECT card::bytea FROM customers",
    "SELECT CAST(ssn AS char(20)) FROM customers",
    "SELECT concat('x', email) FROM customers",
    "SELECT format('%s', ssn) FROM customers",
    "SELECT substr(card, 1, 100) FROM customers",
    "SELECT replace(card, ' ', '') FROM customers",
    "SELECT translate(ssn, '-', '') FROM customers",
    "SELECT regexp_replace(email, '@', ' at ') FROM customers",
    "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers",
    "SELECT encode(convert_to(ssn, 'UTF8'), 'hex') FROM customers",
    "SELECT md5(email), email FROM customers",
    "SELECT CASE WHEN id > 0 THEN email END FROM customers",
    "SELECT coalesce(NULL, ssn) FROM customers",
    "SELECT nullif(card, 'x') FROM customers",
    "SELECT greatest(email, '') FROM customers",
    "SELECT (email) FROM customers",
    "SELECT ARRAY[email] FROM customers",
    "SELECT ROW(email, ssn) FROM customers",
    // aggregates and windows
    "SELECT string_agg(email, ',') FROM customers",
    "SELECT array_agg(ssn) FROM customers",
    "SELECT json_agg(card) FROM customers",
    "SELECT max(email), min(ssn) FROM customers",
    "SELECT first_value(email) OVER (ORDER BY id) FROM customers",
    "SELECT lag(ssn) OVER () FROM customers",
    // whole-row references
    "SELECT row_to_json(c) FROM customers c",
    "SELECT to_jsonb(c.*) FROM customers c",
    "SELECT c FROM customers c",
    "SELECT (c).email FROM customers c",
    "SELECT c::text FROM customers c",
    "SELECT json_agg(c) FROM customers c",
    "SELECT hstore_placeholder FROM (SELECT c::text AS hstore_placeholder FROM customers c) s",
    // subqueries, CTEs, set operations, joins
    "SELECT e FROM (SELECT email AS e FROM customers) s",
    "SELECT s.x FROM (SELECT ssn FROM customers) AS s(x)",
    "SELECT * FROM (SELECT * FROM customers) s",
    "WITH w AS (SELECT card FROM customers) SELECT * FROM w",
    "WITH w(a) AS (SELECT email FROM customers) SELECT a FROM w",
    "WITH RECURSIVE r(e, n) AS (SELECT email, 1 FROM customers UNION ALL SELECT e, n + 1 FROM r WHERE n < 2) SELECT e FROM r",
    "SELECT (SELECT email FROM customers LIMIT 1)",
    "SELECT (SELECT email FROM orders LIMIT 1) FROM customers",
    "SELECT id FROM orders UNION ALL SELECT ssn::text FROM customers",
    "SELECT 'x' UNION SELECT email FROM customers",
    "SELECT email FROM customers INTERSECT SELECT email FROM customers",
    "SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT * FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT * FROM customers NATURAL JOIN (SELECT id FROM orders) o",
    "SELECT x.* FROM customers c, LATERAL (SELECT c.email) x",
    "SELECT * FROM customers c, LATERAL (SELECT c.ssn AS s) x",
    "SELECT v FROM customers c, unnest(ARRAY[c.card]) v",
    "SELECT * FROM jsonb_each_text((SELECT to_jsonb(c) FROM customers c LIMIT 1))",
    "SELECT * FROM json_to_record((SELECT row_to_json(c) FROM customers c LIMIT 1)) AS t(email text)",
    "VALUES ((SELECT email FROM customers LIMIT 1))",
    // catalog statistics
    "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE tablename = 'customers'",
    "SELECT * FROM pg_stats WHERE tablename = 'customers'",
    // errors, notices, notifications
    "SELECT email::int FROM customers",
    "SELECT (card)::numeric FROM customers",
    "SELECT ssn::date FROM customers",
    "SELECT 1/(length(email) - length(email)) FROM customers",
    "SELECT pg_notify('leak', email) FROM customers",
    "SELECT set_config('my.leak', email, false) FROM customers",
    "SELECT id FROM customers WHERE email::int = 1",
    "SELECT id FROM customers WHERE card::bigint > 0",
    // prepared statements, cursors, COPY
    "PREPARE p1 AS SELECT email FROM customers; EXECUTE p1",
    "BEGIN; DECLARE c1 CURSOR FOR SELECT ssn, card FROM customers; FETCH ALL FROM c1; COMMIT",
    "COPY customers TO STDOUT",
    "COPY (SELECT email FROM customers) TO STDOUT WITH (FORMAT csv)",
    "COPY customers (card) TO STDOUT WITH (FORMAT csv, HEADER)",
    "COPY customers TO STDOUT WITH (FORMAT binary)",
    // writes that would move masked data somewhere unmasked
    "CREATE TEMP TABLE leak AS SELECT * FROM customers",
    "SELECT email INTO TEMP leak2 FROM customers",
    "CREATE TEMP VIEW leakv AS SELECT email FROM customers",
    "DO $$ BEGIN RAISE NOTICE '%', (SELECT email FROM customers LIMIT 1); END $$",
    "SELECT query_to_xml('select email from customers', true, true, '')",
];

#[test]
fn exfiltration_corpus_returns_no_raw_masked_value() {
    assert!(EXFILTRATION.len() >= 60, "{} attempts", EXFILTRATION.len());
    let (fx, agent) = fixture();
    let secrets = secrets(&fx);
    assert!(secrets.iter().any(|s| s == "customer7@example.com"));
    let mut transcript = String::new();
    for sql in EXFILTRATION {
        let out = agent.psql(&["-A", "-c", sql], None);
        let seen = format!("{}{}", stdout(&out), stderr(&out));
        if let Some(s) = secrets.iter().find(|s| seen.contains(s.as_str())) {
            panic!("{sql:?} returned the raw value {s:?} through psql:\n{seen}");
        }
        transcript.push_str(&seen);
    }
    assert!(
        transcript.contains("[masked]"),
        "masking was never applied:\n{transcript}"
    );
    // psycopg: extended protocol, binary and text results.
    if let Some(seen) = psycopg_run(&agent, EXFILTRATION) {
        if let Some(s) = secrets.iter().find(|s| seen.contains(s.as_str())) {
            panic!("a statement returned the raw value {s:?} through psycopg:\n{seen}");
        }
        assert!(seen.contains("DONE"), "{seen}");
    }
    // The recording holds only what the client received.
    let recordings = fx.gw.scratch().join("data/recordings");
    let mut files = Vec::new();
    collect_files(&recordings, &mut files);
    assert!(
        !files.is_empty(),
        "no recording under {}",
        recordings.display()
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if let Some(s) = secrets.iter().find(|s| text.contains(s.as_str())) {
            panic!("the recording {} holds the raw value {s:?}", file.display());
        }
    }
    // Nothing was written.
    assert_eq!(fx.direct(SHOP).query("SELECT count(*) FROM orders"), "200");
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Runs `statements` through psycopg (tests/py/masking_corpus.py); `None` when psycopg is
/// not installed outside CI.
fn psycopg_run(conn: &Conn, statements: &[&str]) -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let available = Command::new(&python)
        .args(["-c", "import psycopg"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var_os("CI").is_none(),
            "psycopg must be installed under CI"
        );
        eprintln!("SKIPPED the psycopg half: psycopg cannot be imported");
        return None;
    }
    let corpus = tempfile::NamedTempFile::new().unwrap();
    let lines: Vec<String> = statements.iter().map(|s| s.replace('\n', " ")).collect();
    std::fs::write(corpus.path(), lines.join("\n")).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/masking_corpus.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(conn.conninfo())
        .arg(corpus.path())
        .output()
        .unwrap();
    Some(format!("{}{}", stdout(&out), stderr(&out)))
}

#[test]
fn masked_values_are_marked_and_clean_columns_untouched() {
    let (fx, agent) = fixture();
    assert_eq!(
        agent.query("SELECT id, name, email, ssn, card FROM customers WHERE id = 1"),
        "1|Zoë Ångström|[masked]|[masked]|[masked]"
    );
    // The phone column is not masked by lineage; the phone detector finds its numbers.
    let phone = agent.query("SELECT phone FROM customers WHERE id = 2");
    assert!(!phone.contains("555"), "{phone}");
    // NULLs stay NULL; derived values (even a predicate on a masked column) are redacted
    // whatever their type.
    assert_eq!(
        agent.query("SELECT card, card IS NULL, length(email) FROM customers WHERE id = 3"),
        "|[masked]|[masked]"
    );
    let direct = fx.direct(SHOP);
    for sql in ORDINARY {
        assert_eq!(agent.query(sql), direct.query(sql), "{sql}");
    }
}

/// Reads that touch no masked column and no detectable entity: byte-for-byte the same
/// through the gateway as directly (0 false positives).
const ORDINARY: &[&str] = &[
    "SELECT id, name, created_at FROM customers ORDER BY id",
    "SELECT count(*), count(DISTINCT name) FROM customers",
    "SELECT * FROM orders ORDER BY id LIMIT 50",
    "SELECT * FROM products ORDER BY id",
    "SELECT * FROM customer_totals ORDER BY customer_id",
    "SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.id LIMIT 20",
    "SELECT status, sum(total) FROM orders GROUP BY status ORDER BY status",
    "SELECT name FROM customers WHERE email LIKE 'customer1%' ORDER BY id",
    "SELECT now() > '2020-01-01'::timestamptz, '2026-11-27'::date, inet '192.168.1.20', '1.2.3'",
    "SELECT attrs, tags FROM products ORDER BY id LIMIT 5",
];

#[test]
fn psql_describe_commands_are_not_mangled() {
    let (fx, agent) = fixture();
    let direct = fx.direct(SHOP);
    for meta in [
        "\\d customers",
        "\\dt",
        "\\dv",
        "\\df",
        "\\di",
        "\\l",
        "\\dn",
        "\\d+ orders",
    ] {
        let via = agent.psql(&["-c", meta], None);
        let want = direct.psql(&["-c", meta], None);
        assert_success(&via, meta);
        assert_eq!(stdout(&via), stdout(&want), "{meta}");
    }
}

#[test]
fn views_and_inheritance_children_of_masked_tables_are_masked() {
    let (fx, agent) = fixture();
    let direct = fx.direct(SHOP);
    direct.query(
        "CREATE VIEW customer_contacts AS SELECT id, email AS contact FROM customers;
         CREATE VIEW contact_digest AS SELECT id, upper(contact) AS shout FROM customer_contacts;
         CREATE VIEW customer_names AS SELECT id, name FROM customers;
         CREATE TABLE vip_customers () INHERITS (customers);
         INSERT INTO vip_customers SELECT id + 1000, name, 'vip' || email, ssn, phone, card, created_at
           FROM customers WHERE id <= 2;",
    );
    let secrets = secrets(&fx);
    for sql in [
        "SELECT * FROM customer_contacts ORDER BY id LIMIT 3",
        "SELECT contact FROM customer_contacts ORDER BY id LIMIT 3",
        "SELECT shout FROM contact_digest ORDER BY id LIMIT 3",
        "SELECT email FROM vip_customers",
        "SELECT * FROM vip_customers",
        "COPY vip_customers TO STDOUT",
        "SELECT email FROM customers WHERE id > 1000",
    ] {
        let out = agent.psql(&["-A", "-t", "-c", sql], None);
        let seen = format!("{}{}", stdout(&out), stderr(&out));
        assert_success(&out, sql);
        assert!(seen.contains("[masked]"), "{sql}: {seen}");
        assert!(!seen.contains("vipcustomer1@"), "{sql}: {seen}");
        if let Some(s) = secrets.iter().find(|s| seen.contains(s.as_str())) {
            panic!("{sql:?} returned the raw value {s:?}:\n{seen}");
        }
    }
    // A view that does not read a masked column is not masked.
    assert_eq!(
        agent.query("SELECT id, name FROM customer_names WHERE id = 4"),
        "4|Customer 4"
    );
}
