#!/usr/bin/env python3
"""Compare benchmark results against a stored baseline, by ratio of medians (stdlib only).

    python3 bench/compare.py bench/baseline.json bench/results/*.json [--threshold 0.15] [--no-gate]
    python3 bench/compare.py --write-baseline bench/baseline.json bench/results/*.json
    python3 bench/compare.py --ab bench/results/ab.jsonl [--cpu-max 1.15] [--fps-min 0.87]
    python3 bench/compare.py --summary bench/results/compare.jsonl

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
With --no-gate the table is information only: a stored baseline holds absolute figures from
one machine, one day and one load, so only failed runs make the exit status non-zero.

--ab: the same-run A/B comparison written by `bench/run --against REV` (JSON lines labelled
A/<engine>/<scenario> and B/<engine>/<scenario>, A and B runs interleaved, plus `bench-run-ab`
meta lines). Per scenario and engine: median [min-max] of each side, the ratio B/A of the
medians, the ratio B/A of the best runs (lowest cost, highest rate), and the range of the
per-pair ratios (each B run over the A run just before it). The gate is on ratios only, never
on absolute figures, and a metric fails only when the ratio of the medians AND the ratio of the
best runs are beyond the limit (a median alone: "median only", not gated):
  agent_cpu_us_per_frame  B/A > --cpu-max (default 1.15)   REGRESSION
  frames_per_s            B/A < --fps-min (default 0.87)   REGRESSION, only on a quiet machine
                          (1-minute load average at the start < half the CPUs; --fps-gate)
  p50_us, p99_us          shown; p99 gated only with --p99-max RATIO
(0.87 is about 1/1.15: the same 15% step in either direction. BENCHMARKS.md shows the A/A
noise these limits were chosen against.)

--summary: median [min-max] per label of a loadgen JSON-lines file, nothing gated.

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


def read_jsonl(path):
    """(spop-loadgen rows, bench-run-ab meta rows) of a JSON-lines file, in file order."""
    rows, metas = [], []
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        print(f"compare.py: {path}: {e.strerror}", file=sys.stderr)
        sys.exit(2)
    with f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"compare.py: {path}:{n}: not JSON: {e}")
            if not isinstance(row, dict):
                continue
            if row.get("tool") == "spop-loadgen":
                rows.append(row)
            elif row.get("tool") == "bench-run-ab":
                metas.append(row)
    return rows, metas


def spread(vals):
    """(median, min, max) of the numbers in vals, or None."""
    vals = [v for v in vals if isinstance(v, (int, float))]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def fmt_spread(sp):
    return "-" if sp is None else f"{fmt(sp[0])} [{fmt(sp[1])}-{fmt(sp[2])}]"


AB_METRICS = [("frames_per_s", HIGHER, "frames/s"),
              ("agent_cpu_us_per_frame", LOWER, "agent us/frame"),
              ("p50_us", LOWER, "p50 us"), ("p99_us", LOWER, "p99 us")]


def ab_groups(rows):
    """{(scenario, engine): {side: [rows]}} in order of first appearance. A side is the first
    part of a label SIDE/ENGINE/SCENARIO: A and B from `bench/run --against`, plus one per
    `--with NAME=CMD` (NAME)."""
    groups = {}
    for r in rows:
        parts = str(r.get("label", "")).split("/", 2)
        if len(parts) != 3 or not parts[0]:
            continue
        side, engine, scenario = parts
        groups.setdefault((scenario, engine), {}).setdefault(side, []).append(r)
    return groups


def side_names(rows):
    """Every side in order of first appearance."""
    seen = []
    for sides in ab_groups(rows).values():
        for side in sides:
            if side not in seen:
                seen.append(side)
    return seen


def busy_machine(metas):
    """(busy, reason) from the meta lines: the 1-minute load average before the run against the
    CPU count, the same criterion as bench/run's warning."""
    meta = {}
    for m in metas:
        meta.update(m)
    try:
        load1 = float(str(meta["load_start"]).split()[0])
        cpus = int(meta["cpus"])
    except (KeyError, ValueError, IndexError, TypeError):
        return True, "load average unknown"
    return load1 >= 0.5 * cpus, f"load average {load1:g} on {cpus} CPUs at the start"


def ab_compare(rows, cpu_max, fps_min, p99_max, ref="A"):
    """Rows (scenario, engine, metric, side, ref spread, side spread, ratio of medians, ratio of
    best runs, pair range, verdict) for every side other than `ref`, against `ref`, and the
    count of regressions and failures. fps_min None: frames/s shown, not gated.

    A metric is worse (or better) only when both the ratio of the medians and the ratio of the
    best runs (lowest for costs, highest for rates) are beyond the step. Other work on the
    machine moves a median often and the best run rarely; a change in the agent's per-frame cost
    moves both. Median alone beyond the step: "median only"."""
    limits = {"frames_per_s": fps_min, "agent_cpu_us_per_frame": cpu_max, "p99_us": p99_max}
    out, bad = [], 0
    for (scenario, engine), sides in ab_groups(rows).items():
        for side, side_rows in sides.items():
            failed = [r for r in side_rows if not r.get("ok", False)]
            if failed:
                out.append((scenario, engine, "run", side, None, None, None, None, None,
                            f"FAIL (side {side}, {len(failed)} run(s): "
                            f"{failed[0].get('first_error', '')})"))
                bad += 1
        for side in sides:
            if side != ref:
                bad += ab_side(out, scenario, engine, side, sides.get(ref, []), sides[side],
                               limits, cpu_max)
    return out, bad


