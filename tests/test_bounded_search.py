"""Bounded time and memory: the exhaustive search sizes itself before building anything,
declines a space beyond the memory budget, and stops at the time limit with the best plan so far.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from rtopt.backends.base import SolverOptions
from rtopt.backends.exhaustive import ExhaustiveBackend
from rtopt.cli import app
from rtopt.problem.instance import instance_from_dict
from rtopt.problem.problem import Problem
from rtopt.planning.solve import solve

from _timing import GENEROUS_OVERSHOOT_S

ROOT = Path(__file__).resolve().parents[1]
LUNG = tomllib.loads((ROOT / "instances" / "lung-sbrt-peripheral.toml").read_text())
HN = tomllib.loads((ROOT / "instances" / "head-and-neck-conventional.toml").read_text())
runner = CliRunner()

BASELINE_MB = 400
"""Resident memory of a process that has loaded numpy, numba, scipy and the simulator (measured
~200 MB), with margin: the memory limit bounds the search, not the interpreter."""


def variant(base: dict, **fractionation) -> dict:
    data = {**base, "fractionation": {**base["fractionation"], **fractionation}}
    if "nk" in data:
        data["nk"] = {k: v for k, v in data["nk"].items() if k != "latest_day"}
    return data


def test_estimate_matches_the_enumeration():
    """The size estimate (built without enumerating) equals what the search enumerates."""
    for data in (LUNG, variant(LUNG, horizon_days=60), HN):
        p = Problem(instance_from_dict(data))
        est = ExhaustiveBackend.estimate(p)
        sets = ExhaustiveBackend.infusion_sets(p, 1)
        assert est.infusion_sets == len(sets)
        n_lo, n_hi = p.fraction_count_range()
        n = sum(len(ExhaustiveBackend.calendars(p, k, 7, 3))
                * len(ExhaustiveBackend.doses(p, k, 0.1)) for k in range(n_lo, n_hi + 1))
        # the estimate counts (start, spacing) pairs, so it may exceed the distinct calendars
        assert n <= est.schedules <= 2 * n


def test_huge_space_is_declined_quickly_with_a_clear_message():
    data = variant(LUNG, dose_step_gy=0.0001, horizon_days=3650)
    r = solve(instance_from_dict(data), "exhaustive", time_limit_s=20)
    # declined from the size estimate, before the time limit could matter: building the space
    # would take hours and ~10^5 GiB, so a generous bound tells the two apart on any load
    assert r.status == "declined" and r.termination == "not_run"
    assert r.wall_time_s < GENEROUS_OVERSHOOT_S
    assert "search space too large for the memory limit" in r.message
    assert "dose_step_gy" in r.message and "GiB" in r.message


def test_memory_limit_option_and_bad_options():
    p = Problem(instance_from_dict(LUNG))
    small = ExhaustiveBackend.estimate(p, SolverOptions(options={"memory_limit_mb": 1}))
    assert not small.fits and ExhaustiveBackend.estimate(p).fits
    r = solve(p, "exhaustive", options={"memory_limit_mb": 1})
    assert r.status == "declined" and r.exit_code != 0
    for bad in ({"continuous_step_gy": 0}, {"nk_day_step": 0}, {"memory_limit_mb": -5},
                {"start_window_days": "x"}):
        r = solve(p, "exhaustive", options=bad)
        assert r.status == "error" and "must be" in r.message, (bad, r.message)
        assert "ZeroDivision" not in r.message


def test_time_limit_returns_the_best_plan_so_far():
    """Head and neck with a 180-day horizon and 30-40 fractions: ~800k infusion-day sets per
    schedule (it ran for minutes before); with a 3 s limit it stops with a verified plan.
    The limit, not the machine's speed, is asserted: termination ``time_limit`` and a search
    cut short (how promptly it stops is the controlled-clock test below)."""
    data = variant(HN, horizon_days=180, n_fractions=[30, 40], max_overall_days=56)
    problem = Problem(instance_from_dict(data))
    r = solve(problem, "exhaustive", time_limit_s=3.0)
    assert r.termination == "time_limit" and r.feasible and r.verified, r.message
    assert r.status == "feasible" and r.gap is None and r.extras["evaluations"] is None
    assert r.extras["schedules_scored"] < r.extras["schedules"]
    assert r.wall_time_s < 3.0 + GENEROUS_OVERSHOOT_S, r.wall_time_s


class _Clock:
    """A clock for the back-end's deadline checks that stands still until :meth:`jump`."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def jump(self, seconds: float) -> None:
        self.now += seconds


