"""C. HAProxy 3.1+ behaviour: pipelined odd stream ids, health check, silent closes.

Run by test_agent.py's runner, once per engine (moved from test_agent.py as they were)."""

import struct
import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.codec import *  # noqa: F401,F403
from pyspop.vectors import *  # noqa: F401,F403
from test_agent import AgentCase


class HAProxy31Tests(AgentCase):
    agent_args = ()

    def test_pipelined_odd_stream_ids(self):
        with self.conn() as c:
            f = c.handshake(hello(caps="pipelining",
                                  engine_id="1bd1e4a5-b09e-4d2b-afd2-6f38270d7e41"))
            self.assertEqual(hello_fields(f)["capabilities"], (D_STRING, "pipelining"))
            sids = list(range(1, 41, 2))
            c.send(b"".join(notify(s, 1, [ip_msg("10.1.0.%d" % s)]) for s in sids))
            got = []
            for _ in sids:
                f = c.recv_frame()
                self.assertIsNotNone(f)
                self.check_ack_score(f, f.sid, 1)
                got.append(f.sid)
            self.assertEqual(sorted(got), sids)
            # next round on the same connection, like a reused pooled connection
            sids2 = list(range(41, 81, 2))
            c.send(b"".join(notify(s, 1, [ip_msg("::1")]) for s in sids2))
            got2 = sorted(c.recv_frame().sid for _ in sids2)
            self.assertEqual(got2, sids2)

    def test_healthcheck_reply_is_alone(self):
        for _ in range(3):
            with self.conn() as c:
                c.send(V3_HEALTHCHECK)
                data = c.read_until_eof(5)
                self.assertTrue(c.eof, "agent did not close the health-check connection")
                self.assertGreaterEqual(len(data), 4)
                n = struct.unpack(">I", data[:4])[0]
                self.assertEqual(len(data), 4 + n,
                                 "bytes after the AGENT-HELLO: %s" % data[4 + n:].hex())
                f = parse_frame(data)
                self.assertEqual(f.type, T_AGENT_HELLO)
                self.assertEqual(data[5:9], b"\x00\x00\x00\x01", "flags must be exactly FIN")
                self.assertEqual(data[9:11], b"\x00\x00", "ids must be single 00 bytes")
                d = hello_fields(f)
                self.assertEqual(d.get("version"), (D_STRING, "2.0"))
                self.assertIn("capabilities", d, "3.4 checker requires capabilities")
                self.assertEqual(d["max-frame-size"][1], 16380)
        self.assert_serves()

    def test_close_without_disconnect_is_quiet(self):
        mark = self.agent.log_mark()
        # 1. clean close after an exchange
        with self.conn() as c:
            c.handshake()
            c.send(notify(1, 1, [ip_msg()]))
            self.check_ack_score(c.recv_frame(), 1, 1)
        # 2. close with NOTIFYs still unanswered on our side
        with self.conn() as c:
            c.handshake()
            c.send(b"".join(notify(s, 1, [ip_msg()]) for s in range(1, 21, 2)))
        # 3. RST mid-frame, after the handshake
        c = self.conn()
        c.handshake()
        c.send(V5_NOTIFY_NAMED[:13])
        time.sleep(0.05)
        c.rst()
        # 4. RST mid-HELLO
        c = self.conn()
        c.send(V1_HELLO_34[:40])
        time.sleep(0.05)
        c.rst()
        # 5. RST right after the handshake, unread AGENT-HELLO in our buffer
        c = self.conn()
        c.send(V1_HELLO_34)
        time.sleep(0.05)
        c.rst()
        # 6. EOF mid-frame
        with self.conn() as c:
            c.handshake()
            c.send(V5_NOTIFY_NAMED[:20])
            time.sleep(0.05)
        self.assert_serves()
        time.sleep(0.3)
        self.assertTrue(self.agent.alive())
        self.assertEqual(self.agent.problems_since(mark), [],
                         "abrupt closes are normal for HAProxy 3.x and must not be logged as "
                         "warnings/errors")
