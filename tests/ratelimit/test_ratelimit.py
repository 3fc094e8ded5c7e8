#!/usr/bin/env python3
"""Shared rate limits (`check-rate`, docs/rate-limits.md) through the agent and a real Redis.

    python3 tests/ratelimit/test_ratelimit.py --agent build/agent/agent [--engine auto] [-k NAME]

Every test starts its own redis-server on a free loopback port (tests/pyspop/redis.py) and its
agents on free ports; fake Redis servers (silent, stalling, garbage) are Python threads on
loopback. Without redis-server the suite is skipped loudly (exit 77), and fails when CI=true.

  SharedCountTests   two agents on one Redis: counts are shared (the limit trips at the exact
                     count whichever agent sees the requests), pipelined concurrent requests
                     are all counted, check-client-ip and check-rate in one NOTIFY, SCRIPT
                     FLUSH (NOSCRIPT: resent with EVAL), addresses counted by their text;
  WindowTests        the window expires; limit/window from the message; keys expire in Redis;
  FailureTests       Redis killed mid-load: the fail value within the deadline, no SPOE error,
                     the agent healthy, counting resumes after a restart; fail closed;
  HostileRedisTests  a Redis that never answers, one that stalls after the script loads, and
                     ones that answer garbage: fail value in time, no crash;
  KeyTests           a huge key is refused and never reaches Redis; no key; no --rate-redis;
  CliTests           bad option values: one line, exit status 2;
  MetricsTests       the rate families on /metrics.

The last line is "N passed, N failed[, N skipped]".
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyspop import codec, runner  # noqa: E402
from pyspop import agent as harness  # noqa: E402
from pyspop.client import Conn  # noqa: E402
from pyspop.ports import free_port  # noqa: E402
from pyspop.redis import RedisServer, redis_server_binary  # noqa: E402

AGENT = None
ENGINE = "auto"
# The agent answers check-rate within 300 ms (3/4 of spop::server's deferred_timeout_ms, 400 ms,
# after which the engine would answer with its no-op fallback). What proves it: every ACK carries
# over_limit (the engine's fallback does not) and deferred_expired_total stays 0. The time the
# client sees also includes its own scheduling (threads, a loaded CI machine under ASan), so it
# is only held to HAProxy's usual `timeout processing` upper range.
DEADLINE = 1.0
# Counts are exact within a window; across a window boundary the previous window's share is an
# estimate (docs/rate-limits.md). Tests that compare exact counts use a week-long window, so
# that a boundary falls inside a test with a negligible probability (Redis's clock decides).
WEEK = 604800
SCOPE_TXN = 2


# ----------------------------------------------------------------------------------------------
# Client side
# ----------------------------------------------------------------------------------------------

def rate_msg(key, limit=None, window=None):
    args = [("key", codec.t_str(key) if isinstance(key, str) else key)]
    if limit is not None:
        args.append(("limit", codec.t_int64(limit)))
    if window is not None:
        args.append(("window", codec.t_int64(window)))
    return ("check-rate", args)


class Client(Conn):
    """A handshaken connection; rate() sends one NOTIFY and returns (vars, seconds)."""

    def __init__(self, agent, timeout=5.0):
        super().__init__(agent.addr, agent.family, timeout)
        self.handshake(codec.hello(engine_id="ratelimit-tests"), timeout)
        self.sid = 1

    def send_notify(self, messages):
        sid = self.sid
        self.sid += 2
        self.send(codec.notify(sid, 1, messages))
        return sid

    def read_ack(self, timeout=5.0):
        f = self.recv_frame(timeout)
        if f is None:
            raise AssertionError("the agent closed the connection")
        if f.type != codec.T_ACK:
            raise AssertionError("expected an ACK, got %r" % (f,))
        out = {}
        for a in codec.parse_actions(f.payload):
            if a[0] == "set":
                out[a[2]] = codec.plain(a[3])
                out["_scope_" + a[2]] = a[1]
        return f.sid, out

    def ask(self, messages, timeout=5.0):
        t0 = time.monotonic()
        sid = self.send_notify(messages)
        got, v = self.read_ack(timeout)
        if got != sid:
            raise AssertionError("ACK for stream %d, expected %d" % (got, sid))
        return v, time.monotonic() - t0

    def rate(self, key, limit=None, window=None):
        return self.ask([rate_msg(key, limit, window)])


def start_agent(redis_url=None, extra=(), metrics=False, workers=2):
    args = []
    if redis_url:
        args += ["--rate-redis", redis_url]
    args += list(extra)
    # 10 s to start, as the HAProxy tests allow: 5 s was once too short on a loaded machine.
    a = harness.Agent(AGENT, args, engine=ENGINE, workers=workers, metrics=metrics,
                      ready_timeout=10.0)
    return a.start()


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def metrics_text(agent):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % agent.metrics_port,
                                timeout=5) as r:
        return r.read().decode()


def metric(text, name, labels=None):
    full = "spop_agent_" + name
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(full):
            continue
        head, _, val = line.rpartition(" ")
        if head == full or (labels is not None and head == "%s{%s}" % (full, labels)):
            return float(val)
    return None


# ----------------------------------------------------------------------------------------------
# Fake Redis servers
# ----------------------------------------------------------------------------------------------

class FakeRedis:
    """A TCP server on loopback that misbehaves. mode:
        silent        accepts, reads, never answers
        script_stall  answers the first command (SCRIPT LOAD) with a valid SHA, then nothing
        garbage       answers every read with bytes that are not RESP
        ok            answers every read with +OK (valid RESP, wrong replies)
        huge_array    answers with "*2000000000" (an allocation bomb for a naive reader)
        wrong_shape   valid SHA, then replies of the wrong shape (an array of 3 strings)
        slow          valid SHA, then one valid reply {1, 0} every 100 ms, in order (an
                      overloaded but alive Redis)
    """

    def __init__(self, mode):
        self.mode = mode
        self.served = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop_ev = threading.Event()
        self.conns = []
        self.accepted = 0
        self.th = threading.Thread(target=self._serve, daemon=True)
        self.th.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self.stop_ev.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._client, args=(c,), daemon=True).start()

    def _client(self, c):
        c.settimeout(0.1)
        first = True
        while not self.stop_ev.is_set():
            try:
                data = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                if self.mode == "silent":
                    continue
                if self.mode in ("script_stall", "wrong_shape", "slow") and first:
                    c.sendall(b"$40\r\n" + b"a" * 40 + b"\r\n")
                elif self.mode == "script_stall":
                    pass
                elif self.mode == "slow":
                    for _ in range(data.count(b"EVALSHA")):
                        if self.stop_ev.wait(0.1):
                            return
                        c.sendall(b"*2\r\n:1\r\n:0\r\n")
                        self.served += 1
                elif self.mode == "wrong_shape":
                    n = data.count(b"EVALSHA")
                    c.sendall(b"*3\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n" * n)
                elif self.mode == "garbage":
                    c.sendall(b"\x00\xff garbage \x13\x37 not resp at all\r\n" * 3)
                elif self.mode == "ok":
                    c.sendall(b"+OK\r\n")
                elif self.mode == "huge_array":
                    c.sendall(b"*2000000000\r\n")
            except OSError:
                return
            first = False

    def close(self):
        self.stop_ev.set()
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.th.join(2)


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

def need_redis():
    if redis_server_binary() is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("redis-server is not installed (CI=true: required)")
        raise unittest.SkipTest("redis-server is not installed")


class RedisCase(unittest.TestCase):
    """A private Redis per test class; agents per test, stopped in tearDown."""

    @classmethod
    def setUpClass(cls):
        need_redis()
        cls.redis = RedisServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.redis.stop()

    def setUp(self):
        self.agents = []
        self.clients = []
        self.fakes = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        for f in self.fakes:
            f.close()
        for a in self.agents:
            if a.proc is not None:
                rc = a.stop()
                log = a.log_text()
                a.close()
                self.assertEqual(rc, 0, "agent exit status %r; log:\n%s" % (rc, log[-3000:]))
                self.assertNotIn("ERROR: AddressSanitizer", log)
                self.assertNotIn("runtime error:", log)

    def agent(self, url=None, extra=(), metrics=False):
        # --rate-window WEEK first: a test's own --rate-window comes later and wins.
        a = start_agent(url if url is not None else self.redis.url,
                        ["--rate-window", str(WEEK)] + list(extra), metrics)
        self.agents.append(a)
        return a

    def client(self, agent):
        c = Client(agent)
        self.clients.append(c)
        return c

    def fake(self, mode):
        f = FakeRedis(mode)
        self.fakes.append(f)
        return f

    def wait_up(self, agent):
        """Until the agent logged its Redis connection (it connects when it starts)."""
        ok = wait_for(lambda: "event=rate_redis_up" in agent.log_text(), 5)
        self.assertTrue(ok, "no event=rate_redis_up: %s" % agent.log_text()[-2000:])

    def key(self, name):
        return "%s-%d-%s" % (self.id().rsplit(".", 1)[-1], os.getpid(), name)


class SharedCountTests(RedisCase):
    def test_two_agents_share_one_count(self):
        a1, a2 = self.agent(), self.agent()
        self.wait_up(a1)
        self.wait_up(a2)
        c1, c2 = self.client(a1), self.client(a2)
        k = self.key("client")
        limit = 10
        rates, overs = [], []
        for i in range(limit + 5):
            v, took = (c1 if i % 2 == 0 else c2).rate(k, limit=limit, window=WEEK)
            self.assertIn("rate", v, "request %d got no count: %r" % (i, v))
            self.assertEqual(v["_scope_rate"], SCOPE_TXN)
            self.assertLess(took, DEADLINE)
            rates.append(v["rate"])
            overs.append(v["over_limit"])
        self.assertEqual(rates, list(range(1, limit + 6)), "one count across both agents")
        self.assertEqual(overs, [0] * limit + [1] * 5, "the limit trips after %d" % limit)
        # The other key is its own count.
        v, _ = c2.rate(self.key("other"), limit=limit, window=WEEK)
        self.assertEqual((v["rate"], v["over_limit"]), (1, 0))

    def test_pipelined_requests_from_many_connections_all_counted(self):
        a1, a2 = self.agent(), self.agent()
        self.wait_up(a1)
        self.wait_up(a2)
        k = self.key("burst")
        conns = [self.client(a) for a in (a1, a2) for _ in range(3)]
        per_conn, depth = 100, 20
        seen = []
        for c in conns:
            sent = got = 0
            while got < per_conn:
                while sent < per_conn and sent - got < depth:
                    c.send_notify([rate_msg(k, limit=1000000, window=WEEK)])
                    sent += 1
                _, v = c.read_ack()
                self.assertIn("rate", v)
                seen.append(v["rate"])
                got += 1
        total = per_conn * len(conns)
        self.assertEqual(sorted(seen), list(range(1, total + 1)), "every request counted once")
        keys = self.redis.command("KEYS", "spop:rate:{%s}:%d:*" % (k, WEEK * 1000))
        self.assertEqual(len(keys), 1, keys)
        self.assertEqual(int(self.redis.command("GET", keys[0])), total)

    def test_ip_score_and_rate_in_one_notify(self):
        a = self.agent(extra=["--default-score", "42"])
        self.wait_up(a)
        c = self.client(a)
        k = self.key("both")
        for i in (1, 2):
            v, _ = c.ask([codec.ip_msg("192.0.2.9"), rate_msg(k, limit=1, window=WEEK),
                          codec.ip_msg("192.0.2.10")])
            self.assertEqual(v.get("ip_score"), 42, v)
            self.assertEqual(v.get("rate"), i, v)
            self.assertEqual(v.get("over_limit"), 0 if i == 1 else 1, v)
        # check-client-ip alone is still answered at once, without Redis.
        v, _ = c.ask([codec.ip_msg("192.0.2.9")])
        self.assertEqual(v, {"ip_score": 42, "_scope_ip_score": codec.SCOPE_SESS})

    def test_script_flushed_falls_back_to_eval(self):
        a = self.agent(metrics=True)
        self.wait_up(a)
        c = self.client(a)
        k = self.key("flush")
        self.assertEqual(c.rate(k)[0].get("rate"), 1)
        self.redis.command("SCRIPT", "FLUSH")
        v, _ = c.rate(k)
        self.assertEqual(v.get("rate"), 2, "NOSCRIPT: sent again with EVAL, counted once")
        self.assertEqual(c.rate(k)[0].get("rate"), 3, "EVAL cached the script: EVALSHA again")
        m = metrics_text(a)
        self.assertEqual(metric(m, "rate_redis_noscript_total"), 1)
        self.assertEqual(metric(m, "rate_redis_bad_replies_total"), 0)

    def test_address_keys_use_their_text_form(self):
        a = self.agent()
        self.wait_up(a)
        c = self.client(a)
        v1, _ = c.ask([("check-rate", [("key", codec.t_ip("198.51.100.77"))])])
        v2, _ = c.ask([("check-rate", [("", codec.t_str("198.51.100.77"))])])
        self.assertEqual((v1["rate"], v2["rate"]), (1, 2), "src and a header share a count")
        keys = self.redis.command("KEYS", "spop:rate:{198.51.100.77}:%d:*" % (WEEK * 1000))
        self.assertEqual(len(keys), 1, keys)


class WindowTests(RedisCase):
    def test_window_expires(self):
        a = self.agent(extra=["--rate-limit", "3", "--rate-window", "1"])
        self.wait_up(a)
        c = self.client(a)
        k = self.key("w")
        overs = [c.rate(k)[0]["over_limit"] for _ in range(5)]
        self.assertEqual(overs, [0, 0, 0, 1, 1])
        # Two windows later the previous window is empty too.
        time.sleep(2.1)
        v, _ = c.rate(k)
        self.assertEqual((v["rate"], v["over_limit"]), (1, 0))

    def test_counters_expire_in_redis(self):
        a = self.agent()
        self.wait_up(a)
        c = self.client(a)
        k = self.key("ttl")
        c.rate(k, limit=5, window=30)
        keys = self.redis.command("KEYS", "spop:rate:{%s}:*" % k)
        self.assertEqual(len(keys), 1)
        ttl = self.redis.command("PTTL", keys[0])
        self.assertGreater(ttl, 0, "a counter without a TTL would stay forever")
        self.assertLessEqual(ttl, 60000)

    def test_message_limit_overrides_default(self):
        a = self.agent(extra=["--rate-limit", "1000"])
        self.wait_up(a)
        c = self.client(a)
        k = self.key("m")
        overs = [c.rate(k, limit=2)[0]["over_limit"] for _ in range(3)]
        self.assertEqual(overs, [0, 0, 1])
        # A bad limit falls back to --rate-limit (1000) and is counted.
        v, _ = c.ask([("check-rate", [("key", codec.t_str(k)), ("limit", codec.t_str("x"))])])
        self.assertEqual((v["rate"], v["over_limit"]), (4, 0))


class FailureTests(RedisCase):
    def setUp(self):
        super().setUp()
        # A Redis of its own: these tests kill it.
        self.own = RedisServer().start()

    def tearDown(self):
        super().tearDown()
        self.own.stop()

    def test_redis_killed_mid_load_then_restarted(self):
        a = self.agent(self.own.url, metrics=True)
        self.wait_up(a)
        conns = [self.client(a) for _ in range(4)]
        k = self.key("kill")
        stop = threading.Event()
        results = []  # (seconds, vars) per answer
        errors = []

        def load(c):
            try:
                while not stop.is_set():
                    v, took = c.rate(k, limit=1000000, window=60)
                    results.append((took, v))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=load, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        time.sleep(0.5)
        self.own.kill()
        down_at = len(results)
        time.sleep(1.0)
        self.own.start()
        back = wait_for(lambda: any("rate" in v for _, v in results[down_at + 50:]), 8)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [], "an SPOE error or a lost ACK under load")
        self.assertTrue(back, "counting did not resume after Redis came back")
        self.assertGreater(len(results), 200)
        slow = [took for took, _ in results if took >= DEADLINE]
        self.assertEqual(slow, [], "answers past the deadline")
        self.assertEqual([v for _, v in results if "over_limit" not in v], [],
                         "answers without over_limit: the engine's fallback fired")
        fails = [v for _, v in results if "rate" not in v]
        self.assertGreater(len(fails), 0, "no fail-value answer while Redis was down")
        for v in fails:
            self.assertEqual(v.get("over_limit"), 0, "fail open: over_limit=0")
        self.assertTrue(a.alive())
        log = a.log_text()
        self.assertEqual(log.count("event=rate_redis_down"), 1, "one line per state change")
        self.assertEqual(log.count("event=rate_redis_up"), 2)
        m = metrics_text(a)
        self.assertEqual(metric(m, "rate_redis_up"), 1)
        self.assertGreater(metric(m, "rate_fail_answers_total",
                                  'reason="down",policy="open"') or 0, 0)
        # The engine's fallback never had to fire.
        self.assertEqual(metric(m, "deferred_expired_total") or 0, 0, m)

    def test_password_and_database(self):
        self.own.command("CONFIG", "SET", "requirepass", "s3cret")
        url = "redis://:s3cret@127.0.0.1:%d/3" % self.own.port
        a = self.agent(url)
        self.wait_up(a)
        self.assertNotIn("s3cret", a.log_text(), "the password must not be logged")
        c = self.client(a)
        k = self.key("db3")
        v, _ = c.rate(k)
        self.assertEqual(v.get("rate"), 1)
        with self.own.client() as rc:
            rc.command("AUTH", "s3cret")
            rc.command("SELECT", "3")
            self.assertEqual(len(rc.command("KEYS", "spop:rate:{%s}:*" % k)), 1)
        bad = self.agent("redis://:wrong@127.0.0.1:%d/3" % self.own.port)
        ok = wait_for(lambda: "event=rate_redis_down" in bad.log_text(), 5)
        self.assertTrue(ok)
        self.assertIn("AUTH", bad.log_text())
        v, _ = self.client(bad).rate(k)
        self.assertEqual(v, {"over_limit": 0, "_scope_over_limit": SCOPE_TXN})

    def test_fail_closed(self):
        a = self.agent(self.own.url, extra=["--rate-fail", "closed"])
        self.wait_up(a)
        self.own.kill()
        c = self.client(a)
        v, took = c.rate(self.key("closed"))
        self.assertEqual(v.get("over_limit"), 1)
        self.assertNotIn("rate", v)
        self.assertLess(took, DEADLINE)


class HostileRedisTests(RedisCase):
    def check_fail_value_in_time(self, mode, n=30):
        f = self.fake(mode)
        a = self.agent(f.url, metrics=True)
        c = self.client(a)
        c2 = self.client(a)
        for i in range(n):
            v, took = c.rate(self.key("h%d" % i))
            self.assertLess(took, DEADLINE, "%s: answer %d took %.3f s" % (mode, i, took))
            self.assertNotIn("rate", v)
            self.assertEqual(v.get("over_limit"), 0)
        # Healthy: check-client-ip is answered, the process is alive.
        v, _ = c2.ask([codec.ip_msg("192.0.2.1")])
        self.assertIn("ip_score", v)
        self.assertTrue(a.alive())
        self.assertEqual(metric(metrics_text(a), "deferred_expired_total"), 0,
                         "the engine's fallback fired: the Redis thread missed a deadline")
        return a, f

    def test_redis_that_never_answers(self):
        a, f = self.check_fail_value_in_time("silent", n=10)
        self.assertGreaterEqual(f.accepted, 1)
        self.assertIn("SCRIPT LOAD", a.log_text())

    def test_redis_that_stalls_after_loading_the_script(self):
        a, _ = self.check_fail_value_in_time("script_stall", n=10)
        self.assertIn("no reply within", a.log_text())
        m = metrics_text(a)
        self.assertGreater(metric(m, "rate_fail_answers_total",
                                  'reason="timeout",policy="open"') or 0, 0)

    def test_overloaded_redis_times_out_requests_not_the_connection(self):
        f = self.fake("slow")
        a = self.agent(f.url, metrics=True)
        self.wait_up(a)
        c = self.client(a)
        t0 = time.monotonic()
        sids = [c.send_notify([rate_msg(self.key("s%d" % i))]) for i in range(6)]
        got = {}
        while len(got) < len(sids):
            sid, v = c.read_ack()
            got[sid] = (v, time.monotonic() - t0)
        for sid in sids:
            self.assertLess(got[sid][1], DEADLINE, "answered within the deadline")
            self.assertIn("over_limit", got[sid][0], "answered by the agent, not the fallback")
        answers = [got[sid][0] for sid in sids]
        # Replies come 100, 200, 300... ms after the requests: the first is counted, the last
        # ones run out of budget (300 ms) and get the fail value (those in between depend on
        # the machine's load).
        self.assertEqual(answers[0].get("rate"), 1, answers)
        for v in answers[4:]:
            self.assertNotIn("rate", v)
            self.assertEqual(v.get("over_limit"), 0)
        # Replies kept coming, so the connection stayed: no state change, late replies dropped.
        wait_for(lambda: f.served >= 6, 3)
        time.sleep(0.2)
        log = a.log_text()
        self.assertNotIn("event=rate_redis_down", log)
        m = metrics_text(a)
        self.assertGreaterEqual(metric(m, "rate_redis_late_replies_total"), 2)
        self.assertEqual(metric(m, "rate_redis_disconnects_total"), 0)
        v, _ = c.rate(self.key("after"))
        self.assertEqual(v.get("rate"), 1, "counting goes on after the slow spell")

    def test_redis_answering_garbage(self):
        for mode in ("garbage", "ok", "huge_array", "wrong_shape"):
            with self.subTest(mode=mode):
                self.check_fail_value_in_time(mode)

    def test_wrong_shape_counts_bad_replies(self):
        a, _ = self.check_fail_value_in_time("wrong_shape", n=5)
        m = metrics_text(a)
        self.assertGreaterEqual(metric(m, "rate_redis_bad_replies_total"), 5)
        self.assertGreaterEqual(metric(m, "rate_fail_answers_total",
                                       'reason="error",policy="open"'), 5)


class KeyTests(RedisCase):
    def test_huge_key_refused_never_sent(self):
        a = self.agent(metrics=True)
        self.wait_up(a)
        c = self.client(a)
        before = self.redis.command("INFO", "commandstats").count(b"evalsha")
        huge = "k" * 257
        v, _ = c.rate(huge)
        self.assertEqual(v.get("over_limit"), 0)
        self.assertNotIn("rate", v)
        self.assertEqual(self.redis.command("KEYS", "spop:rate:{kkkk*"), [])
        # 256 bytes are counted.
        v, _ = c.rate("k" * 256)
        self.assertEqual(v.get("rate"), 1)
        m = metrics_text(a)
        self.assertEqual(metric(m, "rate_fail_answers_total",
                                'reason="key_too_long",policy="open"'), 1)
        self.assertEqual(metric(m, "rate_redis_commands_total"), 1)
        del before

    def test_missing_key_gets_no_variable(self):
        a = self.agent()
        self.wait_up(a)
        c = self.client(a)
        v, _ = c.ask([("check-rate", [("key", codec.t_null())])])
        self.assertEqual(v, {})

    def test_without_rate_redis(self):
        a = start_agent(None)
        self.agents.append(a)
        # Connections land on both workers: still one warning for the process.
        for c in [self.client(a) for _ in range(4)]:
            for _ in range(3):
                v, _ = c.rate("k")
                self.assertEqual(v.get("over_limit"), 0)
                self.assertNotIn("rate", v)
        self.assertEqual(a.log_text().count("event=rate_unconfigured"), 1, "one warning")


class CliTests(unittest.TestCase):
    def test_bad_values(self):
        cases = [
            (["--rate-limit", "0"], "--rate-limit"),
            (["--rate-limit", "x"], "--rate-limit"),
            (["--rate-window", "0"], "--rate-window"),
            (["--rate-window", "604801"], "--rate-window"),
            (["--rate-fail", "maybe"], "--rate-fail"),
            (["--rate-redis", "http://x"], "--rate-redis"),
            (["--rate-redis", "redis://h:99999"], "--rate-redis"),
            (["--rate-redis", ""], "--rate-redis"),
        ]
        for args, what in cases:
            with self.subTest(args=args):
                rc, out, err = harness.run_agent(AGENT, ["-p", str(free_port())] + args)
                self.assertEqual(rc, 2, err)
                lines = err.strip().splitlines()
                self.assertEqual(len(lines), 1, err)
                self.assertTrue(lines[0].startswith("agent: "), err)
                self.assertIn(what, lines[0])

    def test_help_lists_the_options(self):
        rc, out, _ = harness.run_agent(AGENT, ["--help"])
        self.assertEqual(rc, 0)
        for o in ("--rate-redis", "--rate-limit", "--rate-window", "--rate-fail"):
            self.assertIn(o, out)


class MetricsTests(RedisCase):
    def test_families(self):
        a = self.agent(metrics=True)
        self.wait_up(a)
        c = self.client(a)
        k = self.key("m")
        for _ in range(4):
            c.rate(k, limit=2)
        m = metrics_text(a)
        self.assertEqual(metric(m, "rate_messages_total"), 4)
        self.assertEqual(metric(m, "rate_answers_total", 'result="under"'), 2)
        self.assertEqual(metric(m, "rate_answers_total", 'result="over"'), 2)
        self.assertEqual(metric(m, "rate_redis_up"), 1)
        self.assertEqual(metric(m, "rate_redis_commands_total"), 4)
        self.assertGreaterEqual(metric(m, "rate_redis_batches_total"), 1)
        self.assertEqual(metric(m, "rate_latency_seconds_count"), 4)
        self.assertEqual(metric(m, "rate_fail_answers_total", 'reason="down",policy="open"'), 0)


def main():
    global AGENT, ENGINE
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("-k", action="append", default=[])
    o = ap.parse_args()
    AGENT = os.path.abspath(o.agent)
    ENGINE = o.engine
    harness.install_sigterm()
    if redis_server_binary() is None:
        if os.environ.get("CI") == "true":
            print("redis-server is not installed: CI=true requires it")
            print("0 passed, 1 failed")
            return 1
        print("SKIP: redis-server is not installed (apt-get install redis-server); "
              "the shared rate limit tests did not run")
        return 77
    suite = runner.select(runner.load([sys.modules[__name__]]), o.k)
    return runner.run(suite, "ratelimit")


if __name__ == "__main__":
    sys.exit(main())
