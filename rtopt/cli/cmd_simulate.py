"""Simulation commands: ``rtopt simulate FILE`` (one plan) and ``rtopt surrogate SITE``.

Exit codes of ``simulate`` (:class:`rtopt.cli._common.ExitCode`): 0 when every constraint holds,
4 when the plan violates some (it is still simulated and reported), 1 on bad input (one line per
problem on stderr, nothing written).
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from rtopt.cli import app
from rtopt.cli._common import ExitCode, cli_errors, err_console, fail, out_console, shorten

# rtopt's layers and the heavy libraries are imported inside the commands: `rtopt --help` loads
# none of them (tests/test_cli_install.py).

EXIT_VIOLATED = ExitCode.VIOLATED
"""Exit code of ``rtopt simulate`` for a plan that violates constraints."""
TRAJECTORY_STEP_DAYS = 0.25
"""Spacing of the trajectory points in ``rtopt simulate --json`` (the simulator's sub-step
grid, downsampled)."""
SURROGATE_TABLE_DOSES = tuple(float(d) for d in range(2, 25, 2))
"""Doses per fraction (Gy) of the ``rtopt surrogate`` table."""


# ---------------------------------------------------------------------------- input parsing
def _items(text: str, option: str) -> list[str]:
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(s == "" for s in items):
        fail([f"rtopt: {option}: {shorten(text)!r} is not a comma-separated list (e.g. 0,2,4,7)"])
    return items


def _parse_days(text: str, option: str) -> list[int]:
    """Comma-separated whole calendar days, e.g. ``0,2,4,7``."""
    days = []
    for s in _items(text, option):
        try:
            day = int(s)
        except ValueError:
            fail([f"rtopt: {option}: {shorten(s)!r} in {shorten(text)!r} is not a whole day number"])
        if day < 0:
            fail([f"rtopt: {option}: day {day} is before day 0"])
        days.append(day)
    return days


def _parse_doses(text: str) -> list[float]:
    """One dose per fraction (Gy) or a comma-separated list of per-fraction doses."""
    doses = []
    for s in _items(text, "--dose"):
        try:
            x = float(s)
        except ValueError:
            fail([f"rtopt: --dose: {shorten(s)!r} is not a number of Gy"])
        if not math.isfinite(x) or x <= 0:
            fail([f"rtopt: --dose: {s} Gy: a dose per fraction must be a finite number > 0"])
        doses.append(x)
    return doses


def _plan_from_options(dose: str, days: str, nk_days: str | None) -> Any:
    from rtopt.problem.problem import Plan

    d = _parse_days(days, "--days")
    x = _parse_doses(dose)
    if len(x) == 1:
        x = x * len(d)
    elif len(x) != len(d):
        fail([f"rtopt: --dose: {len(x)} doses for {len(d)} fraction days "
              f"(give one dose for all days, or one per day)"])
    dup = sorted({v for v in d if d.count(v) > 1})
    if dup:
        fail([f"rtopt: --days: day {dup[0]} appears twice (one fraction per day)"])
    pairs = sorted(zip(d, x))
    nk = sorted(_parse_days(nk_days, "--nk-days")) if nk_days and nk_days.strip() else []
    return Plan(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), tuple(nk))


def _check_horizon(plan: Any, horizon: int, instance_file: str) -> None:
    """One line per ``--days`` or ``--nk-days`` day outside ``0 .. horizon - 1``."""
    rng = f"the horizon 0..{horizon - 1} of {instance_file}"
    lines = [f"rtopt: --days: day {day} is outside {rng}" for day in plan.fraction_days
             if day >= horizon]
    lines += [f"rtopt: --nk-days: day {day} is outside {rng}" for day in plan.nk_days
              if day >= horizon]
    if lines:
        fail(lines)


def _check_output(path: Path | None, option: str) -> None:
    """Fail before any work if ``path`` cannot be written as an image."""
    if path is None:
        return
    from rtopt.outputs.plots import figure_format

    if path.is_dir():
        fail([f"{path}: is a directory"])
    parent = path.parent
    if not parent.is_dir():
        fail([f"{path}: directory {parent} does not exist"])
    try:
        figure_format(path)
    except ValueError as e:
        fail([str(e)])


# ---------------------------------------------------------------------------- formatting
def _fmt(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "-"
    x = float(x)
    return format(x, spec) if math.isfinite(x) else "-"


def _sig(x: Any, digits: int = 6) -> float | None:
    x = float(x)
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def _report(problem: Any, plan: Any) -> dict[str, Any]:
    """Verify and simulate ``plan``: everything the table and the JSON show."""
    import numpy as np

    from rtopt.model.simulator import TRAJECTORY_STEPS_PER_DAY, simulate
    from rtopt.planning.solve import Result

    v = problem.verify(plan)
    D, U = plan.daily(problem.horizon_days)
    bio = problem.biology
    spd = max(problem.steps_per_day, TRAJECTORY_STEPS_PER_DAY)      # a grid for display
    Dt = problem.tumour_doses(D, problem.dose_ratio_of(plan))       # the dose the tumour receives
    sim = simulate(bio, Dt, U, trajectory=True, steps_per_day=spd)

    def infused(sim_: Any) -> float:
        # the infused cells' favourability (the fold compares infusions, not the patient's
        # own NK cells, whom RT also recruits and kills)
        return float(sim_.nk_auc[0] - sim_.nk_auc_endogenous[0])

    auc = infused(simulate(bio, Dt, U, steps_per_day=problem.steps_per_day))
    auc0 = fold = None
    if bio.nk and U.any():
        auc0 = infused(simulate(bio, np.zeros_like(D), U, steps_per_day=problem.steps_per_day))
        fold = auc / auc0 if auc0 > 0 else None
    # The metric names and rounding of `rtopt solve --json`, from the same code.
    res = Result(instance=problem.name, solver="simulate", backend="simulator",
                 status="feasible" if v.feasible else "no_solution", termination="",
                 solution_status="feasible" if v.feasible else "infeasible",
                 objective_name=problem.objective_name, objective=v.objective,
                 claimed_objective=None, bound=None, plan=plan, metrics=v.metrics,
                 constraints=v.checks, verified=True, wall_time_s=0.0,
                 oar_names=tuple(o.name for o in problem.oars),
                 tumour_dose_ratio=problem.tumour_dose_ratio).to_dict()
    metrics = dict(res["metrics"])
    metrics["nk_fold_vs_no_rt"] = None if fold is None else _sig(fold, 9)
    metrics["nk_favourability_no_rt"] = None if auc0 is None else _sig(auc0, 9)
    metrics["mean_hypoxic_fraction"] = _sig(v.metrics["mean_hypoxic_fraction"], 9)
    stride = max(1, int(round(TRAJECTORY_STEP_DAYS * spd)))
    keys = ("hypoxic_fraction", "chemokine", "nk_blood", "nk_tumour", "nk_activity", "demand",
            "vascular")
    traj: dict[str, Any] = {
        "trajectory_step_days": stride / spd,
        "note": "state at each time after that day's fraction and infusion; day j starts at t = j",
        "t_days": [_sig(t) for t in sim.t_days[::stride]],
    }
    for k in keys:
        traj[k] = [_sig(x) for x in sim.trajectory[k][0, ::stride]]
    return {"verification": v, "metrics": metrics, "constraints": res["constraints"],
            "objective": {"name": problem.objective_name, "value": res["objective"]["value"]},
            "trajectory": traj, "fold": fold, "auc0": auc0, "dvh": res["dvh"]}


def _limit_str(check: Any) -> str:
    return "-" if check is None else f"{check.sense} {_fmt(check.limit)}"


def _status(check: Any) -> str:
    return "" if check is None else ("ok" if check.ok else "VIOLATED")


def _print_table(problem: Any, plan: Any, rep: dict[str, Any]) -> None:
    from rtopt.model import radiobiology as rb

    v = rep["verification"]
    m = v.metrics
    checks = {c.name: c for c in v.checks}
    own = ("" if getattr(plan, "tumour_dose_ratio", None) is None else
           f" (the plan's own prescription convention: tumour dose "
           f"{plan.tumour_dose_ratio:.3g} x prescribed; the instance's "
           f"{problem.tumour_dose_ratio:.3g} x)")
    t = Table(title=f"{problem.name}: {plan.describe()}{own}", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("limit", justify="right")
    t.add_column("status")
    rx = checks.get("prescription.min_bed_gy")
    t.add_row("tumour BED (Gy)", _fmt(m["tumour_bed_gy"]), _limit_str(rx), _status(rx))
    eqd2_lim = "-" if rx is None else f">= {_fmt(rb.eqd2_from_bed(rx.limit, problem.alpha_beta))}"
    t.add_row("tumour EQD2 (Gy)", _fmt(m["tumour_eqd2_gy"]), eqd2_lim, _status(rx))
    for o in problem.oars:
        bed_c = checks.get(f"oar.{o.name}.max_bed_gy")
        dpf_c = checks.get(f"oar.{o.name}.max_dose_per_fraction_gy")
        t.add_row(f"{o.name} BED (Gy, a/b {o.alpha_beta_gy:g})", _fmt(m[f"oar.{o.name}.bed_gy"]),
                  _limit_str(bed_c), _status(bed_c))
        eq_lim = "-" if bed_c is None else \
            f"<= {_fmt(rb.eqd2_from_bed(bed_c.limit, o.alpha_beta_gy))}"
        t.add_row(f"{o.name} EQD2 (Gy)", _fmt(m[f"oar.{o.name}.eqd2_gy"]), eq_lim,
                  _status(bed_c))
        t.add_row(f"{o.name} dose per fraction (Gy)",
                  _fmt(m[f"oar.{o.name}.max_dose_per_fraction_gy"]), _limit_str(dpf_c),
                  _status(dpf_c))
    t.add_row("NK favourability (activity-days)", _fmt(m.get("nk_favourability")), "", "")
    t.add_row("  of which infused NK cells", _fmt(m.get("nk_favourability_infused")), "", "")
    t.add_row("  of which the patient's own NK", _fmt(m.get("nk_favourability_endogenous")),
              "", "")
    fold = rep["fold"]
    t.add_row("  infused: fold vs same infusions without RT",
              "-" if fold is None else f"x{fold:.3g}", "", "")
    t.add_row("tumour log10 kill", _fmt(m.get("tumour_log10_kill")), "", "")
    t.add_row("  of which NK killing", _fmt(m.get("nk_log10_kill")), "", "")
    t.add_row("  NK-attributable gain (vs same plan, no infusions)", _fmt(m.get("nk_gain_log10_kill")),
              "", "")
    t.add_row("local control (population)", _fmt(m.get("local_control"), ".3g"), "", "")
    t.add_row("  NK-attributable gain", _fmt(m.get("nk_gain_local_control"), ".3g"), "", "")
    t.add_row("  reoxygenation gain (RT alone)",
              _fmt(m.get("reoxygenation_gain_local_control"), ".3g"), "", "")
    t.add_row("TCP (per patient, nominal alpha)", _fmt(m.get("tcp"), ".3g"), "", "")
    t.add_row(f"hypoxic fraction at end (%; baseline "
              f"{100 * problem.biology.hypoxic_fraction:.3g})",
              _fmt(100 * m["hypoxic_fraction_end"], ".3g"), "", "")
    t.add_row("circulating NK nadir (of baseline)", _fmt(m.get("circulating_nk_nadir"), ".3g"),
              "", "")
    t.add_row(f"  circulating NK area (baseline-days of {problem.horizon_days})",
              _fmt(m.get("circulating_nk_auc"), ".4g"), "", "")
    oc = checks.get("max_overall_days")
    t.add_row("overall time (days)", _fmt(m["overall_days"]), _limit_str(oc), _status(oc))
    c = out_console
    c.print(t)
    c.print(f"objective {problem.objective_name}: {_fmt(v.objective)}")
    c.print(f"tumour control: {problem.outcome_calibration()[1]}")
    from rtopt.cli.cmd_solve import print_dvh

    print_dvh(rep["dvh"])
    bad = v.violated
    if not bad:
        shown = {"prescription.min_bed_gy", "max_overall_days"} | {
            f"oar.{o.name}.{k}" for o in problem.oars
            for k in ("max_bed_gy", "max_dose_per_fraction_gy")}
        shown |= {ch.name for ch in v.checks if ch.kind == "limit"
                  and (".dvh." in ch.name or ".ntcp." in ch.name)}  # the DVH table's limits
        n_shown = sum(1 for ch in v.checks if ch.name in shown)
        rest = len(v.checks) - n_shown
        c.print(f"constraints: the {n_shown} limits in the table hold"
                + (f"; so do the {rest} calendar, count and infusion rules (not listed)"
                   if rest else ""))
        return
    t = Table(title=f"violated constraints ({len(bad)} of {len(v.checks)})", title_justify="left")
    for col in ("constraint", "achieved", "limit", "slack", "kind"):
        t.add_column(col, justify="left" if col in ("constraint", "kind") else "right",
                     no_wrap=True)
    for ch in bad:
        t.add_row(ch.name, _fmt(ch.value), _limit_str(ch), _fmt(ch.slack), ch.kind)
    c.print(t)


def _violation_line(v: Any) -> str:
    parts = [f"{c.name} ({_fmt(c.value)}, limit {c.sense} {_fmt(c.limit)})" for c in v.violated]
    n = len(parts)
    return f"rtopt: the plan violates {n} constraint{'s' if n > 1 else ''}: " + "; ".join(parts)


# ---------------------------------------------------------------------------- commands
@app.command("simulate")
@cli_errors()
def simulate_cmd(
    file: Annotated[str, typer.Argument(metavar="FILE", help="Instance file (TOML).")],
    dose: Annotated[Optional[str], typer.Option(
        "--dose", metavar="GY[,GY...]", show_default=False,
        help="Dose per fraction (Gy): one value for all days, or one per day.")] = None,
    days: Annotated[Optional[str], typer.Option(
        "--days", metavar="D,D,...", show_default=False,
        help="Fraction days (day 0 = the instance's start_weekday), e.g. 0,2,4,7.")] = None,
    nk_days: Annotated[Optional[str], typer.Option(
        "--nk-days", metavar="D,D,...", show_default=False,
        help="NK infusion days (after that day's fraction), e.g. 5.")] = None,
    plan_file: Annotated[Optional[str], typer.Option(
        "--plan", metavar="PLAN.json", show_default=False,
        help="Plan JSON (instead of --dose/--days/--nk-days): any plan file rtopt writes "
             "(solve -o, replan -o, a trial's plans/ARM.json, simulate --json) or a bare plan "
             "(fraction_days, doses_gy, nk_infusion_days).")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print metrics, constraints and trajectories as JSON.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", metavar="OUT.png", show_default=False,
        help="Save a figure of the schedule and its TME trajectories (png, pdf, svg).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Use plan files written for another instance.")] = False,
) -> None:
    """Simulate one plan: metrics, limits and TME trajectories.

    Exit code 0 when every constraint holds, 4 when the plan violates some (still simulated
    and reported), 1 on bad input.
    """
    from rtopt.problem.problem import Problem, load_plan_file

    manual = dose is not None or days is not None or nk_days is not None
    if plan_file is not None and manual:
        fail(["rtopt: give the plan either with --plan or with --dose/--days/--nk-days, not both"])
    if plan_file is None and (dose is None or days is None):
        missing = "--dose" if dose is None and days is not None else \
            "--days" if days is None and dose is not None else "--dose and --days"
        fail([f"rtopt: missing {missing} (or give a plan file with --plan)"])
    _check_output(plot, "--plot")
    problem = Problem.from_path(file)
    if plan_file is not None:   # every plan file rtopt writes, or a bare plan
        plan = load_plan_file(plan_file, problem, force=force)
    else:
        plan = _plan_from_options(dose, days, nk_days)
        _check_horizon(plan, problem.horizon_days, file)
    if plan.nk_days and not problem.biology.nk:
        err_console.print(f"rtopt: note: {file} has no [nk] table; the NK infusions are ignored")
    rep = _report(problem, plan)
    v = rep["verification"]
    if plot is not None:
        from rtopt.outputs.plots import describe_plan, plot_plan

        title = f"{problem.name}: {describe_plan(plan)}"
        if not v.feasible:
            title += "\nVIOLATES " + ", ".join(c.name for c in v.violated)
        plot_plan(problem, plan, title=title, path=plot)
    if json_out:
        out = {"instance": problem.name, "instance_file": file, "plan": plan.describe(),
               "schedule": plan.to_file_dict(problem.tumour_dose_ratio),
               "feasible": v.feasible,
               "violated": [c.name for c in v.violated], "objective": rep["objective"],
               "metrics": rep["metrics"], "constraints": rep["constraints"], "dvh": rep["dvh"],
               "outcome_calibration": problem.outcome_calibration()[1],
               "trajectory": rep["trajectory"]}
        typer.echo(json.dumps(out, indent=2))
    else:
        _print_table(problem, plan, rep)
    if plot is not None:
        err_console.print(f"wrote {plot}")
    if not v.feasible:
        err_console.print(_violation_line(v))
        raise typer.Exit(EXIT_VIOLATED)


def _choice(value: str, choices: tuple[str, ...], kind: str) -> str:
    """Normalise ``value`` (case, '-' for '_') and check it, with a did-you-mean hint."""
    norm = value.strip().lower().replace("-", "_")
    if norm in choices:
        return norm
    if len(norm) > 100:  # no choice is that long; difflib on a huge string is slow
        norm = norm[:100]
    # a prefix ("il15" -> "il15_expanded") is a better guess than the closest spelling
    hint = [c for c in choices if c.startswith(norm)] if len(norm) >= 2 else []
    hint = hint if len(hint) == 1 else difflib.get_close_matches(norm, choices, n=1, cutoff=0.5)
    did = f"; did you mean {hint[0]!r}?" if hint else ""
    fail([f"rtopt: unknown {kind} {shorten(value)!r}{did} (one of {', '.join(choices)})"])


@app.command("surrogate")
@cli_errors()
def surrogate_cmd(
    site: Annotated[str, typer.Argument(
        metavar="SITE", help="Site preset: lung, prostate, head_and_neck, breast, pancreas, "
                             "generic.")],
    product: Annotated[str, typer.Option(
        "--product", metavar="P",
        help="NK product preset (il2_activated, il15_expanded, memory_like_il12_15_18, "
             "car_nk_il15).")] = "il15_expanded",
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", metavar="OUT.png", show_default=False,
        help="Save the dose-response figure (1-25 Gy).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the arrays as JSON.")] = False,
) -> None:
    """Dose responses of the TME surrogate to one fraction of 2, 4, ..., 24 Gy."""
    import numpy as np

    from rtopt.model.parameters import PRODUCTS, SITES
    from rtopt.outputs import plots

    site = _choice(site, SITES, "site")
    product = _choice(product, PRODUCTS, "NK product")
    _check_output(plot, "--plot")
    r = plots.dose_response(site, np.array(SURROGATE_TABLE_DOSES), product=product)
    if plot is not None:
        plots.plot_surrogate(site, product=product, path=plot)
    setup = {"hypoxia_day": plots.DOSE_RESPONSE_HYPOXIA_DAY,
             "nk_infusion_day": plots.DOSE_RESPONSE_INFUSION_DAY,
             "horizon_days": plots.DOSE_RESPONSE_HORIZON_DAYS,
             "description": "a single fraction on day 0; hypoxic fraction ratio h/h0 read on "
                            "hypoxia_day; one NK infusion on nk_infusion_day; NK favourability "
                            "integrated over horizon_days"}
    if json_out:
        out: dict[str, Any] = {"site": site, "product": product, "setup": setup}
        for k, a in r.items():
            a = np.asarray(a)
            out[k] = _sig(a) if a.ndim == 0 else [_sig(x) for x in a]
        typer.echo(json.dumps(out, indent=2))
    else:
        t = Table(title=f"TME surrogate, site {site}, NK product {product}: one fraction",
                  title_justify="left",
                  caption=f"h/h0: hypoxic fraction {setup['hypoxia_day']} days after the "
                          f"fraction over baseline. NK: one infusion on day "
                          f"{setup['nk_infusion_day']}, activity integrated over "
                          f"{setup['horizon_days']} days (infusion alone: "
                          f"{float(r['nk_favourability_no_rt']):.3g} activity-days).",
                  caption_justify="left")
        for col in ("dose\n(Gy)", "demand\ndrop m", "vascular\ndamage V", "chemokine\nA",
                    f"h/h0\nday {setup['hypoxia_day']}", "NK favour.\n(act.-days)",
                    "NK fold\nvs no RT"):
            t.add_column(col, justify="right")
        for i, d in enumerate(r["dose_gy"]):
            t.add_row(f"{d:g}", f"{r['demand_drop'][i]:.3f}", f"{r['vascular_damage'][i]:.3f}",
                      f"{r['chemokine_amplitude'][i]:.3f}", f"{r['hypoxia_ratio_day2'][i]:.3f}",
                      f"{r['nk_favourability'][i]:.3g}", f"x{r['nk_fold_vs_no_rt'][i]:.2f}")
        out_console.print(t)
    if plot is not None:
        err_console.print(f"wrote {plot}")
