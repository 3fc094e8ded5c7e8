"""E. Command line: flags, port in use, IPv6 loopback, Unix socket.

Run by test_agent.py's runner, once per engine (moved from test_agent.py as they were)."""

import os
import socket
import tempfile

import test_agent as ta  # first: the runner (AGENT, ENGINE) puts tests/ on sys.path
from pyspop.codec import *  # noqa: F401,F403
from pyspop.vectors import *  # noqa: F401,F403
from pyspop.client import Conn
from pyspop.ports import free_port, ipv6_loopback_usable
from test_agent import Agent, AgentCase, run_agent


def cpu_outside_this_process():
    """The lowest CPU number this process may not run on (an agent started from here inherits
    the same mask)."""
    allowed = os.sched_getaffinity(0)
    return next(c for c in range(1024) if c not in allowed)


def thread_cpus(pid):
    """{thread id: the CPUs it may run on}, from /proc."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            out[int(tid)] = os.sched_getaffinity(int(tid))
        except OSError:  # the thread ended meanwhile
            pass
    return out


class CliTests(AgentCase):
    agent_args = None

    def unix_path(self):
        """A socket path in a fresh directory, both removed after the test."""
        d = tempfile.mkdtemp(prefix="agent-unix-")
        path = os.path.join(d, "x.sock")
        self.addCleanup(os.rmdir, d)
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        return path

    def test_help(self):
        for flag in ("-h", "--help"):
            rc, out, err = run_agent([flag])
            self.assertEqual(rc, 0)
            self.assertIn("Usage", out)
            self.assertIn("-p", out)

    def test_bad_flags(self):
        port = str(free_port())
        base = ["-a", "127.0.0.1", "--engine", ta.ENGINE]
        cases = [
            ["-p", "0"], ["-p", "abc"], ["-p", port, "-n", "0"], ["-p", port, "-m", "10"],
            ["-p", port, "-c", "async"], ["-p", port, "-c", "fragmentation"],
            ["-p", port, "--bogus"], ["-p", port, "-n"], ["-p", "70000"],
            ["-p", port, "--default-score", "101"], ["-p", port, "--engine", "kqueue"],
            ["-p", port, "--deferred-timeout", "0"], ["-p", port, "--deferred-timeout", "x"],
            # Empty values (an unset variable in a unit file): refused, never ignored; an empty
            # --user must not leave the agent running as root.
            ["-p", port, "--user", ""], ["-p", port, "-u", ""], ["-p", port, "--unix", ""],
            ["-p", port, "--mmdb", ""], ["-p", port, "--metrics", ""], ["-p", port, "-a", ""],
            ["-p", port, "--allow", ""], ["-p", port, "--csv", ""], ["-p", port, "--list", ""],
            # Numbers are digits only: no blanks, no '+', no '-0' where negatives make no sense.
            ["-p", " " + port], ["-p", "+" + port], ["-p", port + " "], ["-p", port, "-n", "-0"],
            ["-p", port, "-u", "/tmp/x.sock", "--unix-mode", "-0"],
            ["-p", port, "-u", "/tmp/x.sock", "--unix-mode", "+660"],
            ["-p", port, "-u", "/tmp/x.sock", "--unix-mode", "680"],
            # CPU lists as taskset -c writes them, each CPU once, and only this process's CPUs.
            ["-p", port, "--cpus", ""], ["-p", port, "--cpus", "x"], ["-p", port, "--cpus", "1-0"],
            ["-p", port, "--cpus", "0,0"], ["-p", port, "--cpus", "0,"],
            ["-p", port, "--cpus", "-1"], ["-p", port, "--cpus", "4096"],
            ["-p", port, "--cpus", str(cpu_outside_this_process())],
        ]
        for args in cases:
            with self.subTest(args=args):
                rc, out, err = run_agent(base + args)
                self.assertNotEqual(rc, 0)
                lines = [l for l in err.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, "stderr should be one line: %r" % err)
                self.assertNotIn("event=start", err)

    def test_bad_cpus_names_the_cpu_and_exits_2(self):
        outside = cpu_outside_this_process()
        rc, out, err = run_agent(["-p", str(free_port()), "-a", "127.0.0.1", "--engine",
                                  ta.ENGINE, "--cpus", "%d" % outside])
        self.assertEqual(rc, 2, err)
        self.assertIn("CPU %d is not available" % outside, err)
        rc, out, err = run_agent(["--cpus", "3-1"])
        self.assertEqual(rc, 2, err)
        self.assertIn("--cpus", err)

    def test_cpus_pins_the_workers_and_nothing_else(self):
        allowed = sorted(os.sched_getaffinity(0))
        cpu = allowed[-1]
        a = self.start_agent(["--cpus", str(cpu)])  # 2 workers, both on `cpu`
        self.assertRegex(a.log_text(), r"event=start .*cpus=%d " % cpu)
        with self.conn(a) as c:
            c.handshake()
            c.send(V5_NOTIFY_NAMED)
            self.check_ack_score(c.recv_frame(), 1, 1)
        masks = thread_cpus(a.pid)
        pinned = [t for t, m in masks.items() if m == {cpu}]
        if len(allowed) == 1:
            self.skipTest("one CPU only: every thread runs on CPU %d anyway" % cpu)
        self.assertEqual(len(pinned), 2, masks)
        self.assertEqual(masks[a.pid], set(allowed), "the main thread keeps every CPU")
        self.assertEqual(a.stop(), 0)

    def test_port_in_use(self):
        # a plain listening socket
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            rc, out, err = run_agent(["-p", str(port), "-n", "2", "-a", "127.0.0.1",
                                      "--engine", ta.ENGINE])
            self.assertNotEqual(rc, 0)
            lines = [l for l in err.splitlines() if l.strip()]
            self.assertEqual(len(lines), 1, err)
            self.assertIn("in use", lines[0])
        finally:
            s.close()
        # another agent already listening there
        a = self.start_agent()
        rc, out, err = run_agent(["-p", str(a.port), "-n", "2", "-a", "127.0.0.1",
                                  "--engine", ta.ENGINE])
        self.assertNotEqual(rc, 0)
        lines = [l for l in err.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, err)
        self.assertIn("in use", lines[0])
        self.assert_serves(a)

    def test_ipv6_loopback(self):
        if not ipv6_loopback_usable():
            self.skipTest("no IPv6 loopback")
        a = self.start_agent(address="::1")
        with a.connect() as c:
            c.handshake()
            c.send(notify(1, 1, [ip_msg("::1")]))
            self.check_ack_score(c.recv_frame(), 1, 1)
        # the long option spelling, bracketed
        b = Agent([], address="::1", tcp=False)
        b.args = ["--address", "[::1]"]
        self._agents.append(b)
        b.start()
        with b.connect() as c:
            c.handshake()
            c.send(V6_NOTIFY_UNNAMED)
            self.check_ack_score(c.recv_frame(), 1, 1)
        # both loopbacks at once (-a repeated), same port
        d = Agent(["-a", "::1"])
        self._agents.append(d)
        d.start()
        for addr, fam in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            with Conn((addr, d.port), fam) as c:
                c.handshake()
                c.send(notify(1, 1, [ip_msg(addr)]))
                self.check_ack_score(c.recv_frame(), 1, 1)

    def test_unix_socket(self):
        path = self.unix_path()
        a = self.start_agent(["-u", path], tcp=False)
        self.assertTrue(os.path.exists(path))
        for _ in range(2):
            with Conn(path, socket.AF_UNIX) as c:
                c.handshake()
                c.send(V5_NOTIFY_NAMED)
                self.check_ack_score(c.recv_frame(), 1, 1)
                c.send(haproxy_disconnect(0, "normal"))
                self.expect_disconnect(c, 0)
        self.assertEqual(a.stop(), 0)
        self.assertFalse(os.path.exists(path), "socket file left behind after exit")

    def test_unix_socket_live_is_not_taken_over_and_stale_is_replaced(self):
        """A second agent on the path of a running one fails with the one-line error (it used to
        unlink the live socket and take HAProxy's traffic); a stale file is replaced."""
        path = self.unix_path()
        a = self.start_agent(["-u", path], tcp=False)
        rc, out, err = run_agent(["-p", str(free_port()), "-n", "1", "-a", "127.0.0.1",
                                  "--engine", ta.ENGINE, "-u", path])
        self.assertNotEqual(rc, 0)
        self.assertIn("already in use", err)
        self.assertEqual(len([l for l in err.splitlines() if l.strip()]), 1, err)
        with Conn(path, socket.AF_UNIX) as c:  # still the first agent's socket
            c.handshake()
            c.send(V5_NOTIFY_NAMED)
            self.check_ack_score(c.recv_frame(), 1, 1)
        a.kill()  # SIGKILL: the file stays behind, stale
        self.assertTrue(os.path.exists(path))
        b = self.start_agent(["-u", path], tcp=False)
        with Conn(path, socket.AF_UNIX) as c:
            c.handshake()
        self.assertEqual(b.stop(), 0)

    def test_unix_socket_mode_and_group(self):
        path = self.unix_path()
        os.chmod(os.path.dirname(path), 0o755)  # mkdtemp's 0700 would keep others out
        gid = os.getgid()
        a = self.start_agent(["-u", path, "--unix-mode", "660", "--unix-group", str(gid)],
                             tcp=False)
        st = os.stat(path)
        self.assertEqual(st.st_mode & 0o7777, 0o660)
        self.assertEqual(st.st_gid, gid)
        if os.geteuid() == 0:
            # Another user in the socket's group connects (HAProxy as `haproxy`); one outside
            # it does not.
            def try_connect(uid, gids):
                pid = os.fork()
                if pid == 0:
                    try:
                        os.setgroups(gids)
                        os.setgid(gids[0])
                        os.setuid(uid)
                        s = socket.socket(socket.AF_UNIX)
                        s.connect(path)
                        os._exit(0)
                    except PermissionError:
                        os._exit(13)
                    except BaseException:
                        os._exit(1)
                return os.waitpid(pid, 0)[1] >> 8
            self.assertEqual(try_connect(65534, [gid]), 0, "a member of the group")
            self.assertEqual(try_connect(65534, [65534]), 13, "someone else")
        self.assertEqual(a.stop(), 0)
