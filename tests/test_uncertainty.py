"""Decisions under uncertainty: distributions, samples, sensitivity, Dask, robust plans, trials."""

from __future__ import annotations

import json
import math
import numpy as np
import pytest

from rtopt.common.errors import InstanceError
from rtopt.problem.instance import instance_from_dict
from rtopt.model.parameters import SPECS
from rtopt.problem.problem import Plan, Problem
from rtopt.model.simulator import simulate
from _timing import GENEROUS_OVERSHOOT_S
from rtopt.model.uncertainty import (UNCERTAIN_NAMES, biology_rows, default_distribution,
                               distributions_for, sample_biology, sample_values)


@pytest.fixture(scope="module")
def lung(load_dict):
    return load_dict("lung-sbrt-peripheral")


def run_cli(*args, cwd=None):
    """Run the CLI in this process (no interpreter start-up); cwd for relative paths."""
    import os
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from rtopt.cli import app

    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        r = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(old)
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr)


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
        "nk_cytotoxicity": {"distribution": "triangle"},
        "chemokine_k_gy": {"distribution": "triangular", "low": 4.0, "high": 8.0, "mode": 9.0}})
    with pytest.raises(InstanceError) as e:
        instance_from_dict(data, "x.toml")
    lines = e.value.lines()
    assert "x.toml: uncertainty.nk_chemokin_gain: unknown parameter 'nk_chemokin_gain'; " \
           "did you mean 'nk_chemokine_gain'?" in lines
    assert "x.toml: uncertainty.oer.low: 1.0 is outside the plausible range [2, 3.5]" in lines
    assert "x.toml: uncertainty.oer.sd: required for distribution = 'normal'" in lines
    assert ("x.toml: uncertainty.chemokine_k_gy.mode: 9.0 lies outside [low, high] = "
            "[4.0, 8.0]") in lines
    assert any(l.startswith("x.toml: uncertainty.nk_cytotoxicity.distribution: unknown "
                            "distribution 'triangle'; did you mean 'triangular'?") for l in lines)


def test_sample_biology_scales_clonogens_by_gtv_cc(lung):
    """`[tumour] gtv_cc` scales the clonogen number wherever a Biology is built from an
    instance: parameter samples of a bare Instance ignored it before (only Problem applied
    it).  20 cm3 against 10 cm3: twice the clonogens in every sample, exactly (one product)."""
    import copy

    bios = {}
    for cc in (10.0, 20.0):
        d = copy.deepcopy(lung)
        d["tumour"].pop("clonogens", None)
        d["tumour"]["gtv_cc"] = cc
        inst = instance_from_dict(d)
        bios[cc] = sample_biology(inst, 8, seed=3)
        # the same number as the problem's (one code path)
        assert np.all(np.asarray(bios[cc].clonogens) == Problem(inst).biology.clonogens)
    assert np.asarray(bios[20.0].clonogens) == pytest.approx(
        2.0 * np.asarray(bios[10.0].clonogens), rel=1e-12)   # rounding of one product only
    from rtopt.model.calibrate import load_outcomes
    from rtopt.model.parameters import reference_gtv_cc

    # the reference volume the model scales by is the outcome fit's (one table)
    assert reference_gtv_cc("lung") == load_outcomes()[0]["lung"].reference_gtv_cc == 10.0


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

    from rtopt.decisions.sensitivity import analyse
    from rtopt.model.uncertainty import Distribution

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


def test_sensitivity_is_reproducible_with_seed_zero():
    from rtopt.decisions.sensitivity import analyse
    from rtopt.model.uncertainty import Distribution

    dists = {n: Distribution(n, "uniform", 0.0, 1.0, 0.5) for n in ("a", "b")}

    def model(v):
        return {"y": v["a"] + 0.1 * v["b"] ** 2}

    one = analyse(dists, model, "sobol", 64, seed=0)
    np.random.seed(123)  # the global state must not reach the bootstrap intervals
    two = analyse(dists, model, "sobol", 64, seed=0)
    assert one.indices == two.indices


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
    # a Morris grid is not a sample: no probability claimed from it
    assert "probability that the plan beats" not in r.stdout and "screening grid" in r.stdout
    assert doc["summary_is_sample"] is False
    # resume: the finished chunks are kept and reused (same key)
    assert list((out / "chunks").glob("chunk-*.npz"))


