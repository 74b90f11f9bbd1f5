"""``rtopt simulate`` and ``rtopt surrogate``: tables, JSON, plots, exit codes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.cli._common import ExitCode
from rtopt.problem.problem import Plan, Problem
from rtopt.model.simulator import simulate

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LUNG_TOML = (Path(__file__).parent / "fixtures" / "lung-example.toml").read_text()
"""Peripheral lung SBRT (tests/fixtures/lung-example.toml): kept apart so that edits to the shipped
instances do not move the closed-form values these tests check."""

RESULT_METRICS = {"tumour_bed_gy", "tumour_eqd2_gy", "oar", "nk_favourability",
                  "tumour_log10_kill", "nk_log10_kill", "tcp", "hypoxic_fraction_end",
                  "overall_days"}
"""The metric names of ``Result.to_dict()['metrics']`` (``rtopt solve --json``)."""
TRAJECTORY_KEYS = {"t_days", "hypoxic_fraction", "chemokine", "nk_blood", "nk_tumour",
                   "nk_activity", "demand", "vascular", "trajectory_step_days"}
GOOD = ["--dose", "12.5", "--days", "0,2,4,7", "--nk-days", "5"]
VIOLATING = ["--dose", "25", "--days", "0,1,2", "--nk-days", "5"]
"""3 x 25 Gy: spinal cord BED 3 * 6.25 * (1 + 6.25/2) = 77.3 Gy > 60 Gy."""


@pytest.fixture(scope="module")
def inst(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("inst") / "lung.toml"
    path.write_text(LUNG_TOML)
    return str(path)


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(r, code: int = 1) -> str:
    """Exit ``code``, nothing on stdout, no traceback; returns stderr."""
    assert r.exit_code == code, (r.exit_code, r.output)
    assert r.stdout == ""
    assert "Traceback" not in r.output
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)
    return r.stderr


# ---------------------------------------------------------------------------- simulate
def test_table_shows_metrics(inst):
    r = run("simulate", inst, *GOOD)
    assert r.exit_code == 0, r.output
    out = r.stdout
    for text in ("tumour BED (Gy)", "112.5", ">= 100", "tumour EQD2 (Gy)", "93.75",
                 "spinal_cord BED", "32.03", "<= 60", "spinal_cord EQD2", "<= 30",
                 "spinal_cord dose per fraction", "<= 8", "NK favourability",
                 "fold vs same infusions without RT", "tumour log10 kill", "TCP",
                 "hypoxic fraction at end", "limits in the table hold"):
        assert text in out, text
    assert "VIOLATED" not in out


def test_json_has_metrics_constraints_trajectory(inst):
    r = run("simulate", inst, *GOOD, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["feasible"] is True and data["violated"] == []
    m = data["metrics"]
    assert RESULT_METRICS <= set(m)
    assert "nk_fold_vs_no_rt" in m
    # closed form: 4 x 12.5 Gy, alpha/beta 10
    assert m["tumour_bed_gy"] == pytest.approx(4 * 12.5 * (1 + 12.5 / 10), abs=1e-9)
    assert m["oar"][0]["name"] == "spinal_cord" and m["oar"][0]["ok"] is True
    assert {c["name"] for c in data["constraints"]} >= {"prescription.min_bed_gy",
                                                        "oar.spinal_cord.max_bed_gy"}
    assert all(c["ok"] for c in data["constraints"])
    tr = data["trajectory"]
    assert TRAJECTORY_KEYS <= set(tr)
    assert tr["trajectory_step_days"] == 0.25
    t = np.array(tr["t_days"])
    np.testing.assert_allclose(np.diff(t), 0.25)
    assert t[0] == 0 and t[-1] == 42
    for k in TRAJECTORY_KEYS - {"trajectory_step_days", "t_days"}:
        assert len(tr[k]) == len(t), k
    h = np.array(tr["hypoxic_fraction"])
    assert np.all((h >= 0) & (h <= 1))
    assert min(tr["nk_blood"]) >= 0 and min(tr["nk_tumour"]) >= 0


def test_json_fold_matches_a_second_simulation(inst):
    data = json.loads(run("simulate", inst, *GOOD, "--json").stdout)
    problem = Problem.from_path(inst)
    D, U = Plan.uniform((0, 2, 4, 7), 12.5, (5,)).daily(problem.horizon_days)
    rt = simulate(problem.biology, problem.tumour_doses(D), U)
    no_rt = simulate(problem.biology, np.zeros_like(D), U)
    assert data["metrics"]["nk_favourability"] == pytest.approx(rt.nk_auc[0], rel=1e-8)
    # the fold compares the infused cells (the patient's own NK cells are not an infusion)
    infused = rt.nk_auc[0] - rt.nk_auc_endogenous[0]
    infused_no_rt = no_rt.nk_auc[0] - no_rt.nk_auc_endogenous[0]
    assert data["metrics"]["nk_fold_vs_no_rt"] == pytest.approx(infused / infused_no_rt, rel=1e-8)


def test_per_fraction_dose_list(inst):
    r = run("simulate", inst, "--dose", "10,12", "--days", "3,1", "--nk-days", "5", "--json")
    assert r.exit_code == ExitCode.VIOLATED  # not uniform: the instance asks for uniform doses
    data = json.loads(r.stdout)
    # the list follows the days as given, then is sorted by day
    assert data["schedule"]["fractions"] == [{"day": 1, "dose_gy": 12.0},
                                             {"day": 3, "dose_gy": 10.0}]
    assert "uniform_dose" in data["violated"]


def test_plan_file_round_trip(inst, tmp_path):
    first = run("simulate", inst, *GOOD, "--json")
    plan = tmp_path / "result.json"
    plan.write_text(first.stdout)  # has a "schedule" key, like `rtopt solve -o`
    second = run("simulate", inst, "--plan", plan, "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["metrics"] == json.loads(first.stdout)["metrics"]
    bare = tmp_path / "plan.json"
    bare.write_text(json.dumps(Plan.uniform((0, 2, 4, 7), 12.5, (5,)).to_dict()))
    third = run("simulate", inst, "--plan", bare)
    assert third.exit_code == 0, third.output
    assert "112.5" in third.stdout


def test_plot_writes_png(inst, tmp_path):
    out = tmp_path / "plan.png"
    r = run("simulate", inst, *GOOD, "--plot", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 30_000
    assert f"wrote {out}" in r.stderr


def test_violating_plan_exits_4_and_names_the_constraint(inst, tmp_path):
    out = tmp_path / "bad.png"
    r = run("simulate", inst, *VIOLATING, "--plot", out)
    assert r.exit_code == ExitCode.VIOLATED == 4, r.output
    assert "VIOLATED" in r.stdout
    lines = [ln for ln in r.stderr.splitlines() if "violates" in ln]
    assert len(lines) == 1
    assert "oar.spinal_cord.max_bed_gy" in lines[0]
    assert "Traceback" not in r.output
    assert out.read_bytes()[:8] == PNG_MAGIC  # still simulated, reported and drawn
    j = run("simulate", inst, *VIOLATING, "--json")
    assert j.exit_code == ExitCode.VIOLATED
    data = json.loads(j.stdout)
    assert data["feasible"] is False
    assert data["violated"] == ["oar.spinal_cord.max_bed_gy"]


@pytest.mark.parametrize("args, expect", [
    (["--dose", "12", "--days", "0,x"], "--days"),
    (["--dose", "12", "--days", "0,,2"], "--days"),
    (["--dose", "12", "--days", "-1,2"], "--days"),
    (["--dose", "12", "--days", "2.5"], "--days"),
    (["--dose", "-1", "--days", "0,2"], "--dose"),
    (["--dose", "0", "--days", "0,2"], "--dose"),
    (["--dose", "inf", "--days", "0,2"], "--dose"),
    (["--dose", "abc", "--days", "0,2"], "--dose"),
    (["--dose", "12,13,14", "--days", "0,2"], "--dose"),
    (["--dose", "12", "--days", "0,0"], "--days"),
    (["--dose", "12", "--days", "0,50"], "outside the horizon"),
    (["--dose", "12", "--days", "0", "--nk-days", "42"], "outside the horizon"),
    (["--dose", "12", "--days", "0", "--nk-days", "a"], "--nk-days"),
    (["--days", "0"], "missing --dose"),
    (["--dose", "12"], "missing --days"),
    ([], "missing"),
    (["--dose", "12", "--days", "0", "--plan", "p.json"], "either"),
])
def test_bad_input_is_one_line_exit_1_no_file(inst, tmp_path, args, expect):
    out = tmp_path / "never.png"
    err = assert_clean_failure(run("simulate", inst, *args, "--plot", out))
    assert err.startswith("rtopt: ") and expect in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_missing_instance_file(tmp_path):
    err = assert_clean_failure(run("simulate", tmp_path / "nope.toml", *GOOD))
    assert err.strip() == f"{tmp_path / 'nope.toml'}: file not found"


@pytest.mark.parametrize("content, expect", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"status": "infeasible", "schedule": null}', "schedule: the result has no plan"),
    ('{"nk_infusions": []}', "fractions: missing"),
    ('{"fractions": [{"day": 0, "dose_gy": -3}]}', "fractions[0].dose_gy: must be a number > 0"),
    ('{"fractions": [{"day": "x", "dose_gy": 3}]}', "fractions[0].day: must be a whole day"),
    ('{"fractions": [{"day": 0}]}', "fractions[0].dose_gy: missing"),
    ('{"schedule": {"fractions": [{"day": 60, "dose_gy": 12}]}}',
     "schedule.fractions: fraction day 60 outside the horizon"),
    ('{"fractions": [{"day": 0, "dose_gy": 12}], "nk_infusions": [{"day": true}]}',
     "nk_infusions[0].day"),
    # bare plan objects
    ('{"fraction_days": [0, 2], "nk_infusion_days": [4]}', "doses_gy: missing"),
    ('{"fraction_days": [0, 2], "doses_gy": [12]}', "doses_gy: 1 doses for 2 fraction days"),
    ('{"fraction_days": [0, -2], "doses_gy": [12, 12]}', "fraction_days[1]: must be a whole day"),
    ('{"fraction_days": [0, 2], "doses_gy": [12, 12], "nk_infusion_days": [90]}',
     "nk_infusion_days: NK infusion day 90 outside the horizon"),
    ('{"plan": {"fractions": [{"day": 0, "dose_gy": "x"}]}}', "plan.fractions[0].dose_gy"),
    ('{"instance": "lung-sbrt-peripheral", "exact": {"points": [{}, {}]}}',
     "a Pareto front of 2 plans, not one plan"),
    ('{"schedule": {"fractions": [{"day": 0, "dose_gy": 12}], "tumour_dose_ratio": 0}}',
     "schedule.tumour_dose_ratio: must be a number > 0"),
])
def test_bad_plan_file(inst, tmp_path, content, expect):
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    out = tmp_path / "never.png"
    err = assert_clean_failure(run("simulate", inst, "--plan", plan, "--plot", out))
    assert err.startswith(f"{plan}: ")
    assert expect in err
    assert not out.exists()


def test_missing_plan_file(inst, tmp_path):
    err = assert_clean_failure(run("simulate", inst, "--plan", tmp_path / "none.json"))
    assert err.strip() == f"{tmp_path / 'none.json'}: file not found"


@pytest.mark.parametrize("name, expect", [("sub/never.png", "does not exist"),
                                          ("never.xyz", "cannot write images"),
                                          (".", "is a directory")])
def test_bad_plot_path(inst, tmp_path, name, expect):
    err = assert_clean_failure(run("simulate", inst, *GOOD, "--plot", tmp_path / name))
    assert expect in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- surrogate
def test_surrogate_table():
    r = run("surrogate", "lung")
    assert r.exit_code == 0, r.output
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("│")]
    assert len(rows) == 12
    assert rows[0].split("│")[1].strip() == "2" and rows[-1].split("│")[1].strip() == "24"
    assert "h/h0" in r.stdout and "NK fold" in r.stdout


def test_surrogate_json():
    r = run("surrogate", "head-and-neck", "--product", "car_nk_il15", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["site"] == "head_and_neck" and data["product"] == "car_nk_il15"
    assert data["dose_gy"] == [float(d) for d in range(2, 25, 2)]
    for k in ("demand_drop", "vascular_damage", "chemokine_amplitude", "hypoxia_ratio_day2",
              "nk_favourability", "nk_fold_vs_no_rt"):
        assert len(data[k]) == 12, k
    assert data["setup"]["nk_infusion_day"] >= 0


def test_surrogate_plot(tmp_path):
    out = tmp_path / "s.png"
    r = run("surrogate", "prostate", "--plot", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 30_000


@pytest.mark.parametrize("args, expect", [
    (["lungg"], "unknown site 'lungg'; did you mean 'lung'?"),
    (["mars"], "unknown site 'mars'"),
    (["lung", "--product", "il15"], "did you mean 'il15_expanded'?"),
])
def test_surrogate_unknown_choice(tmp_path, args, expect):
    out = tmp_path / "never.png"
    err = assert_clean_failure(run("surrogate", *args, "--plot", out))
    assert expect in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
