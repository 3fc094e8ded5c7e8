"""Runs a unittest suite the way every Python suite of this project reports: verbose progress,
then "N passed, N failed[, N skipped]" as the last line (a test whose subTests fail counts once).
"""

import sys
import time
import unittest

from . import agent as _agent


def load(modules):
    """Every TestCase class *defined* in these modules (not the ones they import)."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for mod in modules:
        for name in sorted(dir(mod)):
            obj = getattr(mod, name)
            if (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                    and obj.__module__ == mod.__name__):
                suite.addTests(loader.loadTestsFromTestCase(obj))
    return suite


def select(suite, patterns):
    """Only the tests whose id contains one of the patterns (all when there are none)."""
    if not patterns:
        return suite

    def filt(s):
        out = unittest.TestSuite()
        for t in s:
            if isinstance(t, unittest.TestSuite):
                sub = filt(t)
                if sub.countTestCases():
                    out.addTest(sub)
            elif any(p in t.id() for p in patterns):
                out.addTest(t)
        return out
    return filt(suite)


def run(suite, label=None, stream=None):
    """Runs the suite; kills every agent left over, also on SIGTERM (install_sigterm) or ^C.
    Prints the summary; returns the exit status (0 all passed, 1 a test failed)."""
    stream = stream or sys.stdout
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(verbosity=2, stream=stream)
    try:
        res = runner.run(suite)
    except (_agent.Terminated, KeyboardInterrupt) as e:
        print("interrupted: %s" % e, file=stream)
        _agent.kill_all()
        print("0 passed, 1 failed", file=stream)
        return 1
    finally:
        _agent.kill_all()

    def top_id(t):
        # a failing subTest is reported as its own entry: count its test once
        return getattr(t, "test_case", t).id()

    failed_ids = set(top_id(t) for t, _ in res.failures + res.errors)
    failed_ids |= set(top_id(t) for t in res.unexpectedSuccesses)
    skipped_ids = set(top_id(t) for t, _ in res.skipped) - failed_ids
    failed = len(failed_ids)
    skipped = len(skipped_ids)
    passed = max(0, res.testsRun - failed - skipped - len(res.expectedFailures))
    if failed_ids:
        print("failed: " + ", ".join(sorted(failed_ids)), file=stream)
    if label:
        print("%s: total runtime %.1f s" % (label, time.monotonic() - t0), file=stream)
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line, file=stream)
    return 1 if failed else 0
