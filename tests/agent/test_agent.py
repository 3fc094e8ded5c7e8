#!/usr/bin/env python3
"""Loopback tests for the spop agent binary (python3 standard library only).

    python3 tests/agent/test_agent.py --agent build/agent/agent [--engine uring|epoll] [-k PATTERN]

The agent is driven by a small SPOP client written here from shared/reference/PROTOCOL-NOTES.md
(varints per §2, which are NOT LEB128; typed data §3; KV lists and NOTIFY payloads §4; frames §1).

Groups (one unittest class each):
  A ConformanceTests    bad input -> AGENT-DISCONNECT with the exact status and message, then EOF
  B ServiceTests        handshakes, NOTIFY/ACK, ids, frames split at every offset, slow-loris
  C HAProxy31Tests      3.1+ behaviour: pipelined odd stream ids, health check, silent closes
  D HostileTests        HTTP on the port, 1000-connection burst, 10k idle connections (RSS per
                        connection), NOTIFY flood without reading, graceful stop
  E CliTests            flags, port in use, IPv6 loopback, Unix socket

Every agent listens on loopback only, on a free port picked by binding port 0, runs `-n 2`, and is
stopped (SIGTERM, bounded wait, then SIGKILL) in tearDown/tearDownClass, also when this script gets
SIGTERM. Every loop is bounded in count and time. After every hostile case the agent must still be
running and serve a fresh connection.

The last line printed is "N passed, N failed, N skipped". Exit status: 0 all passed, 1 a test
failed, 77 skipped (`--engine uring` while the agent reports "io_uring unavailable").
"""

import argparse
import errno
import ipaddress
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SKIP = 77

AGENT = None          # path to the agent binary (--agent)
ENGINE = "epoll"      # --engine
VERBOSE = False

# --------------------------------------------------------------------------------------------
# SPOP codec (client side)
# --------------------------------------------------------------------------------------------

FIN = 0x00000001
ABORT = 0x00000002

T_UNSET, T_HAPROXY_HELLO, T_HAPROXY_DISCONNECT, T_NOTIFY = 0, 1, 2, 3
T_AGENT_HELLO, T_AGENT_DISCONNECT, T_ACK = 101, 102, 103

D_NULL, D_BOOL, D_INT32, D_UINT32, D_INT64, D_UINT64, D_IPV4, D_IPV6, D_STRING, D_BINARY = range(10)

SCOPE_SESS = 1
ACT_SET_VAR, ACT_UNSET_VAR = 1, 2

# The exact strings HAProxy puts on the wire (PROTOCOL-NOTES §6).
STATUS_MESSAGES = {
    0: "normal",
    1: "I/O error",
    2: "a timeout occurred",
    3: "frame is too big",
    4: "invalid frame received",
    5: "version value not found",
    6: "max-frame-size value not found",
    7: "capabilities value not found",
    8: "unsupported version",
    9: "max-frame-size too big or too small",
    10: "fragmentation not supported",
    11: "invalid interlaced frames",
    12: "frame-id not found",
    13: "resource allocation error",
    99: "an unknown error occurred",
}

U64_MAX = (1 << 64) - 1


class DecodeError(Exception):
    pass


class Truncated(DecodeError):
    pass


def enc_varint(v):
    """PROTOCOL-NOTES §2 ("peers encoding"), not LEB128."""
    if v < 0 or v > U64_MAX:
        raise ValueError("varint out of range: %r" % v)
    if v < 240:
        return bytes([v])
    out = bytearray([(v & 0xFF) | 0xF0])
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def dec_varint(buf, pos):
    """Returns (value, new_pos). Raises Truncated, or DecodeError after 10 bytes."""
    if pos >= len(buf):
        raise Truncated("varint at end of buffer")
    b = buf[pos]
    pos += 1
    if b < 240:
        return b, pos
    x = b
    shift = 4
    n = 1
    while True:
        if n >= 10:
            raise DecodeError("varint longer than 10 bytes")
        if pos >= len(buf):
            raise Truncated("truncated varint")
        b = buf[pos]
        pos += 1
        n += 1
        x += b << shift
        shift += 7
        if b < 128:
            break
    if x > U64_MAX:
        raise DecodeError("varint above 2^64-1")
    return x, pos


def name(s):
    """A bare NAME: varint length + bytes, no type byte (§4, §12.1)."""
    b = s.encode() if isinstance(s, str) else bytes(s)
    return enc_varint(len(b)) + b


def t_null():
    return b"\x00"


def t_bool(v):
    return b"\x11" if v else b"\x01"


def t_uint32(v):
    return bytes([D_UINT32]) + enc_varint(v)


def t_int64(v):
    return bytes([D_INT64]) + enc_varint(v & U64_MAX)


def t_ip(addr):
    ip = ipaddress.ip_address(addr)
    return bytes([D_IPV4 if ip.version == 4 else D_IPV6]) + ip.packed


def t_str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return bytes([D_STRING]) + enc_varint(len(b)) + b


def t_bin(b):
    return bytes([D_BINARY]) + enc_varint(len(b)) + bytes(b)


def kv(items):
    return b"".join(name(k) + v for k, v in items)


def frame(ftype, payload=b"", sid=0, fid=0, flags=FIN, raw_ids=None):
    """One frame with its length prefix. raw_ids replaces the encoded stream-id/frame-id."""
    ids = raw_ids if raw_ids is not None else enc_varint(sid) + enc_varint(fid)
    body = bytes([ftype]) + struct.pack(">I", flags) + ids + payload
    return struct.pack(">I", len(body)) + body


