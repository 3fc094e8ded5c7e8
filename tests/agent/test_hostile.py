"""D. Hostile peers and overload: HTTP on the port, connection bursts, 10k idle connections
(RSS per connection), NOTIFY floods without reading, graceful stop.

Run by test_agent.py's runner, once per engine (moved from test_agent.py as they were)."""

import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.codec import *  # noqa: F401,F403
from pyspop.vectors import *  # noqa: F401,F403
from pyspop.client import open_many, wait_peek_frames
from pyspop.agent import raise_nofile
from test_agent import AgentCase
from pyspop.codec import split_frames as _frames


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
