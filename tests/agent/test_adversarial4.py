"""Adversarial review, round 4 (branch adv4): odd-but-legal peers and process events.

- Frame size bounds: a NOTIFY of exactly the negotiated max-frame-size is answered, one byte
  more gets AGENT-DISCONNECT 3 "frame is too big" and EOF (SPOE.txt §3.2.1/§3.5: the length
  must not exceed max-frame-size), for HAProxy's minimum 256 and for a HAProxy announcing more
  than the agent's own limit; other connections carry on.
- HAProxy 2.6 reuses a (stream-id, frame-id) after a failed or timed-out event
  (PROTOCOL-NOTES §7, §12.5): two NOTIFYs with the same ids in flight on one connection are
  both answered, and a deferred answer that missed its deadline never sends a second ACK.
- A HAPROXY-DISCONNECT arriving inside a pipelined burst written one byte at a time, and a
  HELLO pipelined with NOTIFYs in one write.
- deferred_agent: a half-closed peer still gets its deferred answers, a SIGTERM under load
  answers every NOTIFY read before AGENT-DISCONNECT, odd --cpus/-n/--threads values.
- The agent: SIGHUP reloads under pipelined load lose no ACK.

Frames are built with test_independent's codec (written from the spec, not from the C++).
Loopback only; every loop bounded in count and time. Run by test_agent.py's runner.
"""

import os
import signal
import socket
import tempfile
import threading
import time

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop import agent as harness
from test_independent import (T_ACK, T_ADISC, T_AHELLO, T_HDISC, T_NOTIFY, IndependentCase,
                              d_str, d_u32, frm, hello, ipmsg, kv, msg, notify, parse_actions,
                              parse_kv)


