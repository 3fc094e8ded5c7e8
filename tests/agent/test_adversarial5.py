"""Adversarial review, round 5 (branch adv5): deferred answers and back-pressure under pressure.

- A connection back-pressured by its in-flight limit resumes once its ACKs are sent; the
  NOTIFYs it then takes must still be answered by the service's turn end, not by the deadline's
  fallback (ADV5-F1, epoll: the worker slept until its wait cap or the deadline).
- Deadlines shorter than the answers, with pipelined NOTIFYs written in odd pieces: one ACK per
  NOTIFY, never two, the late completions harmless.
- NOTIFYs with several messages, unknown messages, no message, frames of unknown or unset type
  interleaved with deferred NOTIFYs: every NOTIFY answered once.
- A bad frame after deferred NOTIFYs (zero length, too short, unknown type on stream 0, no FIN,
  a second HELLO): every NOTIFY before it answered (score or fallback), then AGENT-DISCONNECT
  with the right status, then EOF.
- The per-worker ticket cap (4096) hit by many connections, some reset or disconnected
  mid-flight, over rounds that reuse fds; peers that stop reading until their sockets are full
  of answers, then read; the agent's check-rate against a Redis that never answers; a SIGTERM
  with answers outstanding and a peer that reads nothing.

Frames are built with test_independent's codec (written from the spec, not from the C++).
Loopback only; every loop bounded in count and time. Run by test_agent.py's runner.
"""

import signal
import socket
import struct
import threading
import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop import agent as harness
from test_adversarial3 import StalledRedis
import test_adversarial4 as adv4  # the module: its TestCases are not run twice from here
from test_adversarial4 import example, hdisc
from test_independent import (T_ACK, T_ADISC, T_NOTIFY, IndependentCase, d_str, d_u32,
                              frm, hello, ipmsg, msg, notify, parse_actions, parse_kv,
                              run_expecting_exit)


def rst(c):
    """Close with an RST (SO_LINGER 0)."""
    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def read_acks(c, n, out, key, deadline):
    """Reads n frames into out[key] = (ACK stream ids, problem or None), bounded by deadline."""
    sids, problem = [], None
    try:
        for _ in range(n):
            left = deadline - time.monotonic()
            if left <= 0:
                problem = "out of time"
                break
            f = c.recv(left)
            if f is None or f.type != T_ACK:
                problem = "after %d ACKs: %r" % (len(sids), f)
                break
            sids.append(f.sid)
    except AssertionError as e:
        problem = "after %d ACKs: %s" % (len(sids), str(e)[:100])
    out[key] = (sids, problem)


def pump(c, data, until, sent):
    """Writes data without ever reading (bounded by `until`); sent[0] = bytes written."""
    c.s.setblocking(False)
    off = 0
    while off < len(data) and time.monotonic() < until:
        try:
            off += c.s.send(data[off:off + 65536])
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    sent[0] = off


class Adv5Case(IndependentCase):
    def deferred(self, args, workers=1):
        d = harness.Agent(example("deferred_agent"), args, workers=workers, engine=ta.ENGINE)
        self._agents.append(d)
        return d.start()

    def burst_clients(self, agent, count, burst, timeout):
        """`count` handshaken connections, each sent `burst` (not read)."""
        cs = []
        for _ in range(count):
            c = self.client(agent, timeout=timeout)
            c.handshake()
            cs.append(c)
        for c in cs:
            c.send(burst)
        return cs

    def assert_every_ack_in_threads(self, conns, n, round_):
        """Reads connections {k: c} at once (one thread each); each must get the ACKs of
        sids 1, 3, ... 2n-1, once each."""
        out = {}
        ths = [threading.Thread(target=read_acks, args=(c, n, out, k, time.monotonic() + 30))
               for k, c in conns.items()]
        for t in ths:
            t.start()
        for t in ths:
            t.join(35)
        for k, (sids, problem) in sorted(out.items()):
            self.assertIsNone(problem, "round %d conn %d" % (round_, k))
            self.assertEqual(sorted(sids), [2 * i + 1 for i in range(n)],
                             "round %d conn %d" % (round_, k))

    # Alive, answers a fresh connection, no sanitizer report (round 4's check).
    assert_healthy_deferred = adv4.DeferredAgentTests.assert_healthy_deferred

    def scores(self, f):
        return [a[2] for a in parse_actions(f.payload)]


