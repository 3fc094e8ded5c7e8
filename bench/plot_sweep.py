#!/usr/bin/env python3
"""Plots and tables from bench/wait_sweep.py results (matplotlib: Debian's python3-matplotlib).

    /usr/bin/python3 bench/plot_sweep.py bench/results/sweep-main.jsonl [more.jsonl]
        [--outdir bench/plots] [--cdf-scenario r50k] [--rate-agents before,uring_w0,...]
        [--prefix NAME_] [--markdown]

Writes into --outdir:
  cpu_vs_rate.png      agent CPU per frame against the offered rate (Poisson scenarios rNNk),
                       one line per agent (median of the repetitions, bars from min to max);
  latency_cdf.png      the latency distribution at one rate (--cdf-scenario), one line per
                       agent (per quantile, the median over the repetitions);
  window_tradeoff.png  io_uring's --batch-window-us (agents labelled uring_wN) against agent
                       CPU per frame and p99, one line per rate;
  closed_loop.png      the closed-loop scenarios (no --rate), a bar per agent, log scale.
each name after --prefix. It also prints, per scenario and agent, median [min-max] of frames/s, agent CPU us/frame, p50,
p99 and agent wakeups per frame (and perf's counts per frame when the sweep ran with --perf).
"""

import argparse
import json
import os
import re
import statistics
import sys

# The same (median, min, max) as bench/compare.py's tables.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import spread  # noqa: E402


def load(paths):
    rows, metas = [], []
    for p in paths:
        for line in open(p):
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            (metas if r.get("tool") == "wait-sweep" else rows).append(r)
    return rows, metas


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100000:
        return f"{v / 1000:.0f}k"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fs(sp):
    return "-" if sp is None else f"{fmt(sp[0])} [{fmt(sp[1])}-{fmt(sp[2])}]"


def groups(rows):
    g = {}
    for r in rows:
        g.setdefault((r["scenario"], r["agent"]), []).append(r)
    return g


def rate_of(scenario, rows):
    rates = [r.get("rate") for r in rows if isinstance(r.get("rate"), (int, float))]
    return rates[0] if rates else None


def window_of(agent):
    m = re.fullmatch(r"uring_w(\d+)", agent)
    return int(m.group(1)) if m else None


def table(rows, metas, markdown):
    g = groups(rows)
    scen = list(dict.fromkeys(r["scenario"] for r in rows))
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    perf_keys = sorted({k for r in rows for k in r if k.startswith("perf_per_frame:")})
    for m in metas:
        if "load_start" in m:
            print(f"sweep {m.get('date')} git {m.get('git')} kernel {m.get('kernel')}: "
                  f"{m.get('reps')} reps x {m.get('duration_s')} s, load average at start "
                  f"{' '.join(m['load_start'])}")
        if "load_end" in m:
            print(f"  load average at end {' '.join(m['load_end'])} ({m.get('date_end')})")
    cols = ["frames/s", "agent CPU µs/frame", "p50 µs", "p99 µs", "wakeups/frame"]
    short = [k.split(":", 1)[1].split(":")[-1].replace("sys_enter_", "").replace(
        "sys_enter", "syscalls").replace("task-clock", "task-clock µs") for k in perf_keys]
    if markdown:
        print("| scenario | agent | " + " | ".join(cols + [s + "/frame" for s in short]) + " |")
        print("|---|---|" + "---|" * (len(cols) + len(short)))
    for s in scen:
        for a in agents:
            rs = g.get((s, a))
            if not rs:
                continue
            vals = [fs(spread(r.get(m) for r in rs)) for m in
                    ("frames_per_s", "agent_cpu_us_per_frame", "p50_us", "p99_us",
                     "agent_vol_ctxsw_per_frame")]
            for k in perf_keys:
                sp = spread(r.get(k) for r in rs)
                # perf's task-clock is in ms: shown in µs per frame.
                vals.append("-" if sp is None else
                            fmt(sp[0] * (1000 if k.endswith("task-clock") else 1)))
            bad = sum(1 for r in rs if not r.get("ok"))
            if bad:
                vals[-1] += f" ({bad} FAILED)"
            if markdown:
                print(f"| {s} | {a} | " + " | ".join(vals) + " |")
            else:
                print(f"{s:8s} {a:12s} " + "  ".join(f"{c} {v}" for c, v in zip(cols + short,
                                                                                 vals)))