def example(name):
    """build/examples/<name>, next to build/agent/agent."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ta.AGENT))),
                        "examples", name)


def hdisc(code=0, message="normal"):
    return frm(T_HDISC, kv([("status-code", d_u32(code)), ("message", d_str(message))]))


def sized_notify(sid, fid, length):
    """A NOTIFY whose FRAME-LENGTH is exactly `length`: check-client-ip with the address, then
    a second message whose STRING argument pads the frame."""
    head = frm(T_NOTIFY, ipmsg(), sid, fid)
    base = len(head) - 4
    # second message: name "pad" (4 bytes), nb-args (1), arg name "" (1), STRING type (1),
    # varint length (1 to 5 bytes) + n bytes
    for lenlen in (1, 2, 3, 4, 5):
        n = length - base - 4 - 1 - 1 - 1 - lenlen
        if n < 0:
            raise ValueError("length too small")
        f = frm(T_NOTIFY, ipmsg() + msg("pad", [("", d_str("p" * n))]), sid, fid)
        if len(f) - 4 == length:
            return f
    raise ValueError("cannot build a NOTIFY of length %d" % length)


class Adv4Case(IndependentCase):
    def expect_disconnect(self, c, code):
        f = c.recv()
        self.assertIsNotNone(f, "EOF instead of AGENT-DISCONNECT %d" % code)
        self.assertEqual((f.type, f.sid, f.fid), (T_ADISC, 0, 0), repr(f))
        d = dict(parse_kv(f.payload))
        self.assertEqual(d["status-code"][1], code, repr(d))
        self.assertIsNone(c.recv(), "a frame after AGENT-DISCONNECT")
        return d

    def expect_acks(self, c, sids, timeout=5.0, fid=1):
        got = []
        for _ in sids:
            f = c.recv(timeout)
            self.assertIsNotNone(f, "EOF after %d of %d ACKs" % (len(got), len(sids)))
            self.assertEqual(f.type, T_ACK, repr(f))
            self.assertEqual(f.fid, fid)
            got.append(f.sid)
        return got


class FrameSizeBoundTests(Adv4Case):
    def check_bounds(self, agent, announced, expect_mfs):
        c = self.client(agent)
        c.send(hello(mfs=announced))
        f = c.recv()
        self.assertEqual(f.type, T_AHELLO)
        mfs = dict(parse_kv(f.payload))["max-frame-size"][1]
        self.assertEqual(mfs, expect_mfs)
        other = self.client(agent)
        other.handshake()
        c.send(sized_notify(1, 1, mfs))
        f = c.recv()
        self.assertIsNotNone(f, "EOF for a NOTIFY of exactly max-frame-size %d" % mfs)
        self.assertEqual((f.type, f.sid, f.fid), (T_ACK, 1, 1), repr(f))
        self.assertTrue(any(a[0] == "set" for a in parse_actions(f.payload)))
        c.send(sized_notify(3, 1, mfs + 1))
        d = self.expect_disconnect(c, 3)
        self.assertEqual(d["message"][1], b"frame is too big")
        other.send(notify(5, 1, [ipmsg()]))
        f = other.recv()
        self.assertEqual((f.type, f.sid), (T_ACK, 5), "the other connection stopped")

    def test_notify_at_and_one_over_max_frame_size(self):
        """SPOE.txt §3.2.1: max-frame-size is the largest frame either side may send; the
        negotiated value is min(HAProxy's, the agent's). A frame of exactly that length is
        legal; one byte more is status 3 (§3.5 "frame is too big"), then the close."""
        a = self.start_agent(["-m", "1000"])
        self.check_bounds(a, 256, 256)         # HAProxy's minimum (tune.bufsize-4 >= 256)
        self.check_bounds(a, 999, 999)
        self.check_bounds(a, 65532, 1000)      # tune.bufsize 65536: the agent's limit wins
        self.assert_healthy(a)

    def test_large_tune_bufsize(self):
        """PROTOCOL-NOTES §12.9: HAProxy announces tune.bufsize-4, which can be far above
        16 KiB (here 1 MiB - 4, with -m 1 MiB): the bounds hold with 4-byte length varints."""
        a = self.start_agent(["-m", "1048576"], workers=1)
        self.check_bounds(a, 1048572, 1048572)
        self.assert_healthy(a)


class DisconnectEchoTests(Adv4Case):
    def test_echo_that_would_not_fit_still_disconnects(self):
        """SPOE.txt §3.2.8: the agent answers HAPROXY-DISCONNECT with AGENT-DISCONNECT, a frame
        that must fit the negotiated max-frame-size (§3.2.1). The agent echoes HAProxy's
        status-code and message; a peer whose DISCONNECT carries only a long message (status
        missing: the agent adds it) makes the echo longer than what it received. The answer
        must still be an AGENT-DISCONNECT within max-frame-size (the message shortened), not a
        close without one. Before the fix: EOF, no frame."""
        a = self.start_agent(workers=1)
        for mfs, n in ((256, 236), (256, 220), (1000, 975)):
            with self.subTest(mfs=mfs, n=n):
                c = self.client(a)
                c.handshake(mfs=mfs)
                fr = frm(T_HDISC, kv([("message", d_str("x" * n))]))
                self.assertLessEqual(len(fr) - 4, mfs)
                c.send(fr)
                f = c.recv()
                self.assertIsNotNone(f, "EOF without AGENT-DISCONNECT")
                self.assertEqual(f.type, T_ADISC)
                self.assertLessEqual(len(f.payload) + 7, mfs)
                d = dict(parse_kv(f.payload))
                self.assertEqual(d["status-code"][1], 0)
                self.assertIsNone(c.recv())
        self.assert_healthy(a)


class ReusedIdsTests(Adv4Case):
    def test_same_ids_twice_in_flight(self):
        """PROTOCOL-NOTES §7/§12.5: 2.6 keeps the (stream-id, frame-id) of a failed event for
        the next one on the stream, so a NOTIFY can arrive while the previous with the same ids
        is still unanswered. The agent must answer each NOTIFY, once (SPOE.txt §3.2.6: "a
        NOTIFY frame must be acknowledged"). Deferred answers (deferred_agent) and
        synchronous ones (agent)."""
        d = harness.Agent(example("deferred_agent"), ["--delay-us", "100000"], workers=1,
                          engine=ta.ENGINE)
        self._agents.append(d)
        d.start()
        for a in (d, self.start_agent(workers=1)):
            c = self.client(a)
            c.handshake()
            c.send(notify(0, 1, [ipmsg()]) + notify(0, 1, [ipmsg()]))
            c.send(notify(7, 2, [ipmsg()]))
            c.send(notify(7, 2, [ipmsg()]))
            got = []
            for _ in range(4):
                f = c.recv()
                self.assertIsNotNone(f)
                self.assertEqual(f.type, T_ACK)
                got.append((f.sid, f.fid))
            self.assertEqual(sorted(got), [(0, 1), (0, 1), (7, 2), (7, 2)])
            c.s.settimeout(0.4)
            try:
                extra = c.s.recv(100)
            except socket.timeout:
                extra = b"<none>"
            self.assertEqual(extra, b"<none>", "a fifth frame")

    def test_late_deferred_answer_after_deadline_and_id_reuse(self):
        """The deadline answers with the fallback (options::deferred_timeout_ms); the late
        completion of that ticket must send nothing, even when HAProxy 2.6 has reused the same
        ids for its next NOTIFY (§12.5): that one gets its own single answer."""
        d = harness.Agent(example("deferred_agent"),
                          ["--delay-us", "600000", "--deadline-ms", "150"], workers=1,
                          engine=ta.ENGINE)
        self._agents.append(d)
        d.start()
        c = self.client(d)
        c.handshake()
        c.send(notify(9, 1, [ipmsg()]))
        t0 = time.monotonic()
        f = c.recv()
        self.assertEqual((f.type, f.sid, f.fid), (T_ACK, 9, 1))
        self.assertLess(time.monotonic() - t0, 0.5, "the deadline fallback came late")
        self.assertFalse(any(a[0] == "set" for a in parse_actions(f.payload)),
                         "the fallback, not a score: %r" % (parse_actions(f.payload),))
        c.send(notify(9, 1, [ipmsg()]))  # same ids, while the first ticket is still held
        f = c.recv()
        self.assertEqual((f.type, f.sid, f.fid), (T_ACK, 9, 1))
        # both tickets complete in the pool after 600 ms; nothing may follow
        c.s.settimeout(1.5)
        try:
            extra = c.s.recv(100)
        except socket.timeout:
            extra = b"<none>"
        self.assertEqual(extra, b"<none>", "a late ACK after the fallback")
        c.send(notify(11, 1, [ipmsg()]))
        f = c.recv()
        self.assertEqual((f.type, f.sid), (T_ACK, 11))


class OddWritesTests(Adv4Case):
    def test_disconnect_inside_a_burst_one_byte_per_send(self):
        """SPOE.txt §3.2.7-§3.2.8: on HAPROXY-DISCONNECT the agent answers AGENT-DISCONNECT
        and closes; the NOTIFYs before it are whole frames the agent received, answered before
        it (adv3 checked one write; here each byte is its own segment, so the disconnect is
        parsed in a later read than the NOTIFYs)."""
        a = self.start_agent(workers=1)
        c = self.client(a, timeout=10)
        c.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.handshake()
        data = b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(5)) + hdisc()
        for i in range(len(data)):
            c.send(data[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.001)
        self.assertEqual(self.expect_acks(c, range(5)), [1, 3, 5, 7, 9])
        self.expect_disconnect(c, 0)

    def test_hello_pipelined_with_notifies(self):
        """Nothing in the spec forbids a peer from sending NOTIFYs right behind its HELLO:
        they follow the handshake in the stream and get ACKs after the AGENT-HELLO."""
        a = self.start_agent(workers=1)
        c = self.client(a)
        c.send(hello() + b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(10)))
        f = c.recv()
        self.assertEqual(f.type, T_AHELLO)
        self.assertEqual(self.expect_acks(c, range(10)), [2 * i + 1 for i in range(10)])

    def test_zero_messages_and_zero_args_pipelined(self):
        """SPOE.txt §3.2.6 LIST-OF-MESSAGES may be empty (3.1-3.3 sent it); a message may have
        0 arguments; HAProxy 2.6 sends unnamed arguments. Each NOTIFY gets exactly one ACK."""
        a = self.start_agent(workers=1)
        c = self.client(a)
        c.handshake()
        frames = [notify(1, 1, []), notify(3, 1, [msg("check-client-ip", [])]),
                  notify(5, 1, [msg("check-client-ip", [("", b"\x06\x7f\x00\x00\x01")])]),
                  notify(7, 1, [msg("a", []), msg("b", []), msg("c", [])])]
        c.send(b"".join(frames))
        self.assertEqual(self.expect_acks(c, frames), [1, 3, 5, 7])


class SlowReaderTests(Adv4Case):
    def test_one_byte_reader_with_many_acks_pending(self):
        """A peer reading one byte at a time while 300 pipelined NOTIFYs wait (receive buffer
        4 KiB, --max-in-flight 4: the agent back-pressures): every ACK arrives whole, once, in
        order (SPOE.txt §3.2.1 pipelining: ACKs on the same connection), and a partial write
        never corrupts a frame. Deferred answers too (deferred_agent)."""
        d = harness.Agent(example("deferred_agent"), ["--delay-us", "2000"], workers=1,
                          engine=ta.ENGINE)
        self._agents.append(d)
        d.start()
        for a in (self.start_agent(["--max-in-flight", "4"], workers=1), d):
            c = self.client(a, timeout=10, rcvbuf=4096)
            c.handshake()
            n = 300
            c.send(b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(n)))
            raw = bytearray()
            deadline = time.monotonic() + 30
            need = None
            sids = []
            while len(sids) < n and time.monotonic() < deadline:
                b = c.s.recv(1)
                self.assertTrue(b, "EOF after %d ACKs" % len(sids))
                raw += b
                if need is None and len(raw) >= 4:
                    need = 4 + int.from_bytes(raw[:4], "big")
                if need is not None and len(raw) == need:
                    c.buf = bytearray(raw)
                    f = c.recv()
                    self.assertEqual(f.type, T_ACK, repr(f))
                    sids.append(f.sid)
                    raw.clear()
                    need = None
                if len(sids) % 50 == 0:
                    time.sleep(0.0005)
            c.buf = bytearray()
            want = [2 * i + 1 for i in range(n)]
            # synchronous answers keep the order; one pool thread answers in arrival order too
            self.assertEqual(sids, want)


class DeferredAgentTests(Adv4Case):
    def deferred(self, args, workers=2):
        d = harness.Agent(example("deferred_agent"), args, workers=workers, engine=ta.ENGINE)
        self._agents.append(d)
        return d.start()

    def test_half_close_gets_deferred_answers(self):
        """A peer that sends its NOTIFYs and shuts its write side (TCP half-close) is still
        reading: every NOTIFY received must be answered (§3.2.6), also when the answer comes
        from another thread later (--delay-us 50 ms)."""
        d = self.deferred(["--delay-us", "50000"])
        for round_ in range(5):
            c = self.client(d)
            c.send(hello() + b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(20)))
            c.s.shutdown(socket.SHUT_WR)
            f = c.recv()
            self.assertEqual(f.type, T_AHELLO)
            got = self.expect_acks(c, range(20))
            self.assertEqual(sorted(got), [2 * i + 1 for i in range(20)], "round %d" % round_)
            f = c.recv()
            self.assertTrue(f is None or f.type == T_ADISC, repr(f))
        self.assert_healthy_deferred(d)

    def assert_healthy_deferred(self, d):
        self.assertTrue(d.alive(), d.log_tail())
        c = self.client(d)
        c.handshake()
        c.send(notify(1, 1, [ipmsg()]))
        f = c.recv()
        self.assertEqual((f.type, f.sid), (T_ACK, 1))
        self.assertEqual(d.sanitizer_reports(), [])

    def test_sigterm_under_load_answers_everything_read(self):
        """A stop (SIGTERM) with deferred answers pending: every NOTIFY the agent read gets an
        ACK (the score or the fallback) before AGENT-DISCONNECT, which comes last; nothing is
        lost and the process exits 0."""
        d = self.deferred(["--delay-us", "300000"])
        conns = []
        for k in range(6):
            c = self.client(d, timeout=15)
            c.handshake()
            conns.append(c)
        n = 50
        for c in conns:
            c.send(b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(n)))
        time.sleep(0.1)
        d.proc.send_signal(signal.SIGTERM)
        for k, c in enumerate(conns):
            sids = []
            while True:
                f = c.recv(12)
                self.assertIsNotNone(f, "conn %d: EOF before AGENT-DISCONNECT (%d ACKs)"
                                     % (k, len(sids)))
                if f.type == T_ADISC:
                    self.assertEqual(dict(parse_kv(f.payload))["status-code"][1], 0)
                    break
                self.assertEqual(f.type, T_ACK, repr(f))
                sids.append(f.sid)
            self.assertEqual(sorted(sids), [2 * i + 1 for i in range(n)], "conn %d" % k)
            self.assertIsNone(c.recv(5))
        d.proc.wait(15)
        self.assertEqual(d.proc.returncode, 0, d.log_tail())

    def test_haproxy_disconnect_with_deferred_answers_pending(self):
        """SPOE.txt §3.2.8: after HAPROXY-DISCONNECT "HAProxy will wait an AGENT-DISCONNECT
        frame in reply. All other frames will be ignored", and §3.2.9: the agent closes just
        after sending it. With answers still deferred (200 ms away) the AGENT-DISCONNECT must
        not wait for them, must be the last frame (no late ACK after it), then EOF; the late
        completions afterwards do no harm. In one write with the NOTIFYs, and in a later one."""
        d = self.deferred(["--delay-us", "200000"], workers=1)
        for split in (False, True):
            with self.subTest(split=split):
                c = self.client(d)
                c.handshake()
                burst = b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(5))
                if split:
                    c.send(burst)
                    time.sleep(0.05)
                    c.send(hdisc())
                else:
                    c.send(burst + hdisc())
                t0 = time.monotonic()
                while True:
                    f = c.recv()
                    self.assertIsNotNone(f, "EOF without AGENT-DISCONNECT")
                    if f.type == T_ADISC:
                        break
                    self.assertEqual(f.type, T_ACK, repr(f))
                self.assertLess(time.monotonic() - t0, 1.0, "AGENT-DISCONNECT waited")
                self.assertEqual(dict(parse_kv(f.payload))["status-code"][1], 0)
                self.assertIsNone(c.recv(), "a frame after AGENT-DISCONNECT")
        time.sleep(0.3)  # the pool completes the tickets of the closed connections
        self.assert_healthy_deferred(d)

    def test_odd_cpu_and_thread_values(self):
        """--cpus with fewer CPUs than workers (round robin), a single-CPU range "0-0",
        --threads 0 --delay-us 0 (answers on the worker), many pool threads: all serve."""
        cases = [(["--cpus", "0-0"], 4), (["--cpus", "0", "--threads", "4"], 3),
                 (["--threads", "0", "--delay-us", "0"], 2), (["--threads", "16"], 1)]
        for args, workers in cases:
            with self.subTest(args=args, workers=workers):
                d = self.deferred(args, workers=workers)
                cs = [self.client(d) for _ in range(workers * 2)]
                for c in cs:
                    c.handshake()
                    c.send(b"".join(notify(2 * i + 1, 1, [ipmsg()]) for i in range(30)))
                for c in cs:
                    self.assertEqual(sorted(self.expect_acks(c, range(30))),
                                     [2 * i + 1 for i in range(30)])
                d.stop()

    def test_threads_0_with_delay_refused(self):
        """--threads 0 needs --delay-us 0 (the usage says so): exit 2, not a hang."""
        for args in (["--threads", "0", "--delay-us", "5"], ["--threads", "0"]):
            with self.subTest(args=args):
                rc, _out, err = harness.run_agent(example("deferred_agent"),
                                                  ["-p", "1", "-a", "127.0.0.1"] + args, 5)
                self.assertEqual(rc, 2, err)


class ReloadUnderLoadTests(Adv4Case):
    def test_sighup_reloads_under_pipelined_load(self):
        """SIGHUP reloads the reputation files (spop-agent(1)); NOTIFYs in flight at that
        moment are answered, each once, and the scores follow the file."""
        tmp = tempfile.mkdtemp(prefix="adv4-")
        path = os.path.join(tmp, "rep.ipset")
        with open(path, "w") as f:
            f.write("192.0.2.0/24\n")
        a = self.start_agent(["--list", "%s=77" % path], workers=2)
        self.addCleanup(lambda: (os.unlink(path), os.rmdir(tmp)))
        conns = [self.client(a, timeout=10) for _ in range(4)]
        for c in conns:
            c.handshake()
        stop = threading.Event()
        errors = []

        def hupper():
            for _ in range(20):
                if stop.is_set():
                    return
                try:
                    a.proc.send_signal(signal.SIGHUP)
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                time.sleep(0.02)

        th = threading.Thread(target=hupper)
        th.start()
        try:
            for r in range(10):
                for c in conns:
                    c.send(b"".join(notify(2 * i + 1, r + 1, [ipmsg()]) for i in range(100)))
                for c in conns:
                    self.assertEqual(self.expect_acks(c, range(100), fid=r + 1),
                                     [2 * i + 1 for i in range(100)])
        finally:
            stop.set()
            th.join(5)
        self.assertEqual(errors, [])
        c = conns[0]
        c.send(notify(1, 99, [ipmsg()]))
        f = c.recv()
        acts = parse_actions(f.payload)
        self.assertEqual([x[3][1] for x in acts if x[0] == "set"], [77], acts)
        self.assert_healthy(a)