def test_sensitivity_plot_write_is_atomic(tmp_path, monkeypatch):
    """A sensitivity plot is written via a temporary file and a rename: when the write fails
    (here the rename, as on a full disk), neither a partial PNG nor the temporary file is
    left, and an old plot of the same name is kept whole."""
    import errno
    import os

    import rtopt.common.fileio as fileio
    from rtopt.decisions.sensitivity import SensitivityResult, plot

    rows = [{"name": n, "mu_star": m, "mu_star_conf": 0.1 * m, "sigma": m}
            for n, m in (("alpha_per_gy", 2.0), ("clonogens", 1.0))]
    res = SensitivityResult("morris", 2, 0, 6, ["alpha_per_gy", "clonogens"],
                            {"objective": rows}, {"objective": {}})
    plot(res, tmp_path / "ok.png")
    assert (tmp_path / "ok.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        plot(res, tmp_path / "new.png")
    old = (tmp_path / "ok.png").read_bytes()
    with pytest.raises(OSError):
        plot(res, tmp_path / "ok.png")
    assert sorted(os.listdir(tmp_path)) == ["ok.png"]   # no new.png, no .new.png.*.tmp
    assert (tmp_path / "ok.png").read_bytes() == old


def test_sensitivity_cli_bad_plan_is_one_line(tmp_path, repo_root):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run_cli("sensitivity", "instances/lung-sbrt-peripheral.toml", "--plan", str(bad),
                cwd=repo_root)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "invalid JSON" in r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------- 3. Dask
def _small_lung(lung, objective=None):
    """A small lung space (few schedules, one infusion) so robust solves take a second."""
    d = json.loads(json.dumps(lung))
    if objective is not None:
        d["objective"]["maximise"] = objective
    d["fractionation"].update(n_fractions=[3, 5], dose_per_fraction_gy=[10.0, 18.0],
                              dose_step_gy=2.0, horizon_days=21, max_overall_days=10)
    d["nk"].update(latest_day=14, n_infusions=[1, 1])
    return Problem(instance_from_dict(d))


SMALL_SPACE = {"start_window_days": 1, "extra_spacing_days": 1}


def test_chunks_give_identical_results_on_any_number_of_workers(lung):
    from dask.distributed import Client, LocalCluster

    from rtopt.decisions.sensitivity import analyse, _plan_model

    problem = Problem(instance_from_dict(lung))
    plan = Plan.uniform([0, 1, 2, 3], 12.5, [4, 11])
    dists = distributions_for(problem)
    model = _plan_model(problem, plan, None)

    def run(scheduler):
        # 4 Morris trajectories x 37 points = 148 runs in chunks of 40: 4 chunks
        return analyse(dists, model, "morris", 4, seed=2, scheduler=scheduler, chunk=40)

    from rtopt.decisions.facade import solve
    from rtopt.decisions.trial import run_trial, standard_plan

    small = _small_lung(lung)
    arms = {a: standard_plan(problem, a) for a in ("54/3", "50/5")}

    def robust(scheduler):  # blocks of 3 schedules: several chunks
        r = solve(small, "exhaustive", robust="cvar:0.5", samples=4, seed=1, scheduler=scheduler,
                  options={**SMALL_SPACE, "robust_block": 3})
        return r.plan, r.extras["robust"]

    def trial(scheduler):  # 50 patients in chunks of 16
        r = run_trial(problem, arms, 50, seed=1, scheduler=scheduler, chunk=16)
        return {a: {k: v.tolist() for k, v in d.items()} for a, d in r.patients.items()}

    serial = run("sync"), robust("sync"), trial("sync")
    for n in (1, 2):
        with LocalCluster(n_workers=n, processes=False, threads_per_worker=1,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            res, rob, tri = run(client), robust(client), trial(client)
        # each chunk's rows are simulated independently of the others: equal bit for bit
        assert res.indices == serial[0].indices and res.summary == serial[0].summary
        assert rob == serial[1]
        assert tri == serial[2]
    # the same through a LocalCluster that rtopt starts itself, and Dask's threaded scheduler
    assert run("local:2").indices == serial[0].indices
    assert run("threads").indices == serial[0].indices


def test_unreachable_scheduler_is_one_line_within_seconds(tmp_path, repo_root):
    import time

    from rtopt.decisions.distributed import CONNECT_TIMEOUT_S

    plan = tmp_path / "a.json"
    plan.write_text(json.dumps({"schedule": Plan.uniform([0, 2, 4], 18.0, [5]).to_dict()}))
    t0 = time.perf_counter()
    # port 9 (discard) on the loopback: nothing listens there
    r = run_cli("sensitivity", "instances/lung-sbrt-peripheral.toml", "--plan", str(plan),
                "--method", "morris", "--samples", "2", "--scheduler", "tcp://127.0.0.1:9",
                cwd=repo_root)
    took = time.perf_counter() - t0
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler tcp://127.0.0.1:9" in lines[0]
    # the 3 s connect timeout (rtopt.decisions.distributed.CONNECT_TIMEOUT_S) plus Dask's own retry
    # back-off, and the CLI's work around it on a machine of any load; a hang never returns
    assert took < CONNECT_TIMEOUT_S + GENEROUS_OVERSHOOT_S


def test_scheduler_without_workers_is_one_error_and_writes_nothing(tmp_path):
    import time

    from dask.distributed import LocalCluster

    from rtopt.decisions.distributed import CONNECT_TIMEOUT_S, SchedulerUnavailable, map_chunks

    out = tmp_path / "run" / "chunks"
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        t0 = time.perf_counter()
        with pytest.raises(SchedulerUnavailable, match="has no workers"):
            map_chunks(lambda i: {"x": np.array([i])}, [1, 2], scheduler=cluster.scheduler_address,
                       cache_dir=out)
        # waits CONNECT_TIMEOUT_S (3 s) for a worker, not forever
        assert time.perf_counter() - t0 < CONNECT_TIMEOUT_S + GENEROUS_OVERSHOOT_S
    assert not (tmp_path / "run").exists()


def test_a_cluster_gives_the_same_chunks_as_serial(tmp_path):
    from dask.distributed import LocalCluster

    from rtopt.decisions.distributed import map_chunks

    def fn(i):
        return {"x": np.arange(i, dtype=float) ** 0.5}

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        remote = map_chunks(fn, [3, 5, 7], scheduler=cluster.scheduler_address,
                            cache_dir=tmp_path / "c")
    serial = map_chunks(fn, [3, 5, 7], scheduler="sync")
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(remote, serial))
    assert sorted(p.name for p in (tmp_path / "c").glob("chunk-*.npz")) == [
        "chunk-00000.npz", "chunk-00001.npz", "chunk-00002.npz"]


def test_finished_chunks_are_reused_after_an_interruption(tmp_path):
    from rtopt.decisions.distributed import map_chunks

    calls = []
    interrupt = {"at": 3}

    def fn(x):
        calls.append(x)
        if x == interrupt["at"]:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the fourth chunk
        return {"y": np.array([x * 2.0])}

    with pytest.raises(KeyboardInterrupt):
        map_chunks(fn, [0, 1, 2, 3, 4], cache_dir=tmp_path, key="k")
    assert sorted(p.name for p in tmp_path.glob("chunk-*.npz")) == [
        "chunk-00000.npz", "chunk-00001.npz", "chunk-00002.npz"]
    calls.clear()
    interrupt["at"] = None
    out = map_chunks(fn, [0, 1, 2, 3, 4], cache_dir=tmp_path, key="k")
    assert calls == [3, 4]  # only the unfinished chunks ran again
    assert [float(o["y"][0]) for o in out] == [0.0, 2.0, 4.0, 6.0, 8.0]
    # another run's key discards the old chunks
    calls.clear()
    map_chunks(fn, [0, 1, 2, 3, 4], cache_dir=tmp_path, key="other")
    assert calls == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------- 4. robust
@pytest.mark.parametrize("objective", ["nk_favourability", "nk_gain_local_control"])
def test_sample_average_objective_equals_mean_of_per_sample_verified_objectives(lung, objective):
    from rtopt.decisions.facade import solve
    from rtopt.model.uncertainty import biology_rows

    problem = _small_lung(lung, objective)
    S = 6
    res = solve(problem, "exhaustive", robust="expected", samples=S, seed=0,
                options=SMALL_SPACE)
    assert res.feasible and res.verified
    rep = res.extras["robust"]
    # per sample: a problem whose biology is that one sample, verified like any plan
    bio = sample_biology(problem, S, seed=0)
    per = []
    for j in range(S):
        p = Problem(problem.instance, biology=biology_rows(bio, np.array([j]), S))
        per.append(p.verify(res.plan).objective)
    # superposition (exhaustive) vs direct simulation of each sample: equal to round-off
    assert res.extras["robust_fitness"] == pytest.approx(np.mean(per), rel=1e-9)
    assert rep["in_sample"]["mean"] == pytest.approx(np.mean(per), rel=1e-9)
    # the out-of-sample check is present, larger, and from another seed
    oos = rep["out_of_sample"]
    assert oos["samples"] == 4 * S and oos["seed"] != 0
    assert "re-verified out of sample on 24 fresh samples" in res.message
    assert rep["nominal_objective"] == pytest.approx(res.objective)


def test_robust_plan_is_best_in_sample_over_the_space(lung):
    """No plan of the space has a larger sample mean than the robust one (brute force)."""
    from rtopt.decisions.robust import _space, sample_objectives
    from rtopt.decisions.facade import solve

    problem = _small_lung(lung)
    S = 4
    res = solve(problem, "exhaustive", robust="cvar:0.5", samples=S, seed=3,
                options=SMALL_SPACE)
    D, plans_rt, _, sets = _space(problem, SMALL_SPACE)
    values = sample_values(distributions_for(problem), S, 3)
    best = -np.inf
    rows, Us = [], []
    for (days, d), row in zip(plans_rt, D):
        for s in sets:
            if all(problem.infusion_day_ok(days, t) for t in s):
                rows.append(row)
                Us.append(Plan.uniform(days, d, s).daily(problem.horizon_days)[1])
    obj = sample_objectives(problem, np.array(rows), np.array(Us), values)
    worst_half = np.sort(obj, axis=1)[:, :2].mean(axis=1)
    best = worst_half.max()
    assert res.extras["robust_fitness"] == pytest.approx(best, rel=1e-9)


def test_robust_scipy_de_runs_with_the_statistic_as_fitness(lung):
    from rtopt.decisions.facade import solve

    problem = _small_lung(lung)
    res = solve(problem, "scipy-de", robust="worst", samples=4, seed=1, time_limit_s=20,
                options={"maxiter": 3})
    assert res.feasible
    rep = res.extras["robust"]
    # DE's fitness of its plan is the plan's in-sample minimum (same samples, same statistic)
    assert res.extras["search_fitness"] == pytest.approx(rep["in_sample"]["statistic"], rel=1e-9)
    assert rep["in_sample"]["statistic"] <= rep["in_sample"]["p5"] + 1e-12


def test_robust_cli_errors_are_one_line(repo_root, tmp_path):
    for args, text in ((("--samples", "0"), "--samples must be >= 1"),
                       (("--robust", "cvar:2"), "ALPHA must be in (0, 1]"),
                       (("--robust", "median"), "unknown statistic 'median'"),
                       (("--robust", "prob-better:" + str(tmp_path / "none.json")),
                        "file not found")):
        full = ["solve", "instances/lung-sbrt-peripheral.toml"]
        full += list(args) if args[0] == "--robust" else ["--robust", "expected", *args]
        r = run_cli(*full, cwd=repo_root)
        assert r.returncode == 1, (args, r.stdout)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], (args, r.stderr)


