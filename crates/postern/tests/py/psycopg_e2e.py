"""psycopg 3 through the Postern gateway, compared with a direct connection.

Called by the Rust test `psycopg::psycopg_features_match_direct` with two libpq conninfo
strings in the environment: POSTERN_GW_DSN (through the gateway) and POSTERN_DIRECT_DSN
(straight to the same server). Every check runs the same code on both connections and
compares the results; some checks also assert what the result must be. Prints one line per
check and exits 1 if any failed.
"""

import os
import sys
import threading
import traceback

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

GW = os.environ["POSTERN_GW_DSN"]
DIRECT = os.environ["POSTERN_DIRECT_DSN"]

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def norm(value):
    """A comparable form of a fetched value (repr keeps types and survives NaN != NaN)."""
    return repr(value)


def rows(cur):
    return [tuple(norm(v) for v in row) for row in cur.fetchall()]


@check
def binary_results(dsn):
    """Every column of the types table, fetched in binary format."""
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor(binary=True)
        cur.execute("SELECT * FROM e2e_types ORDER BY id")
        formats = {cur.pgresult.fformat(i) for i in range(cur.pgresult.nfields)}
        assert formats == {1}, f"expected binary columns only, got formats {formats}"
        described = [(d.name, d.type_code) for d in cur.description]
        result = rows(cur)
        assert len(result) == 4, result
        cur.execute("SELECT * FROM customers ORDER BY id")
        return described, result, rows(cur)


@check
def text_results(dsn):
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        cur.execute("SELECT * FROM e2e_types ORDER BY id")
        first = rows(cur)
        cur.execute("SELECT * FROM products ORDER BY id")
        return first, rows(cur)


@check
def server_side_parameters(dsn):
    """psycopg 3 binds parameters on the server (Parse/Bind) by default."""
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        params = (
            41,
            "Zoë 🦀",
            b"\x00\x01\xff",
            [1, 2, None],
            Jsonb({"k": ["v", 1]}),
            None,
            12.5,
        )
        cur.execute(
            "SELECT %s::int + 1, %s::text || '!', %s::bytea, %s::int[], %s::jsonb, %s::text IS NULL, %s::numeric * 2",
            params,
        )
        first = rows(cur)
        out = [first]
        # The same statement with prepare=True becomes a named prepared statement.
        for i in range(8):
            cur.execute("SELECT name, email FROM customers WHERE id = %s", (i + 1,), prepare=True)
            out.append(rows(cur))
        cur.execute("SELECT * FROM e2e_types WHERE id = %(id)s OR t = %(t)s ORDER BY id", {"id": 2, "t": "plain"})
        out.append(rows(cur))
        cur.executemany(
            "SELECT %s::int",
            [(i,) for i in range(20)],
        )
        return out


@check
def pipeline_mode(dsn):
    with psycopg.connect(dsn) as conn:
        results = []
        with conn.pipeline():
            c1 = conn.execute("SELECT count(*) FROM orders")
            c2 = conn.execute("SELECT %s::text || %s::text", ["pipe", "line"])
            conn.execute("CREATE TEMP TABLE piped (x int)")
            cur = conn.cursor()
            cur.executemany("INSERT INTO piped VALUES (%s)", [(i,) for i in range(500)])
            c3 = conn.execute("SELECT sum(x), count(*) FROM piped")
            c4 = conn.cursor(binary=True).execute("SELECT * FROM e2e_types ORDER BY id")
        for c in (c1, c2, c3, c4):
            results.append(rows(c))
        assert results[2] == [(norm(124750), norm(500))], results[2]
        conn.commit()
        # An error in the middle of a pipeline aborts the rest of it, and the connection recovers.
        failed = None
        try:
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT 1/0")
                conn.execute("SELECT 3")
        except errors.DivisionByZero as e:
            failed = type(e).__name__
        assert failed == "DivisionByZero", failed
        conn.rollback()
        results.append(rows(conn.execute("SELECT 'recovered'")))
        return results


