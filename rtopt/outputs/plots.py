"""Figures of plans and of the TME surrogate, drawn to files for reports and the CLI.

Every function imports matplotlib lazily, builds its figure without pyplot (an Agg canvas: no
display, no global figure registry, safe in threads and on servers) and returns ``(fig, axes)``.
With ``path`` the figure is also saved atomically: it is written to a temporary file in the
same directory and renamed over ``path``, so a reader never sees a half-written image.  The
format follows the file suffix (``.png``, ``.pdf``, ``.svg``, ...; PNG when there is none).

In a notebook, show a returned figure with ``display(fig)``.

Conventions of the time axes (as in :mod:`rtopt.problem.problem`): day ``j`` is the interval
``[j, j + 1)``; a fraction on day ``j`` is given at ``t = j`` (the left edge of its bar) and an
infusion on day ``j`` right after it.  Weekends are shaded.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtopt.common.fileio import write_atomic
from rtopt.model import surrogate as sg
from rtopt.model.parameters import resolve
from rtopt.model.simulator import TRAJECTORY_STEPS_PER_DAY, Biology, simulate

# matplotlib (~0.5 s) is imported inside the plotting functions (import time).

__all__ = ["plot_plan", "plot_plans", "plot_surrogate", "dose_response", "figure_format",
           "describe_plan",
           "DOSE_RESPONSE_INFUSION_DAY", "DOSE_RESPONSE_HORIZON_DAYS",
           "DOSE_RESPONSE_HYPOXIA_DAY"]

DOSE_RESPONSE_HYPOXIA_DAY = 2
"""Day after a single fraction at which :func:`dose_response` reads the hypoxic fraction
(the imaging day of Kelada et al. 2018, observation O1)."""
DOSE_RESPONSE_INFUSION_DAY = 2
"""Day of the one NK infusion after a single fraction on day 0 in :func:`dose_response`
(the chemokine pulse peaks on day ``chemokine_peak_day``, ~3)."""
DOSE_RESPONSE_HORIZON_DAYS = 28
"""Horizon (days) over which :func:`dose_response` integrates NK activity."""

_DOSE_COLOUR = "#3b6ea8"
_NK_COLOUR = "#2a9d5c"
_WEEKEND_COLOUR = "#e9e9e9"
_PLAN_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                 "#17becf", "#7f7f7f", "#bcbd22")
_STATE_PANELS = (
    # (trajectory key(s), y label, scale) -- scale 100 shows fractions as %
    ("hypoxic_fraction", "hypoxic fraction (%)", 100.0),
    ("chemokine", "CXCL10 signal\n(1 = peak of one\nsaturating fraction)", 1.0),
    ("nk", "NK cells\n(1 = one infusion)", 1.0),
    ("nk_activity", "NK activity\n(product units)", 1.0),
)


# ---------------------------------------------------------------------------- saving

def _wrap(title: str, width: int = 110) -> str:
    """Long titles (a report names every profile with the same plan) wrap instead of clipping."""
    return "\n".join(textwrap.wrap(title, width)) or title

def figure_format(path: str | os.PathLike) -> str:
    """Image format matplotlib will write for ``path`` (from its suffix; ``png`` if none).

    Raises
    ------
    ValueError
        The suffix names a format matplotlib cannot write.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = suffix or "png"
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"{path}: cannot write images of type {fmt!r} "
                         f"(use one of {', '.join(sorted(supported))})")
    return fmt


def _save(fig: Any, path: str | os.PathLike, dpi: int = 130) -> None:
    """Save ``fig`` to ``path`` atomically (:func:`rtopt.common.fileio.write_atomic`)."""
    fmt = figure_format(Path(path))
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    write_atomic(path, buf.getvalue())