# ----------------------------------------------------------------------- 5. trials
def test_trial_mean_tcp_matches_population_local_control_when_only_alpha_varies(lung):
    from rtopt.decisions.trial import run_trial, standard_plan

    data = dict(lung, uncertainty={n: {"distribution": "fixed"} for n in UNCERTAIN_NAMES})
    problem = Problem(instance_from_dict(data))
    arms = {a: standard_plan(problem, a) for a in ("54/3", "34/1")}
    n = 4000
    res = run_trial(problem, arms, n, seed=5)
    for a, plan in arms.items():
        tcp = res.patients[a]["tcp"]
        lc = problem.verify(plan).metrics["local_control"]   # quadrature over the alpha spread
        se = tcp.std() / math.sqrt(n)
        # Monte Carlo over patients vs the population quadrature: 4 standard errors
        # (false alarm ~6e-5) plus the quadrature's own 1e-4 (docs/model.md section 9)
        assert abs(tcp.mean() - lc) < 4 * se + 1e-4, (a, tcp.mean(), lc, se)
        lo, hi = res.summary[a]["local_control_ci95"]
        assert lo < tcp.mean() < hi
    # paired superiority: ties count half, so the two directions add up to 1
    assert res.superiority["54/3"]["34/1"] + res.superiority["34/1"]["54/3"] == pytest.approx(1)
    assert res.superiority["54/3"]["34/1"] > 0.5  # 54/3 controls more tumours than 34/1 (L1, L2)


