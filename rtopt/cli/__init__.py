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


_register()


def main() -> None:
    """Console-script entry point."""
    app()
