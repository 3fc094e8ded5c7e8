"""Adversarial review, round 3 (branch adv3): what the other subjects did not cover.

- Command line: the exit status the man page and the systemd unit rely on (2 = bad command
  line, the unit's RestartPreventExitStatus; 1 = other start failures), and an unknown option
  inside a bundle of short options named in the error.
- Legal but unusual peers: HELLO keys in any order with `healthcheck` among them, stream and
  frame ids at every varint width boundary echoed, names and strings at the length varint's
  width boundaries, a NOTIFY carrying every typed-data type, messages with 0 and 255 arguments.
- NOTIFYs pipelined in front of a HAPROXY-DISCONNECT in the same write are all answered first.
- A peer that pipelines a lot and stops reading: the agent sleeps (CPU via /proc) and, once the
  peer reads, every ACK arrives in order.

Uses the independent codec of test_independent.py (not pyspop's). Loopback only; every loop is
bounded in count and time. Run by test_agent.py's runner, once per engine.
"""

import os
import socket
import tempfile
import threading
import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.ports import free_port
from test_independent import (T_ACK, T_ADISC, T_AHELLO, T_HDISC, T_HHELLO, U32,
                              IndependentCase, d_ip4, d_str, d_u32, frm, ipmsg, kv, msg, notify,
                              parse_actions, parse_kv, run_expecting_exit, venc)


def one_line(test, err):
    lines = [l for l in err.splitlines() if l.strip()]
    test.assertEqual(len(lines), 1, "stderr should be one line: %r" % err)
    test.assertTrue(lines[0].startswith("agent: "), lines[0])
    test.assertNotIn("event=start", err)
    return lines[0]


class CliExitStatusTests(ta.AgentCase):
    """agent/spop-agent.h2m [EXIT STATUS]: "2 for a bad command line or a reputation file that
    fails to load at start, 1 for other start failures"; the unit has Restart=on-failure and
    RestartPreventExitStatus=2, so a bad command line that exits 1 is restarted every second
    forever instead of stopping with the error."""
    agent_args = None

    def base(self):
        return ["-p", str(free_port()), "-n", "1", "--engine", ta.ENGINE]

    def test_bad_command_line_exits_2(self):
        # ADV3-F1: failed on main at fe51288 (each of these exited 1)
        long_unix = os.path.join(tempfile.gettempdir(), "x" * 120 + ".sock")
        cases = [
            ["-a", "999.1.1.1"],
            ["-a", "localhost"],
            ["-a", "127.0.0.1", "-a", "not-an-address"],
            ["-a", "127.0.0.1", "-u", long_unix],
            ["-a", "127.0.0.1", "--metrics", "bogus"],
            ["-a", "127.0.0.1", "--metrics", "127.0.0.1:99999"],
            ["-a", "127.0.0.1", "--metrics", "::1:9100"],
            ["-a", "127.0.0.1", "--user", "no-such-user-adv3"],
        ]
        for args in cases:
            with self.subTest(args=args):
                rc, err = run_expecting_exit(self.base() + args)
                self.assertIsNotNone(rc, "%s: the agent started and kept running" % args)
                one_line(self, err)
                self.assertEqual(rc, 2, "%s: exit status %s (%r)" % (args, rc, err))

    def test_port_in_use_is_not_a_bad_command_line(self):
        # The contrast: a start failure that may go away (a port still held by the previous
        # process) keeps exit status 1, so systemd retries it.
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc, err = run_expecting_exit(["-p", str(port), "-n", "1", "-a", "127.0.0.1",
                                      "--engine", ta.ENGINE])
        self.assertEqual(rc, 1, err)
        self.assertIn("in use", one_line(self, err))

    def test_help_and_version(self):
        for flag in ("-V", "--version"):
            rc, out, err = ta.run_agent([flag])
            self.assertEqual(rc, 0)
            self.assertRegex(out, r"^agent \(spop\) \d+\.\d+\.\d+\n$")
            self.assertEqual(err, "")

    def test_unknown_option_in_a_bundle_is_named(self):
        # ADV3-F2: failed on main at fe51288: `-zd` said "unknown option: 'agent'" (or the
        # previous argument): argv[optind - 1] is not the option while getopt is inside a bundle.
        for args, want in ((["-zd"], "-z"), (["-dz"], "-z"), (["-p", "1", "-dz"], "-z"),
                           (["-p", "1", "-zd"], "-z"), (["--bogus"], "--bogus"),
                           (["-d", "-n"], "-n"), (["--backlog"], "--backlog")):
            with self.subTest(args=args):
                rc, out, err = ta.run_agent(args)
                self.assertEqual(rc, 2)
                line = one_line(self, err)
                self.assertIn("'%s'" % want, line)