def test_search_stops_at_the_first_check_past_the_deadline(monkeypatch):
    """Promptness without a race: the exhaustive back-end reads a controlled clock, which
    passes the 1 s limit while the first kernel block (a few schedules x every infusion day)
    is simulated.  The search then scores one chunk of infusion sets for that block (so it has
    a plan), simulates no further block and returns that plan, verified, as ``time_limit``."""
    import types

    import rtopt.backends.exhaustive as ex

    clock = _Clock()
    monkeypatch.setattr(ex, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    blocks = []
    real = ex.infusion_kernels

    def kernels(*args, **kwargs):
        blocks.append(len(args[1]))
        out = real(*args, **kwargs)
        clock.jump(2.0)  # the limit passes while the block is simulated
        return out

    monkeypatch.setattr(ex, "infusion_kernels", kernels)
    problem = Problem(instance_from_dict(LUNG))
    r = solve(problem, "exhaustive", time_limit_s=1.0)
    assert len(blocks) == 1 and blocks[0] < r.extras["schedules"], blocks
    assert r.termination == "time_limit" and r.feasible and r.verified, r.message
    assert r.extras["schedules_scored"] == 0 and r.extras["evaluations"] is None
    # the same search without the clock's jump scores every schedule (sanity of the set-up)
    monkeypatch.setattr(ex, "time", time)
    full = solve(problem, "exhaustive", time_limit_s=600.0)
    assert full.termination == "optimal" and full.objective >= r.objective


def _run_measured(args: list[str], cwd: Path) -> tuple[dict, float, float]:
    wrap = ("import json, resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "wall = time.perf_counter() - t\n"
            "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
            "print(json.dumps({'rc': p.returncode, 'out': p.stdout, 'err': p.stderr, "
            "'wall': wall, 'rss_mb': rss}))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", wrap, sys.executable, "-m", "rtopt", *args],
                       capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    m = json.loads(p.stdout)
    return m, m["wall"], m["rss_mb"]


@pytest.mark.parametrize("horizon, step", [(42, 0.5), (400, 0.05), (3650, 0.001)])
def test_wall_time_and_peak_memory_stay_bounded(tmp_path, horizon, step):
    """Growing horizon and dose grid: wall time stays within the limit plus the overshoot
    allowance and peak RSS within the memory limit plus the interpreter's baseline."""
    f = tmp_path / "inst.toml"
    f.write_text(tomli_w.dumps(variant(LUNG, horizon_days=horizon, dose_step_gy=step)))
    limit_s, limit_mb = 3.0, 256
    m, wall, rss = _run_measured(["solve", str(f), "--time-limit", str(limit_s),
                                  "--memory-limit", str(limit_mb), "--json"], tmp_path)
    assert "Traceback" not in m["err"] and m["rc"] in (0, 1), m["err"][-1000:]
    res = json.loads(m["out"])
    assert res["status"] in ("feasible", "optimal", "declined"), res["message"]
    assert res["termination"] in ("time_limit", "optimal", "not_run"), res["termination"]
    assert res["wall_time_s"] <= limit_s + GENEROUS_OVERSHOOT_S, (res["wall_time_s"], wall)
    assert rss <= BASELINE_MB + limit_mb, rss


def test_validate_warns_about_a_huge_exhaustive_space(tmp_path):
    f = tmp_path / "big.toml"
    f.write_text(tomli_w.dumps(variant(LUNG, dose_step_gy=0.0001)))
    r = runner.invoke(app, ["validate", str(f)])
    assert r.exit_code == 0 and r.stdout == f"{f}: OK\n"
    assert f"{f}: warning: " in r.stderr and "exhaustive" in r.stderr
    ok = runner.invoke(app, ["validate", str(ROOT / "instances" / "lung-sbrt-peripheral.toml")])
    assert ok.stderr == ""


def test_ccp_honours_its_time_limit_on_a_long_horizon():
    """cvxpy-ccp checks its deadline inside large evaluations (it ran 23.5 s with a 20 s limit
    on this 180-day case before); it stops with a verified plan near the limit."""
    from rtopt.backends import get_backend

    # the once-per-process import check (a child process, ~1 s) is not part of the search
    assert get_backend("cvxpy_ccp").available()[0]
    data = variant(HN, horizon_days=180, n_fractions=[30, 40], max_overall_days=56)
    problem = Problem(instance_from_dict(data))
    r = solve(problem, "cvxpy-ccp", time_limit_s=5.0)
    # completed or stopped by the limit, depending on the machine's speed: both are right
    assert r.feasible and r.termination in ("time_limit", "completed"), (r.termination, r.message)
    assert r.wall_time_s < 5.0 + GENEROUS_OVERSHOOT_S, r.wall_time_s
