"""Instance commands: ``rtopt validate FILE...`` and ``rtopt schema [-o FILE]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from rtopt.cli import app
from rtopt.cli._common import cli_errors, err_console, fail, write_atomic

# rtopt's layers and the heavy libraries are imported inside the commands: `rtopt --help` loads
# none of them (tests/test_cli_install.py).


@app.command("validate")
@cli_errors()
def validate(
    files: Annotated[list[str], typer.Argument(
        metavar="FILE...", show_default=False,
        help="Instance files (TOML) to check.")],
) -> None:
    """Check instance files: 'FILE: OK' on stdout, one line per problem on stderr."""
    # FILE is a plain string, not a typer Path that must exist: a missing file is a problem to
    # report in rtopt's own one-line format, next to the other files' results.
    from rtopt.common.errors import InstanceError
    from rtopt.problem.instance import load_instance

    bad = False
    for name in files:
        try:
            load_instance(name)
        except InstanceError as exc:
            bad = True
            for line in exc.lines():
                err_console.print(line)
        else:
            typer.echo(f"{name}: OK")
            warning = _search_space_warning(name)
            if warning:
                err_console.print(f"{name}: warning: {warning}")
    if bad:
        raise typer.Exit(1)


@app.command("schema")
@cli_errors()
def schema(
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="FILE", show_default=False,
        help="Write the schema to FILE (atomically) instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of instance files (for editors and external checkers)."""
    from rtopt.problem.instance import instance_json_schema

    text = json.dumps(instance_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    if output.is_dir():
        fail([f"{output}: is a directory"])
    write_atomic(output, text)
    err_console.print(f"wrote {output}")


HUGE_EVALUATIONS = 5e7
"""(schedule, infusion set) pairs above which ``validate`` warns: ~10 minutes of exhaustive
scoring on a 2-core VM (the 180-day head-and-neck variant has ~2e8)."""


def _search_space_warning(path: str) -> str | None:
    """A warning when the exhaustive search space of a valid instance is huge, else None."""
    try:
        from rtopt.backends.exhaustive import ExhaustiveBackend
        from rtopt.problem.problem import Problem

        est = ExhaustiveBackend.estimate(Problem.from_path(path))
    except Exception:  # noqa: BLE001 - a warning is optional; validation itself passed
        return None
    if est.fits and est.evaluations <= HUGE_EVALUATIONS:
        return None
    what = ("the exhaustive back-end will decline it (memory limit "
            f"{est.budget / 2 ** 30:.3g} GiB; see --memory-limit)" if not est.fits else
            "the exhaustive back-end will stop at the time limit with the best plan found so far")
    return (f"huge exhaustive search space: {est.describe()}, "
            f"~{est.evaluations:.2g} schedule x infusion-set evaluations; {what}")
