"""Decisions under uncertainty: ``rtopt model params``, ``rtopt sensitivity``, ``rtopt trial``.

Each command is a few lines over :mod:`rtopt.model.uncertainty`, :mod:`rtopt.decisions.sensitivity` and
:mod:`rtopt.decisions.trial`; errors are one line each (:func:`rtopt.cli._common.cli_errors`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rtopt.cli import app
from rtopt.cli._common import cli_errors, compile_with_notice, err_console, out_console
from rtopt.common.fileio import locked_output

# rtopt's layers and the heavy libraries are imported inside the commands: `rtopt --help` loads
# none of them (tests/test_cli_install.py).

model_app = typer.Typer(name="model", help="The model: parameters and their distributions.",
                        no_args_is_help=True, add_completion=False)
app.add_typer(model_app, name="model")


@model_app.command("params")
@cli_errors()
def params_cmd(
    file: Annotated[Optional[str], typer.Argument(
        metavar="[INSTANCE]", help="Instance file (default: the generic preset with the "
                                   "il15_expanded product and lung tumour values).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List every uncertain parameter: value, distribution, bounds and source."""
    from rtopt.model.parameters import BASIS, SPECS, basis, basis_summary, resolve
    from rtopt.model.uncertainty import distributions_for, generic_distributions

    if file is None:
        dists = generic_distributions()
        where = "generic preset, il15_expanded NK product, alpha 0.35 /Gy, alpha/beta 10 Gy"
        prov = dict(resolve("generic", "il15_expanded").provenance)
    else:
        from rtopt.problem.instance import load_instance

        inst = load_instance(file)
        dists = distributions_for(inst)
        where = file
        prov = dict(inst.surrogate_parameters().provenance)
    summary = basis_summary(prov)
    n_nk = len(BASIS)
    share = summary["assumption"] / n_nk
    if json_out:
        rows = []
        for d in dists.values():
            row = d.to_dict()
            row["group"] = SPECS[d.name].group if d.name in SPECS else "tumour"
            row["provenance"] = prov.get(d.name, d.source)
            row["basis"] = basis(d.name, prov.get(d.name))
            rows.append(row)
        # one object per parameter (the list shape scripts rely on); the NK and chemokine
        # parameters carry their basis, the others None
        typer.echo(json.dumps(rows, indent=2))
        return
    t = Table(title=f"uncertain parameters ({where})")
    for col in ("name", "value", "distribution", "bounds", "unit", "basis"):
        t.add_column(col, justify="right" if col == "value" else "left", no_wrap=True,
                     min_width=5 if col == "unit" else None)
    wide = out_console.width >= 120               # the source column needs room
    if wide:
        t.add_column("source", overflow="ellipsis", no_wrap=True, max_width=70)
    for d in dists.values():
        t.add_row(d.name, f"{d.value:.4g}",
                  "fixed" if d.fixed else d.kind + (f" sd {d.sd:.3g}" if d.sd else ""),
                  f"[{d.low:.3g}, {d.high:.3g}]",
                  "" if d.unit == "1" else d.unit, basis(d.name, prov.get(d.name)) or "",
                  *([prov.get(d.name, d.source)] if wide else []))
    out_console.print(t)
    out_console.print(f"NK and chemokine parameters ({n_nk}): " + ", ".join(
        f"{v} {k}" for k, v in summary.items() if v) + f"; bare assumptions {share:.0%} "
        "(basis: docs/model.md section 12)")
    out_console.print("triangular: mode at the value; loguniform: ranges over a decade; "
                      "override per instance in [uncertainty.NAME] (docs/model.md section 11)."
                      + ("" if wide else "  Sources: --json or a wider terminal."))


