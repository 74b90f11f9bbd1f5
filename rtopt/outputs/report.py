"""Comparison reports: tables, performance profiles and plan figures from a comparison folder.

Everything here reads the files :func:`rtopt.outputs.compare.compare` writes (``results.csv``,
``plans/*.json``, ``system.json``), never a solver, so a report can be re-rendered at any time
with :func:`render` (``rtopt report OUTDIR``).  The plan figures re-simulate the stored plans
on the instance file whose path the plan files record.

Plots are functions of the results table (benchopt's habit): :func:`performance_profile`
computes Dolan-More performance profiles from the rows and :func:`plot_performance_profiles`
draws them; matplotlib is imported lazily and figures are returned as ``(fig, axes)``.
"""

from __future__ import annotations

import base64
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtopt.common.errors import InstanceError
from rtopt.common.fileio import inside, write_atomic
from rtopt.outputs.plots import plot_plan, plot_plans
from rtopt.outputs.rendering import (MdSafe, anchor, fmt_number, fmt_seconds, load_json, png_bytes,
                                     template_env, utc_date)
from rtopt.outputs.tables import (FEASIBLE_STATUSES, read_table, results_digest, sha256,
                                  write_manifest)
from rtopt.problem.problem import Plan, Problem

# matplotlib is imported inside the figure functions (import time).

__all__ = ["render", "stale_report", "report_source", "performance_profile", "plot_performance_profiles", "PerformanceProfile",
           "METRICS", "AMBER_SLACK", "traffic_light"]

METRICS = {
    "wall_time": "wall time",
    "objective_gap": "objective gap to the best verified plan",
}
"""Performance-profile metrics: the cost of a run is its wall time (s), or ``1 + gap_to_best``
(relative shortfall from the best verified objective on the instance)."""

_ALIASES = {"wall_time_s": "wall_time", "time": "wall_time", "gap_to_best": "objective_gap",
            "objective": "objective_gap", "gap": "objective_gap"}

AMBER_SLACK = 0.05
"""A clinical limit met with a slack below this fraction of the limit is shown amber."""

_MIN_TIME_S = 1e-3
"""Wall times are floored at 1 ms in the time profile: below that, timer noise would make
performance ratios of instant runs meaningless."""


# ---------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class PerformanceProfile:
    """Dolan-More performance profile of several solver profiles over instances.

    Attributes
    ----------
    metric : str
        ``wall_time`` or ``objective_gap``.
    instances, profiles : tuple of str
        Row and column labels of ``ratios``.
    ratios : ndarray, shape (n_instances, n_profiles)
        Performance ratio ``cost / best cost on the instance`` (>= 1); ``inf`` where the profile
        found no verified feasible plan (or nobody did).
    """

    metric: str
    instances: tuple[str, ...]
    profiles: tuple[str, ...]
    ratios: np.ndarray

    def fraction_within(self, tau: float) -> np.ndarray:
        """Fraction of instances each profile solves within ratio ``tau``, shape (n_profiles,)."""
        if not self.instances:
            return np.zeros(len(self.profiles))
        return (self.ratios <= tau).sum(axis=0) / len(self.instances)

    @property
    def max_ratio(self) -> float:
        """Largest finite ratio (1.0 if none)."""
        fin = self.ratios[np.isfinite(self.ratios)]
        return float(fin.max()) if fin.size else 1.0

    def curve(self, profile: str) -> tuple[np.ndarray, np.ndarray]:
        """Step points ``(tau, fraction)`` of one profile: the fraction jumps at each ratio."""
        j = self.profiles.index(profile)
        r = np.sort(self.ratios[:, j][np.isfinite(self.ratios[:, j])])
        n = max(1, len(self.instances))
        taus = np.concatenate([[1.0], r])
        frac = np.concatenate([[0.0], np.arange(1, r.size + 1) / n])
        # ties at tau = 1: the curve starts at the fraction already solved at ratio 1
        return taus, frac

    def solved(self) -> np.ndarray:
        """Fraction of instances each profile solves at all (the curve's right end)."""
        if not self.instances:
            return np.zeros(len(self.profiles))
        return np.isfinite(self.ratios).sum(axis=0) / len(self.instances)


def _metric(metric: str) -> str:
    m = _ALIASES.get(metric, metric)
    if m not in METRICS:
        raise ValueError(f"unknown performance metric {metric!r} (one of {', '.join(METRICS)})")
    return m


