#!/usr/bin/env python3
"""Several agent configurations against several loadgen scenarios, interleaved in one run.

    python3 bench/wait_sweep.py [--reps 3] [--duration 4] [--out bench/results/sweep.jsonl]
        [--agent LABEL=ARGS ...] [--scenario NAME=LOADGEN-ARGS ...] [--perf]

Default agents (build/agent/agent -n 2 -a 127.0.0.1): io_uring with --batch-window-us 0, 20,
50, 100, 200, and epoll; plus build/examples/blocking_agent (a thread per connection) as the
baseline when it is built. Default scenarios: c=32 d=1 and c=1 d=1 (closed loop), and Poisson
arrivals at 10k, 20k, 50k and 100k NOTIFY/s over 32 connections (at most 20 in flight each).

For each repetition, each scenario, each agent (the agents' order rotates every repetition) one
spop-loadgen run (--agent-pid, --json), one JSON line each into --out with "agent", "scenario"
and "rep" added, after a meta line (load average at start; another at the end). With --perf, a
`perf stat` of the agent counts its syscalls, io_uring_enter calls and context switches over
the measurement window (divided by the frames the loadgen counted in it: approximate).
The plots and tables come from bench/plot_sweep.py. Every process started here is stopped by
pid on exit. Loopback only.
"""

import argparse
import datetime
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_SCENARIOS = [
    ("c32_d1", "--connections 32 --depth 1 --threads 2"),
    ("c1_d1", "--connections 1 --depth 1"),
    ("r10k", "--connections 32 --depth 20 --threads 2 --rate 10000 --arrivals poisson"),
    ("r20k", "--connections 32 --depth 20 --threads 2 --rate 20000 --arrivals poisson"),
    ("r50k", "--connections 32 --depth 20 --threads 2 --rate 50000 --arrivals poisson"),
    ("r100k", "--connections 32 --depth 20 --threads 2 --rate 100000 --arrivals poisson"),
]

