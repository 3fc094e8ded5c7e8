#!/usr/bin/env python3
"""Real-HAProxy integration tests for the spop agent (standard library only).

    python3 tests/haproxy/test_haproxy.py --agent build/agent/agent --haproxy /usr/sbin/haproxy
    python3 tests/haproxy/test_haproxy.py --agent build/agent/agent --series 3.4 [-k reload]

The HAProxy side (binary per series, configuration generation, process, admin socket, HTTP
helpers) is tests/pyspop/haproxy.py; the agent process is pyspop.agent.Agent; the runner is
pyspop.runner. --series X.Y runs the HAProxy X.Y that scripts/haproxy-versions fetched into its
cache (Debian's 3.0, 3.2 and 3.4 builds); when it is not there the script skips (exit 77) with a
loud reason, or fails when CI=true. The configuration generation follows `haproxy -v`: 2.6-3.0
get a `mode tcp` agent backend and the SPOE `timeout hello`/`idle`; 3.1+ get `mode spop` without
them; 3.4+ also get a `healthcheck` section of `type spop-check` on a second server
(be_healthcheck/agent-hc).

Starts one HAProxy (configuration written to a temporary directory) with three SPOE engines that
all talk to the agent through one backend with `option spop-check`:

  fe_tcp       mode tcp,  event on-client-session,         args ip=src, reject if score < 20
               (the configuration of spoa-example's README)
  fe_http      mode http, event on-frontend-http-request,  args ip=src, score returned in the body
  fe_unnamed   mode http, event on-frontend-http-request,  args src (unnamed argument)

Each engine sets `option set-on-error error` and `option set-process-time ptime`; the HTTP
frontends answer "score=<sess.iprep.ip_score> error=<txn.iprep.error> ptime=<txn.iprep.ptime>"
(pyspop.haproxy.BODY_FORMAT) and unset the score after each response, so every response says
whether its own SPOE event succeeded. HAProxy logs one "SPOE: [agent] <EVENT:...> sid=.. st=.."
line per event to its stdout, which is captured in a file and checked for errors.

Tests (in order): spop-check marks the agent UP; scores for named, unnamed and IPv6 (::1) client
arguments; `--default-score 5` is rejected by fe_tcp and `--default-score 80` passes; 3000
requests at 50 concurrent keep-alive clients without one SPOE error; 3 classic reloads
(`haproxy -sf <old pid>`) of a second HAProxy under ~8 s of steady load from 20 clients without
one SPOE error, the agent (-d) accepting the new process's connections after each reload and
logging no protocol error; `--user nobody` (as root only) drops every thread's uids/gids and
still serves; SIGTERM stops the agent (exit 0), HAProxy then reports errors and marks it DOWN,
and a restarted agent is used again (on 3.4+ the healthcheck-section server goes DOWN and UP
too); examples/haproxy's configuration for this generation passes `haproxy -c` and answers a real
request (on 3.1+ the 2.6-3.0 file must pass `haproxy -c` too); last, the agent exits 0 on
SIGTERM and no start of it printed a sanitizer report.

Everything listens on loopback only, on free ports picked by binding port 0. Every wait is bounded
in time and count. HAProxy and the agent run in their own process groups and are stopped at the
end, also when this script is interrupted or gets SIGTERM (meson's timeout).

Exit status: 0 all passed, 1 a test failed, 77 skipped (no haproxy, or --series X.Y not fetched
and CI is not "true"). The last line printed is "N passed, N failed".
"""

import argparse
import http.client
import os
import pwd
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyspop import haproxy as hp  # noqa: E402
from pyspop.agent import Agent, install_sigterm  # noqa: E402
from pyspop.haproxy import (BODY_FORMAT, good_body, http_get, parse_body,  # noqa: E402
                            score_value, tcp_exchange, wait_until)
from pyspop.ports import free_port  # noqa: E402

SKIP = hp.SKIP
HTTP_AGENT = "iprep-agent-http"
AGENT1 = ("iprep-backend", "agent1")
REPO = hp.REPO
EXAMPLES = os.path.join(REPO, "examples", "haproxy")


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


# ---------------------------------------------------------------------------------------------
# HAProxy configuration: three frontends, one agent backend (and a healthcheck section on 3.4+)