def _ordered(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def performance_profile(table: Sequence[Mapping[str, Any]], metric: str) -> PerformanceProfile:
    """Dolan-More performance profile of a results table for one metric.

    For each instance and solver profile the cost is the median over repeats of the run's
    cost, an unsolved run (no verified feasible plan) costing ``inf``; the performance ratio is
    the cost over the lowest cost any profile reached on the instance.  The profile of a solver
    is the fraction of instances whose ratio is at most ``tau``.

    Parameters
    ----------
    table : sequence of mapping
        Rows of ``results.csv`` (:func:`rtopt.outputs.compare.read_table` or ``CompareSummary.rows``).
    metric : str
        ``wall_time`` (cost: wall time in s, floored at 1 ms) or ``objective_gap``
        (cost: ``1 + gap_to_best``, so the best verified plan has ratio 1).

    Returns
    -------
    PerformanceProfile
    """
    m = _metric(metric)
    instances = _ordered([r["instance"] for r in table])
    profiles = _ordered([r["profile"] for r in table])
    runs: dict[tuple[int, int], list[float]] = {}
    for r in table:
        i, j = instances.index(r["instance"]), profiles.index(r["profile"])
        cost = math.inf
        if r.get("status") in FEASIBLE_STATUSES and r.get("objective") is not None:
            if m == "wall_time" and r.get("wall_time_s") is not None:
                cost = max(float(r["wall_time_s"]), _MIN_TIME_S)
            elif m == "objective_gap" and r.get("gap_to_best") is not None:
                cost = 1.0 + float(r["gap_to_best"])
        runs.setdefault((i, j), []).append(cost)
    cost = np.full((len(instances), len(profiles)), np.inf)
    for (i, j), c in runs.items():
        cost[i, j] = float(np.median(c))
    ratios = np.full_like(cost, np.inf)
    for i in range(len(instances)):
        best = cost[i].min() if cost.shape[1] else np.inf
        if np.isfinite(best):
            ratios[i] = cost[i] / best
    return PerformanceProfile(m, instances, profiles, ratios)


_STYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
            "#17becf", "#7f7f7f", "#bcbd22")


