"""Pareto fronts (`rtopt pareto`, `rtopt.decisions.pareto`): known answers, dominance, verification,
hypervolume, CLI errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtopt.decisions.pareto import hypervolume, knee_index, non_dominated, pareto
from rtopt.problem.problem import Problem

REPO_ROOT = Path(__file__).resolve().parents[1]
INST = REPO_ROOT / "instances"


def _closed_form_front(rho_t, rho_o, s, limit, n_max, step, d_lo, d_hi, min_bed):
    """Non-dominated (tumour BED, OAR BED) of uniform n x d by brute force on the closed form
    BED_T = n d (1 + d / rho_t), BED_OAR = n s d (1 + s d / rho_o)."""
    pts = []
    for n in range(1, n_max + 1):
        # largest dose the OAR limit allows: n s d (1 + s d / rho_o) = limit
        dmax = (-1 + math.sqrt(1 + 4 * limit / (n * rho_o))) * rho_o / (2 * s)
        grid = list(np.arange(d_lo, d_hi + 1e-9, step)) + [dmax]
        for d in grid:
            bt, bo = n * d * (1 + d / rho_t), n * s * d * (1 + s * d / rho_o)
            if d_lo <= d <= d_hi and bo <= limit * (1 + 1e-12) and bt >= min_bed:
                pts.append((-bt, bo))
    F = np.array(pts)
    return F[non_dominated(np.round(F, 9))]


@pytest.mark.parametrize("name, s, n_best, bed_best", [
    ("classic-mizuta-hypo", 0.2, 1, 637.5),      # sparing 0.2 < 3/10: one fraction
    ("classic-mizuta-hyper", 0.5, 30, 152.5),    # sparing 0.5 > 3/10: most fractions
])
def test_exact_front_classic_closed_form(name, s, n_best, bed_best):
    res = pareto(INST / f"{name}.toml", "tumour_bed,oar:oar", heuristic=False,
                 options={"continuous_step_gy": 0.5})
    assert res.exact and "exact over the exhaustive space" in res.exact_label
    for p in res.exact:
        n, d = p.plan.n_fractions, p.plan.doses_gy[0]
        assert p.values["tumour_bed"] == pytest.approx(n * d * (1 + d / 10), rel=1e-9)
        assert p.values["oar:oar"] == pytest.approx(n * s * d * (1 + s * d / 3), rel=1e-9)
    top = max(res.exact, key=lambda p: p.values["tumour_bed"])
    assert top.plan.n_fractions == n_best
    assert top.values["tumour_bed"] == pytest.approx(bed_best, abs=0.1)
    assert top.values["oar:oar"] == pytest.approx(90.0, rel=1e-6)
    want = _closed_form_front(10.0, 3.0, s, 90.0, 30, 0.5, 0.5, 100.0, 1.0)
    got = res.minimised(res.exact)
    assert len(got) == len(want)
    np.testing.assert_allclose(got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])],
                               rtol=1e-9)


def _assert_front(res, points):
    F = res.minimised(points)
    assert len(non_dominated(np.round(F, 12))) == len(F)  # no point dominated by another
    problem = Problem.from_path(INST / "lung-sbrt-peripheral.toml")
    for p in points:
        v = problem.verify(p.plan)
        assert v.feasible, v.violated
        for o in res.objectives:
            assert v.metrics[o.metric] == pytest.approx(p.values[o.name], rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_lung_fronts_verified_and_compared():
    res = pareto(INST / "lung-sbrt-peripheral.toml", "local_control,oar:chest_wall_rib",
                 options={"nk_day_step": 7}, pop_size=20, generations=8, seed=1)
    assert len(res.exact) >= 5 and res.heuristic
    _assert_front(res, res.exact)
    _assert_front(res, res.heuristic)
    ind = res.indicators
    assert 0 < ind["hv_heuristic"] <= ind["hv_exact"] * 1.05
    assert ind["gd"] >= 0 and ind["igd"] >= 0
    assert res.knee is not None and res.reference is not None
    # the default reference is the standard 54/3 of the one table (its calendar, 80 % isodose)
    assert res.reference.plan.fraction_days == (0, 4, 8)
    assert res.reference.plan.tumour_dose_ratio is None      # the instance's convention, 1.2
    if res.reference_better is not None:
        b = res.exact[res.reference_better]
        assert b.values["local_control"] >= res.reference.values["local_control"]
        assert b.values["oar:chest_wall_rib"] <= res.reference.values["oar:chest_wall_rib"]
        assert "dominates the reference" in res.reference_sentence


def test_hypervolume_by_hand():
    F = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    # staircase to (4, 4): 3 x 1 + 2 x 1 + 1 x 1
    assert hypervolume(F, np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(F[:1], np.array([4.0, 4.0])) == pytest.approx(3.0)
    # a dominated point adds nothing
    assert hypervolume(np.vstack([F, [[3.0, 3.0]]]), np.array([4.0, 4.0])) == pytest.approx(6.0)


def test_non_dominated_and_knee():
    F = np.array([[1.0, 5.0], [2.0, 2.0], [5.0, 1.0], [3.0, 3.0], [2.0, 2.0]])
    keep = non_dominated(F)
    assert sorted(keep.tolist()) == [0, 1, 2]
    assert knee_index(F[[0, 1, 2]]) == 1


def _rtopt(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "rtopt", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=300)


@pytest.mark.parametrize("instance, objectives, word", [
    ("lung-sbrt-peripheral", "local_control,bogus", "bogus'; choose from"),
    ("lung-sbrt-peripheral", "local_control,oar:heart", "heart"),
    ("lung-sbrt-peripheral", "local_contrl,tumour_bed", "(did you mean 'local_control'?)"),
    ("lung-sbrt-peripheral", "local_control,oar:chest_wall",
     "(did you mean 'oar:chest_wall_rib'?)"),
    ("lung-sbrt-peripheral", "local_control", "two or three"),
    ("lung-sbrt-peripheral", "local_control,local_control", "repeated"),
    # an objective the instance (and so every front method) cannot evaluate: named
    ("classic-mizuta-hypo", "tumour_bed,nk_gain", "nk_gain needs NK cells"),
])
def test_cli_bad_objectives(tmp_path, instance, objectives, word):
    done = _rtopt("pareto", f"instances/{instance}.toml", "--objectives", objectives,
                  "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "--objectives" in err[0] and word in err[0]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_cli_writes_files_and_report_rerenders(tmp_path):
    out = tmp_path / "out"
    done = _rtopt("pareto", "instances/classic-mizuta-neutral.toml", "--objectives",
                  "tumour_bed,oar:oar,n_fractions", "-o", str(out), "--no-heuristic")
    assert done.returncode == 0, done.stderr
    for name in ("front.csv", "front.json", "front.png", "report.html", "report.md"):
        assert (out / name).is_file()
    data = json.loads((out / "front.json").read_text())
    assert len(data["exact"]["points"]) >= 2 and len(data["objectives"]) == 3
    assert "data:image/png;base64," in (out / "report.html").read_text()
    (out / "report.md").unlink()
    again = _rtopt("report", str(out))
    assert again.returncode == 0, again.stderr
    assert (out / "report.md").is_file()


def test_reference_plan_on_the_front(tmp_path):
    from rtopt.problem.problem import Plan

    ref = Plan.uniform((0, 2, 4, 7), 12.0, (8,))
    res = pareto(INST / "lung-sbrt-peripheral.toml", "tumour_bed,oar:spinal_cord", reference=ref,
                 heuristic=False)
    assert res.reference.feasible and res.reference.plan == ref
    assert "is on the exact front" in res.reference_sentence  # uniform 4 x 12 Gy is in the space
    # standard marks are the named schedules of rtopt/model/data/standard_schedules.toml
    marks = dict(res.standards)
    assert {"54/3", "48/4", "50/5", "48/4-iso"} <= set(marks)
    assert marks["48/4-iso"].plan.tumour_dose_ratio == 1.0  # an isocentre source keeps its own


def test_cli_reference_errors(tmp_path):
    done = _rtopt("pareto", "instances/lung-sbrt-peripheral.toml", "--objectives",
                  "tumour_bed,oar:spinal_cord", "--reference", str(tmp_path / "missing.json"),
                  "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("--reference:")


def test_exact_front_time_limit_gives_a_labelled_partial_front():
    # a limit shorter than the scoring: the front is built from what was scored and says so
    from rtopt.decisions.pareto import pareto

    res = pareto(INST / "lung-sbrt-peripheral.toml",
                 "local_control,oar:chest_wall_rib", heuristic=False, time_limit_s=1e-3)
    assert res.counts.get("time_limit_reached") == 1
    assert "NOT exact" in res.exact_label and res.exact
    assert res.counts["schedules_scored"] < res.counts["schedules"]
