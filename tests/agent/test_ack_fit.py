"""ACKs that cannot hold every action, variable-name limits, addresses sent as strings (issue 10
sections 2 and 5, issue 13's 64-byte variable-name fact).

- A NOTIFY with many check-client-ip messages gets an ACK with every score that fits the
  negotiated max-frame-size, scores before categories; the connection stays up and serves the
  next NOTIFYs. The expected ACK is computed here from the wire sizes (greedy: an action is kept
  iff it fits after the ones kept before it), so "every score that fits" is checked exactly.
- A configuration whose ACK for one message can never fit -m, or whose variable names HAProxy
  would drop (full name sess.<prefix>.<name> of 64 bytes or more), is refused at start.
- check-client-ip with a STRING argument holding an IPv4/IPv6 literal is scored like an address.

Run through the runner: python3 tests/agent/test_agent.py --agent build/agent/agent -k AckFit
"""

import os
import tempfile
import unittest
import urllib.request

import test_agent as ta  # first: puts tests/ on sys.path
from pyspop import codec
from pyspop import ports

LONG_CATEGORY = "k" * 64  # reputation_max_category: the longest category a source can give
LISTED_V4 = "192.0.2.0/24"
LISTED_V6 = "2001:db8:5::/48"
LIST_SCORE = 10


def varint_len(v):
    return len(codec.enc_varint(v))


def set_var_len(name, typed):
    return 3 + varint_len(len(name)) + len(name) + len(typed)


def ack_header_len(sid, fid):
    """FRAME-LENGTH of an ACK without actions."""
    return 1 + 4 + varint_len(sid) + varint_len(fid)


def expected_ack(sid, fid, mfs, score_var, scores, cat_var, cats):
    """The greedy ACK: every score in order, then every category in order, each kept iff it
    still fits `mfs`. Returns (kept actions as (name, typed bytes), dropped count)."""
    used = ack_header_len(sid, fid)
    kept, dropped = [], 0
    for typed in [(score_var, codec.t_uint32(s)) for s in scores] + \
                 [(cat_var, codec.t_str(c)) for c in cats]:
        n = set_var_len(typed[0], typed[1])
        if used + n <= mfs:
            used += n
            kept.append(typed)
        else:
            dropped += 1
    return kept, dropped


def typed_of(val):
    vtype, v = val
    if vtype == codec.D_UINT32:
        return codec.t_uint32(v)
    if vtype == codec.D_STRING:
        return codec.t_str(v)
    raise AssertionError("unexpected value type %d" % vtype)


class AckFitCase(ta.AgentCase):
    agent_args = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory(prefix="ackfit-")
        # The list's category is its file name without the extension: the longest possible.
        cls.list_path = os.path.join(cls.tmp.name, LONG_CATEGORY + ".netset")
        with open(cls.list_path, "w") as f:
            f.write("# test list\n%s\n%s\n" % (LISTED_V4, LISTED_V6))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        super().tearDownClass()

    def list_agent(self, extra=(), var="ip_score", cat="ip_category"):
        args = ["--list", "%s=%d" % (self.list_path, LIST_SCORE)]
        if var != "ip_score":
            args += ["--var-name", var]
        if cat:
            args += ["--category-var", cat]
        return self.start_agent(args + list(extra))

    def check_ack(self, f, sid, fid, mfs, var, cat, n, listed=True):
        """f answers n listed check-client-ip messages: exactly the greedy ACK."""
        self.assertEqual(f.type, codec.T_ACK, "expected ACK, got %r" % (f,))
        self.assertEqual((f.sid, f.fid), (sid, fid))
        self.assertLessEqual(len(f.raw) - 4, mfs, "ACK above the negotiated max-frame-size")
        acts = codec.parse_actions(f.payload)
        for a in acts:
            self.assertEqual(a[0], "set")
            self.assertEqual(a[1], codec.SCOPE_SESS)
        got = [(a[2], typed_of(a[3])) for a in acts]
        want, dropped = expected_ack(sid, fid, mfs, var, [LIST_SCORE] * n, cat,
                                     [LONG_CATEGORY] * n if (cat and listed) else [])
        # Summaries first, for a readable failure.
        self.assertEqual([g[0] for g in got].count(var), [w[0] for w in want].count(var),
                         "scores kept")
        self.assertEqual(got, want)
        return dropped


