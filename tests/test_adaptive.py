"""Adaptive re-planning: course records, the importance-weighted update, the remaining-course
re-plan and the study of the value of adapting (rtopt.problem.course, rtopt.decisions.adaptive)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtopt.model import radiobiology as rb
from rtopt.decisions.adaptive import LOW_ESS, adaptive_study, predict_observations, replan, update
from rtopt.cli import app
from rtopt.problem.course import Observation, course_from_dict, load_course
from rtopt.problem.problem import Plan, Problem

ROOT = Path(__file__).resolve().parents[1]
LUNG = ROOT / "instances" / "lung-sbrt-peripheral.toml"
COURSE = ROOT / "instances" / "courses" / "lung-sbrt-peripheral.toml"
runner = CliRunner()


@pytest.fixture(scope="module")
def lung() -> Problem:
    return Problem.from_path(LUNG)


@pytest.fixture(scope="module")
def nominal(lung):
    from rtopt.planning.solve import solve

    res = solve(lung, "exhaustive")
    assert res.feasible
    return res.plan


def course_dict(plan: Plan, k: int, **extra):
    """The first ``k`` fractions of ``plan`` delivered; today = the day of fraction k."""
    today = plan.fraction_days[k]
    return {"schema_version": 1, "instance": "lung-sbrt-peripheral", "today": today,
            "fraction": [{"day": d, "dose_gy": x} for d, x in zip(plan.fraction_days[:k],
                                                                   plan.doses_gy[:k])],
            "infusion": [{"day": t, "product": "il15_expanded"} for t in plan.nk_days
                         if t < today], **extra}


# ------------------------------------------------------------------------------ update
def test_bundled_course_loads(lung):
    c = load_course(COURSE, lung)
    assert c.delivered.fraction_days == (0, 1) and c.delivered.doses_gy == (10.0, 10.0)
    assert [o.quantity for o in c.observations] == ["hypoxic_fraction"]
    assert c.today == 3


def test_update_without_observations_is_the_prior(lung, nominal):
    c = course_from_dict(course_dict(nominal, 2), lung)
    post = update(lung, c, samples=300, seed=3)
    # equal weights: every posterior statistic is the prior's, exactly
    assert np.all(post.weights == 1.0 / 300)
    assert post.ess == pytest.approx(300, rel=1e-12)  # 1/sum(w^2) of equal weights, round-off
    assert post.moved() == []
    for r in post.parameters():
        assert r["posterior_mean"] == pytest.approx(r["prior_mean"], rel=1e-12, abs=1e-15)
    # the planning values are the nominal ones (shift exactly zero, up to round-off)
    for k, v in post.adapted_values().items():
        assert v == pytest.approx(post.distributions[k].value, rel=1e-9)


def test_update_moves_hypoxia_parameters_towards_the_observation(lung):
    post = update(lung, load_course(COURSE, lung), samples=2000, seed=0)
    assert LOW_ESS < post.ess < post.n
    assert not post.warning()
    pred = post.predicted()[0]
    # the posterior prediction lies closer to the observation than the prior one
    assert abs(pred["posterior_mean"] - 0.30) < abs(pred["prior_mean"] - 0.30)
    assert pred["posterior_sd"] < pred["prior_sd"]
    moved = {r["name"] for r in post.moved()}
    # FMISO informs the reoxygenation parameters, not the NK ones
    assert moved & {"demand_drop_max", "vascular_d50_gy"}
    assert not any(m.startswith("nk_") for m in moved)


def test_far_observation_warns_low_ess(lung):
    c = load_course(COURSE, lung).with_observations(
        (Observation(3, "hypoxic_fraction", 0.95, 0.005),))
    post = update(lung, c, samples=500, seed=0)
    assert post.low_ess and "effective sample size" in post.warning()


def test_observation_predictions_use_the_state_before_the_day(lung):
    # an observation on day 0 is the untreated tumour: the instance's baseline hypoxia
    c = course_from_dict({"schema_version": 1, "instance": "lung-sbrt-peripheral", "today": 2,
                          "fraction": [{"day": 0, "dose_gy": 10.0}]}, lung)
    obs = (Observation(0, "hypoxic_fraction", 0.2, 0.05),
           Observation(0, "hypoxic_volume_ratio", 1.0, 0.1),
           Observation(2, "tumour_volume_ratio", 1.0, 0.1, clearance_half_life_days=20.0))
    pred = predict_observations(lung, lung.biology, 1, c, obs)[:, 0]
    assert pred[0] == pytest.approx(0.21, rel=1e-12)  # h0 of the instance, before any event
    assert pred[1] == pytest.approx(1.0, rel=1e-12)
    # after 10 Gy most clonogens are dead but not yet cleared: volume between S and 1
    assert 0.5 < pred[2] < 1.0


# ------------------------------------------------------------------------------ re-plan
def test_observation_equal_to_prediction_keeps_the_nominal_plan(lung, nominal):
    c = course_from_dict(course_dict(nominal, 2), lung)
    today = c.today
    y = float(predict_observations(lung, lung.biology, 1, c,
                                   (Observation(today, "hypoxic_fraction", 0.0, 0.04),))[0, 0])
    for cc in (c, c.with_observations((Observation(today, "hypoxic_fraction", y, 0.04),))):
        res = replan(lung, cc, prior_samples=1000)
        assert res.feasible and res.verified
        assert res.plan == nominal, (res.plan.describe(), nominal.describe())


def test_replan_keeps_delivered_and_counts_delivered_bed(lung):
    c = load_course(COURSE, lung)
    res = replan(lung, c, prior_samples=1000)
    assert res.feasible and res.verified
    assert res.plan.fraction_days[:2] == (0, 1) and res.plan.doses_gy[:2] == (10.0, 10.0)
    assert res.delivered == c.delivered
    assert all(d >= c.today for d in res.remaining.fraction_days)
    assert all(t >= c.today for t in res.remaining.nk_days)
    # the reported BED is the whole course's, and the remaining fractions alone fall short
    full = rb.bed(np.array(res.plan.doses_gy), lung.alpha_beta)
    rest = rb.bed(np.array(res.remaining.doses_gy), lung.alpha_beta)
    assert res.metrics["tumour_bed_gy"] == pytest.approx(full, rel=1e-12)
    assert rest < lung.min_bed <= full
    # re-verified by the instance's own verification, at the nominal parameters too
    assert lung.verify(res.plan).feasible
    d = res.to_dict()
    assert d["delivered"] == c.delivered.to_dict() and d["remaining"] == res.remaining.to_dict()
    # the written course says how its doses reach the tumour (the instance's ratio)
    assert d["schedule"] == res.plan.to_file_dict(lung.tumour_dose_ratio) and d["verified"] is True


def test_replan_prescription_counts_delivered_bed_non_uniform(lung):
    """With per-fraction doses allowed, two delivered 20 Gy fractions (BED10 120 Gy) already
    meet the prescription: the re-plan may add small fractions (rules permitting)."""
    from rtopt.problem.instance import instance_from_dict

    data = lung.instance.to_dict()
    data["fractionation"] = {**data["fractionation"], "uniform_dose": False}
    p = Problem(instance_from_dict(data))
    c = course_from_dict({"schema_version": 1, "instance": p.name, "today": 2,
                          "fraction": [{"day": 0, "dose_gy": 20.0}, {"day": 1, "dose_gy": 20.0}]},
                         p)
    res = replan(p, c, prior_samples=500)
    assert res.feasible
    oar = lung.oars[0]
    full = rb.bed(rb.oar_doses(np.array(res.plan.doses_gy), oar.sparing_factor), oar.alpha_beta_gy)
    assert res.metrics[f"oar.{oar.name}.bed_gy"] == pytest.approx(full, rel=1e-12)
    assert full <= oar.max_bed_gy * (1 + 1e-9)  # rounding of the limit check (FEAS_TOL scale)
    assert res.plan.doses_gy[:2] == (20.0, 20.0)


def test_other_backends_decline(lung):
    res = replan(lung, COURSE, "scipy_de", prior_samples=200)
    assert res.status == "declined" and res.exit_code == 1
    assert "exhaustive" in res.message


@pytest.mark.slow
def test_robust_replan_on_posterior_samples(lung):
    res = replan(lung, COURSE, robust="expected", samples=4, prior_samples=500)
    assert res.feasible and res.plan.fraction_days[:2] == (0, 1)
    assert res.extras["robust"]["samples"] == 4


# ------------------------------------------------------------------------------ study
@pytest.mark.slow
def test_adaptive_study_gain_from_verified_plans(lung):
    r = adaptive_study(lung, patients=3, prior_samples=300, seed=1)
    d = r.to_dict()
    assert d["patients"] == 3 and len(r.gains) == 3
    # the gain is the difference of the two verified objectives, patient by patient
    assert np.allclose(r.gains, r.adaptive_objective - r.nominal_objective, rtol=0, atol=0)
    assert np.allclose(r.information_gains, r.adaptive_objective - r.blind_objective,
                       rtol=0, atol=0)
    lo, hi = r.ci95
    assert lo <= r.gains.mean() + 1e-12 and r.gains.mean() <= hi + 1e-12  # round-off only


# ------------------------------------------------------------------------------ CLI
def _one_line_error(tmp_path, text, args=("update",)):
    f = tmp_path / "course.toml"
    f.write_text(text)
    res = runner.invoke(app, [*args, str(LUNG), str(f)])
    assert res.exit_code == 1, res.output
    err = [ln for ln in res.stderr.splitlines() if ln]
    assert len(err) == 1, err
    assert "Traceback" not in res.output
    assert err[0].startswith(f"{f}: ")
    return err[0]


BASE = """schema_version = 1
instance = "lung-sbrt-peripheral"
today = 3
[[fraction]]
day = 0
dose_gy = 10.0
"""


@pytest.mark.parametrize("extra,expect", [
    ('[[observation]]\nday = 5\nquantity = "hypoxic_fraction"\nvalue = 0.3\nsd = 0.04\n',
     "observation[0].day: day 5 is after today (3)"),
    ('[[observation]]\nday = 2\nquantity = "hypoxic_fraction"\nvalue = 1.2\nsd = 0.04\n',
     "observation[0].value: a hypoxic fraction must be in [0, 1]"),
    ('[[observation]]\nday = 2\nquantity = "hypoxic_fraction"\nvalue = -0.1\nsd = 0.04\n',
     "observation[0].value: a hypoxic fraction must be in [0, 1]"),
    ("dose 30", "fraction[0].dose_gy: 30 Gy breaks the instance's dose_per_fraction.max"),
    ("dose 10.3", "fraction[0].dose_gy: 10.3 Gy is not on the instance's 0.5 Gy dose grid"),
    ('[[fraction]]\nday = 4\ndose_gy = 10.0\n',
     "fraction[1].day: day 4 is not before today (3)"),
    ('[[fraction]]\nday = 1\ndose_gy = 12.0\n',
     "fraction: the delivered doses differ (10, 12 Gy) but the instance has uniform_dose = true"),
])
def test_bad_course_one_line_exit_1(tmp_path, extra, expect):
    text = (BASE.replace("dose_gy = 10.0", f"dose_gy = {extra.split()[1]}")
            if extra.startswith("dose ") else BASE + extra)
    assert expect in _one_line_error(tmp_path, text)


def test_course_for_another_instance(tmp_path):
    line = _one_line_error(tmp_path, BASE.replace('"lung-sbrt-peripheral"', '"prostate-sbrt"'),
                           ("replan",))
    assert "instance: the course is for instance 'prostate-sbrt', not 'lung-sbrt-peripheral'" in line


def test_cli_update_and_replan(tmp_path):
    png = tmp_path / "u.png"
    res = runner.invoke(app, ["update", str(LUNG), str(COURSE), "-n", "500", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "effective sample size" in res.stdout and png.stat().st_size > 10_000
    out = tmp_path / "plan.json"
    res = runner.invoke(app, ["replan", str(LUNG), str(COURSE), "--prior-samples", "500",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "remaining:" in res.stdout and "verified: True" in res.stdout
    import json

    d = json.loads(out.read_text())
    assert d["delivered"]["fractions"] == [{"day": 0, "dose_gy": 10.0}, {"day": 1, "dose_gy": 10.0}]
    assert Plan.from_dict(d) == Plan.from_dict(d["delivered"]) or d["remaining"]["fractions"]
