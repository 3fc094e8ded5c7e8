#!/usr/bin/env python3
"""Real HAProxy, two agents, one Redis: a client banned with spop-decide gets 403 through either
agent, and 200 again once the decision is deleted.

    python3 tests/decisions/test_haproxy_decisions.py --agent build/agent/agent \
        --decide build/agent/spop-decide [--haproxy /usr/sbin/haproxy | --series 3.4]

The HAProxy side is tests/haproxy/test_scaleout.py's (two agents as servers of one SPOE backend,
`option spop-check`, 2.6-3.0 or 3.1+ configuration from `haproxy -v`) with one rule added:
`http-request deny deny_status 403 if { var(sess.iprep.ip_score) -m int lt 20 }`. Agents run
with --default-score 50 and --decisions on a private redis-server. "Either agent": each agent in
turn is stopped (HAProxy marks it DOWN) and the ban must hold through the other one.
Exit status: 0 passed, 1 failed, 77 skipped (no haproxy, or no redis-server outside CI).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "haproxy"))

import test_haproxy as th  # noqa: E402
import test_scaleout as ts  # noqa: E402
from pyspop.redis import RedisServer, redis_server_binary  # noqa: E402

# Doubled braces: test_scaleout's template goes through str.format().
DENY = "    http-request deny deny_status 403 if {{ var(sess.iprep.ip_score) -m int lt 20 }}\n"


def status_of(port):
    try:
        return th.http_get(port)[0]
    except OSError as e:
        return "error: %s" % e


def wait_status(port, want, timeout=10.0):
    got = th.wait_until(lambda: status_of(port) == want, timeout=timeout, interval=0.05,
                        max_tries=1000)
    th.check(got, "HTTP status %r, expected %r within %.0f s" % (status_of(port), want, timeout))


def all_status(port, want, n=20):
    got = [status_of(port) for _ in range(n)]
    th.check(all(g == want for g in got), "statuses %r, expected all %r" % (got, want))


def run(args, haproxy_path, generation):
    redis = RedisServer().start()
    tmp = tempfile.mkdtemp(prefix="spop-decisions-haproxy-")
    ts.HAPROXY_CFG = ts.HAPROXY_CFG.replace(
        "    http-request return status 200", DENY + "    http-request return status 200")
    env = ts.Env(args.agent, haproxy_path, generation, tmp,
                 ["--decisions", redis.url, "--default-score", "50"], processing="1s")
    decide = [args.decide, "--redis", redis.url]
    try:
        env.start()
        port = env.port
        wait_status(port, 200)
        subprocess.run(decide + ["add", "127.0.0.1", "--score", "0", "--reason", "test"],
                       check=True, capture_output=True, timeout=20)
        wait_status(port, 403, timeout=5.0)
        all_status(port, 403)
        for down, up in ((env.agents[0], env.agents[1]), (env.agents[1], env.agents[0])):
            before = up.metric('spop_agent_lookups_total{outcome="decision"}') or 0
            down.stop()
            env.wait_status(down.name, "DOWN")
            all_status(port, 403)
            after = up.metric('spop_agent_lookups_total{outcome="decision"}') or 0
            th.check(after >= before + 20,
                     "%s answered %d decisions for 20 requests" % (up.name, after - before))
            print("  403 through %s alone: ok (%d decision answers)" % (up.name, after - before))
            down.start()
            env.wait_status(down.name, "UP")
        subprocess.run(decide + ["del", "127.0.0.1"], check=True, capture_output=True,
                       timeout=20)
        wait_status(port, 200, timeout=5.0)
        all_status(port, 200)
        return True
    except th.TestFailure as e:
        print("FAIL: %s\n--- haproxy output (tail) ---\n%s" % (e, env.haproxy.log_tail()))
        for a in env.agents:
            print("--- %s output (tail) ---\n%s" % (a.name, a.log_tail()))
        return False
    finally:
        env.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", required=True)
    ap.add_argument("--decide", required=True)
    ap.add_argument("--haproxy", default="haproxy")
    ap.add_argument("--series", metavar="X.Y", help="HAProxy X.Y from scripts/haproxy-versions")
    ap.add_argument("--haproxy-versions", metavar="SCRIPT",
                    default=os.path.join(th.REPO, "scripts", "haproxy-versions"))
    args = ap.parse_args()
    args.agent = os.path.abspath(args.agent)
    args.decide = os.path.abspath(args.decide)
    in_ci = os.environ.get("CI", "").lower() == "true"
    if args.series:
        res = subprocess.run([sys.executable, args.haproxy_versions, "--path", args.series],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=60)
        if res.returncode != 0 or not res.stdout.strip():
            print("%s: HAProxy %s is not available (scripts/haproxy-versions %s): the "
                  "decisions HAProxy test did NOT run" % ("FAIL" if in_ci else "SKIP",
                                                         args.series, args.series))
            print("0 passed, 1 failed" if in_ci else "0 passed, 0 failed, 1 skipped")
            return 1 if in_ci else th.SKIP
        args.haproxy = res.stdout.strip()
    haproxy_path = shutil.which(args.haproxy) or (
        args.haproxy if os.access(args.haproxy, os.X_OK) else None)
    if haproxy_path is None:
        print("SKIP: haproxy not found (%s)" % args.haproxy)
        print("0 passed, 0 failed, 1 skipped")
        return th.SKIP
    if redis_server_binary() is None:
        print("%s: redis-server is not installed" % ("FAIL" if in_ci else "SKIP"))
        print("0 passed, 1 failed" if in_ci else "0 passed, 0 failed, 1 skipped")
        return 1 if in_ci else th.SKIP
    th.install_sigterm()
    version = subprocess.run([haproxy_path, "-v"], capture_output=True, text=True, timeout=30)
    version_line = version.stdout.splitlines()[0] if version.stdout else ""
    print("%s  [%s]" % (version_line, haproxy_path))
    series = th.parse_series(version_line)
    if series is None:
        print("FAIL: %s -v says %r" % (haproxy_path, version_line))
        print("0 passed, 1 failed")
        return 1
    t0 = time.monotonic()
    ok = run(args, haproxy_path, th.Generation(series))
    print("banned client through either agent: %s (%.1f s)" % ("ok" if ok else "FAILED",
                                                                time.monotonic() - t0))
    print("1 passed, 0 failed" if ok else "0 passed, 1 failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
