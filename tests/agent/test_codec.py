"""Codec self-check (no agent): the pyspop encoder against the PROTOCOL-NOTES §11 vectors.

Run by test_agent.py's runner, once per engine (moved from test_agent.py as they were)."""

import unittest

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.codec import *  # noqa: F401,F403
from pyspop.vectors import *  # noqa: F401,F403


class CodecSelfTests(unittest.TestCase):
    def test_varint_vectors(self):
        vectors = [(0, "00"), (239, "ef"), (240, "f000"), (2287, "ff7f"), (2288, "f08000"),
                   (16380, "fcf006"), (264431, "ffff7f"), (264432, "f0808000"),
                   (2 ** 32 - 1, "fff0fefe7e"), (2 ** 63 - 1, "fff0fefefefefefefe06"),
                   (2 ** 64 - 1, "fff0fefefefefefefe0e")]
        for v, hx in vectors:
            self.assertEqual(enc_varint(v).hex(), hx, v)
            self.assertEqual(dec_varint(bytes.fromhex(hx), 0), (v, len(hx) // 2))
        for v in list(range(0, 5000)) + [2 ** k + d for k in range(12, 64) for d in (-1, 0, 1)]:
            self.assertEqual(dec_varint(enc_varint(v), 0)[0], v)
        with self.assertRaises(DecodeError):
            dec_varint(b"\xff" * 11, 0)

    def test_builders_match_captures(self):
        self.assertEqual(notify(1, 1, [ip_msg("127.0.0.1")]), V5_NOTIFY_NAMED)
        self.assertEqual(notify(1, 1, [ip_msg("127.0.0.1", named=False)]), V6_NOTIFY_UNNAMED)
        self.assertEqual(haproxy_disconnect(2, "a timeout occurred"), V8_DISCONNECT_TIMEOUT)
        self.assertEqual(hello(engine_id="bc250262-feec-4411-aee7-699dcefaa22f"), V1_HELLO_34)
        self.assertEqual(hello(caps="", healthcheck=True), V3_HEALTHCHECK)
        f = parse_frame(V7_ACK_42)
        self.assertEqual(parse_actions(f.payload), [("set", 1, "ip_score", (D_UINT32, 42))])