def ab_side(out, scenario, engine, side, ref_rows, side_rows, limits, cpu_max):
    """Appends one side's rows against the reference to `out`; returns its regressions."""
    bad = 0
    for m, direction, _ in AB_METRICS:
        a = spread(r.get(m) for r in ref_rows)
        b = spread(r.get(m) for r in side_rows)
        if a is None or b is None:
            out.append((scenario, engine, m, side, a, b, None, None, None, "missing"))
            continue
        ratio = b[0] / a[0] if a[0] else None
        best_i = 2 if direction == HIGHER else 1
        best = b[best_i] / a[best_i] if a[best_i] else None
        # Each B run against the A run just before it (same minute of the machine's load).
        pairs = spread(rb[m] / ra[m] for ra, rb in zip(ref_rows, side_rows)
                       if isinstance(ra.get(m), (int, float)) and ra[m]
                       and isinstance(rb.get(m), (int, float)))
        limit = limits.get(m)
        # Not gated: worse/better reported against the CPU step (15% by default).
        step = limit if limit is not None else (
            cpu_max if direction == LOWER else 1 / cpu_max)

        def side_of(r):
            if r is None:
                return "ok"
            if direction == HIGHER:
                return "worse" if r < step else "better" if r > 1 / step else "ok"
            return "worse" if r > step else "better" if r < 1 / step else "ok"

        v_med, v_best = side_of(ratio), side_of(best)
        if ratio is None:
            verdict = "info"
        elif v_med == v_best:
            verdict = v_med
        elif v_med != "ok":
            verdict = "median only"
        else:
            verdict = "ok"
        if limit is None:
            verdict = {"worse": "worse (not gated)", "ok": "info",
                       "median only": "info"}.get(verdict, verdict)
        elif verdict == "worse":
            verdict = "REGRESSION"
            bad += 1
        out.append((scenario, engine, m, side, a, b, ratio, best, pairs, verdict))
    return bad


def print_ab(out, metas, markdown, ref="A"):
    meta = {}
    for m in metas:
        meta.update({k: v for k, v in m.items() if k != "tool"})
    if meta:
        desc = f"A = {meta.get('a', '?')}    B = {meta.get('b', '?')}"
        for name, what in (meta.get("with") or {}).items():
            desc += f"    {name} = {what}"
        print(desc)
        print(f"reps {meta.get('reps', '?')} x {meta.get('duration_s', '?')} s, interleaved "
              f"{meta.get('order', 'A B')}; {meta.get('cpus', '?')} CPUs; load average at start "
              f"{meta.get('load_start', '?')}, at end {meta.get('load_end', '?')}")
    print(f"Every side against {ref} (ratios side/{ref}).")

    def r3(r):
        return "-" if r is None else f"{r:.3f}"

    head = ("scenario", "engine", "metric", "side", f"{ref} median [min-max]",
            "side median [min-max]", f"side/{ref}", "best", "pairs", "verdict")
    table = [head] + [(s, e, m, sd, fmt_spread(a), fmt_spread(b), r3(r), r3(bst),
                       "-" if p is None else f"{p[1]:.2f}-{p[2]:.2f}", v)
                      for s, e, m, sd, a, b, r, bst, p, v in out]
    widths = [max(len(str(row[i])) for row in table) for i in range(9)]
    for row in table:
        print("  ".join(str(row[i]).ljust(widths[i]) for i in range(9)) + "  " + row[9])
    if not markdown:
        return
    # One row per scenario, engine and side, ready for BENCHMARKS.md.
    cells = {}
    for s, e, m, sd, a, b, r, bst, _, v in out:
        if m in {x for x, _, _ in AB_METRICS}:
            cells.setdefault((s, e, sd), {})[m] = (a, b, r, bst, v)
    names = [("frames_per_s", "frames/s"), ("agent_cpu_us_per_frame", "agent CPU µs/frame"),
             ("p99_us", "p99 µs")]
    print()
    print("| scenario | engine | side | " + " | ".join(
        f"{n} {ref} | {n} side | side/{ref} (best)" for _, n in names) + " |")
    print("|---|---|---|" + "---|---|---|" * len(names))
    for (s, e, sd), c in cells.items():
        parts = []
        for m, _ in names:
            a, b, r, bst, v = c.get(m, (None, None, None, None, ""))
            flag = " **" + v + "**" if v == "REGRESSION" else ""
            parts += [fmt_spread(a), fmt_spread(b), f"{r3(r)} ({r3(bst)}){flag}"]
        print(f"| {s.replace('_', ' ')} | {e} | {sd} | " + " | ".join(parts) + " |")


