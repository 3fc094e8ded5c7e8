"""What the io_uring engine took from the kernel, as its start-up log says (`-d`): one
`event=wait_strategy` line per worker (registered ring fd, EXT_ARG, taskrun mode, batch window),
and the one `batch_window_unsupported` warning on kernels without IORING_FEAT_MIN_TIMEOUT.
scripts/kernel-check reads the same lines on Debian 12's 6.1 kernel. Run by test_agent.py's
runner, once per engine. Every wait is bounded; loopback only.
"""

import os
import re
import time

import test_agent as ta  # first: puts tests/ on sys.path

STRATEGY_RE = re.compile(r"event=wait_strategy worker=(\d+) batch_window_us=(\d+) "
                         r"registered_ring=([01]) ext_arg=([01]) taskrun=(defer|coop|default)$")


def kernel_at_least(major, minor):
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (major, minor)


class KernelProbeTests(ta.AgentCase):
    agent_args = None

    def strategies(self, agent, want):
        """The wait_strategy lines once `want` of them were logged (5 s at most)."""
        deadline = time.monotonic() + 5.0
        while True:
            lines = [l for l in agent.log_text().splitlines() if "event=wait_strategy" in l]
            if len(lines) >= want or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def test_each_uring_worker_logs_what_it_probed(self):
        a = self.start_agent(["-d"])
        if ta.ENGINE == "epoll":
            time.sleep(0.3)
            self.assertEqual(self.strategies(a, 0), [], "epoll workers have no ring")
            return
        lines = self.strategies(a, 2)
        self.assertEqual(len(lines), 2, a.log_tail())
        workers = set()
        for line in lines:
            m = STRATEGY_RE.search(line)
            self.assertIsNotNone(m, line)
            workers.add(m.group(1))
            self.assertEqual(m.group(2), "0", line)  # no --batch-window-us
            if kernel_at_least(6, 1):
                # The first ring_setup attempt and IORING_REGISTER_RING_FDS (5.18) succeed.
                self.assertEqual((m.group(3), m.group(5)), ("1", "defer"), line)
        self.assertEqual(workers, {"0", "1"})

    def test_batch_window_is_taken_or_refused_once(self):
        a = self.start_agent(["-d", "--batch-window-us", "200"])
        if ta.ENGINE == "epoll":
            # An io_uring option: epoll starts and says nothing about it.
            time.sleep(0.3)
            self.assertNotIn("batch_window", a.log_text())
            return
        lines = self.strategies(a, 2)
        self.assertEqual(len(lines), 2, a.log_tail())
        warnings = a.log_text().count("event=batch_window_unsupported")
        windows = {STRATEGY_RE.search(l).group(2) for l in lines}
        if kernel_at_least(6, 12):
            self.assertEqual((warnings, windows), (0, {"200"}), a.log_tail())
        else:
            self.assertEqual((warnings, windows), (1, {"0"}), a.log_tail())


if __name__ == "__main__":
    raise SystemExit("run through test_agent.py (it binds --agent and --engine)")
