"""A. Conformance: bad input -> AGENT-DISCONNECT with the exact status and message, then EOF.

Run by test_agent.py's runner, once per engine (moved from test_agent.py as they were)."""

import struct
import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.codec import *  # noqa: F401,F403
from pyspop.vectors import *  # noqa: F401,F403
from test_agent import AgentCase


class ConformanceTests(AgentCase):
    agent_args = ()

    def test_oversize_length_prefix_alone(self):
        for prefix in (0x7FFFFFFF, 0xFFFFFFFF, 16381):
            with self.subTest(length=hex(prefix)):
                self.bad_input(struct.pack(">I", prefix), 3)
        # the same after a handshake
        self.bad_input(struct.pack(">I", 0x7FFFFFFF), 3, handshake=True)
        # the length prefix itself split across two sends
        with self.conn() as c:
            c.handshake()
            c.send(b"\x7f")
            time.sleep(0.02)
            c.send(b"\xff\xff\xff")
            self.expect_disconnect(c, 3)
        self.assert_serves()

    def test_frame_larger_than_max_frame_size(self):
        a = self.start_agent(["-m", "1024"])
        with a.connect() as c:
            f = c.handshake()
            self.assertEqual(hello_fields(f)["max-frame-size"][1], 1024)
            payload = notify_payload([("check-client-ip", [("ip", t_ip("127.0.0.1")),
                                                           ("pad", t_bin(b"x" * 1960))])])
            big = frame(T_NOTIFY, payload, 1, 1)
            self.assertGreaterEqual(len(big), 2000)
            c.send(big)
            self.expect_disconnect(c, 3)
        # exactly at the limit is fine
        with a.connect() as c:
            c.handshake()
            for p in range(900, 1024):
                payload = notify_payload([("check-client-ip", [("ip", t_ip("127.0.0.1")),
                                                               ("pad", t_bin(b"y" * p))])])
                if len(frame(T_NOTIFY, payload, 1, 1)) == 4 + 1024:
                    break
            fr = frame(T_NOTIFY, payload, 1, 1)
            self.assertEqual(struct.unpack(">I", fr[:4])[0], 1024)
            c.send(fr)
            self.check_ack_score(c.recv_frame(), 1, 1)
        self.assert_serves(a)

    def test_zero_length_frame(self):
        self.bad_input(b"\x00\x00\x00\x00", 4)
        self.bad_input(b"\x00\x00\x00\x00", 4, handshake=True)

    def test_length_below_minimum(self):
        for n in range(1, 7):
            with self.subTest(length=n):
                body = (bytes([T_NOTIFY]) + struct.pack(">I", FIN) + b"\x01\x01")[:n]
                self.bad_input(struct.pack(">I", n) + body, 4)

    def test_notify_before_hello(self):
        self.bad_input(V5_NOTIFY_NAMED, 4)

    def test_bad_varint_in_ids(self):
        bad = b"\xff" * 11
        self.bad_input(frame(T_NOTIFY, b"", raw_ids=bad + b"\x01"), 4, handshake=True)
        self.bad_input(frame(T_NOTIFY, b"", raw_ids=b"\x01" + bad), 4, handshake=True)
        self.bad_input(frame(T_HAPROXY_HELLO, b"", raw_ids=bad + b"\x00"), 4)

    def test_bad_typed_data_type(self):
        for t in (0x0A, 0x0F):
            with self.subTest(type=t):
                data = notify(1, 1, [("check-client-ip", [("ip", bytes([t]) + b"\x7f\0\0\1")])])
                self.bad_input(data, 4, handshake=True)

    def test_truncated_notify_payload(self):
        full = notify_payload([ip_msg("127.0.0.1")])
        cases = {
            "message name cut": b"\x0f" + b"check",
            "nb-args missing": name("check-client-ip"),
            "argument missing": name("check-client-ip") + b"\x01",
            "ipv4 cut": full[:-2],
            "string length past end": name("m") + b"\x01" + name("s") + b"\x08\x10abc",
        }
        for label, payload in cases.items():
            with self.subTest(case=label):
                self.bad_input(frame(T_NOTIFY, payload, 1, 1), 4, handshake=True)

    def test_fin_unset(self):
        self.bad_input(notify(1, 1, [ip_msg()], flags=0), 10, handshake=True)
        self.bad_input(hello(flags=0), 10)

    def test_hello_with_stream_id(self):
        self.bad_input(hello(sid=1), 4)
        self.bad_input(hello(fid=1), 4)

    def test_second_hello(self):
        self.bad_input(V1_HELLO_34, 4, handshake=True)

    def test_unknown_frame_type(self):
        # stream-id 0: fatal
        self.bad_input(frame(50, b"", 0, 0), 4, handshake=True)
        # stream-id != 0: skipped, the next NOTIFY is answered
        with self.conn() as c:
            c.handshake()
            c.send(frame(50, b"whatever", 5, 1) + notify(7, 1, [ip_msg()]))
            f = c.recv_frame()
            self.check_ack_score(f, 7, 1)
        self.assert_serves()

    def test_hello_missing_or_bad_fields(self):
        cases = [
            ("no supported-versions", hello(omit=("supported-versions",)), 5),
            ("versions 1.0", hello(versions="1.0"), 8),
            ("no max-frame-size", hello(omit=("max-frame-size",)), 6),
            ("max-frame-size 100", hello(mfs=100), 9),
            ("no capabilities", hello(omit=("capabilities",)), 7),
        ]
        for label, data, st in cases:
            with self.subTest(case=label):
                self.bad_input(data, st)

    def test_frames_after_an_error_are_not_answered(self):
        with self.conn() as c:
            c.handshake()
            c.send(notify(1, 1, [ip_msg()]) + notify(3, 1, [ip_msg()], flags=0) +
                   notify(5, 1, [ip_msg()]))
            self.check_ack_score(c.recv_frame(), 1, 1)
            self.expect_disconnect(c, 10)
        self.assert_serves()

    def test_haproxy_disconnect_before_hello(self):
        with self.conn() as c:
            c.send(haproxy_disconnect(0, "normal"))
            self.expect_disconnect(c, 0, message="normal")
        self.assert_serves()

    def test_haproxy_disconnect_is_echoed(self):
        with self.conn() as c:
            c.handshake()
            c.send(V8_DISCONNECT_TIMEOUT)
            self.expect_disconnect(c, 2, message="a timeout occurred")
        # any status/message is echoed exactly
        with self.conn() as c:
            c.handshake()
            c.send(haproxy_disconnect(0, "normal"))
            self.expect_disconnect(c, 0, message="normal")
        # a message longer than 255 bytes is cut for 2.6 and the 3.4 checker (§6)
        long_msg = "m" * 300
        with self.conn() as c:
            c.handshake()
            c.send(haproxy_disconnect(1, long_msg))
            f = c.recv_frame()
            self.assertEqual(f.type, T_AGENT_DISCONNECT)
            st, msg = disconnect_fields(f)
            self.assertEqual(st[1], 1)
            self.assertEqual(msg[0], D_STRING)
            self.assertLessEqual(len(msg[1]), 255)
            self.assertTrue(long_msg.startswith(msg[1]))
            self.assertEqual(c.read_until_eof(), b"")
        self.assert_serves()