class UnusualPeerTests(IndependentCase):
    """Legal peers that real HAProxy versions do not happen to be."""

    @classmethod
    def setUpClass(cls):
        cls.shared = ta.Agent(["--default-score", "50"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.shared.stop()

    def test_hello_keys_in_any_order(self):
        keys = [("engine-id", d_str("e")), ("capabilities", d_str(" pipelining ")),
                ("healthcheck", b"\x01"), ("max-frame-size", d_u32(4000)),
                ("supported-versions", d_str("2.0"))]
        c = self.client(self.shared)
        c.send(frm(T_HHELLO, kv(keys)))
        f = c.recv()
        self.assertEqual(f.type, T_AHELLO, repr(f))
        self.assertEqual(dict(parse_kv(f.payload))["max-frame-size"][1], 4000)
        c.send(notify(1, 1, [ipmsg()]))
        f = c.recv()
        self.assertEqual((f.type, f.sid, f.fid), (T_ACK, 1, 1))
        # healthcheck true first, the rest after it: AGENT-HELLO alone, then close
        c = self.client(self.shared)
        c.send(frm(T_HHELLO, kv([("healthcheck", b"\x11")] + keys[:2] + keys[3:])))
        f = c.recv()
        self.assertEqual(f.type, T_AHELLO, repr(f))
        self.assertIsNone(c.recv(), "bytes after the health check's AGENT-HELLO")

    def test_ids_at_varint_width_boundaries(self):
        c = self.client(self.shared)
        c.handshake()
        values = [0, 239, 240, 2287, 2288, 264431, 264432, 33818863, 33818864, 4328786159,
                  4328786160, 2**31 - 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
        pairs = list(zip(values, reversed(values)))
        c.send(b"".join(notify(s, f, [ipmsg()]) for s, f in pairs))
        got = []
        for _ in pairs:
            f = c.recv()
            self.assertIsNotNone(f)
            self.assertEqual(f.type, T_ACK)
            got.append((f.sid, f.fid))
        self.assertEqual(got, pairs)

    def test_lengths_at_varint_width_boundaries(self):
        c = self.client(self.shared)
        c.handshake()
        sid = 1
        for n in (0, 239, 240, 2287, 2288):
            # message name, argument name and string value of n bytes: a no-op ACK
            c.send(notify(sid, 1, [msg("x" * n, [("y" * n, d_str("z" * n))])]))
            f = c.recv()
            self.assertEqual((f.type, f.sid), (T_ACK, sid), "length %d" % n)
            self.assertTrue(f.payload)
            sid += 2
            # an address literal padded with n spaces (ignored around it): scored
            c.send(notify(sid, 1, [msg("check-client-ip",
                                       [("ip", d_str(" " * n + "192.0.2.1"))])]))
            f = c.recv()
            self.assertEqual((f.type, f.sid), (T_ACK, sid), "length %d" % n)
            acts = parse_actions(f.payload)
            self.assertEqual(acts, [("set", 1, "ip_score", (U32, 50))], "length %d" % n)
            sid += 2

    def test_every_typed_data_type_and_arg_counts(self):
        every = [("", b"\x00"), ("t", b"\x11"), ("f", b"\x01"), ("i32", b"\x02" + venc(2**64 - 1)),
                 ("u32", d_u32(2**32 - 1)), ("i64min", b"\x04" + venc(2**63)),
                 ("i64max", b"\x04" + venc(2**63 - 1)), ("u64", b"\x05" + venc(2**64 - 1)),
                 ("v6", b"\x07" + socket.inet_pton(socket.AF_INET6, "2001:db8::1")),
                 ("s", d_str("")), ("b", b"\x09" + venc(3) + b"\x00\xff\x01"),
                 ("b0", b"\x09\x00")]
        cases = [
            ("other message, every type", [msg("other", every)], 0),
            ("every type, then ip", [msg("check-client-ip", every + [("ip", d_ip4("10.1.2.3"))])],
             1),
            ("0 arguments", [msg("check-client-ip", [])], 0),
            ("255 NULL arguments", [msg("check-client-ip", [("", b"\x00")] * 255)], 0),
            ("255 arguments, the last the address",
             [msg("check-client-ip", [("x", b"\x01")] * 254 + [("", d_ip4("10.0.0.1"))])], 1),
            ("empty message name", [msg("", [("", d_ip4("10.0.0.1"))])], 0),
            ("IPv4-mapped IPv6", [msg("check-client-ip", [("", b"\x07" + socket.inet_pton(
                socket.AF_INET6, "::ffff:10.0.0.1"))])], 1),
        ]
        c = self.client(self.shared)
        c.handshake()
        for i, (label, msgs, scores) in enumerate(cases):
            with self.subTest(case=label):
                c.send(notify(2 * i + 1, 7, msgs))
                f = c.recv()
                self.assertIsNotNone(f, label)
                self.assertEqual((f.type, f.sid, f.fid), (T_ACK, 2 * i + 1, 7), label)
                acts = parse_actions(f.payload)
                sets = [a for a in acts if a[0] == "set"]
                self.assertEqual(len(sets), scores, "%s: %r" % (label, acts))
                if not scores:
                    self.assertTrue(acts, "%s: empty ACK" % label)

    def test_pipeline_then_haproxy_disconnect(self):
        """The NOTIFYs before a HAPROXY-DISCONNECT in the same write are answered, in order,
        then comes AGENT-DISCONNECT and EOF; a NOTIFY after it is not."""
        c = self.client(self.shared)
        c.handshake()
        n = 50
        c.send(b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(n)) +
               frm(T_HDISC, kv([("status-code", d_u32(0)), ("message", d_str("normal"))])) +
               notify(999, 1, [ipmsg()]))
        for i in range(n):
            f = c.recv()
            self.assertIsNotNone(f, "EOF before ACK %d" % i)
            self.assertEqual((f.type, f.sid), (T_ACK, 2 * i + 1))
        f = c.recv()
        self.assertIsNotNone(f)
        self.assertEqual(f.type, T_ADISC, repr(f))
        self.assertEqual(dict(parse_kv(f.payload))["status-code"][1], 0)
        self.assertIsNone(c.recv(), "a frame after AGENT-DISCONNECT")


class StalledReaderTests(IndependentCase):
    def test_stalled_reader_then_reads_everything(self):
        """20000 NOTIFYs in one go, then the peer reads nothing for 2 s: the agent must not spin
        (its CPU stays low while back-pressured), then every ACK arrives, in order."""
        a = self.start_agent(workers=1)
        c = self.client(a, timeout=10, rcvbuf=4096)
        c.handshake()
        n = 20000
        data = b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(n))
        c.s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += c.s.send(data[sent:])
            except BlockingIOError:
                time.sleep(0.01)
        c.s.setblocking(True)
        self.assert_idle_cpu(a, "while the peer does not read", seconds=2.0)
        got = []

        def reader():
            while len(got) < n:
                f = c.recv(10)
                if f is None or f.type != T_ACK:
                    got.append(("unexpected", repr(f)))
                    return
                got.append(f.sid)

        th = threading.Thread(target=reader)
        th.start()
        if sent < len(data):
            c.send(data[sent:])
        th.join(30)
        self.assertFalse(th.is_alive())
        self.assertEqual(got, [2 * i + 1 for i in range(n)])
        self.assert_healthy(a)


class StalledRedis:
    """A Redis that loads scripts and never answers EVALSHA: the agent's check-rate answers stay
    deferred until the rate limiter's budget (3/4 of --deferred-timeout) runs out."""

    def __init__(self, lifetime=30.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop_at = time.monotonic() + lifetime
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.accept_loop, daemon=True)]
        self.threads[0].start()

    def running(self):
        return not self.done.is_set() and time.monotonic() < self.stop_at

    def accept_loop(self):
        while self.running():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            t = threading.Thread(target=self.serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def serve(self, c):
        c.settimeout(0.2)
        with c:
            while self.running():
                try:
                    d = c.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not d:
                    return
                u = d.upper()
                if b"EVALSHA" in u:
                    continue  # never answered
                if b"SCRIPT" in u:
                    c.sendall(b"$40\r\n" + b"a" * 40 + b"\r\n")
                elif b"PING" in u:
                    c.sendall(b"+PONG\r\n")
                else:
                    c.sendall(b"+OK\r\n")

    def close(self):
        self.done.set()
        for t in self.threads:
            t.join(2)
        self.sock.close()


class IdleTimeoutTests(IndependentCase):
    def test_idle_timeout_waits_for_deferred_answers(self):
        """--idle-timeout must not close a connection that still owes an answer. A check-rate
        NOTIFY waits on a stalled Redis (answered after 3.75 s); meanwhile the connection is not
        idle: a NOTIFY sent at 3.2 s must be answered, and no AGENT-DISCONNECT may come before
        both ACKs. Only then, idle for 1 s, the connection gets AGENT-DISCONNECT 2."""
        # ADV3-F3: failed on main at fe51288: AGENT-DISCONNECT 2 once 1-2 s passed without a
        # read, the NOTIFY sent at 3.2 s silently dropped (closing discards input).
        r = StalledRedis()
        self.addCleanup(r.close)
        rc, err = run_expecting_exit(["--rate-redis", "x://", "-p", "1"], timeout=3)
        if "built without" in err:
            self.skipTest("agent built without hiredis")
        a = self.start_agent(["--idle-timeout", "1", "--deferred-timeout", "5000",
                              "--rate-redis", "redis://127.0.0.1:%d/0" % r.port], workers=1)
        time.sleep(0.5)  # the limiter connects and loads its script
        c = self.client(a, timeout=10)
        c.handshake()
        t0 = time.monotonic()
        c.send(notify(1, 1, [msg("check-rate", [("key", d_str("adv3-idle"))])]))
        time.sleep(3.2)
        c.send(notify(3, 1, [ipmsg()]))
        got = {}
        for _ in range(2):
            f = c.recv(5)
            self.assertIsNotNone(f, "EOF after %.1f s; got %r" % (time.monotonic() - t0, got))
            self.assertEqual(f.type, T_ACK, "after %.1f s: %r %r (got %r)" % (
                time.monotonic() - t0, f, parse_kv(f.payload) if f.type == T_ADISC else "",
                got))
            got[f.sid] = [x[2] for x in parse_actions(f.payload)]
        self.assertIn("over_limit", got[1])
        self.assertEqual(got[3], ["ip_score"])
        # and idle now, it is closed
        t1 = time.monotonic()
        f = c.recv(5)
        self.assertIsNotNone(f)
        self.assertEqual(f.type, T_ADISC, repr(f))
        self.assertEqual(dict(parse_kv(f.payload))["status-code"][1], 2)
        self.assertLess(time.monotonic() - t1, 3.5)
        self.assertIsNone(c.recv(3))
        self.assert_healthy(a)
