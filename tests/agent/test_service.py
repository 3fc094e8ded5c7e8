"""B. Normal service: handshakes, NOTIFY/ACK, messages, ids, large frames, slow-loris.

Run by test_agent.py's runner, once per engine (moved from test_agent.py as they were)."""

import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.codec import *  # noqa: F401,F403
from pyspop.vectors import *  # noqa: F401,F403
from test_agent import AgentCase


class ServiceTests(AgentCase):
    agent_args = ()   # default score: random 0..100

    def check_agent_hello(self, f, mfs):
        self.assertEqual(f.type, T_AGENT_HELLO)
        self.assertEqual(f.flags, FIN)
        self.assertEqual((f.sid, f.fid), (0, 0))
        d = hello_fields(f)
        self.assertEqual(d.get("version"), (D_STRING, "2.0"))
        self.assertIn("max-frame-size", d)
        self.assertIn(d["max-frame-size"][0], (D_INT32, D_UINT32, D_INT64, D_UINT64))
        self.assertEqual(d["max-frame-size"][1], mfs)
        self.assertEqual(d.get("capabilities"), (D_STRING, "pipelining"))

    def test_hello_v1_v2(self):
        for label, data in (("3.4", V1_HELLO_34), ("2.6", V2_HELLO_26)):
            with self.subTest(haproxy=label):
                with self.conn() as c:
                    self.check_agent_hello(c.handshake(data), 16380)
                    c.send(notify(1, 1, [ip_msg()]))
                    self.check_ack_score(c.recv_frame(), 1, 1)

    def test_supported_versions_lists(self):
        # A 2.x item includes 2.0 (SPOE.txt 3.2.4); the agent answers "2.0".
        for versions in ("2.0", " 2.0 ", "1.0,2.0", "2.0, 3.0", "2.00", "2.1", "1.0, 2.5"):
            with self.subTest(versions=versions):
                with self.conn() as c:
                    self.check_agent_hello(c.handshake(hello(versions=versions)), 16380)
        for versions in ("3.0", "1.0, 1.5", "", "2", "two", "2.1000"):
            with self.subTest(versions=versions):
                self.bad_input(hello(versions=versions), 8)

    def test_hello_smaller_max_frame_size(self):
        with self.conn() as c:
            self.check_agent_hello(c.handshake(hello(mfs=300)), 300)
            c.send(notify(1, 1, [ip_msg()]))
            self.check_ack_score(c.recv_frame(), 1, 1)

    def test_notify_above_negotiated_size(self):
        """Negotiated 300; a 600-byte NOTIFY (3.1.0 bug, §12.9): answered, or DISCONNECT 3."""
        with self.conn() as c:
            c.handshake(hello(mfs=300))
            c.send(notify(1, 1, [("check-client-ip", [("ip", t_ip("127.0.0.1")),
                                                      ("pad", t_bin(b"p" * 560))])]))
            f = c.recv_frame()
            self.assertIsNotNone(f)
            if f.type == T_AGENT_DISCONNECT:
                self.assertEqual(disconnect_fields(f)[0][1], 3)
            else:
                self.check_ack_score(f, 1, 1)
        self.assert_serves()

    def test_large_frames(self):
        """-m 65532 (tune.bufsize 64k): frames spanning several receive buffers."""
        a = self.start_agent(["-m", "65532"])
        with a.connect(timeout=10) as c:
            f = c.handshake(hello(mfs=65532))
            self.check_agent_hello(f, 65532)
            frames = []
            for i, size in enumerate((16000, 16400, 40000, 65000)):
                frames.append(notify(2 * i + 1, 1, [("check-client-ip", [
                    ("h", t_bin(b"b" * size)), ("ip", t_ip("192.0.2.%d" % i))])]))
            self.assertLessEqual(max(len(x) for x in frames), 65536)
            c.send(b"".join(frames))
            for i in range(len(frames)):
                self.check_ack_score(c.recv_frame(), 2 * i + 1, 1)
        self.assert_serves(a)

    def test_notify_named_unnamed_v4_v6(self):
        with self.conn() as c:
            c.handshake()
            sid = 1
            for addr in ("127.0.0.1", "203.0.113.9", "::1", "2001:db8::1"):
                for named in (True, False):
                    with self.subTest(addr=addr, named=named):
                        c.send(notify(sid, 1, [ip_msg(addr, named)]))
                        self.check_ack_score(c.recv_frame(), sid, 1)
                    sid += 2

    def test_capture_vectors(self):
        with self.conn() as c:
            c.handshake()
            c.send(V5_NOTIFY_NAMED)
            self.check_ack_score(c.recv_frame(), 1, 1)
            c.send(V6_NOTIFY_UNNAMED)
            self.check_ack_score(c.recv_frame(), 1, 1)

    def test_default_score_42(self):
        a = self.start_agent(["--default-score", "42"])
        with a.connect() as c:
            c.handshake()
            c.send(V5_NOTIFY_NAMED)
            f = c.recv_frame()
            self.check_ack_score(f, 1, 1, exact=42)
            self.assertEqual(f.raw, V7_ACK_42)
            for sid, addr in ((3, "198.51.100.1"), (5, "2001:db8::7")):
                c.send(notify(sid, 1, [ip_msg(addr, named=False)]))
                self.check_ack_score(c.recv_frame(), sid, 1, exact=42)

    def test_unknown_message_gets_noop_ack(self):
        with self.conn() as c:
            c.handshake()
            c.send(notify(1, 1, [("some-other-message", [("x", t_str("y"))])]))
            self.check_noop_ack(c.recv_frame(), 1, 1)
            # the target message with a NULL argument (failed sample fetch), or a non-IP value
            c.send(notify(3, 1, [("check-client-ip", [("ip", t_null())])]))
            self.check_noop_ack(c.recv_frame(), 3, 1)
            c.send(notify(5, 1, [("check-client-ip", [("ip", t_str("not-an-address"))])]))
            self.check_noop_ack(c.recv_frame(), 5, 1)
            # a prefix of the message name is not the message (§12.20)
            c.send(notify(7, 1, [("check-client", [("ip", t_ip("127.0.0.1"))])]))
            self.check_noop_ack(c.recv_frame(), 7, 1)

    def test_notify_without_messages(self):
        with self.conn() as c:
            c.handshake()
            c.send(frame(T_NOTIFY, b"", 1, 1))
            self.check_noop_ack(c.recv_frame(), 1, 1)
            c.send(notify(3, 1, [ip_msg()]))
            self.check_ack_score(c.recv_frame(), 3, 1)

    def test_multi_message_notify(self):
        with self.conn() as c:
            c.handshake()
            c.send(notify(1, 1, [("other", [("a", t_int64(-1)), ("", t_null())]),
                                 ip_msg("192.0.2.1"),
                                 ("another", [])]))
            self.check_ack_score(c.recv_frame(), 1, 1, count=1)
            c.send(notify(3, 1, [ip_msg("192.0.2.1"), ip_msg("2001:db8::2", named=False)]))
            self.check_ack_score(c.recv_frame(), 3, 1, count=2)
            # extra arguments around the ip argument
            c.send(notify(5, 1, [("check-client-ip", [("h", t_null()), ("ip", t_ip("10.0.0.1")),
                                                      ("z", t_bool(True))])]))
            self.check_ack_score(c.recv_frame(), 5, 1)

    def test_ids_echoed(self):
        ids = [(0, 1), (1, 1), (239, 1), (240, 2), (241, 1), (2 ** 31 - 1, 1), (0, 2 ** 32),
               (2 ** 63 + 5, 2 ** 63 + 5), (5, 2 ** 63 + 5), (U64_MAX, U64_MAX)]
        with self.conn() as c:
            c.handshake(V2_HELLO_26)
            for sid, fid in ids:
                with self.subTest(sid=sid, fid=fid):
                    c.send(notify(sid, fid, [ip_msg()]))
                    self.check_ack_score(c.recv_frame(), sid, fid)

    def test_slow_loris(self):
        """One byte every 50 ms for a whole HELLO + NOTIFY (about 5 s)."""
        data_hello = hello(caps="")
        data_notify = notify(1, 1, [ip_msg(named=False)])
        total = len(data_hello) + len(data_notify)
        self.assertLessEqual(total * 0.05, 6.0)
        with self.conn(timeout=10) as c:
            for i in range(len(data_hello)):
                c.send(data_hello[i:i + 1])
                time.sleep(0.05)
            f = c.recv_frame(5)
            self.assertEqual(f.type, T_AGENT_HELLO)
            self.assertEqual(hello_fields(f)["version"], (D_STRING, "2.0"))
            for i in range(len(data_notify)):
                c.send(data_notify[i:i + 1])
                time.sleep(0.05)
            self.check_ack_score(c.recv_frame(5), 1, 1)
        self.assert_serves()