@model_app.command("standards")
@cli_errors()
def standards_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the named standard schedules: dose, calendar, prescription convention, source."""
    from rtopt.model.standards import standard_schedules

    table = standard_schedules()
    if json_out:
        typer.echo(json.dumps([{"name": s.name, "dose_per_fraction_gy": s.dose_per_fraction_gy,
                                "days": list(s.days), "prescription": s.prescription,
                                "isodose_percent": s.isodose_percent,
                                "tumour_dose_ratio": s.tumour_dose_ratio,
                                "calendar": s.calendar, "source": s.source}
                               for s in table.values()], indent=2))
        return
    t = Table(title="standard schedules (rtopt/model/data/standard_schedules.toml)")
    for col in ("name", "Gy x n", "days", "prescription", "x Rx"):
        t.add_column(col, justify="right" if col == "x Rx" else "left")
    wide = out_console.width >= 120
    if wide:
        t.add_column("source", overflow="ellipsis", no_wrap=True, max_width=60)
    for s in table.values():
        days = ",".join(map(str, s.days)) if len(s.days) <= 8 else \
            f"{len(s.days)} weekdays from 0"
        t.add_row(s.name, f"{s.dose_per_fraction_gy:g} x {len(s.days)}", days, s.convention,
                  f"{s.tumour_dose_ratio:.3g}", *([s.source] if wide else []))
    out_console.print(t)
    out_console.print("Used by trial --arm NAME, pareto reference marks, the outcome tables and "
                      "[prescription] local_control_vs; each is delivered with its source's "
                      "prescription convention (x Rx = tumour dose / prescribed dose).")


_SCHEDULER_HELP = ("Dask scheduler: sync (default), threads, local:N, or tcp://HOST:PORT "
                   "(default: DASK_SCHEDULER_ADDRESS when set).")


def load_plan(path: str, problem=None, force: bool = False, option: str = ""):
    """A plan from a JSON file (any plan file rtopt writes, or a bare plan; typed, one-line
    errors), checked against ``problem`` (:func:`rtopt.problem.problem.load_plan_file`)."""
    from rtopt.problem.problem import load_plan_file

    return load_plan_file(path, problem, force=force, option=option)


@app.command("sensitivity")
@cli_errors()
def sensitivity_cmd(
    file: Annotated[str, typer.Argument(metavar="INSTANCE", help="Instance file (TOML).")],
    plan: Annotated[str, typer.Option("--plan", metavar="PLAN.json",
                                      help="Plan to analyse (a plan file: JSON of `rtopt solve -o`, "
                                           "a trial's plans/ARM.json, ... or a bare plan).")],
    versus: Annotated[Optional[str], typer.Option(
        "--versus", metavar="PLAN2.json",
        help="Second plan: also rank the parameters that decide which plan wins.")] = None,
    method: Annotated[str, typer.Option("--method", help="morris or sobol.")] = "sobol",
    samples: Annotated[int, typer.Option(
        "--samples", "-n", help="Base sample size N (Sobol: N (d + 2) runs, N rounded up to a "
                                "power of 2; Morris: N trajectories).")] = 64,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="DIR", help="Write sensitivity.json, indices.csv and plots "
                                              "(finished chunks are kept in DIR/chunks).")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help=_SCHEDULER_HELP)] = None,
    metric: Annotated[Optional[str], typer.Option(
        "--metric", help="Analyse this metric instead of the objective (e.g. local_control, "
                         "nk_gain_local_control, nk_favourability).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows per table.")] = 12,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Use plan files written for another instance.")] = False,
) -> None:
    """Rank the uncertain parameters that drive a plan's objective (SALib Morris or Sobol)."""
    from rtopt.problem.problem import Problem

    from rtopt.decisions.distributed import resolve_scheduler

    resolve_scheduler(scheduler)          # a bad --scheduler fails before any work
    problem = Problem.from_path(file)
    a = load_plan(plan, problem, force, "--plan")
    b = load_plan(versus, problem, force, "--versus") if versus else None
    with contextlib.ExitStack() as stack:
        if output is not None:
            stack.enter_context(locked_output(output, "rtopt sensitivity"))
        compile_with_notice(("horizon", "population"))  # a first run: the notice, not silence
        _sensitivity(problem, a, b, method, samples, seed, output, scheduler, metric, top,
                     json_out)


