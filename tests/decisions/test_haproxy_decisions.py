#!/usr/bin/env python3
"""Real HAProxy, two agents, one Redis: a client banned with spop-decide gets 403 through either
agent, and 200 again once the decision is deleted.

    python3 tests/decisions/test_haproxy_decisions.py --agent build/agent/agent \
        --decide build/agent/spop-decide [--haproxy /usr/sbin/haproxy | --series 3.4]

The HAProxy side is tests/pyspop/haproxy.py's start_scoring() (the configuration generation from
`haproxy -v`: 2.6-3.0 or 3.1+) set up as tests/haproxy/test_scaleout.py sets it up: two agents
(-n 1, --metrics) as servers agent1 and agent2 of one SPOE backend, `option spop-check`, `check
inter 500ms fall 2 rise 2`, `retries 3` with `option redispatch 1`, `balance leastconn` on 3.1+
and `roundrobin` on 2.6-3.0, `timeout processing` 1s, with one rule added:
`http-request deny deny_status 403 if { var(sess.iprep.ip_score) -m int lt 20 }`. The agents run
with --default-score 50 and --decisions on a private redis-server (tests/pyspop/redis.py).

The test: 200 with no decision; `spop-decide add 127.0.0.1 --score 0` makes it 403 (20 requests
in a row); "either agent": each agent in turn is stopped (HAProxy marks it DOWN), 20 requests
must still get 403 and the other agent's decision counter must grow by at least 20; after
`spop-decide del 127.0.0.1`, 200 again. Everything on loopback, every wait bounded, every process
stopped.

Exit status: 0 passed, 1 failed, 77 skipped (no haproxy; no redis-server or a missing --series
outside CI: with CI=true those fail). Last line: "N passed, N failed".
"""

import argparse
import http.client
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pyspop import haproxy as hp  # noqa: E402
from pyspop import runner  # noqa: E402
from pyspop.agent import Agent, install_sigterm  # noqa: E402
from pyspop.redis import RedisServer, redis_server_binary  # noqa: E402

BACKEND = "iprep-backend"
SERVERS = ("agent1", "agent2")
DENY = "    http-request deny deny_status 403 if { var(sess.iprep.ip_score) -m int lt 20 }\n"
REDISPATCH = "    retries 3\n    option redispatch 1\n"
DECISIONS = 'spop_agent_lookups_total{outcome="decision"}'
CLIENT = "127.0.0.1"  # what HAProxy sees as src: the test's own loopback connections


def status_of(port):
    try:
        return hp.http_get(port)[0]
    except (OSError, http.client.HTTPException) as e:
        return "error: %s" % e