FRONTENDS = """\
# spoa-example's README setup: reject clients whose score is below 20.
frontend fe_tcp
    mode tcp
    bind 127.0.0.1:{tcp}
    filter spoe engine ip-reputation config {tmp}/spoe-tcp.conf
    tcp-request content reject if {{ var(sess.iprep.ip_score) -m int lt 20 }}
    default_backend be_internal

frontend fe_http
    mode http
    bind 127.0.0.1:{http}
{http6_bind}    filter spoe engine ip-reputation-http config {tmp}/spoe-http.conf
    http-request return status 200 content-type text/plain lf-string "{body_format}"
    http-after-response unset-var(sess.iprep.ip_score)
    # Which HAProxy process answered (the reload test tells generations apart by it).
    http-after-response set-header x-haproxy-pid %pid

frontend fe_unnamed
    mode http
    bind 127.0.0.1:{unnamed}
    filter spoe engine ip-reputation-unnamed config {tmp}/spoe-unnamed.conf
    http-request return status 200 content-type text/plain lf-string "{body_format}"
    http-after-response unset-var(sess.iprep.ip_score)

# What fe_tcp forwards accepted connections to.
frontend fe_internal
    mode http
    bind 127.0.0.1:{internal}
    http-request return status 200 content-type text/plain string "backend-ok"

backend be_internal
    mode tcp
    server internal 127.0.0.1:{internal}

"""


def three_frontends_config(h, agent_port):
    """Writes the three SPOE files into h.dir; returns (ports, configuration text). ports:
    tcp, http, unnamed, internal (and http6 when IPv6 loopback works)."""
    gen = h.gen
    for name, engine, agent, args, event in [
            ("spoe-tcp.conf", "ip-reputation", "iprep-agent", "ip=src", "on-client-session"),
            ("spoe-http.conf", "ip-reputation-http", HTTP_AGENT, "ip=src",
             "on-frontend-http-request"),
            ("spoe-unnamed.conf", "ip-reputation-unnamed", "iprep-agent-unnamed", "src",
             "on-frontend-http-request")]:
        h.write(name, hp.spoe_conf(gen, engine, agent, "iprep-backend", args=args, event=event,
                                   processing="2s", hello="2s", idle="2m"))
    ports = {k: free_port() for k in ("tcp", "http", "unnamed", "internal")}
    http6_bind = ""
    if hp.ipv6_loopback_usable():
        ports["http6"] = free_port(socket.AF_INET6, "::1")
        http6_bind = f"    bind [::1]:{ports['http6']}\n"
    addr = f"127.0.0.1:{agent_port}"
    cfg = (h.global_section() + "\n" + hp.DEFAULTS + "\n"
           + FRONTENDS.format(tmp=h.dir, http6_bind=http6_bind, body_format=BODY_FORMAT,
                              **ports)
           + hp.agent_backend(gen, "iprep-backend", [("agent1", addr)], check="check inter 1s"))
    if gen.healthcheck_sections:
        cfg += hp.healthcheck_section("spop-hc", "be_healthcheck", "agent-hc", addr)
    return ports, cfg


def wait_ports(h):
    return [p for k, p in h.ports.items() if k != "http6"]


def good_response(port, host="127.0.0.1"):
    """The body of one request whose SPOE event succeeded, else None."""
    try:
        status, _, body = http_get(port, host)
    except OSError:
        return None
    return body if status == 200 and good_body(body) else None


# ---------------------------------------------------------------------------------------------
# tests (run in this order; each leaves an agent running with a random score)

