#!/usr/bin/env python3
"""End to end with HAProxy: HTTP requests/s and CPU per request of HAProxy and of the agent,
without SPOE (base) and with SPOE (one NOTIFY per HTTP request), under `wrk`, on loopback.

usage: bench/haproxy_e2e.py [--series 3.4,3.0,2.6] [--configs NAME,...] [--reps 3]
                            [--duration 5] [--connections 50] [--plot] [--profile]
       bench/haproxy_e2e.py --list             the configurations and what they change
       bench/haproxy_e2e.py --summary FILE.jsonl... [--markdown] [--plot]   earlier results
A --configs entry "X.Y:name" runs that configuration with series X.Y only; configurations
meant for one generation (3.1+ backends, 2.6-3.0 SPOE options) skip the other by themselves.

Per run: a fresh agent (build/agent/agent, or --agent) and a fresh HAProxy (the series' binary
from scripts/haproxy-versions' cache, "2.6" = the system's /usr/sbin/haproxy; configuration
written here with tests/pyspop/haproxy.py's generation rules), 1 s of warm-up load, then `wrk`
for --duration seconds. HAProxy's and the agent's CPU come from /proc/PID/stat (utime+stime:
every thread of the process) read just before and just after that wrk run; divided by the
requests wrk completed. The frontend answers by itself (`http-request return`), so there is no
backend server: what is measured is HAProxy's cost per request plus what SPOE adds to it.

Every SPOE request is checked: the frontend answers 503 when the SPOE reports an error
(`set-on-error`) and 500 when no score came back; wrk counts non-2xx answers and a run with
any is marked FAILED (and its figures are left out of the medians).

Interleaved: for each repetition, every configuration of every series runs once, in order
(A B C ... A B C ...). The summary prints medians with [min-max] over the repetitions, the
spoe/base throughput ratio (each SPOE run over the base run of the same repetition, series and
nbthread), and the 1-minute load average at the start and the end. Raw results: one JSON line
per run in bench/results/e2e-<UTC time>.jsonl. Also per SPOE run, from the agent's /metrics:
ACKs per request (1.000 = one NOTIFY per HTTP request) and agent connections accepted per 1000
requests (connection churn); the agent connections open at mid-run (`ss`); wrk's own CPU.
--plot writes bench/plots/e2e_cpu_per_request.png (stacked HAProxy + agent µs per request, per
configuration, with the ratio). --profile (use it in a separate run, --reps 1: it perturbs the
CPU figures) adds `perf stat` syscalls and context switches per request for HAProxy and the
agent, and `perf record` of both in the first repetition, printed by object and by symbol.
Every wait is bounded; every process is stopped at exit.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from pyspop import haproxy as hp  # noqa: E402
from pyspop.agent import Agent  # noqa: E402
from pyspop.ports import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------------
# configurations

# name -> (description, settings). Settings: spoe (bool), nbthread, workers (agent -n), engine,
# event, backend (lines in the agent backend), server (words on the agent's server line),
# agent_opts (lines in the spoe-agent section), gens ("legacy" 2.6-3.0 / "mux" 3.1+ / None).
CONFIGS = {
    "base":          ("no SPOE, nbthread 1", dict(spoe=False)),
    "spoe":          ("SPOE per request, agent -n 2 io_uring, nbthread 1", dict()),
    "spoe-epoll":    ("as spoe, agent --engine epoll", dict(engine="epoll")),
    "spoe-n1":       ("as spoe, agent -n 1", dict(workers=1)),
    "spoe-random":   ("as spoe, examples/random_agent -n 2 (the library's minimal agent)",
                      dict(binary="random")),
    "base-t2":       ("no SPOE, nbthread 2", dict(spoe=False, nbthread=2)),
    "spoe-t2":       ("SPOE, nbthread 2, agent -n 2", dict(nbthread=2)),
    "spoe-t2-n1":    ("SPOE, nbthread 2, agent -n 1", dict(nbthread=2, workers=1)),
    "spoe-check500": ("as spoe, health check every 500 ms (as the examples; default 2 s)",
                      dict(check="check inter 500ms")),
    "spoe-nocheck":  ("as spoe, no health check on the agent server", dict(check="")),
    "spoe-session":  ("SPOE once per client connection (event on-client-session), as the "
                      "examples", dict(event="on-client-session")),
    # 3.1+ (mux_spop): agent connections are pooled backend connections.
    "spoe-maxconn10": ("3.1+: server maxconn 10 (at most 10 NOTIFYs in flight to the agent)",
                       dict(server="maxconn 10", gens="mux")),
    "spoe-maxconn40": ("3.1+: server maxconn 40", dict(server="maxconn 40", gens="mux")),
    "spoe-reuse100": ("3.1+: server max-reuse 100 (a connection closes after 100 NOTIFYs)",
                      dict(server="max-reuse 100", gens="mux")),
    "spoe-pool1":    ("3.1+: server pool-max-conn 1 (at most 1 idle agent connection kept)",
                      dict(server="pool-max-conn 1", gens="mux")),
    "spoe-pool2":    ("3.1+: server pool-max-conn 2", dict(server="pool-max-conn 2", gens="mux")),
    "spoe-pool8":    ("3.1+: server pool-max-conn 8", dict(server="pool-max-conn 8", gens="mux")),
    "spoe-t2-pool2": ("3.1+: nbthread 2, server pool-max-conn 2",
                      dict(nbthread=2, server="pool-max-conn 2", gens="mux")),
    "spoe-pool2-n1": ("3.1+: server pool-max-conn 2, agent -n 1",
                      dict(server="pool-max-conn 2", workers=1, gens="mux")),
    "spoe-reuse-always": ("3.1+: backend http-reuse always",
                          dict(backend="http-reuse always", gens="mux")),
    # 2.6-3.0 (SPOE applets): one agent connection per applet.
    "spoe-mwf1":     ("2.6-3.0: max-waiting-frames 1", dict(agent_opts="max-waiting-frames 1",
                                                           gens="legacy")),
    "spoe-mwf100":   ("2.6-3.0: max-waiting-frames 100",
                      dict(agent_opts="max-waiting-frames 100", gens="legacy")),
    "spoe-nopipe":   ("2.6-3.0: no option pipelining", dict(agent_opts="no option pipelining",
                                                            gens="legacy")),
    "spoe-idle1s":   ("2.6-3.0: timeout idle 1s (instead of 2m)", dict(idle="1s",
                                                                     gens="legacy")),
    "spoe-maxconnrate10": ("2.6-3.0: maxconnrate 10 (few applets)",
                           dict(agent_opts="maxconnrate 10", gens="legacy")),
}

DEFAULT_CONFIGS = ("base,spoe,spoe-epoll,spoe-n1,base-t2,spoe-t2,spoe-t2-n1,spoe-maxconn10,"
                   "spoe-reuse100,spoe-mwf1,spoe-mwf100,spoe-idle1s")

DEFAULTS = dict(spoe=True, nbthread=1, workers=2, engine="uring", event="on-frontend-http-request",
                backend="", server="", agent_opts="", idle="2m", gens=None, binary="agent",
                check="check inter 2s")


def settings(name):
    s = dict(DEFAULTS)
    s.update(CONFIGS[name][1])
    return s


def applies(name, binary):
    gens = settings(name)["gens"]
    return gens is None or (gens == "mux") == binary.gen.mux


def haproxy_config(binary, s, http_port, agent_port, spoe_path, admin_sock):
    gen = binary.gen
    cfg = (f"global\n    nbthread {s['nbthread']}\n    maxconn 400\n"
           f"    stats socket {admin_sock} level admin\n\n"
           "defaults\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n"
           f"frontend fe\n    mode http\n    bind 127.0.0.1:{http_port}\n")
    if s["spoe"]:
        cfg += (f"    filter spoe engine iprep config {spoe_path}\n"
                "    http-request return status 503 if { var(txn.iprep.error) -m found }\n"
                "    http-request return status 500 if ! { var(sess.iprep.ip_score) -m found }\n")
    cfg += "    http-request return status 200 content-type text/plain lf-string \"ok\"\n"
    if s["spoe"] and s["event"] != "on-client-session":
        # every answer's score was set by this request's ACK
        cfg += "    http-after-response unset-var(sess.iprep.ip_score)\n"
    if s["spoe"]:
        server_words = f"{s['check']} {s['server']}".strip()
        cfg += ("\n" + hp.agent_backend(gen, "iprep-backend", [("agent1", f"127.0.0.1:{agent_port}")],
                                        check=server_words,
                                        extra="".join(f"    {l}\n" for l in s["backend"].split(";")
                                                      if l)))
    return cfg


def spoe_config(binary, s):
    opts = "".join(f"    {l}\n" for l in s["agent_opts"].split(";") if l)
    return (f"[iprep]\n"
            f"spoe-agent iprep-agent\n"
            f"    messages check-client-ip\n"
            f"    option var-prefix iprep\n"
            f"    option set-on-error error\n"
            f"{opts}"
            f"{binary.gen.legacy_timeouts('2s', s['idle'])}"
            f"    timeout processing 1s\n"
            f"    use-backend iprep-backend\n\n"
            f"spoe-message check-client-ip\n"
            f"    args ip=src\n"
            f"    event {s['event']}\n")


# ---------------------------------------------------------------------------------------------
# measuring

def cpu_ticks(pid):
    """utime+stime of the whole process (every thread), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def established(port):
    """Established TCP connections whose local port is `port` (the agent's side)."""
    res = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10)
    return len([l for l in res.stdout.splitlines() if l.strip()])


UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(out):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            r[f"p{pct}_us"] = float(m.group(1)) * UNITS[m.group(2)]
    return r


def agent_counters(agent):
    """spop_agent_acks_total and spop_agent_connections_total from the agent's /metrics."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for name in ("spop_agent_acks_total", "spop_agent_connections_total"):
        m = re.search(rf"^{name} (\d+(?:\.\d+)?(?:e\+\d+)?)$", text, re.M)
        out[name] = float(m.group(1)) if m else None
    return out


def wrk(port, duration, connections, threads, latency=True):
    """Runs wrk; returns (its output, its CPU seconds: user+system of every thread)."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s"]
    if latency:
        cmd.append("--latency")
    cmd.append(f"http://127.0.0.1:{port}/")
    with tempfile.TemporaryFile() as f:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        killer = threading.Timer(duration + 30, p.kill)   # wrk ends by itself after -d
        killer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            killer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        f.seek(0)
        return f.read().decode("utf-8", "replace"), ru.ru_utime + ru.ru_stime


def perf_profile(pid, seconds, label, top=25):
    """perf record -g on `pid` for `seconds`; prints the top symbols (self time)."""
    data = tempfile.mktemp(prefix=f"e2e-perf-{label}-", suffix=".data")
    rec = subprocess.run(["perf", "record", "-q", "-F", "999", "-g", "-p", str(pid), "-o", data,
                          "--", "sleep", str(seconds)], capture_output=True, text=True,
                         timeout=seconds + 60)
    if rec.returncode != 0:
        print(f"perf record {label}: {rec.stderr.strip()[:300]}")
        return
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
                          "--sort", "dso,sym", "--percent-limit", "0.7"],
                         capture_output=True, text=True, timeout=120)
    dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
                          "--sort", "dso", "--percent-limit", "1"],
                         capture_output=True, text=True, timeout=120)
    lines = [l for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")]
    split = [" ".join(l.split()) for l in dso.stdout.splitlines()
             if l.strip() and not l.startswith("#")]
    print(f"--- perf: {label} (pid {pid}, {seconds}s, self time) ---")
    print("   by object: " + "; ".join(split))
    for l in lines[:top]:
        print("   " + l.strip())
    os.unlink(data)


def perf_stat(pid, seconds):
    """Context switches and syscalls of `pid` (every thread) over `seconds`."""
    res = subprocess.run(["perf", "stat", "-x,", "-e",
                          "task-clock,context-switches,raw_syscalls:sys_enter", "-p", str(pid),
                          "--", "sleep", str(seconds)], capture_output=True, text=True,
                         timeout=seconds + 30)
    out = {}
    for line in res.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 3 and parts[0].replace(".", "").isdigit():
            out[parts[2]] = float(parts[0])
    return out


def run_one(binary, name, args, rep, profile=False):
    s = settings(name)
    workdir = tempfile.mkdtemp(prefix="spop-e2e-")
    h = hp.HAProxy(binary, workdir=workdir)
    agent = None
    result = dict(series=str(binary.gen), config=name, rep=rep, nbthread=s["nbthread"],
                  spoe=s["spoe"], workers=s["workers"] if s["spoe"] else None,
                  engine=s["engine"] if s["spoe"] else None, load_start=loadavg())
    try:
        agent_port = None
        if s["spoe"]:
            if s["binary"] == "random":
                agent = Agent(args.random_agent, [], workers=s["workers"],
                              engine=s["engine"]).start()
            else:
                agent = Agent(args.agent, ["--default-score", "80"], workers=s["workers"],
                              engine=s["engine"], metrics=True).start()
            agent_port = agent.port
        spoe_path = h.write("spoe.conf", spoe_config(binary, s))
        port = free_port()
        h.start(haproxy_config(binary, s, port, agent_port, spoe_path, h.admin_sock),
                wait_ports=[port])
        if s["spoe"] and s["check"]:
            h.wait_server("iprep-backend", "agent1", "UP", timeout=15)
        wrk(port, 1, args.connections, args.wrk_threads, latency=False)  # warm-up
        conns = {}
        if s["spoe"]:
            def sample():
                time.sleep(args.duration / 2)
                conns["n"] = established(agent_port)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        c0 = agent_counters(agent) if agent and agent.with_metrics else {}
        h0 = cpu_ticks(h.pid)
        a0 = cpu_ticks(agent.pid) if agent else 0
        t0 = time.monotonic()
        stats = {}
        perf_threads = []
        if args.profile:
            secs = max(1, args.duration - 2)

            def stat(who, pid):
                time.sleep(0.5)
                stats[who] = perf_stat(pid, secs)
            perf_threads = [threading.Thread(target=stat, args=(w, p), daemon=True)
                            for w, p in (("haproxy", h.pid), ("agent", agent and agent.pid))
                            if p]
            if profile:
                perf_threads += [threading.Thread(
                    target=perf_profile, args=(pid, secs, f"{who} {binary.gen} {name}"),
                    daemon=True) for who, pid in (("haproxy", h.pid),
                                                  ("agent", agent and agent.pid)) if pid]
            for t in perf_threads:
                t.start()
        out, wrk_cpu = wrk(port, args.duration, args.connections, args.wrk_threads)
        for t in perf_threads:
            t.join(60)
        wall = time.monotonic() - t0
        h1 = cpu_ticks(h.pid)
        a1 = cpu_ticks(agent.pid) if agent else 0
        c1 = agent_counters(agent) if agent and agent.with_metrics else {}
        if s["spoe"]:
            sampler.join(5)
        w = parse_wrk(out)
        if "requests" not in w:
            raise AssertionError(f"wrk said: {out.strip()[:500]}")
        n = w["requests"]
        result.update(w)
        result.update(wall_s=wall, haproxy_cpu_s=(h1 - h0) / CLK_TCK,
                      agent_cpu_s=(a1 - a0) / CLK_TCK,
                      haproxy_us_per_req=(h1 - h0) / CLK_TCK * 1e6 / n,
                      agent_us_per_req=((a1 - a0) / CLK_TCK * 1e6 / n) if agent else None,
                      agent_conns=conns.get("n"), wrk_us_per_req=wrk_cpu * 1e6 / n,
                      ok=w["non2xx"] == 0 and w["socket_errors"] == 0 and n > 0)
        for key, short in (("spop_agent_acks_total", "acks_per_req"),
                           ("spop_agent_connections_total", "agent_accepts_per_req")):
            if c0.get(key) is not None and c1.get(key) is not None:
                result[short] = (c1[key] - c0[key]) / n
        for who, st in sorted(stats.items()):
            reqs = w.get("rps", 0) * max(1, args.duration - 2)
            if reqs:
                result[f"{who}_syscalls_per_req"] = st.get("raw_syscalls:sys_enter", 0) / reqs
                result[f"{who}_cswitch_per_req"] = st.get("context-switches", 0) / reqs
        if not h.running() or (agent and not agent.alive()):
            result["ok"] = False
            result["error"] = "a process died"
    except (AssertionError, OSError, subprocess.SubprocessError) as e:
        result.update(ok=False, error=str(e)[:500])
    finally:
        h.stop(remove=True)
        if agent:
            agent.stop()
    result["load_end"] = loadavg()
    return result


# ---------------------------------------------------------------------------------------------
# summary

def med(values):
    v = [x for x in values if x is not None]
    if not v:
        return None, None, None
    return statistics.median(v), min(v), max(v)


def fmt(triple, digits=1):
    m, lo, hi = triple
    if m is None:
        return "-"
    return f"{m:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def base_of(name):
    return "base-t2" if settings(name)["nbthread"] == 2 else "base"


def summarize(results, markdown=False):
    """Rows per (series, config), in first-seen order."""
    keys = []
    for r in results:
        k = (r["series"], r["config"])
        if k not in keys:
            keys.append(k)
    base_rps = {(r["series"], r["config"], r["rep"]): r.get("rps") for r in results if r["ok"]}
    rows = []
    for series, name in keys:
        runs = [r for r in results if r["series"] == series and r["config"] == name]
        good = [r for r in runs if r["ok"]]
        ratios = []
        if settings(name)["spoe"]:
            for r in good:
                b = base_rps.get((series, base_of(name), r["rep"]))
                if b:
                    ratios.append(r["rps"] / b)
        tot = [r["haproxy_us_per_req"] + (r["agent_us_per_req"] or 0) for r in good]
        rows.append(dict(series=series, config=name, runs=len(runs), failed=len(runs) - len(good),
                         rps=med([r["rps"] for r in good]),
                         ratio=med(ratios),
                         hap=med([r["haproxy_us_per_req"] for r in good]),
                         wrk=med([r.get("wrk_us_per_req") for r in good]),
                         agent=med([r["agent_us_per_req"] for r in good]),
                         total=med(tot),
                         p50=med([r.get("p50_us") for r in good]),
                         p99=med([r.get("p99_us") for r in good]),
                         conns=med([r.get("agent_conns") for r in good]),
                         acks=med([r.get("acks_per_req") for r in good]),
                         accepts=med([r.get("agent_accepts_per_req") for r in good]),
                         hsys=med([r.get("haproxy_syscalls_per_req") for r in good]),
                         asys=med([r.get("agent_syscalls_per_req") for r in good]),
                         hcs=med([r.get("haproxy_cswitch_per_req") for r in good]),
                         acs=med([r.get("agent_cswitch_per_req") for r in good]),
                         errors=[r.get("error") for r in runs if r.get("error")][:1]))
    sep = " | " if markdown else "  "
    head = ["HAProxy", "config", "req/s", "spoe/base", "HAProxy µs/req", "agent µs/req",
            "sum µs/req", "wrk µs/req", "p50 µs", "p99 µs", "agent conns", "accepts/kreq", "failed"]
    lines = []
    notes = []   # in Markdown, the per-configuration notes go after the table
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
    else:
        lines.append(sep.join(head))
    for row in rows:
        cells = [row["series"], row["config"], fmt(row["rps"], 0), fmt(row["ratio"], 2),
                 fmt(row["hap"]), fmt(row["agent"], 2), fmt(row["total"]), fmt(row["wrk"]), fmt(row["p50"], 0),
                 fmt(row["p99"], 0), fmt(row["conns"], 0),
                 fmt(tuple(None if x is None else 1000 * x for x in row["accepts"]), 1),
                 f"{row['failed']}/{row['runs']}"]
        lines.append(("| " + " | ".join(cells) + " |") if markdown else sep.join(cells))
        if row["acks"][0] is not None:
            (notes if markdown else lines).append(f"    {row['series']} {row['config']}: {fmt(row['acks'], 3)} ACKs per "
                         f"request, {fmt(tuple(None if x is None else 1000 * x for x in row['accepts']), 2)} agent "
                         f"connections accepted per 1000 requests")
        if row["hsys"][0] is not None:
            (notes if markdown else lines).append(f"    {row['series']} {row['config']} per request: HAProxy "
                         f"{row['hsys'][0]:.2f} syscalls, {row['hcs'][0]:.2f} context switches"
                         + (f"; agent {row['asys'][0]:.2f} syscalls, {row['acs'][0]:.2f} "
                            f"context switches" if row['asys'][0] is not None else ""))
        if row["errors"] and row["errors"][0]:
            (notes if markdown else lines).append(f"    ({row['config']}: {row['errors'][0][:200]})")
    if notes:
        lines += [""] + [n.strip() + "  " for n in notes]
    return rows, "\n".join(lines)


def plot(rows, path, jsonl_paths):
    try:
        import matplotlib
    except ImportError:
        # Debian's python3-matplotlib is for Debian's python3: when this runs under another
        # interpreter (pyenv...), let that one draw the plot from the results file.
        debian = "/usr/bin/python3"
        if os.path.realpath(sys.executable) != os.path.realpath(debian) and os.access(debian, os.X_OK):
            subprocess.run([debian, os.path.abspath(__file__), "--summary", *jsonl_paths,
                            "--plot", "--plot-path", path], stdout=subprocess.DEVNULL,
                           check=True, timeout=300)
            print(f"plot: {path}")
            return
        raise
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if r["hap"][0] is not None]
    labels = [f"{r['series']}\n{r['config']}" for r in rows]
    hap = [r["hap"][0] for r in rows]
    agent = [r["agent"][0] or 0 for r in rows]
    fig, ax = plt.subplots(figsize=(min(16, max(8, 0.5 * len(rows))), 6))
    x = range(len(rows))
    ax.bar(x, hap, label="HAProxy CPU µs/request", color="#4c72b0")
    ax.bar(x, agent, bottom=hap, label="agent CPU µs/request", color="#dd8452")
    for i, r in enumerate(rows):
        if r["ratio"][0] is not None:
            ax.text(i, hap[i] + agent[i] + 0.3, f"{r['ratio'][0]:.2f}", ha="center", fontsize=8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("CPU µs per HTTP request (median)")
    ax.set_title("HAProxy + spop agent, wrk on loopback; numbers: spoe/base req/s ratio")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


# ---------------------------------------------------------------------------------------------

def resolve(series):
    if series == "2.6":
        return hp.resolve(path=hp.SYSTEM_HAPROXY)
    return hp.resolve(series=series)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", default="3.4", help="comma-separated: 2.6 (system), 3.0, 3.2, 3.4")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated (see --list)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk per run")
    ap.add_argument("--connections", type=int, default=50, help="wrk connections")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--agent", default=os.path.join(REPO, "build", "agent", "agent"))
    ap.add_argument("--random-agent", default=os.path.join(REPO, "build", "examples",
                                                           "random_agent"),
                    help="for the spoe-random configuration")
    ap.add_argument("--out", default=None, help="JSON lines (default bench/results/e2e-*.jsonl)")
    ap.add_argument("--summary", metavar="JSONL", nargs="+",
                    help="only print the summary of earlier runs' files")
    ap.add_argument("--markdown", action="store_true", help="summary as a Markdown table")
    ap.add_argument("--plot", action="store_true",
                    help="write bench/plots/e2e_cpu_per_request.png")
    ap.add_argument("--plot-path", default=os.path.join(REPO, "bench", "plots",
                                                        "e2e_cpu_per_request.png"))
    ap.add_argument("--profile", action="store_true",
                    help="perf stat HAProxy and the agent in every run (syscalls and context "
                         "switches per request), and perf record both in the first repetition "
                         "(perturbs the CPU figures: use it in a separate run, --reps 1)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()

    if args.list:
        for name, (desc, _) in CONFIGS.items():
            print(f"{name:20} {desc}")
        return 0
    if args.summary:
        results = []
        for path in args.summary:
            with open(path) as f:
                results += [json.loads(l) for l in f if l.strip()]
        rows, text = summarize(results, args.markdown)
        print(text)
        if args.plot:
            plot(rows, args.plot_path, args.summary)
        return 0

    # "X.Y:name" runs that configuration with series X.Y only
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n.split(":")[-1] not in CONFIGS]
    if unknown:
        print(f"haproxy_e2e: unknown configuration(s) {', '.join(unknown)} (see --list)")
        return 2
    for tool in ("wrk", "ss"):
        if not shutil.which(tool):
            print(f"haproxy_e2e: {tool} not found (apt-get install wrk / iproute2)")
            return 2
    if not os.access(args.agent, os.X_OK):
        print(f"haproxy_e2e: no agent at {args.agent} (build it: ninja -C build)")
        return 2
    if any(settings(n.split(":")[-1])["binary"] == "random" for n in names) and \
            not os.access(args.random_agent, os.X_OK):
        print(f"haproxy_e2e: no random_agent at {args.random_agent} (configure with examples)")
        return 2
    binaries = []
    for series in args.series.split(","):
        try:
            binaries.append(resolve(series))
        except hp.Unavailable as e:
            print(f"haproxy_e2e: {e}")
            return 2
    out = args.out or os.path.join(
        REPO, "bench", "results",
        f"e2e-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}.jsonl")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    plan = [(b, n.split(":")[-1]) for b in binaries for n in names
            if applies(n.split(":")[-1], b) and (":" not in n or n.split(":")[0] == str(b.gen))]
    print(f"haproxy_e2e: {len(plan)} configurations x {args.reps} reps x {args.duration}s, "
          f"wrk -t{args.wrk_threads} -c{args.connections}; {os.cpu_count()} CPUs; "
          f"load average {loadavg():.2f} at {datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} UTC")
    for b in binaries:
        print(f"  {b}")
    results = []
    with open(out, "w") as f:
        for rep in range(1, args.reps + 1):
            for b, name in plan:
                r = run_one(b, name, args, rep, profile=args.profile and rep == 1)
                results.append(r)
                f.write(json.dumps(r) + "\n")
                f.flush()
                agent_us = r.get("agent_us_per_req")
                print(f"rep {rep} {b.gen} {name:18} "
                      + (f"{r.get('rps', 0):8.0f} req/s  haproxy {r['haproxy_us_per_req']:5.1f} "
                         f"µs/req  agent {agent_us if agent_us is not None else 0:5.2f} µs/req  "
                         f"conns {r.get('agent_conns')}  non2xx {r.get('non2xx')}"
                         if "haproxy_us_per_req" in r else "")
                      + ("" if r["ok"] else f"  FAILED {r.get('error', '')[:200]}"), flush=True)
    print(f"load average {loadavg():.2f} at "
          f"{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} UTC; results: {out}")
    rows, text = summarize(results, args.markdown)
    print(text)
    if args.plot:
        plot(rows, args.plot_path, [out])
    return 1 if any(not r["ok"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