class TurnEndTests(Adv5Case):
    def test_notifies_taken_after_back_pressure_get_their_answer(self):
        """deferred_agent --threads 0 --delay-us 0 answers every ticket at the end of the
        worker's turn (service.hpp on_turn_end: "after every NOTIFY of the turn, before the
        worker sleeps"). 1010 NOTIFYs in one write: 1000 in flight (--max-in-flight's
        default), 10 held until those ACKs are sent. Those 10 must get their score too, at once.
        Before the fix (epoll): the worker slept after taking them, until the 100 ms deadline
        answered them with the no-op fallback."""
        # ADV5-F1: failed on main at 7dd1951 with --engine epoll (10 no-op ACKs, ~100 ms).
        d = self.deferred(["--threads", "0", "--delay-us", "0", "--deadline-ms", "100"])
        for round_ in range(3):
            c = self.client(d)
            c.handshake()
            t0 = time.monotonic()
            c.send(b"".join(notify(i + 1, 1, [ipmsg()]) for i in range(1010)))
            fallback = []
            for _ in range(1010):
                f = c.recv(5)
                self.assertIsNotNone(f)
                self.assertEqual(f.type, T_ACK, repr(f))
                if "ip_score" not in self.scores(f):
                    fallback.append(f.sid)
            took = time.monotonic() - t0
            self.assertEqual(fallback, [], "round %d: answered by the deadline's fallback"
                             % round_)
            self.assertLess(took, 0.09, "round %d: %.3f s for 1010 answers" % (round_, took))
            c.close()
        self.assert_idle_cpu(d, "after the rounds")
        self.assert_healthy_deferred(d)


class DeadlinePipelineTests(Adv5Case):
    def test_short_deadline_fragmented_pipeline(self):
        """--deadline-ms 20 with answers 60 ms away: every one of 400 pipelined NOTIFYs, written
        in pieces of 1 to 300 bytes with pauses, gets exactly one ACK (the fallback), the late
        completions send nothing more, and the connection then serves a new NOTIFY."""
        d = self.deferred(["--deadline-ms", "20", "--delay-us", "60000"])
        data = b"".join(notify(i + 1, 7, [ipmsg()]) for i in range(400))
        seed = 12345
        for round_ in range(2):
            c = self.client(d)
            c.handshake()
            i = 0
            for _ in range(len(data)):  # bounded: each step writes at least one byte
                if i >= len(data):
                    break
                seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
                k = 1 + seed % 300
                c.send(data[i:i + k])
                i += k
                if seed % 23 == 0:
                    time.sleep(0.01)
            got = {}
            for _ in range(400):
                f = c.recv(5)
                self.assertIsNotNone(f)
                self.assertEqual((f.type, f.fid), (T_ACK, 7), repr(f))
                got[f.sid] = got.get(f.sid, 0) + 1
            self.assertEqual(sorted(got), list(range(1, 401)), "round %d" % round_)
            self.assertEqual(set(got.values()), {1}, "round %d: an ACK twice" % round_)
            time.sleep(0.15)  # every late completion is in
            c.send(notify(9999, 1, [ipmsg()]))
            f = c.recv(5)
            self.assertEqual((f.type, f.sid), (T_ACK, 9999), "a second ACK for an old NOTIFY?")
            c.close()
        self.assert_healthy_deferred(d)


class MixedFramesTests(Adv5Case):
    def test_odd_notifies_and_skipped_frames_between_deferred_ones(self):
        """Deferred (check-client-ip) NOTIFYs mixed with NOTIFYs of several messages, unknown
        messages only, no message at all, an empty payload, and frames that must be skipped
        (type 0 "unset" and an unknown type on a stream, PROTOCOL-NOTES §10): every NOTIFY gets
        one ACK, nothing else comes back."""
        d = self.deferred(["--delay-us", "30000"])
        c = self.client(d)
        c.handshake()
        frames, want = [], []
        for i in range(300):
            sid = i + 1
            k = i % 5
            if k == 0:
                frames.append(notify(sid, 1, [ipmsg(), msg("unknown", [("a", d_u32(1))]),
                                              ipmsg("192.0.2.9")]))
            elif k == 1:
                frames.append(notify(sid, 1, [msg("nope", [])]))
            elif k == 2:
                frames.append(notify(sid, 1, []))
            elif k == 3:
                frames.append(frm(T_NOTIFY, b"", sid, 1))
            else:
                frames.append(notify(sid, 1, [ipmsg()]))
            want.append(sid)
            if i % 7 == 0:
                frames.append(frm(0, b"", sid, 0))
            if i % 11 == 0:
                frames.append(frm(77, b"xyz", sid, 1))
        c.send(b"".join(frames))
        got = []
        for _ in want:
            f = c.recv(5)
            self.assertIsNotNone(f)
            self.assertEqual(f.type, T_ACK, repr(f))
            got.append(f.sid)
        self.assertEqual(sorted(got), want)
        c.send(notify(1000, 1, [ipmsg()]))
        f = c.recv(5)
        self.assertEqual((f.type, f.sid), (T_ACK, 1000), "nothing else may come back")
        self.assert_healthy_deferred(d)


