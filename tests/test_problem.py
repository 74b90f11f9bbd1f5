"""Constraints, verification and the seed's headline finding on the shipped lung instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtopt import Plan, Problem, solve
from rtopt.model import radiobiology as rb
from rtopt.model.simulator import infusion_kernels

LUNG = Path(__file__).resolve().parents[1] / "instances" / "lung-sbrt-peripheral.toml"


@pytest.fixture(scope="module")
def lung():
    return Problem.from_path(LUNG)


def test_verify_matches_radiobiology(lung):
    v = lung.verify(Plan.uniform((0, 2, 4), 18.0, (5,)))
    assert v.metrics["tumour_bed_gy"] == pytest.approx(151.2, rel=1e-12)   # textbook 54/3
    for o in lung.oars:
        assert v.metrics[f"oar.{o.name}.bed_gy"] == pytest.approx(
            float(rb.bed_uniform(3, 18.0 * o.sparing_factor, o.alpha_beta_gy)), rel=1e-12)


@pytest.mark.parametrize("plan,broken", [
    (Plan.uniform((0, 1), 12.5, (3,)), "prescription.min_bed_gy"),           # BED 56 < 100
    (Plan.uniform((5, 6, 7), 18.0, (9,)), "treatment_weekdays"),             # sat, sun
    (Plan.uniform((0, 1, 2, 3), 12.3, (4,)), "dose_grid"),                   # off the 0.5 Gy grid
    (Plan((0, 1, 2, 3), (12.5, 12.5, 12.5, 13.0), (4,)), "uniform_dose"),
    (Plan.uniform((0, 1, 2, 3), 12.5, (2,)), "nk.min_days_before_next_fraction"),
    (Plan.uniform((0, 1, 2, 3), 12.5, (4, 8)), "nk.min_interval_days"),
    (Plan.uniform((0, 1, 2, 3), 12.5, ()), "nk.n_infusions.min"),
    (Plan.uniform((0, 1, 2, 3, 4, 7, 8, 9, 10), 12.5, (11,)), "n_fractions.max"),
    (Plan.uniform((0, 24), 36.0, (25,)), "max_overall_days"),
])
def test_each_violation_is_caught(lung, plan, broken):
    v = lung.verify(plan)
    assert not v.feasible
    assert broken in {c.name for c in v.violated}


def test_verified_plan_never_reported_feasible_when_it_violates(lung):
    from rtopt.backends.base import BackendOutput, Termination
    from rtopt.planning.profiles import resolve_profile
    from rtopt.planning.solve import finish
    import time

    bad = Plan.uniform((0, 1), 12.5, (3,))
    out = BackendOutput((bad,), Termination.OPTIMAL, claimed_objective=99.0)
    r = finish(lung, resolve_profile("exhaustive"), out, time.perf_counter(),
               dict(instance="x", solver="fake", backend="fake", objective_name="x", seed=0,
                    time_limit_s=1.0, oar_names=()))
    assert not r.feasible and r.status == "no_solution" and not r.verified
    assert "prescription.min_bed_gy" in r.message
    assert r.claimed_objective == 99.0


def _best_over_infusions(problem, plan_days, dose):
    """Best verified NK favourability of a dose schedule over every rule-abiding infusion set."""
    D, _ = Plan.uniform(plan_days, dose).daily(problem.horizon_days)
    r = problem.nk
    cand = [t for t in range(r.earliest_day, r.latest_day + 1)
            if problem.infusion_day_ok(plan_days, t)]
    sets = [(a,) for a in cand] + [(a, b) for a in cand for b in cand if b - a >= r.min_interval_days]
    M = np.zeros((len(sets), len(cand)))
    for i, s in enumerate(sets):
        for d in s:
            M[i, cand.index(d)] = 1
    ker = infusion_kernels(problem.biology, D[None, :], np.array(cand))
    auc = ker.combine(0, M).nk_auc
    k = int(np.argmax(auc))
    v = problem.verify(Plan.uniform(plan_days, dose, sets[k]))
    assert v.feasible
    return v.objective


def test_moderate_doses_beat_18_gy_x_3_under_the_nk_objective(lung):
    # The seed's headline (lung SBRT 12-13 Gy vs 18 Gy per fraction) must emerge from the model:
    # both schedules meet BED10 >= 100 Gy; each gets its best infusion days.
    moderate = _best_over_infusions(lung, (0, 1, 2, 3), 12.5)
    high = _best_over_infusions(lung, (0, 2, 4), 18.0)
    assert moderate > 1.5 * high


@pytest.mark.slow
def test_exhaustive_optimum_is_moderate_and_verified(lung):
    r = solve(lung, "exhaustive")
    assert r.feasible and r.verified
    assert r.objective == pytest.approx(r.claimed_objective, rel=1e-9)   # same simulator
    # moderate doses in the tumour (the instance prescribes at the 80 % isodose: tumour dose
    # = tumour_dose_ratio x prescribed), well below the Trex1 and vascular thresholds
    assert 8.0 <= lung.tumour_dose_ratio * r.plan.doses_gy[0] <= 14.0


def test_calendar_that_cannot_hold_the_fractions_is_an_input_error():
    # caught when the file is read (a bad instance), before any solver runs
    from catalogue import classic
    from rtopt.common.errors import InstanceError
    from rtopt.problem.instance import instance_from_dict

    with pytest.raises(InstanceError) as e:
        instance_from_dict(classic(0.3, n=(10, 12), treatment_weekdays=["mon"],
                                   max_overall_days=30), source="cal.toml")
    assert any(p.startswith("fractionation.") for p, _ in e.value.problems)
