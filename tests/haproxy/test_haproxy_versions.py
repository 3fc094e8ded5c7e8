#!/usr/bin/env python3
"""Offline checks of scripts/haproxy-versions (standard library only): which Debian mirror it
takes from a machine's apt sources (one-line and deb822 files), and what it does with an empty
cache. Fetching itself needs the network and is exercised by scripts/test.

    python3 tests/haproxy/test_haproxy_versions.py [--script scripts/haproxy-versions]
"""

import argparse
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "scripts", "haproxy-versions")


def load(path):
    loader = importlib.machinery.SourceFileLoader("haproxy_versions", path)
    spec = importlib.util.spec_from_loader("haproxy_versions", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class Mirror(unittest.TestCase):
    def setUp(self):
        self.hv = load(SCRIPT)
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        os.makedirs(os.path.join(self.root, "etc/apt/sources.list.d"))
        self.write("etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
                                     'VERSION_CODENAME=bookworm\n')
        self.saved = os.environ.pop("SPOP_DEBIAN_MIRROR", None)

    def tearDown(self):
        if self.saved is not None:
            os.environ["SPOP_DEBIAN_MIRROR"] = self.saved
        self.tmp.cleanup()

    def write(self, rel, text):
        with open(os.path.join(self.root, rel), "w") as f:
            f.write(text)

    def test_deb822_stanza_of_the_release_wins_over_security_and_others(self):
        self.write("etc/apt/sources.list.d/debian.sources", """\
Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main

Types: deb
# a comment inside the stanza
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /nonexistent/keyring.gpg
""")
        uri, keyring = self.hv.debian_mirror(self.root)
        self.assertEqual(uri, "http://mirror.example/debian")
        # A keyring that does not exist falls back to Debian's archive keyring.
        self.assertEqual(keyring, self.hv.KEYRING)

    def test_one_line_format_with_options(self):
        self.write("etc/apt/sources.list", """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/nonexistent.gpg] http://line.example/debian bookworm main
""")
        self.assertEqual(self.hv.debian_mirror(self.root)[0], "http://line.example/debian")

    def test_override_and_no_source(self):
        with self.assertRaises(self.hv.Failure) as cm:
            self.hv.debian_mirror(self.root)
        self.assertIn("SPOP_DEBIAN_MIRROR", str(cm.exception))
        os.environ["SPOP_DEBIAN_MIRROR"] = "http://override.example/debian/"
        try:
            self.assertEqual(self.hv.debian_mirror(self.root)[0], "http://override.example/debian")
        finally:
            del os.environ["SPOP_DEBIAN_MIRROR"]


class EmptyCache(unittest.TestCase):
    def run_script(self, *args, cache):
        env = dict(os.environ, SPOP_HAPROXY_CACHE=cache)
        return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    def test_path_of_a_missing_series_fails_without_network(self):
        with tempfile.TemporaryDirectory() as cache:
            res = self.run_script("--path", "3.4", cache=cache)
            self.assertEqual(res.returncode, 1)
            self.assertEqual(res.stdout, "")
            self.assertIn("HAProxy 3.4 is not in", res.stderr)
            self.assertEqual(os.listdir(cache), [])  # nothing created, nothing fetched

    def test_unknown_series_is_refused(self):
        with tempfile.TemporaryDirectory() as cache:
            res = self.run_script("2.8", cache=cache)
            self.assertEqual(res.returncode, 2)
            self.assertIn("unknown series 2.8", res.stderr)

    def test_dir_follows_the_environment(self):
        with tempfile.TemporaryDirectory() as cache:
            res = self.run_script("--dir", cache=cache)
            self.assertEqual(res.stdout.strip(), cache)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", default=SCRIPT)
    args, rest = ap.parse_known_args()
    SCRIPT = os.path.abspath(args.script)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
