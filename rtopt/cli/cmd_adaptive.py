"""Adapting mid-course: ``rtopt update INSTANCE COURSE`` and ``rtopt replan INSTANCE COURSE``.

Each command is a few lines over :mod:`rtopt.decisions.adaptive`; errors are one line each
(:func:`rtopt.cli._common.cli_errors`), and files are written only once everything succeeded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rtopt.cli import app
from rtopt.cli._common import (CompileNotice, ExitCode, cli_errors, err_console, out_console, resolve_solver,
                               write_atomic)

# rtopt's layers and the heavy libraries are imported inside the commands: `rtopt --help` loads
# none of them (tests/test_cli_install.py).

_COURSE_HELP = ("Course record (TOML): delivered fractions and infusions, today, observations "
                "(e.g. instances/courses/lung-sbrt-peripheral.toml).")


@app.command("update")
@cli_errors()
def update_cmd(
    file: Annotated[str, typer.Argument(metavar="INSTANCE", help="Instance file (TOML).")],
    course: Annotated[str, typer.Argument(metavar="COURSE", help=_COURSE_HELP)],
    samples: Annotated[int, typer.Option("--samples", "-n", min=2,
                                         help="Prior samples (Latin hypercube).")] = 2000,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", metavar="FILE.png",
        help="Write predicted trajectories (prior and posterior bands) against the "
             "observations.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List every parameter, not only those "
                                                          "that moved.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the posterior as JSON.")] = False,
) -> None:
    """Condition the patient's parameters on the course's observations (importance weighting
    of prior samples) and show what moved."""
    from rtopt.decisions.adaptive import plot_update, update
    from rtopt.problem.course import load_course
    from rtopt.problem.problem import Problem

    problem = Problem.from_path(file)
    c = load_course(course, problem)
    post = update(problem, c, samples=samples, seed=seed)
    if plot is not None:
        plot_update(post, problem, c, plot)
    if json_out:
        typer.echo(json.dumps(post.to_dict(), indent=2))
    else:
        _print_update(post, c, show_all)
    if post.warning():
        err_console.print(f"warning: {post.warning()}")
    if plot is not None:
        err_console.print(f"wrote {plot}")


def _print_update(post, course, show_all: bool) -> None:
    c = out_console
    c.print(f"{post.problem_name}: course {course.source}, today = day {course.today}; "
            f"delivered {course.delivered.describe() if course.delivered.n_fractions else 'nothing'}")
    if not post.observations:
        c.print(f"no observations: the posterior is the prior ({post.n} samples, seed "
                f"{post.seed})")
        return
    c.print(f"importance weighting of {post.n} prior samples (seed {post.seed}): effective "
            f"sample size {post.ess:.1f}")
    t = Table(title="observations: model prediction (mean +- sd) before and after the update")
    for col in ("day", "quantity", "observed", "prior", "posterior"):
        t.add_column(col, justify="left" if col == "quantity" else "right")
    for r in post.predicted():
        t.add_row(str(r["day"]), r["quantity"], f"{r['value']:.4g} +- {r['sd']:.3g}",
                  f"{r['prior_mean']:.4g} +- {r['prior_sd']:.3g}",
                  f"{r['posterior_mean']:.4g} +- {r['posterior_sd']:.3g}")
    c.print(t)
    rows = post.parameters() if show_all else post.moved()
    from rich import box

    t = Table(title=("every sampled parameter" if show_all else
                     "parameters that moved (shift >= 0.2 prior sd or sd ratio <= 0.8)"),
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 1))
    for col in ("parameter", "prior", "posterior", "5-95 %", "shift", "sd", "plan"):
        t.add_column(col, justify="left" if col == "parameter" else "right", no_wrap=True)
    for r in rows:
        t.add_row(r["name"], f"{r['prior_mean']:.3g}", f"{r['posterior_mean']:.3g}",
                  f"{r['posterior_p5']:.2g}-{r['posterior_p95']:.2g}", f"{r['shift_sd']:+.2f}",
                  f"{r['sd_ratio']:.2f}", f"{r['adapted']:.3g}")
    c.print(t)
    if not rows:
        c.print("no parameter moved")
    c.print("prior, posterior: means; shift: of the mean, in prior sds; sd: posterior over "
            "prior sd; plan: the nominal value shifted by the posterior-minus-prior mean (what "
            "`rtopt replan` plans with)")


@app.command("replan")
@cli_errors()
def replan_cmd(
    file: Annotated[str, typer.Argument(metavar="INSTANCE", help="Instance file (TOML).")],
    course: Annotated[str, typer.Argument(metavar="COURSE", help=_COURSE_HELP)],
    solver: Annotated[str, typer.Option(
        "--solver", "-s", metavar="PROFILE",
        help="Solver profile on the exhaustive back-end (others decline).")] = "exhaustive",
    robust: Annotated[Optional[str], typer.Option(
        "--robust", metavar="STAT",
        help="Robust re-plan over posterior samples: expected, cvar:ALPHA, worst or "
             "prob-better:PLAN.json.")] = None,
    samples: Annotated[int, typer.Option(
        "--samples", help="Posterior samples of --robust.")] = 32,
    prior_samples: Annotated[int, typer.Option(
        "--prior-samples", min=2, help="Prior samples of the update.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the update and of "
                                                            "--robust's resampling.")] = 0,
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", metavar="S", min=0.01, help="Override the profile's time limit (s).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="PLAN.json",
        help="Write the result JSON (the whole course; replayable with `rtopt simulate "
             "--plan`).")] = None,
) -> None:
    """Re-optimise the rest of the course: delivered fractions and infusions fixed, their dose
    counted against the prescription and OAR limits, the calendar from today.

    Same exit codes as `rtopt solve`.
    """
    from rtopt.decisions.adaptive import replan

    profile = resolve_solver(solver)
    res = replan(file, course, profile, robust=robust, samples=samples,
                 prior_samples=prior_samples, seed=seed, time_limit_s=time_limit,
                 compile_progress=CompileNotice())
    if output is not None and res.plan is not None and res.feasible:
        write_atomic(output, res.to_json() + "\n")
    if json_out:
        typer.echo(res.to_json())
    else:
        from rtopt.cli.cmd_solve import print_result

        upd = res.course.get("update", {})
        out_console.print(f"course {res.course.get('source')}: today = day {res.today}; "
                          f"update ESS {upd.get('ess', 0):.1f} of {upd.get('samples')}; moved: "
                          f"{', '.join(upd.get('moved', {})) or 'nothing'}")
        if res.delivered is not None:
            out_console.print("delivered: " + (res.delivered.describe()
                                               if res.delivered.n_fractions or
                                               res.delivered.nk_days else "nothing"))
        if res.remaining is not None:
            out_console.print("remaining: " + (res.remaining.describe()
                                               if res.remaining.n_fractions else
                                               "no further fraction" + (
                                                   f"; NK days {','.join(map(str, res.remaining.nk_days))}"
                                                   if res.remaining.nk_days else "")))
        print_result(res)
        nom = res.extras.get("objective_at_nominal_parameters")
        if nom is not None:
            out_console.print(f"the same plan at the nominal (prior) parameters: {nom:.4g}")
    if upd_warn := res.course.get("update", {}).get("warning"):
        err_console.print(f"warning: {upd_warn}")
    if output is not None and not res.feasible:
        err_console.print(f"{output}: not written (no verified feasible plan)")
    raise typer.Exit(ExitCode(res.exit_code))
