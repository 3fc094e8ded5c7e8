"""The HAProxy side of the real-HAProxy tests: a binary per series, its configuration generation,
the process (start, -sf reload, stop, captured log), its admin socket, and HTTP clients.

    from pyspop import haproxy as hp
    from pyspop.agent import Agent

    binary = hp.resolve(series="3.4")         # or hp.resolve(path="/usr/sbin/haproxy")
    #   raises hp.Unavailable(reason) when that HAProxy is missing; hp.unavailable_exit(e) prints
    #   the loud SKIP (or FAIL when CI=true) banner and returns 77 (or 1) for main()
    agent = Agent("build/examples/deferred_agent", ["--delay-us", "1000"]).start()
    h = hp.HAProxy(binary)                    # its own temporary directory (h.dir)
    port = h.start_scoring([agent.port], processing="1s")
    #   one HTTP frontend whose SPOE engine sends check-client-ip (ip=src) to the agents and
    #   answers BODY_FORMAT: "score=<sess.iprep.ip_score> error=<txn.iprep.error> ptime=..."
    status, headers, body = hp.http_get(port)
    hp.good_body(body)                         # this request's event succeeded with a 0..100 score
    h.wait_server("iprep-backend", "agent1", "UP")
    hp.metric(agent, 'spop_agent_frames_received_total{type="notify"}')   # its /metrics
    h.spoe_events(since=mark)                  # SPOE log lines (regex matches: st, agent, ...)
    load = hp.Load(port, clients=20).start(); ...; load.stop(); load.failures()
    h.stop(); agent.stop()

Binaries (resolve): `path` (e.g. the system's /usr/sbin/haproxy, 2.6 on Debian 12) or `series`
"X.Y", looked up with scripts/haproxy-versions --path (its cache of Debian's 3.0, 3.2 and 3.4
builds; `scripts/haproxy-versions` fetches them). Binary.gen says what differs by version.

Configuration generations (Generation, from `haproxy -v`):
    2.6-3.0  SPOE in applets: the agent backend is `mode tcp`, and the SPOE agent takes
             `timeout hello` and `timeout idle`;
    3.1+     SPOE on the SPOP multiplexer: `mode spop`, and those two timeouts are left out
             (gen.mux);
    3.4+     also `healthcheck` sections (`type spop-check`) (gen.healthcheck_sections).
spoe_conf(), agent_backend() and healthcheck_section() write those sections; HAProxy.start()
takes a whole configuration (GLOBAL and DEFAULTS help) or start_scoring() builds the usual one.

Processes: HAProxy runs in the foreground (-db) in its own process group, stdout/stderr (the
SPOE log: `log stdout format raw`) to h.dir/haproxy-N.log, N the generation (reload() starts
the next one with `-sf <pid>`). Every wait is bounded; stop() is SIGTERM then SIGKILL to the
group. Every HAProxy still running is killed at exit, and pyspop.agent.kill_all() (run by
pyspop.runner and on SIGTERM after install_sigterm()) kills them too.

Standard library only; nothing here knows the agent's internals.
"""

import atexit
import collections
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

from . import agent as _agent
from . import runner as _runner
from .ports import free_port, ipv6_loopback_usable

SKIP = 77
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERSIONS_SCRIPT = os.path.join(REPO, "scripts", "haproxy-versions")
SYSTEM_HAPROXY = "/usr/sbin/haproxy"


def in_ci():
    return os.environ.get("CI", "").lower() == "true"


# ---------------------------------------------------------------------------------------------
# binaries and generations

class Unavailable(Exception):
    """The HAProxy asked for is not there (str(e) says why and how to fetch it). `series` is
    the X.Y asked for, None for a path."""

    def __init__(self, message, series=None):
        super().__init__(message)
        self.series = series


class Generation:
    """What differs between the HAProxy versions under test."""

    def __init__(self, series):
        self.series = series                         # (major, minor)
        self.mux = series >= (3, 1)                  # SPOP multiplexer, `mode spop` backends
        self.healthcheck_sections = series >= (3, 4)

    @property
    def agent_mode(self):
        return "spop" if self.mux else "tcp"

    def legacy_timeouts(self, hello="2s", idle="2m"):
        """The SPOE agent's `timeout hello`/`idle` lines (2.6-3.0), "" on 3.1+ (ignored there)."""
        return "" if self.mux else f"    timeout hello {hello}\n    timeout idle {idle}\n"

    def __str__(self):
        return f"{self.series[0]}.{self.series[1]}"


