"""Shared CLI plumbing: one-line error messages on stderr and exit codes, never a traceback.

Library code raises typed exceptions (:mod:`rtopt.common.errors`); commands wrap their body in
:func:`cli_errors` and the user sees one line per problem::

    from rtopt.cli._common import cli_errors, fail

    @app.command()
    @cli_errors()
    def simulate(...):
        ...
"""

from __future__ import annotations

import contextlib
import enum
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, NoReturn

import typer

from rtopt.common.console import err_console, out_console
from rtopt.common.errors import InstanceError, RtoptError
from rtopt.common.fileio import write_atomic

__all__ = ["ExitCode", "EXIT_CODES_HELP", "err_console", "out_console", "fail", "error_lines",
           "cli_errors", "write_atomic", "resolve_solver", "cli_profiles", "shipped_profile_dir",
           "EXIT_OK", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_SIGTERM", "CompileNotice",
           "compile_with_notice", "compiled_note"]


class ExitCode(enum.IntEnum):
    """Exit codes of every ``rtopt`` command: one meaning each, no collisions."""

    OK = 0
    """Success (for ``solve``: a verified feasible plan; for ``simulate``: every limit holds)."""
    ERROR = 1
    """Bad input (instance, plan, profile, option value), I/O error, or solver failure."""
    USAGE = 2
    """Command-line usage error (unknown option, missing argument): Click's own code."""
    INFEASIBLE = 3
    """The instance has no feasible plan (the diagnosis is printed)."""
    VIOLATED = 4
    """A plan violates constraints (``simulate``), or a solver's plan failed verification."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C, SIGINT): 128 + 2, the shell's convention."""
    TERMINATED = 143
    """Terminated (SIGTERM; ``rtopt compare`` handles it like Ctrl-C, finished runs kept):
    128 + 15."""


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 error (bad input, I/O, solver fault); 2 usage error; "
    "3 infeasible instance (diagnosis printed); 4 plan violates constraints (simulate, or a "
    "solver plan that failed verification); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM)."
)
"""The exit-code table as one line, for ``rtopt --help``."""

EXIT_OK = ExitCode.OK
EXIT_ERROR = ExitCode.ERROR
EXIT_INTERRUPTED = ExitCode.INTERRUPTED
EXIT_SIGTERM = ExitCode.TERMINATED


def fail(lines: Iterable[str], code: int = ExitCode.ERROR) -> NoReturn:
    """Print each line on stderr, then exit with ``code``.

    Parameters
    ----------
    lines : iterable of str
        Messages, one problem each (embedded newlines become separate lines).
    code : int
        Process exit code (default 1).
    """
    shown = 0
    for line in lines:
        for part in str(line).splitlines() or [""]:
            if shown < MAX_ERROR_LINES:
                err_console.print(part if len(part) <= MAX_LINE_CHARS
                                  else part[:MAX_LINE_CHARS - 30] + f"...({len(part)} characters)")
            shown += 1
    if shown > MAX_ERROR_LINES:
        err_console.print(f"... and {shown - MAX_ERROR_LINES} more problems (the first "
                          f"{MAX_ERROR_LINES} are shown)")
    raise typer.Exit(code)


MAX_ERROR_LINES = 50
"""Most problem lines one command prints; the rest are counted (a plan with 200,000 bad
fractions printed 29 MB of messages)."""

