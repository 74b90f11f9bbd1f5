"""Solver comparison: every instance x every solver profile x every repeat, as a tidy table.

:func:`compare` solves each pairing (in parallel processes if asked), and writes into an output
folder::

    results.csv          one row per instance x profile x repeat (see COLUMNS)
    plans/I__P__rR.json  the full Result JSON of each run, plus how it was run ("compare" key)
    system.json          versions, platform, CPU, git revision, date, and the run's settings
    manifest.json        how far the run got: rows and SHA-256 of results.csv, complete or not,
                         and which results the report was built from
    report.html          one self-contained page (rtopt.outputs.report.render)
    report.md            the same tables in Markdown, figures under figures/
    .rtopt.lock          held (fcntl.flock) by the run writing into the folder

Everything the report shows is read back from these files, so ``rtopt report OUTDIR``
re-renders it without solving again.  Every file is written to a temporary name and renamed,
so a reader never sees a half-written file.

Runs that survive interruption: each run is written as soon as it finishes (its plan file,
then ``results.csv`` rewritten with every finished row), so Ctrl-C, SIGTERM or a crash keeps
the finished runs, and ``resume=True`` (``--resume``) skips them on the next call.  The report
is written only once the table is final.  A folder that is not empty is refused unless
``resume`` or ``overwrite`` (which first removes rtopt's own files) is given; one folder is
written by one process at a time (:class:`rtopt.common.fileio.FolderLock`).  Worker processes end
when this process ends, even on SIGKILL (``PR_SET_PDEATHSIG`` on Linux, plus a watchdog
thread that polls the parent's pid).

Reproducibility: repeat ``r`` of a profile uses the profile's seed + ``r``; rows are ordered by
instance, profile and repeat (never by completion order), so the same seeds give the same
table, wall times aside.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import datetime as _dt
import importlib.metadata as md
import io
import json
import math
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rtopt import __version__
from rtopt.backends import get_backend
from rtopt.common.errors import InstanceError, OutputFolderError, RtoptError
from rtopt.common.fileio import (LOCK_NAME, FolderLock, InputFileError, load_json,
                                  make_output_folder, write_atomic)
from rtopt.decisions import facade
from rtopt.outputs.report import render
from rtopt.outputs.tables import (COLUMNS, FEASIBLE_STATUSES, RESULTS_MAX_BYTES, read_manifest, read_table,
                                  results_digest, sha256, write_manifest, write_table)
from rtopt.planning.profiles import Profile, profile_origin, resolve_profile, shadowed
from rtopt.planning.solve import Result
from rtopt.problem.instance import load_instance
from rtopt.problem.problem import Plan

__all__ = ["compare", "CompareSummary", "Task", "COLUMNS", "expand_instances",
           "resolve_profiles", "read_table", "write_table", "system_info", "plan_file_name",
           "add_derived_columns", "FEASIBLE_STATUSES", "CompareInterrupted", "Stopped",
           "read_manifest", "results_digest", "RTOPT_FILES"]


_BEST_TOL = 1e-9
"""Relative tolerance within which a run counts as reaching the best objective (the plan files
store objectives to 9 decimals)."""


@dataclass(frozen=True)
class Task:
    """One run: an instance file, a profile, a repeat index and its seed (picklable)."""

    instance: str          # instance key (its name field, made unique)
    instance_path: str     # absolute path of the instance file
    profile: Profile
    profile_key: str       # profile name, made unique
    repeat: int
    seed: int
    time_limit_s: float | None

    @property
    def plan_file(self) -> str:
        """Path of the run's Result JSON, relative to the output folder."""
        return f"plans/{plan_file_name(self.instance, self.profile_key, self.repeat)}"


@dataclass
class CompareSummary:
    """What :func:`compare` did: the table rows and the one-line problems with its inputs.

    Attributes
    ----------
    rows : list of dict
        One per instance x profile x repeat, keys :data:`COLUMNS`.
    errors : list of str
        One line per broken input (``FILE: field.path: message``); those inputs were skipped.
    outdir : Path
        Where the files were written.
    report_errors : list of str
        Figures or sections of the report that could not be drawn (the report says so too).
    notes : list of str
        Things the user should know that are not errors (a profile in ``./solvers`` that
        replaces a shipped one of the same name).
    """

    rows: list[dict[str, Any]]
    errors: list[str]
    outdir: Path
    report_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every input was valid (runs may still be infeasible or unavailable)."""
        return not self.errors


# ---------------------------------------------------------------------------------- inputs
def _safe(name: str) -> str:
    """A name usable in file names (keeps letters, digits, '.', '_' and '-')."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "x"
    return s.replace("__", "_")


