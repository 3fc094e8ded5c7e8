"""Independent conformance and hostile-input tests (adversarial review, branch adv2).

Written from SPOE.txt / PROTOCOL-NOTES.md with a codec of its own (below), on purpose not
pyspop's: a bug shared by the agent and pyspop's codec would hide from tests using both. Only the
process harness (ta.Agent, ta.AgentCase) and, for deferred answers, pyspop's private Redis are
reused. Run by test_agent.py's runner, once per engine.

Every loop is bounded in count and time; loopback only.
"""

import os
import socket
import struct
import threading
import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.ports import free_port

# --------------------------------------------------------------------------------------------
# A small independent codec (SPOE.txt §3.1-3.2, PROTOCOL-NOTES §2-§4)
# --------------------------------------------------------------------------------------------

T_HHELLO, T_HDISC, T_NOTIFY = 1, 2, 3
T_AHELLO, T_ADISC, T_ACK = 101, 102, 103
FIN = 1
NUL, BOOL, I32, U32, I64, U64, IP4, IP6, STR, BIN = range(10)


def venc(v):
    if v < 240:
        return bytes([v])
    out = [(v | 0xF0) & 0xFF]
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v | 0x80) & 0xFF)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def vdec(b, i):
    x = b[i]
    i += 1
    if x < 240:
        return x, i
    shift = 4
    for _ in range(9):
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        x += c << shift
        shift += 7
        if c < 128:
            return x, i
    raise ValueError("varint longer than 10 bytes")


def nm(s):
    s = s.encode() if isinstance(s, str) else s
    return venc(len(s)) + s


def d_str(s):
    s = s.encode() if isinstance(s, str) else s
    return b"\x08" + venc(len(s)) + s


def d_u32(v):
    return b"\x03" + venc(v)


def d_ip4(a):
    return b"\x06" + socket.inet_pton(socket.AF_INET, a)


def tdec(b, i):
    t = b[i]
    i += 1
    ty = t & 0x0F
    if ty == NUL:
        return (NUL, None), i
    if ty == BOOL:
        return (BOOL, bool(t & 0x10)), i
    if ty in (I32, U32, I64, U64):
        v, i = vdec(b, i)
        return (ty, v), i
    if ty == IP4:
        return (IP4, bytes(b[i:i + 4])), i + 4
    if ty == IP6:
        return (IP6, bytes(b[i:i + 16])), i + 16
    if ty in (STR, BIN):
        n, i = vdec(b, i)
        if i + n > len(b):
            raise ValueError("string past the end")
        return (ty, bytes(b[i:i + n])), i + n
    raise ValueError("reserved type %d" % ty)


def frm(ftype, payload=b"", sid=0, fid=0, flags=FIN):
    body = bytes([ftype]) + struct.pack(">I", flags) + venc(sid) + venc(fid) + payload
    return struct.pack(">I", len(body)) + body


def raw_frame(body):
    return struct.pack(">I", len(body)) + body


def kv(items):
    return b"".join(nm(k) + v for k, v in items)


def hello(versions="2.0", mfs=16380, caps="pipelining", extra=()):
    items = [("supported-versions", d_str(versions)), ("max-frame-size", d_u32(mfs)),
             ("capabilities", d_str(caps)), ("engine-id", d_str("adv2-engine"))]
    return frm(T_HHELLO, kv(items + list(extra)))


def msg(name, args):
    return nm(name) + bytes([len(args)]) + b"".join(nm(k) + v for k, v in args)


def notify(sid, fid, msgs):
    return frm(T_NOTIFY, b"".join(msgs), sid, fid)


def ipmsg(ip="192.0.2.1"):
    return msg("check-client-ip", [("ip", d_ip4(ip))])


def parse_kv(p):
    out, i = [], 0
    while i < len(p):
        n, i = vdec(p, i)
        k = bytes(p[i:i + n]).decode("latin1")
        i += n
        v, i = tdec(p, i)
        out.append((k, v))
    return out


