#!/usr/bin/env python3
"""Live decisions in Redis (issue 15), end to end: two agents, one private redis-server.

    python3 tests/decisions/test_decisions.py --agent build/agent/agent \
        --decide build/agent/spop-decide [-k PATTERN]

Every agent runs with --default-score 50, so an address without a decision answers 50 and a
decision's score (3, 7, ...) is visible in the ACK. Decisions are written with spop-decide (the
tool under test) or with raw Redis commands from pyspop.redis (independent of the agent's Redis
code). The redis-server is started on a free loopback port and stopped afterwards; without
redis-server the suite is skipped loudly (exit 77), or fails when CI=true.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyspop.codec import T_ACK, hello, ip_msg, notify, set_vars  # noqa: E402
from pyspop.client import Conn  # noqa: E402
from pyspop import agent as harness  # noqa: E402
from pyspop import runner  # noqa: E402
from pyspop.ports import free_port  # noqa: E402
from pyspop.redis import RedisServer, redis_server_binary  # noqa: E402

SKIP = 77
AGENT = None
DECIDE = None
DEFAULT = 50
HASH = "spop:decisions"
STREAM = "spop:decisions:log"


def start_agent(url, extra=(), metrics=True):
    a = harness.Agent(AGENT, ["--default-score", str(DEFAULT), "--decisions", url,
                              "--category-var", "cat"] + list(extra),
                      workers=2, metrics=metrics, ready_timeout=10.0)
    return a.start()


class Scorer:
    """One SPOP connection to an agent; score(ip) sends a NOTIFY and returns the ACK's score."""

    def __init__(self, agent):
        self.c = Conn(agent.addr, agent.family, timeout=5.0)
        self.c.handshake(hello())
        self.fid = 0

    def vars(self, ip):
        self.fid += 1
        self.c.send(notify(1, self.fid, [ip_msg(ip)]))
        f = self.c.recv_frame(5.0)
        if f is None or f.type != T_ACK or f.fid != self.fid:
            raise AssertionError("expected the ACK of frame %d, got %r" % (self.fid, f))
        return set_vars(f.payload)

    def score(self, ip):
        return self.vars(ip)["ip_score"]

    def close(self):
        self.c.close()


def metrics(agent):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % agent.metrics_port,
                                timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^spop_agent_(decisions\w*) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