def _sensitivity(problem, a, b, method, samples, seed, output, scheduler, metric, top,
                 json_out) -> None:
    from rtopt.decisions.sensitivity import plan_sensitivity, plot

    res = plan_sensitivity(problem, a, b, method=method, samples=samples, seed=seed,
                           scheduler=scheduler,
                           cache_dir=None if output is None else output / "chunks",
                           progress=f"{method} ({problem.name})", metric=metric)
    doc = res.to_dict()
    if output is not None:
        from rtopt.cli._common import write_atomic

        output.mkdir(parents=True, exist_ok=True)
        write_atomic(output / "sensitivity.json", json.dumps(doc, indent=2) + "\n")
        lines = ["output,parameter," + ",".join(k for k in res.indices["objective"][0]
                                                if k != "name")]
        for out, rows in res.indices.items():
            for r in rows:
                lines.append(f"{out},{r['name']}," + ",".join(f"{v:.6g}" for k, v in r.items()
                                                             if k != "name"))
        write_atomic(output / "indices.csv", "\n".join(lines) + "\n")
        for out in res.indices:
            plot(res, output / f"{method}_{out}.png", out)
    if json_out:
        typer.echo(json.dumps(doc, indent=2))
        return
    c = out_console
    c.print(f"{problem.name}: {res.method}, {res.evaluations} model runs over {len(res.names)} "
            f"uncertain parameters (seed {seed})")
    c.print(f"plan: {a.describe()}" + (f"   versus: {b.describe()}" if b else ""))
    for out, rows in res.indices.items():
        s = res.summary[out]
        what = metric or "objective"
        label = {"objective": metric or f"objective {problem.objective_name}",
                 "difference": f"{what} difference (plan - versus)",
                 "plan_wins": "plan wins (1) or loses (0)"}[out]
        nominal = res.meta["nominal"].get(out)
        over = "" if res.meta["summary_is_sample"] else " over the Morris grid"
        t = Table(title=f"{label}: mean{over} {s['mean']:.4g}, 5-95 % [{s['p5']:.4g}, "
                        f"{s['p95']:.4g}]"
                        + (f", nominal {nominal:.4g}" if nominal is not None else ""))
        t.add_column("rank", justify="right")
        t.add_column("parameter", no_wrap=True)
        cols = (("S1", "S1_conf", "ST", "ST_conf") if res.method == "sobol"
                else ("mu_star", "mu_star_conf", "sigma"))
        for col in cols:
            t.add_column(col.replace("_conf", " +-"), justify="right")
        for i, r in enumerate(rows[:top], 1):
            t.add_row(str(i), r["name"], *(f"{r[k]:.3g}" for k in cols))
        c.print(t)
    for out, share in res.meta.get("total_index_share_by_basis", {}).items():
        parts = ", ".join(f"{b} {100 * v:.0f} %" for b, v in share.items() if b != "unsourced")
        c.print(f"{out}: share of the summed total indices by basis (rtopt model params): "
                f"{parts}; without a sourced size (direction + assumption): "
                f"{100 * share['unsourced']:.0f} %")
    if "plan_wins" in res.summary and res.meta["summary_is_sample"]:
        c.print(f"probability that the plan beats the versus plan: "
                f"{res.summary['plan_wins']['mean']:.3f}")
    elif not res.meta["summary_is_sample"]:
        c.print("(Morris runs are a screening grid, not a sample of the distributions: means "
                "and shares over them are not estimates; use --method sobol for those)")
    if output is not None:
        err_console.print(f"wrote {output}/sensitivity.json, indices.csv and plots")