def plan_file_name(instance: str, profile: str, repeat: int) -> str:
    """``INSTANCE__PROFILE__rREPEAT.json`` (names sanitised; ``__`` is the separator)."""
    return f"{_safe(instance)}__{_safe(profile)}__r{int(repeat)}.json"


def unique_names(names: Iterable[str]) -> list[str]:
    """Names made file-safe and unique, in order (a repeated name gets ``-2``, ``-3``...)."""
    out: list[str] = []
    for n in names:
        n = _safe(n)
        k, cand = 2, n
        while cand in out:
            cand = f"{n}-{k}"
            k += 1
        out.append(cand)
    return out


def expand_instances(args: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Instance files from files and folders (a folder means its ``*.toml``), validated.

    Returns the valid files (in argument order, folder contents sorted, duplicates dropped)
    and one line per problem with the others (``FILE: field.path: message``).
    """
    files: list[Path] = []
    errors: list[str] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                errors.append(f"{a}: folder has no *.toml instance files")
            files.extend(found)
        else:
            files.append(p)
    good: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            load_instance(f)
        except InstanceError as e:
            errors.extend(e.lines())
            continue
        good.append(f)
    return good, errors


def resolve_profiles(names: Sequence[str | Profile]) -> tuple[list[Profile], list[str]]:
    """Profiles by name, file path or back-end name; one line per problem with the others."""
    out: list[Profile] = []
    errors: list[str] = []
    seen: set[tuple] = set()
    for n in names:
        if isinstance(n, Profile):
            prof = n
        else:
            try:
                prof = resolve_profile(str(n))
            except InstanceError as e:  # ProfileError: FILE: field.path: message
                errors.extend(e.lines())
                continue
            except RtoptError as e:
                errors.extend(line for line in str(e).splitlines() if line.strip())
                continue
        key = (prof.name, prof.path, prof.backend)
        if key in seen:  # the same profile twice is run once
            continue
        seen.add(key)
        bad = _config_problems(prof)
        if bad:  # e.g. a cvxpy solver that is not installed: a configuration error
            errors.extend(f"{prof.path or prof.name}: {where}: {msg}" for where, msg in bad)
            continue
        out.append(prof)
    return out, errors


def _config_problems(prof: Profile) -> list[tuple[str, str]]:
    """What the back-end says this machine cannot honour in the profile's options (only for
    back-ends that check their options, and only when they are available)."""
    try:
        cls = get_backend(prof.backend)
        check = getattr(cls, "config_problems", None)
        if check is None or not cls.available()[0]:
            return []  # an unavailable back-end is reported per run
        return list(check(prof.options))
    except Exception:  # noqa: BLE001 - a broken back-end is reported per run
        return []


# ---------------------------------------------------------------------------------- running
def _early_result(task: Task, status: str, message: str) -> dict[str, Any]:
    """Result JSON for a run that failed before a back-end could report (same format)."""
    p = task.profile
    return Result(instance=task.instance, solver=p.name, backend=p.backend, status=status,
                  termination="error", solution_status="none", objective_name="",
                  objective=None, claimed_objective=None, bound=None, plan=None, metrics={},
                  constraints=(), verified=False, wall_time_s=0.0, seed=task.seed,
                  time_limit_s=task.time_limit_s if task.time_limit_s is not None
                  else p.options.time_limit_s, message=message).to_dict()


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return (text.splitlines() or [type(e).__name__])[0][:500]


def run_task(task: Task) -> dict[str, Any]:
    """Solve one pairing and return ``{"result": Result.to_dict(), "worst_slack": ...}``.

    Runs in a worker process (top-level, picklable: spawn-safe).  Never raises: a back-end
    module that cannot be imported is ``unavailable``, anything else unexpected is ``error``,
    each with a one-line reason.
    """
    # the solver stack imports numpy and the back-ends: loaded in the worker, not at start-up

    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # solver banners must not mix with output
            res = facade.solve(task.instance_path, task.profile, time_limit_s=task.time_limit_s,
                               seed=task.seed)
    except InstanceError as e:  # the file changed or vanished since it was validated
        d = _early_result(task, "error", " ".join(e.lines()))
    except ImportError as e:  # a back-end module or its library is not installed / not written
        d = _early_result(task, "unavailable", f"back-end cannot be imported: {_one_line(e)}")
    except Exception as e:  # a broken back-end must not end the comparison
        d = _early_result(task, "error", _one_line(e))
    else:
        return {"result": res.to_dict(), "worst_slack": res.worst_slack}
    d["wall_time_s"] = round(time.perf_counter() - t0, 4)
    return {"result": d, "worst_slack": None}


HARD_LIMIT_FACTOR = 2.0
HARD_LIMIT_GRACE_S = 60.0
"""A run in a worker process that has not returned ``HARD_LIMIT_FACTOR`` x its time limit +
``HARD_LIMIT_GRACE_S`` after it started is stopped and reported as an ``error`` (a back-end
that ignores its time limit must not stall the whole comparison)."""


def _time_limit(task: Task) -> float:
    return task.time_limit_s if task.time_limit_s is not None else task.profile.options.time_limit_s


def _hard_limit(task: Task) -> float:
    return HARD_LIMIT_FACTOR * _time_limit(task) + HARD_LIMIT_GRACE_S


# ---------------------------------------------------------------------------------- workers
WATCHDOG_INTERVAL_S = 0.5
"""How often a worker's watchdog thread checks that its parent is still alive (s): the bound on
how long a worker outlives a parent killed by SIGKILL where ``PR_SET_PDEATHSIG`` is missing."""

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process end when ``parent_pid`` ends, however it ends.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through ctypes (the kernel kills us when the
    parent dies).  Everywhere, as a fallback: a daemon thread that polls ``os.getppid()`` every
    :data:`WATCHDOG_INTERVAL_S` and exits when we have been re-parented.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError, TypeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="rtopt-parent-watchdog", daemon=True).start()


_STARTED: Any = None  # in a pool worker: queue on which it says which run it starts


def _worker_init(parent_pid: int, started: Any = None) -> None:
    """Initialiser of every worker process: the parent alone decides when a run stops."""
    global _STARTED
    _STARTED = started
    # Ctrl-C reaches the whole process group: the parent stops the workers itself (and keeps
    # their finished runs); a worker interrupted on its own would print a traceback.
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)


def _announced(fn: Callable[[Task], dict[str, Any]], task: Task, i: int) -> dict[str, Any]:
    """Run ``fn(task)`` in a pool worker after telling the parent that run ``i`` starts (its
    hard deadline counts from then, not from the worker's start-up)."""
    if _STARTED is not None:
        _STARTED.put(i)
    return fn(task)


def _child(task: Task, conn: Any, fn: Callable[[Task], dict[str, Any]],
           parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _worker_init(parent_pid)
    try:
        conn.send("started")
        conn.send(fn(task))
    finally:
        conn.close()


STARTUP_GRACE_S = 120.0
"""How long a fresh worker process may take to start (spawn, imports) before its run's own
deadline begins; only a machine that is badly overloaded comes near it."""


def _run_isolated(task: Task, ctx: Any, fn: Callable[[Task], dict[str, Any]] = run_task
                  ) -> dict[str, Any]:
    """Run one task alone in a fresh process, with a hard deadline (after a pool broke)."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(task, send, fn, os.getpid()),
                       name=f"rtopt-{task.plan_file}")
    proc.start()
    send.close()
    res, timed_out = None, False
    limit = _hard_limit(task)
    try:
        started = False  # if it never says so, it died: reported from its exit code below
        if recv.poll(STARTUP_GRACE_S):
            with contextlib.suppress(EOFError, OSError):
                started = recv.recv() == "started"
        if started:  # the run's own deadline counts from here
            if recv.poll(limit):
                with contextlib.suppress(EOFError, OSError):
                    res = recv.recv()
            else:
                timed_out = True
    finally:
        proc.join(5.0 if res is not None else 0.5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        recv.close()
    if res is not None:
        return res
    if timed_out:
        d = _early_result(task, "error", f"stopped: no result {limit:.0f} s after the start "
                                         f"(time limit {_time_limit(task):g} s)")
        d["termination"] = "time_limit"
        d["wall_time_s"] = round(limit, 4)
        return {"result": d, "worst_slack": None}
    code = proc.exitcode
    how = (f"signal {-code}" if code is not None and code < 0 else f"exit code {code}")
    d = _early_result(task, "error", f"the solver process died ({how}: crash or out of memory)")
    return {"result": d, "worst_slack": None}


@contextlib.contextmanager
def _signals_held() -> Any:
    """Hold SIGINT and SIGTERM back while a finished run is written (main thread only); a
    signal that arrives meanwhile is delivered right after."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
            signal, "pthread_sigmask"):
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _kill_pool(ex: cf.ProcessPoolExecutor) -> None:
    """Stop our own worker processes now (a solver may ignore SIGINT or its time limit)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    ex.shutdown(wait=False)


def _pool_phase(tasks: list[Task], idx: list[int], workers: int, ctx: Any, out: list[Any],
                tick: Callable[[int], None], fn: Callable[[Task], dict[str, Any]]
                ) -> tuple[list[int], list[int]]:
    """Run ``idx`` in a process pool.  If the pool breaks (a worker died, or was stopped past
    its hard deadline), returns the runs that were under way (to redo alone) and those that
    had not started (to redo in a fresh pool)."""
    announce = ctx.SimpleQueue()  # workers say which run they start (its deadline begins)
    ex = cf.ProcessPoolExecutor(max_workers=min(workers, len(idx)), mp_context=ctx,
                                initializer=_worker_init, initargs=(os.getpid(), announce))
    suspects: list[int] = []
    not_started: list[int] = []
    started: dict[int, float] = {}

    def drain() -> None:
        now = time.monotonic()
        with contextlib.suppress(OSError, EOFError):
            while not announce.empty():
                started.setdefault(announce.get(), now)

    try:
        futs = {ex.submit(_announced, fn, tasks[i], i): i for i in idx}
        futs_by_index = {i: f for f, i in futs.items()}
        pending = set(futs)
        while pending:
            done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
            drain()
            for fut in done:
                i = futs[fut]
                try:
                    out[i] = fut.result()
                except cf.process.BrokenProcessPool:
                    # under way (announced) when the pool broke: redone alone
                    (suspects if i in started else not_started).append(i)
                    continue
                except Exception as e:  # e.g. a result that cannot be pickled
                    out[i] = {"result": _early_result(tasks[i], "error", _one_line(e)),
                              "worst_slack": None}
                tick(i)
            now = time.monotonic()
            if any(now - t > _hard_limit(tasks[i]) for i, t in started.items()
                   if futs_by_index[i] in pending):
                _kill_pool(ex)  # every run under way is redone alone, with its own deadline
    except BaseException:  # Ctrl-C: stop the runs in progress, drop the queued ones
        _kill_pool(ex)
        raise
    ex.shutdown(wait=True)
    announce.close()
    return sorted(suspects), sorted(not_started)


def run_all(tasks: list[Task], workers: int, isolate: bool,
            progress: Callable[[int, int, str], None] | None,
            fn: Callable[[Task], dict[str, Any]] = run_task,
            on_result: Callable[[int, dict[str, Any]], None] | None = None,
            done_before: int = 0, total: int | None = None) -> list[dict[str, Any]]:
    """Run every task (``fn`` must be a picklable top-level function; tests substitute it).

    ``on_result(i, out)`` is called in this process as soon as task ``i`` has finished (with
    SIGINT and SIGTERM held back meanwhile, so that a run is recorded whole or not at all);
    ``progress`` counts from ``done_before`` up to ``total`` (runs finished earlier, resumed).
    """
    total = len(tasks) + done_before if total is None else total
    out: list[dict[str, Any] | None] = [None] * len(tasks)
    count = done_before

    def tick(i: int) -> None:
        nonlocal count
        if on_result is not None:
            with _signals_held():
                on_result(i, out[i])  # type: ignore[arg-type]
        count += 1
        if progress is not None:
            t = tasks[i]
            progress(count, total, f"{t.instance} / {t.profile_key} / r{t.repeat}")

    if not isolate:
        for i, t in enumerate(tasks):
            out[i] = fn(t)
            tick(i)
        return out  # type: ignore[return-value]
    ctx = multiprocessing.get_context("spawn")
    queue = list(range(len(tasks)))
    while queue:
        suspects, queue = _pool_phase(tasks, queue, workers, ctx, out, tick, fn)
        for i in suspects:  # one at a time: a run that kills its process only costs itself
            out[i] = _run_isolated(tasks[i], ctx, fn)
            tick(i)
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- table
def _f(x: Any) -> float | None:
    if x is None or x == "":
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _row(task: Task, out: dict[str, Any]) -> dict[str, Any]:
    d = out["result"]
    obj = d.get("objective") or {}
    sol = d.get("solver") or {}
    plan = None
    if d.get("schedule"):
        plan = Plan.from_dict(d["schedule"]).describe()
    msg = " ".join(str(d.get("message") or "").split())
    return {
        "instance": task.instance, "profile": task.profile_key, "backend": task.profile.backend,
        "repeat": task.repeat, "seed": task.seed,
        "time_limit_s": _f(sol.get("time_limit_s")),
        "status": d.get("status", ""), "termination": d.get("termination", ""),
        "solution_status": d.get("solution_status", ""),
        "objective_name": obj.get("name") or "",
        "objective": _f(obj.get("value")), "claimed_objective": _f(obj.get("claimed")),
        "bound": _f(obj.get("bound")), "gap": _f(obj.get("gap")), "gap_to_best": None,
        "best": False, "worst_slack": _f(out.get("worst_slack")),
        "wall_time_s": _f(d.get("wall_time_s")),
        "solver_name": sol.get("name") or "", "solver_version": sol.get("version") or "",
        "plan": plan or "", "instance_path": task.instance_path, "plan_file": task.plan_file,
        "profile_file": task.profile.path or "", "message": msg,
    }


def add_derived_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill ``gap_to_best`` and ``best`` from the verified objectives of each instance."""
    best: dict[str, float] = {}
    for r in rows:
        if r["status"] in FEASIBLE_STATUSES and r["objective"] is not None:
            b = best.get(r["instance"])
            best[r["instance"]] = r["objective"] if b is None else max(b, r["objective"])
    for r in rows:
        b = best.get(r["instance"])
        if b is None or r["status"] not in FEASIBLE_STATUSES or r["objective"] is None:
            r["gap_to_best"], r["best"] = None, False
            continue
        g = max(0.0, (b - r["objective"]) / max(abs(b), 1e-9))
        r["gap_to_best"] = 0.0 if g <= _BEST_TOL else g
        r["best"] = g <= _BEST_TOL
    return rows


# ---------------------------------------------------------------------------------- files


def _versions() -> dict[str, str]:
    out = {"rtopt": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "pyomo", "cvxpy", "highspy", "pyscipopt", "matplotlib",
                 "pydantic", "jinja2"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = ""
    return out


def _scip_version() -> str:
    # In a child process: importing the native library must not print into or crash our run.
    code = "import pyscipopt; print(pyscipopt.Model().version())"
    try:
        cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = cp.stdout.strip().splitlines()
    return lines[-1].strip() if cp.returncode == 0 and lines else ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return ""
    try:
        cp = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return cp.stdout.strip() if cp.returncode == 0 else ""


def system_info() -> dict[str, Any]:
    """Versions, platform, CPU, git revision of the rtopt checkout and the date (UTC)."""
    v = _versions()
    if v.get("pyscipopt"):
        v["scip"] = _scip_version()
    return {
        "versions": v,
        "platform": platform.platform(),
        "python_implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "git_revision": _git_revision(),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def _profile_info(key: str, p: Profile, time_limit_s: float | None) -> dict[str, Any]:
    o = p.options
    return {"name": key, "backend": p.backend, "description": p.description, "path": p.path,
            "origin": profile_origin(p.path),
            "time_limit_s": time_limit_s if time_limit_s is not None else o.time_limit_s,
            "rel_gap": o.rel_gap, "threads": o.threads, "seed": o.seed,
            "options": json.loads(json.dumps(o.options, default=str))}


# ---------------------------------------------------------------------------------- folder
RTOPT_FILES = ("results.csv", "system.json", "manifest.json", "report.html", "report.md")
"""rtopt's own files at the top of a comparison folder (besides ``plans/*.json``,
``figures/*.png`` and the lock file): what ``overwrite=True`` removes."""


def _rtopt_entries(out: Path) -> list[Path]:
    """rtopt's own files in ``out`` (what ``--overwrite`` removes; nothing else is touched)."""
    found = [out / n for n in RTOPT_FILES if (out / n).is_file()]
    for sub, pattern in (("plans", "*.json"), ("figures", "*.png")):
        d = out / sub
        if d.is_dir() and not d.is_symlink():
            found.extend(p for p in d.glob(pattern) if p.is_file())
    # temporary files of an interrupted atomic write
    found.extend(p for p in out.glob(".*.tmp") if p.is_file())
    for sub in ("plans", "figures"):
        if (out / sub).is_dir():
            found.extend(p for p in (out / sub).glob(".*.tmp") if p.is_file())
    return found


def prepare_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder in use by an earlier comparison unless resuming or overwriting."""
    entries = [p for p in out.iterdir() if p.name != LOCK_NAME]
    if overwrite:
        for p in _rtopt_entries(out):
            p.unlink()
        for sub in ("plans", "figures"):
            with contextlib.suppress(OSError):  # only if now empty
                (out / sub).rmdir()
        return
    if entries and not resume:
        raise OutputFolderError(
            f"{out}: folder is not empty; use --resume to continue the comparison in it or "
            f"--overwrite to replace rtopt's files in it")


def _reusable(out: Path, tasks: list[Task], digests: dict[str, str]) -> dict[int, dict[str, Any]]:
    """Rows of an earlier run in ``out`` that ``--resume`` keeps: same instance (name, path
    and content), profile (name and file), repeat and seed, with a readable plan file."""
    try:
        old = read_table(out / "results.csv")
    except InstanceError:
        return {}
    by_key = {(r["instance"], r["profile"], r["repeat"]): r for r in old}
    keep: dict[int, dict[str, Any]] = {}
    for i, t in enumerate(tasks):
        r = by_key.get((t.instance, t.profile_key, t.repeat))
        if r is None or r["seed"] != t.seed or r["instance_path"] != t.instance_path \
                or r["plan_file"] != t.plan_file:
            continue
        try:
            d = load_json(out / t.plan_file, limit=RESULTS_MAX_BYTES)
        except InputFileError:
            continue
        c = d.get("compare") if isinstance(d, dict) else None
        if not isinstance(c, dict) or c.get("instance_sha256") != digests[t.instance_path] \
                or c.get("profile_path") != t.profile.path \
                or c.get("profile_sha256", "") != (sha256(t.profile.path) if t.profile.path
                                                   else "") \
                or c.get("time_limit_s") != t.time_limit_s:
            continue
        keep[i] = r
    return keep


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by the SIGTERM handler of :func:`handle_sigterm`."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = int(signum)


@contextlib.contextmanager
def handle_sigterm() -> Any:
    """Within the block, SIGTERM raises :class:`Stopped` (a KeyboardInterrupt) in the main
    thread, so that it stops a comparison like Ctrl-C does (main thread only; else no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_stopped(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    old = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class CompareInterrupted(KeyboardInterrupt):
    """A comparison stopped by Ctrl-C or SIGTERM; the finished runs are in ``outdir``.

    Attributes
    ----------
    signum : int
        ``signal.SIGINT`` or ``signal.SIGTERM``.
    done, total : int
        Runs finished (kept in ``results.csv``, including resumed ones) and runs planned.
    outdir : Path
    """

    def __init__(self, signum: int, done: int, total: int, outdir: Path):
        self.signum, self.done, self.total, self.outdir = int(signum), done, total, outdir
        super().__init__(self.note())

    def note(self) -> str:
        """The one-line message the CLI prints."""
        how = "terminated (SIGTERM)" if self.signum == signal.SIGTERM else "interrupted"
        return (f"{how}: {self.done} of {self.total} run(s) finished and kept in "
                f"{self.outdir / 'results.csv'}; continue with --resume (no report written)")


# ---------------------------------------------------------------------------------- compare
def compare(instances: Sequence[str | os.PathLike], profiles: Sequence[str | Profile],
            outdir: str | os.PathLike, repeat: int = 1, workers: int = 1,
            time_limit_s: float | None = None,
            progress: Callable[[int, int, str], None] | None = None,
            report: bool = True, isolate: bool | None = None, resume: bool = False,
            overwrite: bool = False) -> CompareSummary:
    """Solve every instance with every profile ``repeat`` times and write the comparison.

    Parameters
    ----------
    instances : sequence of str or Path
        Instance files, or folders (their ``*.toml``).
    profiles : sequence of str or Profile
        Profile names, profile files or back-end names (see :func:`rtopt.planning.profiles.resolve_profile`).
    outdir : str or Path
        Output folder (created if needed).  If it is not empty, ``resume`` or ``overwrite``
        must be given.
    repeat : int
        Runs per pairing; repeat ``r`` uses the profile's seed + ``r``.
    workers : int
        Parallel worker processes.
    isolate : bool, optional
        Run each solve in a worker process (spawned), so that a crashing back-end costs only
        its own row and a run past :data:`HARD_LIMIT_FACTOR` x its time limit +
        :data:`HARD_LIMIT_GRACE_S` is stopped.  Default: when ``workers > 1``; with
        ``isolate=False`` (and ``workers=1``) everything runs in this process.
    time_limit_s : float, optional
        Overrides every profile's time limit (s).
    progress : callable, optional
        Called as ``progress(done, total, label)`` after each run.
    report : bool
        Render ``report.html`` and ``report.md`` (:func:`rtopt.outputs.report.render`) once every run
        has finished.
    resume : bool
        Keep the runs an earlier (interrupted) comparison finished in ``outdir`` (same instance
        file content, profile file, repeat, seed and time limit) and run only the others.
    overwrite : bool
        Remove rtopt's own files from ``outdir`` first (``results.csv``, ``plans/*.json``,
        ``figures/*.png``, ``system.json``, ``manifest.json``, the reports); others stay.

    Returns
    -------
    CompareSummary
        The rows and the broken inputs (skipped; the other pairings still ran).

    Raises
    ------
    rtopt.common.errors.RtoptError
        Nothing valid to run (every instance or every profile is broken), or the output folder
        cannot be created.
    rtopt.common.errors.OutputFolderError
        ``outdir`` is not empty and neither ``resume`` nor ``overwrite`` was given.
    rtopt.common.errors.FolderLocked
        Another process is writing to ``outdir``.
    CompareInterrupted
        Ctrl-C (or SIGTERM under :func:`handle_sigterm`): the finished runs are kept.
    """
    if repeat < 1:
        raise RtoptError(f"--repeat must be >= 1 (got {repeat})")
    if workers < 1:
        raise RtoptError(f"--workers must be >= 1 (got {workers})")
    if time_limit_s is not None and not time_limit_s > 0:
        raise RtoptError(f"--time-limit must be > 0 s (got {time_limit_s})")
    if resume and overwrite:
        raise RtoptError("--resume and --overwrite exclude each other")
    files, errors = expand_instances(instances)
    profs, perr = resolve_profiles(profiles)
    errors = errors + perr
    if not files or not profs:
        what = "no valid instance" if not files else "no valid solver profile"
        raise NothingToRun(errors + [f"nothing to compare: {what}"])
    out = make_output_folder(outdir)
    with FolderLock(out, "rtopt compare"):
        return _compare_locked(files, profs, errors, out, repeat, workers, time_limit_s,
                               progress, report, isolate, resume, overwrite)


def instance_names(files: list[Path]) -> list[str]:
    """The ``name`` field of each (validated) instance file (its stem if it has none)."""
    names = []
    for f in files:
        try:
            names.append(str(getattr(load_instance(f), "name", "") or f.stem))
        except InstanceError:  # changed since it was validated: the run will say so
            names.append(f.stem)
    return names


def _shadow_notes(profs: list[Profile], keys: list[str]) -> list[str]:
    return [f"note: profile '{k}' is {p.path} ({profile_origin(p.path)}); {other} of the same "
            "name is not used (give its path to use it)"
            for k, p in zip(keys, profs) for other in shadowed(p)]


def _compare_locked(files: list[Path], profs: list[Profile], errors: list[str], out: Path,
                    repeat: int, workers: int, time_limit_s: float | None,
                    progress: Callable[[int, int, str], None] | None, report: bool,
                    isolate: bool | None, resume: bool, overwrite: bool) -> CompareSummary:
    for sub in ("plans", "figures"):  # rtopt writes there: it must be inside the folder
        if (out / sub).is_symlink() or ((out / sub).exists() and not (out / sub).is_dir()):
            raise OutputFolderError(f"{out / sub}: is a symbolic link or not a folder; "
                                    f"rtopt writes only inside {out}")
    prepare_folder(out, resume, overwrite)
    (out / "plans").mkdir(exist_ok=True)
    inst_keys = unique_names(instance_names(files))
    prof_keys = unique_names(p.name for p in profs)
    tasks = [Task(ik, str(f.resolve()), p, pk, r, p.options.seed + r, time_limit_s)
             for ik, f in zip(inst_keys, files) for pk, p in zip(prof_keys, profs)
             for r in range(repeat)]
    digests = {str(f.resolve()): sha256(f) for f in files}  # the files as they were solved
    prof_digests = {p.path: sha256(p.path) for p in profs if p.path}
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    if resume:
        for i, r in _reusable(out, tasks, digests).items():
            rows[i] = r
        # plan files of the earlier run that are not part of this comparison would be stale
        wanted = {Path(t.plan_file).name for t in tasks}
        for p in (out / "plans").glob("*.json"):
            if p.name not in wanted:
                p.unlink()
    todo = [i for i, r in enumerate(rows) if r is None]
    for name in ("report.html", "report.md"):  # a report of another table would mislead
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()

    sysinfo = system_info()
    sysinfo["run"] = {
        "instances": [{"name": k, "path": str(f.resolve())} for k, f in zip(inst_keys, files)],
        "profiles": [_profile_info(k, p, time_limit_s) for k, p in zip(prof_keys, profs)],
        "repeat": repeat, "workers": workers, "time_limit_s": time_limit_s,
        "input_errors": errors, "resumed_runs": len(tasks) - len(todo),
    }
    write_atomic(out / "system.json", json.dumps(sysinfo, indent=2) + "\n")

    def write_rows() -> None:
        done = [dict(r) for r in rows if r is not None]
        add_derived_columns(done)
        write_table(done, out / "results.csv")
        n, sha = results_digest(out / "results.csv")
        write_manifest(out, planned_runs=len(tasks), finished_runs=n, results_rows=n,
                       results_sha256=sha, complete=n == len(tasks))

    def record(j: int, o: dict[str, Any]) -> None:
        """A finished run: its plan file, then the table with its row (both atomic)."""
        t = tasks[todo[j]]
        d = dict(o["result"])
        extras = d.get("extras") if isinstance(d.get("extras"), dict) else {}
        d["extras"] = {**extras, "profile_file": t.profile.path or ""}
        d["compare"] = {"instance": t.instance, "instance_path": t.instance_path,
                        "instance_sha256": digests[t.instance_path], "profile": t.profile_key,
                        "profile_path": t.profile.path,
                        "profile_sha256": prof_digests.get(t.profile.path or "", ""),
                        "repeat": t.repeat, "seed": t.seed, "time_limit_s": t.time_limit_s,
                        "worst_slack": _f(o.get("worst_slack"))}
        write_atomic(out / t.plan_file, json.dumps(d, indent=2, default=str) + "\n")
        rows[todo[j]] = _row(t, o)
        write_rows()

    write_rows()  # the resumed rows alone (and a manifest saying the run is incomplete)
    try:
        run_all([tasks[i] for i in todo], workers,
                 workers > 1 if isolate is None else bool(isolate), progress,
                 on_result=record, done_before=len(tasks) - len(todo), total=len(tasks))
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Stopped) else int(signal.SIGINT)
        with contextlib.suppress(OSError):
            write_manifest(out, interrupted=signal.Signals(signum).name)
        raise CompareInterrupted(signum, sum(r is not None for r in rows), len(tasks),
                                 out) from None
    final = [r for r in rows if r is not None]
    add_derived_columns(final)
    write_manifest(out, interrupted=None)
    summary = CompareSummary(final, errors, out, notes=_shadow_notes(profs, prof_keys))
    if report:
        if progress is not None:
            progress(len(tasks), len(tasks), "writing the report")
        try:
            summary.report_errors = render(out)
        except KeyboardInterrupt as e:  # the table is final; --resume only renders
            signum = e.signum if isinstance(e, Stopped) else int(signal.SIGINT)
            raise CompareInterrupted(signum, len(final), len(tasks), out) from None
    return summary


class NothingToRun(RtoptError):
    """No valid instance or profile: carries every problem line."""

    def __init__(self, lines: list[str]):
        self.problem_lines = list(lines)
        super().__init__("\n".join(lines))