def plots(rows, outdir, cdf_scenario, rate_agents, prefix=""):
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plot_sweep: no matplotlib in this python3 (Debian's python3-matplotlib "
                         "is /usr/bin/python3's; or pass --no-plots)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    g = groups(rows)
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    open_scen = sorted({s for s, _ in g if rate_of(s, g[(s, _)]) is not None},
                       key=lambda s: rate_of(s, [r for r in rows if r["scenario"] == s]))
    load = ""
    written = []

    # 1. agent CPU per frame against the rate.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a in (rate_agents or agents):
        xs, ys, lo, hi = [], [], [], []
        for s in open_scen:
            sp = spread(r.get("agent_cpu_us_per_frame") for r in g.get((s, a), []))
            if sp is None:
                continue
            xs.append(rate_of(s, g[(s, a)]) / 1000)
            ys.append(sp[0])
            lo.append(sp[0] - sp[1])
            hi.append(sp[2] - sp[0])
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=a)
    ax.set_xlabel("offered rate, thousand NOTIFY/s (Poisson, 32 connections)")
    ax.set_ylabel("agent CPU per frame, µs")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Agent CPU per request against request rate (median, min-max)" + load,
                 fontsize=10)
    fig.tight_layout()
    p = os.path.join(outdir, prefix + "cpu_vs_rate.png")
    fig.savefig(p, dpi=100)
    written.append(p)
    plt.close(fig)

    # 2. latency CDF at one rate.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a in (rate_agents or agents):
        rs = [r for r in g.get((cdf_scenario, a), []) if r.get("quantiles_us")]
        if not rs:
            continue
        qs = [q for q, _ in rs[0]["quantiles_us"]]
        us = [statistics.median(r["quantiles_us"][i][1] for r in rs) for i in range(len(qs))]
        ax.plot(us, qs, marker=".", label=a)
    ax.set_xscale("log")
    ax.set_xlabel("latency, µs (from the intended send time; log scale)")
    ax.set_ylabel("fraction of requests")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Latency CDF at {cdf_scenario} (median per quantile over the repetitions)",
                 fontsize=10)
    fig.tight_layout()
    p = os.path.join(outdir, prefix + "latency_cdf.png")
    fig.savefig(p, dpi=100)
    written.append(p)
    plt.close(fig)

    # 3. the batching window's trade-off.
    wins = sorted({window_of(a) for a in agents if window_of(a) is not None})
    if len(wins) > 1:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
        for s in open_scen:
            xs, cpu, p50, p99 = [], [], [], []
            for w in wins:
                rs = g.get((s, f"uring_w{w}"), [])
                c = spread(r.get("agent_cpu_us_per_frame") for r in rs)
                q = spread(r.get("p99_us") for r in rs)
                m = spread(r.get("p50_us") for r in rs)
                if c and q and m:
                    xs.append(w)
                    cpu.append(c[0])
                    p50.append(m[0])
                    p99.append(q[0])
            if xs:
                lab = f"{rate_of(s, g[(s, 'uring_w' + str(xs[0]))]) / 1000:.0f}k/s"
                line, = a1.plot(xs, cpu, marker="o", label=lab)
                a2.plot(xs, p50, marker="o", color=line.get_color(), label=lab + " p50")
                a2.plot(xs, p99, marker="x", linestyle="--", color=line.get_color(),
                        label=lab + " p99")
        a1.set_xlabel("--batch-window-us")
        a1.set_ylabel("agent CPU per frame, µs (median)")
        a1.set_ylim(bottom=0)
        a2.set_xlabel("--batch-window-us")
        a2.set_ylabel("latency, µs: p50 (solid), p99 (dashed); medians")
        a2.set_yscale("log")
        for ax in (a1, a2):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, title="rate", ncol=2 if ax is a2 else 1)
        fig.suptitle("io_uring batching window: CPU per frame and latency (Poisson, 32 "
                     "connections)",
                     fontsize=10)
        fig.tight_layout()
        p = os.path.join(outdir, prefix + "window_tradeoff.png")
        fig.savefig(p, dpi=100)
        written.append(p)
        plt.close(fig)

    # 4. closed-loop scenarios side by side: one group of bars per scenario, one bar per agent.
    closed = [s for s in dict.fromkeys(r["scenario"] for r in rows) if s not in open_scen]
    if closed:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        shown = rate_agents or agents
        width = 0.8 / len(shown)
        for i, a in enumerate(shown):
            xs, ys, lo, hi = [], [], [], []
            for j, s in enumerate(closed):
                sp = spread(r.get("agent_cpu_us_per_frame") for r in g.get((s, a), []))
                if sp is None:
                    continue
                xs.append(j + (i - (len(shown) - 1) / 2) * width)
                ys.append(sp[0])
                lo.append(sp[0] - sp[1])
                hi.append(sp[2] - sp[0])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=a)
        ax.set_xticks(range(len(closed)))
        ax.set_xticklabels(closed)
        ax.set_yscale("log")
        ax.set_ylabel("agent CPU per frame, µs (log scale)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Agent CPU per frame, closed loop (median, min-max)", fontsize=10)
        fig.tight_layout()
        p = os.path.join(outdir, prefix + "closed_loop.png")
        fig.savefig(p, dpi=100)
        written.append(p)
        plt.close(fig)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--outdir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "plots"))
    ap.add_argument("--cdf-scenario", default="r50k")
    ap.add_argument("--rate-agents", default="",
                    help="comma-separated agents for the rate and CDF plots (default: all)")
    ap.add_argument("--prefix", default="",
                    help="prepended to the plots' file names (e.g. reference_)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args()
    rows, metas = load(a.files)
    if not rows:
        print("plot_sweep: no runs in the input", file=sys.stderr)
        return 1
    table(rows, metas, a.markdown)
    if not a.no_plots:
        agents = [x for x in a.rate_agents.split(",") if x]
        for p in plots(rows, a.outdir, a.cdf_scenario, agents, a.prefix):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