class AckFitTests(AckFitCase):

    def many(self, n, base=0):
        return [codec.ip_msg("192.0.2.%d" % ((base + i) % 250 + 1)) for i in range(n)]

    def run_many(self, agent, hello_mfs, n, var="ip_score", cat="ip_category", mfs=None):
        mfs = mfs if mfs is not None else hello_mfs
        mark = agent.log_mark()
        with agent.connect() as c:
            c.handshake(codec.hello(mfs=hello_mfs))
            big = codec.notify(1, 1, self.many(n))
            self.assertLessEqual(len(big) - 4, mfs, "test NOTIFY itself too big")
            # The big NOTIFY, then small ones pipelined behind it in the same write: all must
            # be answered, in order, on the same connection.
            c.send(big + codec.notify(3, 1, self.many(1, 7)) + codec.notify(5, 2, self.many(2, 9)))
            dropped = self.check_ack(c.recv_frame(), 1, 1, mfs, var, cat, n)
            self.assertEqual(self.check_ack(c.recv_frame(), 3, 1, mfs, var, cat, 1), 0)
            self.check_ack(c.recv_frame(), 5, 2, mfs, var, cat, 2)
            # Still up: another large one and a small one.
            c.send(codec.notify(7, 1, self.many(n, 3)))
            self.check_ack(c.recv_frame(), 7, 1, mfs, var, cat, n)
            c.send(codec.notify(9, 1, self.many(1)))
            self.check_ack(c.recv_frame(), 9, 1, mfs, var, cat, 1)
        self.assertTrue(agent.alive())
        log = agent.log_since(mark)
        if dropped:
            self.assertIn("event=ack_truncated", log)
            self.assertIn("dropped_actions=%d" % dropped, log)
        self.assertNotIn("level=error", log)
        return dropped

    def test_nine_messages_negotiated_256(self):
        # -m 16380, HAProxy negotiates 256: the negotiation shrinks the frame.
        a = self.list_agent()
        self.assertEqual(self.run_many(a, 256, 9), 8)  # 9 scores + 1 category fit

    def test_nine_messages_agent_m256(self):
        # -m 256 on the agent, HAProxy offers more.
        a = self.list_agent(["-m", "256"])
        self.assertEqual(self.run_many(a, 16380, 9, mfs=256), 8)

    def test_600_messages_at_16380(self):
        a = self.list_agent()
        dropped = self.run_many(a, 16380, 600)
        self.assertGreater(dropped, 0)
        self.assertLess(dropped, 600)  # every score, some categories

    def test_600_messages_longest_names_scores_truncated(self):
        var, cat = "s" * 40, "c" * 40
        a = self.list_agent(var=var, cat=cat)
        dropped = self.run_many(a, 16380, 600, var=var, cat=cat)
        self.assertGreater(dropped, 600)  # not even every score fits: all categories go

    def test_single_message_always_fits_at_256(self):
        # With names at the 40-byte limit, one message's score and the longest category fit
        # the smallest max-frame-size (256) HAProxy or the agent accept.
        var, cat = "s" * 40, "c" * 40
        a = self.list_agent(["-m", "256"], var=var, cat=cat)
        with a.connect() as c:
            c.handshake(codec.hello(mfs=256))
            c.send(codec.notify(2 ** 64 - 1, 2 ** 64 - 1, self.many(1)))
            f = c.recv_frame()
            self.assertEqual(self.check_ack(f, 2 ** 64 - 1, 2 ** 64 - 1, 256, var, cat, 1), 0)
            self.assertEqual(len(codec.parse_actions(f.payload)), 2)

    def test_dropped_actions_metric(self):
        mport = ports.free_port()
        a = self.list_agent(["--metrics", "127.0.0.1:%d" % mport])
        with a.connect() as c:
            c.handshake(codec.hello(mfs=256))
            c.send(codec.notify(1, 1, self.many(9)))
            self.check_ack(c.recv_frame(), 1, 1, 256, "ip_score", "ip_category", 9)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
            text = r.read().decode()
        self.assertIn("\nspop_agent_ack_actions_dropped_total 8\n", text)


