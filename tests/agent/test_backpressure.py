"""Back-pressure and end of stream (issue 10, classes 1 and 1b): a legal peer that pipelines
any number of NOTIFYs, reads its ACKs at any speed, or half-closes right after its last frame,
gets every ACK, in order, and no AGENT-DISCONNECT. Run by test_agent.py's runner, once per
engine.

Every loop here is bounded in count and time; the agent listens on loopback only.
"""

import socket
import threading
import time

import test_agent as ta  # first: puts tests/ on sys.path
from pyspop import codec
from pyspop import vectors


def notify_burst(n, first_sid=1, messages=None):
    """n NOTIFYs with odd stream ids (3.x style), one buffer."""
    msgs = messages if messages is not None else [codec.ip_msg("192.0.2.1")]
    payload = codec.notify_payload(msgs)
    out = bytearray()
    for i in range(n):
        out += codec.frame(codec.T_NOTIFY, payload, sid=first_sid + 2 * i, fid=1)
    return bytes(out)


class Reader:
    """Reads ACK frames on a socket in a thread, optionally after a pause; counts them."""

    def __init__(self, sock, expect, pause=0.0, timeout=60.0):
        self.sock = sock
        self.expect = expect
        self.pause = pause
        self.timeout = timeout
        self.acks = []          # stream ids, in arrival order
        self.other = []         # any other frame (an AGENT-DISCONNECT would land here)
        self.eof = False
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        buf = bytearray()
        deadline = time.monotonic() + self.timeout
        if self.pause:
            time.sleep(self.pause)
        try:
            while len(self.acks) < self.expect and time.monotonic() < deadline:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    data = self.sock.recv(1 << 20)
                except socket.timeout:
                    break
                if not data:
                    self.eof = True
                    break
                buf += data
                pos = 0
                while len(buf) - pos >= 4:
                    n = int.from_bytes(buf[pos:pos + 4], "big")
                    if len(buf) - pos < 4 + n:
                        break
                    f = codec.parse_frame(bytes(buf[pos:pos + 4 + n]))
                    pos += 4 + n
                    if f.type == codec.T_ACK:
                        self.acks.append(f.sid)
                    else:
                        self.other.append(f)
                del buf[:pos]
        except OSError as e:
            self.error = e

    def join(self):
        self.t.join(self.timeout + 5)


