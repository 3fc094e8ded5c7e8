"""Lame-duck stop (issue 13, rolling restarts): on SIGTERM the listeners close at once, so
HAProxy's checks mark the agent DOWN, but open connections are served until they have been idle
for --drain-idle; NOTIFYs still arriving meanwhile are answered. Run by test_agent.py's runner,
once per engine. Every loop is bounded; loopback only.
"""

import signal
import socket
import subprocess
import time

import test_agent as ta  # first: puts tests/ on sys.path
from pyspop import codec


class LameDuckStopTests(ta.AgentCase):
    agent_args = None

    def test_serves_until_idle_then_disconnects(self):
        # drain-idle 2: the connection must never look idle while this test is busy (a slow
        # connect() below under a sanitizer on a loaded machine took the 1 s margin).
        a = self.start_agent(["--drain-idle", "2", "--shutdown-timeout", "10"])
        c = self.conn(a, timeout=10)
        c.handshake()
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        # The open connection keeps being answered while HAProxy keeps sending (3 s here), and
        # new connections are refused promptly (the listeners are gone): probed between NOTIFYs
        # so that the connection never idles.
        sid = 1
        refused = False
        while time.monotonic() - t0 < 3.0:
            c.send(codec.notify(sid, 1, [codec.ip_msg()]))
            self.check_ack_score(c.recv_frame(2.0), sid, 1)
            sid += 2
            if not refused and time.monotonic() - t0 < 2.0:
                try:
                    socket.create_connection(a.addr, timeout=0.5).close()
                except OSError:
                    refused = True
            time.sleep(0.1)
        self.assertTrue(refused, "listener still accepting 2 s after SIGTERM")
        self.assertGreater(sid, 20)
        # Quiet now: AGENT-DISCONNECT 0 within drain-idle (+1 s tick), then EOF, then exit 0.
        quiet = time.monotonic()
        f = c.recv_frame(5.0)
        self.assertIsNotNone(f)
        self.assertEqual(f.type, codec.T_AGENT_DISCONNECT)
        self.assertEqual(codec.disconnect_fields(f)[0], (codec.D_UINT32, 0))
        self.assertLess(time.monotonic() - quiet, 4.0)
        self.assertIsNone(c.recv_frame(3.0))
        try:
            rc = a.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.fail("agent did not exit after its last connection closed")
        self.assertEqual(rc, 0)

    def test_drain_idle_zero_disconnects_at_once(self):
        a = self.start_agent(["--drain-idle", "0"])
        c = self.conn(a)
        c.handshake()
        c.send(codec.notify(1, 1, [codec.ip_msg()]))
        self.check_ack_score(c.recv_frame(), 1, 1)
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        f = c.recv_frame(3.0)
        self.assertEqual(f.type, codec.T_AGENT_DISCONNECT)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual(a.proc.wait(5), 0)

    def test_shutdown_timeout_bounds_a_busy_peer(self):
        """A peer that never goes quiet is disconnected when --shutdown-timeout runs out; every
        NOTIFY it sent before the AGENT-DISCONNECT is answered."""
        a = self.start_agent(["--drain-idle", "5", "--shutdown-timeout", "3"])
        c = self.conn(a, timeout=10)
        c.handshake()
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        sent, acks, disc = [], [], None
        sid = 1
        while time.monotonic() - t0 < 6 and disc is None:
            try:
                c.send(codec.notify(sid, 1, [codec.ip_msg()]))
                sent.append(sid)
                sid += 2
            except OSError:
                break
            f = c.recv_frame(2.0)
            if f is None:
                break
            if f.type == codec.T_AGENT_DISCONNECT:
                disc = f
            else:
                acks.append(f.sid)
            time.sleep(0.05)
        self.assertIsNotNone(disc, "no AGENT-DISCONNECT before the shutdown timeout")
        self.assertLess(time.monotonic() - t0, 3.5)
        self.assertGreaterEqual(time.monotonic() - t0, 1.5)
        self.assertEqual(acks, sent[:len(acks)])
        self.assertEqual(a.proc.wait(5), 0)


class StopUnderBackPressureTests(ta.AgentCase):
    agent_args = None

    def test_stop_while_back_pressured_answers_everything(self):
        """SIGTERM while a peer pipelines large-ACK NOTIFYs and does not read: the connection is
        busy, not idle, so it is served until the peer has read every ACK, then disconnected."""
        import threading
        a = self.start_agent(["--var-name", "v" * 40, "--shutdown-timeout", "15"], workers=1)
        c = self.slow_reader_conn(a, timeout=30)
        c.handshake()
        msgs = [ta.ip_msg("192.0.2.%d" % (i + 1)) for i in range(30)]
        payload = ta.notify_payload(msgs)
        n = 2200
        data = b"".join(ta.frame(ta.T_NOTIFY, payload, sid=1 + 2 * i, fid=1) for i in range(n))
        sender = threading.Thread(target=lambda: c.sock.sendall(data), daemon=True)
        c.sock.settimeout(30)
        sender.start()
        time.sleep(1.0)  # the agent is back-pressured: its ACKs are not read
        a.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # longer than --drain-idle: a busy connection must not count as idle
        acks, other = 0, []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            f = c.recv_frame(10)
            if f is None:
                break
            if f.type == ta.T_ACK:
                acks += 1
            else:
                other.append(f)
                break
        sender.join(5)
        self.assertEqual(acks, n, "ACKs before the AGENT-DISCONNECT")
        self.assertEqual(len(other), 1)
        self.assertEqual(other[0].type, ta.T_AGENT_DISCONNECT)
        self.assertEqual(ta.disconnect_fields(other[0])[0], (ta.D_UINT32, 0))
        self.assertEqual(a.proc.wait(10), 0)
