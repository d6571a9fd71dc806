#!/usr/bin/env python3
"""Opens N idle, authenticated PostgreSQL connections and reports what they cost a proxy.

Speaks just enough of the wire protocol (StartupMessage, cleartext/trust authentication, wait
for ReadyForQuery) over plain sockets, so it needs nothing beyond the standard library. The
proxy's VmRSS is read from /proc/PID/status before and after; the connections are then closed.

Usage: idle_conns.py --port P --user U [--password TOKEN] --db D --count N --pid PID
Prints one JSON object: {"count", "opened", "rss_before_kb", "rss_after_kb", "kb_per_conn",
"seconds", "error"}.
"""

import argparse
import json
import socket
import struct
import sys
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise RuntimeError("connection closed during startup")
        out += chunk
    return bytes(out)


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return f"{fields.get('C', '?')}: {fields.get('M', '?')}"


def connect(host, port, user, password, db, timeout):
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
        body = struct.pack("!i", 3 << 16) + params
        sock.sendall(struct.pack("!i", len(body) + 4) + body)
        while True:
            tag, length = struct.unpack("!ci", recv_exact(sock, 5))
            if length < 4 or length > 1 << 20:
                raise RuntimeError(f"bad message length {length}")
            body = recv_exact(sock, length - 4)
            if tag == b"R":
                code = struct.unpack("!i", body[:4])[0]
                if code == 3:
                    pw = password.encode() + b"\0"
                    sock.sendall(b"p" + struct.pack("!i", len(pw) + 4) + pw)
                elif code != 0:
                    raise RuntimeError(f"unsupported authentication request {code}")
            elif tag == b"E":
                raise RuntimeError(error_text(body))
            elif tag == b"Z":
                sock.settimeout(None)
                return sock
    except BaseException:
        sock.close()
        raise


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", default="")
    ap.add_argument("--db", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=1.0)
    args = ap.parse_args()

    result = {"count": args.count, "opened": 0, "error": None}
    socks = []
    # One connection first so that one-time costs (pools, caches, the upstream pool's first
    # server connection) are in the baseline, not spread over the N.
    try:
        socks.append(connect(args.host, args.port, args.user, args.password, args.db, args.timeout))
    except Exception as e:  # noqa: BLE001
        result["error"] = f"first connection failed: {e}"
        print(json.dumps(result))
        return 1
    time.sleep(args.settle)
    before = rss_kb(args.pid)
    started = time.monotonic()
    deadline = started + max(60.0, args.count * 0.1)
    try:
        for _ in range(args.count):
            if time.monotonic() > deadline:
                raise RuntimeError("time limit reached")
            socks.append(connect(args.host, args.port, args.user, args.password, args.db, args.timeout))
    except Exception as e:  # noqa: BLE001
        result["error"] = f"after {len(socks) - 1} connections: {e}"
    result["seconds"] = round(time.monotonic() - started, 3)
    time.sleep(args.settle)
    after = rss_kb(args.pid)
    opened = len(socks) - 1
    result.update(
        opened=opened,
        rss_before_kb=before,
        rss_after_kb=after,
        kb_per_conn=round((after - before) / opened, 1) if opened else None,
    )
    for s in socks:
        try:
            s.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        s.close()
    print(json.dumps(result))
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
