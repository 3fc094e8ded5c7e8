"""D. Limits: HELLO timeout, idle timeout, --max-connections.

Run by test_agent.py's runner, once per engine (moved from test_agent.py as they were)."""

import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.codec import *  # noqa: F401,F403
from pyspop.vectors import *  # noqa: F401,F403
from test_agent import AgentCase


class LimitsTests(AgentCase):
    agent_args = None

    def test_hello_timeout(self):
        a = self.start_agent(["--hello-timeout", "1"])
        mark = a.log_mark()
        with a.connect(timeout=6) as c:
            t0 = time.monotonic()
            self.expect_disconnect(c, 2, timeout=5)
            self.assertLess(time.monotonic() - t0, 3.5)
        self.assert_serves(a)
        self.assertEqual(a.problems_since(mark), [])

    def test_idle_timeout(self):
        a = self.start_agent(["--idle-timeout", "1"])
        mark = a.log_mark()
        with a.connect(timeout=6) as c:
            c.handshake()
            c.send(notify(1, 1, [ip_msg()]))
            self.check_ack_score(c.recv_frame(), 1, 1)
            t0 = time.monotonic()
            self.expect_disconnect(c, 2, timeout=5)
            self.assertLess(time.monotonic() - t0, 3.5)
        self.assertEqual(a.problems_since(mark), [])

    def test_max_connections(self):
        """--max-connections is a total over all workers: exactly N are served, whatever
        worker the kernel picks, and closed connections give their slots back."""
        for workers, limit, tries in ((2, 4, 10), (5, 10, 15)):
            a = self.start_agent(["--max-connections", str(limit)], workers=workers)
            for rnd in range(2):
                conns = []
                served = refused = 0
                for _ in range(tries):
                    c = a.connect()
                    conns.append(c)
                    self._conns.append(c)
                    try:
                        c.send(V1_HELLO_34)
                        f = c.recv_frame()
                    except (ConnectionResetError, BrokenPipeError):
                        f = None
                    if f is None:
                        refused += 1
                    else:
                        self.assertEqual(f.type, T_AGENT_HELLO)
                        served += 1
                msg = "-n %d --max-connections %d, round %d" % (workers, limit, rnd)
                self.assertEqual(served, limit, msg)
                self.assertEqual(refused, tries - limit, msg)
                for c in conns:
                    c.close()
                time.sleep(0.3)  # the agent sees the closes and frees the slots
            self.assert_serves(a)
            a.stop()
