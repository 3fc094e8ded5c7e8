#!/usr/bin/env python3
"""Loopback check of an agent built on spop::server: start it on a free port, HELLO, one or
more NOTIFYs whose ACKs must carry the service's variables, SIGTERM, exit status 0, no warning
or error in its log. Once per engine (io_uring is skipped when the agent reports it unavailable).

    agent_check.py --agent build/examples/bot_agent --service bot [--engine uring --engine epoll]

Services: bot (examples/bot_service.hpp), path (the consumer projects' tests/consumer/*/agent.cpp).
The agent takes -p PORT -n WORKERS -a ADDRESS --engine E (pyspop.agent.Agent's command line).
Exit status 0 when every check passed, 77 when every engine was skipped, 1 otherwise.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyspop import codec  # noqa: E402
from pyspop.agent import LEVEL_RE, Agent, install_sigterm  # noqa: E402
from pyspop.client import Conn  # noqa: E402

SCOPE_TXN = 2

# service -> [(NOTIFY messages, {txn variable: plain value} expected in the ACK)]
CHECKS = {
    "bot": [
        ([("check-ua", [("ua", codec.t_str("Mozilla/5.0 (compatible; Googlebot/2.1)"))])],
         {"is_bot": True}),
        ([("check-ua", [("ua", codec.t_str("Mozilla/5.0 (X11; Linux x86_64)"))])],
         {"is_bot": False}),
        # NULL user-agent (no header): no verdict, only the engine's no-op action.
        ([("check-ua", [("ua", codec.t_null())])], {}),
    ],
    "path": [
        ([("check-path", [("path", codec.t_str("/admin/users"))])],
         {"is_admin": True, "path_len": 12}),
        ([("check-path", [("path", codec.t_str("/"))])], {"is_admin": False, "path_len": 1}),
    ],
}


def txn_vars(payload):
    """ACK payload -> {name: plain value} of its txn SET-VARs (the no-op UNSET-VAR is dropped)."""
    out = {}
    for a in codec.parse_actions(payload):
        if a[0] == "set":
            if a[1] != SCOPE_TXN:
                raise AssertionError("SET-VAR %r outside the txn scope" % (a,))
            out[a[2]] = codec.plain(a[3])
    return out


def check(binary, service, engine):
    """None when it passed, "skip: ..." when the engine is unavailable; raises otherwise."""
    agent = Agent(binary, engine=engine, workers=2, ready_timeout=10.0)
    try:
        agent.start()
    except AssertionError as e:
        if engine == "uring" and "io_uring unavailable" in str(e):
            return "skip: " + str(e).splitlines()[0]
        raise
    try:
        with Conn(agent.addr) as c:
            c.send(codec.hello())
            f = c.recv_frame()
            if f is None or f.type != codec.T_AGENT_HELLO:
                raise AssertionError("expected AGENT-HELLO, got %r" % (f,))
            for i, (messages, want) in enumerate(CHECKS[service]):
                sid, fid = 10 + i, 1
                c.send(codec.notify(sid, fid, messages))
                f = c.recv_frame()
                if f is None or f.type != codec.T_ACK or (f.sid, f.fid) != (sid, fid):
                    raise AssertionError("expected ACK %d/%d, got %r" % (sid, fid, f))
                got = txn_vars(f.payload)
                if got != want:
                    raise AssertionError("ACK %d/%d: %r, expected %r" % (sid, fid, got, want))
        rc = agent.stop()
        if rc != 0:
            raise AssertionError("exit status %r after SIGTERM" % rc)
        problems = [l for l in agent.log_text().splitlines()
                    if LEVEL_RE.search(l) and "engine_fallback" not in l]
        if problems:
            raise AssertionError("warnings in the log: %s" % "\n".join(problems))
    finally:
        agent.stop()
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", required=True)
    ap.add_argument("--service", required=True, choices=sorted(CHECKS))
    ap.add_argument("--engine", action="append", choices=["uring", "epoll", "auto"])
    args = ap.parse_args()
    install_sigterm()
    engines = args.engine or ["uring", "epoll"]
    skipped = 0
    failed = 0
    for engine in engines:
        try:
            r = check(args.agent, args.service, engine)
        except AssertionError as e:
            print("FAIL %s %s: %s" % (os.path.basename(args.agent), engine, e))
            failed += 1
            continue
        if r is not None:
            print("SKIP %s %s: %s" % (os.path.basename(args.agent), engine, r))
            skipped += 1
        else:
            print("ok   %s %s: %s" % (os.path.basename(args.agent), engine, args.service))
    if failed:
        return 1
    return 77 if skipped == len(engines) else 0


if __name__ == "__main__":
    sys.exit(main())
