#!/usr/bin/env python3
"""Loopback tests for the spop agent binary (python3 standard library only): the runner.

    python3 tests/agent/test_agent.py --agent build/agent/agent [--engine uring|epoll] [-k PATTERN]

The agent is driven by the HAProxy-side client of tests/pyspop (codec, Conn, agent harness),
written from shared/reference/PROTOCOL-NOTES.md independently of the C++ codec.

This file is the runner and the shared base (Agent bound to --agent/--engine, AgentCase); the
tests live in one file per subject, all run here:
  test_codec.py        CodecSelfTests     the client's codec against the §11 vectors
  test_conformance.py  ConformanceTests   bad input -> AGENT-DISCONNECT with the exact status and
                                          message, then EOF
  test_service.py      ServiceTests       handshakes, NOTIFY/ACK, ids, slow-loris
  test_splits.py       SplitTests         frames split at every offset
  test_haproxy31.py    HAProxy31Tests     3.1+ behaviour: pipelined odd stream ids, health check,
                                          silent closes
  test_hostile.py      HostileTests       HTTP on the port, 1000-connection burst, 10k idle
                                          connections (RSS per connection), NOTIFY flood without
                                          reading, graceful stop
  test_limits.py       LimitsTests        HELLO timeout, idle timeout, --max-connections
  test_cli.py          CliTests           flags, port in use, IPv6 loopback, Unix socket
  and the other tests/agent/test_*.py (back-pressure, lame-duck stop, ACK fit, ...).
A new subject is a new file `test_<subject>.py` that does `import test_agent as ta` and defines
unittest.TestCase subclasses (usually of ta.AgentCase); it is picked up automatically.

Every agent listens on loopback only, on a free port picked by binding port 0, runs `-n 2`, and is
stopped (SIGTERM, bounded wait, then SIGKILL) in tearDown/tearDownClass, also when this script gets
SIGTERM. Every loop is bounded in count and time. After every hostile case the agent must still be
running and serve a fresh connection.

The last line printed is "N passed, N failed, N skipped". Exit status: 0 all passed, 1 a test
failed, 77 skipped (`--engine uring` while the agent reports "io_uring unavailable").
"""

import argparse
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# The codec, client and harness, re-exported: the subject files use them as ta.<name>.
from pyspop.codec import *  # noqa: E402,F401,F403
from pyspop.vectors import *  # noqa: E402,F401,F403
from pyspop.client import DEFAULT_TIMEOUT, Conn, open_many, wait_peek_frames  # noqa: E402,F401
from pyspop.ports import free_port, ipv6_loopback_usable  # noqa: E402,F401
from pyspop.agent import LEVEL_RE, raise_nofile, vmrss  # noqa: E402,F401
from pyspop.agent import kill_all as kill_all_agents  # noqa: E402
from pyspop import agent as harness  # noqa: E402
from pyspop import runner  # noqa: E402

_frames = split_frames  # noqa: F405

SKIP = 77

AGENT = None          # path to the agent binary (--agent)
ENGINE = "epoll"      # --engine
VERBOSE = False

# --------------------------------------------------------------------------------------------
# Agent process, bound to --agent and --engine
# --------------------------------------------------------------------------------------------


class Agent(harness.Agent):
    """One agent process: loopback, -n 2, stderr captured in a temporary file."""

    def __init__(self, args=(), address="127.0.0.1", workers=2, tcp=True, nofile=None):
        super().__init__(AGENT, args, address=address, workers=workers, engine=ENGINE, tcp=tcp,
                         nofile=nofile)


def run_agent(args, timeout=5.0):
    """Runs the agent expecting it to exit by itself; returns (rc, stdout, stderr)."""
    return harness.run_agent(AGENT, args, timeout)


def uring_unavailable_reason():
    return harness.uring_unavailable_reason(AGENT)


# --------------------------------------------------------------------------------------------
# Base test case
# --------------------------------------------------------------------------------------------


