#!/usr/bin/env python3
"""Compare benchmark results against a stored baseline, by ratio of medians (stdlib only).

    python3 bench/compare.py bench/baseline.json bench/results/*.json [--threshold 0.15]
    python3 bench/compare.py --write-baseline bench/baseline.json bench/results/*.json

Inputs, recognised by content:
  * Google Benchmark JSON (--benchmark_format=json): the `median` aggregates are used, or the
    median of the plain iterations when the run had no repetitions;
  * spop-loadgen JSON lines (--json): grouped by `label`, the median of each metric;
  * a baseline written by --write-baseline (the first file given, in compare mode).

Metrics and what counts as a regression (ratio = current / baseline):
  codec    items_per_second       higher is better   gate
           bytes_per_idle_conn    lower is better    gate (BM_IdleConnectionBytes, which
                                                     reports memory only, not speed)
  loadgen  frames_per_s           higher is better   gate
           agent_cpu_us_per_frame lower is better    gate (closed loop; open loop: shown only)
           p50_us, p99_us         lower is better    shown; gated with --gate-latency
  derived  uring_vs_epoll         frames/s of c4_d16 over c4_d16_epoll, shown only

A loadgen run that reported errors (ok=false) fails the comparison whatever its speed.
Exit status: 0 no regression above the threshold, 1 regression or failed run, 2 usage error.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

HIGHER, LOWER = "higher", "lower"

CODEC_METRICS = [("items_per_second", HIGHER, True), ("bytes_per_idle_conn", LOWER, True)]
LOADGEN_METRICS = [
    ("frames_per_s", HIGHER, True),
    ("agent_cpu_us_per_frame", LOWER, True),
    ("p50_us", LOWER, False),
    ("p99_us", LOWER, False),
    # Open loop: the agent mostly sleeps between NOTIFYs, so its CPU per frame measures wakeups
    # (large and erratic on a VM), not per-frame work: shown, never gated.
    ("agent_cpu_us_per_frame_open", LOWER, False),
]
DIRECTION = {m: d for m, d, _ in CODEC_METRICS + LOADGEN_METRICS}
DIRECTION["uring_vs_epoll"] = HIGHER
GATED = {m for m, _, g in CODEC_METRICS + LOADGEN_METRICS if g}


def load_any(path):
    """Returns ('baseline'|'gbench'|'loadgen', data)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    stripped = text.strip()
    if not stripped:
        return "loadgen", []
    try:
        doc = json.loads(stripped)
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and "spop_bench_baseline" in doc:
        return "baseline", doc
    if isinstance(doc, dict) and "benchmarks" in doc:
        return "gbench", doc
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"compare.py: {path}:{n}: not JSON: {e}")
        if isinstance(row, dict) and row.get("tool") == "spop-loadgen":
            rows.append(row)
    return "loadgen", rows


def from_gbench(doc):
    """{'codec/<name>': {metric: median}} from a Google Benchmark report."""
    per_run = {}
    medians = {}
    for b in doc.get("benchmarks", []):
        if b.get("error_occurred"):
            medians.setdefault("codec/" + b.get("run_name", b["name"]), {})["error"] = 1
            continue
        run = b.get("run_name", b["name"])
        metrics = {m: b[m] for m, _, _ in CODEC_METRICS if isinstance(b.get(m), (int, float))}
        if "bytes_per_idle_conn" in metrics:
            # A memory report: its loop only reads a counter, its speed means nothing.
            metrics.pop("items_per_second", None)
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians["codec/" + run] = metrics
        else:
            per_run.setdefault("codec/" + run, []).append(metrics)
    for key, runs in per_run.items():
        if key in medians:
            continue
        names = {m for r in runs for m in r}
        medians[key] = {m: statistics.median(r[m] for r in runs if m in r) for m in names}
    return medians


def from_loadgen(rows):
    """{'loadgen/<label>': {metric: median, 'failed': n}} from spop-loadgen JSON lines."""
    groups = {}
    for r in rows:
        label = r.get("label") or "c{connections}_d{depth}_{ids}_{mix}_{profile}".format(**r)
        groups.setdefault("loadgen/" + label, []).append(r)
    out = {}
    for key, runs in groups.items():
        entry = {}
        for m, _, _ in LOADGEN_METRICS:
            vals = [r[m] for r in runs if isinstance(r.get(m), (int, float))]
            if vals:
                entry[m] = statistics.median(vals)
        if runs[0].get("mode") == "open" and "agent_cpu_us_per_frame" in entry:
            entry["agent_cpu_us_per_frame_open"] = entry.pop("agent_cpu_us_per_frame")
        entry["runs"] = len(runs)
        failed = [r for r in runs if not r.get("ok", False)]
        if failed:
            entry["failed"] = len(failed)
            entry["first_error"] = failed[0].get("first_error", "")
        out[key] = entry
    a, b = out.get("loadgen/c4_d16"), out.get("loadgen/c4_d16_epoll")
    if a and b and a.get("frames_per_s") and b.get("frames_per_s"):
        out["derived/uring_vs_epoll"] = {"uring_vs_epoll": a["frames_per_s"] / b["frames_per_s"]}
    return out


