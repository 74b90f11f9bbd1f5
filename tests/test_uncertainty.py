"""Decisions under uncertainty: distributions, samples, sensitivity, Dask, robust plans, trials."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from rtopt.errors import InstanceError
from rtopt.instance import instance_from_dict
from rtopt.parameters import SPECS
from rtopt.problem import Plan, Problem
from rtopt.simulator import simulate
from rtopt.uncertainty import (UNCERTAIN_NAMES, biology_rows, default_distribution,
                               distributions_for, sample_biology, sample_values)


@pytest.fixture(scope="module")
def lung(load_dict):
    return load_dict("lung-sbrt-peripheral")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rtopt", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


# ----------------------------------------------------------------------- 1. distributions
def test_every_spec_parameter_and_tumour_values_have_a_distribution():
    assert set(SPECS) < set(UNCERTAIN_NAMES)
    assert {"alpha_per_gy", "alpha_beta_gy", "alpha_sd_per_gy"} <= set(UNCERTAIN_NAMES)


def test_default_rule_loguniform_over_a_decade_triangular_otherwise():
    # nk_blood_clearance_per_day spans 0.002-2 /d (3 decades); oer 2-3.5
    assert default_distribution("nk_blood_clearance_per_day", 0.3).kind == "loguniform"
    d = default_distribution("oer", 2.8)
    assert d.kind == "triangular" and (d.low, d.high) == (2.0, 3.5)
    # anoxic_share's range starts at 0: no log scale
    assert default_distribution("anoxic_share", 0.0).kind == "triangular"


def test_samples_lie_in_bounds_and_are_reproducible(lung):
    inst = instance_from_dict(lung)
    dists = distributions_for(inst)
    a = sample_values(dists, 200, seed=3)
    b = sample_values(dists, 200, seed=3)
    c = sample_values(dists, 200, seed=4)
    for k, d in dists.items():
        assert np.array_equal(a[k], b[k])
        assert np.all((a[k] >= d.low) & (a[k] <= d.high)), k
    assert not np.array_equal(a["oer"], c["oer"])
    # Latin hypercube: each of the 200 equal-probability slices of a margin holds one point
    from scipy import stats
    d = dists["oer"]
    cdf = stats.triang.cdf(a["oer"], (d.value - d.low) / (d.high - d.low), loc=d.low,
                           scale=d.high - d.low)
    assert sorted(np.floor(cdf * 200).astype(int)) == list(range(200))


def test_triangular_sample_mean_matches_the_distribution(lung):
    dists = distributions_for(instance_from_dict(lung))
    d = dists["chemokine_k_gy"]
    x = sample_values({"chemokine_k_gy": d}, 4000, seed=0)["chemokine_k_gy"]
    # triangular mean (a + b + c) / 3; LHS error of the mean is far below 1e-3 of the range at
    # n = 4000 (stratified margin), so 1e-2 x range is a loose, failing-if-wrong tolerance
    assert abs(x.mean() - (d.low + d.high + d.value) / 3) < 1e-2 * (d.high - d.low)


def test_uncertainty_table_overrides_and_fixed(lung):
    data = dict(lung, uncertainty={
        "oer": {"distribution": "fixed"},
        "nk_chemokine_gain": {"distribution": "uniform", "low": 1.0, "high": 10.0},
        "alpha_per_gy": {"distribution": "normal", "sd": 0.02}})
    dists = distributions_for(instance_from_dict(data))
    s = sample_values(dists, 50, seed=1)
    assert np.all(s["oer"] == 2.8)
    assert s["nk_chemokine_gain"].min() >= 1.0 and s["nk_chemokine_gain"].max() <= 10.0
    assert dists["alpha_per_gy"].kind == "normal" and dists["alpha_per_gy"].sd == 0.02


def test_uncertainty_table_errors_are_one_line_each(lung):
    data = dict(lung, uncertainty={
        "nk_chemokin_gain": {"distribution": "uniform"},
        "oer": {"distribution": "normal", "low": 1.0},
        "nk_cytotoxicity": {"distribution": "triangle"}})
    with pytest.raises(InstanceError) as e:
        instance_from_dict(data, "x.toml")
    lines = e.value.lines()
    assert "x.toml: uncertainty.nk_chemokin_gain: unknown parameter 'nk_chemokin_gain'; " \
           "did you mean 'nk_chemokine_gain'?" in lines
    assert "x.toml: uncertainty.oer.low: 1.0 is outside the plausible range [2, 3.5]" in lines
    assert "x.toml: uncertainty.oer.sd: required for distribution = 'normal'" in lines
    assert any(l.startswith("x.toml: uncertainty.nk_cytotoxicity.distribution: unknown "
                            "distribution 'triangle'; did you mean 'triangular'?") for l in lines)


def test_sample_biology_rows_equal_single_simulations(lung):
    problem = Problem(instance_from_dict(lung))
    n = 16
    bio = sample_biology(problem, n, seed=7)
    assert np.shape(bio.alpha_per_gy) == (n,) and np.shape(bio.params.oer) == (n,)
    D, U = Plan.uniform([0, 2, 4], 18.0, [7]).daily(problem.horizon_days)
    many = simulate(bio, np.tile(D, (n, 1)), np.tile(U, (n, 1)))
    for i in (0, 5, 15):
        one = simulate(biology_rows(bio, np.array([i]), n), D, U)
        # the same arithmetic on one row: equal to round-off
        assert one.local_control[0] == pytest.approx(many.local_control[i], rel=1e-12, abs=1e-15)
        assert one.nk_auc[0] == pytest.approx(many.nk_auc[i], rel=1e-12)
    assert np.ptp(many.nk_auc) > 0  # the samples differ


def test_model_params_cli_lists_every_parameter(tmp_path, repo_root):
    r = run_cli("model", "params", "--json", cwd=repo_root)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == list(UNCERTAIN_NAMES)
    assert all(x["source"] for x in rows)


# ----------------------------------------------------------------------- 2. sensitivity
def test_sobol_on_ishigami_matches_the_known_indices():
    from SALib.test_functions import Ishigami

    from rtopt.sensitivity import analyse
    from rtopt.uncertainty import Distribution

    dists = {n: Distribution(n, "uniform", -math.pi, math.pi, 0.0) for n in ("x1", "x2", "x3")}
    res = analyse(dists, lambda v: {"y": Ishigami.evaluate(
        np.column_stack([v["x1"], v["x2"], v["x3"]]))}, "sobol", 1024, seed=1)
    # analytic indices of Ishigami (a = 7, b = 0.1; Ishigami & Homma 1990)
    S1 = {"x1": 0.3139, "x2": 0.4424, "x3": 0.0}
    ST = {"x1": 0.5576, "x2": 0.4424, "x3": 0.2437}
    for r in res.indices["y"]:
        # each estimate within 3 bootstrap half-widths (95 % intervals) plus 0.01 for the
        # interval's own sampling error: a wrong mapping or index misses by far more
        assert abs(r["S1"] - S1[r["name"]]) < 3 * r["S1_conf"] + 0.01, r
        assert abs(r["ST"] - ST[r["name"]]) < 3 * r["ST_conf"] + 0.01, r
    assert res.ranking("y") == ["x1", "x2", "x3"]  # by total index


def test_sensitivity_cli_writes_table_json_and_plots(tmp_path, repo_root):
    inst = repo_root / "instances" / "lung-sbrt-peripheral.toml"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"schedule": Plan.uniform([0, 1, 2, 3], 12.5, [4, 11]).to_dict()}))
    b.write_text(json.dumps({"schedule": Plan.uniform([0, 2, 4], 18.0, [5, 12]).to_dict()}))
    out = tmp_path / "sens"
    r = run_cli("sensitivity", str(inst), "--plan", str(a), "--versus", str(b), "--method",
                "morris", "--samples", "4", "-o", str(out), cwd=repo_root)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "sensitivity.json").read_text())
    assert set(doc["indices"]) == {"objective", "difference", "plan_wins"}
    assert 0.0 <= doc["summary"]["plan_wins"]["mean"] <= 1.0
    assert (out / "morris_difference.png").stat().st_size > 1000
    assert "probability that the plan beats the versus plan" in r.stdout
    # resume: the finished chunks are kept and reused (same key)
    assert list((out / "chunks").glob("chunk-*.npz"))


def test_sensitivity_cli_bad_plan_is_one_line(tmp_path, repo_root):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run_cli("sensitivity", "instances/lung-sbrt-peripheral.toml", "--plan", str(bad),
                cwd=repo_root)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "not JSON" in r.stderr
    assert "Traceback" not in r.stderr
