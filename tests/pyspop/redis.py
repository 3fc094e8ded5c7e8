"""A private redis-server for tests: loopback, a free port, no persistence, always stopped.

    r = RedisServer().start()          # SkipTest-free: raises RuntimeError when it cannot start
    r.url                               # "redis://127.0.0.1:PORT/0"
    r.command("XADD", "k", "*", "f", "v")   # a tiny RESP client (standard library only)
    r.kill(); r.start()                 # same port again (Redis killed mid-load, then back)
    r.stop()

Why a RESP client here: the tests must check what the agent wrote without trusting the agent's own
Redis code, and redis-cli is in a separate package. It speaks RESP2 and handles the five reply
types; nothing else.

`redis_server_binary()` is None when redis-server is not installed: a suite skips loudly then,
and CI (which installs it through scripts/setup-deps) fails instead (CI=true).
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from .ports import free_port

_live = set()


def _kill_all():
    for r in list(_live):
        r.kill()


atexit.register(_kill_all)


def redis_server_binary():
    return shutil.which("redis-server")


class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError("bad RESP reply: %r" % line[:40])


class RedisClient:
    """One connection; `command(*args)` sends one command and returns its decoded reply."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = _Reader(self.sock)

    def command(self, *args):
        self.sock.sendall(_encode(args))
        return self.reader.reply()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RedisServer:
    def __init__(self, port=None, binary=None):
        self.binary = binary or redis_server_binary()
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="spop-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self, timeout=10.0):
        if not self.binary:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--logfile", self.log_path, "--daemonize", "no", "--protected-mode", "yes"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited (%s); log: %s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                with RedisClient(self.port, timeout=0.5) as c:
                    if c.command("PING") == "PONG":
                        return self
            except (OSError, ConnectionError, RedisError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("redis-server did not answer PING on port %d within %.0f s"
                           % (self.port, timeout))

    def client(self):
        return RedisClient(self.port)

    def command(self, *args):
        with self.client() as c:
            return c.command(*args)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def kill(self):
        """SIGKILL (a crash, as far as clients can tell); the data is gone (no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _live.discard(self)

    def stop(self):
        """SIGTERM with a bounded wait, then SIGKILL; removes the data folder."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