class BackPressureTests(ta.AgentCase):
    agent_args = None  # each test starts its own agent

    def burst(self, n, pause=0.0, messages=None, agent_args=(), hello=None, chunk=1 << 20):
        """Sends n NOTIFYs as fast as the socket takes them while a reader collects ACKs."""
        a = self.start_agent(list(agent_args))
        c = self.conn(a, timeout=30)
        c.handshake(hello)
        data = notify_burst(n, messages=messages)
        r = Reader(c.sock, n, pause=pause, timeout=120)
        c.sock.settimeout(120)
        for off in range(0, len(data), chunk):
            c.sock.sendall(data[off:off + chunk])
        r.join()
        self.assertIsNone(r.error)
        why = ["%s" % (codec.disconnect_fields(f),) for f in r.other
               if f.type == codec.T_AGENT_DISCONNECT]
        self.assertEqual(len(r.acks), n, "ACKs received of %d (then %s)" % (n, why or "EOF"))
        self.assertEqual(r.other, [], "no AGENT-DISCONNECT on a legal stream")
        self.assertEqual(r.acks, [1 + 2 * i for i in range(n)], "in order")
        self.assertTrue(a.alive())
        return a

    def test_burst_10k_prompt_reader(self):
        self.burst(10000)

    def test_burst_100k_prompt_reader(self):
        self.burst(100000)

    def test_burst_100k_reader_pauses_one_second(self):
        # The sender blocks once TCP's windows are full: that is the back-pressure.
        self.burst(100000, pause=1.0)

    def test_burst_with_low_max_in_flight(self):
        self.burst(20000, agent_args=["--max-in-flight", "3"])

    def test_large_acks_reader_pauses(self):
        # 30 messages per NOTIFY and a 40-byte variable name: ~1.4 KB per ACK.
        msgs = [ta.ip_msg("192.0.2.%d" % (i + 1)) for i in range(30)]
        self.burst(400, pause=1.0, messages=msgs, agent_args=["--var-name", "v" * 40])

    def test_small_frames_many_messages(self):
        # -m 1024: ACKs near the negotiated size, a paused reader.
        msgs = [codec.ip_msg("192.0.2.%d" % (i + 1)) for i in range(20)]
        self.burst(300, pause=0.5, messages=msgs, agent_args=["-m", "1024"],
                   hello=codec.hello(mfs=1024))

    def test_other_connections_not_slowed(self):
        """Peers that flood and do not read are pushed back by TCP, not disconnected, and do
        not stop another connection on the same worker from being answered at once."""
        a = self.start_agent(workers=1)  # the flooders and the prompt peer share a worker
        one = notify_burst(1)
        block = one * ((1 << 20) // len(one))
        flooders = []
        for _ in range(4):
            f = self.conn(a, timeout=10)
            f.handshake()
            f.sock.setblocking(False)
            flooders.append(f)
        sent = [0] * len(flooders)
        stuck = [0.0] * len(flooders)   # since when each send has been refused
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = time.monotonic()
            for i, f in enumerate(flooders):
                off = sent[i] % len(block)
                try:
                    sent[i] += f.sock.send(block[off:])
                    stuck[i] = 0.0
                except BlockingIOError:
                    stuck[i] = stuck[i] or now
            if all(t and now - t > 0.5 for t in stuck):
                break
            time.sleep(0.002)
        self.assertTrue(all(t for t in stuck), "TCP must push back on every flooder: %r" % sent)
        c = self.conn(a, timeout=5)
        c.handshake()
        t0 = time.monotonic()
        for i in range(50):
            c.send(codec.notify(2 * i + 1, 1, [codec.ip_msg()]))
            self.check_ack_score(c.recv_frame(2.0), 2 * i + 1, 1)
        self.assertLess(time.monotonic() - t0, 2.0)
        # Once they read, the flooders get an ACK for every whole NOTIFY they sent.
        for i, f in enumerate(flooders):
            f.sock.setblocking(True)
            want = sent[i] // len(one)
            self.assertEqual(count_acks(f.sock, want, timeout=60), want)
        self.assertTrue(a.alive())


def count_acks(sock, want, timeout):
    """Reads until `want` ACK frames arrived (or time runs out, or anything else arrives)."""
    buf = bytearray()
    got = 0
    deadline = time.monotonic() + timeout
    while got < want and time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(1 << 22)
        except socket.timeout:
            break
        if not data:
            break
        buf += data
        pos = 0
        while len(buf) - pos >= 5:
            n = int.from_bytes(buf[pos:pos + 4], "big")
            if len(buf) - pos < 4 + n:
                break
            if buf[pos + 4] != codec.T_ACK:
                return -1
            got += 1
            pos += 4 + n
        del buf[:pos]
    return got


class HalfCloseTests(ta.AgentCase):
    agent_args = ()

    def half_close_case(self, n, split_fin, hello_only=False):
        c = self.conn(timeout=10)
        if hello_only:
            c.send(vectors.V1_HELLO_34)
            if split_fin:
                time.sleep(0.01)
            c.sock.shutdown(socket.SHUT_WR)
            f = c.recv_frame(5)
            self.assertIsNotNone(f, "AGENT-HELLO lost after a half-close")
            self.assertEqual(f.type, codec.T_AGENT_HELLO)
            self.assertIsNone(c.recv_frame(5), "then EOF")
            return
        c.handshake()
        data = notify_burst(n)
        if split_fin:
            c.send(data)
            time.sleep(0.005)
            c.sock.shutdown(socket.SHUT_WR)
        else:
            # Frames and FIN as close together as a socket allows: one send, then shutdown.
            c.sock.sendall(data)
            c.sock.shutdown(socket.SHUT_WR)
        acks = []
        for _ in range(n + 1):
            f = c.recv_frame(10)
            if f is None:
                break
            self.assertEqual(f.type, codec.T_ACK, "only ACKs, got %r" % (f,))
            acks.append(f.sid)
        self.assertEqual(acks, [1 + 2 * i for i in range(n)])
        self.assertIsNone(c.recv_frame(5), "the agent closes after the last ACK")

    def test_half_close_after_notifies_many_timings(self):
        for rep in range(10):
            for n in (1, 50, 3000):
                for split in (False, True):
                    with self.subTest(rep=rep, n=n, split=split):
                        self.half_close_case(n, split)
        self.assertTrue(self.agent.alive())

    def test_half_close_after_hello(self):
        for rep in range(20):
            for split in (False, True):
                with self.subTest(rep=rep, split=split):
                    self.half_close_case(0, split, hello_only=True)
        self.assertTrue(self.agent.alive())

    def test_half_close_while_back_pressured_does_not_spin(self):
        """A peer that sends a burst, half-closes and reads nothing: the agent waits (it is
        back-pressured with the FIN queued) without burning CPU (epoll's level-triggered
        EPOLLRDHUP used to spin here)."""
        a = self.start_agent(["--var-name", "v" * 40], workers=1)
        c = self.slow_reader_conn(a, timeout=10)
        c.handshake()
        msgs = [ta.ip_msg("192.0.2.%d" % (i + 1)) for i in range(30)]
        payload = ta.notify_payload(msgs)
        data = b"".join(ta.frame(ta.T_NOTIFY, payload, sid=1 + 2 * i, fid=1) for i in range(2200))
        c.sock.settimeout(20)
        c.sock.sendall(data)
        c.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
        cpu0 = a.cpu_seconds()
        time.sleep(2.0)
        used = a.cpu_seconds() - cpu0
        self.assertLess(used, 0.5, "agent CPU while waiting for a reader: %.2f s in 2 s" % used)
        r = Reader(c.sock, 2200, timeout=60)
        r.join()
        self.assertEqual(len(r.acks), 2200)
        self.assertTrue(r.eof or r.other == [])

    def test_half_close_with_partial_frame(self):
        c = self.conn(timeout=10)
        c.handshake()
        data = notify_burst(3)
        c.send(data[:-5])  # the third NOTIFY is cut
        c.sock.shutdown(socket.SHUT_WR)
        f1, f2 = c.recv_frame(5), c.recv_frame(5)
        self.assertEqual((f1.type, f1.sid), (codec.T_ACK, 1))
        self.assertEqual((f2.type, f2.sid), (codec.T_ACK, 3))
        self.assertIsNone(c.recv_frame(5))
