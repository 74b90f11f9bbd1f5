"""Trade-off command: ``rtopt pareto INSTANCE --objectives A,B[,C] -o DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rtopt.cli import app
from rtopt.cli._common import CompileNotice, cli_errors, err_console

# rtopt's layers and the heavy libraries are imported inside the commands: `rtopt --help` loads
# none of them (tests/test_cli_install.py).


@app.command("pareto")
@cli_errors()
def pareto_cmd(
    instance: Annotated[Path, typer.Argument(metavar="INSTANCE", show_default=False,
                                             help="Instance file (.toml).")],
    objectives: Annotated[str, typer.Option(
        "--objectives", metavar="A,B[,C]", show_default=False,
        help="Two or three of: local_control, tcp, tumour_log_kill, nk_gain, nk_favourability, "
             "tumour_bed (maximised); oar:NAME, oar_eqd2:NAME, ntcp:NAME (NTCP of a "
             "[dvh_plan] organ), n_fractions, overall_days (minimised).")],
    outdir: Annotated[Path, typer.Option(
        "--output", "-o", metavar="DIR", show_default=False,
        help="Folder for front.csv, front.json, front.png, report.html and report.md.")],
    reference: Annotated[Optional[Path], typer.Option(
        "--reference", metavar="PLAN.json", show_default=False,
        help="Reference plan (default: the standard 54/3, 18 Gy x 3 on days 0,4,8 at the 80 % "
             "isodose, with its best infusions).")] = None,
    heuristic: Annotated[bool, typer.Option(
        "--heuristic/--no-heuristic", help="Also run pymoo (NSGA-II / NSGA-III) and compare.")
    ] = True,
    pop_size: Annotated[int, typer.Option("--pop-size", min=4, help="pymoo population.")] = 60,
    generations: Annotated[int, typer.Option("--generations", min=1,
                                             help="pymoo generations.")] = 60,
    seed: Annotated[int, typer.Option("--seed", help="pymoo seed.")] = 0,
    time_limit: Annotated[float, typer.Option(
        "--time-limit", min=1.0, help="Time limit of the exact front's scoring (s); past it the "
        "front is built from the schedules scored so far and labelled partial.")] = 600.0,
    force: Annotated[bool, typer.Option(
        "--force", help="Use plan files written for another instance.")] = False,
) -> None:
    """Pareto front of two or three objectives: exact over the exhaustive back-end's space, and
    a pymoo heuristic compared with it (hypervolume, GD, IGD); every plan verified."""

    from rtopt.common.errors import RtoptError
    from rtopt.decisions.pareto import pareto
    from rtopt.outputs.pareto_report import write
    from rtopt.problem.problem import Problem, load_plan_file

    ref = None
    problem = Problem.from_path(instance)
    if reference is not None:
        ref = load_plan_file(reference, problem, force=force, option="--reference")
    try:
        res = pareto(problem, objectives, reference=ref, heuristic=heuristic, pop_size=pop_size,
                     generations=generations, seed=seed, time_limit_s=time_limit,
                     compile_progress=CompileNotice())
    except RtoptError:
        raise
    files = write(res, outdir)
    for line in _lines(res):
        typer.echo(line)
    err_console.print("wrote " + ", ".join(str(f) for f in files))


def _lines(res) -> list[str]:
    from rtopt.outputs.pareto_report import summary_lines

    return summary_lines(res.to_dict())