class BadFrameAfterDeferredTests(Adv5Case):
    CASES = [("zero length", b"\x00\x00\x00\x00", 4),
             ("length 3", b"\x00\x00\x00\x03\x03\x00\x00", 4),
             ("unknown type on stream 0", frm(99, b"", 0, 0), 4),
             ("NOTIFY without FIN", frm(T_NOTIFY, ipmsg(), 9, 1, flags=0), 10),
             ("second HELLO", hello(), 4)]

    def check(self, d, split):
        for name, bad, code in self.CASES:
            with self.subTest(case=name):
                c = self.client(d)
                c.handshake()
                data = (b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(30)) + bad
                        + notify(999, 1, [ipmsg()]))
                for i in range(0, len(data), split):
                    c.send(data[i:i + split])
                sids = []
                for _ in range(40):
                    f = c.recv(5)
                    self.assertIsNotNone(f, "EOF without AGENT-DISCONNECT after %d ACKs"
                                         % len(sids))
                    if f.type == T_ADISC:
                        break
                    self.assertEqual(f.type, T_ACK, repr(f))
                    sids.append(f.sid)
                self.assertEqual(f.type, T_ADISC)
                self.assertEqual(dict(parse_kv(f.payload))["status-code"][1], code)
                self.assertEqual(sorted(sids), [2 * i + 1 for i in range(30)],
                                 "the NOTIFYs before the bad frame, and only those")
                self.assertIsNone(c.recv(3), "a frame after AGENT-DISCONNECT")

    def test_bad_frame_after_deferred_notifies(self):
        """SPOE.txt §3.5/§3.2.9: an invalid frame ends the connection with AGENT-DISCONNECT and
        its status (4 invalid frame, 10 fragmentation not supported); the NOTIFYs deferred
        before it are still answered first (their score), and the one after it is not."""
        d = self.deferred(["--delay-us", "50000", "--deadline-ms", "5000"])
        self.check(d, 37)
        self.assert_healthy_deferred(d)

    def test_bad_frame_after_notifies_whose_deadline_passes(self):
        """The same when the answers miss their deadline: the fallbacks come first, then the
        AGENT-DISCONNECT, and the late completions send nothing after it."""
        d = self.deferred(["--delay-us", "300000", "--deadline-ms", "30"])
        self.check(d, 1000)
        time.sleep(0.4)
        self.assert_healthy_deferred(d)


class TicketCapTests(Adv5Case):
    def test_cap_hit_with_resets_and_disconnects_mid_flight(self):
        """One worker, 10 connections x 900 pipelined NOTIFYs (9000 > the 4096 tickets): every
        third connection resets at once, every third says HAPROXY-DISCONNECT; the others get
        every ACK, each once. Twice (fds and slots reused), then a fresh connection is served."""
        d = self.deferred(["--delay-us", "200000", "--deadline-ms", "5000"])
        n = 900
        burst = b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(n))
        for round_ in range(2):
            cs = self.burst_clients(d, 10, burst, timeout=15)
            time.sleep(0.05)
            for k, c in enumerate(cs):
                if k % 3 == 0:
                    rst(c)
                elif k % 3 == 1:
                    c.send(hdisc(0, "bye"))
            self.assert_every_ack_in_threads(
                {k: c for k, c in enumerate(cs) if k % 3 == 2}, n, round_)
            for k, c in enumerate(cs):
                if k % 3 == 1:
                    for _ in range(n + 1):
                        f = c.recv(10)
                        self.assertIsNotNone(f, "conn %d: EOF without AGENT-DISCONNECT" % k)
                        if f.type == T_ADISC:
                            break
                        self.assertEqual(f.type, T_ACK)
                    self.assertEqual(f.type, T_ADISC)
                c.close()
        self.assert_healthy_deferred(d)


