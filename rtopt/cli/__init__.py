"""The ``rtopt`` command line: one module per command group, each command a few lines over the library."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="rtopt",
    help="Radiotherapy schedule optimiser for an NK-cell favourable tumour microenvironment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
