"""The agent process harness: start on a free loopback port, capture the log, stop with bounded
waits, and kill every agent still running when the suite is interrupted.

    a = Agent("build/agent/agent", ["--list", "x.ipset=5"], engine="epoll").start()
    with a.connect() as c: ...
    a.stop()    # SIGTERM, bounded wait, SIGKILL to the process group; returns the exit status

Every agent runs in its own session (process group). `install_sigterm()` makes a SIGTERM to the
suite kill them all and raise Terminated; `kill_all()` is also registered with atexit.
"""

import atexit
import fcntl
import os
import re
import resource
import signal
import socket
import subprocess
import tempfile
import time

from .client import DEFAULT_TIMEOUT, Conn
from .ports import free_port

LEVEL_RE = re.compile(r"\blevel=(error|warn)\b")
# What ASan/UBSan/LSan/TSan print when the agent is built with sanitizers.
SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:"
                          r"|WARNING: ThreadSanitizer")

_live = set()
_cleanups = []   # more kill_all() work (pyspop.haproxy registers its HAProxy processes)


def register_cleanup(fn):
    """fn() runs in kill_all() too (and so at exit, on SIGTERM and at the end of runner.run)."""
    _cleanups.append(fn)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by the SIGTERM handler of install_sigterm(). A KeyboardInterrupt,
    so that unittest lets it through instead of recording it against the running test and going
    on with the next ones."""


def kill_all():
    """SIGKILL to every agent still running (their whole process groups), bounded waits."""
    for a in list(_live):
        try:
            if a.proc is not None and a.proc.poll() is None:
                os.killpg(a.proc.pid, signal.SIGKILL)
                a.proc.wait(5)
        except Exception:
            pass
        _live.discard(a)
    for fn in _cleanups:
        try:
            fn()
        except Exception:
            pass


atexit.register(kill_all)


def _on_sigterm(signum, _frame):
    kill_all()
    raise Terminated("signal %d" % signum)


def install_sigterm():
    signal.signal(signal.SIGTERM, _on_sigterm)


def vmrss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def raise_nofile(want):
    """Raises the soft RLIMIT_NOFILE towards `want`; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def child_log_file(prefix):
    """A temporary file for a child's stdout and stderr that the test reads while the child
    writes: O_APPEND on the open file description the child inherits. Without it the child's
    write(2) lands at the description's offset, which it shares with this process: a read here
    (seek(0), read to the end) moves it, and a line written in between overwrites earlier
    bytes instead of growing the file (lost; a log_since(mark) stays empty)."""
    f = tempfile.TemporaryFile(prefix=prefix)
    fd = f.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return f


def logged_start(agent):
    """Default readiness: the agent logged event=start (no probe connection, which would show
    in its counters)."""
    return "event=start" in agent.log_text()


