"""The robust exhaustive search: its bounds are bounds, its pruning changes no answer.

:func:`rtopt.decisions.robust.robust_search` prunes schedules whose upper bound on the robust
fitness falls below a fitness another schedule achieves.  The bound rests on the objective never
decreasing when an infusion is added (:data:`rtopt.problem.problem.NK_NONDECREASING`); these
tests hold the model to that, the bounds to the exact values, and the pruned search to the full
enumeration.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from rtopt.decisions import robust as R
from rtopt.model.uncertainty import biology_with, distributions_for, sample_values
from rtopt.problem.instance import instance_from_dict
from rtopt.problem.problem import (INFUSION_INDEPENDENT, NK_NONDECREASING, SIMULATION_METRICS,
                                   Plan, Problem)

SMALL_SPACE = {"start_window_days": 1, "extra_spacing_days": 1}
MONOTONE_TOL = 1e-9
"""Round-off allowance of the monotonicity check: the population TCP kernel is within 2e-11 of
its definition and the NK integrals are sums of ~100 terms; a real decrease from an added
infusion would be of the size of the NK effect itself (1e-4 and above)."""


@pytest.fixture(scope="module")
def lung(load_dict):
    return load_dict("lung-sbrt-peripheral")


def _small(lung, objective="local_control", n_infusions=(1, 2), latest_day=21):
    """A small lung space with up to two infusions (tens of schedules)."""
    d = json.loads(json.dumps(lung))
    d["objective"]["maximise"] = objective
    d["fractionation"].update(n_fractions=[3, 5], dose_per_fraction_gy=[10.0, 18.0],
                              dose_step_gy=2.0, horizon_days=28, max_overall_days=10)
    d["nk"].update(latest_day=latest_day, n_infusions=list(n_infusions))
    return Problem(instance_from_dict(d))


def _reference(problem, values, nk_days=()):
    plan = Plan.uniform([0, 4, 8], 18.0, list(nk_days))
    ref = R.sample_objectives(problem, *(a[None] for a in plan.daily(problem.horizon_days)),
                              values)[0]
    return R.RobustSpec("prob-better", reference=plan, reference_name="54/3"), ref


def test_metrics_never_decrease_when_an_infusion_is_added(lung):
    """Every metric in NK_NONDECREASING grows (or stays) when an infusion is added to a plan,
    every metric in INFUSION_INDEPENDENT stays, on sampled parameters and random schedules."""
    problem = Problem(instance_from_dict(lung))
    S = 16
    values = sample_values(distributions_for(problem), S, 5)
    p = copy.copy(problem)
    p.biology = biology_with(problem.biology, values)
    rng = np.random.default_rng(0)
    H = problem.horizon_days
    D = np.zeros((S, H))
    U = np.zeros((S, H))
    for j in range(S):
        n = rng.integers(1, 9)
        D[j, np.sort(rng.choice(21, n, replace=False))] = rng.uniform(6.0, 20.0)
        U[j, rng.integers(0, 35)] = 1.0
    U2 = U.copy()
    U2[np.arange(S), rng.integers(0, 35, S)] += 1.0
    m1 = Problem.evaluate(p, D, U, simulate_tme=True, all_metrics=True).metrics
    m2 = Problem.evaluate(p, D, U2, simulate_tme=True, all_metrics=True).metrics
    assert set(SIMULATION_METRICS) <= NK_NONDECREASING | INFUSION_INDEPENDENT
    changed = 0
    for name in NK_NONDECREASING:
        a, b = np.asarray(m1[name], dtype=float), np.asarray(m2[name], dtype=float)
        assert np.all(b >= a - MONOTONE_TOL * np.maximum(1.0, np.abs(a))), name
        changed += int(np.any(b > a + 1e-6))
    assert changed >= 4          # the check sees real NK effects, not constants
    for name in INFUSION_INDEPENDENT & set(m1):
        np.testing.assert_allclose(m2[name], m1[name], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("stat", ["expected", "worst", "cvar:0.5", "prob-better",
                                  "prob-better-nk"])
def test_pruned_search_equals_full_enumeration(lung, stat):
    """Same plan, same fitness of every schedule scored, and every pruned schedule's exact
    fitness below the optimum."""
    problem = _small(lung)
    S = 6
    values = sample_values(distributions_for(problem), S, 2)
    D, plans_rt, bed, sets = R._space(problem, SMALL_SPACE)
    # against 54/3 with infusions, samples where both reach local control 1 tie
    spec, ref = (_reference(problem, values, [12, 19] if stat.endswith("nk") else [])
                 if stat.startswith("prob-better") else (R.parse_robust(stat), None))
    assert R.bounds_apply(problem, values)
    pruned = R.robust_search(problem, spec, values, ref, D, plans_rt, bed, sets, block=7)
    full = R.robust_search(problem, spec, values, ref, D, plans_rt, bed, sets, prune=False)
    assert pruned["bounded"] and not full["bounded"]
    assert pruned["pruned"] > 0 and full["pruned"] == 0
    best = int(np.argmax(full["fitness"]))
    assert int(np.argmax(pruned["fitness"])) == best
    assert pruned["set"][best] == full["set"][best]
    kept = np.isfinite(pruned["fitness"])
    np.testing.assert_array_equal(pruned["fitness"][kept], full["fitness"][kept])
    assert np.all(full["fitness"][~kept] < full["fitness"][best])


@pytest.mark.parametrize("latest_day", [21, 5])
def test_bounds_bracket_the_exact_fitness(lung, latest_day):
    """``upper`` >= the best set's fitness >= ``lower`` for every schedule (infusions up to
    day 21; or only during the course, where they radiosensitise later fractions)."""
    problem = _small(lung, n_infusions=(1, 1), latest_day=latest_day)
    S = 5
    values = sample_values(distributions_for(problem), S, 4)
    D, plans_rt, bed, sets = R._space(problem, SMALL_SPACE)
    spec, ref = _reference(problem, values)
    idx = np.arange(len(D))
    b = R.score_block(problem, spec, values, ref, D, plans_rt, bed, sets, idx, bounds_only=True)
    e = R.score_block(problem, spec, values, ref, D, plans_rt, bed, sets, idx)
    ok = np.isfinite(e["fitness"])
    assert ok.sum() > 10
    assert np.all(b["upper"][ok] >= e["fitness"][ok])
    assert np.all(b["lower"][ok] <= e["fitness"][ok])
    # the bound is close: the best set's NK effect is a small part of local control
    assert np.median(b["upper"][ok] - e["fitness"][ok]) < 0.5 / S


def test_no_pruning_when_nk_cells_could_lower_the_objective(lung):
    problem = _small(lung)
    values = sample_values(distributions_for(problem), 4, 0)
    assert R.bounds_apply(problem, values)
    bad = {**values, "nk_radiosensitisation_max": -np.abs(values.get(
        "nk_radiosensitisation_max", np.full(4, 0.1)))}
    assert not R.bounds_apply(problem, bad)


def test_robust_reoxygenation_objective_is_scored(lung):
    """The reoxygenation gain (radiotherapy alone) is an objective of robust solves too: the
    chosen plan's in-sample statistic is the sample mean of its own objective."""
    from rtopt.decisions.facade import solve

    problem = _small(lung, "reoxygenation_gain_local_control", n_infusions=(1, 1))
    res = solve(problem, "exhaustive", robust="expected", samples=4, seed=1,
                options=SMALL_SPACE)
    assert res.feasible and res.verified
    rep = res.extras["robust"]
    assert res.extras["robust_fitness"] == pytest.approx(rep["in_sample"]["mean"], rel=1e-9)


