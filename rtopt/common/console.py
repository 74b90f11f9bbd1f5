"""The two rich consoles every layer prints through (messages and progress on stderr, tables for
people on stdout); the CLI re-exports them from :mod:`rtopt.cli._common`."""

from __future__ import annotations

from rich.console import Console

__all__ = ["err_console", "out_console"]

# soft_wrap: a problem stays on one line whatever the terminal width (tests and scripts count
# lines); markup/highlight/emoji off so text from files is printed as it is.  Rich turns colour
# off by itself when the stream is not a terminal.
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)
"""Console on stderr for messages and progress."""

out_console = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
"""Console on stdout for results meant for humans (tables); use ``typer.echo`` for data."""