class Agent:
    """One agent process on loopback.

    binary, args   the executable and extra arguments
    address        the -a address ("127.0.0.1", "::1"); tcp=False omits -a (Unix socket runs)
    workers        -n
    engine         --engine, or None to leave it out
    metrics        True: also --metrics 127.0.0.1:<free port> (metrics_port)
    nofile         RLIMIT_NOFILE for the child
    ready          predicate(agent) -> bool polled until true (default: event=start logged)
    ready_timeout  seconds to wait for it; stop_timeout: SIGTERM grace before SIGKILL
    port           a fixed port (kept across restarts, as an HAProxy configuration needs);
                   "keep": a free one picked at the first start, then kept (no window in
                   which another server picks it before the agent binds it);
                   default: a free one picked at every start
    name           how failures name it ("agent")

    Any binary with the agent's -p/-n/-a (and --engine when `engine` is set) works, e.g.
    build/examples/deferred_agent: `args` go last.

    stdout and stderr go to one temporary file per start (O_APPEND: child_log_file()):
    log_text(), log_mark()/log_since(), problems_since() (lines at level=error or warn),
    log_tail(); log_history() is the text of every start so far (sanitizer_reports() searches
    it).
    """

    def __init__(self, binary, args=(), address="127.0.0.1", workers=2, engine=None, tcp=True,
                 nofile=None, metrics=False, ready=None, ready_timeout=5.0, stop_timeout=10.0,
                 port=None, name="agent"):
        self.binary = binary
        self.args = list(args)
        self.nofile = nofile
        self.address = address
        self.workers = workers
        self.engine = engine
        self.tcp = tcp
        self.with_metrics = metrics
        self.ready = ready or logged_start
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.proc = None        # the running process; None once stopped
        self.popen = None       # the last process started, kept after stop()
        self.keep_port = port == "keep"
        self.fixed_port = None if self.keep_port else port
        self.port = None if self.keep_port else port
        self.name = name
        self.metrics_port = None
        self.logf = None
        self.past_logs = []     # the log text of every earlier start
        self.rc = None
        self.cmd = None

    @property
    def addr(self):
        return (self.address, self.port)

    @property
    def family(self):
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    @property
    def pid(self):
        return self.popen.pid if self.popen is not None else None

    def command(self):
        cmd = [self.binary, "-p", str(self.port), "-n", str(self.workers)]
        if self.engine is not None:
            cmd += ["--engine", self.engine]
        if self.tcp:
            cmd += ["-a", self.address]
        if self.with_metrics:
            cmd += ["--metrics", "127.0.0.1:%d" % self.metrics_port]
        return cmd + self.args

    def start(self, ready_timeout=None):
        """Starts the agent and waits until ready; retries (3 times) when a port it was given
        turned out to be in use. Raises AssertionError with the log otherwise."""
        ready_timeout = self.ready_timeout if ready_timeout is None else ready_timeout
        last = ""
        for attempt in range(3):
            if self.fixed_port is None:
                self.port = free_port(self.family, self.address)
            elif attempt:
                time.sleep(0.5 * attempt)  # the fixed port was just released by the last one
            if self.with_metrics:
                self.metrics_port = free_port()
            self.cmd = cmd = self.command()
            if self.logf is not None:
                self.past_logs.append(self.log_text())
                self.logf.close()
            self.logf = child_log_file("agent-log-")
            limit = self.nofile

            def preexec():
                if limit is not None:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

            self.proc = self.popen = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                start_new_session=True, preexec_fn=preexec if limit is not None else None)
            _live.add(self)
            deadline = time.monotonic() + ready_timeout
            exited = False
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    exited = True
                    break
                try:
                    if self.ready(self):
                        if self.keep_port:
                            self.fixed_port = self.port
                        return self
                except OSError:
                    pass
                time.sleep(0.02)
            last = self.log_text()
            self.stop()
            if "in use" not in last:
                break
        if exited:
            raise AssertionError("agent did not start, exit status %r (%s): %s"
                                 % (self.rc, " ".join(cmd), last.strip()))
        raise AssertionError("agent did not start within %.0f s (%s): %s"
                             % (ready_timeout, " ".join(cmd), last.strip()))

    def log_bytes(self):
        self.logf.flush()
        self.logf.seek(0)
        return self.logf.read()

    def log_text(self):
        return self.log_bytes().decode("utf-8", "replace")

    log = log_text

    def log_mark(self):
        return len(self.log_bytes())

    def log_since(self, mark):
        self.logf.seek(0)
        return self.logf.read()[mark:].decode("utf-8", "replace")

    def problems_since(self, mark):
        return [l for l in self.log_since(mark).splitlines() if LEVEL_RE.search(l)]

    def log_tail(self, lines=30):
        return "\n".join(self.log_text().splitlines()[-lines:]) if self.logf else ""

    def log_history(self):
        """The log of every start, oldest first."""
        return "".join(self.past_logs) + (self.log_text() if self.logf else "")

    def sanitizer_reports(self):
        """ASan/UBSan/LSan/TSan findings in any start's log."""
        return [l.strip() for l in self.log_history().splitlines() if SANITIZER_RE.search(l)]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss(self):
        return vmrss(self.proc.pid)

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=None):
        """SIGTERM, bounded wait, then SIGKILL to the process group. Returns the exit status."""
        timeout = self.stop_timeout if timeout is None else timeout
        if self.proc is None:
            return self.rc
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.rc = self.proc.returncode
        _live.discard(self)
        self.proc = None
        return self.rc

    def stop_checked(self, timeout=None):
        """stop(), and AssertionError unless the agent exited with 0 on SIGTERM within the grace
        time (a sanitizer report at exit, a leak for example, makes it abort)."""
        if self.proc is None:
            return self.rc
        t0 = time.monotonic()
        rc = self.stop(timeout)
        took = time.monotonic() - t0
        if rc != 0:
            killed = rc == -signal.SIGKILL
            raise AssertionError(
                f"{self.name} " + (f"ignored SIGTERM for {took:.1f}s (SIGKILLed)" if killed else
                                   f"exited with {rc} on SIGTERM, want 0")
                + "\n" + self.log_tail())
        return rc

    def kill(self):
        """SIGKILL to the process group, bounded wait (the agent is then stopped)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        return self.stop()

    def close(self):
        """Closes the log (after stop())."""
        if self.logf is not None:
            self.logf.close()

    def connect(self, timeout=DEFAULT_TIMEOUT):
        return Conn(self.addr, self.family, timeout)


def run_agent(binary, args, timeout=5.0):
    """Runs the agent expecting it to exit by itself; returns (rc, stdout, stderr)."""
    p = subprocess.Popen([binary] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=5)
        raise AssertionError("agent %r kept running instead of exiting: %s" %
                             (args, err.decode(errors="replace")))
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def uring_unavailable_reason(binary):
    """Starts the agent with --engine uring; returns the reason if it refuses, else None."""
    port = free_port()
    with child_log_file("agent-probe-") as logf:
        p = subprocess.Popen([binary, "-p", str(port), "-n", "1", "-a", "127.0.0.1", "--engine",
                              "uring"], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True)
        try:
            deadline = time.monotonic() + 5
            while p.poll() is None and time.monotonic() < deadline:
                logf.seek(0)
                if b"event=start" in logf.read():
                    break
                time.sleep(0.02)
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
                return None
        logf.seek(0)
        text = logf.read().decode(errors="replace")
    if p.returncode != 0 and "io_uring unavailable" in text:
        return text.strip()
    return None