def parse_actions(p):
    out, i = [], 0
    while i < len(p):
        act, nb, scope = p[i], p[i + 1], p[i + 2]
        i += 3
        n, i = vdec(p, i)
        name = bytes(p[i:i + n]).decode("latin1")
        i += n
        if act == 1 and nb == 3:
            v, i = tdec(p, i)
            out.append(("set", scope, name, v))
        elif act == 2 and nb == 2:
            out.append(("unset", scope, name))
        else:
            raise ValueError("bad action %d/%d" % (act, nb))
    return out


class Frame:
    def __init__(self, body):
        self.type = body[0]
        self.flags = struct.unpack(">I", body[1:5])[0]
        self.sid, i = vdec(body, 5)
        self.fid, i = vdec(body, i)
        self.payload = bytes(body[i:])

    def __repr__(self):
        return "Frame(type=%d flags=%#x sid=%d fid=%d payload=%s)" % (
            self.type, self.flags, self.sid, self.fid, self.payload[:48].hex())


class Client:
    """HAProxy's side: a blocking socket with a bounded frame reader."""

    def __init__(self, addr, timeout=5.0, rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(addr)
        self.buf = bytearray()
        self.eof = False
        self.timeout = timeout

    def send(self, b):
        self.s.sendall(b)

    def _fill(self, deadline):
        rem = deadline - time.monotonic()
        if rem <= 0:
            raise AssertionError("timed out waiting for the agent (%d bytes buffered)"
                                 % len(self.buf))
        self.s.settimeout(rem)
        try:
            d = self.s.recv(1 << 16)
        except socket.timeout:
            raise AssertionError("timed out waiting for the agent (%d bytes buffered)"
                                 % len(self.buf)) from None
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def recv(self, timeout=None):
        """The next frame, or None at EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    body = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return Frame(body)
            if self.eof or not self._fill(deadline):
                if len(self.buf) >= 4:
                    continue
                return None

    def handshake(self, **kw):
        self.send(hello(**kw))
        f = self.recv()
        assert f is not None and f.type == T_AHELLO, "no AGENT-HELLO: %r" % (f,)
        return f

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


class IndependentCase(ta.AgentCase):
    agent_args = None   # every test starts the agent it needs

    def client(self, agent, **kw):
        c = Client(agent.addr, **kw)
        self.addCleanup(c.close)
        return c

    def start_rate_agent(self):
        """An agent whose check-rate goes to a private redis-server (skips without one)."""
        from pyspop.redis import RedisServer, redis_server_binary
        if not redis_server_binary():
            self.skipTest("redis-server not installed")
        r = RedisServer().start()
        self.addCleanup(r.stop)
        return self.start_agent(["--rate-redis", r.url, "--default-score", "50"])

    def assert_idle_cpu(self, agent, what, seconds=2.0, limit=0.3):
        cpu0 = agent.cpu_seconds()
        time.sleep(seconds)
        used = agent.cpu_seconds() - cpu0
        self.assertLess(used, limit, "agent CPU while idle %s: %.2f s in %.1f s (a worker spins)"
                        % (what, used, seconds))

    def assert_healthy(self, agent):
        self.assertTrue(agent.alive(), "agent died; log:\n" + agent.log_tail())
        c = self.client(agent)
        c.handshake()
        c.send(notify(5, 1, [ipmsg()]))
        f = c.recv()
        self.assertIsNotNone(f, "EOF instead of an ACK on a fresh connection")
        self.assertEqual((f.type, f.sid, f.fid), (T_ACK, 5, 1))
        self.assertEqual(agent.sanitizer_reports(), [])


class DeferredIdleTests(IndependentCase):
    """F1: a worker that answered a deferred NOTIFY must go back to sleep."""

    def test_idle_after_deferred_answer(self):
        # ADV2-F1: failed on main at 269ce59, fixed since (epoll engine only; uring passes)
        a = self.start_rate_agent()
        c = self.client(a)
        c.handshake()
        self.assert_idle_cpu(a, "before any deferred answer", seconds=1.0)
        c.send(notify(1, 1, [msg("check-rate", [("key", d_str("adv2"))])]))
        f = c.recv()
        self.assertEqual((f.type, f.sid, f.fid), (T_ACK, 1, 1))
        names = [x[2] for x in parse_actions(f.payload)]
        self.assertIn("over_limit", names)
        # The deferred deadline (--deferred-timeout, 400 ms) passes while nothing is open.
        time.sleep(1.0)
        self.assert_idle_cpu(a, "after one deferred answer, connection open")
        c.close()
        time.sleep(0.3)
        self.assert_idle_cpu(a, "after one deferred answer, connection closed")
        self.assert_healthy(a)


def run_expecting_exit(args, timeout=3.0):
    """Runs the agent expecting it to exit by itself: (rc, stderr); rc None when it kept running
    (then it is killed). pyspop's run_agent() raises ValueError instead in that case."""
    import signal
    import subprocess
    import tempfile
    with tempfile.TemporaryFile() as errf:
        p = subprocess.Popen([ta.AGENT] + list(args), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=errf, start_new_session=True)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
            rc = None
        errf.seek(0)
        return rc, errf.read().decode(errors="replace")


class CliEmptyValueTests(ta.AgentCase):
    """F2: an empty option value is bad input: one line `agent: ...`, non-zero exit. Today
    `--user ""` silently keeps root, `--metrics ""` silently serves no metrics, `--unix ""` and
    `--mmdb ""` are silently ignored."""
    agent_args = None

    def test_empty_values_are_refused(self):
        # ADV2-F2: failed on main at 269ce59, fixed since
        port = str(free_port())
        base = ["-p", port, "-n", "1", "-a", "127.0.0.1", "--engine", ta.ENGINE]
        for opt in ("-u", "--unix", "--mmdb", "--metrics", "--user", "-a", "--var-name",
                    "--rate-redis", "--list", "--csv", "--allow"):
            with self.subTest(option=opt):
                rc, err = run_expecting_exit(base + [opt, ""])
                self.assertIsNotNone(rc, "%s '' accepted: the agent started and kept running"
                                     % opt)
                self.assertNotEqual(rc, 0, "%s '' accepted" % opt)
                lines = [l for l in err.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, "stderr should be one line: %r" % err)
                self.assertTrue(lines[0].startswith("agent: "), lines[0])
                self.assertNotIn("event=start", err)


class VersionNegotiationTests(IndependentCase):
    """F4: SPOE.txt §3.2.4: "When a major version is announced by HAProxy, it means it also
    support all previous minor versions" and §3.2.5: the agent's version "must be lower or equal
    than one of major versions announced by HAProxy". An announced "2.1" or "2.5" includes 2.0:
    the agent must answer version "2.0", not AGENT-DISCONNECT 8."""

    def check_hello(self, agent, versions, expect_ok):
        c = self.client(agent)
        c.send(hello(versions=versions))
        f = c.recv()
        self.assertIsNotNone(f, "EOF instead of a reply to supported-versions %r" % versions)
        if expect_ok:
            self.assertEqual(f.type, T_AHELLO, "supported-versions %r: %r (%r)"
                             % (versions, f, parse_kv(f.payload)))
            self.assertEqual(dict(parse_kv(f.payload))["version"], (STR, b"2.0"))
        else:
            self.assertEqual(f.type, T_ADISC, "supported-versions %r: %r" % (versions, f))
            self.assertEqual(dict(parse_kv(f.payload))["status-code"][1], 8)
        c.close()

    def test_spec_example_and_lists(self):
        a = self.start_agent()
        for v in ("2.0", " 2.0 ", "2.0, 1.5", "1.0,2.0", "3.0,2.0", "2.0,"):
            self.check_hello(a, v, True)
        for v in ("1.0", "1.5", "3.0", "", "2", "2.", "x.y", "20"):
            self.check_hello(a, v, False)
        self.assert_healthy(a)

    def test_higher_minor_includes_2_0(self):
        # ADV2-F4: failed on main at 269ce59, fixed since
        a = self.start_agent()
        for v in ("2.1", "2.5", "1.0, 2.9"):
            self.check_hello(a, v, True)
        self.assert_healthy(a)


class DeferredAckRoomTests(IndependentCase):
    """F3: a NOTIFY with check-rate and many check-client-ip messages: the deferred ACK is cut at
    the ticket's 1024 bytes (options.hpp deferred_ack_bytes), far below the negotiated
    max-frame-size, and the rate answer (written last) is the first thing dropped."""

    def test_rate_answer_survives_many_scores(self):
        # ADV2-F3: failed on main at 269ce59, fixed since
        a = self.start_rate_agent()
        c = self.client(a)
        c.handshake(mfs=16380)
        n = 75
        c.send(notify(1, 1, [ipmsg()] * n + [msg("check-rate", [("key", d_str("adv2-f3"))])]))
        f = c.recv()
        self.assertEqual((f.type, f.sid, f.fid), (T_ACK, 1, 1))
        self.assertLessEqual(len(f.payload), 16380)
        acts = parse_actions(f.payload)
        names = [x[2] for x in acts]
        self.assertIn("over_limit", names, "rate answer dropped from a %d-byte ACK"
                      % len(f.payload))
        self.assertEqual(names.count("ip_score"), n, "scores dropped from a %d-byte ACK"
                         % len(f.payload))
        self.assert_healthy(a)


def kvd(f):
    return dict(parse_kv(f.payload))


class HandshakeMatrixTests(IndependentCase):
    """HAPROXY-HELLO variants (SPOE.txt §3.2.4-3.2.5, PROTOCOL-NOTES §5): what is accepted, what
    gets which AGENT-DISCONNECT status; the AGENT-HELLO's fields; the agent keeps serving."""

    def reply(self, agent, data):
        c = self.client(agent)
        c.send(data)
        f = c.recv()
        self.assertIsNotNone(f, "EOF instead of a reply")
        return c, f

    def test_accepted_variants(self):
        a = self.start_agent()
        extra_all_types = [("x0", b"\x00"), ("x1", b"\x11"), ("x2", b"\x02\x05"),
                           ("x3", d_u32(7)), ("x4", b"\x04" + venc(2**64 - 1)),
                           ("x5", b"\x05" + venc(2**64 - 1)), ("x6", d_ip4("192.0.2.1")),
                           ("x7", b"\x07" + bytes(16)), ("x8", d_str("s")),
                           ("x9", b"\x09\x02\x00\xff"), ("", d_str("empty key"))]
        cases = [
            ("caps async", hello(caps="pipelining,async"), 16380),
            ("caps fragmentation only", hello(caps="fragmentation"), 16380),
            ("caps empty", hello(caps=""), 16380),
            ("caps spaced", hello(caps=" pipelining , async "), 16380),
            ("caps pipelining2", hello(caps="pipelining2"), 16380),
            ("mfs 256", hello(mfs=256), 256),
            ("mfs 2^32-1", hello(mfs=2**32 - 1), 16380),
            ("unknown keys of every type", hello(extra=extra_all_types), 16380),
            ("duplicate max-frame-size (either may win)", hello(mfs=300, extra=[
                ("max-frame-size", d_u32(1000))]), (300, 1000)),
            ("healthcheck false", hello(extra=[("healthcheck", b"\x01")]), 16380),
        ]
        for label, data, mfs in cases:
            with self.subTest(case=label):
                c, f = self.reply(a, data)
                self.assertEqual(f.type, T_AHELLO, "%s: %r %r" % (label, f, kvd(f)))
                self.assertEqual(f.flags, FIN)
                self.assertEqual((f.sid, f.fid), (0, 0))
                fields = kvd(f)
                self.assertEqual(fields["version"], (STR, b"2.0"))
                allowed = mfs if isinstance(mfs, tuple) else (mfs,)
                self.assertIn(fields["max-frame-size"][1], allowed)
                self.assertIn(fields["max-frame-size"][0], (U32, I32, U64, I64))
                self.assertEqual(fields["capabilities"][0], STR)
                caps = [x.strip() for x in fields["capabilities"][1].split(b",")]
                self.assertNotIn(b"async", caps)
                self.assertNotIn(b"fragmentation", caps)
                # and the connection serves
                c.send(notify(7, 3, [ipmsg()]))
                ack = c.recv()
                self.assertEqual((ack.type, ack.sid, ack.fid), (T_ACK, 7, 3))
                self.assertLessEqual(len(ack.payload) + 7, fields["max-frame-size"][1])
                c.close()
        self.assert_healthy(a)

    def test_refused_variants(self):
        a = self.start_agent()
        cases = [
            ("mfs 255", hello(mfs=255), 9),
            ("mfs 0", hello(mfs=0), 9),
            ("mfs as STRING", frm(T_HHELLO, kv([("supported-versions", d_str("2.0")),
                                                ("max-frame-size", d_str("300")),
                                                ("capabilities", d_str(""))])), 4),
            ("versions as BINARY", frm(T_HHELLO, kv([("supported-versions", b"\x09\x032.0"),
                                                     ("max-frame-size", d_u32(300)),
                                                     ("capabilities", d_str(""))])), 4),
            ("healthcheck as UINT32", hello(extra=[("healthcheck", d_u32(1))]), 4),
            ("reserved type 10", hello(extra=[("xa", b"\x0a")]), 4),
            ("key length 2^64-1", frm(T_HHELLO, venc(2**64 - 1) + b"x"), 4),
            ("string length 2^63", frm(T_HHELLO, nm("supported-versions") + b"\x08" +
                                       venc(2**63) + b"2.0"), 4),
            ("empty payload", frm(T_HHELLO, b""), 5),
            ("ACK before HELLO", frm(T_ACK, b"", 1, 1), 4),
            ("AGENT-HELLO from the peer", frm(T_AHELLO, b""), 4),
            ("AGENT-DISCONNECT from the peer", frm(T_ADISC, kv([("status-code", d_u32(0)),
                                                                ("message", d_str(""))])), 4),
            ("type 0 before HELLO", frm(0, b""), 4),
        ]
        for label, data, status in cases:
            with self.subTest(case=label):
                c, f = self.reply(a, data)
                self.assertEqual(f.type, T_ADISC, "%s: %r" % (label, f))
                self.assertEqual((f.flags, f.sid, f.fid), (FIN, 0, 0))
                self.assertEqual(kvd(f)["status-code"][1], status, label)
                self.assertEqual(kvd(f)["message"][0], STR)
                self.assertIsNone(c.recv(), "bytes after AGENT-DISCONNECT")
                c.close()
        self.assert_healthy(a)


class FrameLayerTests(IndependentCase):
    """After the handshake: frames a peer must not send, flags, ids at their widest."""

    def test_after_handshake(self):
        a = self.start_agent()
        fatal = [
            ("client ACK sid 0", frm(T_ACK, b"", 0, 0), 4),
            ("AGENT-HELLO sid 0", frm(T_AHELLO, b"", 0, 0), 4),
            ("AGENT-DISCONNECT sid 0", frm(T_ADISC, b"", 0, 0), 4),
            ("ABORT without FIN", frm(T_NOTIFY, ipmsg(), 1, 1, flags=2), 10),
            ("sid above 2^64-1", raw_frame(bytes([T_NOTIFY]) + b"\0\0\0\1" +
                                           bytes.fromhex("fff0fefefefefefefe0f") + b"\x01"), 4),
            ("11-byte varint", raw_frame(bytes([T_NOTIFY]) + b"\0\0\0\1" + b"\xff" * 10 +
                                         b"\x00\x01"), 4),
        ]
        for label, data, status in fatal:
            with self.subTest(case=label):
                c = self.client(a)
                c.handshake()
                c.send(data)
                f = c.recv()
                self.assertIsNotNone(f, "%s: EOF without AGENT-DISCONNECT" % label)
                self.assertEqual(f.type, T_ADISC, "%s: %r" % (label, f))
                self.assertEqual(kvd(f)["status-code"][1], status, label)
                self.assertIsNone(c.recv())
                c.close()
        # Skipped or answered, and the connection goes on.
        c = self.client(a)
        c.handshake()
        c.send(frm(T_ACK, b"", 1, 1) + frm(0, b"abc", 3, 1) + frm(77, b"x", 5, 1) +
               frm(T_NOTIFY, ipmsg(), 2**64 - 1, 2**64 - 1, flags=FIN | 2) +
               frm(T_NOTIFY, ipmsg(), 0, 0, flags=0xFFFFFFFD) +
               frm(T_NOTIFY, ipmsg(), 2**63, 1))
        got = [(f.type, f.sid, f.fid) for f in (c.recv(), c.recv(), c.recv())]
        self.assertEqual(got, [(T_ACK, 2**64 - 1, 2**64 - 1), (T_ACK, 0, 0), (T_ACK, 2**63, 1)])
        self.assert_healthy(a)

    def test_haproxy_disconnect_variants(self):
        a = self.start_agent()
        cases = [
            ("INT64 status, no message", frm(T_HDISC, kv([("status-code", b"\x04\x05")])), 5),
            ("BINARY message", frm(T_HDISC, kv([("status-code", d_u32(3)),
                                                 ("message", b"\x09\x02\x00\xff")])), 3),
            ("FIN unset, sid 5", frm(T_HDISC, kv([("status-code", d_u32(2)),
                                                   ("message", d_str("x"))]), 5, 1, flags=0), 2),
            ("garbage payload", frm(T_HDISC, b"\xff\xff"), 0),
        ]
        for label, data, status in cases:
            with self.subTest(case=label):
                c = self.client(a)
                c.handshake()
                c.send(data + notify(1, 1, [ipmsg()]))
                f = c.recv()
                self.assertEqual(f.type, T_ADISC, "%s: %r" % (label, f))
                self.assertEqual(kvd(f)["status-code"][1], status)
                self.assertIsNone(c.recv(), "a frame after AGENT-DISCONNECT (the NOTIFY after "
                                  "HAPROXY-DISCONNECT must be ignored)")
                c.close()
        self.assert_healthy(a)


class PipelineTortureTests(IndependentCase):
    """Random 64-bit ids (duplicates, 0, 2^64-1), 0-3 messages, random write splits, several
    connections at once: every NOTIFY gets exactly one ACK with its ids (a multiset)."""

    def run_conn(self, agent, seed, n, results):
        import collections
        import random
        rnd = random.Random(seed)
        try:
            c = Client(agent.addr, timeout=20)
            c.handshake(mfs=rnd.choice([256, 1000, 16380]))
            sent = collections.Counter()
            frames = []
            for _ in range(n):
                sid = rnd.choice([rnd.randrange(2**64), rnd.randrange(300), 2**64 - 1, 0])
                fid = rnd.choice([rnd.randrange(2**64), 1, 0])
                msgs = [rnd.choice([ipmsg("10.0.0.%d" % rnd.randrange(256)),
                                    msg("check-client-ip", [("", b"\x07" + bytes(15) + b"\x01")]),
                                    msg("other", [("x", d_str("y" * rnd.randrange(40)))])])
                        for _ in range(rnd.randrange(4))]
                frames.append(notify(sid, fid, msgs))
                sent[(sid, fid)] += 1
            data = b"".join(frames)
            got = collections.Counter()

            def reader():
                while sum(got.values()) < n:
                    f = c.recv(20)
                    if f is None or f.type != T_ACK:
                        got[("unexpected", repr(f))] += 1
                        return
                    parse_actions(f.payload)
                    got[(f.sid, f.fid)] += 1

            rt = threading.Thread(target=reader)
            rt.start()
            i = 0
            while i < len(data):
                k = rnd.choice([1, 2, 3, 5, 7, 64, 1000, 5000, len(data)])
                c.send(data[i:i + k])
                i += k
            rt.join(60)
            results[seed] = (sent == got, (sent - got).most_common(2), (got - sent).most_common(2))
            c.close()
        except Exception as e:  # reported by the assertion below
            results[seed] = (False, repr(e), None)

    def test_every_notify_acked_once(self):
        a = self.start_agent()
        results = {}
        ths = [threading.Thread(target=self.run_conn, args=(a, seed, 400, results))
               for seed in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(90)
        self.assertEqual(len(results), 8)
        bad = {k: v for k, v in results.items() if not v[0]}
        self.assertEqual(bad, {}, "missing/extra ACKs per connection")
        self.assert_healthy(a)


class LingeringCloseTests(IndependentCase):
    """After a protocol error the AGENT-DISCONNECT must reach a peer that keeps sending: closing
    with unread input would RST the connection and destroy the frame in flight."""

    def test_disconnect_reaches_a_peer_that_keeps_sending(self):
        a = self.start_agent()
        junk = notify(1, 1, [ipmsg()]) * 2000
        for trial in range(5):
            c = self.client(a, timeout=10)
            c.handshake()
            stop = threading.Event()

            def pump():
                try:
                    c.send(frm(T_NOTIFY, ipmsg(), 1, 1, flags=0))   # status 10
                    for _ in range(200):
                        if stop.is_set():
                            return
                        c.send(junk)
                except OSError:
                    pass

            th = threading.Thread(target=pump)
            th.start()
            try:
                f = c.recv(10)
                while f is not None and f.type == T_ACK:
                    f = c.recv(10)
            finally:
                stop.set()
                th.join(10)
            self.assertIsNotNone(f, "trial %d: connection ended without AGENT-DISCONNECT" % trial)
            self.assertEqual(f.type, T_ADISC)
            self.assertEqual(kvd(f)["status-code"][1], 10)
            c.close()
        self.assert_healthy(a)


class UnixSocketTests(IndependentCase):
    """F6/F7: the -u/--unix listener."""

    def unix_path(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="adv2-unix-")
        os.chmod(d, 0o755)
        self.addCleanup(lambda: __import__("shutil").rmtree(d, ignore_errors=True))
        return os.path.join(d, "agent.sock")

    def test_other_users_can_connect_with_unix_mode(self):
        # ADV2-F6 (failed on main at 269ce59: no way to open the socket to another user).
        # HAProxy connects to its servers after dropping privileges (global `user haproxy`):
        # a socket that only its creator may write to cannot be used by it. The default stays
        # the umask's (not every local user should reach the agent); --unix-mode opens it.
        if os.geteuid() != 0:
            self.skipTest("needs root to connect as another user")
        import pwd
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user nobody")
        path = self.unix_path()
        a = self.start_agent(["-u", path, "--unix-mode", "666"])
        pid = os.fork()
        if pid == 0:  # the child: connect as nobody, exit 0 on success
            code = 1
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(3)
                s.connect(path)
                s.close()
                code = 0
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        mode = oct(os.stat(path).st_mode & 0o777)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0,
                         "user nobody cannot connect to the agent's Unix socket (mode %s)" % mode)
        self.assert_healthy(a)

    def test_live_socket_is_not_stolen(self):
        # ADV2-F7: failed on main at 269ce59, fixed since
        # A second agent started on the path of a running one must refuse, as it does for a TCP
        # port in use; today it unlinks the live socket, takes the path, and removes it on exit,
        # leaving the first agent unreachable through it.
        path = self.unix_path()
        a = self.start_agent(["-u", path])
        rc, err = run_expecting_exit(["-p", str(free_port()), "-n", "1", "-a", "127.0.0.1",
                                      "--engine", ta.ENGINE, "-u", path], timeout=3.0)
        self.assertIsNotNone(rc, "a second agent started on the live socket %s" % path)
        self.assertNotEqual(rc, 0)
        self.assertTrue(err.startswith("agent: "), err)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect(path)
            s.sendall(hello())
            d = s.recv(4096)
            self.assertGreater(len(d), 4, "the first agent no longer answers on %s" % path)
        finally:
            s.close()
        self.assert_healthy(a)