MAX_LINE_CHARS = 1000
"""Longest message line printed (a value echoed from a file is cut)."""


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
    Ctrl-C exits with code 130 and a one-line note; ``MemoryError`` becomes a one-line error.
    """
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except RtoptError as exc:
        fail(error_lines(exc))
    except OSError as exc:
        fail(error_lines(exc))
    except MemoryError:
        fail(["rtopt: out of memory (try a smaller instance, a coarser grid or --memory-limit)"])
    except KeyboardInterrupt:
        fail(["interrupted"], code=ExitCode.INTERRUPTED)


def stdout_is_terminal() -> bool:
    """Whether stdout is an interactive terminal (for choosing tables vs plain output)."""
    return sys.stdout.isatty()


# ---------------------------------------------------------------------------- solver profiles
def shipped_profile_dir() -> Path | None:
    """The profiles installed with the package (``rtopt/_solvers``), or None in a checkout
    (pyproject maps the top-level ``solvers/`` to that package data folder)."""
    d = Path(__file__).resolve().parents[1] / "_solvers"
    return d if d.is_dir() else None


def _is_path(name: str) -> bool:
    return name.endswith(".toml") or os.sep in name or (os.altsep is not None
                                                        and os.altsep in name)


def resolve_solver(name: str) -> Any:
    """A ``--solver`` value as a :class:`rtopt.planning.profiles.Profile`: an explicit file path, a
    profile found by :func:`rtopt.planning.profiles.profile_dirs` (the shipped ones included, also in
    an installed package), or a back-end name.  Raises :class:`rtopt.common.errors.RtoptError`."""
    from rtopt.common.errors import RtoptError
    from rtopt.planning.profiles import ProfileError, resolve_profile

    if _is_path(name):
        if len(name) > 200:
            try:
                found = Path(name).is_file()
            except OSError:  # e.g. a name longer than the file system allows
                found = False
            if not found:
                raise ProfileError(shorten(name), [("", "file not found")])
        return resolve_profile(name)
    if len(name) > 100:  # no profile or back-end name is that long: do not echo it whole
        raise RtoptError(f"{shorten(name)}: unknown solver profile or backend")
    return resolve_profile(name)


def cli_profiles() -> list[Any]:
    """Every profile :func:`rtopt.planning.profiles.list_profiles` finds (invalid ones as their error)."""
    from rtopt.planning.profiles import list_profiles

    return list_profiles()


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for echoing user input in messages."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 20]}...({len(text)} characters)"


class CompileNotice:
    """The notice and progress bar on stderr while the simulator kernels compile (a first run).

    Pass an instance as the ``progress`` of :func:`rtopt.model.simulator.compile_kernels` (or
    ``compile_progress`` of :func:`rtopt.planning.solve.solve`).  Loading compiled kernels from
    the cache takes about a second, so nothing is shown unless a step compiles (its name starts
    with ``compiling``) and the work is still going after ``delay_s``; then one line says what
    is happening and where the result is kept, and on a terminal a bar shows the steps and the
    elapsed time.
    """

    def __init__(self, console: Any = None, delay_s: float = 0.25):
        self.console = console or err_console
        self.delay_s = delay_s
        self._timer: Any = None
        self._bar: Any = None
        self._task: Any = None
        self._shown = False
        self._step = ("", 0, 1)
        self._lock = threading.Lock()
        self._t0 = 0.0

    def _show(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from rtopt import __version__
        from rtopt.model.jitcache import kernel_cache_dir

        with self._lock:
            if self._shown or self._timer is None:
                return
            self._shown = True
            self.console.print(f"rtopt: compiling the simulator kernels (first run of rtopt "
                               f"{__version__} here; kept in {kernel_cache_dir()} for later runs)")
            if self.console.is_terminal:
                self._bar = Progress(TextColumn("  {task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=self.console, transient=True)
                name, done, total = self._step
                self._task = self._bar.add_task(name, total=total, completed=done)
                self._bar.start()

    def __call__(self, step: str | None, done: int, total: int) -> None:
        if self._timer is None and step is not None and step.startswith("compiling"):
            self._t0 = time.perf_counter()
            self._timer = threading.Timer(self.delay_s, self._show)
            self._timer.daemon = True
            self._timer.start()
        with self._lock:
            self._step = (step or "done", done, total)
            if self._bar is not None:
                self._bar.update(self._task, description=step or "done", completed=done,
                                 total=total)
        if step is None:
            if self._timer is not None:
                self._timer.cancel()
            with self._lock:
                if self._bar is not None:
                    self._bar.stop()
                if self._shown:
                    self.console.print(f"rtopt: compiled in {time.perf_counter() - self._t0:.0f} s "
                                       "(once per rtopt version)")
                self._timer = None


def compiled_note(seconds: float) -> str:
    """What a first compile of the simulator cost, to print beside a command's own times
    (loading the compiled kernels from the cache, ~0.5 s idle and 2 s on a loaded 2-core
    machine, is not mentioned): ``" (+ 25 s compiling the simulator, once)"`` or ``""``."""
    return f" (+ {seconds:.0f} s compiling the simulator, once)" if seconds >= 5.0 else ""


def compile_with_notice(groups: Iterable[str] | None = None, *, threaded: bool = True) -> float:
    """Compile (or load) the simulator kernels of ``groups`` (default: all) before a command's
    work, with a :class:`CompileNotice` on a first run; the seconds it took
    (:func:`rtopt.model.simulator.compile_kernels`).  For commands that run the simulator
    without a solve (``bench``, ``trial``, ``sensitivity``): without it the first run
    compiles silently inside their work."""
    from rtopt.model import simulator

    if groups is None:
        return simulator.compile_kernels(threaded=threaded, progress=CompileNotice())
    return simulator.compile_kernels(tuple(groups), threaded=threaded, progress=CompileNotice())