class AgentCase(unittest.TestCase):
    agent_args = ()          # class-level agent; None = no class agent
    agent = None

    @classmethod
    def setUpClass(cls):
        if cls.agent_args is not None:
            cls.agent = Agent(cls.agent_args).start()

    @classmethod
    def tearDownClass(cls):
        if cls.agent is not None:
            cls.agent.stop()
            cls.agent = None

    def setUp(self):
        self._conns = []
        self._agents = []

    def tearDown(self):
        for c in self._conns:
            try:
                c.close()
            except Exception:
                pass
        for a in self._agents:
            a.stop()

    # helpers -------------------------------------------------------------------------------

    def start_agent(self, args=(), **kw):
        a = Agent(args, **kw)
        self._agents.append(a)
        return a.start()

    def conn(self, agent=None, timeout=DEFAULT_TIMEOUT):
        c = (agent or self.agent).connect(timeout)
        self._conns.append(c)
        return c

    def slow_reader_conn(self, agent, timeout=DEFAULT_TIMEOUT):
        """A connection with a 4 KiB receive buffer: ACKs pile up in the agent at once, so it
        back-pressures and holds its input (what a peer that reads slowly looks like)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(timeout)
        s.connect(agent.addr)
        c = Conn(agent.addr, sock=s, timeout=timeout)
        self._conns.append(c)
        return c

    def check_ack_score(self, f, sid, fid, exact=None, count=1):
        self.assertEqual(f.type, T_ACK, "expected ACK, got %r" % (f,))
        self.assertEqual(f.flags, FIN)
        self.assertEqual((f.sid, f.fid), (sid, fid), "ACK ids not echoed")
        acts = parse_actions(f.payload)
        sets = [a for a in acts if a[0] == "set"]
        self.assertEqual(len(sets), count, "SET-VAR actions in %r" % (acts,))
        for a in sets:
            _, scope, vname, (vtype, val) = a
            self.assertEqual(scope, SCOPE_SESS)
            self.assertEqual(vname, "ip_score")
            self.assertEqual(vtype, D_UINT32)
            self.assertTrue(0 <= val <= 100, "score %r out of 0..100" % val)
            if exact is not None:
                self.assertEqual(val, exact)
        return [a[3][1] for a in sets]

    def check_noop_ack(self, f, sid, fid):
        self.assertEqual(f.type, T_ACK, "expected ACK, got %r" % (f,))
        self.assertEqual((f.sid, f.fid), (sid, fid))
        self.assertTrue(f.payload, "empty ACK (stalls HAProxy 3.1.0, §12.14)")
        acts = parse_actions(f.payload)
        self.assertTrue(acts)
        for a in acts:
            self.assertEqual(a[0], "unset", "expected only a harmless UNSET-VAR, got %r" % (acts,))
            self.assertNotEqual(a[2], "ip_score")

    def expect_disconnect(self, c, status, timeout=DEFAULT_TIMEOUT, message=None):
        """The next frame is AGENT-DISCONNECT(status, exact message), then EOF."""
        f = c.recv_frame(timeout)
        self.assertIsNotNone(f, "connection closed without AGENT-DISCONNECT %d" % status)
        self.assertEqual(f.type, T_AGENT_DISCONNECT, "expected AGENT-DISCONNECT %d, got %r"
                         % (status, f))
        self.assertEqual(f.flags, FIN)
        self.assertEqual((f.sid, f.fid), (0, 0))
        st, msg = disconnect_fields(f)
        self.assertIsNotNone(st, "no status-code in %r" % f)
        self.assertIn(st[0], (D_INT32, D_UINT32, D_INT64, D_UINT64))
        self.assertEqual(st[1], status, "status-code (message %r)" % (msg,))
        want = STATUS_MESSAGES[status] if message is None else message
        self.assertEqual(msg, (D_STRING, want))
        rest = c.read_until_eof(timeout)
        self.assertEqual(rest, b"", "bytes after AGENT-DISCONNECT: %s" % rest.hex())
        self.assertTrue(c.eof, "agent did not close after AGENT-DISCONNECT")
        return f

    def assert_serves(self, agent=None):
        """The agent is running and a fresh connection gets a handshake and an ACK."""
        agent = agent or self.agent
        self.assertTrue(agent.alive(), "agent died; log:\n" + agent.log_text()[-2000:])
        with agent.connect() as c:
            c.handshake()
            c.send(notify(1, 1, [ip_msg("192.0.2.7")]))
            f = c.recv_frame()
            self.assertIsNotNone(f, "EOF instead of ACK on a fresh connection")
            self.check_ack_score(f, 1, 1)

    def bad_input(self, data, status, handshake=False, agent=None):
        """Sends data (after a handshake if asked), expects DISCONNECT status, then checks the
        agent still serves."""
        agent = agent or self.agent
        with agent.connect() as c:
            if handshake:
                c.handshake()
            c.send(data)
            self.expect_disconnect(c, status)
        self.assert_serves(agent)



# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def subject_modules():
    """The suites of this folder (tests/agent/test_*.py), one file per subject. Each does
    `import test_agent as ta` and uses its Agent harness and AgentCase; all run under this
    one runner, so one command and one summary line cover them."""
    # Run as a script this module is __main__: make `import test_agent` find this very module,
    # so that the globals set below (AGENT, ENGINE) are the ones the other files see.
    sys.modules.setdefault("test_agent", sys.modules[__name__])
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    mods = []
    for fn in sorted(os.listdir(here)):
        if fn.startswith("test_") and fn.endswith(".py") and fn != "test_agent.py":
            mods.append(__import__(fn[:-3]))
    return mods


def main():
    global AGENT, ENGINE, VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", required=True, help="path to the agent binary")
    ap.add_argument("--engine", default="epoll", choices=("uring", "epoll", "auto"))
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only run tests whose id contains this substring (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ns = ap.parse_args()
    AGENT = os.path.abspath(ns.agent)
    ENGINE = ns.engine
    VERBOSE = ns.verbose
    if not os.access(AGENT, os.X_OK):
        print("agent binary not found or not executable: %s" % AGENT)
        print("0 passed, 1 failed")
        return 1
    harness.install_sigterm()
    if ENGINE == "uring":
        why = uring_unavailable_reason()
        if why:
            print("SKIP: %s" % why)
            print("0 passed, 0 failed, 1 skipped")
            return SKIP

    suite = runner.select(runner.load([sys.modules[__name__]] + subject_modules()), ns.patterns)
    print("agent: %s  engine: %s" % (AGENT, ENGINE))
    return runner.run(suite, label="engine %s" % ENGINE)


if __name__ == "__main__":
    sys.exit(main())
