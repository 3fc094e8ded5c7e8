"""B. Normal service: frames split at every offset.

Run by test_agent.py's runner, once per engine (moved from test_agent.py as they were)."""

import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.codec import *  # noqa: F401,F403
from pyspop.vectors import *  # noqa: F401,F403
from test_agent import AgentCase


class SplitTests(AgentCase):
    agent_args = ("--default-score", "42")

    def exchange(self, hello_parts, notify_parts):
        with self.conn() as c:
            for i, p in enumerate(hello_parts):
                if i:
                    time.sleep(0.003)
                c.send(p)
            f1 = c.recv_frame()
            for i, p in enumerate(notify_parts):
                if i:
                    time.sleep(0.003)
                c.send(p)
            f2 = c.recv_frame()
            return f1.raw if f1 else None, f2.raw if f2 else None

    def test_every_split_offset(self):
        hb, nb = V1_HELLO_34, notify(241, 1, [ip_msg("2001:db8::5")])
        ref = self.exchange([hb], [nb])
        self.assertEqual(parse_frame(ref[0]).type, T_AGENT_HELLO)
        self.check_ack_score(parse_frame(ref[1]), 241, 1, exact=42)
        bad = []
        for k in range(1, len(hb)):
            got = self.exchange([hb[:k], hb[k:]], [nb])
            if got != ref:
                bad.append(("hello", k, got))
        for k in range(1, len(nb)):
            got = self.exchange([hb], [nb[:k], nb[k:]])
            if got != ref:
                bad.append(("notify", k, got))
        self.assertEqual(bad, [], "answers differ when frames are split")
        self.assert_serves()

    def test_every_split_offset_batched(self):
        """HELLO and NOTIFY in one stream split at every offset (frames straddle sends)."""
        hb, nb = V1_HELLO_34, notify(3, 1, [ip_msg()])
        stream = hb + nb
        ref = None
        bad = []
        for k in range(1, len(stream)):
            with self.conn() as c:
                c.send(stream[:k])
                time.sleep(0.003)
                c.send(stream[k:])
                f1, f2 = c.recv_frame(), c.recv_frame()
                got = (f1.raw if f1 else None, f2.raw if f2 else None)
            if ref is None:
                ref = got
                self.check_ack_score(parse_frame(ref[1]), 3, 1, exact=42)
            elif got != ref:
                bad.append((k, got))
        self.assertEqual(bad, [])
