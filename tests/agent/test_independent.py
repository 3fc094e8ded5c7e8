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
import unittest

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
        # FAILS on main at 269ce59: ADV2-F1 (epoll engine only; uring passes)
        from pyspop.redis import RedisServer, redis_server_binary
        if not redis_server_binary():
            self.skipTest("redis-server not installed")
        r = RedisServer().start()
        self.addCleanup(r.stop)
        a = self.start_agent(["--rate-redis", r.url, "--default-score", "50"])
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
        # FAILS on main at 269ce59: ADV2-F2
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
        # FAILS on main at 269ce59: ADV2-F4
        a = self.start_agent()
        for v in ("2.1", "2.5", "1.0, 2.9"):
            self.check_hello(a, v, True)
        self.assert_healthy(a)


class DeferredAckRoomTests(IndependentCase):
    """F3: a NOTIFY with check-rate and many check-client-ip messages: the deferred ACK is cut at
    the ticket's 1024 bytes (options.hpp deferred_ack_bytes), far below the negotiated
    max-frame-size, and the rate answer (written last) is the first thing dropped."""

    def test_rate_answer_survives_many_scores(self):
        # FAILS on main at 269ce59: ADV2-F3
        from pyspop.redis import RedisServer, redis_server_binary
        if not redis_server_binary():
            self.skipTest("redis-server not installed")
        r = RedisServer().start()
        self.addCleanup(r.stop)
        a = self.start_agent(["--rate-redis", r.url, "--default-score", "50"])
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