PERF_EVENTS = ["task-clock", "context-switches", "raw_syscalls:sys_enter",
               "syscalls:sys_enter_io_uring_enter", "syscalls:sys_enter_epoll_wait",
               "syscalls:sys_enter_sendto", "syscalls:sys_enter_recvfrom"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def default_agents(build):
    agent = os.path.join(build, "agent", "agent")
    out = [(f"uring_w{w}", f"{agent} -n 2 -a 127.0.0.1 --engine uring --batch-window-us {w}")
           for w in (0, 20, 50, 100, 200)]
    out.append(("epoll", f"{agent} -n 2 -a 127.0.0.1 --engine epoll"))
    blocking = os.path.join(build, "examples", "blocking_agent")
    if os.access(blocking, os.X_OK):
        out.append(("blocking", blocking))
    return out


def start(label, cmd, logdir):
    port = free_port()
    argv = shlex.split(cmd)
    # blocking_agent takes the port as its first argument; the agent takes -p PORT.
    argv = argv[:1] + [str(port)] + argv[1:] if "blocking_agent" in argv[0] else \
        argv + ["-p", str(port)]
    log = open(os.path.join(logdir, f"sweep-agent-{label}.log"), "w")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    if not wait_port(port):
        p.kill()
        raise SystemExit(f"wait_sweep: agent {label} ({cmd}) did not listen on {port}")
    return p, port


def perf_stat(pid, seconds):
    """Starts perf stat on pid for `seconds`; returns the Popen (stderr: CSV counts)."""
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(PERF_EVENTS), "-p",
                             str(pid), "--", "sleep", f"{seconds:.3f}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def parse_perf(text):
    out = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 3:
            continue
        try:
            out[parts[2]] = float(parts[0])
        except ValueError:
            pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "sweep.jsonl"))
    ap.add_argument("--agent", action="append", default=[], metavar="LABEL=CMD")
    ap.add_argument("--scenario", action="append", default=[], metavar="NAME=ARGS")
    ap.add_argument("--perf", action="store_true", help="also count syscalls with perf stat")
    ap.add_argument("--append", action="store_true", help="append to --out")
    a = ap.parse_args()
    if a.reps < 1 or a.duration <= 1:
        ap.error("--reps >= 1 and --duration > 1 s")
    agents = [tuple(x.split("=", 1)) for x in a.agent] or default_agents(a.build)
    scenarios = [tuple(x.split("=", 1)) for x in a.scenario] or DEFAULT_SCENARIOS
    if any(len(x) != 2 for x in agents + scenarios):
        ap.error("--agent and --scenario take NAME=VALUE")
    if a.perf and not shutil.which("perf"):
        ap.error("--perf: no perf binary (Debian: linux-perf)")
    loadgen = os.path.join(a.build, "bench", "spop-loadgen")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    logdir = os.path.dirname(a.out)
    out = open(a.out, "a" if a.append else "w")
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    meta = {"tool": "wait-sweep", "git": git, "cpus": os.cpu_count(), "reps": a.reps,
            "duration_s": a.duration, "agents": dict(agents), "kernel": os.uname().release,
            "load_start": open("/proc/loadavg").read().split()[:3],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    out.write(json.dumps(meta) + "\n")
    print(f"wait_sweep: load average at start {' '.join(meta['load_start'])}", file=sys.stderr)
    procs = {}
    failures = 0
    try:
        for label, cmd in agents:
            procs[label] = start(label, cmd, logdir)
        warmup = min(0.5, a.duration / 5)
        for rep in range(a.reps):
            for name, args in scenarios:
                k = rep % len(agents)
                for label, _ in agents[k:] + agents[:k]:
                    p, port = procs[label]
                    argv = [loadgen, "--port", str(port), "--agent-pid", str(p.pid), "--json",
                            "--duration", str(a.duration), "--label", f"{label}/{name}"]
                    argv += shlex.split(args)
                    lg = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
                    ps = None
                    if a.perf:
                        time.sleep(0.3 + warmup)  # handshakes, then the warmup
                        ps = perf_stat(p.pid, a.duration - warmup - 0.3)
                    stdout, _ = lg.communicate(timeout=a.duration + 60)
                    try:
                        r = json.loads(stdout.strip().splitlines()[-1])
                    except (ValueError, IndexError):
                        failures += 1
                        print(f"wait_sweep: {label}/{name}: no JSON from the loadgen",
                              file=sys.stderr)
                        continue
                    r.update({"agent": label, "scenario": name, "rep": rep})
                    if ps is not None:
                        _, err = ps.communicate(timeout=30)
                        counts = parse_perf(err)
                        frames = r["frames_per_s"] * (a.duration - warmup - 0.3)
                        if frames > 0:
                            r["perf_window_frames"] = frames
                            for ev, v in counts.items():
                                r["perf_per_frame:" + ev] = v / frames
                    if not r.get("ok"):
                        failures += 1
                    out.write(json.dumps(r) + "\n")
                    out.flush()
                    print(f"  rep {rep} {label:12s} {name:8s} {r['frames_per_s']:9.0f}/s  "
                          f"agent {r.get('agent_cpu_us_per_frame')} us/frame  "
                          f"p50 {r['p50_us']:.0f}  p99 {r['p99_us']:.0f} us  "
                          f"wakeups/frame {r.get('agent_vol_ctxsw_per_frame')}"
                          + ("" if r.get("ok") else "  FAIL " + r.get("first_error", "")),
                          file=sys.stderr)
    finally:
        for p, _ in procs.values():
            p.terminate()
        for p, _ in procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        end = {"tool": "wait-sweep", "load_end": open("/proc/loadavg").read().split()[:3],
               "date_end": datetime.datetime.now(datetime.timezone.utc).strftime(
                   "%Y-%m-%dT%H:%M:%SZ")}
        out.write(json.dumps(end) + "\n")
        out.close()
        print(f"wait_sweep: load average at end {' '.join(end['load_end'])}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
