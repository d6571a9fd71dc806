"""Runs every statement of a corpus file (one per line) through psycopg 3 in the extended
protocol, with binary and with text results, and prints everything the client received
(rows, errors, notices, notifications), for the Rust test to search for raw masked values."""

import sys

import psycopg

conninfo, corpus = sys.argv[1], sys.argv[2]
statements = [line for line in open(corpus, encoding="utf-8").read().split("\n") if line.strip()]

with psycopg.connect(conninfo, autocommit=True) as conn:
    conn.add_notice_handler(lambda d: print("NOTICE", d.message_primary, d.message_detail))
    conn.add_notify_handler(lambda n: print("NOTIFY", n.channel, n.payload))
    for binary in (True, False):
        for sql in statements:
            try:
                with conn.cursor(binary=binary) as cur:
                    if sql.lstrip().upper().startswith("COPY"):
                        with cur.copy(sql) as copy:
                            for data in copy:
                                print("COPY", bytes(data))
                        continue
                    cur.execute(sql, prepare=True)
                    if cur.description:
                        for row in cur.fetchall():
                            print("ROW", repr(row))
            except psycopg.Error as e:
                diag = e.diag
                print("ERROR", e, diag.message_detail, diag.message_hint, diag.context)
print("DONE")
