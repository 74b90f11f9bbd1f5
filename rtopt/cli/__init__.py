"""The ``rtopt`` command line: one module per command group, each command a few lines over the library.

Start-up is kept light: command modules import numpy, scipy, numba, matplotlib and the solver
libraries inside the commands that need them, so ``rtopt --help`` answers at once.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rtopt.cli._common import EXIT_CODES_HELP

app = typer.Typer(
    name="rtopt",
    help="Radiotherapy schedule optimiser for an NK-cell favourable tumour microenvironment.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from rtopt import __version__

        typer.echo(f"rtopt {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print the rtopt version and exit.")] = None,
) -> None:
    """Radiotherapy schedule optimiser for an NK-cell favourable tumour microenvironment."""


def _register() -> None:
    # Each module adds its commands to `app` on import.
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    # --help lists the commands by task, in the order of a planner's work
    rank = {name: i for i, (name, _) in enumerate(_PANELS)}
    for info in app.registered_commands:
        info.rich_help_panel = dict(_PANELS).get(info.name or "", "Other")
    app.registered_commands.sort(key=lambda c: rank.get(c.name or "", len(rank)))
    for group in app.registered_groups:
        group.rich_help_panel = "Model and tools"


_PANELS = [
    ("solve", "Plan"), ("simulate", "Plan"), ("validate", "Plan"),
    ("pareto", "Trade-offs and comparisons"), ("compare", "Trade-offs and comparisons"),
    ("report", "Trade-offs and comparisons"),
    ("sensitivity", "Uncertainty"), ("trial", "Uncertainty"),
    ("update", "Adapting mid-course"), ("replan", "Adapting mid-course"),
    ("dvh", "Dose and DVHs"), ("ntcp", "Dose and DVHs"), ("phantom", "Dose and DVHs"),
    ("solvers", "Model and tools"), ("surrogate", "Model and tools"),
    ("calibrate", "Model and tools"), ("bench", "Model and tools"), ("schema", "Model and tools"),
]


_register()


def main() -> None:
    """Console-script entry point."""
    app()