class Env:
    def __init__(self, binary, agent_binary, agent_args, tmp):
        self.binary = binary
        self.agent_binary = agent_binary
        self.agent_args = list(agent_args)
        self.tmp = tmp
        self.agent = self.new_agent(self.agent_args, port="keep")
        self.haproxy = hp.HAProxy(binary, tmp)

    def new_agent(self, args, port, name="agent"):
        """An agent (-n 2 -a 127.0.0.1) on a fixed port, not started."""
        return Agent(self.agent_binary, args, address="127.0.0.1", workers=2, port=port,
                     name=name, ready_timeout=10.0)

    def start(self):
        self.agent.start()
        self.haproxy.ports, cfg = three_frontends_config(self.haproxy, self.agent.port)
        self.haproxy.start(cfg, wait_ports=wait_ports(self.haproxy))

    def stop(self):
        self.haproxy.stop()
        self.agent.stop()

    def restart_agent(self, default_score=None):
        """As an operator restarts it: HAProxy's check sees the stop (DOWN) and the new agent
        (UP again); the next test starts once HAProxy uses it again."""
        self.agent.stop_checked()
        self.agent.args = self.agent_args + ([] if default_score is None
                                             else ["--default-score", str(default_score)])
        self.agent.start()
        self.wait_agent_up()

    def wait_agent_up(self, timeout=20, backend="iprep-backend", server="agent1"):
        def up():
            row = self.haproxy.server_stat(backend, server)
            return row["status"] == "UP" and row["check_status"] == "L7OK"

        if not wait_until(up, timeout=timeout, interval=0.25):
            row = self.haproxy.server_stat(backend, server)
            raise TestFailure(f"{server} not UP/L7OK: status={row['status']} "
                              f"check_status={row['check_status']} "
                              f"last_chk={row.get('last_chk')}")

    def good_response(self, port, host="127.0.0.1"):
        return good_response(port, host)

    def score(self, port, host="127.0.0.1"):
        """One request on a fresh connection; fails unless its event succeeded. Returns the
        score."""
        status, _, body = http_get(port, host)
        check(status == 200, f"status {status} ({body!r})")
        check(good_body(body), f"SPOE event failed or score not in 0..100: {body!r}")
        return int(parse_body(body)[0])


def test_spop_check_marks_agent_up(env):
    """option spop-check: the health check's HELLO gets an AGENT-HELLO, server UP with L7OK."""
    env.wait_agent_up()


def test_healthcheck_section_marks_agent_up(env):
    """3.4+: a `healthcheck` section of `type spop-check` on a server line checks the agent like
    `option spop-check` does: server UP with L7OK."""
    if not env.haproxy.gen.healthcheck_sections:
        print(f"    (HAProxy {env.haproxy.gen} has no healthcheck sections: not checked)")
        return
    env.wait_agent_up(backend="be_healthcheck", server="agent-hc")


def test_http_named_arg_gets_score(env):
    """args ip=src, on-frontend-http-request: each response carries a score in 0..100."""
    scores = {env.score(env.haproxy.ports["http"]) for _ in range(20)}
    # The default score is random: 20 equal draws from 0..100 would mean a constant.
    check(len(scores) > 1, f"20 requests all got score {scores}: not random")


def test_http_unnamed_arg_gets_score(env):
    """args src (an unnamed argument, empty name on the wire) is served too."""
    for _ in range(5):
        env.score(env.haproxy.ports["unnamed"])


def test_http_ipv6_client_gets_score(env):
    """A client on ::1: the NOTIFY carries an IPV6 argument."""
    if env.haproxy.ports.get("http6") is None:
        print("    (no IPv6 loopback: nothing to check)")
        return
    for _ in range(5):
        env.score(env.haproxy.ports.get("http6"), host="::1")


def tcp_frontend_passes(env):
    """Whether fe_tcp lets a connection through to its backend (3 tries that must agree)."""
    passed = set()
    for _ in range(3):
        data = tcp_exchange(env.haproxy.ports["tcp"], b"GET / HTTP/1.0\r\n\r\n")
        check(data == b"" or b"backend-ok" in data, f"unexpected answer {data[:200]!r}")
        passed.add(b"backend-ok" in data)
    check(len(passed) == 1, "fe_tcp both passed and rejected connections")
    return passed.pop()


def test_tcp_low_score_is_rejected(env):
    """--default-score 5: the README's `reject if score lt 20` closes the TCP connection."""
    env.restart_agent(default_score=5)
    score = env.score(env.haproxy.ports["http"])
    check(score == 5, f"--default-score 5 gave score {score}")
    check(not tcp_frontend_passes(env), "score 5 was not rejected")
    env.restart_agent()


def test_tcp_high_score_passes(env):
    """--default-score 80: the TCP connection reaches the backend."""
    env.restart_agent(default_score=80)
    score = env.score(env.haproxy.ports["http"])
    check(score == 80, f"--default-score 80 gave score {score}")
    check(tcp_frontend_passes(env), "score 80 was rejected")
    env.restart_agent()