def hello(versions="2.0", mfs=16380, caps="pipelining", engine_id=None, healthcheck=None,
          omit=(), sid=0, fid=0, flags=FIN):
    items = []
    if "supported-versions" not in omit:
        items.append(("supported-versions", t_str(versions)))
    if "max-frame-size" not in omit:
        items.append(("max-frame-size", t_uint32(mfs)))
    if "capabilities" not in omit:
        items.append(("capabilities", t_str(caps)))
    if engine_id is not None:
        items.append(("engine-id", t_str(engine_id)))
    if healthcheck is not None:
        items.append(("healthcheck", t_bool(healthcheck)))
    return frame(T_HAPROXY_HELLO, kv(items), sid, fid, flags)


def notify_payload(messages):
    """messages: [(message_name, [(arg_name, typed_bytes), ...]), ...]"""
    out = bytearray()
    for mname, args in messages:
        out += name(mname) + bytes([len(args)])
        for aname, typed in args:
            out += name(aname) + typed
    return bytes(out)


def notify(sid, fid, messages, flags=FIN):
    return frame(T_NOTIFY, notify_payload(messages), sid, fid, flags)


def ip_msg(addr="127.0.0.1", named=True):
    return ("check-client-ip", [("ip" if named else "", t_ip(addr))])


def haproxy_disconnect(status, message):
    return frame(T_HAPROXY_DISCONNECT, kv([("status-code", t_uint32(status)),
                                           ("message", t_str(message))]))


class Frame:
    __slots__ = ("type", "flags", "sid", "fid", "payload", "raw")

    def __init__(self, ftype, flags, sid, fid, payload, raw):
        self.type, self.flags, self.sid, self.fid, self.payload, self.raw = \
            ftype, flags, sid, fid, payload, raw

    def __repr__(self):
        return "Frame(type=%d flags=%#x sid=%d fid=%d payload=%s)" % (
            self.type, self.flags, self.sid, self.fid, self.payload.hex())


def parse_frame(raw):
    """raw = length prefix + body, exactly one frame."""
    body = raw[4:]
    if len(body) < 7:
        raise DecodeError("frame shorter than 7 bytes: %s" % raw.hex())
    ftype = body[0]
    flags = struct.unpack(">I", body[1:5])[0]
    sid, pos = dec_varint(body, 5)
    fid, pos = dec_varint(body, pos)
    return Frame(ftype, flags, sid, fid, bytes(body[pos:]), bytes(raw))


def dec_typed(buf, pos):
    """Returns ((type, value), new_pos)."""
    if pos >= len(buf):
        raise Truncated("typed data at end")
    b = buf[pos]
    pos += 1
    t = b & 0x0F
    if t == D_NULL:
        return (t, None), pos
    if t == D_BOOL:
        return (t, (b & 0x10) != 0), pos
    if t in (D_INT32, D_UINT32, D_INT64, D_UINT64):
        v, pos = dec_varint(buf, pos)
        return (t, v), pos
    if t in (D_IPV4, D_IPV6):
        n = 4 if t == D_IPV4 else 16
        if pos + n > len(buf):
            raise Truncated("truncated address")
        return (t, ipaddress.ip_address(bytes(buf[pos:pos + n]))), pos + n
    if t in (D_STRING, D_BINARY):
        n, pos = dec_varint(buf, pos)
        if pos + n > len(buf):
            raise Truncated("truncated string")
        v = bytes(buf[pos:pos + n])
        return (t, v.decode("utf-8", "replace") if t == D_STRING else v), pos + n
    raise DecodeError("reserved typed-data type %d" % t)


def dec_name(buf, pos):
    n, pos = dec_varint(buf, pos)
    if pos + n > len(buf):
        raise Truncated("truncated name")
    return bytes(buf[pos:pos + n]).decode("utf-8", "replace"), pos + n


def parse_kv(payload):
    """Returns a list of (key, (type, value))."""
    out = []
    pos = 0
    while pos < len(payload):
        k, pos = dec_name(payload, pos)
        v, pos = dec_typed(payload, pos)
        out.append((k, v))
    return out


def parse_actions(payload):
    """ACK payload -> [("set", scope, name, (type, value)) | ("unset", scope, name)]."""
    out = []
    pos = 0
    while pos < len(payload):
        if pos + 3 > len(payload):
            raise Truncated("truncated action")
        act, nb, scope = payload[pos], payload[pos + 1], payload[pos + 2]
        pos += 3
        if act == ACT_SET_VAR and nb == 3:
            vname, pos = dec_name(payload, pos)
            val, pos = dec_typed(payload, pos)
            out.append(("set", scope, vname, val))
        elif act == ACT_UNSET_VAR and nb == 2:
            vname, pos = dec_name(payload, pos)
            out.append(("unset", scope, vname))
        else:
            raise DecodeError("bad action %d with %d args" % (act, nb))
    return out


def h(s):
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


def hs(s):
    return s.encode().hex()


# PROTOCOL-NOTES §11 vectors.
V1_HELLO_34 = h("0000007b 01 00000001 00 00"
                "12" + hs("supported-versions") + "08 03" + hs("2.0") +
                "0e" + hs("max-frame-size") + "03 fcf006"
                "0c" + hs("capabilities") + "08 0a" + hs("pipelining") +
                "09" + hs("engine-id") + "08 24" + hs("bc250262-feec-4411-aee7-699dcefaa22f"))
V2_HELLO_26 = h("00000081 01 00000001 00 00"
                "12" + hs("supported-versions") + "08 03" + hs("2.0") +
                "0e" + hs("max-frame-size") + "03 fcf006"
                "0c" + hs("capabilities") + "08 10" + hs("pipelining,async") +
                "09" + hs("engine-id") + "08 24" + hs("54f99a45-0276-4663-914e-8df45c143259"))