def print_summary(rows):
    """Median [min-max] per label (bench/compare_agents)."""
    groups = {}
    for r in rows:
        groups.setdefault(r.get("label", "?"), []).append(r)
    for label in sorted(groups):
        rs = groups[label]
        cols = {m: spread(r.get(m) for r in rs) for m, _, _ in AB_METRICS}
        fails = sum(1 for r in rs if not r.get("ok", False))
        print(f"{label:18s} " + "  ".join(f"{name} {fmt_spread(cols[m])}"
                                          for m, _, name in AB_METRICS)
              + (f"  FAILED {fails}/{len(rs)}" if fails else ""))
    return 1 if any(not r.get("ok", False) for r in rows) else 0


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
    ap.add_argument("--no-gate", action="store_true",
                    help="show the comparison only; exit non-zero only for failed runs")
    ap.add_argument("--ab", action="store_true",
                    help="same-run A/B report of one JSON-lines file from bench/run --against")
    ap.add_argument("--cpu-max", type=float, default=1.15,
                    help="--ab: largest B/A agent CPU per frame that passes (default 1.15)")
    ap.add_argument("--fps-min", type=float, default=0.87,
                    help="--ab: smallest B/A frames/s that passes (default 0.87)")
    ap.add_argument("--fps-gate", choices=("auto", "on", "off"), default="auto",
                    help="--ab: gate frames/s: on, off, or auto = only when the machine was "
                    "quiet (1-minute load average at the start below half the CPUs; default)")
    ap.add_argument("--p99-max", type=float, default=None,
                    help="--ab: also gate p99 latency at this B/A ratio (default: not gated)")
    ap.add_argument("--markdown", action="store_true", help="--ab: also print a Markdown table")
    ap.add_argument("--ref", default="A", metavar="SIDE",
                    help="--ab: the side every other side is compared with (default A; a NAME "
                    "from bench/run --with NAME=CMD compares the others with that agent)")
    ap.add_argument("--summary", action="store_true",
                    help="median [min-max] per label of loadgen JSON-lines files, no gate")
    ap.add_argument("--write-baseline", metavar="PATH", help="write the results as a new baseline")
    ap.add_argument("--note", default="", help="free text stored in the baseline's meta")
    args = ap.parse_args()

    if args.ab or args.summary:
        rows, metas = [], []
        for path in args.files:
            r, m = read_jsonl(path)
            rows += r
            metas += m
        if not rows:
            print("compare.py: no spop-loadgen results in " + " ".join(args.files), file=sys.stderr)
            return 2
        if args.summary:
            return print_summary(rows)
        busy, why = busy_machine(metas)
        gate_fps = args.fps_gate == "on" or (args.fps_gate == "auto" and not busy)
        if args.ref not in side_names(rows):
            print(f"compare.py: no side {args.ref} in the results (sides: "
                  f"{' '.join(side_names(rows)) or 'none'})", file=sys.stderr)
            return 2
        out, bad = ab_compare(rows, args.cpu_max, args.fps_min if gate_fps else None,
                              args.p99_max, args.ref)
        if not out:
            print("compare.py: no SIDE/ENGINE/SCENARIO labels (is this bench/run --against "
                  "output?)", file=sys.stderr)
            return 2
        print_ab(out, metas, args.markdown, args.ref)
        gates = f"side/{args.ref} agent CPU/frame > {args.cpu_max:g}"
        if gate_fps:
            gates += f" or frames/s < {args.fps_min:g}"
        else:
            # Closed-loop frames/s measures the CPU share this run got from the machine.
            print(f"\nframes/s not gated ({why}" + (", a busy machine" if args.fps_gate == "auto"
                                                     else ", --fps-gate off") +
                  "): it measures the CPU share the run got; agent CPU per frame does not")
        print(f"\n{bad} regression(s) or failure(s): {gates}" if bad else
              f"\nno regression: none with {gates}")
        return 1 if bad else 0

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
    if args.no_gate:
        # Stored figures from another machine or day are information; failed runs still fail.
        failed = sum(1 for r in rows if r[1] == "run")
        rows = [r[:5] + ("worse" if r[5] == "REGRESSION" else r[5],) for r in rows]
        print_table(rows)
        print(f"\n{failed} failed run(s)" if failed else
              "\nnot gated (--no-gate): ratios against stored figures are information only; "
              "gate with bench/run --against REV")
        return 1 if failed else 0
    print_table(rows)
    print(f"\n{bad} regression(s) or failure(s) beyond {args.threshold:.0%}" if bad else
          f"\nno regression beyond {args.threshold:.0%}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