def test_trial_cli_writes_csv_plots_and_self_contained_report(tmp_path, repo_root):
    out = tmp_path / "trial"
    plan = repo_root / "instances" / "plans" / "lung-sbrt-50-5.json"
    r = run_cli("trial", "instances/lung-sbrt-peripheral.toml", "--arm", "54/3", "--arm",
                f"rt50={plan}", "--patients", "40", "-o", str(out), cwd=repo_root)
    assert r.returncode == 0, r.stderr
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("patient,arm,tcp,") and len(rows) == 1 + 2 * 40
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="figures/' not in html
    assert "Probability of superiority" in html
    md = (out / "report.md").read_text()
    assert "](figures/tcp.png)" in md and (out / "figures" / "tcp.png").exists()
    doc = json.loads((out / "summary.json").read_text())
    assert doc["arms"]["rt50"]["schedule"]["nk_infusions"] == []   # the file is RT alone
    assert doc["arms"]["54/3"]["schedule"]["nk_infusions"]          # shorthand gets NK days
    assert doc["arms"]["rt50"]["nk_gain"] == 0.0


def test_trial_cli_errors_are_one_line(repo_root):
    for args, text in ((("--arm", "55/5"), "--arm 55/5: unknown standard schedule '55/5'; did you mean"),
                       (("--arm", "54/3", "--patients", "0"), "--patients must be >= 1")):
        r = run_cli("trial", "instances/lung-sbrt-peripheral.toml", *args, cwd=repo_root)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], r.stderr