def parse_series(version_line):
    """(major, minor) from the first line of `haproxy -v`, e.g. "HAProxy version 3.2.26-1 ..."
    (2.6 says "HA-Proxy version" in some builds)."""
    m = re.search(r"HA-?Proxy version (\d+)\.(\d+)", version_line)
    return (int(m.group(1)), int(m.group(2))) if m else None


class Binary:
    """A runnable HAProxy: path, version_line, series (major, minor), gen (Generation)."""

    def __init__(self, path, version_line, series):
        self.path = path
        self.version_line = version_line
        self.series = series
        self.gen = Generation(series)

    def __str__(self):
        return f"{self.version_line}  [{self.path}]"


def resolve(series=None, path=None, versions_script=VERSIONS_SCRIPT):
    """The HAProxy to test: `series` "X.Y" from scripts/haproxy-versions' cache, else `path`
    (a name on $PATH or a file; default the system's). Checks `haproxy -v` (and that it is the
    series asked for). Raises Unavailable when it is missing, AssertionError when it runs but
    says something else."""
    if series:
        res = subprocess.run([sys.executable, versions_script, "--path", series],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        found = res.stdout.strip() if res.returncode == 0 else None
        if not found:
            raise Unavailable(f"HAProxy {series} is not available: "
                              f"{(res.stdout + res.stderr).strip()}\n"
                              f"Fetch it with: scripts/haproxy-versions {series}", series)
    else:
        path = path or SYSTEM_HAPROXY
        found = shutil.which(path) or (path if os.access(path, os.X_OK) else None)
        if not found:
            raise Unavailable(f"haproxy not found ({path})")
    out = subprocess.run([found, "-v"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=30)
    line = out.stdout.splitlines()[0] if out.stdout else ""
    got = parse_series(line)
    if got is None or (series and series != f"{got[0]}.{got[1]}"):
        raise AssertionError(f"{found} -v says {line!r} (exit {out.returncode})"
                             f"{', want ' + series if series else ''}: {out.stderr.strip()[:500]}")
    return Binary(found, line, got)


def unavailable_exit(e, what="its scenarios"):
    """Prints the loud banner for Unavailable `e` and the summary line; returns the exit status:
    77 (skip), or 1 when CI=true and a series was asked for (CI must run every version; a
    missing system haproxy is a skip everywhere, meson registers those tests only with one)."""
    fail = in_ci() and e.series is not None
    banner = "#" * 78
    print(f"{banner}\n{'FAIL' if fail else 'SKIP'}: {e}\n{what} did NOT run.\n{banner}")
    print("0 passed, 1 failed" if fail else "0 passed, 0 failed", flush=True)
    return 1 if fail else SKIP


# ---------------------------------------------------------------------------------------------
# configuration

GLOBAL = """\
global
    log stdout format raw local0
    stats socket {admin_sock} level admin
    stats timeout 10s
{extra}"""

DEFAULTS = """\
defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""

# What the scoring frontends answer: the agent's score (sess scope) and, per transaction, the
# SPOE error code and processing time. The frontend unsets the session's score after each
# response, so on a keep-alive connection every score shown was set by this request's ACK.
BODY_FORMAT = ("score=%[var(sess.iprep.ip_score)] error=%[var(txn.iprep.error)]"
               " ptime=%[var(txn.iprep.ptime)]")
BODY = re.compile(r"^score=(?P<score>\S*) error=(?P<error>\S*) ptime=(?P<ptime>\S*)$")

SPOE_OPTIONS = ("set-on-error error", "set-process-time ptime")


def spoe_conf(gen, engine, agent, backend, *, args="ip=src", event="on-frontend-http-request",
              message="check-client-ip", var_prefix="iprep", processing="2s",
              options=SPOE_OPTIONS, hello="2s", idle="2m"):
    """One SPOE file: [engine], spoe-agent `agent` using `backend`, one spoe-message. `options`
    are `option ...` lines (e.g. "dontlog-normal"); hello/idle go in on 2.6-3.0 only."""
    opts = "".join(f"    option {o}\n" for o in options)
    return (f"[{engine}]\n"
            f"spoe-agent {agent}\n"
            f"    messages {message}\n"
            f"    option var-prefix {var_prefix}\n"
            f"{opts}"
            f"{gen.legacy_timeouts(hello, idle)}"
            f"    timeout processing {processing}\n"
            f"    use-backend {backend}\n"
            f"    log global\n\n"
            f"spoe-message {message}\n"
            f"    args {args}\n"
            f"    event {event}\n")


def agent_backend(gen, name, servers, *, balance=None, check="check inter 1s", extra=""):
    """A backend of SPOP agents with `option spop-check`. `servers`: (name, "host:port") pairs;
    `check` goes on every server line; `extra`: more lines (indented)."""
    lines = [f"backend {name}", f"    mode {gen.agent_mode}"]
    if balance:
        lines.append(f"    balance {balance}")
    lines += ["    option spop-check", "    timeout connect 5s", "    timeout server 3m"]
    text = "\n".join(lines) + "\n" + extra
    for sname, addr in servers:
        text += f"    server {sname} {addr} {check}".rstrip() + "\n"
    return text


def healthcheck_section(name, backend, server, addr, check="check inter 1s"):
    """3.4+: a `healthcheck` section `name` of `type spop-check` and a backend whose only server
    uses it instead of `option spop-check`."""
    return (f"\nhealthcheck {name}\n    type spop-check\n\n"
            f"backend {backend}\n    mode spop\n"
            f"    server {server} {addr} {check} healthcheck {name}\n")


# ---------------------------------------------------------------------------------------------
# SPOE log lines

# One SPOE log line per processed event (SPOE.txt §4):
#   2.6-3.0: SPOE: [AGENT] <EVENT:NAME> sid=SID st=STATUS reqT/qT/wT/resT/pT idles/applets
#            nb_sending/nb_waiting nb_error/nb_processed
#   3.1+:    SPOE: [AGENT] <EVENT:NAME> sid=SID st=STATUS pT nb_error/nb_processed
# On 3.1+ (seen on Debian's 3.2.26 and 3.4.7) the first counter moves on every successful
# event after the first one (0/1, 1/2, 2/3... with st=0), also with a minimal independent agent
# written for the purpose, so it is not an error count there: read it on 2.6-3.0 only and rely
# on st= (and on each response's own error variable) everywhere.
SPOE_LOG = re.compile(r"SPOE: \[(?P<agent>[^\]]+)\] <(?P<kind>EVENT|GROUP):(?P<name>[^>]+)>"
                      r" sid=(?P<sid>\d+) st=(?P<st>-?\d+)"
                      r"(?: \S+(?: \d+/\d+ \d+/\d+)? (?P<nb_error>\d+)/(?P<nb_processed>\d+))?")


# ---------------------------------------------------------------------------------------------
# small helpers

def wait_until(pred, timeout, interval=0.1, max_tries=1000):
    """Polls pred() until it returns a truthy value, at most `timeout` seconds and `max_tries`
    calls. Returns the last value."""
    deadline = time.monotonic() + timeout
    value = None
    for _ in range(max_tries):
        value = pred()
        if value or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return value


def can_connect(host, port, timeout=0.5):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
        return True
    except OSError:
        return False


def http_get(port, host="127.0.0.1", path="/", timeout=5.0, headers=None):
    """One request on a fresh connection (Connection: close). Returns (status, headers as a
    dict with lower-case names, body text stripped)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}, Connection="close"))
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace").strip()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def metric(agent, name, host="127.0.0.1", timeout=2.0):
    """The value of one sample line (`name` including its labels) of the Prometheus page at
    http://host:<agent.metrics_port>/metrics (an Agent started with metrics=True), or None when
    it does not answer or has no such line."""
    try:
        with urllib.request.urlopen(f"http://{host}:{agent.metrics_port}/metrics",
                                    timeout=timeout) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        return None
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def score_value(score):
    """The score as an int if it is one in 0..100, else None."""
    try:
        v = int(score)
    except ValueError:
        return None
    return v if 0 <= v <= 100 else None


