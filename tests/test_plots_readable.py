"""Figures and tables a clinician reads at a glance: dose labels, tumour and OAR panels, only
informative panels, legends outside the curves, one unit for hypoxia, honest counts, and
capability flags that agree with what back-ends accept."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from rtopt.outputs import plots
from rtopt.backends import BACKENDS, get_backend
from rtopt.cli import app
from rtopt.problem.instance import instance_from_dict
from rtopt.problem.problem import Plan, Problem

ROOT = Path(__file__).resolve().parents[1]
LUNG = ROOT / "instances" / "lung-sbrt-peripheral.toml"
CLASSIC = ROOT / "instances" / "classic-two-oar.toml"
runner = CliRunner()


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_one_dose_label_per_run_to_the_grid_step():
    p = Problem.from_path(LUNG)
    fig, axes = plots.plot_plan(p, Plan.uniform((0, 1, 2, 3), 12.5, (4, 11)))
    assert texts(axes[0]) == ["4 x 12.5"]
    ylabels = [ax.get_ylabel() for ax in axes]
    assert any("clonogens killed" in y for y in ylabels) and "OAR BED (Gy)" in ylabels
    # continuous dose: shown to 0.01 Gy, not 5.35218
    c = Problem.from_path(CLASSIC)
    fig, axes = plots.plot_plan(c, Plan.uniform((0, 1, 2, 3, 4, 7, 8), 5.35218))
    assert texts(axes[0]) == ["7 x 5.35"]
    # per-fraction doses: one label per run of equal doses
    fig, axes = plots.plot_plan(p, Plan((0, 1, 2, 7), (10.0, 10.0, 12.0, 12.0), ()))
    assert texts(axes[0]) == ["2 x 10", "2 x 12"]


def test_classic_instance_draws_no_empty_nk_or_hypoxia_panels():
    c = Problem.from_path(CLASSIC)
    assert c.biology.hypoxic_fraction == 0 and not c.biology.nk
    fig, axes = plots.plot_plan(c, Plan.uniform((0, 1, 2), 5.0))
    joined = " ".join(ax.get_ylabel() for ax in axes)
    assert "NK" not in joined and "hypoxic" not in joined
    everything = " ".join(t.get_text() for ax in axes for t in ax.texts) + " ".join(
        t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts())
    assert "NK favourability" not in everything
    fig, axes = plots.plot_plans(c, {"a": Plan.uniform((0, 1), 5.0), "b": Plan.uniform((0,), 8.0)})
    assert "NK" not in " ".join(ax.get_ylabel() for ax in axes)


def test_legends_sit_outside_the_panels_for_long_infusion_lists():
    hn = Problem.from_path(ROOT / "instances" / "head-and-neck-conventional.toml")
    days = tuple(d for d in range(49) if d % 7 < 5)[:35]
    fig, axes = plots.plot_plan(hn, Plan.uniform(days, 2.0, (4, 11, 18, 25, 32, 39, 46)))
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in axes:
        leg = ax.get_legend()
        if leg is not None:
            assert leg.get_window_extent(r).x0 >= ax.get_window_extent(r).x1 - 1
            # nothing is cut at the figure's right edge
            assert leg.get_window_extent(r).x1 <= fig.bbox.x1 + 1
    # comparison figure: every infusion day is named in the legend (wrapped, not cut)
    fig, axes = plots.plot_plans(hn, {"a": Plan.uniform(days, 2.0, (4, 11, 18, 25, 32, 39, 46)),
                                      "b": Plan.uniform(days[:30], 2.2, (18,))})
    legend = " ".join(t.get_text() for t in axes[0].get_legend().get_texts())
    assert "NK days 4,11,18,25,32,39,46" in legend and "..." not in legend


def test_kill_panel_uses_the_simulator_trajectory_when_there_is_one():
    p = Problem.from_path(LUNG)
    t = np.arange(1, 5, dtype=float)
    sim = SimpleNamespace(t_days=t, trajectory={"log10_survival": -np.array([[1.0, 2, 3, 3]])})
    tt, y, what = plots._tumour_kill(p, None, sim, np.zeros((1, p.horizon_days)), None)
    assert list(y) == [0.0, 1.0, 2.0, 3.0, 3.0] and tt[0] == 0.0 and "log10" in what


def test_hypoxia_in_percent_everywhere():
    s = runner.invoke(app, ["solve", str(ROOT / "instances" / "lung-sbrt-classic-bed.toml")])
    assert "hypoxic fraction at end (%)" in s.stdout
    value = float(re.search(r"hypoxic fraction at end \(%\)\s*│\s*([0-9.]+)", s.stdout)[1])
    m = runner.invoke(app, ["simulate", str(LUNG), "--dose", "12.5", "--days", "0,1,2,3"])
    assert "hypoxic fraction at end (%" in m.stdout
    assert 1.0 < value <= 100.0  # a percentage, not a fraction (the lung tumour: ~12 %)


def test_simulate_counts_what_it_shows():
    r = runner.invoke(app, ["simulate", str(LUNG), "--dose", "12.5", "--days", "0,1,2,3",
                            "--nk-days", "4,11"])
    assert r.exit_code == 0, r.output
    last = r.stdout.strip().splitlines()[-1]
    n = int(re.search(r"the (\d+) limits in the table hold", last)[1])
    # an EQD2 row repeats the status of the BED limit it is derived from
    rows = [ln for ln in r.stdout.splitlines()
            if re.search(r"│\s*ok\s*│", ln) and "EQD2" not in ln]
    assert n == len(rows), (n, rows)


def _nk_problem() -> Problem:
    d = tomllib.loads(LUNG.read_text())
    d["fractionation"].update(n_fractions=[1, 3], horizon_days=21, max_overall_days=7)
    d["nk"].update(n_infusions=[1, 1], latest_day=14)
    # prescribed = tumour dose, so only the NK objective decides whether a back-end declines
    d["prescription"].pop("isodose_percent", None)
    # and without the patient's own NK cells, which the algebraic MINLP does not model
    d["tumour"].setdefault("surrogate", {})["nk_endogenous_cytotoxicity"] = 0.0
    return Problem(instance_from_dict(d))


@pytest.mark.parametrize("name", list(BACKENDS))
def test_nk_capability_flag_agrees_with_check(name):
    """`rtopt solvers` shows capabilities(); check() on an NK-objective instance must agree."""
    cls = get_backend(name)
    ok, why = cls().check(_nk_problem())
    assert ok == cls.capabilities()["nk"], (name, why)