def collect(paths):
    entries = {}
    for p in paths:
        kind, data = load_any(p)
        if kind == "gbench":
            entries.update(from_gbench(data))
        elif kind == "loadgen":
            entries.update(from_loadgen(data))
        else:
            entries.update(data.get("entries", {}))
    return entries


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def compare(base, cur, threshold, gate_latency):
    rows, bad = [], 0
    for key in sorted(set(base) | set(cur)):
        b, c = base.get(key, {}), cur.get(key, {})
        if c.get("failed"):
            rows.append((key, "run", None, None, None,
                         f"FAIL ({c['failed']} run(s): {c.get('first_error', '')})"))
            bad += 1
        if c.get("error"):
            rows.append((key, "run", None, None, None, "FAIL (benchmark skipped with an error)"))
            bad += 1
        metrics = [m for m in DIRECTION if m in b or m in c]
        for m in metrics:
            bv, cv = b.get(m), c.get(m)
            if cv is None:
                rows.append((key, m, bv, None, None, "missing"))
                continue
            if bv is None:
                rows.append((key, m, None, cv, None, "new"))
                continue
            ratio = cv / bv if bv else None
            gated = m in GATED or (gate_latency and m in ("p50_us", "p99_us"))
            if ratio is None:
                verdict = "info"
            else:
                worse = ratio < 1 - threshold if DIRECTION[m] == HIGHER else ratio > 1 + threshold
                better = ratio > 1 + threshold if DIRECTION[m] == HIGHER else ratio < 1 - threshold
                if worse and gated:
                    verdict = "REGRESSION"
                    bad += 1
                elif worse:
                    verdict = "worse (not gated)"
                elif better:
                    verdict = "better"
                else:
                    verdict = "ok" if gated else "info"
            rows.append((key, m, bv, cv, ratio, verdict))
    return rows, bad


def print_table(rows):
    head = ("name", "metric", "baseline", "current", "ratio", "verdict")
    table = [head] + [(k, m, fmt(b), fmt(c), "-" if r is None else f"{r:.3f}", v)
                      for k, m, b, c, r, v in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(str(row[i]).ljust(widths[i]) for i in range(5)) + "  " + row[5])


def machine_meta():
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    meta["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, timeout=5, check=False).stdout.strip()
        # Measured code that differs from the commit (include/, agent/, bench/ sources).
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "include", "agent", "bench"],
                               capture_output=True, text=True, timeout=5, check=False).stdout
        if any(not line.endswith(".json") for line in dirty.splitlines()):
            meta["commit"] += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="baseline.json then result files (compare mode), "
                    "or only result files with --write-baseline")
    ap.add_argument("--threshold", type=float, default=0.15,
                    help="relative change counted as a regression (default 0.15)")
    ap.add_argument("--gate-latency", action="store_true", help="also fail on p50/p99 regressions")
    ap.add_argument("--write-baseline", metavar="PATH", help="write the results as a new baseline")
    ap.add_argument("--note", default="", help="free text stored in the baseline's meta")
    args = ap.parse_args()

    if args.write_baseline:
        cur = collect(args.files)
        if not cur:
            print("compare.py: no results found", file=sys.stderr)
            return 2
        failed = [k for k, v in cur.items() if v.get("failed") or v.get("error")]
        if failed:
            print(f"compare.py: refusing to write a baseline from failed runs: {failed}",
                  file=sys.stderr)
            return 1
        meta = machine_meta()
        if args.note:
            meta["note"] = args.note
        doc = {"spop_bench_baseline": 1, "meta": meta,
               "entries": {k: {m: float(f"{v:.4g}") for m, v in e.items() if m in DIRECTION}
                           for k, e in sorted(cur.items())}}
        with open(args.write_baseline, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=False)
            f.write("\n")
        print(f"compare.py: wrote {len(cur)} entries to {args.write_baseline}")
        return 0

    if len(args.files) < 2:
        ap.error("need the baseline and at least one result file")
    kind, base_doc = load_any(args.files[0])
    if kind != "baseline":
        base = collect(args.files[:1])
        meta = {}
    else:
        base = base_doc.get("entries", {})
        meta = base_doc.get("meta", {})
    cur = collect(args.files[1:])
    if meta:
        print("baseline: " + ", ".join(f"{k}={v}" for k, v in meta.items()))
    rows, bad = compare(base, cur, args.threshold, args.gate_latency)
    print_table(rows)
    print(f"\n{bad} regression(s) or failure(s) beyond {args.threshold:.0%}" if bad else
          f"\nno regression beyond {args.threshold:.0%}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
