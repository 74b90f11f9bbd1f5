"""Shared CLI plumbing: one-line error messages on stderr and exit codes, never a traceback.

Library code raises typed exceptions (:mod:`rtopt.errors`); commands wrap their body in
:func:`cli_errors` and the user sees one line per problem::

    from rtopt.cli._common import cli_errors, fail

    @app.command()
    @cli_errors()
    def simulate(...):
        ...
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterable, Iterator, NoReturn

import typer
from rich.console import Console

from rtopt.errors import InstanceError, RtoptError
from rtopt.fileio import write_atomic

__all__ = ["err_console", "out_console", "fail", "error_lines", "cli_errors", "write_atomic",
           "EXIT_OK", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_SIGTERM"]

# soft_wrap: a problem stays on one line whatever the terminal width (tests and scripts count
# lines); markup/highlight/emoji off so text from files is printed as it is.  Rich turns colour
# off by itself when the stream is not a terminal.
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)
"""Console on stderr for messages and progress."""

out_console = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
"""Console on stdout for results meant for humans (tables); use ``typer.echo`` for data."""


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT): 128 + 2, the shell's convention."""
EXIT_SIGTERM = 143
"""SIGTERM (``rtopt compare`` handles it like Ctrl-C, finished runs kept): 128 + 15."""


def fail(lines: Iterable[str], code: int = 1) -> NoReturn:
    """Print each line on stderr, then exit with ``code``.

    Parameters
    ----------
    lines : iterable of str
        Messages, one problem each (embedded newlines become separate lines).
    code : int
        Process exit code (default 1).
    """
    for line in lines:
        for part in str(line).splitlines() or [""]:
            err_console.print(part)
    raise typer.Exit(code)


def error_lines(exc: BaseException) -> list[str]:
    """One-line messages describing ``exc`` (an rtopt error or an OS error)."""
    if isinstance(exc, InstanceError):
        return exc.lines()
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = exc.filename if exc.filename is not None else None
        if where is not None and exc.filename2 is not None:
            return [f"{where} -> {exc.filename2}: {reason}"]
        return [f"{where}: {reason}" if where is not None else reason]
    text = str(exc).strip()
    if not text:
        return [type(exc).__name__]
    return [line for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn rtopt errors and OS errors into one-line messages and exit code 1.

    Usable as a context manager (``with cli_errors(): ...``) or as a decorator under
    ``@app.command()`` (``@cli_errors()``).  ``typer.Exit`` and usage errors pass through;
    Ctrl-C exits with code 130 and a one-line note.
    """
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except RtoptError as exc:
        fail(error_lines(exc))
    except OSError as exc:
        fail(error_lines(exc))
    except KeyboardInterrupt:
        fail(["interrupted"], code=EXIT_INTERRUPTED)


def stdout_is_terminal() -> bool:
    """Whether stdout is an interactive terminal (for choosing tables vs plain output)."""
    return sys.stdout.isatty()