def print_robust(rep: dict) -> None:
    """Table of a robust solve's objective distribution, in and out of sample."""
    t = Table(title=f"robust {rep['statistic']}: objective over parameter samples "
                    f"(nominal {rep['nominal_objective']:.4g})")
    for col in ("sample set", "n", "statistic", "mean", "5 %", "50 %", "95 %", "P(beat ref)"):
        t.add_column(col, justify="left" if col == "sample set" else "right")
    for label, key, n in (("in sample", "in_sample", rep["samples"]),
                          ("out of sample", "out_of_sample",
                           rep["out_of_sample"]["samples"])):
        s = rep[key]
        pb = s.get("prob_better_than_reference")
        t.add_row(label, str(n), f"{s['statistic']:.4g}", f"{s['mean']:.4g}", f"{s['p5']:.4g}",
                  f"{s['p50']:.4g}", f"{s['p95']:.4g}", "-" if pb is None else f"{pb:.3f}")
    out_console.print(t)
    if rep.get("reference"):
        out_console.print(f"reference plan: {rep['reference']}")


@app.command("trial")
@cli_errors()
def trial_cmd(
    file: Annotated[str, typer.Argument(metavar="INSTANCE", help="Instance file (TOML).")],
    arm: Annotated[list[str], typer.Option(
        "--arm", metavar="NAME=PLAN.json|54/3|optimised",
        help="An arm (repeatable): NAME=PLAN.json (a plan file, e.g. of `rtopt solve -o`), a standard "
             "schedule by name (54/3, 48/4, 50/5, 60/8, 34/1, ...: `rtopt model standards`; its "
             "source's calendar and prescription convention, NK infusions by --infusions), or 'optimised' (the instance solved with --solver).")],
    patients: Annotated[int, typer.Option("--patients", "-n", help="Virtual patients.")] = 500,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DIR",
                                         help="Folder for results.csv, plots and the report.")]
    = Path("trial"),
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    solver: Annotated[str, typer.Option("--solver", "-s", metavar="PROFILE",
                                        help="Solver of the 'optimised' arm.")] = "exhaustive",
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help=_SCHEDULER_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    infusions: Annotated[str, typer.Option(
        "--infusions", metavar="best|earliest",
        help="NK infusion days of the standard arms (and, with earliest, of the optimised "
             "arm): the best for each arm's fractions, as the optimiser would choose, or the "
             "earliest allowed.")] = "best",
    nk_days: Annotated[list[str], typer.Option(
        "--nk-days", metavar="ARM=D,D",
        help="Fix an arm's infusion days (repeatable; ARM= for none).")] = [],
    force: Annotated[bool, typer.Option(
        "--force", help="Use plan files written for another instance.")] = False,
) -> None:
    """Virtual-cohort trial: every patient a parameter sample, every arm a plan."""
    from rtopt.problem.problem import Problem

    from rtopt.decisions.distributed import resolve_scheduler

    resolve_scheduler(scheduler)          # a bad --scheduler fails before any work
    problem = Problem.from_path(file)
    with locked_output(output, "rtopt trial"):   # before the arms: a second run fails at once
        _trial(problem, arm, patients, output, seed, solver, scheduler, json_out, force,
               infusions, nk_days)