V3_HEALTHCHECK = h("0000004e0100000001000012737570706f727465642d76657273696f6e730803322e300e6d61"
                   "782d6672616d652d73697a6503fcf0060c6361706162696c697469657308000b6865616c7468"
                   "636865636b11")
V5_NOTIFY_NAMED = h("00000020 03 00000001 01 01 0f" + hs("check-client-ip") + "01 02" + hs("ip") +
                    "06 7f000001")
V6_NOTIFY_UNNAMED = h("0000001e 03 00000001 01 01 0f" + hs("check-client-ip") + "01 00 06 7f000001")
V7_ACK_42 = h("00000015 67 00000001 01 01 01 03 01 08" + hs("ip_score") + "03 2a")
V8_DISCONNECT_TIMEOUT = h("00000031 02 00000001 0000 0b" + hs("status-code") + "03 02 07" +
                          hs("message") + "08 12" + hs("a timeout occurred"))

# --------------------------------------------------------------------------------------------
# Client connection
# --------------------------------------------------------------------------------------------

DEFAULT_TIMEOUT = 5.0


class Conn:
    """A blocking SPOP client socket with a frame reader."""

    def __init__(self, addr, family=socket.AF_INET, timeout=DEFAULT_TIMEOUT, sock=None):
        if sock is None:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(addr)
            except BaseException:
                sock.close()
                raise
        else:
            sock.settimeout(timeout)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def rst(self):
        """Close with an RST (SO_LINGER 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def _fill(self, deadline):
        """Reads more bytes; False on EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timed out waiting for data from the agent (have %d bytes: %s)"
                                 % (len(self.buf), bytes(self.buf[:64]).hex()))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("timed out waiting for data from the agent (have %d bytes: %s)"
                                 % (len(self.buf), bytes(self.buf[:64]).hex())) from None
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def recv_frame(self, timeout=DEFAULT_TIMEOUT):
        """The next frame, or None on a clean EOF. A partial frame at EOF is an error."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    raw = bytes(self.buf[:4 + n])
                    del self.buf[:4 + n]
                    return parse_frame(raw)
            if self.eof or not self._fill(deadline):
                if self.buf:
                    raise AssertionError("EOF inside a frame: %s" % bytes(self.buf).hex())
                return None

    def read_until_eof(self, timeout=DEFAULT_TIMEOUT, limit=1 << 20):
        """Everything up to EOF (bounded in time and size); returns the raw bytes."""
        deadline = time.monotonic() + timeout
        while not self.eof and len(self.buf) <= limit:
            if not self._fill(deadline):
                break
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def handshake(self, hello_bytes=None, timeout=DEFAULT_TIMEOUT):
        self.send(hello_bytes if hello_bytes is not None else V1_HELLO_34)
        f = self.recv_frame(timeout)
        if f is None or f.type != T_AGENT_HELLO:
            raise AssertionError("expected AGENT-HELLO, got %r" % (f,))
        return f


def hello_fields(f):
    """AGENT-HELLO -> dict key -> (type, value); duplicates are an error."""
    items = parse_kv(f.payload)
    d = {}
    for k, v in items:
        if k in d:
            raise AssertionError("duplicate key %r in AGENT-HELLO" % k)
        d[k] = v
    return d


def disconnect_fields(f):
    d = dict(parse_kv(f.payload))
    return d.get("status-code"), d.get("message")


# --------------------------------------------------------------------------------------------
# Agent process
# --------------------------------------------------------------------------------------------

_live_agents = set()


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def ipv6_loopback_usable():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def vmrss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def raise_nofile(want):
    """Raises the soft RLIMIT_NOFILE towards `want`; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


LEVEL_RE = re.compile(r"\blevel=(error|warn)\b")