def parse_body(body):
    """(score, error, ptime) strings of a BODY_FORMAT answer; AssertionError otherwise."""
    m = BODY.match(body)
    if m is None:
        raise AssertionError(f"unexpected response body {body!r}")
    return m.group("score"), m.group("error"), m.group("ptime")


def good_body(body):
    """True when the body reports this request's event done without error and a valid score."""
    m = BODY.match(body)
    return (m is not None and m.group("error") == "" and m.group("ptime") != ""
            and score_value(m.group("score")) is not None)


def tcp_exchange(port, payload, timeout=5.0, host="127.0.0.1"):
    """Sends payload and reads until EOF. Returns the bytes read (b"" when the connection was
    closed or reset without an answer)."""
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        try:
            s.sendall(payload)
            for _ in range(1000):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    return data


# ---------------------------------------------------------------------------------------------
# processes

_live = set()


def kill_all():
    for p in list(_live):
        p.stop(timeout=2)


atexit.register(kill_all)
_agent.register_cleanup(kill_all)  # pyspop.runner and the SIGTERM handler stop HAProxy too


class Process:
    """A child in its own session (process group), stdout+stderr appended to `log_path`."""

    def __init__(self, cmd, log_path):
        self.cmd = cmd
        self.log_path = log_path
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        _live.add(self)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout=10.0):
        """SIGTERM to the group, SIGKILL after `timeout`. Returns (returncode, seconds, killed)."""
        if self.proc is None:
            return None, 0.0, False
        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.signal_group(signal.SIGKILL)
                self.proc.wait(5)
        self.signal_group(signal.SIGKILL)  # children it may have left in its group
        rc = self.proc.returncode
        self.proc = None
        _live.discard(self)
        return rc, time.monotonic() - t0, killed

    def log_text(self, since=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=30):
        return "\n".join(self.log_text().splitlines()[-lines:])


