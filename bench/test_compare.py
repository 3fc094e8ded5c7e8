#!/usr/bin/env python3
"""Tests of bench/compare.py's gates on synthetic results (stdlib only, no agent needed).

    python3 bench/test_compare.py        (meson: suite bench-smoke, bench-compare-gates)

The A/B report must fail on ratios beyond its limits and on failed runs, and pass on everything
else whatever the absolute figures; the baseline comparison with --no-gate must fail only on
failed runs.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "compare.py")


def run(label, fps=100000.0, cpu=5.0, p50=50.0, p99=500.0, ok=True, error=""):
    return {"tool": "spop-loadgen", "label": label, "mode": "closed", "frames_per_s": fps,
            "agent_cpu_us_per_frame": cpu, "p50_us": p50, "p99_us": p99, "ok": ok,
            "first_error": error}


def ab_file(tmp, b_scale=None, reps=5, a_overrides=None, b_overrides=None, load="0.20 0.30 0.40"):
    """A/B JSON lines: A and B interleaved, B's metrics multiplied by b_scale[metric]; the load
    average before the run is `load` on 2 CPUs (quiet by default)."""
    b_scale = b_scale or {}
    lines = [{"tool": "bench-run-ab", "a": "base (0123456789ab)", "b": "head", "reps": reps,
              "duration_s": 5.0, "cpus": 2, "load_start": load}]
    for rep in range(reps):
        for scenario in ("c4_d16", "c1_d1"):
            for engine in ("uring", "epoll"):
                # A little rep-to-rep spread, the same for both sides.
                wobble = 1 + 0.02 * (rep - reps // 2)
                base = {"fps": 100000.0 * wobble, "cpu": 5.0 * wobble, "p50": 50.0 * wobble,
                        "p99": 500.0 * wobble}
                a = dict(base, **(a_overrides or {}).get((scenario, engine, rep), {}))
                b = {k: v * b_scale.get(k, 1) for k, v in base.items()}
                b.update((b_overrides or {}).get((scenario, engine, rep), {}))
                lines.append(run(f"A/{engine}/{scenario}", **a))
                lines.append(run(f"B/{engine}/{scenario}", **b))
    lines.append({"tool": "bench-run-ab", "load_end": "7.50 6.50 5.50"})
    path = os.path.join(tmp, "ab.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    return path


def compare(*args):
    p = subprocess.run([sys.executable, COMPARE, *args], capture_output=True, text=True,
                       timeout=60, check=False)
    return p.returncode, p.stdout + p.stderr


class ABGate(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def verdicts(self, out, metric):
        # Columns are separated by two or more spaces; the verdict is the last one.
        return [re.split(r"\s{2,}", line.strip())[-1] for line in out.splitlines()
                if len(line.split()) > 3 and line.split()[2] == metric]

    def test_same_figures_pass(self):
        rc, out = compare("--ab", ab_file(self.tmp.name))
        self.assertEqual(rc, 0, out)
        self.assertIn("no regression", out)
        self.assertIn("load average at start 0.20 0.30 0.40, at end 7.50 6.50 5.50", out)
        self.assertEqual(self.verdicts(out, "agent_cpu_us_per_frame"), ["ok"] * 4)

    def test_cpu_per_frame_beyond_limit_fails(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"cpu": 1.2}))
        self.assertEqual(rc, 1, out)
        self.assertEqual(self.verdicts(out, "agent_cpu_us_per_frame"), ["REGRESSION"] * 4)
        self.assertIn("1.200", out)

    def test_cpu_per_frame_just_inside_limit_passes(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"cpu": 1.14}))
        self.assertEqual(rc, 0, out)

    def test_cpu_limit_is_an_option(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"cpu": 1.14}), "--cpu-max", "1.10")
        self.assertEqual(rc, 1, out)

    def test_frames_per_s_below_limit_fails(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"fps": 0.85}))
        self.assertEqual(rc, 1, out)
        self.assertEqual(self.verdicts(out, "frames_per_s"), ["REGRESSION"] * 4)

    def test_frames_per_s_not_gated_on_a_busy_machine(self):
        path = ab_file(self.tmp.name, {"fps": 0.7}, load="1.00 0.50 0.50")
        rc, out = compare("--ab", path)
        self.assertEqual(rc, 0, out)
        self.assertIn("frames/s not gated (load average 1 on 2 CPUs at the start", out)
        self.assertEqual(self.verdicts(out, "frames_per_s"), ["worse (not gated)"] * 4)
        rc, out = compare("--ab", path, "--fps-gate", "on")
        self.assertEqual(rc, 1, out)

    def test_frames_per_s_gate_can_be_turned_off(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"fps": 0.7}), "--fps-gate", "off")
        self.assertEqual(rc, 0, out)

    def test_cpu_per_frame_gated_on_a_busy_machine(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"cpu": 1.2}, load="9.00 9.00 9.00"))
        self.assertEqual(rc, 1, out)

    def test_frames_per_s_just_above_limit_passes(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"fps": 0.88}))
        self.assertEqual(rc, 0, out)

    def test_one_outlier_run_does_not_move_the_median(self):
        # One B run at 3x the CPU (a neighbour's burst): the median ignores it.
        over = {("c1_d1", "epoll", 1): {"cpu": 15.0}}
        rc, out = compare("--ab", ab_file(self.tmp.name, b_overrides=over))
        self.assertEqual(rc, 0, out)

    def test_median_alone_beyond_limit_is_not_a_regression(self):
        # Three of five B runs disturbed (+40% CPU), the best B run as cheap as the best A run:
        # a busy neighbour, not a slower agent.
        over = {("c4_d16", "uring", rep): {"cpu": 7.0} for rep in (2, 3, 4)}
        rc, out = compare("--ab", ab_file(self.tmp.name, b_overrides=over))
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.verdicts(out, "agent_cpu_us_per_frame"),
                         ["median only", "ok", "ok", "ok"])

    def test_best_run_alone_beyond_limit_is_not_a_regression(self):
        over = {("c4_d16", "uring", 0): {"cpu": 2.0}}
        rc, out = compare("--ab", ab_file(self.tmp.name, a_overrides=over))
        self.assertEqual(rc, 0, out)

    def test_p99_is_shown_not_gated_unless_asked(self):
        path = ab_file(self.tmp.name, {"p99": 3.0})
        rc, out = compare("--ab", path)
        self.assertEqual(rc, 0, out)
        self.assertIn("worse (not gated)", out)
        rc, out = compare("--ab", path, "--p99-max", "1.5")
        self.assertEqual(rc, 1, out)

    def test_better_is_reported_and_passes(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"cpu": 0.5, "fps": 2.0}))
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.verdicts(out, "agent_cpu_us_per_frame"), ["better"] * 4)

    def test_failed_run_on_either_side_fails(self):
        for side in ("A", "B"):
            with self.subTest(side=side):
                over = {("c4_d16", "uring", 2): {"ok": False, "error": "lost ACK"}}
                key = "a_overrides" if side == "A" else "b_overrides"
                path = ab_file(self.tmp.name, **{key: over})
                rc, out = compare("--ab", path)
                self.assertEqual(rc, 1, out)
                self.assertIn(f"FAIL (side {side}, 1 run(s): lost ACK)", out)

    def test_pair_ratios_are_reported(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"cpu": 1.1}))
        self.assertEqual(rc, 0, out)
        line = next(l for l in out.splitlines() if "agent_cpu_us_per_frame" in l)
        self.assertIn("1.10-1.10", line)

    def test_markdown_table(self):
        rc, out = compare("--ab", ab_file(self.tmp.name, {"cpu": 1.2}), "--markdown")
        self.assertEqual(rc, 1, out)
        self.assertIn("| c4 d16 | uring |", out)
        self.assertIn("1.200 (1.200) **REGRESSION**", out)

    def test_not_an_ab_file_is_a_usage_error(self):
        path = os.path.join(self.tmp.name, "plain.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(run("c4_d16")) + "\n")
        rc, out = compare("--ab", path)
        self.assertEqual(rc, 2, out)


class BaselineNoGate(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.baseline = os.path.join(self.tmp.name, "baseline.json")
        with open(self.baseline, "w", encoding="utf-8") as f:
            json.dump({"spop_bench_baseline": 1, "meta": {},
                       "entries": {"loadgen/c1_d1": {"frames_per_s": 20000.0,
                                                     "agent_cpu_us_per_frame": 12.0}}}, f)

    def results(self, **kw):
        path = os.path.join(self.tmp.name, "loadgen.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(run("c1_d1", **kw)) + "\n")
        return path

    def test_stored_figures_gate_without_no_gate(self):
        rc, out = compare(self.baseline, self.results(fps=20000.0, cpu=24.0))
        self.assertEqual(rc, 1, out)
        self.assertIn("REGRESSION", out)

    def test_no_gate_shows_but_passes(self):
        rc, out = compare(self.baseline, self.results(fps=20000.0, cpu=24.0), "--no-gate")
        self.assertEqual(rc, 0, out)
        self.assertIn("worse", out)
        self.assertNotIn("REGRESSION", out)

    def test_no_gate_still_fails_a_failed_run(self):
        rc, out = compare(self.baseline, self.results(ok=False, error="bad ACK"), "--no-gate")
        self.assertEqual(rc, 1, out)
        self.assertIn("bad ACK", out)


class ExtraSides(unittest.TestCase):
    """bench/run --with NAME=CMD: more sides in one run, each against A, or all against --ref."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def write(self, cpu_of):
        lines = [{"tool": "bench-run-ab", "a": "base", "b": "head", "reps": 3, "duration_s": 5.0,
                  "cpus": 2, "load_start": "0.1 0.1 0.1", "with": {"slow": "x --y"},
                  "order": "A B slow"}]
        for rep in range(3):
            for side, cpu in cpu_of.items():
                lines.append(run(f"{side}/uring/c4_d16", cpu=cpu * (1 + 0.01 * rep)))
        path = os.path.join(self.tmp.name, "ab.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(x) + "\n" for x in lines))
        return path

    def cpu_rows(self, out):
        return {line.split()[3]: line.split()[-1] for line in out.splitlines()
                if len(line.split()) > 4 and line.split()[2] == "agent_cpu_us_per_frame"}

    def test_every_side_is_compared_with_a_and_gated(self):
        rc, out = compare("--ab", self.write({"A": 5.0, "B": 5.0, "slow": 8.0}))
        self.assertEqual(rc, 1, out)
        self.assertEqual(self.cpu_rows(out), {"B": "ok", "slow": "REGRESSION"}, out)
        self.assertIn("slow = x --y", out)

    def test_ref_compares_with_another_side(self):
        rc, out = compare("--ab", self.write({"A": 5.0, "B": 8.0, "slow": 8.0}), "--ref", "slow")
        self.assertEqual(rc, 0, out)  # A is 0.62x of slow: better; B equals slow
        rows = self.cpu_rows(out)
        self.assertEqual(rows, {"A": "better", "B": "ok"}, out)

    def test_unknown_ref_is_a_usage_error(self):
        rc, out = compare("--ab", self.write({"A": 5.0, "B": 5.0}), "--ref", "nope")
        self.assertEqual(rc, 2, out)
        self.assertIn("no side nope", out)


if __name__ == "__main__":
    unittest.main()