def test_prob_better_breaks_ties_by_the_expected_objective(lung):
    from rtopt.decisions.robust import RobustSpec, search_fitness, statistic
    from rtopt.decisions.facade import solve

    spec = RobustSpec("prob-better", reference=Plan.uniform([0], 20.0))
    ref = np.zeros(4)
    obj = np.array([[1.0, 1.0, 1.0, 1.0],      # wins 4/4, mean 1
                    [9.0, 9.0, 9.0, 9.0],      # wins 4/4, mean 9: preferred on the tie
                    [99.0, 99.0, 99.0, -1.0]])  # wins 3/4 only, however large its mean
    assert list(statistic(spec, obj, ref)) == [1.0, 1.0, 0.75]
    f = search_fitness(spec, obj, ref)
    assert f[1] > f[0] > f[2]
    problem = _small_lung(lung)
    res = solve(problem, "exhaustive", robust=spec, samples=4, seed=0, options=SMALL_SPACE)
    assert res.extras["robust"]["in_sample"]["prob_better_than_reference"] == \
        res.extras["robust_fitness"]


def test_robust_reports_the_probability_of_beating_a_given_reference(lung):
    from rtopt.decisions.robust import sample_objectives
    from rtopt.decisions.facade import solve

    problem = _small_lung(lung)
    ref = Plan.uniform([0, 2, 4], 18.0, [5])
    res = solve(problem, "exhaustive", robust="expected", samples=4, seed=0,
                options=SMALL_SPACE, reference=ref)
    rep = res.extras["robust"]
    values = sample_values(distributions_for(problem), 4, 0)
    mine = sample_objectives(problem, *(a[None] for a in res.plan.daily(21)), values)[0]
    theirs = sample_objectives(problem, *(a[None] for a in ref.daily(21)), values)[0]
    assert rep["in_sample"]["prob_better_than_reference"] == np.mean(mine > theirs)
    assert "prob_better_than_reference" in rep["out_of_sample"]
    assert rep["in_sample"]["statistic"] == pytest.approx(mine.mean(), rel=1e-12)


