"""The two rich consoles every layer prints through (messages and progress on stderr, tables for
people on stdout); the CLI re-exports them from :mod:`rtopt.cli._common`."""

from __future__ import annotations

import os
import sys

from rich.console import Console

__all__ = ["err_console", "out_console", "PIPE_WIDTH"]

# soft_wrap: a problem stays on one line whatever the terminal width (tests and scripts count
# lines); markup/highlight/emoji off so text from files is printed as it is.  Rich turns colour
# off by itself when the stream is not a terminal.
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)
"""Console on stderr for messages and progress."""

PIPE_WIDTH = 1000
"""Table width when stdout is not a terminal (a pipe or a file): rows stay whole, one line each."""


def _pipe_width() -> int | None:
    """Width of stdout's tables: the terminal's in a terminal (or ``COLUMNS`` when set), else
    wide enough that no table cuts an identifier ("cvxpy..." at Rich's default 80 columns)."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return None
    return PIPE_WIDTH


out_console = Console(soft_wrap=True, markup=False, highlight=False, emoji=False,
                      width=_pipe_width())
"""Console on stdout for results meant for humans (tables); use ``typer.echo`` for data.
Piped, tables are not cut to 80 columns (:data:`PIPE_WIDTH`)."""