def plot_performance_profiles(table: Sequence[Mapping[str, Any]],
                              metrics: Sequence[str] = ("wall_time", "objective_gap"), *,
                              path: str | os.PathLike | None = None) -> tuple[Any, np.ndarray]:
    """Draw Dolan-More performance profiles of a results table, one panel per metric.

    Parameters
    ----------
    table : sequence of mapping
        Rows of ``results.csv``.
    metrics : sequence of str
        Metrics of :func:`performance_profile`, one panel each.
    path : str or path-like, optional
        Also save the figure there (PNG, atomically).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : numpy.ndarray of matplotlib.axes.Axes
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    pps = [performance_profile(table, m) for m in metrics]
    n_prof = len(pps[0].profiles) if pps else 0
    fig = Figure(figsize=(6.0 * len(pps), 4.4 + 0.25 * ((n_prof + 3) // 4)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(np.asarray(fig.subplots(1, len(pps), squeeze=False))).ravel()
    for ax, pp in zip(axes, pps):
        top = pp.max_ratio
        log = pp.metric == "wall_time" or top > 4.0
        if log:
            right = max(top * 1.6, 2.0)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            right = 1.0 + max(top - 1.0, 1e-3) * 1.25
        for j, prof in enumerate(pp.profiles):
            taus, frac = pp.curve(prof)
            taus = np.append(taus, right)
            frac = np.append(frac, frac[-1])
            # identical curves would hide each other: later ones thinner, on top, other dashes
            ax.step(taus, frac, where="post", color=_COLOURS[j % len(_COLOURS)],
                    ls=_STYLES[j % len(_STYLES)], lw=max(1.2, 3.2 - 0.5 * j),
                    marker=_MARKERS[j % len(_MARKERS)], markevery=slice(1, -1), ms=6,
                    alpha=0.9, zorder=2 + j,
                    label=f"{prof} (solved {int(round(pp.solved()[j] * len(pp.instances)))}"
                          f"/{len(pp.instances)})")
        ax.set_xlim(1.0, right)
        ax.set_ylim(-0.02, 1.05)
        ax.grid(color="#dddddd", lw=0.6, which="both")
        ax.set_axisbelow(True)
        ax.set_ylabel("fraction of instances within ratio \u03c4")
        if pp.metric == "wall_time":
            ax.set_xlabel("\u03c4: wall time / fastest verified-feasible time (log scale)")
            ax.set_title("time to a verified feasible plan")
        else:
            ax.set_xlabel("\u03c4: (1 + gap to best) / (1 + smallest gap)"
                          + (" (log scale)" if log else ""))
            ax.set_title("quality of the verified objective")
    if len(axes):  # one legend for all panels, below them, so it hides no curve
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", fontsize=9,
                   ncols=min(len(labels), 4) or 1, frameon=False)
    fig.suptitle(f"Performance profiles over {len(pps[0].instances) if pps else 0} instance(s) "
                 f"(higher and further left is better)", fontsize=11)
    if path is not None:
        write_atomic(path, png_bytes(fig))
    return fig, axes


# ---------------------------------------------------------------------------- helpers


def traffic_light(check: Mapping[str, Any]) -> str:
    """``green``, ``amber`` or ``red`` for one constraint check of a plan JSON.

    Red: violated.  Amber: a clinical limit (``kind = "limit"``) met with a slack below
    :data:`AMBER_SLACK` of the limit.  Green otherwise (calendar and count rules are exact,
    so they are green or red).
    """
    if not check.get("ok", False):
        return "red"
    if check.get("kind") == "limit":
        slack, limit = check.get("slack"), check.get("limit")
        if slack is not None and limit is not None:
            rel = slack / abs(limit) if abs(limit) > 0 else slack
            if rel < AMBER_SLACK:
                return "amber"
    return "green"


def _pct(x: Any) -> str:
    if x is None:
        return ""
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) < 1e-4:
        return f"{100 * x:.1e} %"
    return f"{100 * x:.3g} %"


def _constraint_value(c: Mapping[str, Any]) -> str:
    v = c.get("value")
    return "\u221e (none)" if v is None else fmt_number(v, 5)


# ---------------------------------------------------------------------------- model
def _build(outdir: Path) -> tuple[dict[str, Any], dict[str, bytes], list[str]]:
    """Everything the templates show, the figures (name -> PNG bytes) and the problems."""
    table = read_table(outdir / "results.csv")
    sysinfo = load_json(outdir / "system.json") or {}
    run = sysinfo.get("run", {})
    problems: list[str] = []
    figures: dict[str, bytes] = {}
    repeat = max((r["repeat"] for r in table), default=0) + 1

    plans: dict[int, dict[str, Any] | None] = {}
    for k, r in enumerate(table):
        d = None
        if r["plan_file"]:
            where = inside(outdir, r["plan_file"])
            if where is None:  # results.csv is data: it must not make us read other files
                problems.append(f"{outdir / 'results.csv'}: line {k + 2}: plan_file "
                                f"{r['plan_file']!r} is outside {outdir}: not read (plan "
                                f"details of {r['instance']} / {r['profile']} left out)")
                r["plan_file"] = ""
            else:
                d = load_json(where)
                if d is None:
                    problems.append(f"{outdir / r['plan_file']}: missing or not JSON (plan "
                                    f"details of {r['instance']} / {r['profile']} left out)")
        plans[k] = d

    # performance profiles -------------------------------------------------------------
    perf = None
    if table:
        try:
            fig, _ = plot_performance_profiles(table)
            figures["performance-profiles.png"] = png_bytes(fig)
            perf = {"figure": "performance-profiles.png"}
        except Exception as e:  # a figure must never cost the whole report
            problems.append(f"performance profiles not drawn: {type(e).__name__}: {e}")
    pp_rows = []
    if table:
        pt = performance_profile(table, "wall_time")
        po = performance_profile(table, "objective_gap")
        for j, prof in enumerate(pt.profiles):
            pp_rows.append({"profile": prof,
                            "solved": f"{int(round(pt.solved()[j] * len(pt.instances)))}"
                                      f"/{len(pt.instances)}",
                            "fastest": _pct(pt.fraction_within(1.0)[j]).replace(" ", ""),
                            "best": _pct(po.fraction_within(1.0 + 1e-9)[j]).replace(" ", ""),
                            "time2": _pct(pt.fraction_within(2.0)[j]).replace(" ", "")})

    # instances ------------------------------------------------------------------------
    inst_names = _ordered([r["instance"] for r in table])
    prof_names = _ordered([r["profile"] for r in table])
    instances = []
    overview = []
    for name in inst_names:
        idx = [k for k, r in enumerate(table) if r["instance"] == name]
        rows = [table[k] for k in idx]
        first_plan = next((plans[k] for k in idx if plans[k]), None) or {}
        path = rows[0]["instance_path"] or (first_plan.get("compare") or {}).get("instance_path")
        objective_name = next((r["objective_name"] for r in rows if r["objective_name"]), "")
        # one representative run per profile: its best verified repeat, else its first repeat
        rep: dict[str, int] = {}
        for k in idx:
            r = table[k]
            cur = rep.get(r["profile"])
            if cur is None:
                rep[r["profile"]] = k
                continue
            c = table[cur]
            better = (r["status"] in FEASIBLE_STATUSES and r["objective"] is not None and
                      (c["status"] not in FEASIBLE_STATUSES or c["objective"] is None
                       or r["objective"] > c["objective"]))
            if better:
                rep[r["profile"]] = k
        ov = {"instance": name, "anchor": anchor(name), "objective_name": objective_name,
              "cells": []}
        for prof in prof_names:
            k = rep.get(prof)
            if k is None:
                ov["cells"].append(None)
                continue
            r = table[k]
            reps = [table[q] for q in idx if table[q]["profile"] == prof]
            nfeas = sum(q["status"] in FEASIBLE_STATUSES for q in reps)
            ov["cells"].append({"status": r["status"], "objective": fmt_number(r["objective"]),
                                "best": r["best"], "gap_to_best": _pct(r["gap_to_best"]),
                                "feasible_runs": f"{nfeas}/{len(reps)}" if len(reps) > 1 else ""})
        overview.append(ov)

        summary = []
        for k in idx:
            r = table[k]
            summary.append({
                "best": r["best"], "profile": r["profile"], "backend": r["backend"],
                "repeat": r["repeat"], "seed": r["seed"], "status": r["status"],
                "termination": r["termination"], "solution_status": r["solution_status"],
                "objective": fmt_number(r["objective"]), "claimed": fmt_number(r["claimed_objective"]),
                "bound": fmt_number(r["bound"]), "gap": _pct(r["gap"]),
                "gap_to_best": _pct(r["gap_to_best"]), "worst_slack": fmt_number(r["worst_slack"], 3),
                "wall_time": fmt_seconds(r["wall_time_s"]),
                "solver": " ".join(x for x in (r["solver_name"], r["solver_version"]) if x),
                "plan": _compact_days(r["plan"]), "message": r["message"], "plan_file": r["plan_file"],
                "claim_differs": (r["objective"] is not None and r["claimed_objective"] is not None
                                  and abs(r["objective"] - r["claimed_objective"])
                                  > 1e-6 * max(1.0, abs(r["objective"]))),
            })

        # plans with a schedule, one per profile; identical schedules drawn once
        shown: list[dict[str, Any]] = []
        for prof in prof_names:
            k = rep.get(prof)
            if k is None or not plans.get(k) or not plans[k].get("schedule"):
                continue
            d = plans[k]
            label = prof if repeat == 1 else f"{prof} (r{table[k]['repeat']})"
            if table[k]["status"] not in FEASIBLE_STATUSES:
                label += " (fails verification)"
            shown.append({"label": label, "row": table[k], "json": d,
                          "plan": Plan.from_dict(d["schedule"])})
        groups: list[dict[str, Any]] = []
        for s in shown:
            for g in groups:
                if g["plan"] == s["plan"]:
                    g["labels"].append(s["label"])
                    break
            else:
                groups.append({"plan": s["plan"], "labels": [s["label"]]})
        figure, fig_note = None, ""
        if groups:
            figure, fig_note = _plan_figure(name, path, first_plan, groups, figures, problems)
        # traffic lights: one column per plan shown, one row per constraint
        lights = _lights(shown)
        instances.append({
            "name": name, "anchor": anchor(name), "path": path or "",
            "objective_name": objective_name, "rows": summary, "figure": figure,
            "figure_note": fig_note, "lights": lights,
            "best": next((s for s in summary if s["best"]), None),
        })

    versions = sysinfo.get("versions", {})
    model = {
        "title": "rtopt solver comparison",
        "date": utc_date(sysinfo.get("date", "")),
        "n_instances": len(inst_names), "n_profiles": len(prof_names), "repeat": repeat,
        "n_runs": len(table),
        "profiles": prof_names, "overview": overview, "instances": instances,
        "perf": perf, "pp_rows": pp_rows,
        "system": {"versions": versions,
                   "rows": [("platform", sysinfo.get("platform", "")),
                            ("CPU", f"{sysinfo.get('cpu_model', '')} "
                                    f"({sysinfo.get('cpu_count', '?')} logical CPUs)"),
                            ("git revision", sysinfo.get("git_revision", "") or "not a git checkout"),
                            ("date", utc_date(sysinfo.get("date", "")))]},
        "run_profiles": run.get("profiles", []),
        "run": {"repeat": run.get("repeat", repeat), "workers": run.get("workers", ""),
                "time_limit_s": run.get("time_limit_s")},
        "input_errors": run.get("input_errors", []),
        "amber_pct": f"{100 * AMBER_SLACK:g}",
        "status_counts": _counts(table),
    }
    model["problems"] = list(problems)
    return model, figures, problems


def _compact_days(text: str) -> str:
    """``days 0,1,2,3,7`` -> ``days 0-3,7`` in a plan description (runs of 3+ days)."""
    def runs(m: re.Match) -> str:
        days = [int(x) for x in m.group(2).split(",")]
        out, i = [], 0
        while i < len(days):
            j = i
            while j + 1 < len(days) and days[j + 1] == days[j] + 1:
                j += 1
            out.append(f"{days[i]}\u2013{days[j]}" if j - i >= 2 else
                       ",".join(str(d) for d in days[i:j + 1]))
            i = j + 1
        return m.group(1) + ",".join(out)

    return re.sub(r"(days? )(\d+(?:,\d+)*)", runs, text)


def _counts(table: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    order = ("optimal", "feasible", "infeasible", "no_solution", "declined", "unavailable", "error")
    c: dict[str, int] = {}
    for r in table:
        c[r["status"]] = c.get(r["status"], 0) + 1
    return [(s, c[s]) for s in order if s in c] + [(s, n) for s, n in c.items() if s not in order]


def _plan_figure(name: str, path: str | None, plan_json: Mapping[str, Any],
                 groups: list[dict[str, Any]], figures: dict[str, bytes],
                 problems: list[str]) -> tuple[str | None, str]:
    """Draw the plans of one instance (plot_plans, or plot_plan for a single plan)."""
    if not path:
        return None, "no instance path recorded: plans not re-simulated"
    try:
        problem = Problem.from_path(path)
    except InstanceError as e:
        problems.append(f"{name}: plans not drawn: {' '.join(e.lines())}")
        return None, f"plans not drawn: {' '.join(e.lines())}"
    note = ""
    sha = (plan_json.get("compare") or {}).get("instance_sha256")
    if sha and sha != sha256(path):
        note = (f"{path} has changed since the comparison: the trajectories below are "
                f"re-simulated with the current file.")
    labelled = {" = ".join(g["labels"]): g["plan"] for g in groups[:10]}
    if len(groups) > 10:
        note = (note + " " if note else "") + f"only the first 10 of {len(groups)} distinct plans drawn."
    fname = f"plans-{anchor(name)[5:]}.png"
    try:
        if len(labelled) == 1:
            label, plan = next(iter(labelled.items()))
            fig, _ = plot_plan(problem, plan, title=f"{name}: {label}: {plan.describe()}")
        else:
            fig, _ = plot_plans(problem, labelled, title=f"{name}: {len(labelled)} distinct plans")
        figures[fname] = png_bytes(fig)
    except Exception as e:  # plots are a colleague's module: a failure costs one figure only
        msg = f"{type(e).__name__}: {e}".splitlines()[0]
        problems.append(f"{name}: plans not drawn: {msg}")
        return None, (note + " " if note else "") + f"plans not drawn: {msg}"
    return fname, note


def _lights(shown: list[dict[str, Any]]) -> dict[str, Any]:
    cols = [s["label"] for s in shown]
    names: list[str] = []
    info: dict[str, dict[str, Any]] = {}
    for s in shown:
        for c in s["json"].get("constraints") or []:
            if c["name"] not in info:
                names.append(c["name"])
                info[c["name"]] = {"sense": c["sense"], "limit": c.get("limit"),
                                   "kind": c.get("kind", "limit")}
    rows = {"limit": [], "rule": []}
    for n in names:
        cells = []
        for s in shown:
            c = next((x for x in s["json"].get("constraints") or [] if x["name"] == n), None)
            if c is None:
                cells.append(None)
                continue
            light = traffic_light(c)
            rel = ""
            if c.get("slack") is not None and c.get("limit"):
                rel = _pct(c["slack"] / abs(c["limit"]))
            cells.append({"light": light, "value": _constraint_value(c), "slack_pct": rel,
                          "word": {"green": "ok", "amber": "near limit", "red": "violated"}[light]})
        limits = {fmt_number(x["limit"], 5) for x in
                  [next((y for y in s["json"].get("constraints") or [] if y["name"] == n), {})
                   for s in shown] if x}
        row = {"name": n, "sense": info[n]["sense"], "limit": " / ".join(sorted(limits)),
               "cells": cells}
        rows["rule" if info[n]["kind"] == "rule" else "limit"].append(row)
    n_rule_bad = sum(1 for r in rows["rule"] for c in r["cells"] if c and c["light"] == "red")
    return {"columns": cols, "limits": rows["limit"], "rules": rows["rule"],
            "rules_red": n_rule_bad}


# ---------------------------------------------------------------------------- render


def render(outdir: str | os.PathLike) -> list[str]:
    """Render ``report.html`` and ``report.md`` (and ``figures/*.png``) from a comparison folder.

    Reads ``results.csv``, ``plans/*.json`` and ``system.json``; never solves.  The HTML page
    is self-contained (figures as base64 PNG data URIs, inline CSS); the Markdown links the
    PNGs under ``figures/``.  Rendering the same folder twice gives identical files.

    Parameters
    ----------
    outdir : str or Path
        Folder written by :func:`rtopt.outputs.compare.compare` (a front comparison's folder
        is rendered by :func:`rtopt.outputs.compare_pareto.render`; :func:`rtopt.outputs.reports.render`
        chooses between the two).

    Returns
    -------
    list of str
        One line per part of the report that could not be drawn (the report says so as well).

    Raises
    ------
    rtopt.common.errors.InstanceError
        ``results.csv`` is missing or unreadable.
    """
    out = Path(outdir)
    rows, sha = results_digest(out / "results.csv")  # the table the report is built from
    model, figures, problems = _build(out)
    if results_digest(out / "results.csv") != (rows, sha):
        # another process rewrote the table while we read it (it should hold the folder lock)
        problems.append(f"{out / 'results.csv'}: changed while the report was being built; "
                        f"run 'rtopt report {out}' again")
        model["problems"] = list(problems)
    model["source"] = {"rows": rows, "sha256": sha, "short": sha[:12]}
    (out / "figures").mkdir(exist_ok=True)
    for fname, data in figures.items():
        write_atomic(out / "figures" / fname, data)
    for old in (out / "figures").glob("*.png"):  # figures of an earlier table would mislead
        if old.name not in figures and (old.name.startswith("plans-")
                                        or old.name == "performance-profiles.png"):
            old.unlink()
    uris = {k: "data:image/png;base64," + base64.b64encode(v).decode("ascii")
            for k, v in figures.items()}
    html = template_env(True).get_template("report.html.j2").render(
        **model, img=lambda name: uris.get(name, ""))
    md = template_env(False).get_template("report.md.j2").render(
        **model, img=lambda name: MdSafe(f"figures/{name}"))
    write_atomic(out / "report.md", md)
    write_atomic(out / "report.html", html)
    write_manifest(out, report_results_rows=rows, report_results_sha256=sha)
    return problems


_SOURCE_RE = r"rtopt-results rows=(\d+) sha256=([0-9a-f]*)"


def report_source(path: str | os.PathLike) -> tuple[int, str] | None:
    """``(rows, sha256)`` of the ``results.csv`` a report file was built from (its
    ``rtopt-results`` marker), or None if the file is missing or has no marker."""
    try:
        from rtopt.common.fileio import read_text

        text = read_text(path, limit=256 * 1024 * 1024)
    except InstanceError:
        return None
    m = re.search(_SOURCE_RE, text)
    return (int(m.group(1)), m.group(2)) if m else None


def stale_report(outdir: str | os.PathLike) -> list[str]:
    """One line per report file of ``outdir`` that is missing or was not built from the
    current ``results.csv`` (empty list: both reports match the table)."""
    out = Path(outdir)
    rows, sha = results_digest(out / "results.csv")
    if not sha:
        return [f"{out / 'results.csv'}: file not found (not a comparison output folder?)"]
    problems = []
    for name in ("report.html", "report.md"):
        src = report_source(out / name)
        if src is None:
            problems.append(f"{out / name}: missing or not an rtopt report; "
                            f"run 'rtopt report {out}'")
        elif src != (rows, sha):
            problems.append(f"{out / name}: stale: built from {src[0]} row(s) (sha256 "
                            f"{src[1][:12]}), results.csv now has {rows} row(s) (sha256 "
                            f"{sha[:12]}); run 'rtopt report {out}'")
    return problems
