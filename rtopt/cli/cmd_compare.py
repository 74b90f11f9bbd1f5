"""Comparison commands: ``rtopt compare INSTANCE_OR_DIR... -s PROFILE...`` and ``rtopt report OUTDIR``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from rtopt.cli import app
from rtopt.cli._common import EXIT_INTERRUPTED, EXIT_SIGTERM, cli_errors, err_console, fail


def _profiles(values: list[str]) -> list[str]:
    # `-s a -s b` and `-s a,b` both work
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


@app.command("compare")
@cli_errors()
def compare_cmd(
    instances: Annotated[list[str], typer.Argument(
        metavar="INSTANCE_OR_DIR...", show_default=False,
        help="Instance files, or folders (their *.toml).")],
    solvers: Annotated[list[str], typer.Option(
        "--solver", "-s", metavar="PROFILE", show_default=False,
        help="Solver profile: name, profile file or back-end name (repeat -s, or a,b,c).")],
    outdir: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUTDIR", show_default=False,
        help="Folder for results.csv, plans/, system.json, report.html and report.md.")],
    repeat: Annotated[int, typer.Option(
        "--repeat", "-r", min=1, help="Runs per pair; repeat r uses the profile's seed + r.")] = 1,
    workers: Annotated[int, typer.Option(
        "--workers", "-j", min=1, help="Parallel worker processes.")] = 1,
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", metavar="S", show_default=False,
        help="Time limit per run (s), overriding every profile's.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Keep the runs already finished in OUTDIR and run only the others.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Remove rtopt's files from OUTDIR first (other files stay).")
    ] = False,
) -> None:
    """Solve every instance with every solver profile and write a comparison report.

    Each run is written to OUTDIR as soon as it finishes.  Ctrl-C (exit code 130) or SIGTERM
    (exit code 143) keeps the finished runs; --resume continues.  A non-empty OUTDIR needs
    --resume or --overwrite.
    """
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    from rtopt.compare import (CompareInterrupted, Stopped, _NothingToRun, compare,
                               handle_sigterm)

    bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                   transient=True, disable=not err_console.is_terminal)
    task = bar.add_task("solving", total=None)

    def progress(done: int, total: int, label: str) -> None:
        bar.update(task, completed=done, total=total, description=label)

    try:
        with handle_sigterm(), bar:
            # always in worker processes: a crashing or hanging back-end costs only its row
            summary = compare(instances, _profiles(solvers), outdir, repeat=repeat,
                              workers=workers, time_limit_s=time_limit, progress=progress,
                              isolate=True, resume=resume, overwrite=overwrite)
    except _NothingToRun as e:
        fail(e.problem_lines)
    except CompareInterrupted as e:
        fail([e.note()], code=EXIT_SIGTERM if e.signum == signal.SIGTERM else EXIT_INTERRUPTED)
    except Stopped:  # before any run started
        fail(["terminated (SIGTERM)"], code=EXIT_SIGTERM)
    for line in summary.notes + summary.errors:
        err_console.print(line)
    for line in summary.report_errors:
        err_console.print(f"report: {line}")
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
    from rtopt.fileio import FolderLock
    from rtopt.report import render, stale_report

    if not outdir.is_dir():
        fail([f"{outdir}: not a folder"])
    from rtopt.pareto_report import is_pareto_folder

    if is_pareto_folder(outdir) and not (outdir / "results.csv").exists():
        from rtopt.pareto_report import render as render_pareto

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