def _trial(problem, arm, patients, output, seed, solver, scheduler, json_out, force,
           infusions="best", nk_days=()) -> None:
    from rtopt.cli._common import CompileNotice
    from rtopt.common.errors import RtoptError
    from rtopt.decisions.trial import (STANDARD_ARMS, check_arm_name, run_trial, standard_plan,
                                       with_infusions, write_outputs)
    from rtopt.problem.problem import check_plan_fits

    rule_note = {"best": "best for this arm (the optimiser's choice)",
                 "earliest": "earliest allowed"}
    if infusions not in rule_note:
        raise RtoptError(f"--infusions {infusions!r}: expected best or earliest")
    # a first run compiles here, with the notice (the 'optimised' arm's solve adds the kernels
    # its search needs, with the notice too), not silently inside the arms and the cohort
    compile_with_notice(("horizon", "population"))
    arms, notes = {}, {}
    for a in arm:
        name, eq, path = a.partition("=")
        if eq:
            check_arm_name(name, list(arms))
            arms[name] = load_plan(path, problem, force, f"--arm {name}")
            notes[name] = f"from {Path(path).name}"
        elif "/" in a and not a.endswith(".json"):
            check_arm_name(a, list(arms))
            arms[a] = standard_plan(problem, a, infusions)
            notes[a] = rule_note[infusions]
        elif a in ("optimised", "optimized"):
            from rtopt.planning.solve import solve

            check_arm_name("optimised", list(arms))
            res = solve(problem, solver, compile_progress=CompileNotice())
            if not res.feasible or res.plan is None:
                raise RtoptError(f"--arm optimised: the {solver} solve found no verified plan "
                                 f"({res.status}: {res.message})")
            if infusions == "best":
                arms["optimised"], notes["optimised"] = res.plan, "the optimiser's own (best)"
            else:   # the same rule as the other arms, on the optimiser's fractions
                arms["optimised"] = with_infusions(problem, res.plan, infusions)
                notes["optimised"] = rule_note[infusions]
        elif Path(a).suffix == ".json":
            check_arm_name(Path(a).stem, list(arms))
            arms[Path(a).stem] = load_plan(a, problem, force, "--arm")
            notes[Path(a).stem] = f"from {Path(a).name}"
        else:
            raise RtoptError(f"--arm {a}: expected NAME=PLAN.json, a standard schedule "
                             f"(e.g. {', '.join(STANDARD_ARMS)}; rtopt model standards lists "
                             "them) or 'optimised'")
    for spec in nk_days:
        name, eq, days = spec.rpartition("=")
        if not eq or name not in arms:
            raise RtoptError(f"--nk-days {spec}: expected ARM=DAY,DAY,... with ARM one of "
                             f"{', '.join(arms)}")
        try:
            fixed = tuple(sorted(int(d) for d in days.split(",") if d.strip()))
        except ValueError:
            raise RtoptError(f"--nk-days {spec}: days must be whole numbers, e.g. "
                             f"{name}=5,12") from None
        p = arms[name]
        arms[name] = dataclasses.replace(p, nk_days=fixed)
        check_plan_fits(arms[name], problem, f"--nk-days {name}")
        notes[name] = "fixed by --nk-days"
    res = run_trial(problem, arms, patients, seed, scheduler=scheduler,
                    cache_dir=output / "chunks", progress=f"trial ({patients} patients)",
                    infusions=notes)
    write_outputs(res, output)
    if json_out:
        typer.echo(json.dumps(res.to_dict(), indent=2))
        return
    oars = [o.name for o in problem.oars]
    ntcps = list(next(iter(res.summary.values())).get("ntcp_nominal", {}))
    t = Table(title=f"{problem.name}: virtual-cohort trial, {patients} patients (seed {seed})")
    for col in (["arm", "plan", "local control", "95 % CI", "NK gain"] + [f"{o} BED" for o in oars]
                + [f"NTCP {k}" for k in ntcps]):
        t.add_column(col, justify="left" if col in ("arm", "plan") else "right",
                     no_wrap=col != "plan")
    for n, s in res.summary.items():
        lo, hi = s["local_control_ci95"]
        t.add_row(n + (" (!)" if res.checks[n] else ""), res.arms[n].describe(),
                  f"{s['local_control']:.3f}", f"{lo:.3f}-{hi:.3f}", f"{s['nk_gain']:.4f}",
                  *(f"{s['oar_bed_gy'][o]:.1f}" for o in oars),
                  *(f"{s['ntcp_nominal'][k]:.3f}" for k in ntcps))
    out_console.print(t)
    if ntcps:
        out_console.print("NTCP: nominal (the shipped NTCP parameter sets carry no parameter "
                          "uncertainty; every patient of an arm has the plan's NTCP)")
    for n, c in res.checks.items():
        if c:
            out_console.print(f"(!) {n} violates {'; '.join(c)}")
    names = list(res.arms)
    if len(names) > 1:
        t = Table(title="probability of superiority (row beats column, per patient)")
        t.add_column("", no_wrap=True)
        for b in names:
            t.add_column(b, justify="right")
        for a in names:
            t.add_row(a, *("-" if a == b else f"{res.superiority[a][b]:.3f}" for b in names))
        out_console.print(t)
    err_console.print(f"wrote {output}/results.csv, summary.json, report.html, report.md")
