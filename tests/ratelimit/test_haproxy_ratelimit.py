#!/usr/bin/env python3
"""Shared rate limits behind a real HAProxy: two agents, one Redis, 429 past the limit.

    python3 tests/ratelimit/test_haproxy_ratelimit.py --agent build/agent/agent \
        [--haproxy /usr/sbin/haproxy | --series 3.4]

HAProxy's frontend sends `check-rate` (key=src, limit 5, a week-long window: exact counts) on
every request to a backend of two agents (roundrobin: on 3.1+ each message is balanced on its
own, so both agents count), both on one redis-server started here. Checks:

  limit        requests 1-5 answer 200 with rate=1..5, then 429: the count is shared;
  redis-down   Redis killed: requests still answer 200 (fail open) with no SPOE error, in
               time; after a restart the count starts again.

Skipped loudly (77) without redis-server or the HAProxy asked for; with CI=true a missing
series or redis-server fails. The last line is "N passed, N failed[, N skipped]".
"""

import argparse
import os
import re
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyspop import haproxy as hp  # noqa: E402
from pyspop import runner  # noqa: E402
from pyspop.agent import Agent  # noqa: E402
from pyspop.redis import RedisServer, redis_server_binary  # noqa: E402

AGENT = None
BINARY = None
LIMIT = 5
BODY = "rate=%[var(txn.iprep.rate)] over=%[var(txn.iprep.over_limit)] error=%[var(txn.iprep.error)]"
BODY_RE = re.compile(r"^rate=(?P<rate>\S*) over=(?P<over>\S*) error=(?P<error>\S*)$")


def metric(agent, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % agent.metrics_port,
                                timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("spop_agent_" + name + " "):
                return float(line.split()[-1])
    return None


class HAProxyRateLimitTests(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.agents = [Agent(AGENT, ["--rate-redis", self.redis.url], metrics=True).start()
                       for _ in range(2)]
        for a in self.agents:
            ok = hp.wait_until(lambda a=a: "event=rate_redis_up" in a.log_text(), timeout=5)
            self.assertTrue(ok, a.log_text())
        self.h = hp.HAProxy(BINARY)
        self.port = self.h.start_scoring(
            [a.port for a in self.agents], processing="1s", balance="roundrobin",
            message="check-rate", args="key=src limit=int(%d) window=int(604800)" % LIMIT,
            frontend_extra="    http-request deny deny_status 429 if "
                           "{ var(txn.iprep.over_limit) -m int eq 1 }\n",
            body_format=BODY)
        for name in ("agent1", "agent2"):
            self.h.wait_server("iprep-backend", name, "UP")

    def tearDown(self):
        self.h.stop(remove=True)
        for a in self.agents:
            rc = a.stop()
            log = a.log_text()
            a.close()
            self.assertEqual(rc, 0, log[-2000:])
        self.redis.stop()

    def get(self):
        t0 = time.monotonic()
        status, _, body = hp.http_get(self.port)
        return status, body, time.monotonic() - t0

    def test_limit_is_shared_and_answers_429(self):
        got = [self.get() for _ in range(LIMIT + 3)]
        statuses = [s for s, _, _ in got]
        self.assertEqual(statuses, [200] * LIMIT + [429] * 3, got)
        rates = [BODY_RE.match(b).group("rate") for _, b, _ in got[:LIMIT]]
        self.assertEqual(rates, [str(i) for i in range(1, LIMIT + 1)], got)
        counted = [metric(a, "rate_messages_total") for a in self.agents]
        self.assertEqual(sum(counted), LIMIT + 3, counted)
        if BINARY.gen.mux:  # 3.1+ balances every message: both agents took part
            self.assertTrue(all(c > 0 for c in counted), counted)
        print("    HAProxy %s: 200 x %d then 429, messages per agent %s"
              % (BINARY.gen, LIMIT, counted))

    def test_redis_down_fails_open_without_spoe_error(self):
        self.assertEqual(self.get()[0], 200)
        self.redis.kill()
        for _ in range(10):
            status, body, took = self.get()
            self.assertEqual(status, 200, body)
            m = BODY_RE.match(body)
            self.assertIsNotNone(m, body)
            self.assertEqual((m.group("rate"), m.group("over"), m.group("error")), ("", "0", ""),
                             "fail open, no SPOE error: %r" % body)
            self.assertLess(took, 1.0)
        self.redis.start()
        back = hp.wait_until(lambda: BODY_RE.match(self.get()[1]).group("rate") != "",
                             timeout=10, interval=0.2)
        self.assertTrue(back, "counting did not resume after Redis came back")
        for a in self.agents:
            self.assertEqual(metric(a, "deferred_expired_total"), 0)


def main():
    global AGENT, BINARY
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--haproxy")
    ap.add_argument("--series")
    ap.add_argument("-k", action="append", default=[])
    o = ap.parse_args()
    AGENT = os.path.abspath(o.agent)
    if redis_server_binary() is None:
        if hp.in_ci():
            print("redis-server is not installed: CI=true requires it\n0 passed, 1 failed")
            return 1
        print("SKIP: redis-server is not installed; the HAProxy rate limit tests did not run")
        return 77
    try:
        BINARY = hp.resolve(series=o.series, path=o.haproxy)
    except hp.Unavailable as e:
        return hp.unavailable_exit(e, "the HAProxy rate limit tests")
    print("HAProxy: %s" % BINARY)
    suite = runner.select(runner.load([sys.modules[__name__]]), o.k)
    return runner.run(suite, "ratelimit-haproxy")


if __name__ == "__main__":
    sys.exit(main())
