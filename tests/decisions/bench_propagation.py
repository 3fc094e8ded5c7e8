#!/usr/bin/env python3
"""Decision propagation: from a writer's add (MULTI HSET+XADD EXEC, what spop-decide sends) to the
decision being applied on each of two agents, with N decisions already loaded.

    python3 tests/decisions/bench_propagation.py --agent build/agent/agent \
        [--loaded 10000] [--adds 300] [--gap-ms 20]

A private redis-server on a free loopback port; two agents (-n 2, --decisions). The clock starts
just before the writer sends the transaction and stops, per agent, at the first ACK that carries
the new score (each agent is polled in turn over its own SPOP connection, so the resolution is
one NOTIFY round trip plus a 0.5 ms pause that leaves the CPU to the agents). Prints
p50/p90/p99/max for each agent and for "both applied", and the agents' own view: the
spop_agent_decisions_apply_delay_seconds gauge read after each add (the time in the stream
entry's id, set by Redis at XADD, to the publication of the overlay; 1 ms resolution, no
polling in it).
"""

import argparse
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyspop import agent as harness  # noqa: E402
from pyspop.codec import T_ACK, hello, ip_msg, notify, set_vars  # noqa: E402
from pyspop.client import Conn  # noqa: E402
from pyspop.redis import RedisServer, _encode  # noqa: E402

HASH, STREAM = "spop:decisions", "spop:decisions:log"


class Scorer:
    def __init__(self, agent):
        self.c = Conn(agent.addr, agent.family, timeout=5.0)
        self.c.handshake(hello())
        self.fid = 0

    def score(self, ip):
        self.fid += 1
        self.c.send(notify(1, self.fid, [ip_msg(ip)]))
        f = self.c.recv_frame(5.0)
        assert f is not None and f.type == T_ACK, f
        return set_vars(f.payload)["ip_score"]


def apply_delay_ms(agent):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % agent.metrics_port,
                                timeout=5) as r:
        m = re.search(rb"^spop_agent_decisions_apply_delay_seconds (\S+)$", r.read(), re.M)
    return float(m.group(1)) * 1000


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", required=True)
    ap.add_argument("--loaded", type=int, default=10000)
    ap.add_argument("--adds", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=20.0)
    ns = ap.parse_args()
    harness.install_sigterm()
    r = RedisServer().start()
    agents = []
    try:
        c = r.client()
        # The loaded set: written in pipelined batches of transactions.
        batch = []
        for i in range(ns.loaded):
            p = "10.%d.%d.%d/32" % (i >> 16 & 255, i >> 8 & 255, i & 255)
            batch += [_encode(["MULTI"]), _encode(["HSET", HASH, p, "1 0 loaded"]),
                      _encode(["XADD", STREAM, "MAXLEN", "~", "100000", "*", "op", "add",
                               "prefix", p, "score", "1", "expiry", "0", "reason", "loaded"]),
                      _encode(["EXEC"])]
            if len(batch) >= 4000 or i == ns.loaded - 1:
                c.sock.sendall(b"".join(batch))
                for _ in range(len(batch)):
                    c.reader.reply()
                batch = []
        for _ in range(2):
            a = harness.Agent(os.path.abspath(ns.agent),
                              ["--default-score", "50", "--decisions", r.url], workers=2,
                              metrics=True, ready_timeout=20.0)
            agents.append(a.start())
        scorers = [Scorer(a) for a in agents]
        probe = "10.%d.%d.%d" % ((ns.loaded - 1) >> 16 & 255, (ns.loaded - 1) >> 8 & 255,
                                 (ns.loaded - 1) & 255)
        assert all(s.score(probe) == 1 for s in scorers), "the loaded set is not served"
        lat = [[], []]
        both = []
        inner = [[], []]
        for i in range(ns.adds):
            ip = "192.0.%d.%d" % (i >> 8 & 255, i & 255)
            score = 2 + i % 90
            p = ip + "/32"
            msg = b"".join([_encode(["MULTI"]), _encode(["HSET", HASH, p, "%d 0 bench" % score]),
                            _encode(["XADD", STREAM, "MAXLEN", "~", "100000", "*", "op", "add",
                                     "prefix", p, "score", str(score), "expiry", "0",
                                     "reason", "bench"]),
                            _encode(["EXEC"])])
            t0 = time.perf_counter()
            c.sock.sendall(msg)
            done = [None, None]
            deadline = t0 + 5.0
            while None in done and time.perf_counter() < deadline:
                for k, s in enumerate(scorers):
                    if done[k] is None and s.score(ip) == score:
                        done[k] = time.perf_counter() - t0
                time.sleep(0.0005)
            for _ in range(4):
                c.reader.reply()
            assert None not in done, "decision %s not applied within 5 s: %r" % (ip, done)
            for k in range(2):
                lat[k].append(done[k] * 1000)
            both.append(max(done) * 1000)
            for k in range(2):
                inner[k].append(apply_delay_ms(agents[k]))
            time.sleep(ns.gap_ms / 1000.0)
        print("loaded=%d adds=%d gap_ms=%.0f loadavg=%s" % (ns.loaded, ns.adds, ns.gap_ms,
                                                        " ".join(os.getloadavg().__repr__()
                                                                 for _ in [0])))
        for name, v in (("agent A", lat[0]), ("agent B", lat[1]), ("both applied", both),
                        ("A (own gauge)", inner[0]), ("B (own gauge)", inner[1])):
            print("%-13s p50=%.2f ms p90=%.2f ms p99=%.2f ms max=%.2f ms"
                  % (name, pct(v, 50), pct(v, 90), pct(v, 99), max(v)))
        c.close()
    finally:
        for a in agents:
            a.stop()
        r.stop()


if __name__ == "__main__":
    main()
