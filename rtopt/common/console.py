"""The two rich consoles every layer prints through (messages and progress on stderr, tables for
people on stdout); the CLI re-exports them from :mod:`rtopt.cli._common`."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Iterator

from rich.console import Console

__all__ = ["err_console", "out_console", "PIPE_WIDTH", "search_progress"]

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


@contextlib.contextmanager
def search_progress(label: str | None, limit_s: float, unit: str = "plans"
                    ) -> Iterator[Callable[[int, float], None]]:
    """A progress bar on stderr for a search that runs until a time limit or its own stopping
    rule: the bar is the time used of ``limit_s``, with the count of ``unit`` scored and the best
    value so far.  Yields ``update(n, best)`` (``n`` more scored; ``best`` the batch's best
    value, NaN if none).  Nothing is shown when ``label`` is None or stderr is not a terminal;
    the bar disappears when the search ends (its result is printed after)."""
    if label is None or not err_console.is_terminal:
        yield lambda n, best: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    state = {"n": 0, "best": float("-inf")}
    t0 = time.perf_counter()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=err_console,
                  transient=True) as bar:
        task = bar.add_task(label, total=max(float(limit_s), 1e-9), info="")

        def update(n: int, best: float) -> None:
            state["n"] += int(n)
            if best == best and best > state["best"]:       # NaN-safe
                state["best"] = float(best)
            shown = f"{state['best']:.4g}" if state["best"] > float("-inf") else "-"
            bar.update(task, completed=min(time.perf_counter() - t0, limit_s),
                       info=f"{state['n']:,} {unit}, best {shown} (limit {limit_s:g} s)")

        yield update