class AckFitStartTests(AckFitCase):

    def refused(self, args, words):
        rc, out, err = ta.run_agent(["-p", str(ports.free_port()), "-a", "127.0.0.1",
                                     "--engine", ta.ENGINE] + args)
        self.assertEqual(rc, 2, err)
        lines = [l for l in err.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, "stderr should be one line: %r" % err)
        self.assertTrue(lines[0].startswith("agent: "), lines[0])
        for w in words:
            self.assertIn(w, lines[0])
        self.assertNotIn("event=start", err)

    def test_ack_that_can_never_fit(self):
        # Issue 10: a 250-character --var-name with -m 256 started, then disconnected every
        # NOTIFY with status 3.
        self.refused(["--var-name", "v" * 250, "-m", "256"], ["max-frame-size 256"])
        self.refused(["--category-var", "c" * 250, "-m", "300"], ["max-frame-size 300"])

    def test_names_haproxy_would_drop(self):
        for flag in ("--var-name", "--category-var"):
            with self.subTest(flag=flag):
                self.refused([flag, "v" * 250], [flag, "64 bytes"])
                self.refused([flag, "v" * 41], [flag, "41 bytes"])

    def test_empty_and_bad_names(self):
        for args in (["--var-name", ""], ["--category-var", ""], ["--var-name="],
                     ["--var-name", "ip-score"], ["--category-var", "cat egory"],
                     ["--var-name", "x\ny"], ["--category-var", "ip_score"]):
            with self.subTest(args=args):
                self.refused(args, [])

    def test_longest_names_start(self):
        a = self.list_agent(["-m", "256"], var="s" * 40, cat="c" * 40)
        self.assertTrue(a.alive())


class AckFitStringAddressTests(AckFitCase):

    def test_string_literals_get_the_default_score(self):
        a = self.start_agent(["--default-score", "42"])
        with a.connect() as c:
            c.handshake()
            sid = 1
            for s in ("1.2.3.4", " 1.2.3.4 ", "\t203.0.113.9", "2001:db8::1", " ::1\t",
                      "::ffff:192.0.2.1", "255.255.255.255", "0.0.0.0",
                      "2001:db8:1:2:3:4:5:6", "0:0:0:0:0:ffff:255.255.255.255",
                      " " * 20 + "1.2.3.4" + " " * 30):
                for aname in ("ip", ""):
                    with self.subTest(s=s, name=aname):
                        c.send(codec.notify(sid, 1, [("check-client-ip",
                                                      [(aname, codec.t_str(s))])]))
                        self.check_ack_score(c.recv_frame(), sid, 1, exact=42)
                    sid += 2

    def test_string_literals_match_lists(self):
        a = self.list_agent()
        with a.connect() as c:
            c.handshake()
            sid = 1
            for s, typed in (("192.0.2.77", codec.t_ip("192.0.2.77")),
                             ("2001:db8:5::9", codec.t_ip("2001:db8:5::9"))):
                with self.subTest(s=s):
                    # The same ACK as for the address sent typed.
                    c.send(codec.notify(sid, 1, [("check-client-ip", [("ip", typed)])]))
                    want = c.recv_frame()
                    c.send(codec.notify(sid, 1, [("check-client-ip", [("ip", codec.t_str(s))])]))
                    got = c.recv_frame()
                    self.check_ack(got, sid, 1, 16380, "ip_score", "ip_category", 1)
                    self.assertEqual(got.raw, want.raw)
                sid += 2

    def test_non_address_strings_get_the_noop(self):
        a = self.start_agent(["--default-score", "42"])
        with a.connect() as c:
            c.handshake()
            sid = 1
            for s in ("not-an-address", "", "   ", "1.2.3.4, 5.6.7.8", "1.2.3.4:80", "[::1]",
                      "1.2.3", "1.2.3.4.5", "256.1.1.1", "fe80::1%eth0", "1.2.3.4\x00junk",
                      "1.2.3.4\r", "x" * 300,
                      "2001:db8::1/64", "unknown"):
                with self.subTest(s=s):
                    c.send(codec.notify(sid, 1, [("check-client-ip", [("ip", codec.t_str(s))])]))
                    self.check_noop_ack(c.recv_frame(), sid, 1)
                sid += 2
            # BINARY is not read, even when it holds a literal.
            c.send(codec.notify(sid, 1, [("check-client-ip", [("ip", codec.t_bin(b"1.2.3.4"))])]))
            self.check_noop_ack(c.recv_frame(), sid, 1)
            sid += 2
            # A string that is not an address does not hide a later address argument.
            c.send(codec.notify(sid, 1, [("check-client-ip", [("ip", codec.t_str("garbage")),
                                                           ("", codec.t_ip("192.0.2.1"))])]))
            self.check_ack_score(c.recv_frame(), sid, 1, exact=42)


if __name__ == "__main__":
    unittest.main()