class BannedThroughEitherAgent(unittest.TestCase):
    """Set by main(): the binaries and options."""

    agent_path = None
    decide_path = None
    binary = None
    agent_args = []
    keep = False

    def setUp(self):
        self.redis = RedisServer()
        self.addCleanup(self.redis.stop)
        self.agents = [Agent(self.agent_path, ["--decisions", self.redis.url,
                                               "--default-score", "50"] + self.agent_args,
                             workers=1, metrics=True, port="keep", name=name,
                             ready_timeout=10.0)
                       for name in SERVERS]
        self.haproxy = hp.HAProxy(self.binary)
        self.addCleanup(self.stop_all)

    def stop_all(self):
        self.haproxy.stop(remove=not self.keep)
        for a in self.agents:
            a.stop()
            a.close()
        if self.keep:
            print("kept %s" % self.haproxy.dir)

    def decide(self, *args):
        cmd = [self.decide_path, "--redis", self.redis.url] + list(args)
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=20)
        self.assertEqual(res.returncode, 0, "%s exited with %d: %s"
                         % (" ".join(cmd), res.returncode, (res.stdout + res.stderr).strip()))

    def wait_status(self, want, timeout=10.0):
        got = hp.wait_until(lambda: status_of(self.port) == want, timeout=timeout,
                            interval=0.05, max_tries=1000)
        self.assertTrue(got, "HTTP status %r, expected %r within %.0f s"
                        % (status_of(self.port), want, timeout))

    def all_status(self, want, n=20):
        got = [status_of(self.port) for _ in range(n)]
        self.assertTrue(all(g == want for g in got), "statuses %r, expected all %r" % (got, want))

    def start(self):
        self.redis.start()
        for a in self.agents:
            a.start()
        gen = self.haproxy.gen
        self.port = self.haproxy.start_scoring(
            [a.port for a in self.agents], processing="1s",
            balance="leastconn" if gen.mux else "roundrobin",
            check="check inter 500ms fall 2 rise 2", backend_extra=REDISPATCH,
            frontend_extra=DENY)
        for name in SERVERS:
            self.haproxy.wait_server(BACKEND, name, "UP")

    def scenario(self):
        self.start()
        self.wait_status(200)
        self.decide("add", CLIENT, "--score", "0", "--reason", "test")
        self.wait_status(403, timeout=5.0)
        self.all_status(403)
        print("\n    banned: 403 through both agents", flush=True)
        for down, up in ((self.agents[0], self.agents[1]), (self.agents[1], self.agents[0])):
            before = hp.metric(up, DECISIONS)
            self.assertIsNotNone(before, "%s: no %s in its /metrics" % (up.name, DECISIONS))
            down.stop()
            self.haproxy.wait_server(BACKEND, down.name, "DOWN")
            self.all_status(403)
            after = hp.metric(up, DECISIONS)
            self.assertIsNotNone(after, "%s: no %s in its /metrics" % (up.name, DECISIONS))
            self.assertGreaterEqual(after, before + 20, "%s answered %d decisions for 20 requests"
                                    % (up.name, after - before))
            print("    403 through %s alone: ok (%d decision answers)" % (up.name, after - before),
                  flush=True)
            down.start()
            self.haproxy.wait_server(BACKEND, down.name, "UP")
        self.decide("del", CLIENT)
        self.wait_status(200, timeout=5.0)
        self.all_status(200)
        print("    deleted: 200 again", flush=True)

    def test_banned_through_either_agent(self):
        try:
            self.scenario()
        except BaseException:
            print("\n--- haproxy output (tail) ---\n%s" % self.haproxy.log_tail(), flush=True)
            for a in self.agents:
                print("--- %s output (tail) ---\n%s" % (a.name, a.log_tail()), flush=True)
            print("--- redis-server log (tail) ---\n%s" % self.redis.log_tail(), flush=True)
            raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", required=True, help="path to the agent binary")
    ap.add_argument("--decide", required=True, help="path to spop-decide")
    hp.add_arguments(ap)
    args = ap.parse_args()
    binary, status = hp.binary_for_main(args, "the decisions HAProxy test")
    if binary is None:
        return status
    for path in (args.agent, args.decide):
        if not os.access(path, os.X_OK):
            print("FAIL: not found or not executable: %s\n0 passed, 1 failed" % path)
            return 1
    if redis_server_binary() is None:
        fail = hp.in_ci()
        banner = "#" * 78
        print("%s\n%s: redis-server is not installed (apt-get install redis-server)\n"
              "the decisions HAProxy test did NOT run.\n%s"
              % (banner, "FAIL" if fail else "SKIP", banner))
        print("0 passed, 1 failed" if fail else "0 passed, 0 failed", flush=True)
        return 1 if fail else hp.SKIP

    install_sigterm()
    print(binary, flush=True)
    BannedThroughEitherAgent.agent_path = os.path.abspath(args.agent)
    BannedThroughEitherAgent.decide_path = os.path.abspath(args.decide)
    BannedThroughEitherAgent.binary = binary
    BannedThroughEitherAgent.agent_args = list(args.agent_arg)
    BannedThroughEitherAgent.keep = args.keep
    suite = runner.select(runner.load([sys.modules[__name__]]), args.patterns)
    return runner.run(suite, label="HAProxy %s decisions" % binary.gen)


if __name__ == "__main__":
    sys.exit(main())