class DecisionsCase(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.agents = []
        self.scorers = []

    def tearDown(self):
        for s in self.scorers:
            s.close()
        bad = []
        for a in self.agents:
            rc = a.stop()
            log = a.log_text()
            # A graceful stop exits 0; sanitizer builds (CI) also report here.
            if a.rc is not None and rc != 0:
                bad.append("agent exited %r: %s" % (rc, log[-2000:]))
            if re.search(r"AddressSanitizer|LeakSanitizer|runtime error:", log):
                bad.append("sanitizer report: %s" % log[-4000:])
            a.close()
        self.redis.stop()
        self.assertEqual(bad, [])

    # --- helpers ---------------------------------------------------------------------------

    def agent(self, extra=(), url=None):
        a = start_agent(url or self.redis.url, extra)
        self.agents.append(a)
        return a

    def scorer(self, agent):
        s = Scorer(agent)
        self.scorers.append(s)
        return s

    def decide(self, *args, check=True):
        p = subprocess.run([DECIDE, "--redis", self.redis.url] + list(args),
                           capture_output=True, text=True, timeout=20)
        if check:
            self.assertEqual(p.returncode, 0, "spop-decide %s: %s" % (args, p.stderr))
        return p

    def wait_scores(self, scorers, ip, want, timeout=5.0):
        """Polls until every scorer answers `want` for `ip`; returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        got = None
        while time.monotonic() < deadline:
            got = [s.score(ip) for s in scorers]
            if all(g == want for g in got):
                return time.monotonic() - t0
            time.sleep(0.005)
        self.fail("%s: scores %r, expected %r on every agent within %.1f s"
                  % (ip, got, want, timeout))

    def wait_log(self, agent, pattern, timeout=5.0, since=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, agent.log_since(since)):
                return
            time.sleep(0.02)
        self.fail("no %r in the agent's log: %s" % (pattern, agent.log_since(since)[-2000:]))

    def xadd(self, *fields):
        return self.redis.command("XADD", STREAM, "*", *fields)


class TwoAgents(DecisionsCase):
    def test_add_is_enforced_by_both(self):
        a, b = self.agent(), self.agent()
        sa, sb = self.scorer(a), self.scorer(b)
        self.assertEqual([sa.score("198.51.100.7"), sb.score("198.51.100.7")], [DEFAULT] * 2)
        self.decide("add", "198.51.100.7", "--score", "3", "--reason", "ssh-bf")
        self.wait_scores([sa, sb], "198.51.100.7", 3)
        self.assertEqual(sa.vars("198.51.100.7").get("cat"), "ssh-bf")
        self.assertEqual(sb.score("198.51.100.8"), DEFAULT)
        # A CIDR, IPv6, and the longest decision wins.
        self.decide("add", "203.0.113.0/24", "--score", "9")
        self.decide("add", "2001:db8::/32", "--score", "11")
        self.wait_scores([sa, sb], "203.0.113.200", 9)
        self.wait_scores([sa, sb], "2001:db8::42", 11)
        self.decide("add", "203.0.113.200", "--score", "12")
        self.wait_scores([sa, sb], "203.0.113.200", 12)
        self.assertEqual(sa.score("203.0.113.1"), 9)
        # Both report it in /metrics.
        for ag in (a, b):
            m = metrics(ag)
            self.assertEqual(m["decisions_connected"], 1)
            self.assertEqual(m["decisions"], 4)
            self.assertEqual(m["decisions_malformed_total"], 0)
            self.assertLess(m["decisions_lag_seconds"], 2.0)
        p = self.decide("list")
        self.assertIn("198.51.100.7/32 score=3", p.stdout)
        self.assertIn("2001:db8::/32 score=11", p.stdout)

    def test_delete_and_expiry_seen_by_both(self):
        a, b = self.agent(), self.agent()
        sa, sb = self.scorer(a), self.scorer(b)
        self.decide("add", "192.0.2.10", "--score", "4", "--ttl", "0")
        self.decide("add", "192.0.2.20", "--score", "5", "--ttl", "2")
        self.wait_scores([sa, sb], "192.0.2.10", 4)
        self.wait_scores([sa, sb], "192.0.2.20", 5)
        self.decide("del", "192.0.2.10")
        self.wait_scores([sa, sb], "192.0.2.10", DEFAULT)
        # Expiry: at most 2 s (the TTL) + 1 s (second rounding) after the add.
        expiry = int(self.redis.command("HGET", HASH, "192.0.2.20/32").split()[1])
        self.wait_scores([sa, sb], "192.0.2.20", DEFAULT, timeout=4.0)
        self.assertGreaterEqual(time.time(), expiry - 0.05, "expired before its second")
        self.assertEqual(sa.score("192.0.2.20"), DEFAULT)

    def test_expired_decision_uncovers_the_shorter_one(self):
        a = self.agent()
        sa = self.scorer(a)
        self.decide("add", "10.20.0.0/16", "--score", "6", "--ttl", "0")
        self.decide("add", "10.20.30.40", "--score", "7", "--ttl", "1")
        self.wait_scores([sa], "10.20.30.40", 7)
        self.wait_scores([sa], "10.20.30.40", 6, timeout=3.0)

    def test_allow_list_wins_and_decisions_override_lists(self):
        d = tempfile.mkdtemp(prefix="spop-decisions-")
        self.addCleanup(shutil.rmtree, d, True)
        with open(os.path.join(d, "block.netset"), "w") as f:
            f.write("198.51.100.0/24\n")
        with open(os.path.join(d, "allow.ipset"), "w") as f:
            f.write("198.51.100.128/25\n")
        a = self.agent(extra=["--list", os.path.join(d, "block.netset") + "=10",
                              "--allow", os.path.join(d, "allow.ipset")])
        sa = self.scorer(a)
        self.assertEqual([sa.score("198.51.100.1"), sa.score("198.51.100.200")], [10, 100])
        self.decide("add", "198.51.100.0/24", "--score", "70", "--ttl", "0")
        self.wait_scores([sa], "198.51.100.1", 70)  # a decision overrides a list entry
        self.assertEqual(sa.score("198.51.100.200"), 100)  # the allow-list still wins
        self.decide("del", "198.51.100.0/24")
        self.wait_scores([sa], "198.51.100.1", 10)  # back to the list

    def test_restarted_agent_reloads_the_set(self):
        a = self.agent()
        sa = self.scorer(a)
        for i in range(3):
            self.decide("add", "198.18.0.%d" % i, "--score", "8")
        # And many more through one pipeline of raw commands (what another writer would do).
        c = self.redis.client()
        for i in range(3, 2000):
            p = "198.18.%d.%d/32" % (i // 256, i % 256)
            c.command("HSET", HASH, p, "8 0 bulk")
        c.command("XADD", STREAM, "*", "op", "resync")
        c.close()
        self.wait_scores([sa], "198.18.7.200", 8)
        self.scorers.remove(sa)
        sa.close()
        a.stop()
        b = self.agent()
        sb = self.scorer(b)
        # Right after the start line: the agent waited for its first load before listening.
        self.assertEqual(sb.score("198.18.0.1"), 8)
        self.assertEqual(sb.score("198.18.7.200"), 8)
        self.assertEqual(metrics(b)["decisions"], 2000)

    def test_agent_started_during_writes_misses_nothing(self):
        # 3000 adds and 1000 deletes, written while an agent loads (scan + replay): at the end
        # its set is exactly the hash.
        done = threading.Event()
        errors = []

        def writer():
            try:
                c = self.redis.client()
                for i in range(4000):
                    k = i if i < 3000 else (i - 3000) * 3  # then delete every third one
                    p = "198.19.%d.%d/32" % (k >> 8, k & 255)
                    c.command("MULTI")
                    if i < 3000:
                        c.command("HSET", HASH, p, "9 0 w")
                        c.command("XADD", STREAM, "*", "op", "add", "prefix", p, "score", "9",
                                  "expiry", "0")
                    else:
                        c.command("HDEL", HASH, p)
                        c.command("XADD", STREAM, "*", "op", "del", "prefix", p)
                    c.command("EXEC")
                c.close()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
            finally:
                done.set()

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.05)
        a = self.agent()
        t.join(60)
        self.assertTrue(done.is_set())
        self.assertEqual(errors, [])
        want = self.redis.command("HLEN", HASH)
        self.assertEqual(want, 2000)
        deadline = time.monotonic() + 5
        while metrics(a)["decisions"] != want and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(metrics(a)["decisions"], want)
        sa = self.scorer(a)
        for k in (0, 3, 1, 2, 2998, 2999):
            ip = "198.19.%d.%d" % (k >> 8, k & 255)
            self.assertEqual(sa.score(ip), DEFAULT if k % 3 == 0 else 9, ip)

    def test_redis_killed_mid_load_then_restarted(self):
        a, b = self.agent(), self.agent()
        sa, sb = self.scorer(a), self.scorer(b)
        self.decide("add", "198.51.100.50", "--score", "2")
        self.wait_scores([sa, sb], "198.51.100.50", 2)
        marks = [ag.log_mark() for ag in (a, b)]
        stop = threading.Event()
        errors = []
        counts = [0, 0]

        def load(i, agent):
            try:
                s = Scorer(agent)
                try:
                    while not stop.is_set():
                        v = s.score("198.51.100.%d" % (counts[i] % 200))
                        if not 0 <= v <= 100:
                            errors.append("score %r" % v)
                        counts[i] += 1
                finally:
                    s.close()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("%s: %r" % (agent.port, e))

        threads = [threading.Thread(target=load, args=(i, ag)) for i, ag in enumerate((a, b))]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            self.redis.kill()
            for ag, m in zip((a, b), marks):
                self.wait_log(ag, r"event=decisions_lost", since=m)
            # Down: the last known decisions keep serving.
            time.sleep(0.5)
            self.wait_scores([sa, sb], "198.51.100.50", 2, timeout=1.0)
            self.assertEqual(metrics(a)["decisions_connected"], 0)
            self.redis.start()
            # Decisions written right after the restart: none lost, on both agents.
            for i in range(20):
                self.decide("add", "192.0.2.%d" % (100 + i), "--score", "%d" % (20 + i))
            for i in range(20):
                self.wait_scores([sa, sb], "192.0.2.%d" % (100 + i), 20 + i, timeout=8.0)
            # Redis came back empty (no persistence in this test): the old decision is gone,
            # as it is from the truth.
            self.wait_scores([sa, sb], "198.51.100.50", DEFAULT)
            time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        self.assertEqual(errors, [])
        self.assertGreater(min(counts), 100, "load too light: %r" % counts)
        for ag, m in zip((a, b), marks):
            log = ag.log_since(m)
            self.assertEqual(len(re.findall(r"event=decisions_lost", log)), 1, log)
            self.assertEqual(len(re.findall(r"event=decisions_synced", log)), 1, log)
            self.assertEqual(metrics(ag)["decisions_connected"], 1)
            self.assertTrue(ag.alive())


class Hostile(DecisionsCase):
    def test_malformed_stream_entries_are_skipped_whole(self):
        a = self.agent()
        sa = self.scorer(a)
        mark = a.log_mark()
        huge = "x" * (1 << 20)
        bad = [
            ("op", "add", "prefix", "192.0.2.1", "score", "1", "expiry", "0"),  # not canonical
            ("op", "add", "prefix", "192.0.2.2/32", "score", "500", "expiry", "0"),
            ("op", "add", "prefix", "192.0.2.3/32", "score", "1"),  # no expiry
            ("op", "add", "prefix", "192.0.2.4/32", "score", "1", "expiry", "0", "reason", huge),
            ("op", "add", "prefix", huge, "score", "1", "expiry", "0"),
            ("op", "add", "prefix", "192.0.2.5/32", "prefix", "192.0.2.6/32", "score", "1",
             "expiry", "0"),
            ("op", "explode", "prefix", "192.0.2.7/32"),
            ("prefix", "192.0.2.8/32"),
            ("op", "add", "prefix", "192.0.2.9/32", "score", "1", "expiry", "0", "reason",
             "bad\nline"),
            ("op", "del"),
        ] + [tuple(x for i in range(40) for x in ("f%d" % i, "v"))]
        for f in bad:
            self.xadd(*f)
        self.xadd("op", "add", "prefix", "192.0.2.99/32", "score", "13", "expiry", "0")
        self.wait_scores([sa], "192.0.2.99", 13)
        for i in range(1, 10):
            self.assertEqual(sa.score("192.0.2.%d" % i), DEFAULT, "192.0.2.%d applied" % i)
        m = metrics(a)
        self.assertEqual(m["decisions_malformed_total"], len(bad))
        self.assertEqual(m["decisions"], 1)
        log = a.log_since(mark)
        self.assertEqual(len(re.findall(r"event=decision_malformed source=stream", log)),
                         len(bad), log)
        self.assertLess(len(log), 64 * 1024, "a huge entry was logged whole")

    def test_malformed_hash_fields_are_skipped_at_load(self):
        c = self.redis.client()
        c.command("HSET", HASH, "192.0.2.1/32", "5 0 ok", "192.0.2.2", "5 0 short form",
                  "192.0.2.3/32", "500 0 bad score", "192.0.2.4/32", "garbage",
                  "y" * 100000, "5 0 huge key", "192.0.2.5/32", "5 0 " + "r" * 100000)
        c.close()
        a = self.agent()
        sa = self.scorer(a)
        self.assertEqual(sa.score("192.0.2.1"), 5)
        for i in range(2, 6):
            self.assertEqual(sa.score("192.0.2.%d" % i), DEFAULT)
        m = metrics(a)
        self.assertEqual(m["decisions_malformed_total"], 5)
        self.assertEqual(m["decisions"], 1)

    def test_wrong_key_types_do_not_stop_the_agent(self):
        self.redis.command("SET", STREAM, "not a stream")
        a = self.agent(extra=["--decisions-wait", "0"])
        sa = self.scorer(a)
        self.wait_log(a, r"event=decisions_unreachable .*XINFO STREAM: WRONGTYPE")
        self.assertEqual(sa.score("192.0.2.1"), DEFAULT)
        self.redis.command("DEL", STREAM)
        self.decide("add", "192.0.2.1", "--score", "1")
        self.wait_scores([sa], "192.0.2.1", 1, timeout=10.0)

    def test_trimmed_stream_forces_a_resync(self):
        a = self.agent()
        sa = self.scorer(a)
        a.signal(19)  # SIGSTOP: the agent falls behind while the stream is trimmed
        try:
            c = self.redis.client()
            for i in range(50):
                p = "192.0.2.%d/32" % i
                c.command("MULTI")
                c.command("HSET", HASH, p, "9 0 r")
                c.command("XADD", STREAM, "MAXLEN", "5", "*", "op", "add", "prefix", p,
                          "score", "9", "expiry", "0")
                c.command("EXEC")
            c.close()
        finally:
            a.signal(18)  # SIGCONT
        # The agent was blocked in XREAD, so it may get the first entry that woke it; after
        # that, max-deleted-entry-id is past its position: it resyncs and sees all 50.
        for i in (0, 1, 25, 49):
            self.wait_scores([sa], "192.0.2.%d" % i, 9, timeout=5.0)

    def garbage_server(self, payload, mode="reply"):
        """A fake Redis on loopback: to every connection, sends `payload` (after the first
        command) and closes, or accepts and never answers (mode="silent")."""
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        srv.settimeout(0.2)
        stop = threading.Event()
        conns = []

        def serve():
            while not stop.is_set():
                try:
                    c, _ = srv.accept()
                except OSError:
                    continue
                conns.append(c)
                if mode == "silent":
                    continue
                try:
                    c.settimeout(2)
                    c.recv(65536)
                    c.sendall(payload)
                except OSError:
                    pass
                if mode == "reply":
                    c.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()

        def close():
            stop.set()
            t.join(5)
            for c in conns:
                c.close()
            srv.close()
        self.addCleanup(close)
        return "redis://127.0.0.1:%d/0" % srv.getsockname()[1]

    def test_garbage_redis_does_not_crash_the_agent(self):
        cases = [
            ("http", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "reply"),
            ("binary", bytes(range(256)) * 64, "reply"),
            ("huge-array", b"*2147483647\r\n", "keep"),
            ("huge-bulk", b"$2147483647\r\nabc", "keep"),
            ("deep", b"*1\r\n" * 100000, "keep"),
            ("ok-to-all", b"+OK\r\n" * 1000, "keep"),
            ("silent", b"", "silent"),
        ]
        for name, payload, mode in cases:
            with self.subTest(name):
                url = self.garbage_server(payload, mode)
                a = self.agent(extra=["--decisions-wait", "500"], url=url)
                s = Scorer(a)
                try:
                    self.assertEqual(s.score("192.0.2.1"), DEFAULT)
                    # Until two attempts failed (a silent server: 2 s reply timeout each).
                    deadline = time.monotonic() + 8.0
                    while (metrics(a)["decisions_disconnects_total"] < 2
                           and time.monotonic() < deadline):
                        self.assertEqual(s.score("192.0.2.1"), DEFAULT)
                        time.sleep(0.05)
                    self.assertTrue(a.alive(), a.log_text()[-2000:])
                    self.assertEqual(s.score("192.0.2.1"), DEFAULT)
                    m = metrics(a)
                    self.assertEqual(m["decisions_connected"], 0)
                    self.assertGreaterEqual(m["decisions_disconnects_total"], 2)
                    self.assertEqual(len(re.findall(r"event=decisions_unreachable",
                                                    a.log_text())), 1, a.log_text())
                finally:
                    s.close()
                self.assertEqual(a.stop(), 0, a.log_text()[-2000:])


class CommandLine(DecisionsCase):
    def test_spop_decide_bad_input(self):
        for args in (["add"], ["add", "300.1.2.3"], ["add", "1.2.3.4", "--score", "101"],
                     ["add", "1.2.3.4", "--ttl", "-1"], ["add", "1.2.3.4", "--reason", "r" * 65],
                     ["add", "1.2.3.4", "--reason", "a\tb"], ["ban", "1.2.3.4"],
                     ["del", "1.2.3.4", "extra"], ["add", "x" * 100000], ["list", "--score", "1"],
                     ["add", "1.2.3.4", "--bogus"]):
            with self.subTest(args=args):
                p = self.decide(*args, check=False)
                self.assertEqual(p.returncode, 2, p)
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
                self.assertTrue(p.stderr.startswith("spop-decide: "), p.stderr)
        self.assertEqual(self.redis.command("HLEN", HASH), 0)
        p = subprocess.run([DECIDE, "--redis", "redis://127.0.0.1:%d/0" % free_port(), "list"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)

    def test_spop_decide_writes_hash_and_stream_together(self):
        self.decide("add", "2001:DB8::1", "--score", "7", "--ttl", "0", "--reason", "a b")
        self.assertEqual(self.redis.command("HGET", HASH, "2001:db8::1/128"), b"7 0 a b")
        entries = self.redis.command("XRANGE", STREAM, "-", "+")
        self.assertEqual(len(entries), 1)
        f = entries[0][1]
        self.assertEqual(dict(zip(f[::2], f[1::2])),
                         {b"op": b"add", b"prefix": b"2001:db8::1/128", b"score": b"7",
                          b"expiry": b"0", b"reason": b"a b"})
        self.decide("del", "2001:db8::1")
        self.assertIsNone(self.redis.command("HGET", HASH, "2001:db8::1/128"))
        self.assertEqual(len(self.redis.command("XRANGE", STREAM, "-", "+")), 2)

    def test_agent_refuses_a_bad_url(self):
        for url in ("http://x", "redis://host:99999/0", "redis://h/notadb", ""):
            with self.subTest(url=url):
                p = subprocess.run([AGENT, "-p", str(free_port()), "--decisions", url],
                                   capture_output=True, text=True, timeout=10)
                self.assertEqual(p.returncode, 2)
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
                self.assertTrue(p.stderr.startswith("agent: "), p.stderr)


def main():
    global AGENT, DECIDE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", required=True)
    ap.add_argument("--decide", required=True)
    ap.add_argument("-k", dest="patterns", action="append", default=[])
    ns = ap.parse_args()
    AGENT = os.path.abspath(ns.agent)
    DECIDE = os.path.abspath(ns.decide)
    if redis_server_binary() is None:
        msg = "redis-server is not installed (apt-get install redis-server): decisions tests"
        if os.environ.get("CI") == "true":
            print("FAIL: " + msg + " cannot run under CI")
            print("0 passed, 1 failed")
            return 1
        print("SKIP: " + msg + " skipped")
        print("0 passed, 0 failed, 1 skipped")
        return SKIP
    harness.install_sigterm()
    suite = runner.select(runner.load([sys.modules[__name__]]), ns.patterns)
    return runner.run(suite, label="decisions")


if __name__ == "__main__":
    sys.exit(main())