def _figure(figsize: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------------------- plans
def _ranges(days: Sequence[int]) -> str:
    """``0,1,2,3,4,7,8`` -> ``0-4,7-8`` (sorted, duplicates kept once)."""
    ds = sorted(set(int(d) for d in days))
    out, i = [], 0
    while i < len(ds):
        j = i
        while j + 1 < len(ds) and ds[j + 1] == ds[j] + 1:
            j += 1
        out.append(f"{ds[i]}-{ds[j]}" if j - i >= 2 else ",".join(map(str, ds[i:j + 1])))
        i = j + 1
    return ",".join(out)


def describe_plan(plan: Any, max_chars: int = 100) -> str:
    """Short one-line description of a plan for titles and legends (day runs as ranges)."""
    x = plan.doses_gy
    if x and max(x) - min(x) < 1e-9:
        dose = f"{plan.n_fractions} x {x[0]:g} Gy"
    elif x:
        dose = f"{plan.n_fractions} fractions, {plan.total_dose_gy:g} Gy ({min(x):g}-{max(x):g})"
    else:
        dose = "no fractions"
    s = f"{dose} on days {_ranges(plan.fraction_days)}" if x else dose
    if plan.nk_days:
        s += f"; NK day{'s' if len(plan.nk_days) > 1 else ''} {','.join(map(str, plan.nk_days))}"
    return s if len(s) <= max_chars else s[:max_chars - 3] + "..."


def _run(problem: Any, plan: Any) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Simulate ``plan`` and the same infusions without RT (trajectories of both)."""
    D, U = plan.daily(problem.horizon_days)
    spd = max(getattr(problem, "steps_per_day", 1), TRAJECTORY_STEPS_PER_DAY)  # smooth curves
    tumour = (problem.tumour_doses(D, problem.dose_ratio_of(plan))   # the plan's convention
              if hasattr(problem, "tumour_doses") else D)
    sim = simulate(problem.biology, tumour, U, trajectory=True, steps_per_day=spd)
    ref = simulate(problem.biology, np.zeros_like(D), U, trajectory=True, steps_per_day=spd)
    return sim, ref, D, U


def _series(sim: Any, key: str, h0: float) -> tuple[np.ndarray, np.ndarray]:
    """Trajectory of ``key`` with the pre-treatment state prepended at ``t = 0``.

    The simulator records each day's state after that day's events, so the jumps of day 0
    would be invisible without the baseline point.
    """
    base = {"hypoxic_fraction": h0, "demand": 1.0, "vascular": 1.0}.get(key, 0.0)
    t = np.concatenate([[0.0], sim.t_days])
    y = np.concatenate([[base], sim.trajectory[key][0]])
    return t, y


def _shade_weekends(ax: Any, problem: Any, label: bool = False) -> None:
    first = True
    for j in range(problem.horizon_days):
        if problem.weekday(j) in ("sat", "sun"):
            ax.axvspan(j, j + 1, color=_WEEKEND_COLOUR, zorder=0, lw=0,
                       label="weekend" if (label and first) else None)
            first = False


def _day_axis(ax: Any, problem: Any) -> None:
    """Major ticks every 7 days labelled with day and weekday, minor ticks every day."""
    from matplotlib.ticker import MultipleLocator

    H = problem.horizon_days
    step = 7 if H <= 70 else 14
    ticks = np.arange(0, H + 1, step)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{d}\n{problem.weekday(int(d)).capitalize()}" for d in ticks])
    ax.xaxis.set_minor_locator(MultipleLocator(1))
    ax.set_xlim(-0.5, H)  # a little room so that the jumps of day 0 are visible
    ax.set_xlabel("day of treatment (weekday below; day j spans [j, j+1))")


def _nk_marks(ax: Any, days: Sequence[int], colour: str, label: str | None, y: float = 0.9,
              x_offset: float = 0.0) -> None:
    """Downward triangles at the top of the dose panel on infusion days."""
    from matplotlib.transforms import blended_transform_factory

    if not len(days):
        return
    tr = blended_transform_factory(ax.transData, ax.transAxes)
    xs = np.asarray(sorted(set(days)), dtype=float) + x_offset
    ax.plot(xs, np.full(xs.shape, y), ls="none", marker="v", ms=10, color=colour,
            markeredgecolor="black", markeredgewidth=0.6, transform=tr, label=label, zorder=5,
            clip_on=False)
    counts = {d: list(days).count(d) for d in set(days)}
    for d, c in counts.items():
        if c > 1:
            ax.text(d + x_offset, y - 0.1, f"x{c}", transform=tr, ha="center", va="top",
                    fontsize=8, color=colour)


def _infusion_lines(axes: Sequence[Any], days: Sequence[int], colour: str) -> None:
    for ax in axes:
        for d in sorted(set(days)):
            ax.axvline(d, color=colour, ls=(0, (4, 3)), lw=0.9, alpha=0.8, zorder=1)


def _dose_panel_limits(ax: Any, max_dose: float) -> None:
    top = max(max_dose, 1.0) * 1.45  # room for dose labels and NK markers
    ax.set_ylim(0, top)
    ax.set_ylabel("tumour dose per\nfraction (Gy)")


def _dose_text(x: float, step: float) -> str:
    """A dose to the grid step (``12.5``, ``2.4``), or to 0.01 Gy when the dose is continuous."""
    dec = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 2
    text = f"{x:.{min(dec, 4)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _dose_labels(ax: Any, days: np.ndarray, doses: np.ndarray, step: float) -> None:
    """One label per run of consecutive fractions with the same dose (``4 x 12.5``), centred
    over the run; single fractions in a long varied list are labelled vertically."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < days.size:
        j = i
        while j + 1 < days.size and abs(doses[j + 1] - doses[i]) < 1e-9:
            j += 1
        runs.append((i, j))
        i = j + 1
    vertical = len(runs) > 10
    for i, j in runs:
        text = _dose_text(float(doses[i]), step)
        if j > i:
            text = f"{j - i + 1} x {text}"
        x = (days[i] + days[j] + 0.6) / 2
        ax.text(x, float(doses[i]), text, ha="center", va="bottom", fontsize=8,
                rotation=90 if vertical and j == i else 0)


def _legend_outside(ax: Any, **kw: Any) -> None:
    """Legend to the right of the panel: it never hides curves, whatever the labels' length."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  borderaxespad=0.0, **kw)


def _tumour_kill(problem: Any, plan: Any, sim: Any, D: np.ndarray,
                 U: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Cumulative log10 clonogen kill over time: (t, kill, label).

    Uses the simulator's ``log10_survival`` trajectory when it has one; otherwise the radiation
    kill after each fraction, from simulating the plan's prefixes (fractions 1..k, one
    vectorised call) -- a step line.
    """
    traj = getattr(sim, "trajectory", None) or {}
    if "log10_survival" in traj:
        t = np.concatenate([[0.0], sim.t_days])
        return t, -np.concatenate([[0.0], np.asarray(traj["log10_survival"])[0]]), \
            "clonogens killed (log10)"
    days = np.flatnonzero(D[0] > 0)
    H = D.shape[1]
    if days.size == 0:
        return np.array([0.0, H]), np.zeros(2), "radiation kill (log10)"
    P = np.zeros((days.size, H))
    for k in range(days.size):
        P[k, days[:k + 1]] = D[0, days[:k + 1]]
    spd = getattr(problem, "steps_per_day", 8)
    if hasattr(problem, "tumour_doses"):
        P = problem.tumour_doses(P, problem.dose_ratio_of(plan))
    pre = simulate(problem.biology, P, np.repeat(U, days.size, axis=0), steps_per_day=spd)
    rt = np.asarray(pre.log10_kill) - np.asarray(pre.nk_log10_kill)
    t = np.concatenate([[0.0], days.astype(float), [float(H)]])
    y = np.concatenate([[0.0], rt, [rt[-1]]])
    return t, y, "radiation kill after each fraction (log10)"


def _oar_bed_steps(problem: Any, D: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray,
                                                                float | None]]:
    """Per OAR: (name, t, cumulative BED at the organ's alpha/beta, BED limit or None)."""
    days = np.flatnonzero(D[0] > 0)
    H = D.shape[1]
    out = []
    if not getattr(problem, "oars", ()):
        return out
    rows = np.zeros((max(days.size, 1), H))
    for k, d in enumerate(days):
        rows[k, d] = D[0, d]
    per = problem.oar_bed(rows)                               # (fractions, n_oar)
    t = np.concatenate([[0.0], days.astype(float), [float(H)]])
    for i, o in enumerate(problem.oars):
        c = np.cumsum(per[:days.size, i]) if days.size else np.zeros(0)
        last = c[-1] if c.size else 0.0
        out.append((o.name, t, np.concatenate([[0.0], c, [last]]), o.max_bed_gy))
    return out


