#!/usr/bin/env python3
"""Self-test of tests/pyspop (no agent binary needed): the codec against the hex vectors of
PROTOCOL-NOTES §2 and §11 and CAPTURES.md, the decoders on every truncation, Conn against a
scripted peer, and the process harness against a stand-in agent (start, stop, SIGKILL fallback,
kill-all). Registered as `pyspop-selftest` in suite unit.

    python3 tests/pyspop/selftest.py [-k PATTERN]

The last line is "N passed, N failed[, N skipped]"; exit status 0 or 1.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pyspop import agent as harness  # noqa: E402
from pyspop import codec as c  # noqa: E402
from pyspop import runner  # noqa: E402
from pyspop import vectors as v  # noqa: E402
from pyspop.client import Conn, open_many  # noqa: E402
from pyspop.ports import free_port  # noqa: E402


class VarintTests(unittest.TestCase):
    def test_table(self):
        for value, hx in v.VARINTS:
            self.assertEqual(c.enc_varint(value).hex(), hx, value)
            self.assertEqual(c.dec_varint(bytes.fromhex(hx), 0), (value, len(hx) // 2))

    def test_round_trip_and_bounds(self):
        for value in list(range(0, 5000)) + [2 ** k + d for k in range(12, 64) for d in (-1, 0, 1)]:
            self.assertEqual(c.dec_varint(c.enc_varint(value), 0)[0], value)
        # not LEB128: 240 takes two bytes, 128 one
        self.assertEqual(c.enc_varint(128), b"\x80")
        self.assertEqual(len(c.enc_varint(240)), 2)
        for bad in (-1, 2 ** 64):
            with self.assertRaises(ValueError):
                c.enc_varint(bad)
        with self.assertRaises(c.DecodeError):
            c.dec_varint(b"\xff" * 11, 0)
        for _, hx in v.VARINTS:
            b = bytes.fromhex(hx)
            for k in range(len(b)):
                with self.assertRaises(c.Truncated):
                    c.dec_varint(b[:k], 0)


class EncoderTests(unittest.TestCase):
    """Every vector the HAProxy side sends, and the agent frames, rebuilt from their parts."""

    def test_haproxy_hello(self):
        self.assertEqual(c.hello(engine_id="bc250262-feec-4411-aee7-699dcefaa22f"), v.V1_HELLO_34)
        self.assertEqual(c.hello(caps="pipelining,async",
                                 engine_id="54f99a45-0276-4663-914e-8df45c143259"), v.V2_HELLO_26)
        self.assertEqual(c.hello(engine_id="1bd1e4a5-b09e-4d2b-afd2-6f38270d7e41"), v.CAP_HELLO_34)
        self.assertEqual(c.hello(caps="", healthcheck=True), v.V3_HEALTHCHECK)

    def test_notify(self):
        self.assertEqual(c.notify(1, 1, [c.ip_msg("127.0.0.1")]), v.V5_NOTIFY_NAMED)
        self.assertEqual(c.notify(0, 1, [c.ip_msg("127.0.0.1")]), v.V5_NOTIFY_26)
        self.assertEqual(c.notify(241, 1, [c.ip_msg("127.0.0.1")]), v.CAP_NOTIFY_SID241)
        self.assertEqual(c.notify(1, 1, [c.ip_msg("127.0.0.1", named=False)]), v.V6_NOTIFY_UNNAMED)
        self.assertEqual(c.frame(c.T_NOTIFY, c.message("check-client-ip",
                                                       ("ip", c.t_ipv4(b"\x7f\0\0\1"))), 1, 1),
                         v.V5_NOTIFY_NAMED)

    def test_fragments(self):
        whole = c.message("check-client-ip", ("ip", c.t_ip("127.0.0.1")), ("h", c.t_str("x" * 600)))
        f1 = c.frame(c.T_NOTIFY, whole[:0x113 - 7], 2, 1, flags=0)
        self.assertEqual(f1, v.V9_F1)
        f2 = c.frame(c.T_UNSET, whole[0x113 - 7:2 * (0x113 - 7)], 2, 1, flags=0)
        self.assertEqual(f2, v.V9_F2)
        self.assertEqual(c.frame(c.T_UNSET, whole[2 * (0x113 - 7):], 2, 1), v.V9_F3)

    def test_disconnect(self):
        self.assertEqual(c.haproxy_disconnect(0, "normal"), v.V8_DISC_NORMAL)
        self.assertEqual(c.haproxy_disconnect(2, "a timeout occurred"), v.V8_DISCONNECT_TIMEOUT)
        self.assertEqual(c.haproxy_disconnect(8, c.STATUS_MESSAGES[8]), v.V8_DISC_BAD_VERSION)
        self.assertEqual(c.agent_disconnect(0, ""), v.V8_AGENT_DISC_EMPTY)
        self.assertEqual(c.agent_disconnect(2), v.CAP_AGENT_DISC_IDLE)

    def test_agent_frames(self):
        self.assertEqual(c.agent_hello(), v.V4_AGENT_HELLO)
        self.assertEqual(c.agent_hello(caps=""), v.CAP_AGENT_HELLO_DEFAULT)
        score = c.set_var(c.SCOPE_SESS, "ip_score", c.t_uint32(42))
        self.assertEqual(c.ack(1, 1, score), v.V7_ACK_42)
        self.assertEqual(c.ack(1, 1), v.V7_ACK_EMPTY)
        self.assertEqual(c.ack(1, 1, score + c.unset_var(c.SCOPE_SESS, "ip_score")),
                         v.V7_ACK_SET_UNSET)
        self.assertEqual(c.ack(1, 1, c.set_var(c.SCOPE_SESS, "ip_score", c.t_int32(-5))),
                         v.V7_ACK_INT32_NEG5)
        self.assertEqual(c.ack(0, 1, c.set_var(c.SCOPE_SESS, "ip_score", c.t_uint32(83))),
                         v.CAP_ACK_26)
        self.assertEqual(c.ack(1, 1, c.set_var(c.SCOPE_SESS, "ip_score", c.t_uint32(83))),
                         v.CAP_ACK_34)


class DecoderTests(unittest.TestCase):
    def test_every_vector_reencodes(self):
        for label, raw in v.ALL.items():
            with self.subTest(label):
                f = c.parse_frame(raw)
                self.assertEqual(c.frame(f.type, f.payload, f.sid, f.fid, f.flags), raw)
        stream = b"".join(v.ALL.values())
        self.assertEqual([f.raw for f in c.split_frames(stream)], list(v.ALL.values()))
        with self.assertRaises(AssertionError):
            c.split_frames(stream[:-1])
        self.assertEqual(len(c.split_frames(stream[:-1], allow_partial=True)), len(v.ALL) - 1)

    def test_kv_lists(self):
        d = c.hello_fields(c.parse_frame(v.V4_AGENT_HELLO))
        self.assertEqual(d, {"version": (c.D_STRING, "2.0"),
                             "max-frame-size": (c.D_UINT32, 16380),
                             "capabilities": (c.D_STRING, "pipelining")})
        d = dict(c.parse_kv(c.parse_frame(v.V3_HEALTHCHECK).payload))
        self.assertEqual(d["healthcheck"], (c.D_BOOL, True))
        self.assertEqual(d["capabilities"], (c.D_STRING, ""))
        for raw, status in ((v.V8_DISC_NORMAL, 0), (v.V8_DISCONNECT_TIMEOUT, 2),
                            (v.V8_DISC_BAD_VERSION, 8), (v.CAP_AGENT_DISC_IDLE, 2)):
            st, msg = c.disconnect_fields(c.parse_frame(raw))
            self.assertEqual(st, (c.D_UINT32, status))
            self.assertEqual(msg, (c.D_STRING, c.STATUS_MESSAGES[status]))
        with self.assertRaises(AssertionError):
            c.hello_fields(c.parse_frame(c.frame(c.T_AGENT_HELLO, c.kv(
                [("version", c.t_str("2.0")), ("version", c.t_str("2.0"))]))))

    def test_actions(self):
        p = c.parse_frame(v.V7_ACK_SET_UNSET).payload
        self.assertEqual(c.parse_actions(p), [("set", 1, "ip_score", (c.D_UINT32, 42)),
                                              ("unset", 1, "ip_score")])
        self.assertEqual(c.parse_actions(c.parse_frame(v.V7_ACK_EMPTY).payload), [])
        neg = c.parse_actions(c.parse_frame(v.V7_ACK_INT32_NEG5).payload)[0][3]
        self.assertEqual(c.plain(neg), -5)
        self.assertEqual(c.set_vars(c.parse_frame(v.CAP_ACK_34).payload), {"ip_score": 83})
        with self.assertRaises(c.DecodeError):
            c.set_vars(p)
        with self.assertRaises(c.DecodeError):
            c.parse_actions(b"\x03\x03\x01\x01a\x00")

    def test_typed_round_trip(self):
        values = [(c.t_null(), (c.D_NULL, None)), (c.t_bool(True), (c.D_BOOL, True)),
                  (c.t_bool(False), (c.D_BOOL, False)), (c.t_int32(-1), (c.D_INT32, 2 ** 64 - 1)),
                  (c.t_uint32(7), (c.D_UINT32, 7)), (c.t_int64(-2), (c.D_INT64, 2 ** 64 - 2)),
                  (c.t_uint64(2 ** 64 - 1), (c.D_UINT64, 2 ** 64 - 1)),
                  (c.t_str("é"), (c.D_STRING, "é")),
                  (c.t_bin(b"\0\xff"), (c.D_BINARY, b"\0\xff"))]
        for enc, want in values:
            self.assertEqual(c.dec_typed(enc, 0), (want, len(enc)))
        self.assertEqual(c.plain(c.dec_typed(c.t_ip("::1"), 0)[0]), "::1")
        self.assertEqual(c.plain(c.dec_typed(c.t_ip("192.0.2.1"), 0)[0]), "192.0.2.1")
        for reserved in range(10, 16):
            with self.assertRaises(c.DecodeError):
                c.dec_typed(bytes([reserved]), 0)

    def test_truncations(self):
        """Every prefix of every payload decodes or raises DecodeError (never IndexError)."""
        for label, raw in v.ALL.items():
            f = c.parse_frame(raw)
            parse = c.parse_actions if f.type == c.T_ACK else c.parse_kv
            if f.type in (c.T_NOTIFY, c.T_UNSET):
                continue
            for k in range(len(f.payload)):
                with self.subTest(label, cut=k):
                    try:
                        parse(f.payload[:k])
                    except c.DecodeError:
                        pass
        with self.assertRaises(c.DecodeError):
            c.parse_frame(b"\0\0\0\3\x65\0\0")


def _scripted_peer(sock, chunks, delay=0.002):
    def run():
        try:
            for ch in chunks:
                if ch is None:
                    sock.shutdown(socket.SHUT_WR)
                    continue
                sock.sendall(ch)
                time.sleep(delay)
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class ConnTests(unittest.TestCase):
    def test_frames_split_byte_by_byte(self):
        a, b = socket.socketpair()
        with Conn(None, sock=a, timeout=5) as conn:
            stream = v.V4_AGENT_HELLO + v.V7_ACK_42
            t = _scripted_peer(b, [stream[i:i + 1] for i in range(len(stream))] + [None])
            self.assertEqual(conn.handshake().raw, v.V4_AGENT_HELLO)
            self.assertEqual(b.recv(1024), v.V1_HELLO_34)
            self.assertEqual(conn.recv_frame().raw, v.V7_ACK_42)
            self.assertIsNone(conn.recv_frame())
            t.join(5)
        b.close()

    def test_eof_inside_frame_and_timeout(self):
        a, b = socket.socketpair()
        with Conn(None, sock=a, timeout=5) as conn:
            b.sendall(v.V7_ACK_42[:10])
            t0 = time.monotonic()
            with self.assertRaises(AssertionError):
                conn.recv_frame(timeout=0.3)
            self.assertLess(time.monotonic() - t0, 2.0)
            b.shutdown(socket.SHUT_WR)
            with self.assertRaises(AssertionError):
                conn.recv_frame()
        b.close()

    def test_open_many_loopback(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        try:
            conns = open_many(srv.getsockname(), 20)
            self.assertEqual(len(conns), 20)
            for x in conns:
                x.close()
        finally:
            srv.close()


# A stand-in agent: listens on -p, logs event=start, answers HELLO and NOTIFY with the vectors;
# with STUBBORN=1 it ignores SIGTERM (the harness must fall back to SIGKILL), with FAIL=1
# it exits at once, with CHATTY=N it logs N numbered lines after the start line, then
# event=chatty_done.
FAKE_AGENT = r'''
import os, signal, socket, sys, time
args = sys.argv[1:]
port = int(args[args.index("-p") + 1])
if os.environ.get("FAIL"):
    print("agent: refusing to start", file=sys.stderr, flush=True)
    sys.exit(2)
if os.environ.get("STUBBORN"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", port))
except OSError as e:
    print("agent: port %d in use" % port, file=sys.stderr, flush=True)
    sys.exit(2)
s.listen(8)
print("level=info event=start args=%s" % " ".join(args), file=sys.stderr, flush=True)
for i in range(int(os.environ.get("CHATTY", "0"))):
    os.write(2, b"level=info event=chatty n=%d\n" % i)
    time.sleep(0.0002)
if os.environ.get("CHATTY"):
    os.write(2, b"level=info event=chatty_done\n")
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(bytes.fromhex("HELLO"))
    c.recv(4096)
    c.sendall(bytes.fromhex("ACK"))
    c.close()
'''.replace("HELLO", v.V4_AGENT_HELLO.hex()).replace("ACK", v.V7_ACK_42.hex())


# A suite whose first test starts an agent and waits: a SIGTERM must kill the agent and end the
# run there, with the summary line.
SIGTERM_CHILD = r'''
import sys, time, unittest
sys.path.insert(0, TESTS)
from pyspop import agent as harness, runner
class T(unittest.TestCase):
    def test_1_wait(self):
        a = harness.Agent(BIN, ready_timeout=10).start()
        with open(PIDFILE + ".tmp", "w") as f:
            f.write(str(a.pid))
        import os
        os.rename(PIDFILE + ".tmp", PIDFILE)
        time.sleep(30)
    def test_2_after(self):
        print("second test ran")
harness.install_sigterm()
sys.exit(runner.run(runner.load([sys.modules[__name__]])))
'''


class HarnessTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="pyspop-selftest-")
        cls.binary = os.path.join(cls.dir.name, "fake-agent")
        with open(cls.binary, "w") as f:
            f.write("#!%s\n%s" % (sys.executable, FAKE_AGENT))
        os.chmod(cls.binary, 0o755)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def test_start_serve_stop(self):
        a = harness.Agent(self.binary, ["--x"], engine="epoll", ready_timeout=10).start()
        try:
            self.assertIn("-p %d -n 2 --engine epoll -a 127.0.0.1 --x" % a.port, a.log_text())
            with a.connect() as conn:
                conn.handshake()
                conn.send(c.notify(1, 1, [c.ip_msg()]))
                self.assertEqual(c.set_vars(conn.recv_frame().payload), {"ip_score": 42})
            self.assertEqual(a.problems_since(0), [])
        finally:
            self.assertEqual(a.stop(), 0)
        self.assertFalse(a.alive())

    def test_port_in_use_retried(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        ports = iter([taken, free_port()])
        real = harness.free_port
        harness.free_port = lambda *a: next(ports)
        try:
            a = harness.Agent(self.binary, ready_timeout=10).start()
        finally:
            harness.free_port = real
            busy.close()
        self.assertNotEqual(a.port, taken)
        self.assertEqual(a.stop(), 0)

    def test_stubborn_agent_killed(self):
        os.environ["STUBBORN"] = "1"
        try:
            a = harness.Agent(self.binary, ready_timeout=10, stop_timeout=0.5).start()
        finally:
            del os.environ["STUBBORN"]
        t0 = time.monotonic()
        self.assertEqual(a.stop(), -signal.SIGKILL)
        self.assertLess(time.monotonic() - t0, 5)

    def test_kill_all(self):
        a = harness.Agent(self.binary, ready_timeout=10).start()
        b = harness.Agent(self.binary, ready_timeout=10).start()
        pids = (a.pid, b.pid)
        harness.kill_all()
        for pid in pids:
            with self.assertRaises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self.assertFalse(a.alive() or b.alive())

    def test_sigterm_kills_all_and_stops_the_run(self):
        pidfile = os.path.join(self.dir.name, "agent.pid")
        code = SIGTERM_CHILD.replace("TESTS", repr(os.path.dirname(HERE))).replace(
            "BIN", repr(self.binary)).replace("PIDFILE", repr(pidfile))
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(pidfile) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
            with open(pidfile) as f:
                pid = int(f.read())
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=10)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        text = out.decode(errors="replace")
        self.assertEqual(p.returncode, 1, text)
        self.assertIn("interrupted: signal 15", text)
        self.assertEqual(text.strip().splitlines()[-1], "0 passed, 1 failed")
        self.assertNotIn("second test ran", text)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)

    def test_log_read_while_the_agent_writes_loses_nothing(self):
        # The agent's log lines and the harness's reads share one file: a line written while
        # log_since() reads (wait_log polls it) must not overwrite earlier bytes (it did, with
        # the file offset shared between the two: the line was lost and log_since(mark)
        # stayed empty, the flake of test_redis_killed_mid_load_then_restarted).
        n = 2000
        os.environ["CHATTY"] = str(n)
        try:
            a = harness.Agent(self.binary, ready_timeout=10).start()
        finally:
            del os.environ["CHATTY"]
        try:
            mark = a.log_mark()
            deadline = time.monotonic() + 20
            while "event=chatty_done" not in a.log_since(mark) and time.monotonic() < deadline:
                pass  # read as often as a busy waiter can
            text = a.log_text()
            self.assertTrue(text.startswith("level=info event=start"), text[:200])
            got = [int(x) for x in re.findall(r"event=chatty n=(\d+)", text)]
            self.assertEqual(got, list(range(n)), "lines lost or overwritten")
            self.assertIn("event=chatty_done", text)
        finally:
            self.assertEqual(a.stop(), 0)

    def test_start_failure_is_reported(self):
        os.environ["FAIL"] = "1"
        try:
            with self.assertRaises(AssertionError) as cm:
                harness.Agent(self.binary, ready_timeout=5).start()
        finally:
            del os.environ["FAIL"]
        self.assertIn("exit status 2", str(cm.exception))
        self.assertIn("agent: refusing to start", str(cm.exception))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", dest="patterns", action="append", default=[])
    ns = ap.parse_args()
    harness.install_sigterm()
    return runner.run(runner.select(runner.load([sys.modules[__name__]]), ns.patterns))


if __name__ == "__main__":
    sys.exit(main())