def test_load_without_spoe_errors(env, total=3000, concurrency=50, deadline=180.0):
    """3000 keep-alive requests from 50 concurrent clients: every request's event succeeds
    (error variable empty, processing time set) and HAProxy logs no SPOE error."""
    port = env.haproxy.ports["http"]
    log_start = env.haproxy.log_size()
    per_client = total // concurrency
    sent = per_client * concurrency
    lock = threading.Lock()
    failures = []
    done = [0]
    stop_at = time.monotonic() + deadline

    def client():
        conn = None
        try:
            for _ in range(per_client):
                if time.monotonic() > stop_at:
                    with lock:
                        failures.append("deadline reached")
                    return
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    body = resp.read().decode("utf-8", "replace").strip()
                    failure = None if resp.status == 200 and good_body(body) else \
                        f"{resp.status} {body!r}"
                    if resp.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as e:
                    failure = f"{type(e).__name__}: {e}"
                    if conn is not None:
                        conn.close()
                    conn = None
                with lock:
                    done[0] += 1
                    if failure:
                        failures.append(failure)
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at + 15 - time.monotonic()))
    elapsed = time.monotonic() - t0
    check(not any(t.is_alive() for t in threads), "load clients did not finish in time")
    print(f"    {done[0]} requests in {elapsed:.1f}s ({done[0] / elapsed:.0f} req/s), "
          f"{len(failures)} failed")
    check(not failures, f"{len(failures)} of {sent} requests failed, e.g. {failures[:5]}")
    check(done[0] == sent, f"{done[0]} of {sent} requests done")

    # HAProxy writes the log lines as events end; give the last ones a moment. Its stdout log
    # sink may drop a line when threads contend (seen: 1 in 3000 on 2.6.12), so the count is
    # checked loosely; each response already proved its own event ran.
    wait_until(lambda: len(env.haproxy.spoe_events(log_start, agent=HTTP_AGENT)) >= sent,
               timeout=3, interval=0.2)
    events = env.haproxy.spoe_events(log_start, agent=HTTP_AGENT)
    errors = [m.group(0) for m in events if m.group("st") != "0"]
    check(not errors, f"{len(errors)} SPOE errors logged, e.g. {errors[:3]}")
    check(len(events) >= 0.98 * sent, f"only {len(events)} SPOE events logged for {sent} requests")
    if not env.haproxy.gen.mux:
        nb_error = {m.group("nb_error") for m in events if m.group("nb_error") is not None}
        check(len(nb_error) <= 1, f"the agent's SPOE error counter moved: {sorted(nb_error)[:10]}")


def test_agent_stop_reports_errors_and_restart_recovers(env):
    """SIGTERM stops the agent gracefully; HAProxy then reports SPOE errors (error variable,
    log st!=0, health check DOWN); a restarted agent is used again."""
    port = env.haproxy.ports["http"]
    check(wait_until(lambda: env.good_response(port), timeout=15, interval=0.2,
                     max_tries=75) is not None, "no good response before stopping the agent")

    env.agent.stop_checked()
    log_start = env.haproxy.log_size()

    def failing_body():
        try:
            status, _, body = http_get(port, timeout=10)
        except OSError:
            return None
        return body if status == 200 and parse_body(body)[1] != "" else None

    body = wait_until(failing_body, timeout=30, interval=0.2, max_tries=100)
    check(body is not None, "requests still succeed with the agent stopped")
    score, error, _ = parse_body(body)
    # A fresh connection's session has no score: an unset variable prints as nothing.
    check(score in ("", "-"), f"score {score!r} set although the agent is down")
    logged = [m for m in env.haproxy.spoe_events(log_start, agent=HTTP_AGENT)
              if m.group("st") != "0"]
    check(logged, "no SPOE error logged with the agent stopped")
    print(f"    agent down: error={error}, log: {logged[0].group(0)}")

    down = wait_until(lambda: env.haproxy.server_stat(*AGENT1)["status"].startswith("DOWN"),
                      timeout=20, interval=0.25)
    check(down, f"agent1 not marked DOWN: {env.haproxy.server_stat(*AGENT1)['status']}")
    if env.haproxy.gen.healthcheck_sections:
        hc = ("be_healthcheck", "agent-hc")
        down = wait_until(lambda: env.haproxy.server_stat(*hc)["status"].startswith("DOWN"),
                          timeout=20, interval=0.25)
        check(down, f"agent-hc (healthcheck section) not marked DOWN: "
                    f"{env.haproxy.server_stat(*hc)['status']}")

    env.agent.start()
    t0 = time.monotonic()
    good = wait_until(lambda: env.good_response(port), timeout=30, interval=0.2, max_tries=150)
    check(good is not None, "requests do not succeed again after the agent restarted")
    env.wait_agent_up()
    if env.haproxy.gen.healthcheck_sections:
        env.wait_agent_up(backend="be_healthcheck", server="agent-hc")
    print(f"    recovered {time.monotonic() - t0:.1f}s after restart")