def plot_plan(problem: Any, plan: Any, *, title: str | None = None,
              path: str | os.PathLike | None = None) -> tuple[Any, np.ndarray]:
    """Draw one plan: the fraction calendar, the tumour microenvironment, tumour kill and OAR dose.

    Panels (shared time axis in days), each drawn only when it carries information:
    fraction doses on the calendar (one label per run of equal doses; weekends shaded, NK
    infusions as triangles and dashed lines); hypoxic fraction (%) (not when the tumour has no
    hypoxia); chemokine signal; NK cells in blood and tumour and NK activity (only with NK
    infusions); cumulative clonogen kill (log10) against log10 of the clonogen number; and the
    BED of each organ at risk accumulating against its limit (dashed), when there are OARs.
    Legends sit to the right of the panels.  The trajectories come from
    :func:`rtopt.model.simulator.simulate` with ``trajectory=True``.

    Parameters
    ----------
    problem : rtopt.problem.problem.Problem
        The problem (horizon, calendar, biology).
    plan : rtopt.problem.problem.Plan
        The plan to draw; its days must lie in the horizon.
    title : str, optional
        Figure title (default: instance name and the plan's description).
    path : str or path-like, optional
        Also save the figure there (atomically; format from the suffix).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray of matplotlib.axes.Axes
        The panels drawn, top to bottom (the dose panel first).
    """
    if path is not None:
        figure_format(path)  # fail before the work on an unsupported suffix
    sim, ref, D, U = _run(problem, plan)
    D, U = np.atleast_2d(D), np.atleast_2d(U)
    bio = problem.biology
    h0 = float(bio.hypoxic_fraction)
    _, hyp = _series(sim, "hypoxic_fraction", h0)
    panels = ["dose"]
    if h0 > 0 or float(np.max(hyp)) > 0:
        panels.append("hypoxic_fraction")
    panels.append("chemokine")
    if bio.nk and plan.nk_days:
        panels += ["nk", "nk_activity"]
    panels.append("kill")
    oar = _oar_bed_steps(problem, D)
    if oar:
        panels.append("oar")
    ratios = [1.25] + [1.0] * (len(panels) - 1)
    fig = _figure((13.0, 1.2 + 2.25 * len(panels)))
    axes = np.atleast_1d(np.asarray(fig.subplots(len(panels), 1, sharex=True,
                                                 gridspec_kw={"height_ratios": ratios})))
    by = dict(zip(panels, axes))
    labels = {key: (label, scale) for key, label, scale in _STATE_PANELS}

    ax = by["dose"]
    _shade_weekends(ax, problem, label=True)
    days = np.flatnonzero(D[0] > 0)
    doses = D[0, days]
    if days.size:
        ax.bar(days, doses, width=0.6, align="edge", color=_DOSE_COLOUR, edgecolor="black",
               linewidth=0.5, label="fraction\n(at the bar's left edge)", zorder=3)
        _dose_labels(ax, days, doses, float(getattr(problem, "dose_step", 0.0)))
    _nk_marks(ax, plan.nk_days, _NK_COLOUR, "NK infusion")
    _dose_panel_limits(ax, float(doses.max()) if doses.size else 1.0)

    for key in panels[1:]:
        ax = by[key]
        _shade_weekends(ax, problem)
        if key == "hypoxic_fraction":
            t, y = _series(sim, key, h0)
            ax.set_ylabel(labels[key][0])
            ax.plot(t, 100 * y, color="#b5473a", lw=1.8, label="hypoxic fraction")
            ax.axhline(100 * h0, color="grey", ls="--", lw=1,
                       label=f"pre-treatment\n({100 * h0:.3g} %)")
            ax.set_ylim(0, max(100 * y.max(), 100 * h0, 1.0) * 1.2)
        elif key == "chemokine":
            t, y = _series(sim, key, h0)
            ax.set_ylabel(labels[key][0])
            ax.plot(t, y, color="#8a5bb0", lw=1.8, label="chemokine\n(CXCL10)")
            ax.set_ylim(0, max(y.max(), 0.05) * 1.15)
        elif key == "nk":
            t, yb = _series(sim, "nk_blood", h0)
            _, yt = _series(sim, "nk_tumour", h0)
            ax.set_ylabel(labels[key][0])
            ax.plot(t, yb, color="#c7822b", lw=1.6, ls="--", label="blood")
            ax.plot(t, yt, color=_NK_COLOUR, lw=1.8, label="tumour")
            ax.set_ylim(0, max(yb.max(), yt.max(), 0.05) * 1.15)
        elif key == "nk_activity":
            t, y = _series(sim, key, h0)
            _, y0 = _series(ref, key, h0)
            auc, auc0 = float(sim.nk_auc[0]), float(ref.nk_auc[0])
            ax.set_ylabel(labels[key][0])
            ax.fill_between(t, y, color=_NK_COLOUR, alpha=0.18, lw=0)
            ax.plot(t, y, color=_NK_COLOUR, lw=1.8,
                    label=f"with RT: area {auc:.3g}\nactivity-days\n(NK favourability)")
            fold = f",\nRT gives x{auc / auc0:.2f}" if auc0 > 0 else ""
            ax.plot(t, y0, color="black", lw=1.2, ls=":",
                    label=f"same infusions\nwithout RT: area\n{auc0:.3g}{fold}")
            ax.set_ylim(0, max(y.max(), y0.max(), 0.05) * 1.2)
        elif key == "kill":
            t, y, what = _tumour_kill(problem, plan, sim, D, U)
            ax.set_ylabel("clonogens killed\n(log10)")
            ax.step(t, y, where="post", color="#444444", lw=1.8, label=what.replace(" (", "\n("))
            n0 = math.log10(float(bio.clonogens))
            ax.axhline(n0, color="#b5473a", ls="--", lw=1.2,
                       label=f"all clonogens\n(log10 N0 = {n0:.3g})")
            total = float(sim.log10_kill[0])
            nk_part = float(sim.nk_log10_kill[0])
            control = getattr(sim, "local_control", None)
            control = float(np.ravel(control)[0]) if control is not None else float(sim.tcp[0])
            name = "local control" if getattr(sim, "local_control", None) is not None else "TCP"
            gain = getattr(sim, "nk_gain_local_control", None)
            gain_text = "" if gain is None else f" (NK {float(np.ravel(gain)[0]):+.2g})"
            ax.plot([problem.horizon_days], [total], ls="none", marker="o", color="black",
                    clip_on=False, zorder=5,
                    label=f"total at day {problem.horizon_days}:\n{total:.3g} log10"
                          + (f" (NK {nk_part:.2g})" if nk_part > 0 else "")
                          + f"\n{name} {control:.3g}{gain_text}")
            ax.set_ylim(0, max(float(np.max(y)), n0, total, 1.0) * 1.15)
        elif key == "oar":
            ax.set_ylabel("OAR BED (Gy)")
            top = 1.0
            for i, (name, t, c, lim) in enumerate(oar):
                colour = _PLAN_COLOURS[(i + 1) % len(_PLAN_COLOURS)]
                ax.step(t, c, where="post", color=colour, lw=1.8, label=f"{name}: {c[-1]:.3g}")
                top = max(top, float(c[-1]))
                if lim is not None:
                    ax.axhline(lim, color=colour, ls="--", lw=1.1,
                               label=f"{name} limit {lim:.3g}")
                    top = max(top, float(lim))
            ax.set_ylim(0, top * 1.15)
        _legend_outside(ax)
    _legend_outside(by["dose"])
    _infusion_lines(axes[1:], plan.nk_days, _NK_COLOUR)
    for ax in axes:
        ax.grid(axis="y", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    _day_axis(axes[-1], problem)
    fig.suptitle(_wrap(title or f"{problem.name}: {describe_plan(plan)}"), fontsize=12)
    if path is not None:
        _save(fig, path)
    return fig, axes


def plot_plans(problem: Any, plans: Mapping[str, Any], *,
               path: str | os.PathLike | None = None,
               title: str | None = None) -> tuple[Any, np.ndarray]:
    """Overlay several labelled plans on the panels of :func:`plot_plan` for comparison.

    Each plan has one colour: grouped dose bars and infusion triangles in the top panel, and its
    hypoxic fraction, chemokine, NK cells (tumour solid, blood dashed) and NK activity below.

    Parameters
    ----------
    problem : rtopt.problem.problem.Problem
        The problem all plans belong to.
    plans : mapping of str to rtopt.problem.problem.Plan
        Label -> plan (up to 10; labels appear in the legend in this order).
    path : str or path-like, optional
        Also save the figure there (atomically; format from the suffix).
    title : str, optional
        Figure title (default: the instance name).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray of matplotlib.axes.Axes
        The panels drawn, top to bottom: dose, hypoxic fraction (when the tumour has hypoxia),
        chemokine, and NK cells and NK activity (when some plan has NK infusions).
    """
    from matplotlib.lines import Line2D

    if not plans:
        raise ValueError("plot_plans needs at least one plan")
    if len(plans) > len(_PLAN_COLOURS):
        raise ValueError(f"plot_plans draws at most {len(_PLAN_COLOURS)} plans, got {len(plans)}")
    if path is not None:
        figure_format(path)
    runs = {label: _run(problem, plan) for label, plan in plans.items()}
    h0 = float(problem.biology.hypoxic_fraction)
    # only panels that carry information: no hypoxia panel for a tumour without hypoxia, no NK
    # panels without NK infusions
    keys = ["dose"]
    if h0 > 0 or any(float(np.max(_series(r[0], "hypoxic_fraction", h0)[1])) > 0
                     for r in runs.values()):
        keys.append("hypoxic_fraction")
    keys.append("chemokine")
    if problem.biology.nk and any(p.nk_days for p in plans.values()):
        keys += ["nk", "nk_activity"]
    fig = _figure((11.0, 1.0 + 2.4 * len(keys) + 0.22 * max(0, len(plans) - 3)))
    axes = np.atleast_1d(np.asarray(fig.subplots(
        len(keys), 1, sharex=True, gridspec_kw={"height_ratios": [1.35] + [1] * (len(keys) - 1)})))
    by = dict(zip(keys, axes))
    for ax in axes:
        _shade_weekends(ax, problem, label=ax is axes[0])
    k = len(plans)
    width = 0.9 / k
    row = min(0.07, 0.4 / k)  # NK triangles: one row per plan, in axes coordinates
    dmax = 1.0
    tops = {"hypoxic_fraction": max(100 * h0, 1.0), "chemokine": 0.05, "nk": 0.05, "nk_activity": 0.05}
    for i, (label, plan) in enumerate(plans.items()):
        colour = _PLAN_COLOURS[i]
        sim, ref, D, U = runs[label]
        days = np.flatnonzero(D > 0)
        auc, auc0 = float(sim.nk_auc[0]), float(ref.nk_auc[0])
        fold = f" (x{auc / auc0:.2f} vs no RT)" if auc0 > 0 else ""
        # the whole description (long infusion lists included), wrapped rather than cut
        legend = _wrap(f"{label}: {describe_plan(plan, 400)}  |  NK favourability "
                       f"{auc:.3g} activity-days{fold}", 120)
        if days.size:
            axes[0].bar(days + i * width, D[days], width=width, align="edge", color=colour,
                        edgecolor="black", linewidth=0.4, zorder=3, label=legend)
            dmax = max(dmax, float(D[days].max()))
        else:
            axes[0].bar([], [], color=colour, label=legend)
        _nk_marks(axes[0], plan.nk_days, colour, None, y=0.92 - row * i,
                  x_offset=i * width + width / 2)
        if "hypoxic_fraction" in by:
            t, y = _series(sim, "hypoxic_fraction", h0)
            by["hypoxic_fraction"].plot(t, 100 * y, color=colour, lw=1.6, label=label)
            tops["hypoxic_fraction"] = max(tops["hypoxic_fraction"], 100 * y.max())
        t, y = _series(sim, "chemokine", h0)
        by["chemokine"].plot(t, y, color=colour, lw=1.6, label=label)
        tops["chemokine"] = max(tops["chemokine"], y.max())
        if "nk" in by:
            t, yb = _series(sim, "nk_blood", h0)
            _, yt = _series(sim, "nk_tumour", h0)
            by["nk"].plot(t, yt, color=colour, lw=1.7)
            by["nk"].plot(t, yb, color=colour, lw=1.2, ls="--")
            tops["nk"] = max(tops["nk"], yb.max(), yt.max())
            t, y = _series(sim, "nk_activity", h0)
            by["nk_activity"].plot(t, y, color=colour, lw=1.7, label=label)
            tops["nk_activity"] = max(tops["nk_activity"], y.max())
        _infusion_lines(axes[1:], plan.nk_days, colour)
    _dose_panel_limits(axes[0], dmax)
    # the lowest row of NK triangles must stay above the tallest bar
    axes[0].set_ylim(0, dmax * 1.12 / (0.92 - row * (k - 1) - 0.06))
    axes[0].plot([], [], ls="none", marker="v", ms=9, color="white", markeredgecolor="black",
                 label="NK infusion (triangle in the plan's colour)")
    # above the dose panel: long plan descriptions would hide bars inside it
    axes[0].legend(loc="lower left", bbox_to_anchor=(0.0, 1.02, 1.0, 0.1), mode="expand",
                   fontsize=9, framealpha=0.95, ncols=1, borderaxespad=0.0)
    if "hypoxic_fraction" in by:
        by["hypoxic_fraction"].axhline(100 * h0, color="grey", ls="--", lw=1,
                                       label=f"pre-treatment ({100 * h0:.3g} %)")
    for key, label, _ in _STATE_PANELS:
        if key in by:
            by[key].set_ylabel(label)
            by[key].set_ylim(0, tops[key] * 1.2)
    # the legend above the top panel names every colour; short repeats help only a few plans
    few = k <= 3
    if few:
        for key in ("hypoxic_fraction", "chemokine", "nk_activity"):
            if key in by:
                by[key].legend(loc="upper right", fontsize=8, framealpha=0.95, ncols=k + 1)
    elif "hypoxic_fraction" in by:
        by["hypoxic_fraction"].legend(handles=by["hypoxic_fraction"].get_lines()[-1:],
                                      loc="upper right", fontsize=8, framealpha=0.95)
    if "nk" in by:
        by["nk"].legend(handles=[Line2D([], [], color="black", lw=1.7, label="tumour"),
                                 Line2D([], [], color="black", lw=1.2, ls="--", label="blood")],
                        loc="upper right", fontsize=8, framealpha=0.95)
    for ax in axes:
        ax.grid(axis="y", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    _day_axis(axes[-1], problem)
    fig.suptitle(_wrap(title or f"{problem.name}: {k} plan{'s' if k > 1 else ''} compared"),
                 fontsize=12)
    if path is not None:
        _save(fig, path)
    return fig, axes

# ---------------------------------------------------------------------------- surrogate
def dose_response(site: str, doses_gy: Any, *, product: str = "il15_expanded",
                  cytokine_support: str = "none") -> dict[str, np.ndarray]:
    """Responses of the TME surrogate to one fraction, for every dose at once (vectorised).

    Per-fraction responses come from :mod:`rtopt.model.surrogate`; the net effects from one call of
    :func:`rtopt.model.simulator.simulate` on a ``(len(doses), horizon)`` matrix: a single fraction on
    day 0, then one NK infusion on day :data:`DOSE_RESPONSE_INFUSION_DAY`, over
    :data:`DOSE_RESPONSE_HORIZON_DAYS` days.  The tumour is the site preset with the
    :meth:`rtopt.model.simulator.Biology.simple` defaults (h0 0.21); ``h/h0`` does not depend on h0
    unless the cap ``hypoxic_fraction_max`` is reached.

    Parameters
    ----------
    site : str
        Site preset (:data:`rtopt.model.parameters.SITES`).
    doses_gy : array_like
        Doses per fraction (Gy), > 0.
    product : str
        NK product preset (:data:`rtopt.model.parameters.PRODUCTS`).
    cytokine_support : str
        ``none``, ``il2`` or ``il15``.

    Returns
    -------
    dict of str to ndarray
        ``dose_gy``; ``demand_drop`` m(d) and ``vascular_damage`` V(d) (fractions of 1);
        ``chemokine_amplitude`` A(d) (signal units); ``hypoxia_ratio_day2`` h/h0 two days after
        the fraction; ``nk_favourability`` (activity-days) of fraction + infusion;
        ``nk_favourability_no_rt`` of the infusion alone (scalar array) and ``nk_fold_vs_no_rt``.

    Raises
    ------
    KeyError
        Unknown site, product or cytokine support.
    """
    d = np.atleast_1d(np.asarray(doses_gy, dtype=float))
    if d.ndim != 1 or np.any(~np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("doses must be a 1-D array of finite doses > 0 Gy")
    bio = Biology.simple(site, product=product, cytokine_support=cytokine_support)
    p = bio.params
    H, spd = DOSE_RESPONSE_HORIZON_DAYS, 8
    D = np.zeros((d.size, H))
    D[:, 0] = d
    U = np.zeros(H)
    U[DOSE_RESPONSE_INFUSION_DAY] = 1.0
    sim = simulate(bio, D, U, trajectory=True, steps_per_day=spd)
    ref = simulate(bio, np.zeros(H), U, steps_per_day=spd)
    i2 = int(np.searchsorted(sim.t_days, DOSE_RESPONSE_HYPOXIA_DAY))
    auc0 = float(ref.nk_auc[0])
    return {
        "dose_gy": d,
        "demand_drop": np.broadcast_to(sg.demand_drop(d, p), d.shape).copy(),
        "vascular_damage": np.broadcast_to(sg.vascular_damage(d, p), d.shape).copy(),
        "chemokine_amplitude": np.broadcast_to(sg.chemokine_amplitude(d, p), d.shape).copy(),
        "hypoxia_ratio_day2": sim.trajectory["hypoxic_fraction"][:, i2] / bio.hypoxic_fraction,
        "nk_favourability": sim.nk_auc,
        "nk_favourability_no_rt": np.asarray(auc0),
        "nk_fold_vs_no_rt": sim.nk_auc / auc0 if auc0 > 0 else np.full(d.shape, np.nan),
    }


def _mark_regions(ax: Any, label: bool) -> None:
    ax.axvspan(12.0, 13.0, color="#2a9d5c", alpha=0.18, lw=0,
               label="12-13 Gy: hypoxia falls in lung SBRT (O2)" if label else None)
    ax.axvline(18.0, color="#b5473a", ls="--", lw=1.2,
               label="18 Gy: hypoxia rises or persists (O1, O3)" if label else None)


def plot_surrogate(site: str, *, product: str = "il15_expanded",
                   path: str | os.PathLike | None = None) -> tuple[Any, np.ndarray]:
    """Draw the surrogate's dose responses to one fraction of 1-25 Gy for a site preset.

    Four panels over the dose per fraction: demand drop m(d) (reoxygenation) with vascular damage
    V(d); chemokine amplitude A(d) with the Trex1 switch; hypoxic fraction ratio h/h0 two days
    after a single fraction; NK favourability of a single fraction followed by one infusion, as
    fold change over the infusion without RT (all from :func:`dose_response`).  The 12-13 Gy
    band and the 18 Gy line of observations O1-O3 (docs/model.md s3) are marked.

    Parameters
    ----------
    site : str
        Site preset (:data:`rtopt.model.parameters.SITES`).
    product : str
        NK product preset (:data:`rtopt.model.parameters.PRODUCTS`).
    path : str or path-like, optional
        Also save the figure there (atomically; format from the suffix).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray of matplotlib.axes.Axes, shape (2, 2)
    """
    if path is not None:
        figure_format(path)
    d = np.linspace(1.0, 25.0, 193)  # 0.125 Gy steps
    r = dose_response(site, d, product=product)
    p = resolve(site, product)
    fig = _figure((12.0, 8.5))
    axes = np.asarray(fig.subplots(2, 2, sharex=True))
    (a, b), (c, e) = axes
    a.plot(d, r["demand_drop"], color="#3b6ea8", lw=2, label="demand drop m(d) (reoxygenation)")
    a.plot(d, r["vascular_damage"], color="#b5473a", lw=2, label="vascular damage V(d)")
    a.set_ylabel("fraction lost per fraction")
    a.set_ylim(0, 1.05)
    a.set_title("oxygen demand and vessels (one fraction)")
    b.plot(d, r["chemokine_amplitude"], color="#8a5bb0", lw=2, label="chemokine amplitude A(d)")
    b.axvline(float(p.trex1_threshold_gy), color="#8a5bb0", ls=":", lw=1.2,
              label=f"Trex1 threshold d_trex = {float(p.trex1_threshold_gy):g} Gy")
    b.set_ylabel("peak CXCL10 signal\n(A_max = 1)")
    b.set_ylim(0, max(float(r["chemokine_amplitude"].max()), 0.05) * 1.25)
    b.set_title("chemokine pulse (cGAS-STING, switched off by Trex1)")
    c.plot(d, r["hypoxia_ratio_day2"], color="#b5473a", lw=2,
           label=f"h/h0 on day {DOSE_RESPONSE_HYPOXIA_DAY}")
    c.axhline(1.0, color="grey", ls="--", lw=1, label="pre-treatment (h/h0 = 1)")
    c.set_ylabel(f"hypoxic fraction ratio h/h0\n{DOSE_RESPONSE_HYPOXIA_DAY} days after the fraction")
    c.set_ylim(0, max(float(r["hypoxia_ratio_day2"].max()), 1.0) * 1.15)
    c.set_title("net effect on hypoxia")
    fold = r["nk_fold_vs_no_rt"]
    e.plot(d, fold, color="#2a9d5c", lw=2,
           label=f"fraction on day 0, infusion on day {DOSE_RESPONSE_INFUSION_DAY}")
    e.axhline(1.0, color="grey", ls="--", lw=1, label="infusion without RT (fold = 1)")
    e.set_ylabel(f"NK favourability over {DOSE_RESPONSE_HORIZON_DAYS} days\n(fold vs no RT)")
    finite = fold[np.isfinite(fold)]
    lo = min(float(finite.min()), 1.0) if finite.size else 0.0
    hi = max(float(finite.max()), 1.0) if finite.size else 2.0
    e.set_ylim(max(0.0, lo - 0.15 * (hi - lo + 0.1)), hi + 0.3 * (hi - lo + 0.1))
    e.set_title("net effect on NK cells")
    for ax in axes.ravel():
        _mark_regions(ax, label=ax is c)
        ax.grid(color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        ax.set_xlim(1, 25)
        ax.legend(loc="best", fontsize=8, framealpha=0.95)
    for ax in axes[1]:
        ax.set_xlabel("dose per fraction (Gy)")
        ax.set_xticks(np.arange(2, 26, 2))
    fig.suptitle(f"TME surrogate dose responses: site {site}, NK product {product}", fontsize=12)
    if path is not None:
        _save(fig, path)
    return fig, axes