class SilentPeerTests(Adv5Case):
    def test_peers_that_read_nothing_until_their_sockets_fill(self):
        """Four peers pipeline 40000 deferred NOTIFYs each without reading (their receive
        buffers 4 KiB: the agent's socket buffers, then its output, fill up; it stops reading
        them, TCP pushes back), then read: every ACK arrives, each once, none lost while the
        answers completed into full sockets. One worker: the ticket cap is shared."""
        d = self.deferred(["--delay-us", "100000", "--deadline-ms", "5000"])
        n = 40000
        data = b"".join(notify(i + 1, 1, [ipmsg()]) for i in range(n))
        cs = [self.client(d, timeout=5, rcvbuf=4096) for _ in range(4)]
        for c in cs:
            c.handshake()
        sent = [[0] for _ in cs]
        ths = [threading.Thread(target=pump, args=(c, data, time.monotonic() + 20, s))
               for c, s in zip(cs, sent)]
        for t in ths:
            t.start()
        time.sleep(3)  # nobody reads meanwhile
        for c in cs:
            c.s.setblocking(True)
        out = {}
        rs = [threading.Thread(target=read_acks, args=(c, n, out, k, time.monotonic() + 40))
              for k, c in enumerate(cs)]
        for t in rs:
            t.start()
        for t in rs + ths:
            t.join(45)
        for k, s in enumerate(sent):
            self.assertEqual(s[0], len(data), "conn %d: the agent stopped reading" % k)
        for k, (sids, problem) in sorted(out.items()):
            self.assertIsNone(problem, "conn %d" % k)
            self.assertEqual(len(set(sids)), n, "conn %d" % k)
        self.assert_healthy_deferred(d)


class AgentRateFloodTests(Adv5Case):
    def test_check_rate_flood_on_a_stalled_redis_with_resets(self):
        """The agent's check-rate answers wait on Redis (deferred); Redis never answers, so
        each fails open within --deferred-timeout. One worker, 8 connections x 1500 NOTIFYs
        (12000 > 4096 tickets), two of them reset mid-flight: the others get every ACK, each
        once, with over_limit; twice; then the agent serves a fresh connection."""
        rc, err = run_expecting_exit(["--rate-redis", "x://", "-p", "1"], timeout=3)
        if "built without" in err:
            self.skipTest("agent built without hiredis")
        r = StalledRedis(lifetime=60)
        self.addCleanup(r.close)
        a = self.start_agent(["--deferred-timeout", "300",
                              "--rate-redis", "redis://127.0.0.1:%d/0" % r.port], workers=1)
        time.sleep(0.5)  # the limiter connects and loads its script
        n = 1500
        rate = [msg("check-rate", [("key", d_str("k%d" % (i % 50)))]) for i in range(n)]
        burst = b"".join(notify(2 * i + 1, 1, [rate[i], ipmsg()]) for i in range(n))
        for round_ in range(2):
            cs = self.burst_clients(a, 8, burst, timeout=10)
            time.sleep(0.05)
            rst(cs[0])
            rst(cs[4])
            self.assert_every_ack_in_threads({k: c for k, c in enumerate(cs) if k % 4}, n,
                                             round_)
            for c in cs:
                c.close()
        self.assert_healthy(a)


class StopTests(Adv5Case):
    def test_sigterm_with_answers_outstanding_and_a_peer_that_reads_nothing(self):
        """SIGTERM while a peer that never reads has filled its socket (its NOTIFYs deferred
        1.5 s) and another peer waits for 50 deferred answers: the reading peer gets all 50,
        then AGENT-DISCONNECT 0, within the answers' delay; the process exits 0 once the
        shutdown timeout (10 s) gives up on the silent peer, not later and not spinning."""
        d = self.deferred(["--delay-us", "1500000", "--deadline-ms", "5000"])
        a = self.client(d, timeout=5, rcvbuf=4096)
        a.handshake()
        data = b"".join(notify(i + 1, 1, [ipmsg()]) for i in range(150000))
        sent = [0]
        th = threading.Thread(target=pump, args=(a, data, time.monotonic() + 8, sent))
        th.start()
        b = self.client(d, timeout=20)
        b.handshake()
        b.send(b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(50)))
        time.sleep(2)
        cpu0 = d.cpu_seconds()
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        sids = []
        for _ in range(51):
            f = b.recv(15)
            self.assertIsNotNone(f, "EOF before AGENT-DISCONNECT (%d ACKs)" % len(sids))
            if f.type == T_ADISC:
                break
            self.assertEqual(f.type, T_ACK, repr(f))
            sids.append(f.sid)
        self.assertEqual(f.type, T_ADISC)
        self.assertEqual(dict(parse_kv(f.payload))["status-code"][1], 0)
        self.assertEqual(sorted(sids), [2 * i + 1 for i in range(50)])
        self.assertLess(time.monotonic() - t0, 3.0)
        time.sleep(max(0.0, t0 + 5 - time.monotonic()))
        if d.alive():  # waiting for the silent peer: not spinning meanwhile
            self.assertLess(d.cpu_seconds() - cpu0, 1.5, "CPU during the stop")
        d.proc.wait(15)
        took = time.monotonic() - t0
        self.assertEqual(d.proc.returncode, 0, d.log_tail())
        self.assertLess(took, 12.5, "the stop outlived --shutdown-timeout")
        th.join(10)