def test_robust_heuristic_search_shows_progress_on_a_terminal(lung, monkeypatch):
    """A robust scipy-de solve updates a progress bar (scored plans and the best feasible
    statistic) when stderr is a terminal, and prints nothing extra otherwise."""
    import io

    from rich.console import Console

    from rtopt.common import console
    from rtopt.decisions.facade import solve

    problem = _small(lung, "local_control", n_infusions=(1, 1))
    buf = io.StringIO()
    monkeypatch.setattr(console, "err_console",
                        Console(file=buf, force_terminal=True, width=120))
    seen = []
    real = console.search_progress

    def spy(*args, **kw):
        cm = real(*args, **kw)

        class Wrapped:
            def __enter__(self):
                tick = cm.__enter__()

                def counted(n, best):
                    seen.append((n, best))
                    tick(n, best)
                return counted

            def __exit__(self, *exc):
                return cm.__exit__(*exc)
        return Wrapped()

    monkeypatch.setattr(R, "search_progress", spy)
    res = solve(problem, "scipy-de", robust="expected", samples=3, seed=1, time_limit_s=30,
                options={"maxiter": 2})
    assert res.feasible
    assert sum(n for n, _ in seen) > 10
    best = [b for _, b in seen if b == b]
    assert best and max(best) <= 1.0 + 1e-12       # local control statistic: a probability
    assert "robust scipy_de" in buf.getvalue()      # the bar was drawn on the terminal


