#!/usr/bin/env python3
"""Times `postern verify` on one core: the largest recording under a recordings directory, or
(--all) the whole directory, every recording and manifest log in it.

bench/run calls it after the workloads: the largest recording is a 2M-row read (large events);
the whole directory is mostly pgbench sessions (one small event per message, the slowest kind
to verify per byte). It pins the verifier to CPU 0 (taskset), runs it --runs times and prints
one JSON line: {"bytes", "events", "cpu_s", "seconds", "mb_per_s", "error"} with the median CPU
time (user + system, from the children's rusage) and the throughput it gives (MB = 10^6 bytes
of chunk files). A recording that does not verify is an error, not a figure.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import time


def size_of(path):
    return sum(
        os.path.getsize(os.path.join(path, f))
        for f in os.listdir(path)
        if f.startswith("chunk-")
    )


def recordings(root):
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not name.startswith("_"):
            yield path


def largest_recording(root):
    best = None
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if not os.path.isdir(path) or name.startswith("_"):
            continue
        size = size_of(path)
        if best is None or size > best[1]:
            best = (path, size)
    return best


def run_once(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, cpu, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--postern", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--recordings", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="verify the whole directory")
    args = ap.parse_args()
    if args.all:
        path = args.recordings
        size = sum(size_of(p) for p in recordings(path))
    else:
        found = largest_recording(args.recordings)
        if found is None:
            print(json.dumps({"error": f"no recording under {args.recordings}"}))
            return
        path, size = found
    cmd = [args.postern, "verify", "--key", args.key, path]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    cpus, walls, events = [], [], None
    for _ in range(args.runs):
        proc, cpu, wall = run_once(cmd)
        if proc.returncode != 0 or not proc.stdout.startswith("intact"):
            detail = (proc.stdout + proc.stderr).strip().splitlines()[:2]
            print(json.dumps({"error": f"verify failed: {' '.join(detail)[:300]}"}))
            return
        m = re.search(r"(\d+) events", proc.stdout)
        events = int(m.group(1)) if m else None
        cpus.append(cpu)
        walls.append(wall)
    cpu = statistics.median(cpus)
    print(json.dumps({
        "bytes": size,
        "events": events,
        "cpu_s": round(cpu, 3),
        "seconds": round(statistics.median(walls), 3),
        "mb_per_s": round(size / 1e6 / cpu, 1) if cpu > 0 else None,
        "error": None,
    }))


if __name__ == "__main__":
    main()