class HAProxy:
    """One HAProxy under test in its own folder `dir` (a new temporary one by default, removed
    by stop(remove=True)): configuration h.cfg, admin socket h.admin_sock, logs haproxy-N.log.

    start(config, wait_ports)  writes h.cfg, `haproxy -c`, starts it (-db), waits until every
                               port of wait_ports accepts (AssertionError with the log if not)
    reload()                   the next generation with -sf <pid>; waits for the old one's exit
    stop()                     every generation (SIGTERM, bounded, then SIGKILL)
    command("show stat")       one admin-socket command; server_stat(), wait_server()
    log_size(), log_text(since), spoe_events(since, agent): the current generation's log
    spoe_events_all(agent)     (generation, match) over every generation's log
    """

    def __init__(self, binary, workdir=None):
        self.binary = binary
        self.gen = binary.gen
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="spop-haproxy-")
        os.makedirs(self.dir, exist_ok=True)
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.admin_sock = os.path.join(self.dir, "admin.sock")
        self.generations = []   # Process, oldest first; the last one is self.process
        self.wait_ports = []
        self.ports = {}         # what start_scoring() and callers note (name -> port)

    @property
    def path(self):
        return self.binary.path

    @property
    def process(self):
        return self.generations[-1] if self.generations else None

    @property
    def pid(self):
        return self.process.pid if self.process else None

    @property
    def log_path(self):
        return self.process.log_path if self.process else os.path.join(self.dir, "haproxy-1.log")

    def running(self):
        return self.process is not None and self.process.running()

    def global_section(self, extra=""):
        """GLOBAL with this instance's admin socket; `extra`: more indented lines."""
        return GLOBAL.format(admin_sock=self.admin_sock, extra=extra)

    def write(self, name, text):
        """Writes a file (an SPOE configuration...) into dir; returns its path."""
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check_config(self, cfg=None):
        """`haproxy -c`; AssertionError with its output when it rejects the file. Returns the
        output (warnings)."""
        res = subprocess.run([self.path, "-c", "-f", cfg or self.cfg], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=30)
        out = (res.stdout + res.stderr).strip()
        if res.returncode != 0:
            raise AssertionError(f"haproxy {self.gen} -c rejected {cfg or self.cfg}:\n{out}")
        return out

    def _spawn(self, old_pid=None):
        n = len(self.generations) + 1
        cmd = [self.path, "-db", "-f", self.cfg]
        if old_pid is not None:
            cmd += ["-sf", str(old_pid)]
        self.generations.append(
            Process(cmd, os.path.join(self.dir, f"haproxy-{n}.log")).start())

    def start(self, config=None, wait_ports=(), timeout=15.0):
        """Writes `config` (when given) to h.cfg, checks it and starts HAProxy; waits (bounded)
        until every port in wait_ports (ints, or (host, port)) accepts connections."""
        if config is not None:
            self.write("haproxy.cfg", config)
        self.check_config()
        self.wait_ports = [p if isinstance(p, tuple) else ("127.0.0.1", p) for p in wait_ports]
        self._spawn()
        up = wait_until(lambda: not self.process.running() or all(
            can_connect(h, p) for h, p in self.wait_ports), timeout=timeout)
        if not (up and self.process.running()):
            raise AssertionError(f"haproxy did not start:\n{self.log_tail()}")
        return self

    def reload(self, timeout=15.0):
        """Starts the next generation with -sf and waits (at most `timeout` s) until the previous
        one has exited. Returns (old pid, new pid, seconds until the old one exited, its exit
        status)."""
        old = self.process
        old_pid = old.pid
        t0 = time.monotonic()
        self._spawn(old_pid)
        try:
            rc = old.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"old haproxy {old_pid} still running {timeout:.0f}s after "
                                 f"-sf\n{old.log_tail()}") from None
        took = time.monotonic() - t0
        if not self.process.running():
            raise AssertionError(f"new haproxy exited with {self.process.proc.returncode}\n"
                                 f"{self.log_tail()}")
        return old_pid, self.process.pid, took, rc

    def stop(self, remove=False):
        for p in self.generations:
            p.stop()
        if remove and self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # admin socket

    def command(self, cmd, timeout=5.0):
        """Runs one command on the admin socket; returns its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.admin_sock)
            s.sendall(cmd.encode() + b"\n")
            data = b""
            for _ in range(10000):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode("utf-8", "replace")

    def server_stat(self, backend, server):
        """The `show stat` row of one server as a dict (status, check_status, ...)."""
        lines = self.command("show stat").splitlines()
        if not (lines and lines[0].startswith("# ")):
            raise AssertionError(f"unexpected show stat answer: {lines[:3]}")
        header = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == backend and row.get("svname") == server:
                return row
        raise AssertionError(f"no {backend}/{server} in show stat")

    def server_status(self, backend, server):
        return self.server_stat(backend, server)["status"]

    def wait_server(self, backend, server, want="UP", timeout=15.0, l7ok=False, interval=0.05):
        """Waits until the server's status starts with `want` (and, with l7ok, its last check
        says L7OK); AssertionError with the row otherwise."""
        def ok():
            row = self.server_stat(backend, server)
            return row["status"].startswith(want) and (not l7ok or row["check_status"] == "L7OK")

        if not wait_until(ok, timeout=timeout, interval=interval, max_tries=100000):
            row = self.server_stat(backend, server)
            raise AssertionError(f"{backend}/{server} not {want}{'/L7OK' if l7ok else ''} after "
                                 f"{timeout:.0f}s: status={row['status']} check_status="
                                 f"{row['check_status']} last_chk={row.get('last_chk')}")

    # logs

    def log_paths(self):
        return [p.log_path for p in self.generations]

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    log_mark = log_size

    def log_text(self, since=0):
        return self.process.log_text(since) if self.process else ""

    def log_tail(self, lines=30):
        return self.process.log_tail(lines) if self.process else ""

    def spoe_events(self, since=0, agent=None):
        """SPOE log lines of the current generation written after byte offset `since`, as
        SPOE_LOG matches (optionally only those of SPOE agent `agent`)."""
        return [m for m in SPOE_LOG.finditer(self.log_text(since))
                if agent is None or m.group("agent") == agent]

    def spoe_events_all(self, agent=None):
        """(generation number, match) for every SPOE log line of every generation."""
        found = []
        for n, p in enumerate(self.generations, 1):
            found += [(n, m) for m in SPOE_LOG.finditer(p.log_text())
                      if agent is None or m.group("agent") == agent]
        return found

    def alerts(self):
        """Every "[ALERT]" line of every generation."""
        return [f"haproxy-{n}: {line}" for n, p in enumerate(self.generations, 1)
                for line in p.log_text().splitlines() if "[ALERT]" in line]

    # the usual setup

    def start_scoring(self, agent_ports, *, processing="1s", balance=None,
                      check="check inter 500ms fall 2 rise 2", spoe_options=SPOE_OPTIONS,
                      backend_extra="", args="ip=src", message="check-client-ip",
                      global_extra="", frontend_extra="", body_format=BODY_FORMAT, ipv6=False,
                      hello="2s", idle="2m"):
        """Starts HAProxy with one HTTP frontend (`fe_http`, port returned and in
        ports["http"]) whose SPOE engine `iprep` (agent `iprep-agent`, var-prefix iprep) sends
        `message` with `args` on every request to backend `iprep-backend` of servers agent1,
        agent2... on 127.0.0.1:<agent_ports>. It answers 200 with `body_format` (an lf-string;
        default BODY_FORMAT) and unsets the score after each response.
        frontend_extra: more frontend lines (indented), before the answer (http-request deny
        ..., http-request set-var ...). ipv6: also bind [::1] (ports["http6"]) when IPv6
        loopback works. hello/idle: the SPOE timeouts on 2.6-3.0. Returns the HTTP port."""
        self.write("spoe.conf", spoe_conf(self.gen, "iprep", "iprep-agent", "iprep-backend",
                                          args=args, message=message, processing=processing,
                                          options=spoe_options, hello=hello, idle=idle))
        port = free_port()
        self.ports["http"] = port
        bind6 = ""
        if ipv6 and ipv6_loopback_usable():
            self.ports["http6"] = free_port(socket.AF_INET6, "::1")
            bind6 = f"    bind [::1]:{self.ports['http6']}\n"
        servers = [(f"agent{i}", f"127.0.0.1:{p}") for i, p in enumerate(agent_ports, 1)]
        cfg = (self.global_section(global_extra) + "\n" + DEFAULTS + "\n"
               f"frontend fe_http\n    mode http\n    bind 127.0.0.1:{port}\n{bind6}"
               f"    filter spoe engine iprep config {self.dir}/spoe.conf\n"
               f"{frontend_extra}"
               f"    http-request return status 200 content-type text/plain lf-string "
               f"\"{body_format}\"\n"
               f"    http-after-response unset-var(sess.iprep.ip_score)\n"
               f"    http-after-response set-header x-haproxy-pid %pid\n\n"
               + agent_backend(self.gen, "iprep-backend", servers, balance=balance, check=check,
                               extra=backend_extra))
        self.start(cfg, wait_ports=[port])
        return port


# ---------------------------------------------------------------------------------------------
# load

OK, SPOE, HTTP, CONN = "scored", "spoe-error", "http-error", "conn-error"


class Load:
    """`clients` threads, each with one keep-alive HTTP connection (a new one after an error),
    sending requests back to back until stop(), `deadline` seconds, or `requests` per client.
    Every request is kept in `results` as (start, end, outcome, detail, body): outcome OK
    (good_body), SPOE (detail: the error code from the body, or the body), HTTP (status), CONN
    (exception; body "")."""

    def __init__(self, port, clients=30, deadline=60.0, requests=None, host="127.0.0.1",
                 timeout=10.0):
        self.port = port
        self.host = host
        self.clients = clients
        self.deadline = deadline
        self.requests = requests
        self.timeout = timeout
        self.results = []  # list.append is atomic: no lock needed
        self.stop_event = threading.Event()
        self.threads = []
        self.t0 = None
        self.elapsed = 0.0

    def _client(self, stop_at):
        conn = None
        try:
            for _ in range(self.requests or 10_000_000):
                if self.stop_event.is_set() or time.monotonic() > stop_at:
                    return
                t = time.monotonic()
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(self.host, self.port,
                                                          timeout=self.timeout)
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    body = resp.read().decode("utf-8", "replace").strip()
                    if resp.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as e:
                    if conn is not None:
                        conn.close()
                    conn = None
                    self.results.append((t, time.monotonic(), CONN, type(e).__name__, ""))
                    time.sleep(0.01)
                    continue
                end = time.monotonic()
                if resp.status != 200:
                    self.results.append((t, end, HTTP, str(resp.status), body))
                elif good_body(body):
                    self.results.append((t, end, OK, "", body))
                else:
                    m = BODY.match(body)
                    self.results.append((t, end, SPOE, m.group("error") if m else body[:60],
                                         body))
        finally:
            if conn is not None:
                conn.close()

    def start(self):
        self.t0 = time.monotonic()
        stop_at = self.t0 + self.deadline
        self.threads = [threading.Thread(target=self._client, args=(stop_at,), daemon=True)
                        for _ in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def wait(self, timeout=None):
        """Waits for the clients to end by themselves (requests, deadline); then stop()."""
        end = time.monotonic() + (self.deadline + 15 if timeout is None else timeout)
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return self.stop()

    def stop(self):
        """Stops the clients (once; a second call changes nothing). Returns the duration;
        AssertionError when a client does not stop."""
        if not self.stop_event.is_set():
            self.stop_event.set()
            for t in self.threads:
                t.join(15)
            self.elapsed = time.monotonic() - self.t0
        if any(t.is_alive() for t in self.threads):
            raise AssertionError("load clients did not stop")
        return self.elapsed

    def count(self, since=0.0, until=float("inf"), outcome=None):
        return sum(1 for r in list(self.results) if since <= r[0] < until
                   and (outcome is None or r[2] == outcome))

    def failures(self, since=0.0, until=float("inf")):
        return [r for r in list(self.results) if since <= r[0] < until and r[2] != OK]

    def when(self, failures, limit=8):
        """Start times of failures, in seconds since the load started."""
        return " ".join(f"{r[0] - self.t0:.2f}" for r in failures[:limit])

    @staticmethod
    def summary(failures):
        kinds = collections.Counter(f"{r[2]}:{r[3]}" for r in failures)
        return ", ".join(f"{k} x{n}" for k, n in kinds.most_common()) or "none"


# ---------------------------------------------------------------------------------------------
# command line

def add_arguments(ap):
    """The options every real-HAProxy script takes: --haproxy PATH | --series X.Y
    [--haproxy-versions SCRIPT], --agent-arg (repeatable), -k PATTERN (repeatable), --keep."""
    ap.add_argument("--haproxy", default=None,
                    help=f"path to haproxy (default {SYSTEM_HAPROXY}, or haproxy on $PATH)")
    ap.add_argument("--series", metavar="X.Y",
                    help="run the HAProxy X.Y that scripts/haproxy-versions keeps in its cache; "
                         "when it is not there: skip (exit 77), or fail when CI=true")
    ap.add_argument("--haproxy-versions", metavar="SCRIPT", default=VERSIONS_SCRIPT,
                    help="path to scripts/haproxy-versions (with --series)")
    ap.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                    help="extra agent argument, e.g. --agent-arg=--engine=epoll (repeatable)")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="run only tests whose id contains this (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")


def binary_from_args(args):
    """resolve() for add_arguments' options. --haproxy without a series falls back to "haproxy"
    on $PATH when the system path is missing."""
    if args.series:
        return resolve(series=args.series, versions_script=args.haproxy_versions)
    if args.haproxy:
        return resolve(path=args.haproxy)
    try:
        return resolve(path=SYSTEM_HAPROXY)
    except Unavailable:
        return resolve(path="haproxy")


def binary_for_main(args, what="its scenarios"):
    """binary_from_args() for a test script's main(): (binary, None), or (None, exit status)
    once the reason was printed (unavailable_exit(), or FAIL for a broken binary)."""
    try:
        return binary_from_args(args), None
    except Unavailable as e:
        return None, unavailable_exit(e, what)
    except AssertionError as e:
        print(f"FAIL: {e}\n0 passed, 1 failed")
        return None, 1


def scenario_suite(cls, names, patterns, last):
    """The tests `names` of TestCase `cls` that match `patterns` (all without any; see
    pyspop.runner.select), then `last` (a teardown check), which always runs."""
    suite = _runner.select(unittest.TestSuite(cls(n) for n in names), patterns)
    suite.addTest(cls(last))
    return suite


def run_on_env(env, tmp, keep, make_suite, label, setup_tail):
    """The rest of a test script's main(): starts `env` (its start() raises AssertionError on a
    failed setup: then `setup_tail()` is printed, what the failing process said), runs the
    suite `make_suite()` returns with pyspop.runner, and always stops `env` and removes `tmp`
    (kept with --keep), also on SIGTERM once pyspop.agent.install_sigterm() ran. Returns the
    exit status."""
    try:
        try:
            env.start()
        except AssertionError as e:
            print(f"FAIL setup: {e}\n{setup_tail()}")
            print("0 passed, 1 failed")
            return 1
        return _runner.run(make_suite(), label=label)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut cleanup
        env.stop()
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