class Agent:
    """One agent process: loopback, -n 2, stderr captured in a temporary file."""

    def __init__(self, args=(), address="127.0.0.1", workers=2, tcp=True, nofile=None):
        self.args = list(args)
        self.nofile = nofile
        self.address = address
        self.workers = workers
        self.tcp = tcp
        self.proc = None
        self.port = None
        self.logf = None
        self.rc = None

    @property
    def addr(self):
        return (self.address, self.port)

    @property
    def family(self):
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    def start(self, ready_timeout=5.0):
        last = ""
        for _attempt in range(3):
            fam = self.family
            self.port = free_port(fam, self.address)
            cmd = [AGENT, "-p", str(self.port), "-n", str(self.workers), "--engine", ENGINE]
            if self.tcp:
                cmd += ["-a", self.address]
            cmd += self.args
            self.logf = tempfile.TemporaryFile(prefix="agent-log-")
            limit = self.nofile

            def preexec():
                if limit is not None:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.logf,
                                         stderr=self.logf, start_new_session=True,
                                         preexec_fn=preexec if limit is not None else None)
            _live_agents.add(self)
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline:
                text = self.log_text()
                if "event=start" in text:
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
            last = self.log_text()
            self.stop()
            if "in use" not in last:
                break
        raise AssertionError("agent did not start (%s): %s" % (" ".join(cmd), last.strip()))

    def log_bytes(self):
        self.logf.flush()
        self.logf.seek(0)
        return self.logf.read()

    def log_text(self):
        return self.log_bytes().decode("utf-8", "replace")

    def log_mark(self):
        return len(self.log_bytes())

    def log_since(self, mark):
        self.logf.seek(0)
        return self.logf.read()[mark:].decode("utf-8", "replace")

    def problems_since(self, mark):
        return [l for l in self.log_since(mark).splitlines() if LEVEL_RE.search(l)]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def rss(self):
        return vmrss(self.proc.pid)

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout=10.0):
        """SIGTERM, bounded wait, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return self.rc
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.rc = self.proc.returncode
        _live_agents.discard(self)
        self.proc = None
        return self.rc

    def connect(self, timeout=DEFAULT_TIMEOUT):
        return Conn(self.addr, self.family, timeout)


def kill_all_agents():
    for a in list(_live_agents):
        try:
            if a.proc is not None and a.proc.poll() is None:
                os.killpg(a.proc.pid, signal.SIGKILL)
                a.proc.wait(5)
        except Exception:
            pass
        _live_agents.discard(a)


# --------------------------------------------------------------------------------------------
# Base test case
# --------------------------------------------------------------------------------------------


class AgentCase(unittest.TestCase):
    agent_args = ()          # class-level agent; None = no class agent
    agent = None

    @classmethod
    def setUpClass(cls):
        if cls.agent_args is not None:
            cls.agent = Agent(cls.agent_args).start()

    @classmethod
    def tearDownClass(cls):
        if cls.agent is not None:
            cls.agent.stop()
            cls.agent = None

    def setUp(self):
        self._conns = []
        self._agents = []

    def tearDown(self):
        for c in self._conns:
            try:
                c.close()
            except Exception:
                pass
        for a in self._agents:
            a.stop()

    # helpers -------------------------------------------------------------------------------

    def start_agent(self, args=(), **kw):
        a = Agent(args, **kw)
        self._agents.append(a)
        return a.start()

    def conn(self, agent=None, timeout=DEFAULT_TIMEOUT):
        c = (agent or self.agent).connect(timeout)
        self._conns.append(c)
        return c

    def check_ack_score(self, f, sid, fid, exact=None, count=1):
        self.assertEqual(f.type, T_ACK, "expected ACK, got %r" % (f,))
        self.assertEqual(f.flags, FIN)
        self.assertEqual((f.sid, f.fid), (sid, fid), "ACK ids not echoed")
        acts = parse_actions(f.payload)
        sets = [a for a in acts if a[0] == "set"]
        self.assertEqual(len(sets), count, "SET-VAR actions in %r" % (acts,))
        for a in sets:
            _, scope, vname, (vtype, val) = a
            self.assertEqual(scope, SCOPE_SESS)
            self.assertEqual(vname, "ip_score")
            self.assertEqual(vtype, D_UINT32)
            self.assertTrue(0 <= val <= 100, "score %r out of 0..100" % val)
            if exact is not None:
                self.assertEqual(val, exact)
        return [a[3][1] for a in sets]

    def check_noop_ack(self, f, sid, fid):
        self.assertEqual(f.type, T_ACK, "expected ACK, got %r" % (f,))
        self.assertEqual((f.sid, f.fid), (sid, fid))
        self.assertTrue(f.payload, "empty ACK (stalls HAProxy 3.1.0, §12.14)")
        acts = parse_actions(f.payload)
        self.assertTrue(acts)
        for a in acts:
            self.assertEqual(a[0], "unset", "expected only a harmless UNSET-VAR, got %r" % (acts,))
            self.assertNotEqual(a[2], "ip_score")

    def expect_disconnect(self, c, status, timeout=DEFAULT_TIMEOUT, message=None):
        """The next frame is AGENT-DISCONNECT(status, exact message), then EOF."""
        f = c.recv_frame(timeout)
        self.assertIsNotNone(f, "connection closed without AGENT-DISCONNECT %d" % status)
        self.assertEqual(f.type, T_AGENT_DISCONNECT, "expected AGENT-DISCONNECT %d, got %r"
                         % (status, f))
        self.assertEqual(f.flags, FIN)
        self.assertEqual((f.sid, f.fid), (0, 0))
        st, msg = disconnect_fields(f)
        self.assertIsNotNone(st, "no status-code in %r" % f)
        self.assertIn(st[0], (D_INT32, D_UINT32, D_INT64, D_UINT64))
        self.assertEqual(st[1], status, "status-code (message %r)" % (msg,))
        want = STATUS_MESSAGES[status] if message is None else message
        self.assertEqual(msg, (D_STRING, want))
        rest = c.read_until_eof(timeout)
        self.assertEqual(rest, b"", "bytes after AGENT-DISCONNECT: %s" % rest.hex())
        self.assertTrue(c.eof, "agent did not close after AGENT-DISCONNECT")
        return f

    def assert_serves(self, agent=None):
        """The agent is running and a fresh connection gets a handshake and an ACK."""
        agent = agent or self.agent
        self.assertTrue(agent.alive(), "agent died; log:\n" + agent.log_text()[-2000:])
        with agent.connect() as c:
            c.handshake()
            c.send(notify(1, 1, [ip_msg("192.0.2.7")]))
            f = c.recv_frame()
            self.assertIsNotNone(f, "EOF instead of ACK on a fresh connection")
            self.check_ack_score(f, 1, 1)

    def bad_input(self, data, status, handshake=False, agent=None):
        """Sends data (after a handshake if asked), expects DISCONNECT status, then checks the
        agent still serves."""
        agent = agent or self.agent
        with agent.connect() as c:
            if handshake:
                c.handshake()
            c.send(data)
            self.expect_disconnect(c, status)
        self.assert_serves(agent)


# --------------------------------------------------------------------------------------------
# Codec self-check (no agent)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# A. Conformance
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# B. Normal service
# --------------------------------------------------------------------------------------------


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
        for versions in ("2.0", " 2.0 ", "1.0,2.0", "2.0, 3.0", "2.00"):
            with self.subTest(versions=versions):
                with self.conn() as c:
                    self.check_agent_hello(c.handshake(hello(versions=versions)), 16380)
        for versions in ("2.1", "3.0", "1.0, 1.5", "", "2", "two"):
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


# --------------------------------------------------------------------------------------------
# C. HAProxy 3.1+ behaviour
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# D. Hostile peers and overload
# --------------------------------------------------------------------------------------------


def open_many(addr, n, family=socket.AF_INET, timeout=10.0):
    """Opens n connections at once (non-blocking connects); returns blocking Conn objects."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setblocking(False)
            rc = s.connect_ex(addr)
            if rc not in (0, errno.EINPROGRESS):
                raise AssertionError("connect: %s" % os.strerror(rc))
        poller = select.poll()
        pending = {s.fileno(): s for s in socks}
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%d of %d connects did not complete" % (len(pending), n))
            for fd, _ev in poller.poll(int(left * 1000) + 1):
                s = pending.pop(fd, None)
                if s is None:
                    continue
                poller.unregister(fd)
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise AssertionError("connect failed: %s" % os.strerror(err))
        return [Conn(None, sock=s, timeout=timeout) for s in socks]
    except BaseException:
        for s in socks:
            s.close()
        raise