def test_upper_fitness_bounds_the_fitness_and_keeps_exact_ties_lost():
    """``search_fitness(..., upper=True)`` of bounds is >= the fitness of any objective below
    them; for prob-better a bound that equals the reference exactly (both saturated at local
    control 1) is not a win, a bound within round-off above it is."""
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.8, 1.0, 64)
    ref[:8] = 1.0                                   # saturated samples: ties, never wins
    spec = R.RobustSpec("prob-better", reference=None, reference_name="r")
    for stat in (spec, R.parse_robust("expected"), R.parse_robust("worst"),
                 R.parse_robust("cvar:0.25")):
        ub = np.minimum(ref + rng.normal(0, 0.01, 64), 1.0)
        obj = ub - np.abs(rng.normal(0, 0.005, 64))
        assert R.search_fitness(stat, ub, ref, upper=True) >= R.search_fitness(stat, obj, ref)
    ub = ref.copy()
    exact = R.search_fitness(spec, ub, ref)
    assert R.search_fitness(spec, ub, ref, upper=True) < exact + 1 / 64   # ties stay lost
    ub[20] = np.nextafter(ref[20], 2.0)
    assert R.search_fitness(spec, ub, ref, upper=True) >= exact + 1 / 64  # a hair above: a win
    ub[30] = np.nextafter(ref[30], 0.0)             # a hair below: round-off may hide a win
    assert R.search_fitness(spec, ub, ref, upper=True) >= exact + 2 / 64


def test_threads_scheduler_reports_each_chunk_as_it_finishes(monkeypatch):
    """With ``threads`` the progress bar advances once per finished chunk while others run
    (Dask's threaded compute returned them all at the end), and results keep their order."""
    import contextlib
    import threading

    from rtopt.decisions import distributed

    ticks = []
    ticked = threading.Event()

    @contextlib.contextmanager
    def fake_progress(label, total, completed):
        def advance():
            ticks.append(1)
            ticked.set()
        yield advance

    monkeypatch.setattr(distributed, "_progress", fake_progress)
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 2)

    def fn(i):
        if i == 0:   # finishes only after another chunk has been reported (60 s: load-proof)
            assert ticked.wait(timeout=60)
        return {"i": np.array([i])}

    out = distributed.map_chunks(fn, list(range(4)), scheduler="threads", progress="x")
    assert [int(r["i"][0]) for r in out] == [0, 1, 2, 3]
    assert len(ticks) == 4


def test_outcomes_of_cycles_share_the_plan_without_nk_cells(lung):
    """``tumour_outcomes(..., shared=S)`` on m infusion sets x S samples (rows k * S + j)
    computes the plan without NK cells for one cycle of S rows: the same numbers as row by
    row (bit for bit: the same compiled pass on the same inputs)."""
    from rtopt.model.simulator import tumour_outcomes
    from rtopt.model.uncertainty import biology_rows

    problem = Problem(instance_from_dict(lung))
    S, m, F = 5, 3, 4
    values = sample_values(distributions_for(problem), S, 3)
    bio_s = biology_with(problem.biology, values)
    bio_r = biology_rows(bio_s, np.tile(np.arange(S), m), S)
    rng = np.random.default_rng(0)
    fd = np.tile(np.array([[12.0, 12.0, 12.0, 12.0]]), (m * S, 1))
    fh = np.tile(rng.uniform(0.05, 0.3, (S, F)), (m, 1))
    act = rng.uniform(0.0, 0.5, (m * S, F)) * (rng.random((m * S, F)) < 0.6)
    auc = rng.uniform(0.0, 3.0, m * S)
    D = np.zeros((m * S, 14))
    D[:, [0, 1, 2, 3]] = 12.0
    a = tumour_outcomes(bio_r, bio_r.params, D, fd, fh, act, auc, True, shared=S)
    b = tumour_outcomes(bio_r, bio_r.params, D, fd, fh, act, auc, True, shared=False)
    assert np.any(act > 0)
    for k in ("local_control_without_nk", "log10_kill_without_nk", "nk_gain_local_control",
              "local_control", "ln_survival"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
