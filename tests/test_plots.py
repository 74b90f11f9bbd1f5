"""Figures of plans and of the surrogate: they are written, readable PNGs, and atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtopt.outputs import plots
from rtopt.problem.problem import Plan, Problem

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 30_000
"""A figure with five panels of curves and text is well over 100 kB at 130 dpi; an empty or
blank canvas of the same size compresses to a few kB, so 30 kB separates the two."""

LUNG_TOML = (Path(__file__).parent / "fixtures" / "lung-example.toml").read_text()

PLAN = Plan.uniform((0, 2, 4, 7), 12.5, (5,))


@pytest.fixture(scope="module")
def problem(tmp_path_factory) -> Problem:
    path = tmp_path_factory.mktemp("inst") / "lung.toml"
    path.write_text(LUNG_TOML)
    return Problem.from_path(path)


def assert_png(path, min_bytes: int = MIN_PNG_BYTES) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_plot_plan_writes_png_and_returns_fig_axes(problem, tmp_path):
    out = tmp_path / "plan.png"
    fig, axes = plots.plot_plan(problem, PLAN, path=out)
    assert_png(out)
    assert len(axes) == 7  # dose, hypoxia, chemokine, NK cells, NK activity, kill, OAR BED
    assert fig.axes[0] is axes[0]
    # shared time axis over the horizon
    assert axes[0].get_xlim() == axes[-1].get_xlim()
    assert axes[-1].get_xlim()[1] == problem.horizon_days
    assert "12.5" in fig._suptitle.get_text()
    ylabels = " ".join(ax.get_ylabel() for ax in axes)
    for word in ("Gy", "hypoxic fraction (%)", "CXCL10", "NK cells", "NK activity",
                 "clonogens killed", "OAR BED"):
        assert word in ylabels


def test_plot_plan_without_path_writes_nothing(problem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig, axes = plots.plot_plan(problem, PLAN, title="custom title")
    assert fig._suptitle.get_text() == "custom title"
    assert list(tmp_path.iterdir()) == []


def test_plot_plan_without_nk_and_with_per_fraction_doses(problem, tmp_path):
    out = tmp_path / "plan-no-nk"  # no suffix: PNG
    plots.plot_plan(problem, Plan((0, 1, 3), (8.0, 9.0, 10.0)), path=out)
    assert_png(out)


def test_plot_plans_overlays_labelled_plans(problem, tmp_path):
    out = tmp_path / "plans.png"
    plans = {"12.5 x 4": PLAN, "18 x 3": Plan.uniform((0, 2, 4), 18.0, (6, 13)),
             "8 x 8": Plan.uniform((0, 1, 2, 3, 4, 7, 8, 9), 8.0, (10,))}
    fig, axes = plots.plot_plans(problem, plans, path=out)
    assert_png(out)
    assert len(axes) == 5
    legend = " ".join(t.get_text() for t in axes[0].get_legend().get_texts())
    for label in plans:
        assert label in legend
    # one hypoxic-fraction curve per plan (plus the baseline line)
    assert len(axes[1].get_lines()) >= len(plans)


def test_plot_plans_needs_a_plan(problem):
    with pytest.raises(ValueError):
        plots.plot_plans(problem, {})


def test_plot_surrogate_writes_png(tmp_path):
    out = tmp_path / "surrogate.png"
    fig, axes = plots.plot_surrogate("lung", path=out)
    assert_png(out)
    assert axes.shape == (2, 2)
    assert all(ax.get_xlabel() == "dose per fraction (Gy)" for ax in axes[1])


def test_plot_surrogate_unknown_site_raises():
    with pytest.raises(KeyError):
        plots.plot_surrogate("lungg")


def test_dose_response_directions_lung():
    """Observations O1-O3 in the lung preset: hypoxia falls at 12-13 Gy, rises at 18 Gy;
    the chemokine pulse is switched off above the Trex1 threshold."""
    r = plots.dose_response("lung", [2.0, 12.5, 18.0, 24.0])
    h = r["hypoxia_ratio_day2"]
    assert h[1] < 1.0 < h[2]
    a = r["chemokine_amplitude"]
    assert a[3] < a[1]
    assert np.all((r["demand_drop"] >= 0) & (r["demand_drop"] <= 1))
    assert np.all((r["vascular_damage"] >= 0) & (r["vascular_damage"] <= 1))
    np.testing.assert_allclose(r["nk_fold_vs_no_rt"],
                               r["nk_favourability"] / r["nk_favourability_no_rt"])


def test_dose_response_vectorised_matches_one_at_a_time():
    doses = np.array([3.0, 11.0, 15.5, 21.0])
    r = plots.dose_response("prostate", doses, product="memory_like_il12_15_18")
    for i, d in enumerate(doses):
        one = plots.dose_response("prostate", [d], product="memory_like_il12_15_18")
        for k in ("hypoxia_ratio_day2", "nk_favourability", "chemokine_amplitude"):
            # identical arithmetic per row; only summation order may differ
            assert r[k][i] == pytest.approx(one[k][0], rel=1e-12)


def test_figure_format():
    assert plots.figure_format("a/b.png") == "png"
    assert plots.figure_format("a/b.PDF") == "pdf"
    assert plots.figure_format("a/b") == "png"
    with pytest.raises(ValueError, match="xyz"):
        plots.figure_format("a/b.xyz")


def test_save_is_atomic(problem, tmp_path, monkeypatch):
    """A failure while saving leaves an existing file untouched and no temporary file."""
    out = tmp_path / "plan.png"
    out.write_bytes(b"old")
    from matplotlib.figure import Figure

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError):
        plots.plot_plan(problem, PLAN, path=out)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.png"]


def test_unsupported_suffix_fails_before_writing(problem, tmp_path):
    out = tmp_path / "plan.xyz"
    with pytest.raises(ValueError):
        plots.plot_plan(problem, PLAN, path=out)
    assert list(tmp_path.iterdir()) == []


def test_describe_plan_compacts_day_runs():
    days = [w * 7 + d for w in range(7) for d in range(5)]
    s = plots.describe_plan(Plan.uniform(days, 2.0, (12, 26)))
    assert s == "35 x 2 Gy on days 0-4,7-11,14-18,21-25,28-32,35-39,42-46; NK days 12,26"
    assert len(plots.describe_plan(Plan.uniform(range(0, 200, 2), 2.0), max_chars=50)) == 50
