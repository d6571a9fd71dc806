#!/usr/bin/env python3
"""Turns bench/run's raw results (JSON lines) into the one Markdown table it prints.

Each measurement is one line: {"round", "workload", "config", "ok", "tps", "lat_ms", "txns",
"seconds", "cpu_s", "hwm_kb", "note", ...}. Lines with "type" carry the run's metadata
("meta"), configurations that were skipped ("skip") and free-form notes ("note").

Per (workload, config) the table shows the median over rounds; "x direct" is the median of the
per-round ratios to the direct connection measured in the same round (throughput: TPS ratio for
pgbench, direct seconds / seconds for the row reads), so slow drift of the machine cancels out.
"""

import json
import statistics
import sys

LABELS = {
    "idle": "idle conns",
    "rows-psql": "2M rows psql",
    "rows-copy": "2M rows COPY",
    "rows-masked": "2M rows masked col",
    "verify": "postern verify, 1 core",
    "verify-all": "postern verify all, 1 core",
}
CONFIG_ORDER = ["direct", "pgbouncer", "haproxy"]


def label(workload, meta):
    if workload in LABELS:
        text = LABELS[workload]
        rows = meta.get("rows")
        if rows and workload.startswith("rows"):
            text = text.replace("2M", human_count(rows))
        if workload == "idle":
            text = f"idle {meta.get('idle_conns', '?')} conns"
        return text
    # S-<mode>-c<N>[-tls]
    parts = workload.split("-")
    if parts[0] == "S" and len(parts) >= 3:
        text = f"pgbench -S {parts[1]} {parts[2]}"
        if "tls" in parts[3:]:
            text += " TLS"
        return text
    return workload


def human_count(n):
    n = int(n)
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def fmt(value, digits):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(path):
    meta, skips, notes, results = {}, [], [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            kind = rec.get("type")
            if kind == "meta":
                meta.update(rec)
            elif kind == "skip":
                skips.append(rec)
            elif kind == "note":
                notes.append(rec.get("note", ""))
            else:
                results.append(rec)

    workloads, configs = [], []
    for r in results:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])
        if r["config"] not in configs:
            configs.append(r["config"])
    seen = list(configs)
    configs.sort(key=lambda c: (CONFIG_ORDER.index(c) if c in CONFIG_ORDER else len(CONFIG_ORDER), seen.index(c)))

    by_key = {}
    for r in results:
        by_key.setdefault((r["workload"], r["config"]), []).append(r)
    direct = {(r["workload"], r["round"]): r for r in results if r["config"] == "direct" and r.get("ok")}

    header = ["workload", "config", "TPS", "lat ms", "+lat µs", "seconds", "x direct", "spread",
              "peak RSS MiB", "CPU s", "CPU µs/tx", "note"]
    rows = []
    for w in workloads:
        for c in configs:
            recs = by_key.get((w, c))
            if not recs:
                continue
            ok = [r for r in recs if r.get("ok")]
            failed = [r for r in recs if not r.get("ok")]
            note_parts = []
            if failed:
                first = next((r.get("note") for r in failed if r.get("note")), "failed")
                note_parts.append(f"{len(failed)}/{len(recs)} failed: {first}")
            for n in dict.fromkeys(r.get("note") for r in ok if r.get("note")):
                note_parts.append(n)
            if w == "idle":
                kb = median([r.get("kb_per_conn") for r in ok])
                before = median([r.get("rss_before_kb") for r in ok])
                after = median([r.get("rss_after_kb") for r in ok])
                opened = median([r.get("opened") for r in ok])
                if kb is not None:
                    note_parts.insert(0, f"**{kb:,.1f} KB/conn** ({int(opened)} conns, RSS "
                                         f"{before / 1024:.1f} → {after / 1024:.1f} MiB)")
                rows.append([label(w, meta), c, "-", "-", "-", "-", "-", "-",
                             fmt(after / 1024 if after else None, 1), "-", "-", "; ".join(note_parts)])
                continue
            if w in ("verify", "verify-all"):
                r = ok[0] if ok else {}
                if r.get("mb_per_s") is not None:
                    note_parts.insert(0, f"**{r['mb_per_s']:,.0f} MB/s** of recording "
                                         f"({r['bytes'] / 1e6:,.0f} MB, {r.get('events') or '?'} "
                                         f"events; CPU s per pass)")
                rows.append([label(w, meta), c, "-", "-", "-", fmt(r.get("seconds"), 2), "-", "-",
                             "-", fmt(r.get("cpu_s"), 2), "-", "; ".join(note_parts)])
                continue
            tps = median([r.get("tps") for r in ok])
            lat = median([r.get("lat_ms") for r in ok])
            secs = median([r.get("seconds") for r in ok]) if w.startswith("rows") else None
            ratios, added = [], []
            for r in ok:
                d = direct.get((w, r["round"]))
                if not d:
                    continue
                if w.startswith("rows"):
                    if r.get("seconds") and d.get("seconds"):
                        ratios.append(d["seconds"] / r["seconds"])
                else:
                    if r.get("tps") and d.get("tps"):
                        ratios.append(r["tps"] / d["tps"])
                    if r.get("lat_ms") is not None and d.get("lat_ms") is not None:
                        added.append((r["lat_ms"] - d["lat_ms"]) * 1000)
            ratio = median(ratios)
            add = median(added) if c != "direct" else None
            main_values = [r.get("seconds") if w.startswith("rows") else r.get("tps") for r in ok]
            main_values = [v for v in main_values if v]
            spread = None
            if len(main_values) > 1:
                spread = (max(main_values) - min(main_values)) / 2 / statistics.median(main_values) * 100
            hwm = [r.get("hwm_kb") for r in ok if r.get("hwm_kb")]
            cpu = median([r.get("cpu_s") for r in ok])
            per_tx = median([r["cpu_s"] * 1e6 / r["txns"] for r in ok
                             if r.get("cpu_s") is not None and r.get("txns")])
            rows.append([
                label(w, meta), c,
                fmt(tps, 0), fmt(lat, 3), fmt(add, 0), fmt(secs, 2),
                fmt(ratio, 2) if c != "direct" else ("1.00" if ok else "-"),
                f"±{spread:.0f}%" if spread is not None else "-",
                fmt(max(hwm) / 1024 if hwm else None, 1),
                fmt(cpu, 2), fmt(per_tx, 1),
                "; ".join(note_parts),
            ])

    out = []
    title = meta.get("title", "Postern benchmark")
    out.append(f"# {title}")
    out.append("")
    for key in ("started", "git", "machine", "cpu", "kernel", "versions", "params"):
        if meta.get(key):
            out.append(f"- **{key}**: {meta[key]}")
    out.append("")
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" if i < 2 or i == len(header) - 1 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        out.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    out.append("")
    out.append("TPS, lat ms (pgbench's latency average), seconds (wall time of the client) and CPU s "
               "are medians over rounds; x direct is the median of per-round ratios to `direct` in "
               "the same round (higher is better; rows: direct seconds / seconds); +lat µs is the "
               "latency added over direct; spread is half the min-max range of TPS or seconds; "
               "peak RSS (VmHWM, reset before each run) and CPU (utime+stime during the run) are "
               "the proxy process's: pgbouncer, haproxy or the gateway (none for direct). TLS rows "
               "compare against direct-with-TLS.")
    if skips or notes:
        out.append("")
        out.append("Notes:")
        for s in skips:
            out.append(f"- skipped {s.get('config')}: {s.get('note')}")
        for n in notes:
            out.append(f"- {n}")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
