"""Comparison commands: ``rtopt compare INSTANCE_OR_DIR... -s PROFILE...`` and ``rtopt report OUTDIR``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from rtopt.cli import app
from rtopt.cli._common import EXIT_INTERRUPTED, EXIT_SIGTERM, cli_errors, err_console, fail

# rtopt's layers and the heavy libraries are imported inside the commands: `rtopt --help` loads
# none of them (tests/test_cli_install.py).


def _profiles(values: list[str]) -> list[str]:
    # `-s a -s b` and `-s a,b` both work
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


@app.command("compare")
@cli_errors()
def compare_cmd(
    instances: Annotated[list[str], typer.Argument(
        metavar="INSTANCE_OR_DIR...", show_default=False,
        help="Instance files, or folders (their *.toml).")],
    outdir: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUTDIR", show_default=False,
        help="Folder for results.csv, plans/, system.json, report.html and report.md.")],
    solvers: Annotated[Optional[list[str]], typer.Option(
        "--solver", "-s", metavar="PROFILE", show_default=False,
        help="Solver profile: name, profile file or back-end name (repeat -s, or a,b,c).  "
             "With --pareto: front methods, exact and/or nsga (default both).")] = None,
    pareto: Annotated[Optional[str], typer.Option(
        "--pareto", metavar="A,B[,C]", show_default=False,
        help="Compare Pareto-front methods instead of solvers, on these two or three "
             "objectives (as 'rtopt pareto --objectives'): points, hypervolume, distance to "
             "the exact front, time per instance and method.")] = None,
    pop_size: Annotated[int, typer.Option(
        "--pop-size", min=4, help="With --pareto: NSGA population.")] = 60,
    generations: Annotated[int, typer.Option(
        "--generations", min=1, help="With --pareto: NSGA generations.")] = 60,
    repeat: Annotated[int, typer.Option(
        "--repeat", "-r", min=1, help="Runs per pair; repeat r uses the profile's seed + r.")] = 1,
    workers: Annotated[int, typer.Option(
        "--workers", "-j", min=1, help="Parallel worker processes.")] = 1,
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", metavar="S", show_default=False,
        help="Time limit per run (s), overriding every profile's.  With --pareto (default "
             "600 s): the exact front's scoring stops there (status partial), NSGA stops at "
             "the next generation.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Keep the runs already finished in OUTDIR and run only the others.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Remove rtopt's files from OUTDIR first (other files stay).")
    ] = False,
) -> None:
    """Solve every instance with every solver profile and write a comparison report.

    With --pareto A,B[,C], runs every front method (exact, nsga) on every instance instead,
    and reports points, hypervolume, ratio and distances to the exact front, and time.

    Each run is written to OUTDIR as soon as it finishes.  Ctrl-C (exit code 130) or SIGTERM
    (exit code 143) keeps the finished runs; --resume continues.  A non-empty OUTDIR needs
    --resume or --overwrite.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rtopt.outputs.compare import (CompareInterrupted, NothingToRun, Stopped, compare,
                                       handle_sigterm)

    bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                   transient=True, disable=not err_console.is_terminal)
    task = bar.add_task("solving", total=None)

    def progress(done: int, total: int, label: str) -> None:
        bar.update(task, completed=done, total=total, description=label)

    if pareto is None and not solvers:
        fail(["Missing option '--solver' / '-s' (or give --pareto A,B[,C] to compare "
              "Pareto-front methods)."], code=2)
    try:
        with handle_sigterm(), bar:
            # always in worker processes: a crashing or hanging back-end costs only its row
            if pareto is not None:
                from rtopt.outputs.compare_pareto import compare_fronts

                summary = compare_fronts(instances, pareto, outdir, _profiles(solvers or []),
                                         repeat=repeat, workers=workers,
                                         time_limit_s=time_limit, pop_size=pop_size,
                                         generations=generations, progress=progress,
                                         isolate=True, resume=resume, overwrite=overwrite)
            else:
                summary = compare(instances, _profiles(solvers), outdir, repeat=repeat,
                                  workers=workers, time_limit_s=time_limit, progress=progress,
                                  isolate=True, resume=resume, overwrite=overwrite)
    except NothingToRun as e:
        fail(e.problem_lines)
    except CompareInterrupted as e:
        fail([e.note()], code=EXIT_SIGTERM if e.signum == signal.SIGTERM else EXIT_INTERRUPTED)
    except Stopped:  # before any run started
        fail(["terminated (SIGTERM)"], code=EXIT_SIGTERM)
    for line in summary.notes + summary.errors:
        err_console.print(line)
    for line in summary.report_errors:
        err_console.print(f"report: {line}")
    if pareto is not None:
        from rtopt.outputs.compare_pareto import FRONT_STATUSES, summary_lines

        for line in summary_lines(summary.rows):
            typer.echo(line)
        n_ok = sum(r["status"] in FRONT_STATUSES for r in summary.rows)
        typer.echo(f"{len(summary.rows)} run(s), {n_ok} with a verified front; "
                   f"wrote {outdir / 'results.csv'} and {outdir / 'report.html'}")
    else:
        n_ok = sum(r["status"] in ("optimal", "feasible") for r in summary.rows)
        typer.echo(f"{len(summary.rows)} run(s), {n_ok} verified feasible; "
                   f"wrote {outdir / 'results.csv'} and {outdir / 'report.html'}")
    if summary.errors:
        raise typer.Exit(1)


@app.command("report")
@cli_errors()
def report_cmd(
    outdir: Annotated[Path, typer.Argument(
        metavar="OUTDIR", show_default=False,
        help="Folder written by 'rtopt compare' or 'rtopt pareto'.")],
    check: Annotated[bool, typer.Option(
        "--check", help="Only check that the report matches results.csv (exit 1 if stale).")
    ] = False,
) -> None:
    """Re-render report.html and report.md from results.csv and plans/*.json (no solving)."""
    from rtopt.common.fileio import FolderLock
    from rtopt.outputs.report import stale_report
    from rtopt.outputs.reports import render

    if not outdir.is_dir():
        fail([f"{outdir}: not a folder"])
    from rtopt.outputs.pareto_report import is_pareto_folder

    if is_pareto_folder(outdir) and not (outdir / "results.csv").exists():
        from rtopt.outputs.pareto_report import render as render_pareto

        for line in render_pareto(outdir):  # a folder written by 'rtopt pareto'
            err_console.print(f"report: {line}")
        typer.echo(f"wrote {outdir / 'report.html'} and {outdir / 'report.md'}")
        return
    if check:
        problems = stale_report(outdir)
        if problems:
            fail(problems)
        typer.echo(f"{outdir / 'report.html'} and {outdir / 'report.md'} match "
                   f"{outdir / 'results.csv'}")
        return
    with FolderLock(outdir, "rtopt report"):
        lines = render(outdir)
    for line in lines:
        err_console.print(f"report: {line}")
    typer.echo(f"wrote {outdir / 'report.html'} and {outdir / 'report.md'}")
