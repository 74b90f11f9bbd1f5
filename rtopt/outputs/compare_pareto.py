"""Solver comparison on Pareto fronts: ``rtopt compare INSTANCES --pareto A,B[,C] -o OUTDIR``.

:func:`compare_fronts` runs every front method (:data:`METHODS`) on every instance and writes
the same kind of folder as :func:`rtopt.outputs.compare.compare`, with the same machinery (folder lock,
``--resume`` / ``--overwrite``, ``manifest.json``, ``system.json``, worker processes, Ctrl-C and
SIGTERM keep the finished runs, ``rtopt report OUTDIR`` re-renders, ``--check``)::

    results.csv          one row per instance x method x repeat (see FRONT_COLUMNS)
    plans/I__M__rR.json  the verified front of each run (plans and objective values)
    figures/fronts-I.png every method's front of instance I on the same axes
    report.html / .md    the table, the figures and how to read them

Methods
-------
``exact``
    The exact front over the exhaustive back-end's space (:func:`rtopt.decisions.pareto.exact_front`);
    status ``exact``, or ``partial`` when the time limit stopped the scoring (then it is the
    front of the schedules scored so far, NOT exact).  Deterministic: run once (repeat 0).
``nsga``
    pymoo NSGA-II (two objectives) / NSGA-III (three) over scipy-de's genome
    (:func:`rtopt.decisions.pareto_moo.heuristic_front`), seed = ``seed + repeat``; status ``heuristic``.
    The time limit also stops it (between generations; ``termination = time_limit``).

Every point of every front is re-verified by :meth:`rtopt.problem.problem.Problem.verify`; a point that
fails is dropped and counted (``dropped_points``), so ``all_verified`` is true for every front
that has points.

Indicators (columns computed across the runs of one instance, like ``gap_to_best``)
----------------------------------------------------------------------------------
Each objective is taken in its minimised form (maximised ones negated) and scaled to [0, 1]
between the best and the worst value reached by the union of every method's verified front on
that instance.  The hypervolume reference point is 1.1 in every scaled objective: 10 % beyond
the worst value any method reached, so every point of every front contributes and all methods
on one instance are measured against the same point.  Hypervolumes are therefore comparable
between methods on one instance, not between instances (use ``hv_ratio``); adding a method to a
comparison can change the others' hypervolumes, not their ratios' meaning.

``hv_ratio`` is the hypervolume over the exact front's, when the instance has an ``exact`` row
(not when the exact front is only ``partial``).  ``gd_mean`` / ``gd_max`` are the mean and the
largest distance from a point of the front to the nearest exact point, ``igd`` the mean
distance from an exact point to the nearest point of the front (pymoo ``GD`` / ``IGD``), all in
the scaled space.  The heuristic searches scipy-de's genome, which is not a subset of the
exhaustive space (doses are not restricted to the grid), so ``hv_ratio`` may exceed 1 slightly.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import importlib.metadata as md
import io
import json
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rtopt.common.errors import InstanceError, ProblemDeclined, RtoptError
from rtopt.common.fileio import (FolderLock, InputFileError, inside, make_output_folder,
                                  write_atomic)
from rtopt.decisions.pareto import (did_you_mean_hint, exact_front, hypervolume, knee_index,
                                    parse_objectives, verified_front)
from rtopt.decisions.pareto_moo import heuristic_front
from rtopt.outputs.compare import (CompareInterrupted, NothingToRun, Stopped, expand_instances,
                                   instance_names, plan_file_name, prepare_folder, run_all,
                                   system_info, unique_names)
from rtopt.outputs.rendering import (TEMPLATES, MdSafe, anchor, fmt_number, fmt_seconds, load_json,
                                     png_bytes, template_env, utc_date)
from rtopt.outputs.tables import read_typed_csv, results_digest, sha256, write_manifest, write_table
from rtopt.problem.instance import load_instance
from rtopt.problem.problem import Problem

# matplotlib and markupsafe (with jinja2) are imported inside the figure and render functions
# (import time).

__all__ = ["compare_fronts", "FRONT_COLUMNS", "METHODS", "FRONT_STATUSES", "read_front_table",
           "is_front_table", "render", "front_indicators"]

METHODS = {
    "exact": ("exhaustive", "exact front over the exhaustive back-end's space (uniform doses on "
                            "the grid, regular calendars, every infusion set)"),
    "nsga": ("pymoo", "pymoo NSGA-II (2 objectives) / NSGA-III (3) over scipy-de's genome"),
}
"""Front methods: name -> (library, description)."""

FRONT_STATUSES = ("exact", "partial", "heuristic")
"""Statuses of a run that produced a verified front."""

FRONT_COLUMNS = (
    "instance", "profile", "backend", "repeat", "seed", "time_limit_s", "status", "termination",
    "objectives", "n_points", "hypervolume", "hv_ratio", "gd_mean", "gd_max", "igd",
    "all_verified", "dropped_points", "wall_time_s", "solver_name", "solver_version",
    "knee_plan", "instance_path", "plan_file", "message",
)
"""Columns of ``results.csv`` in a front comparison (``profile`` is the method).  The shared
columns mean what they mean in :data:`rtopt.outputs.compare.COLUMNS`."""

_FLOAT_COLS = ("time_limit_s", "hypervolume", "hv_ratio", "gd_mean", "gd_max", "igd",
               "wall_time_s")
_INT_COLS = ("repeat", "seed", "n_points", "dropped_points")
DEFAULT_TIME_LIMIT_S = 600.0
"""Time limit per run without ``--time-limit`` (as ``rtopt pareto``'s)."""
HV_REFERENCE = 1.1
"""Reference point of the hypervolume in every objective scaled to [0, 1] (see module doc)."""


@dataclass(frozen=True)
class FrontTask:
    """One run: instance, method, repeat (picklable; the attributes run_all reads)."""

    instance: str
    instance_path: str
    profile_key: str            # the method
    repeat: int
    seed: int
    time_limit_s: float
    objectives: str
    pop_size: int = 60
    generations: int = 60
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def plan_file(self) -> str:
        return f"plans/{plan_file_name(self.instance, self.profile_key, self.repeat)}"

    def settings(self) -> dict[str, Any]:
        return {"objectives": self.objectives, "time_limit_s": self.time_limit_s,
                "seed": self.seed, "pop_size": self.pop_size if self.profile_key == "nsga" else None,
                "generations": self.generations if self.profile_key == "nsga" else None,
                "options": dict(self.options)}


# ---------------------------------------------------------------------------------- one run
def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return ""


def run_front(task: FrontTask) -> dict[str, Any]:
    """Run one method on one instance; never raises (a one-line ``message`` says what failed).

    Returns the content of the run's plan file: ``status``, ``termination``, ``message``,
    ``objectives`` (name, sense, label), ``points`` (verified plans with their objective
    values), ``knee``, ``dropped_points``, ``counts``, ``label``, ``wall_time_s``.
    """
    t0 = time.perf_counter()
    lib = METHODS.get(task.profile_key, ("", ""))[0]
    d: dict[str, Any] = {"method": task.profile_key, "status": "error", "termination": "error",
                         "message": "", "objectives": [], "points": [], "knee": None,
                         "dropped_points": 0, "counts": {}, "label": "",
                         "solver_name": lib, "solver_version": _version(lib) if lib == "pymoo"
                         else ""}
    try:
        problem = Problem(load_instance(task.instance_path))
        objs = parse_objectives(task.objectives, problem)
    except InstanceError as e:
        d["message"] = " ".join(e.lines())
    except RtoptError as e:  # an objective that does not apply to this instance
        d["status"], d["termination"] = "not_applicable", "not_run"
        d["message"] = str(e).replace("--objectives: ", "", 1).splitlines()[0]
    else:
        d["objectives"] = [{"name": o.name, "sense": "max" if o.maximise else "min",
                            "label": o.label} for o in objs]
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                if task.profile_key == "exact":
                    plans, counts = exact_front(problem, objs, dict(task.options),
                                                task.time_limit_s)
                    partial = bool(counts.get("time_limit_reached"))
                    d["status"] = "partial" if partial else "exact"
                    d["termination"] = "time_limit" if partial else "completed"
                    d["label"] = (f"partial: the time limit stopped the scoring after "
                                  f"{counts.get('schedules_scored', 0)} of {counts['schedules']} "
                                  f"schedules" if partial else METHODS["exact"][1])
                elif task.profile_key == "nsga":
                    plans, info = heuristic_front(problem, objs, pop_size=task.pop_size,
                                                  generations=task.generations, seed=task.seed,
                                                  time_limit_s=task.time_limit_s)
                    counts = {"evaluations": info["evaluations"],
                              "generations": info["generations"]}
                    d["status"] = "heuristic"
                    d["termination"] = ("time_limit" if info["time_limit_reached"]
                                        else "completed")
                    d["label"] = info["label"]
                else:
                    raise RtoptError(f"unknown front method {task.profile_key!r}")
                pts, dropped = verified_front(problem, objs, plans)
        except ProblemDeclined as e:
            d["status"], d["termination"] = "declined", "not_run"
            d["message"] = str(e).splitlines()[0]
        except ImportError as e:
            d["status"], d["termination"] = "unavailable", "not_run"
            d["message"] = f"{type(e).__name__}: {e}".splitlines()[0]
        except RtoptError as e:
            d["message"] = str(e).splitlines()[0]
        except Exception as e:  # noqa: BLE001 - a failing method must not end the comparison
            d["message"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        else:
            d["counts"] = counts
            d["dropped_points"] = int(dropped)
            d["points"] = [{"plan": p.plan.to_dict(), "describe": p.plan.describe(),
                            "objectives": p.values, "feasible": p.feasible} for p in pts]
            if pts:
                F = np.array([[(-p.values[o.name] if o.maximise else p.values[o.name])
                               for o in objs] for p in pts])
                d["knee"] = knee_index(F)
            else:
                d["message"] = "no point of the front passed verification"
            if dropped:
                d["message"] = (d["message"] + "; " if d["message"] else "") + \
                    f"{dropped} point(s) failed verification and were dropped"
    d["wall_time_s"] = round(time.perf_counter() - t0, 4)
    return d


# ---------------------------------------------------------------------------------- indicators
def _minimised(d: dict[str, Any]) -> np.ndarray:
    objs = d.get("objectives") or []
    return np.array([[(-p["objectives"][o["name"]] if o["sense"] == "max"
                       else p["objectives"][o["name"]]) for o in objs]
                     for p in d.get("points") or []], dtype=float).reshape(-1, len(objs))


def front_indicators(rows: list[dict[str, Any]], fronts: list[dict[str, Any] | None]
                     ) -> list[dict[str, Any]]:
    """Fill ``hypervolume``, ``hv_ratio``, ``gd_mean``, ``gd_max`` and ``igd`` of every row from
    the fronts (plan-file dicts, same order), per instance (see the module docstring)."""
    for r in rows:
        for k in ("hypervolume", "hv_ratio", "gd_mean", "gd_max", "igd"):
            r[k] = None
    for inst in dict.fromkeys(r["instance"] for r in rows):
        idx = [i for i, r in enumerate(rows) if r["instance"] == inst
               and r["status"] in FRONT_STATUSES and fronts[i] and fronts[i].get("points")]
        if not idx:
            continue
        Fs = {i: _minimised(fronts[i]) for i in idx}
        allF = np.vstack(list(Fs.values()))
        lo, hi = allF.min(axis=0), allF.max(axis=0)
        scale = np.where(hi > lo, hi - lo, 1.0)
        N = {i: (F - lo) / scale for i, F in Fs.items()}
        ref = np.full(allF.shape[1], HV_REFERENCE)
        for i in idx:
            rows[i]["hypervolume"] = hypervolume(N[i], ref)
        ex = next((i for i in idx if rows[i]["status"] == "exact"), None)
        if ex is None:
            continue
        hv_ex = rows[ex]["hypervolume"]
        for i in idx:
            rows[i]["hv_ratio"] = rows[i]["hypervolume"] / hv_ex if hv_ex > 0 else None
            # distances of this front's points to the nearest exact point, and back
            D = np.linalg.norm(N[i][:, None, :] - N[ex][None, :, :], axis=2)
            rows[i]["gd_mean"] = float(D.min(axis=1).mean())
            rows[i]["gd_max"] = float(D.min(axis=1).max())
            rows[i]["igd"] = float(D.min(axis=0).mean())
    return rows


# ---------------------------------------------------------------------------------- table
def _row(task: FrontTask, d: dict[str, Any]) -> dict[str, Any]:
    pts = d.get("points") or []
    knee = d.get("knee")
    return {"instance": task.instance, "profile": task.profile_key,
            "backend": METHODS.get(task.profile_key, ("",))[0], "repeat": task.repeat,
            "seed": task.seed, "time_limit_s": task.time_limit_s, "status": d.get("status", ""),
            "termination": d.get("termination", ""), "objectives": task.objectives,
            "n_points": len(pts), "hypervolume": None, "hv_ratio": None, "gd_mean": None,
            "gd_max": None, "igd": None,
            "all_verified": bool(pts) and all(p.get("feasible") for p in pts),
            "dropped_points": int(d.get("dropped_points") or 0),
            "wall_time_s": d.get("wall_time_s"), "solver_name": d.get("solver_name", ""),
            "solver_version": d.get("solver_version", ""),
            "knee_plan": pts[knee]["describe"] if knee is not None and pts else "",
            "instance_path": task.instance_path, "plan_file": task.plan_file,
            "message": " ".join(str(d.get("message") or "").split())}


def write_front_table(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write a front comparison's rows as CSV with :data:`FRONT_COLUMNS` (atomically)."""
    write_table(rows, path, FRONT_COLUMNS)


def is_front_table(outdir: str | os.PathLike) -> bool:
    """True when ``OUTDIR/results.csv`` is a front comparison's table (its header)."""
    path = Path(outdir) / "results.csv"
    try:
        if not path.is_file():  # a FIFO or device would block or never end
            return False
        with open(path, encoding="utf-8") as fh:
            head = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return "hypervolume" in head and "n_points" in head


def read_front_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a front comparison's ``results.csv`` back with typed values."""
    return read_typed_csv(path, FRONT_COLUMNS,
                          ("instance", "profile", "repeat", "status", "hypervolume"),
                          _FLOAT_COLS, _INT_COLS, ("all_verified",), "front comparison table")


# ---------------------------------------------------------------------------------- compare
@dataclass
class FrontSummary:
    """What :func:`compare_fronts` did (see :class:`rtopt.outputs.compare.CompareSummary`)."""

    rows: list[dict[str, Any]]
    errors: list[str]
    outdir: Path
    report_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _methods(names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    if not names:
        return list(METHODS), []
    out, errors = [], []
    for n in names:
        n = n.strip()
        if n in METHODS:
            if n not in out:
                out.append(n)
        elif n:
            errors.append(f"--solver: unknown front method {n!r}{did_you_mean_hint(n, list(METHODS))}"
                          f" (with --pareto: {', '.join(METHODS)})")
    return out, errors


def compare_fronts(instances: Sequence[str | os.PathLike], objectives: str, outdir: str | os.PathLike,
                   methods: Sequence[str] | None = None, *, repeat: int = 1, workers: int = 1,
                   time_limit_s: float | None = None, pop_size: int = 60, generations: int = 60,
                   seed: int = 0, options: dict[str, Any] | None = None,
                   progress: Callable[[int, int, str], None] | None = None, report: bool = True,
                   isolate: bool | None = None, resume: bool = False,
                   overwrite: bool = False) -> FrontSummary:
    """Run every front method on every instance and write the comparison folder.

    Parameters
    ----------
    instances : instance files or folders (their ``*.toml``)
    objectives : str
        Two or three objectives, ``"a,b[,c]"`` (:func:`rtopt.decisions.pareto.parse_objectives`).  An
        instance to which one does not apply (an ``oar:NAME`` it lacks, ``nk_gain`` without NK)
        gets rows with status ``not_applicable`` and a one-line message.
    methods : names from :data:`METHODS` (default: all)
    repeat : int
        Runs per (instance, heuristic method), seed ``seed + r``; ``exact`` runs once.
    time_limit_s : float, optional
        Per run (default :data:`DEFAULT_TIME_LIMIT_S`): the exact front's scoring stops there
        (status ``partial``); NSGA stops at the first generation past it.
    pop_size, generations : int
        NSGA budget.
    options : dict, optional
        Exhaustive-space options of the exact front (``nk_day_step``, ``continuous_step_gy``...).

    The other parameters are those of :func:`rtopt.outputs.compare.compare`.
    """

    if repeat < 1:
        raise RtoptError(f"--repeat must be >= 1 (got {repeat})")
    if workers < 1:
        raise RtoptError(f"--workers must be >= 1 (got {workers})")
    if time_limit_s is not None and not time_limit_s > 0:
        raise RtoptError(f"--time-limit must be > 0 s (got {time_limit_s})")
    if resume and overwrite:
        raise RtoptError("--resume and --overwrite exclude each other")
    names = [s.strip() for s in objectives.split(",") if s.strip()]
    if not 2 <= len(names) <= 3:
        raise RtoptError(f"--pareto: give two or three objectives separated by commas, got "
                         f"{len(names)} ({','.join(names) or 'none'})")
    objectives = ",".join(names)
    files, errors = expand_instances(instances)
    meths, merr = _methods(methods)
    errors += merr
    if not files or not meths:
        what = "no valid instance" if not files else "no valid front method"
        raise NothingToRun(errors + [f"nothing to compare: {what}"])
    out = make_output_folder(outdir)
    limit = float(time_limit_s) if time_limit_s is not None else DEFAULT_TIME_LIMIT_S
    opts = tuple(sorted((options or {}).items()))
    keys = unique_names(instance_names(files))
    tasks = [FrontTask(k, str(f.resolve()), m, r, seed + r, limit, objectives, pop_size,
                       generations, opts)
             for k, f in zip(keys, files) for m in meths
             for r in range(1 if m == "exact" else repeat)]
    digests = {str(f.resolve()): sha256(f) for f in files}
    with FolderLock(out, "rtopt compare"):
        return _run_locked(tasks, keys, files, errors, out, repeat, workers, progress, report,
                           isolate, resume, overwrite, digests)


def _reusable(out: Path, tasks: list[FrontTask], digests: dict[str, str]) -> dict[int, Any]:
    if not is_front_table(out):
        return {}
    try:
        old = read_front_table(out / "results.csv")
    except InstanceError:
        return {}
    by_key = {(r["instance"], r["profile"], r["repeat"]): r for r in old}
    keep: dict[int, Any] = {}
    for i, t in enumerate(tasks):
        r = by_key.get((t.instance, t.profile_key, t.repeat))
        if r is None or r["instance_path"] != t.instance_path or r["plan_file"] != t.plan_file:
            continue
        try:
            d = load_json(out / t.plan_file)
        except InputFileError:
            continue
        c = d.get("compare") if isinstance(d, dict) else None
        if not isinstance(c, dict) or c.get("instance_sha256") != digests[t.instance_path] \
                or c.get("settings") != json.loads(json.dumps(t.settings(), default=str)):
            continue
        keep[i] = (r, d)
    return keep


def _run_locked(tasks: list[FrontTask], keys: list[str], files: list[Path], errors: list[str],
                out: Path, repeat: int, workers: int,
                progress: Callable[[int, int, str], None] | None, report: bool,
                isolate: bool | None, resume: bool, overwrite: bool,
                digests: dict[str, str]) -> FrontSummary:
    for sub in ("plans", "figures"):
        if (out / sub).is_symlink() or ((out / sub).exists() and not (out / sub).is_dir()):
            raise RtoptError(f"{out / sub}: is a symbolic link or not a folder; "
                             f"rtopt writes only inside {out}")
    prepare_folder(out, resume, overwrite)
    (out / "plans").mkdir(exist_ok=True)
    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    fronts: list[dict[str, Any] | None] = [None] * len(tasks)
    if resume:
        for i, (r, d) in _reusable(out, tasks, digests).items():
            rows[i], fronts[i] = _row(tasks[i], d), d
        wanted = {Path(t.plan_file).name for t in tasks}
        for p in (out / "plans").glob("*.json"):
            if p.name not in wanted:
                p.unlink()
    todo = [i for i, r in enumerate(rows) if r is None]
    for name in ("report.html", "report.md"):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    t0 = tasks[0]
    sysinfo = system_info()
    sysinfo["run"] = {
        "mode": "pareto", "objectives": t0.objectives,
        "instances": [{"name": k, "path": str(f.resolve())} for k, f in zip(keys, files)],
        "methods": [{"name": m, "library": METHODS[m][0], "description": METHODS[m][1]}
                    for m in dict.fromkeys(t.profile_key for t in tasks)],
        "repeat": repeat, "workers": workers, "time_limit_s": t0.time_limit_s,
        "pop_size": t0.pop_size, "generations": t0.generations, "seed": t0.seed - t0.repeat,
        "options": dict(t0.options), "input_errors": errors,
        "resumed_runs": len(tasks) - len(todo),
    }
    write_atomic(out / "system.json", json.dumps(sysinfo, indent=2, default=str) + "\n")

    def write_rows() -> None:
        done = [i for i, r in enumerate(rows) if r is not None]
        table = [dict(rows[i]) for i in done]  # type: ignore[arg-type]
        front_indicators(table, [fronts[i] for i in done])
        write_front_table(table, out / "results.csv")
        n, sha = results_digest(out / "results.csv")
        write_manifest(out, planned_runs=len(tasks), finished_runs=n, results_rows=n,
                       results_sha256=sha, complete=n == len(tasks))

    def record(j: int, d: dict[str, Any]) -> None:
        t = tasks[todo[j]]
        d = dict(d)
        d["compare"] = {"instance": t.instance, "instance_path": t.instance_path,
                        "instance_sha256": digests[t.instance_path], "method": t.profile_key,
                        "repeat": t.repeat,
                        "settings": json.loads(json.dumps(t.settings(), default=str))}
        write_atomic(out / t.plan_file, json.dumps(d, indent=1, default=str) + "\n")
        rows[todo[j]], fronts[todo[j]] = _row(t, d), d
        write_rows()

    write_rows()
    try:
        run_all([tasks[i] for i in todo], workers,
                 workers > 1 if isolate is None else bool(isolate), progress, fn=run_front,
                 on_result=record, done_before=len(tasks) - len(todo), total=len(tasks))
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Stopped) else int(signal.SIGINT)
        with contextlib.suppress(OSError):
            write_manifest(out, interrupted=signal.Signals(signum).name)
        raise CompareInterrupted(signum, sum(r is not None for r in rows), len(tasks),
                                 out) from None
    write_manifest(out, interrupted=None)
    final = read_front_table(out / "results.csv")
    notes = []
    seen = set()
    for r in final:  # one line per instance an objective does not apply to
        if r["status"] == "not_applicable" and r["instance"] not in seen:
            seen.add(r["instance"])
            notes.append(f"{r['instance']}: not applicable: {r['message']}")
    summary = FrontSummary(final, errors, out, notes=notes)
    if report:
        if progress is not None:
            progress(len(tasks), len(tasks), "writing the report")
        try:
            summary.report_errors = render(out)
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, Stopped) else int(signal.SIGINT)
            raise CompareInterrupted(signum, len(final), len(tasks), out) from None
    return summary


# ---------------------------------------------------------------------------------- report
_COLOURS = {"exact": "#264f80", "nsga": "#c0392b"}
_MARKS = {"exact": "o", "nsga": "x"}


def _front_figure(name: str, runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> bytes:
    """Every method's front of one instance on the same axes (pairwise panels for three)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    objs = next(d["objectives"] for _, d in runs if d.get("objectives"))
    pairs = [(0, 1)] if len(objs) == 2 else [(0, 1), (0, 2), (1, 2)]
    # one panel per row (see rtopt.outputs.pareto_report._figure): readable inside the HTML
    fig = Figure(figsize=(8.0, 5.2 * len(pairs)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(pairs), 1, squeeze=False)[:, 0]
    extra = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for ax, (a, b) in zip(axes, pairs):
        for k, (r, d) in enumerate(runs):
            pts = d.get("points") or []
            if not pts:
                continue
            x = [p["objectives"][objs[a]["name"]] for p in pts]
            y = [p["objectives"][objs[b]["name"]] for p in pts]
            m = r["profile"]
            label = m + (f" r{r['repeat']}" if r["repeat"] else "") + f" ({r['status']}, " \
                f"{len(pts)} points)"
            colour = _COLOURS.get(m, extra[k % len(extra)])
            if r["repeat"] and m in _COLOURS:
                colour = extra[(r["repeat"] - 1) % len(extra)]
            if m == "exact" and len(objs) == 2:
                order = sorted(range(len(x)), key=lambda i: x[i])
                ax.plot([x[i] for i in order], [y[i] for i in order], "o-", ms=5, lw=1,
                        color=colour, alpha=0.8, label=label, zorder=2)
            else:
                mark = _MARKS.get(m, "^") if not r["repeat"] else \
                    ("+", "1", "2", "3", "4")[(r["repeat"] - 1) % 5]
                ax.plot(x, y, mark, ms=7 if m != "exact" else 5, mew=1.6,
                        color=colour, alpha=0.9, label=label, zorder=3 + k,
                        mfc="none" if m == "exact" else None)
            if d.get("knee") is not None:
                kp = pts[d["knee"]]
                ax.plot([kp["objectives"][objs[a]["name"]]], [kp["objectives"][objs[b]["name"]]],
                        "*", ms=15, color=colour, mec="k", zorder=10)
        ax.set_xlabel(objs[a]["label"] + (" (max)" if objs[a]["sense"] == "max" else " (min)"))
        ax.set_ylabel(objs[b]["label"] + (" (max)" if objs[b]["sense"] == "max" else " (min)"))
        from matplotlib.ticker import MaxNLocator

        for axis, k in ((ax.xaxis, a), (ax.yaxis, b)):   # counts and days: whole-number ticks
            if objs[k]["name"] in ("n_fractions", "overall_days"):
                axis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
    axes[0].plot([], [], "*", ms=12, color="#999999", mec="k", label="knee of each front")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{name}: Pareto fronts of every method", fontsize=11)
    return png_bytes(fig)


def _css() -> str:
    """The comparison report's stylesheet (from its template), so both reports look alike."""
    try:
        text = (TEMPLATES / "report.html.j2").read_text(encoding="utf-8")
    except OSError:
        return ""
    m = re.search(r"<style>(.*?)</style>", text, re.S)
    return m.group(1).strip() if m else ""


def _build(outdir: Path) -> tuple[dict[str, Any], dict[str, bytes], list[str]]:
    table = read_front_table(outdir / "results.csv")
    sysinfo = load_json(outdir / "system.json") or {}
    run = sysinfo.get("run", {})
    problems: list[str] = []
    figures: dict[str, bytes] = {}
    fronts: list[dict[str, Any] | None] = []
    for k, r in enumerate(table):
        d = None
        if r["plan_file"]:
            where = inside(outdir, r["plan_file"])
            if where is None:
                problems.append(f"{outdir / 'results.csv'}: line {k + 2}: plan_file "
                                f"{r['plan_file']!r} is outside {outdir}: not read")
            else:
                d = load_json(where)
                if d is None:
                    problems.append(f"{outdir / r['plan_file']}: missing or not JSON (front of "
                                    f"{r['instance']} / {r['profile']} not drawn)")
        fronts.append(d)
    instances = []
    for name in dict.fromkeys(r["instance"] for r in table):
        idx = [k for k, r in enumerate(table) if r["instance"] == name]
        rows = []
        for k in idx:
            r = table[k]
            rows.append({
                "profile": r["profile"], "backend": r["backend"], "repeat": r["repeat"],
                "seed": r["seed"], "status": r["status"], "termination": r["termination"],
                "n_points": r["n_points"] if r["status"] in FRONT_STATUSES else "",
                "hypervolume": fmt_number(r["hypervolume"], 5), "hv_ratio": fmt_number(r["hv_ratio"], 5),
                "gd_mean": fmt_number(r["gd_mean"], 3), "gd_max": fmt_number(r["gd_max"], 3),
                "igd": fmt_number(r["igd"], 3),
                "verified": ("all" if r["all_verified"] else "") + (
                    f" ({r['dropped_points']} dropped)" if r["dropped_points"] else ""),
                "wall_time": fmt_seconds(r["wall_time_s"]), "knee_plan": r["knee_plan"],
                "message": r["message"],
                "solver": " ".join(x for x in (r["solver_name"], r["solver_version"]) if x)})
        runs = [(table[k], fronts[k]) for k in idx
                if fronts[k] and fronts[k].get("points") and table[k]["status"] in FRONT_STATUSES]
        figure = None
        if runs:
            fname = f"fronts-{anchor(name)[5:]}.png"
            try:
                figures[fname] = _front_figure(name, runs)
                figure = fname
            except Exception as e:  # a figure must never cost the whole report
                problems.append(f"{name}: fronts not drawn: {type(e).__name__}: {e}")
        na = next((table[k]["message"] for k in idx if table[k]["status"] == "not_applicable"),
                  "")
        instances.append({"name": name, "anchor": anchor(name), "rows": rows,
                          "path": table[idx[0]]["instance_path"], "figure": figure,
                          "not_applicable": na,
                          "objectives": table[idx[0]]["objectives"]})
    counts: dict[str, int] = {}
    for r in table:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    versions = sysinfo.get("versions", {})
    model = {
        "title": "rtopt comparison of Pareto-front methods",
        "date": utc_date(sysinfo.get("date", "")),
        "objectives": run.get("objectives") or (table[0]["objectives"] if table else ""),
        "n_instances": len(instances), "n_runs": len(table),
        "methods": run.get("methods", []), "instances": instances,
        "status_counts": list(counts.items()),
        "run": {"repeat": run.get("repeat", 1), "workers": run.get("workers", ""),
                "time_limit_s": run.get("time_limit_s"), "pop_size": run.get("pop_size"),
                "generations": run.get("generations"), "seed": run.get("seed"),
                "options": run.get("options", {})},
        "hv_reference": f"{HV_REFERENCE:g}",
        "input_errors": run.get("input_errors", []),
        "system": {"versions": versions,
                   "rows": [("platform", sysinfo.get("platform", "")),
                            ("CPU", f"{sysinfo.get('cpu_model', '')} "
                                    f"({sysinfo.get('cpu_count', '?')} logical CPUs)"),
                            ("git revision", sysinfo.get("git_revision", "")
                             or "not a git checkout"),
                            ("date", utc_date(sysinfo.get("date", "")))]},
        "css": _css(),
    }
    model["problems"] = list(problems)
    return model, figures, problems


def render(outdir: str | os.PathLike) -> list[str]:
    """Render ``report.html``, ``report.md`` and ``figures/fronts-*.png`` of a front comparison
    from ``results.csv``, ``plans/*.json`` and ``system.json`` (never runs a method)."""
    from markupsafe import Markup  # jinja2's: loaded with the templates, not at start-up

    out = Path(outdir)
    rows, sha = results_digest(out / "results.csv")
    model, figures, problems = _build(out)
    if results_digest(out / "results.csv") != (rows, sha):
        problems.append(f"{out / 'results.csv'}: changed while the report was being built; "
                        f"run 'rtopt report {out}' again")
        model["problems"] = list(problems)
    model["source"] = {"rows": rows, "sha256": sha, "short": sha[:12]}
    (out / "figures").mkdir(exist_ok=True)
    for fname, data in figures.items():
        write_atomic(out / "figures" / fname, data)
    for old in (out / "figures").glob("fronts-*.png"):
        if old.name not in figures:
            old.unlink()
    uris = {k: "data:image/png;base64," + base64.b64encode(v).decode("ascii")
            for k, v in figures.items()}
    html_model = {**model, "css": Markup(model["css"])}
    html = template_env(True).get_template("pareto_compare.html.j2").render(
        **html_model, img=lambda name: uris.get(name, ""))
    md = template_env(False).get_template("pareto_compare.md.j2").render(
        **model, img=lambda name: MdSafe(f"figures/{name}"))
    write_atomic(out / "report.md", md)
    write_atomic(out / "report.html", html)
    write_manifest(out, report_results_rows=rows, report_results_sha256=sha)
    return problems


def summary_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The results table as aligned text lines (what ``rtopt compare --pareto`` prints)."""
    head = ("instance", "method", "status", "points", "hypervolume", "hv_ratio", "gd_mean",
            "gd_max", "igd", "verified", "time_s")
    body = []
    for r in rows:
        front = r["status"] in FRONT_STATUSES
        body.append((r["instance"], r["profile"] + (f" r{r['repeat']}" if r["repeat"] else ""),
                     r["status"], str(r["n_points"]) if front else "",
                     fmt_number(r["hypervolume"], 5), fmt_number(r["hv_ratio"], 5), fmt_number(r["gd_mean"], 3),
                     fmt_number(r["gd_max"], 3), fmt_number(r["igd"], 3),
                     ("all" if r["all_verified"] else "") if front else "",
                     f"{r['wall_time_s']:.1f}" if r["wall_time_s"] is not None else ""))
    widths = [max(len(h), *(len(b[k]) for b in body)) if body else len(h)
              for k, h in enumerate(head)]
    left = {0, 1, 2, 9}
    fmt = lambda cells: "  ".join(c.ljust(w) if k in left else c.rjust(w)  # noqa: E731
                                  for k, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [fmt(head)] + [fmt(b) for b in body]
