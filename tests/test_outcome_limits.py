"""Prescription convention, standard schedules, local-control limits and the reoxygenation gain
(docs/model.md section 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.common.errors import InstanceError
from rtopt.model.standards import standard_schedule, standard_schedules, tumour_dose_ratio
from rtopt.problem.instance import instance_from_dict, load_instance
from rtopt.problem.problem import Plan, Problem

ROOT = Path(__file__).resolve().parents[1]
LUNG = ROOT / "instances" / "lung-sbrt-peripheral.toml"


def _lung(**prescription):
    data = load_instance(LUNG).to_dict()
    data["prescription"].update(prescription)
    return data


def test_isodose_convention_sets_the_tumour_dose():
    assert tumour_dose_ratio() == 1.0
    assert tumour_dose_ratio(80) == pytest.approx(1.2)
    assert tumour_dose_ratio(80, 1.1) == 1.1
    p = Problem.from_path(LUNG)
    assert p.tumour_dose_ratio == pytest.approx(1.2)
    # the tumour is killed by its own dose: 18 Gy at ratio 1.2 is 21.6 Gy at ratio 1,
    # while the prescription BED stays on the prescribed dose
    data = _lung()
    data["prescription"].pop("isodose_percent")
    iso = Problem(instance_from_dict(data))
    a = p.verify(Plan.uniform((0, 4, 8), 18.0, (12,)))
    b = iso.verify(Plan.uniform((0, 4, 8), 21.6, (12,)))
    assert a.metrics["tumour_log10_kill"] == pytest.approx(b.metrics["tumour_log10_kill"],
                                                           rel=1e-9)
    assert a.metrics["tumour_bed_gy"] == pytest.approx(151.2)


def test_bad_conventions_and_names_are_one_line_errors():
    with pytest.raises(InstanceError) as e:
        instance_from_dict(_lung(tumour_dose_ratio=1.2, local_control_vs="54/4",
                                 isodose_percent=80))
    msgs = dict(e.value.problems)
    assert "not both" in msgs["prescription.isodose_percent"]
    assert "did you mean '54/3'" in msgs["prescription.local_control_vs"]
    with pytest.raises(InstanceError) as e:
        instance_from_dict(_lung(local_control_margin=0.02))
    assert "needs local_control_vs" in dict(e.value.problems)["prescription.local_control_margin"]


def test_standard_schedules_are_one_table():
    from rtopt.decisions.trial import STANDARD_ARMS, standard_plan

    table = standard_schedules()
    assert set(STANDARD_ARMS) <= set(table)
    p = Problem.from_path(LUNG)
    plan = standard_plan(p, "48/4")
    assert plan.fraction_days == standard_schedule("48/4").days
    assert plan.tumour_dose_ratio == pytest.approx(1.2)
    with pytest.raises(Exception, match="did you mean"):
        standard_plan(p, "48/5")


def test_gtv_volume_scales_clonogens_and_control():
    small, big = _lung(), _lung()
    small["tumour"]["gtv_cc"] = 5.0
    big["tumour"]["gtv_cc"] = 40.0
    plan = Plan.uniform((0, 1, 2, 3), 12.0, (4,))
    lc = [Problem(instance_from_dict(d)).verify(plan).metrics["local_control"]
          for d in (small, big)]
    assert lc[0] > lc[1]
    both = _lung()
    both["tumour"].update(gtv_cc=5.0, clonogens=1e6)
    with pytest.raises(InstanceError, match="not both"):
        instance_from_dict(both)


def test_simulate_reports_the_reoxygenation_gain():
    r = CliRunner().invoke(app, ["simulate", str(LUNG), "--dose", "10", "--days", "0,1,2,3,4",
                                 "--nk-days", "4", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["metrics"]
    assert m["reoxygenation_gain_local_control"] == pytest.approx(
        m["local_control_without_nk"] - m["local_control_without_reoxygenation"], abs=2e-6)


def test_non_inferiority_is_met_by_the_solved_plan():
    from rtopt.planning.solve import solve

    inst = instance_from_dict(_lung(local_control_vs="54/3", local_control_margin=0.0))
    p = Problem(inst)
    lim = p.outcome_limits()["prescription.local_control_vs"]
    res = solve(p, "exhaustive")
    assert res.feasible and res.verified
    assert res.metrics["local_control"] >= lim - 1e-6
    names = {c.name for c in res.constraints}
    assert "prescription.local_control_vs" in names


def test_impossible_local_control_exits_3_with_a_diagnosis(tmp_path):
    text = LUNG.read_text().replace(
        "isodose_percent = 80 ", "min_local_control = 0.999\nisodose_percent = 80 ")
    f = tmp_path / "lc.toml"
    f.write_text(text)
    r = CliRunner().invoke(app, ["solve", str(f)])
    assert r.exit_code == 3, r.output
    assert "min_local_control" in r.output


def test_backends_that_cannot_model_local_control_limits_decline():
    from rtopt.backends import get_backend

    p = Problem(instance_from_dict(_lung(min_local_control=0.9)))
    ok, why = get_backend("pyomo_minlp")().check(p)
    assert not ok and "local-control" in why


def test_reoxygenation_gain_is_an_objective_the_exhaustive_search_optimises():
    from rtopt.planning.solve import solve

    data = _lung()
    data["objective"] = {"maximise": "reoxygenation_gain_local_control"}
    p = Problem(instance_from_dict(data))
    res = solve(p, "exhaustive")
    assert res.feasible and res.verified
    # the optimum is at least the gain of any standard the instance allows (50/5 here)
    std = p.verify(p.standard_plan("50/5")).metrics["reoxygenation_gain_local_control"]
    assert res.objective >= std - 1e-9
    from rtopt.backends import get_backend

    ok, why = get_backend("pyomo_minlp")().check(p)
    assert not ok   # its algebraic form has neither the counterfactual nor the dose ratio


def test_trial_reports_the_reoxygenation_gain():
    from rtopt.decisions.trial import run_trial, standard_plan

    p = Problem.from_path(LUNG)
    res = run_trial(p, {"48/4": standard_plan(p, "48/4")}, patients=20, seed=0)
    assert "nominal_reoxygenation_gain" in res.summary["48/4"]


@pytest.mark.slow
def test_calibrate_outcomes_prints_training_and_validation_tables():
    r = CliRunner().invoke(app, ["calibrate", "--outcomes"])
    assert r.exit_code == 0, r.output
    assert "training rows (fitted)" in r.output and "validation rows (never seen" in r.output
    assert "training: 7 of 7 rows in band" in r.output


@pytest.mark.slow
def test_profile_likelihood_excludes_no_hypoxic_share():
    # likelihood-ratio statistic 2 (cost(0) - cost(0.6)) well above the 95 % chi2(1) 3.84
    from rtopt.model.calibrate import profile_hypoxic_share

    rows = profile_hypoxic_share(grid=[0.0, 0.6])
    assert 2 * (rows[0]["cost"] - rows[1]["cost"]) > 3.84
    assert rows[1]["training_in_band"] == 7
