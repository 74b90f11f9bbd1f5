"""Decisions under uncertainty: ``rtopt model params``, ``rtopt sensitivity``, ``rtopt trial``.

Each command is a few lines over :mod:`rtopt.model.uncertainty`, :mod:`rtopt.decisions.sensitivity` and
:mod:`rtopt.decisions.trial`; errors are one line each (:func:`rtopt.cli._common.cli_errors`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rtopt.cli import app
from rtopt.cli._common import cli_errors, err_console, out_console

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
    from rtopt.model.uncertainty import distributions_for, generic_distributions

    if file is None:
        dists = generic_distributions()
        where = "generic preset, il15_expanded NK product, alpha 0.35 /Gy, alpha/beta 10 Gy"
    else:
        from rtopt.problem.instance import load_instance

        dists = distributions_for(load_instance(file))
        where = file
    if json_out:
        typer.echo(json.dumps([d.to_dict() for d in dists.values()], indent=2))
        return
    t = Table(title=f"uncertain parameters ({where})")
    for col in ("name", "value", "distribution", "bounds", "unit"):
        t.add_column(col, justify="right" if col == "value" else "left", no_wrap=True,
                     min_width=5 if col == "unit" else None)
    wide = out_console.width >= 120               # the source column needs room
    if wide:
        t.add_column("source", overflow="ellipsis", no_wrap=True, max_width=70)
    for d in dists.values():
        t.add_row(d.name, f"{d.value:.4g}",
                  "fixed" if d.fixed else d.kind + (f" sd {d.sd:.3g}" if d.sd else ""),
                  f"[{d.low:.3g}, {d.high:.3g}]",
                  "" if d.unit == "1" else d.unit, *([d.source] if wide else []))
    out_console.print(t)
    out_console.print("triangular: mode at the value; loguniform: ranges over a decade; "
                      "override per instance in [uncertainty.NAME] (docs/model.md section 11)."
                      + ("" if wide else "  Sources: --json or a wider terminal."))


_SCHEDULER_HELP = ("Dask scheduler: sync (default), threads, local:N, or tcp://HOST:PORT "
                   "(default: DASK_SCHEDULER_ADDRESS when set).")


def load_plan(path: str):
    """A plan from a JSON file written by ``rtopt solve -o`` (typed, one-line errors)."""
    from rtopt.decisions.robust import load_plan as _load

    return _load(path)


@app.command("sensitivity")
@cli_errors()
def sensitivity_cmd(
    file: Annotated[str, typer.Argument(metavar="INSTANCE", help="Instance file (TOML).")],
    plan: Annotated[str, typer.Option("--plan", metavar="PLAN.json",
                                      help="Plan to analyse (JSON of `rtopt solve -o`).")],
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
) -> None:
    """Rank the uncertain parameters that drive a plan's objective (SALib Morris or Sobol)."""
    from rtopt.problem.problem import Problem
    from rtopt.decisions.sensitivity import plan_sensitivity, plot

    problem = Problem.from_path(file)
    a = load_plan(plan)
    b = load_plan(versus) if versus else None
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
        help="An arm (repeatable): NAME=PLAN.json (JSON of `rtopt solve -o`), a standard lung "
             "arm (54/3, 48/4, 50/5, 60/8, 34/1; with the instance's earliest rule-abiding NK "
             "infusions), or 'optimised' (the instance solved with --solver).")],
    patients: Annotated[int, typer.Option("--patients", "-n", help="Virtual patients.")] = 500,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DIR",
                                         help="Folder for results.csv, plots and the report.")]
    = Path("trial"),
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    solver: Annotated[str, typer.Option("--solver", "-s", metavar="PROFILE",
                                        help="Solver of the 'optimised' arm.")] = "exhaustive",
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help=_SCHEDULER_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Virtual-cohort trial: every patient a parameter sample, every arm a plan."""
    from rtopt.common.errors import RtoptError
    from rtopt.problem.problem import Problem
    from rtopt.decisions.trial import STANDARD_ARMS, run_trial, standard_plan, write_outputs

    problem = Problem.from_path(file)
    arms = {}
    for a in arm:
        name, eq, path = a.partition("=")
        if eq:
            arms[name] = load_plan(path)
        elif a in STANDARD_ARMS:
            arms[a] = standard_plan(problem, a)
        elif a in ("optimised", "optimized"):
            from rtopt.planning.solve import solve

            res = solve(problem, solver)
            if not res.feasible or res.plan is None:
                raise RtoptError(f"--arm optimised: the {solver} solve found no verified plan "
                                 f"({res.status}: {res.message})")
            arms["optimised"] = res.plan
        elif Path(a).suffix == ".json":
            arms[Path(a).stem] = load_plan(a)
        else:
            raise RtoptError(f"--arm {a}: expected NAME=PLAN.json, a standard arm "
                             f"({', '.join(STANDARD_ARMS)}) or 'optimised'")
    res = run_trial(problem, arms, patients, seed, scheduler=scheduler,
                    cache_dir=output / "chunks", progress=f"trial ({patients} patients)")
    write_outputs(res, output)
    if json_out:
        typer.echo(json.dumps(res.to_dict(), indent=2))
        return
    oars = [o.name for o in problem.oars]
    ntcps = list(next(iter(res.summary.values())).get("ntcp_nominal", {}))
    t = Table(title=f"{problem.name}: virtual-cohort trial, {patients} patients (seed {seed})")
    for col in (["arm", "plan", "local control", "95 % CI", "NK gain"] + [f"{o} BED" for o in oars]
                + [f"NTCP {k}" for k in ntcps]):
        t.add_column(col, justify="left" if col in ("arm", "plan") else "right")
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
        t.add_column("")
        for b in names:
            t.add_column(b, justify="right")
        for a in names:
            t.add_row(a, *("-" if a == b else f"{res.superiority[a][b]:.3f}" for b in names))
        out_console.print(t)
    err_console.print(f"wrote {output}/results.csv, summary.json, report.html, report.md")