class HostileTests(AgentCase):
    agent_args = None   # every test starts its own agent

    def test_http_request_on_spop_port(self):
        a = self.start_agent()
        mark = a.log_mark()
        t0 = time.monotonic()
        for _ in range(50):
            with a.connect() as c:
                c.send(b"GET / HTTP/1.0\r\n\r\n")
                self.expect_disconnect(c, 3)
        elapsed = time.monotonic() - t0
        self.assert_serves(a)
        time.sleep(0.2)
        lines = a.problems_since(mark)
        print("\n    50 HTTP requests in %.2f s -> %d warning/error log lines" %
              (elapsed, len(lines)), file=sys.stderr)
        # 10 lines per worker per second at most (rate limiter), never one per connection.
        windows = int(elapsed) + 2
        self.assertLessEqual(len(lines), min(20 * windows, 40), "log flood:\n" +
                             "\n".join(lines[:5]))
        self.assertLess(len(lines), 50)
        self.assertGreater(len(lines), 0, "protocol errors should be logged (rate-limited)")

    def test_truncated_frame_then_eof_and_rst(self):
        a = self.start_agent()
        cases = [
            ("eof mid length prefix", b"\x00\x00", False, "eof"),
            ("eof mid hello", V1_HELLO_34[:50], False, "eof"),
            ("eof mid notify", V5_NOTIFY_NAMED[:30], True, "eof"),
            ("rst mid hello", V1_HELLO_34[:50], False, "rst"),
            ("rst mid notify", V5_NOTIFY_NAMED[:11], True, "rst"),
            ("rst with unread ACKs", V5_NOTIFY_NAMED * 20, True, "rst"),
        ]
        for label, data, hs_first, how in cases:
            with self.subTest(case=label):
                c = a.connect()
                if hs_first:
                    c.handshake()
                c.send(data)
                time.sleep(0.05)
                if how == "rst":
                    c.rst()
                else:
                    c.sock.shutdown(socket.SHUT_WR)
                    rest = c.read_until_eof(5)
                    # a truncated frame at EOF may be answered (DISCONNECT) or not, but no ACK
                    for fr in _frames(rest):
                        self.assertNotEqual(fr.type, T_ACK)
                    c.close()
                self.assert_serves(a)

    def test_burst_of_1000_connections(self):
        n = 1000
        if raise_nofile(n + 200) < n + 100:
            self.skipTest("RLIMIT_NOFILE too low for %d connections" % n)
        a = self.start_agent()
        t0 = time.monotonic()
        conns = open_many(a.addr, n)
        self._conns.extend(conns)
        for c in conns:
            c.send(V1_HELLO_34)
        for c in conns:
            f = c.recv_frame(10)
            self.assertIsNotNone(f)
            self.assertEqual(f.type, T_AGENT_HELLO)
        for i, c in enumerate(conns):
            c.send(notify(2 * i + 1, 1, [ip_msg("10.%d.%d.1" % (i // 256, i % 256))]))
        for i, c in enumerate(conns):
            self.check_ack_score(c.recv_frame(10), 2 * i + 1, 1)
        print("\n    1000 connections opened at once, handshaken and served in %.2f s" %
              (time.monotonic() - t0), file=sys.stderr)
        for c in conns:
            c.close()
        self.assert_serves(a)

    def test_10k_idle_connections_memory(self):
        n = 10000
        if raise_nofile(n + 500) < n + 200:
            self.skipTest("RLIMIT_NOFILE hard limit %r too low for %d connections" %
                          (resource.getrlimit(resource.RLIMIT_NOFILE), n))
        a = self.start_agent()
        self.assert_serves(a)
        time.sleep(0.2)
        before = a.rss()
        t0 = time.monotonic()
        conns = []
        try:
            batch = 1000
            for start in range(0, n, batch):
                cs = open_many(a.addr, batch)
                conns.extend(cs)
                for c in cs:
                    c.send(V1_HELLO_34)
                for c in cs:
                    f = c.recv_frame(10)
                    self.assertIsNotNone(f, "EOF instead of AGENT-HELLO")
                    self.assertEqual(f.type, T_AGENT_HELLO)
            setup = time.monotonic() - t0
            time.sleep(0.5)
            after = a.rss()
            per_conn = (after - before) / n
            print("\n    %d idle connections (%.1f s to set up): agent RSS %.1f MiB -> %.1f MiB, "
                  "%.0f bytes per connection" % (n, setup, before / 2 ** 20, after / 2 ** 20,
                                                 per_conn), file=sys.stderr)
            self.assertLess(per_conn, 64 * 1024)
            # still serving, with all of them open
            self.assert_serves(a)
            # and some of the idle ones still work
            for i in (0, n // 2, n - 1):
                conns[i].send(notify(1, 1, [ip_msg()]))
                self.check_ack_score(conns[i].recv_frame(), 1, 1)
        finally:
            for c in conns:
                c.close()
        self.assert_serves(a)

    def test_notify_flood_without_reading(self):
        a = self.start_agent()
        self.assert_serves(a)
        before = a.rss()
        c = self.conn(a)
        c.handshake()
        c.sock.setblocking(False)
        one = notify(1, 1, [ip_msg()])
        chunk = one * (65536 // len(one))
        target = 50 * 2 ** 20
        sent = 0
        max_rss = before
        outcome = "sent everything"
        t0 = time.monotonic()
        last_progress = t0
        last_sample = 0.0
        view = memoryview(chunk)
        off = 0
        while sent < target:
            now = time.monotonic()
            if now - t0 > 10:
                outcome = "time limit"
                break
            if now - last_progress > 2:
                outcome = "back-pressure (our sends blocked)"
                break
            if now - last_sample > 0.25:
                last_sample = now
                max_rss = max(max_rss, a.rss())
            try:
                w = c.sock.send(view[off:])
            except (BlockingIOError, InterruptedError):
                select.select([], [c.sock], [], 0.2)
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                outcome = "agent closed (%s)" % e.__class__.__name__
                break
            sent += w
            off = (off + w) % len(chunk)
            last_progress = time.monotonic()
        max_rss = max(max_rss, a.rss())
        growth = max_rss - before
        print("\n    flood: %.1f MiB sent in %.1f s, %s; agent RSS growth %.1f MiB" %
              (sent / 2 ** 20, time.monotonic() - t0, outcome, growth / 2 ** 20),
              file=sys.stderr)
        self.assertLess(growth, 64 * 2 ** 20, "agent memory grew without bound")
        # other connections are served while the flooder is still connected
        self.assert_serves(a)
        # what the flooder got back: ACKs, then possibly AGENT-DISCONNECT 13
        c.sock.setblocking(True)
        got = bytearray()
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline and len(got) < 64 * 2 ** 20:
                c.sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
                try:
                    d = c.sock.recv(1 << 20)
                except socket.timeout:
                    if outcome.startswith("back-pressure"):
                        break
                    continue
                if not d:
                    break
                got += d
        except ConnectionResetError:
            pass
        frames = _frames(bytes(got), allow_partial=True)
        kinds = set(fr.type for fr in frames)
        self.assertLessEqual(kinds, {T_ACK, T_AGENT_DISCONNECT}, kinds)
        discs = [fr for fr in frames if fr.type == T_AGENT_DISCONNECT]
        for fr in discs:
            self.assertEqual(disconnect_fields(fr)[0][1], 13)
            self.assertIs(fr, frames[-1], "frames after AGENT-DISCONNECT")
        print("    flooder received %d ACKs%s" % (
            len(frames) - len(discs), ", then AGENT-DISCONNECT 13" if discs else ""),
            file=sys.stderr)
        c.close()
        self.assert_serves(a)
        time.sleep(0.3)
        self.assertTrue(a.alive())

    def test_deep_pipeline_with_reading_peer(self):
        """Many NOTIFYs in one write while a thread reads the ACKs: a peer that reads its ACKs
        is back-pressured if needed, never disconnected (the flood test's contrast).
        Cases: 3000 check-client-ip NOTIFYs (108 KB); 6000 empty NOTIFYs (77 KB, §12.15)."""
        a = self.start_agent()
        cases = [
            ("3000 check-client-ip", [notify(2 * i + 1, 1, [ip_msg()]) for i in range(3000)]),
            ("6000 empty", [frame(T_NOTIFY, b"", 2 * i + 1, 1) for i in range(6000)]),
        ]
        for label, frames in cases:
            with self.subTest(case=label):
                self._deep_pipeline(a, frames)
        self.assert_serves(a)

    def _deep_pipeline(self, a, frames):
        n = len(frames)
        c = self.conn(a, timeout=10)
        c.handshake()
        got = {"acks": [], "other": None, "error": None}

        def reader():
            try:
                while len(got["acks"]) < n:
                    f = c.recv_frame(10)
                    if f is None or f.type != T_ACK:
                        got["other"] = f
                        return
                    got["acks"].append(f.sid)
            except BaseException as e:   # reported below
                got["error"] = e

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        c.send(b"".join(frames))
        th.join(20)
        self.assertFalse(th.is_alive(), "reader still running after 20 s")
        c.close()
        other = got["other"]
        if other is not None and other.type == T_AGENT_DISCONNECT:
            self.fail("AGENT-DISCONNECT %r after %d of %d ACKs, although the peer reads its ACKs"
                      % (disconnect_fields(other), len(got["acks"]), n))
        self.assertIsNone(got["error"])
        self.assertIsNone(other, "unexpected %r after %d ACKs" % (other, len(got["acks"])))
        self.assertEqual(sorted(got["acks"]), [2 * i + 1 for i in range(n)])

    def test_fd_exhaustion_does_not_spin(self):
        """RLIMIT_NOFILE 64 (soft = hard), 100 connections: accept() fails with EMFILE; the agent
        must neither spin on its listening socket nor flood the log, and recovers afterwards."""
        a = self.start_agent(nofile=64)
        mark = a.log_mark()
        conns = []
        try:
            for _ in range(100):
                s = socket.socket()
                conns.append(s)
                s.settimeout(2)
                s.connect(a.addr)   # completes in the kernel backlog even when not accepted
            time.sleep(0.5)
            c0 = a.cpu_seconds()
            time.sleep(2.0)
            used = a.cpu_seconds() - c0
            lines = a.log_since(mark).splitlines()
            print("\n    EMFILE: agent used %.2f s CPU in 2 s, %d log lines" % (used, len(lines)),
                  file=sys.stderr)
            self.assertLess(used, 0.3, "the agent busy-loops while accept() fails with EMFILE")
            # rate-limited: a few lines per worker and second over these ~2.5 s, not thousands
            self.assertLess(len(lines), 100, "log flood")
        finally:
            for s in conns:
                s.close()
        deadline = time.monotonic() + 5
        while True:
            try:
                self.assert_serves(a)
                break
            except (AssertionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def test_graceful_stop(self):
        a = self.start_agent(["--shutdown-timeout", "3"])
        busy = self.conn(a)
        busy.handshake()
        idle = self.conn(a)
        idle.handshake()
        sids = list(range(1, 21, 2))
        busy.send(b"".join(notify(s, 1, [ip_msg()]) for s in sids))
        wait_peek_frames(busy, len(sids))   # the agent read them; we read nothing yet
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        got = []
        for _ in sids:
            f = busy.recv_frame()
            self.assertIsNotNone(f, "EOF before all ACKs")
            self.check_ack_score(f, f.sid, 1)
            got.append(f.sid)
        self.assertEqual(sorted(got), sids)
        self.expect_disconnect(busy, 0)
        busy.close()
        self.expect_disconnect(idle, 0)
        idle.close()
        try:
            rc = a.proc.wait(3 + 2)
        except subprocess.TimeoutExpired:
            self.fail("agent did not exit within the shutdown timeout")
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, a.log_text()[-1000:])
        self.assertLess(elapsed, 3 + 1.5)

    def test_graceful_stop_with_peer_not_reading(self):
        """A peer that floods and never reads cannot hold the agent past --shutdown-timeout."""
        a = self.start_agent(["--shutdown-timeout", "2"])
        c = self.conn(a)
        c.handshake()
        c.sock.setblocking(False)
        chunk = notify(1, 1, [ip_msg()]) * 2000
        deadline = time.monotonic() + 3
        stalled_since = None
        while time.monotonic() < deadline:
            try:
                c.sock.send(chunk)
                stalled_since = None
            except (BlockingIOError, InterruptedError):
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.5:
                    break
                time.sleep(0.02)
            except (ConnectionResetError, BrokenPipeError):
                break
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        try:
            rc = a.proc.wait(2 + 3)
        except subprocess.TimeoutExpired:
            self.fail("agent still running 5 s after SIGTERM with --shutdown-timeout 2")
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, a.log_text()[-1000:])
        self.assertLess(elapsed, 2 + 1.5)


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


def wait_peek_frames(c, count, timeout=5.0):
    """Waits (MSG_PEEK, nothing consumed) until `count` whole frames are in c's receive buffer."""
    deadline = time.monotonic() + timeout
    while True:
        c.sock.settimeout(0.05)
        try:
            data = c.sock.recv(1 << 16, socket.MSG_PEEK)
        except socket.timeout:
            data = b""
        if len(_frames(data, allow_partial=True)) >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError("only %d bytes arrived, expected %d frames" % (len(data), count))
        time.sleep(0.02)


def _frames(data, allow_partial=False):
    out = []
    pos = 0
    while len(data) - pos >= 4:
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        if len(data) - pos < 4 + n:
            break
        out.append(parse_frame(data[pos:pos + 4 + n]))
        pos += 4 + n
    if pos != len(data) and not allow_partial:
        raise AssertionError("trailing partial frame: %s" % data[pos:pos + 32].hex())
    return out


# --------------------------------------------------------------------------------------------
# E. Command line
# --------------------------------------------------------------------------------------------


def run_agent(args, timeout=5.0):
    """Runs the agent expecting it to exit by itself; returns (rc, stdout, stderr)."""
    p = subprocess.Popen([AGENT] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(5)
        raise AssertionError("agent %r kept running instead of exiting: %s" %
                             (args, err.decode(errors="replace")))
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class CliTests(AgentCase):
    agent_args = None

    def test_help(self):
        for flag in ("-h", "--help"):
            rc, out, err = run_agent([flag])
            self.assertEqual(rc, 0)
            self.assertIn("Usage", out)
            self.assertIn("-p", out)

    def test_bad_flags(self):
        port = str(free_port())
        base = ["-a", "127.0.0.1", "--engine", ENGINE]
        cases = [
            ["-p", "0"], ["-p", "abc"], ["-p", port, "-n", "0"], ["-p", port, "-m", "10"],
            ["-p", port, "-c", "async"], ["-p", port, "-c", "fragmentation"],
            ["-p", port, "--bogus"], ["-p", port, "-n"], ["-p", "70000"],
            ["-p", port, "--default-score", "101"], ["-p", port, "--engine", "kqueue"],
        ]
        for args in cases:
            with self.subTest(args=args):
                rc, out, err = run_agent(base + args)
                self.assertNotEqual(rc, 0)
                lines = [l for l in err.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, "stderr should be one line: %r" % err)
                self.assertNotIn("event=start", err)

    def test_port_in_use(self):
        # a plain listening socket
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            rc, out, err = run_agent(["-p", str(port), "-n", "2", "-a", "127.0.0.1",
                                      "--engine", ENGINE])
            self.assertNotEqual(rc, 0)
            lines = [l for l in err.splitlines() if l.strip()]
            self.assertEqual(len(lines), 1, err)
            self.assertIn("in use", lines[0])
        finally:
            s.close()
        # another agent already listening there
        a = self.start_agent()
        rc, out, err = run_agent(["-p", str(a.port), "-n", "2", "-a", "127.0.0.1",
                                  "--engine", ENGINE])
        self.assertNotEqual(rc, 0)
        lines = [l for l in err.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, err)
        self.assertIn("in use", lines[0])
        self.assert_serves(a)

    def test_ipv6_loopback(self):
        if not ipv6_loopback_usable():
            self.skipTest("no IPv6 loopback")
        a = self.start_agent(address="::1")
        with a.connect() as c:
            c.handshake()
            c.send(notify(1, 1, [ip_msg("::1")]))
            self.check_ack_score(c.recv_frame(), 1, 1)
        # the long option spelling, bracketed
        b = Agent([], address="::1", tcp=False)
        b.args = ["--address", "[::1]"]
        self._agents.append(b)
        b.start()
        with b.connect() as c:
            c.handshake()
            c.send(V6_NOTIFY_UNNAMED)
            self.check_ack_score(c.recv_frame(), 1, 1)
        # both loopbacks at once (-a repeated), same port
        d = Agent(["-a", "::1"])
        self._agents.append(d)
        d.start()
        for addr, fam in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            with Conn((addr, d.port), fam) as c:
                c.handshake()
                c.send(notify(1, 1, [ip_msg(addr)]))
                self.check_ack_score(c.recv_frame(), 1, 1)

    def test_unix_socket(self):
        d = tempfile.mkdtemp(prefix="agent-unix-")
        path = os.path.join(d, "x.sock")
        try:
            a = self.start_agent(["-u", path], tcp=False)
            self.assertTrue(os.path.exists(path))
            for _ in range(2):
                with Conn(path, socket.AF_UNIX) as c:
                    c.handshake()
                    c.send(V5_NOTIFY_NAMED)
                    self.check_ack_score(c.recv_frame(), 1, 1)
                    c.send(haproxy_disconnect(0, "normal"))
                    self.expect_disconnect(c, 0)
            self.assertEqual(a.stop(), 0)
            self.assertFalse(os.path.exists(path), "socket file left behind after exit")
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
            os.rmdir(d)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def uring_unavailable_reason():
    """Starts the agent with --engine uring; returns the reason if it refuses, else None."""
    port = free_port()
    with tempfile.TemporaryFile(prefix="agent-probe-") as logf:
        p = subprocess.Popen([AGENT, "-p", str(port), "-n", "1", "-a", "127.0.0.1", "--engine",
                              "uring"], stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True)
        try:
            deadline = time.monotonic() + 5
            while p.poll() is None and time.monotonic() < deadline:
                logf.seek(0)
                if b"event=start" in logf.read():
                    break
                time.sleep(0.02)
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
                return None
        logf.seek(0)
        text = logf.read().decode(errors="replace")
    if p.returncode != 0 and "io_uring unavailable" in text:
        return text.strip()
    return None


class _Terminated(BaseException):
    pass


def _on_sigterm(signum, _frame):
    raise _Terminated("signal %d" % signum)


def subject_modules():
    """The other suites of this folder (tests/agent/test_*.py), one file per subject. Each does
    `import test_agent as ta` and uses its codec, Agent harness and AgentCase; all run under this
    one runner, so one command and one summary line cover them."""
    # Run as a script this module is __main__: make `import test_agent` find this very module,
    # so that the globals set below (AGENT, ENGINE) are the ones the other files see.
    sys.modules.setdefault("test_agent", sys.modules[__name__])
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    mods = []
    for fn in sorted(os.listdir(here)):
        if fn.startswith("test_") and fn.endswith(".py") and fn != "test_agent.py":
            mods.append(__import__(fn[:-3]))
    return mods


def main():
    global AGENT, ENGINE, VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", required=True, help="path to the agent binary")
    ap.add_argument("--engine", default="epoll", choices=("uring", "epoll", "auto"))
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only run tests whose id contains this substring (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ns = ap.parse_args()
    AGENT = os.path.abspath(ns.agent)
    ENGINE = ns.engine
    VERBOSE = ns.verbose
    if not os.access(AGENT, os.X_OK):
        print("agent binary not found or not executable: %s" % AGENT)
        print("0 passed, 1 failed")
        return 1
    signal.signal(signal.SIGTERM, _on_sigterm)
    if ENGINE == "uring":
        why = uring_unavailable_reason()
        if why:
            print("SKIP: %s" % why)
            print("0 passed, 0 failed, 1 skipped")
            return SKIP

    loader = unittest.TestLoader()
    suite = loader.loadTestsFromModule(sys.modules[__name__])
    for mod in subject_modules():
        suite.addTests(loader.loadTestsFromModule(mod))
    if ns.patterns:
        def keep(t):
            return any(p in t.id() for p in ns.patterns)

        def filt(s):
            out = unittest.TestSuite()
            for t in s:
                if isinstance(t, unittest.TestSuite):
                    sub = filt(t)
                    if sub.countTestCases():
                        out.addTest(sub)
                elif keep(t):
                    out.addTest(t)
            return out
        suite = filt(suite)

    print("agent: %s  engine: %s" % (AGENT, ENGINE))
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stdout)
    try:
        res = runner.run(suite)
    except (_Terminated, KeyboardInterrupt) as e:
        print("interrupted: %s" % e)
        kill_all_agents()
        print("0 passed, 1 failed")
        return 1
    finally:
        kill_all_agents()
    def top_id(t):
        # a failing subTest is reported as its own entry: count its test once
        return getattr(t, "test_case", t).id()

    failed_ids = set(top_id(t) for t, _ in res.failures + res.errors)
    failed_ids |= set(top_id(t) for t in res.unexpectedSuccesses)
    skipped_ids = set(top_id(t) for t, _ in res.skipped) - failed_ids
    failed = len(failed_ids)
    skipped = len(skipped_ids)
    passed = max(0, res.testsRun - failed - skipped - len(res.expectedFailures))
    if failed_ids:
        print("failed: " + ", ".join(sorted(failed_ids)))
    print("engine %s: total runtime %.1f s" % (ENGINE, time.monotonic() - t0))
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
