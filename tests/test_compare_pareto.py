"""Solver comparison on Pareto fronts (`rtopt compare --pareto`, `rtopt.outputs.compare_pareto`): the
table, the indicators against a common reference point, verification, not-applicable
objectives, the time limit, resume and the report re-render."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.outputs.compare_pareto import (FRONT_COLUMNS, compare_fronts, front_indicators,
                                  read_front_table)
from rtopt.decisions.pareto import hypervolume, non_dominated
from rtopt.problem.problem import Plan, Problem
from rtopt.outputs.report import stale_report

REPO_ROOT = Path(__file__).resolve().parents[1]
INST = REPO_ROOT / "instances"
HYPO, HYPER = (INST / f"classic-mizuta-{n}.toml" for n in ("hypo", "hyper"))
TWO_OAR = INST / "classic-two-oar.toml"
SMALL = dict(pop_size=16, generations=8, options={"continuous_step_gy": 1.0}, isolate=False)

HV_TOL = 0.02
"""NSGA's hypervolume may exceed the exact front's only by this fraction: the exact front is
exact over the exhaustive space (doses on a 1 Gy grid here), NSGA's genome has continuous doses,
so a heuristic point can sit between two grid doses just beyond the exact staircase; a
heuristic front beyond the exact one by more than that would be a bug in one of them."""

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pcompare") / "out"
    summary = compare_fronts([HYPO, HYPER, TWO_OAR], "tumour_bed,oar:oar", out, **SMALL)
    return out, summary


def _fronts(out, rows):
    return [json.loads((out / r["plan_file"]).read_text()) for r in rows]


def test_table_columns_and_statuses(run):
    out, summary = run
    with open(out / "results.csv", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == list(FRONT_COLUMNS)
    rows = read_front_table(out / "results.csv")
    assert [(r["instance"], r["profile"], r["status"]) for r in rows] == [
        ("classic-mizuta-hypo", "exact", "exact"), ("classic-mizuta-hypo", "nsga", "heuristic"),
        ("classic-mizuta-hyper", "exact", "exact"), ("classic-mizuta-hyper", "nsga", "heuristic"),
        ("classic-two-oar", "exact", "not_applicable"),
        ("classic-two-oar", "nsga", "not_applicable")]
    for r in rows[:4]:
        assert r["n_points"] >= 2 and r["all_verified"] and r["dropped_points"] == 0
        assert r["wall_time_s"] > 0 and r["knee_plan"] and r["hypervolume"] > 0
        assert r["time_limit_s"] == 600.0
    # the objective that does not apply: a one-line row message and one summary note
    for r in rows[4:]:
        assert "unknown organ at risk 'oar'" in r["message"] and "\n" not in r["message"]
        assert r["n_points"] == 0 and r["hypervolume"] is None
    assert summary.notes == [f"classic-two-oar: not applicable: {rows[4]['message']}"]


def test_exact_ratio_is_one_and_heuristic_not_above_it(run):
    out, _ = run
    rows = read_front_table(out / "results.csv")
    for inst in ("classic-mizuta-hypo", "classic-mizuta-hyper"):
        ex, he = (next(r for r in rows if r["instance"] == inst and r["profile"] == m)
                  for m in ("exact", "nsga"))
        assert ex["hv_ratio"] == 1.0 and ex["gd_mean"] == ex["gd_max"] == ex["igd"] == 0.0
        assert he["hypervolume"] <= ex["hypervolume"] * (1 + HV_TOL)
        assert he["hv_ratio"] == pytest.approx(he["hypervolume"] / ex["hypervolume"])
        assert 0 <= he["gd_mean"] <= he["gd_max"] and he["igd"] > 0


def test_indicators_recomputed_by_hand(run):
    # common normalisation over both fronts, reference point 1.1, pymoo's HV: same values
    out, _ = run
    rows = [r for r in read_front_table(out / "results.csv")
            if r["instance"] == "classic-mizuta-hyper"]
    fronts = _fronts(out, rows)
    F = [np.array([[-p["objectives"]["tumour_bed"], p["objectives"]["oar:oar"]]
                   for p in d["points"]]) for d in fronts]
    lo, hi = np.vstack(F).min(axis=0), np.vstack(F).max(axis=0)
    N = [(f - lo) / (hi - lo) for f in F]
    for r, n in zip(rows, N):
        assert r["hypervolume"] == pytest.approx(hypervolume(n, np.array([1.1, 1.1])), rel=1e-12)
    d = np.linalg.norm(N[1][:, None] - N[0][None], axis=2)
    assert rows[1]["gd_max"] == pytest.approx(d.min(axis=1).max(), rel=1e-12)
    from pymoo.indicators.gd import GD
    from pymoo.indicators.igd import IGD

    assert rows[1]["gd_mean"] == pytest.approx(GD(N[0])(N[1]), rel=1e-9)
    assert rows[1]["igd"] == pytest.approx(IGD(N[0])(N[1]), rel=1e-9)
    # recomputing from the plan files gives the table's values
    again = [dict(r) for r in rows]
    front_indicators(again, fronts)
    assert [r["hypervolume"] for r in again] == [r["hypervolume"] for r in rows]


def test_every_point_verified_and_non_dominated(run):
    out, _ = run
    rows = [r for r in read_front_table(out / "results.csv") if r["n_points"]]
    for r, d in zip(rows, _fronts(out, rows)):
        problem = Problem.from_path(r["instance_path"])
        F = np.array([[-p["objectives"]["tumour_bed"], p["objectives"]["oar:oar"]]
                      for p in d["points"]])
        assert len(non_dominated(np.round(F, 12))) == len(F)
        pts = d["points"] if len(d["points"]) <= 40 else d["points"][::25]
        for p in pts:
            v = problem.verify(Plan.from_dict(p["plan"]))
            assert v.feasible, (r["instance"], r["profile"], v.violated)
            assert v.metrics["tumour_bed_gy"] == pytest.approx(p["objectives"]["tumour_bed"])


def test_report_rerender_check_and_resume(run, tmp_path):
    out, _ = run
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # one overlay figure per instance with fronts
    assert "reference point is 1.1" in html and "not_applicable" in html
    assert (out / "figures" / "fronts-classic-mizuta-hypo.png").is_file()
    assert stale_report(out) == []
    table = (out / "results.csv").read_bytes()
    (out / "report.md").unlink()
    done = runner.invoke(app, ["report", str(out)])
    assert done.exit_code == 0, done.output
    assert "| classic-mizuta-hypo" in (out / "report.md").read_text().replace("[", "| ")
    assert (out / "results.csv").read_bytes() == table
    assert runner.invoke(app, ["report", "--check", str(out)]).exit_code == 0
    # resume: every run is kept, nothing is recomputed, the same table comes out
    summary = compare_fronts([HYPO, HYPER, TWO_OAR], "tumour_bed,oar:oar", out, resume=True,
                             report=False, **SMALL)
    assert json.loads((out / "system.json").read_text())["run"]["resumed_runs"] == 6
    assert (out / "results.csv").read_bytes() == table and len(summary.rows) == 6


def test_time_limit_gives_partial_exact_front_and_no_ratio(tmp_path):
    out = tmp_path / "out"
    compare_fronts([INST / "lung-sbrt-peripheral.toml"], "local_control,oar:chest_wall_rib",
                   out, time_limit_s=1e-3, report=False, **{**SMALL, "options": {}})
    ex, he = read_front_table(out / "results.csv")
    assert ex["status"] == "partial" and ex["termination"] == "time_limit" and ex["n_points"]
    assert he["status"] == "heuristic" and he["termination"] == "time_limit"
    assert ex["hv_ratio"] is None and he["hv_ratio"] is None and he["gd_mean"] is None
    assert ex["hypervolume"] > 0 and he["hypervolume"] is not None


def test_cli_errors(tmp_path):
    done = runner.invoke(app, ["compare", str(HYPO), "--pareto", "tumour_bed,oar:oar",
                               "-s", "exactt", "-o", str(tmp_path / "a")])
    assert done.exit_code == 1
    assert "unknown front method 'exactt' (did you mean 'exact'?)" in done.output
    done = runner.invoke(app, ["compare", str(HYPO), "--pareto", "tumour_bed",
                               "-o", str(tmp_path / "b")])
    assert done.exit_code == 1 and "two or three objectives" in done.output
    done = runner.invoke(app, ["compare", str(HYPO), "-o", str(tmp_path / "c")])
    assert done.exit_code == 2 and "--solver" in done.output and "--pareto" in done.output


def test_cli_compare_pareto_prints_the_table(tmp_path):
    out = tmp_path / "out"
    done = runner.invoke(app, ["compare", str(HYPO), "--pareto", "tumour_bed,oar:oar",
                               "-s", "nsga", "--pop-size", "8", "--generations", "3",
                               "-o", str(out)])
    assert done.exit_code == 0, done.output
    head = done.output.splitlines()[0].split()
    assert head[:5] == ["instance", "method", "status", "points", "hypervolume"]
    rows = read_front_table(out / "results.csv")
    assert [r["status"] for r in rows] == ["heuristic"]
    assert rows[0]["hv_ratio"] is None  # no exact front in this comparison