# What the agent logs at debug level (-d) per connection.
AGENT_ACCEPT = re.compile(r"event=accept worker=\d+ peer=(\S+)")
AGENT_HEALTHCHECK_CLOSE = re.compile(r"event=close worker=\d+ peer=(\S+) reason=\"[^\"]*\""
                                     r" healthcheck=1")
AGENT_HAPROXY_DISCONNECT = re.compile(r"event=close worker=\d+ peer=\S+ reason=haproxy_disconnect")


def test_reload_under_load_without_spoe_errors(env, clients=20, reloads=3, settle=2.0,
                                               deadline=25.0):
    """`haproxy -sf` reloads under steady load: a separate HAProxy (own ports) in front of a
    separate agent (-d, own port) is reloaded 3 times while 20 clients (10 keep-alive, 10 with
    a new connection per request) send requests. Every response must carry a successful SPOE
    event; no generation may log a SPOE error; each generation answers requests; the agent
    accepts new SPOE connections after every reload (the new process's burst) and logs no
    protocol error. A request that fails at the connection level on the frontend (the old
    process closing a keep-alive connection, or resetting connections left in its accept
    queue when it stops listening) is retried once on a new connection and only counted."""
    workdir = os.path.join(env.tmp, "reload")
    os.makedirs(workdir, exist_ok=True)
    agent = env.new_agent(env.agent_args + ["-d"], port="keep", name="reload agent")
    haproxy = hp.HAProxy(env.binary, workdir)
    agent.start()  # first: its port ("keep") is picked when it binds
    haproxy.ports, cfg = three_frontends_config(haproxy, agent.port)
    port = haproxy.ports["http"]
    lock = threading.Lock()
    ok = [0]
    by_pid = {}
    spoe_errors, http_failures, conn_errors = [], [], []
    stop_load = threading.Event()
    stop_at = time.monotonic() + deadline
    threads = []

    def client(keep_alive):
        headers = {} if keep_alive else {"Connection": "close"}
        conn = None
        try:
            for _ in range(100000):
                if stop_load.is_set() or time.monotonic() > stop_at:
                    return
                for attempt in (1, 2):
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                        conn.request("GET", "/", headers=headers)
                        resp = conn.getresponse()
                        body = resp.read().decode("utf-8", "replace").strip()
                        pid = resp.getheader("x-haproxy-pid", "?")
                        if resp.will_close:
                            conn.close()
                            conn = None
                    except (OSError, http.client.HTTPException) as e:
                        if conn is not None:
                            conn.close()
                        conn = None
                        what = (f"{'keep-alive' if keep_alive else 'new'} connection, "
                                f"{type(e).__name__}: {e}")
                        with lock:
                            if attempt == 1:
                                conn_errors.append(what)
                            else:
                                http_failures.append(f"retry failed too: {what}")
                        continue
                    with lock:
                        if resp.status != 200:
                            http_failures.append(f"status {resp.status} {body!r}")
                        elif not good_body(body):
                            spoe_errors.append(f"pid {pid}: {body!r}")
                        else:
                            ok[0] += 1
                            by_pid[pid] = by_pid.get(pid, 0) + 1
                    break
        finally:
            if conn is not None:
                conn.close()

    try:
        haproxy.start(cfg, wait_ports=wait_ports(haproxy))
        check(wait_until(lambda: good_response(port), timeout=15,
                         interval=0.2, max_tries=75),
              f"the reload HAProxy does not answer with a score\n{haproxy.log_tail()}")
        pids = [str(haproxy.pid)]
        threads = [threading.Thread(target=client, args=(i % 2 == 0,), daemon=True)
                   for i in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(settle)
        offsets = []
        for i in range(reloads):
            check(time.monotonic() < stop_at - settle, "out of time before all reloads")
            t_reload = time.monotonic()
            with lock:
                before = ok[0]
            offsets.append(agent.log_mark())
            old_pid, new_pid, took, rc = haproxy.reload()
            pids.append(str(new_pid))
            print(f"    reload {i + 1}: haproxy {old_pid} -> {new_pid}, old one exited "
                  f"{took:.2f}s after -sf (status {rc}), {before} good responses so far")
            check(rc == 0, f"old haproxy {old_pid} exited with {rc}\n"
                           f"{haproxy.generations[-2].log_tail()}")
            time.sleep(max(0.0, min(settle, settle - (time.monotonic() - t_reload))))
        stop_load.set()
        for t in threads:
            t.join(max(0.0, stop_at + 15 - time.monotonic()))
        elapsed = time.monotonic() - t0
        check(not any(t.is_alive() for t in threads), "load clients did not finish in time")
        offsets.append(agent.log_mark())

        with lock:
            served = ", ".join(f"{p}: {by_pid.get(p, 0)}" for p in pids)
            print(f"    {ok[0]} good responses in {elapsed:.1f}s ({ok[0] / elapsed:.0f} req/s) "
                  f"by generation {served}; {len(spoe_errors)} SPOE errors, "
                  f"{len(http_failures)} HTTP failures, {len(conn_errors)} frontend connection "
                  f"errors (retried)")
            for e in conn_errors[:5]:
                print(f"      retried: {e}")
            check(not spoe_errors, f"{len(spoe_errors)} responses carry a SPOE error, e.g. "
                                   f"{spoe_errors[:5]}")
            check(not http_failures, f"{len(http_failures)} requests failed, e.g. "
                                     f"{http_failures[:5]}")
            unserved = [p for p in pids if by_pid.get(p, 0) == 0]
            check(not unserved, f"haproxy generations {unserved} answered no request")
            # A good answer without the header (seen once in 22755 on 2.6 across three reloads,
            # in an ASan run) is HAProxy's http-after-response, not the agent: tolerated when
            # rare, and said.
            no_pid = by_pid.get("?", 0)
            if no_pid:
                print(f"    {no_pid} good responses without x-haproxy-pid")
            check(no_pid <= max(1, ok[0] // 1000),
                  f"{no_pid} of {ok[0]} good responses carry no x-haproxy-pid")
            unknown = sorted(set(by_pid) - set(pids) - {"?"})
            check(not unknown, f"responses from unknown haproxy pids {unknown}")
            total_ok = ok[0]

        # HAProxy's own view: no SPOE event failed in any generation, and each generation's
        # agent-wide error counter stayed at 0. (The stdout log sink may drop a line under
        # contention, so the number of lines is checked loosely.)
        wait_until(lambda: len(haproxy.spoe_events_all(HTTP_AGENT)) >= total_ok, timeout=1,
                   interval=0.2)
        events = haproxy.spoe_events_all()
        errors = [f"gen {n}: {m.group(0)}" for n, m in events if m.group("st") != "0"]
        check(not errors, f"{len(errors)} SPOE errors logged, e.g. {errors[:3]}")
        counted = [f"gen {n}: {m.group(0)}" for n, m in events
                   if m.group("nb_error") not in (None, "0")] if not haproxy.gen.mux else []
        check(not counted, f"SPOE error counter not 0, e.g. {counted[:3]}")
        alerts = haproxy.alerts()
        check(not alerts, f"haproxy alerts: {alerts[:5]}")
        http_events = sum(1 for _, m in events if m.group("agent") == HTTP_AGENT)
        check(http_events >= 0.95 * total_ok,
              f"only {http_events} SPOE events logged for {total_ok} good responses")

        # The agent's view, before HAProxy is stopped (a hard stop closes connections abruptly).
        log = agent.log_text()
        bad = [line for line in log.splitlines() if "event=protocol_error" in line]
        check(not bad, f"agent logged {len(bad)} protocol errors, e.g. {bad[:3]}")
        healthchecks = set(AGENT_HEALTHCHECK_CLOSE.findall(log))
        raw = agent.log_bytes()
        per_reload = []
        for i in range(reloads):
            window = raw[offsets[i]:offsets[i + 1]].decode("utf-8", "replace")
            accepts = AGENT_ACCEPT.findall(window)
            spoe = [p for p in accepts if p not in healthchecks]
            per_reload.append(f"{len(spoe)} (+{len(accepts) - len(spoe)} checks)")
            check(spoe, f"the agent accepted no SPOE connection after reload {i + 1} "
                        f"({len(accepts)} health-check connections)")
        print(f"    agent: new SPOE connections after each reload: {', '.join(per_reload)}; "
              f"{len(AGENT_HAPROXY_DISCONNECT.findall(log))} closed by HAPROXY-DISCONNECT")

        haproxy.stop()
        agent.stop_checked()
        reports = agent.sanitizer_reports()
        check(not reports, "sanitizer reports:\n" + "\n".join(reports[:20]))
    finally:
        stop_load.set()
        for t in threads:
            t.join(max(0.0, min(15.0, stop_at + 15 - time.monotonic())))
        haproxy.stop()
        agent.stop()


def test_agent_user_drops_privileges(env):
    """--user nobody (only as root): the agent, put in place of the usual one behind the shared
    HAProxy, serves requests, and every thread runs as nobody: all four uids (real, effective,
    saved, filesystem) and gids in /proc/<pid>/task/*/status, and no supplementary groups."""
    if os.geteuid() != 0:
        print("    (not root: --user not checked)")
        return
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        print("    (no user nobody: --user not checked)")
        return
    port = env.haproxy.ports["http"]
    agent = env.new_agent(env.agent_args + ["--user", "nobody"], port=env.agent.port,
                          name="--user agent")
    env.agent.stop_checked()
    try:
        agent.start()
        good = wait_until(lambda: env.good_response(port), timeout=30, interval=0.2,
                          max_tries=150)
        check(good is not None, f"no request succeeds with the --user agent\n"
                                f"{agent.log_tail()}")
        pid = agent.pid
        tasks = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            uids = fields["Uid"].split()
            gids = fields["Gid"].split()
            groups = fields.get("Groups", "").split()
            check(uids == [str(pw.pw_uid)] * 4, f"thread {tid}: Uid {uids}, want {pw.pw_uid} x4")
            check(gids == [str(pw.pw_gid)] * 4, f"thread {tid}: Gid {gids}, want {pw.pw_gid} x4")
            check(groups == [], f"thread {tid}: supplementary groups {groups}")
        print(f"    agent {pid} ({len(tasks)} threads) runs as uid {pw.pw_uid} gid {pw.pw_gid} "
              f"and answered: {good!r}")
        agent.stop_checked()
        reports = agent.sanitizer_reports()
        check(not reports, "sanitizer reports:\n" + "\n".join(reports[:20]))
    finally:
        agent.stop()
        env.agent.start()
        # HAProxy's health check marked the agent DOWN while it was swapped: the next test
        # starts from a served request, not from the check's next rise.
        wait_until(lambda: env.good_response(port), timeout=30, interval=0.2, max_tries=150)


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples", "haproxy")


def test_examples_validate_and_answer(env):
    """examples/haproxy: the configuration for this HAProxy's generation passes `haproxy -c` as
    shipped (from the repository's root, as its README says), and answers a real request: a
    copy on free ports, pointed at the test's agent, gives an X-IP-Score in 0..100 with a 200,
    or a 403 below 20. The 2.6-3.0 file must also pass on 3.1+, which converts its `mode tcp`
    agent backend (README: "a mode tcp backend is converted automatically")."""
    gen = env.haproxy.gen
    name = "haproxy-3.x.cfg" if gen.mux else "haproxy-2.6.cfg"
    for cfg in ["haproxy-2.6.cfg", "haproxy-3.x.cfg"] if gen.mux else [name]:
        res = subprocess.run([env.haproxy.path, "-c", "-f", f"examples/haproxy/{cfg}"], cwd=REPO,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        out = (res.stdout + res.stderr).strip()
        check(res.returncode == 0, f"haproxy {gen} -c rejects examples/haproxy/{cfg}:\n{out}")
        warnings = [line for line in out.splitlines() if "[WARNING]" in line]
        print(f"    haproxy -c -f examples/haproxy/{cfg}: valid, {len(warnings)} warnings")
        for w in warnings[:5]:
            print(f"      {w.strip()}")

    workdir = os.path.join(env.tmp, "example")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(EXAMPLES, name)) as f:
        text = f.read()
    http_port, tcp_port = free_port(), free_port()
    spoe = re.search(r"config (examples/haproxy/\S+\.conf)", text)
    check(spoe is not None, f"{name}: no 'filter spoe ... config examples/haproxy/...conf'")
    for old, new in [("127.0.0.1:8080", f"127.0.0.1:{http_port}"),
                     ("127.0.0.1:8000", f"127.0.0.1:{tcp_port}"),
                     ("127.0.0.1:12345", f"127.0.0.1:{env.agent.port}"),
                     ("/tmp/haproxy-spop-example.sock", os.path.join(workdir, "admin.sock")),
                     (spoe.group(1), os.path.join(REPO, spoe.group(1)))]:
        check(old in text, f"{name} no longer contains {old!r}: update this test")
        text = text.replace(old, new)
    proc = hp.HAProxy(env.binary, workdir)
    try:
        proc.start(text, wait_ports=[http_port, tcp_port])

        def scored():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
                try:
                    conn.request("GET", "/", headers={"Connection": "close"})
                    resp = conn.getresponse()
                    body = resp.read().decode("utf-8", "replace").strip()
                    return resp.status, resp.getheader("X-IP-Score"), \
                        resp.getheader("X-IPRep-Error"), body
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                return None

        answer = wait_until(lambda: (lambda a: a if a and score_value(a[1] or "") is not None
                                     else None)(scored()), timeout=15, interval=0.2, max_tries=75)
        check(answer is not None, f"{name}: no response with an X-IP-Score: {scored()}\n"
                                  f"{proc.log_tail()}")
        status, score, error, body = answer
        want = 403 if int(score) < 20 else 200
        check(status == want, f"{name}: score {score} answered {status}, want {want}: {body!r}")
        check(error is None, f"{name}: X-IPRep-Error {error} with a score")
        if status == 200:
            check(body.endswith(f"your IP score is {score}"), f"{name}: body {body!r}")
        print(f"    {name} on HAProxy {gen}: {status}, X-IP-Score: {score}")
    finally:
        proc.stop()



def test_teardown_agent_exits_cleanly(env):
    """Last: with HAProxy stopped, the agent exits 0 on SIGTERM, and no start of it printed a
    sanitizer report."""
    env.haproxy.stop()
    env.agent.stop_checked()
    reports = env.agent.sanitizer_reports()
    check(not reports, "sanitizer reports:\n" + "\n".join(reports[:20]))


TESTS = [
    test_spop_check_marks_agent_up,
    test_healthcheck_section_marks_agent_up,
    test_http_named_arg_gets_score,
    test_http_unnamed_arg_gets_score,
    test_http_ipv6_client_gets_score,
    test_tcp_low_score_is_rejected,
    test_tcp_high_score_passes,
    test_load_without_spoe_errors,
    test_reload_under_load_without_spoe_errors,
    test_agent_user_drops_privileges,
    test_agent_stop_reports_errors_and_restart_recovers,
    test_examples_validate_and_answer,
]


class Scenarios(unittest.TestCase):
    """Every scenario of TESTS as a test of one shared Env (set by main, in that order)."""

    env = None

    def setUp(self):
        if self._testMethodName != "test_teardown_agent_exits_cleanly" \
                and not self.env.agent.alive():
            self.env.agent.start()

    def scenario(self, fn):
        try:
            fn(self.env)
        except BaseException:
            print(f"\n--- haproxy output (tail) ---\n{self.env.haproxy.log_tail()}\n"
                  f"--- agent output (tail) ---\n{self.env.agent.log_tail()}", flush=True)
            raise


for _fn in TESTS + [test_teardown_agent_exits_cleanly]:
    def _method(self, fn=_fn):
        self.scenario(fn)
    _method.__doc__ = (_fn.__doc__ or "").strip().split("\n")[0] or None
    setattr(Scenarios, _fn.__name__, _method)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", required=True, help="path to the agent binary")
    hp.add_arguments(ap)
    args = ap.parse_args()
    binary, status = hp.binary_for_main(args)
    if binary is None:
        return status
    agent_path = os.path.abspath(args.agent)
    if not os.access(agent_path, os.X_OK):
        print(f"agent binary not found or not executable: {agent_path}\n0 passed, 1 failed")
        return 1

    install_sigterm()
    print(binary, flush=True)
    tmp = tempfile.mkdtemp(prefix="spop-haproxy-test-")
    env = Scenarios.env = Env(binary, agent_path, args.agent_arg, tmp)

    def suite():
        return hp.scenario_suite(Scenarios, [fn.__name__ for fn in TESTS], args.patterns,
                                 "test_teardown_agent_exits_cleanly")

    return hp.run_on_env(env, tmp, args.keep, suite, f"HAProxy {binary.gen}",
                         lambda: f"--- agent output (tail) ---\n{env.agent.log_tail()}")


if __name__ == "__main__":
    sys.exit(main())