def test_sobol_runs_are_draws_of_the_distributions():
    """Every Saltelli run maps to a draw of the joint distribution, so means over the runs
    estimate expectations (what the plan_wins probability relies on)."""
    from rtopt.decisions.sensitivity import analyse
    from rtopt.model.uncertainty import Distribution

    dists = {"a": Distribution("a", "triangular", 1.0, 4.0, 1.5),
             "b": Distribution("b", "loguniform", 0.01, 1.0, 0.1)}
    res = analyse(dists, lambda v: {"y": v["a"] + v["b"]}, "sobol", 1024, seed=0)
    exact = (1.0 + 4.0 + 1.5) / 3 + (1.0 - 0.01) / math.log(100.0)
    # quasi-random Sobol points: error ~1/N; 5e-3 is far below any mapping error (e.g. the
    # uniform mean of b, 0.505, would be off by 0.29)
    assert res.summary["y"]["mean"] == pytest.approx(exact, abs=5e-3)


def test_validate_cli_reports_uncertainty_problems_as_file_lines(tmp_path, lung, repo_root):
    import tomli_w

    data = dict(lung, uncertainty={"nk_chemokine_gain": {"distribution": "uniform",
                                                         "low": -1.0, "high": 30.0},
                                   "trex1_treshold_gy": {"distribution": "fixed"}})
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(data))
    r = run_cli("validate", str(path), cwd=repo_root)
    assert r.returncode == 1
    assert sorted(r.stderr.strip().splitlines()) == sorted([
        f"{path}: uncertainty.nk_chemokine_gain.low: -1.0 is outside the plausible range [0, 20]",
        f"{path}: uncertainty.nk_chemokine_gain.high: 30.0 is outside the plausible range [0, 20]",
        f"{path}: uncertainty.trex1_treshold_gy: unknown parameter 'trex1_treshold_gy'; "
        "did you mean 'trex1_threshold_gy'?"])
    # a valid table round-trips through the TOML writer
    good = instance_from_dict(dict(lung, uncertainty={"oer": {"distribution": "fixed"}}))
    assert instance_from_dict(__import__("tomllib").loads(good.to_toml())) == good


def test_sensitivity_of_a_metric_and_unknown_metric(lung, repo_root, tmp_path):
    from rtopt.decisions.sensitivity import SensitivityError, plan_sensitivity

    problem = Problem(instance_from_dict(lung))
    plan = Plan.uniform([0, 2, 4], 18.0, [5, 12])
    res = plan_sensitivity(problem, plan, method="morris", samples=3, seed=0,
                           metric="local_control")
    # local control of 54/3 stays a probability under every parameter draw
    s = res.summary["objective"]
    assert 0.0 <= s["p5"] <= s["p95"] <= 1.0 and res.meta["objective_name"] == "local_control"
    # the spread of radiosensitivity drives local control; the NK product hardly does at 18 Gy
    rank = res.ranking()
    assert rank.index("alpha_per_gy") < rank.index("nk_d0_gy")
    with pytest.raises(SensitivityError, match="unknown metric 'local_kontrol'"):
        plan_sensitivity(problem, plan, method="morris", samples=2, metric="local_kontrol")


def test_sobol_shares_by_basis_sum_to_one_and_count_the_unsourced(lung):
    """The share of the summed total indices by each parameter's basis, printed and in JSON."""
    from rtopt.decisions.sensitivity import UNSOURCED_BASES, basis_shares, plan_sensitivity
    from rtopt.model.parameters import basis

    problem = Problem(instance_from_dict(lung))
    res = plan_sensitivity(problem, Plan.uniform([0, 1, 2, 3], 12.5, [4, 11]),
                           Plan.uniform([0, 2, 4], 18.0, [5, 12]), method="sobol", samples=16)
    shares = res.to_dict()["total_index_share_by_basis"]
    assert set(shares) == {"objective", "difference", "plan_wins"} - {
        o for o, rows in res.indices.items() if sum(max(0, r["ST"]) for r in rows) == 0}
    prov = dict(problem.biology.params.provenance)
    for out, share in shares.items():
        parts = {b: v for b, v in share.items() if b != "unsourced"}
        assert sum(parts.values()) == pytest.approx(1.0, abs=1e-12)
        assert share["unsourced"] == pytest.approx(sum(parts.get(b, 0) for b in UNSOURCED_BASES))
        # recomputed by hand for one basis
        rows = res.indices[out]
        tot = sum(max(0.0, r["ST"]) for r in rows)
        direct = sum(max(0.0, r["ST"]) for r in rows
                     if basis(r["name"], prov.get(r["name"])) == "direction")
        assert parts.get("direction", 0.0) == pytest.approx(direct / tot)
    assert basis_shares(res, prov) == shares