@check
def named_server_side_cursor(dsn):
    with psycopg.connect(dsn) as conn:
        with conn.cursor(name="e2e_cursor") as cur:
            cur.itersize = 333
            cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 5000) AS g")
            fetched = [tuple(map(norm, r)) for r in cur]
        assert len(fetched) == 5000, len(fetched)
        return fetched


@check
def copy_binary_and_text(dsn):
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        with cur.copy("COPY (SELECT id, t, by, tstz, ai FROM e2e_types ORDER BY id) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "bytea", "timestamptz", "int4[]"])
            binary = [tuple(map(norm, r)) for r in copy.rows()]
        cur.execute("CREATE TEMP TABLE copied (id int, label text)")
        with cur.copy("COPY copied FROM STDIN") as copy:
            for i in range(10000):
                copy.write_row((i, f"label {i} ü"))
        cur.execute("SELECT count(*), sum(id), count(DISTINCT label) FROM copied")
        loaded = rows(cur)
        assert loaded == [(norm(10000), norm(49995000), norm(10000))], loaded
        return binary, loaded


@check
def errors_keep_the_session_usable(dsn):
    with psycopg.connect(dsn) as conn:
        out = []
        for sql, exc in [
            ("SELECT 1/0", errors.DivisionByZero),
            ("SELECT * FROM nope", errors.UndefinedTable),
            ("SELECT %s::int", errors.InvalidTextRepresentation),
        ]:
            try:
                if "%s" in sql:
                    conn.execute(sql, ["abc"])
                else:
                    conn.execute(sql)
                out.append("no error")
            except exc as e:
                out.append((type(e).__name__, e.sqlstate, e.diag.message_primary))
            conn.rollback()
        out.append(rows(conn.execute("SELECT 'fine'")))
        return out


@check
def notices(dsn):
    with psycopg.connect(dsn) as conn:
        got = []
        conn.add_notice_handler(lambda d: got.append((d.severity_nonlocalized, d.sqlstate, d.message_primary)))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
        assert ("NOTICE", "00000", "hello 42") in got, got
        return got


@check
def listen_notify(dsn):
    """LISTEN through this connection; NOTIFY both from this kind of connection and directly."""
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn, autocommit=True) as same_kind, psycopg.connect(DIRECT, autocommit=True) as direct:
        listener.execute("LISTEN e2e_channel")

        def send():
            same_kind.execute("NOTIFY e2e_channel, 'héllo from a peer'")
            direct.execute("SELECT pg_notify('e2e_channel', 'from a direct connection')")

        # Send from another thread once the listener waits, so delivery to an idle session works.
        timer = threading.Timer(0.5, send)
        timer.start()
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=15, stop_after=2)]
        timer.join()
        expected = [("e2e_channel", "héllo from a peer"), ("e2e_channel", "from a direct connection")]
        assert got == expected, f"notifications: {got}"
        # A notification queued while a query runs arrives with that query's results.
        listener.execute("NOTIFY e2e_channel, 'self'")
        got2 = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
        assert got2 == [("e2e_channel", "self")], got2
        return got, got2


def main():
    failed = 0
    for fn in CHECKS:
        name = fn.__name__
        try:
            direct = fn(DIRECT)
        except Exception:
            print(f"SETUP-FAIL {name}: the check fails on a direct connection\n{traceback.format_exc()}")
            failed += 1
            continue
        try:
            via = fn(GW)
        except Exception:
            print(f"FAIL {name}: through the gateway\n{traceback.format_exc()}")
            failed += 1
            continue
        if via != direct:
            print(f"FAIL {name}: results differ\n  direct:  {str(direct)[:3000]}\n  gateway: {str(via)[:3000]}")
            failed += 1
        else:
            print(f"ok {name}")
    print(f"psycopg {psycopg.__version__}: {len(CHECKS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
