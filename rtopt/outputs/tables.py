"""The files of a results folder: its CSV tables (typed when read back), their digests and
``manifest.json``.  Shared by the solver comparison (:mod:`rtopt.outputs.compare`), its report
(:mod:`rtopt.outputs.report`) and the front comparison (:mod:`rtopt.outputs.compare_pareto`)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from rtopt.common.errors import InstanceError
from rtopt.common.fileio import InputFileError, load_json, read_input, read_text, write_atomic

__all__ = ["FEASIBLE_STATUSES", "COLUMNS", "RESULTS_MAX_BYTES", "write_table", "read_table", "read_typed_csv",
           "sha256", "results_digest", "read_manifest", "write_manifest"]


FEASIBLE_STATUSES = ("optimal", "feasible")

RESULTS_MAX_BYTES = 256 * 1024 * 1024
"""Largest results table or plan file read back from an output folder (bytes)."""


COLUMNS = (
    "instance", "profile", "backend", "repeat", "seed", "time_limit_s",
    "status", "termination", "solution_status",
    "objective_name", "objective", "claimed_objective", "bound", "gap", "gap_to_best", "best",
    "worst_slack", "wall_time_s", "solver_name", "solver_version",
    "plan", "instance_path", "plan_file", "profile_file", "message",
)
"""Columns of ``results.csv``.

``instance`` is the instance's ``name`` field (made unique), ``instance_path`` its file's
absolute path; ``profile_file`` the solver profile file the run used (empty for a bare back-end
name);
``objective`` is the verified objective (re-simulated by :meth:`rtopt.problem.problem.Problem.verify`),
``claimed_objective`` the back-end's own claim, ``gap`` the relative gap between the back-end's
bound and the verified objective, ``gap_to_best`` the relative shortfall from the best verified
objective any run reached on the same instance (0 for the best; every objective is maximised),
``best`` marks the runs that reach it, ``worst_slack`` the smallest constraint slack scaled by
``max(1, |limit|)`` (negative when a constraint is violated)."""


_FLOAT_COLS = ("time_limit_s", "objective", "claimed_objective", "bound", "gap", "gap_to_best",
               "worst_slack", "wall_time_s")


_INT_COLS = ("repeat", "seed")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest exact form: reading it back gives the same float
    return str(v)


def write_table(rows: Sequence[dict[str, Any]], path: str | os.PathLike,
                columns: Sequence[str] = COLUMNS) -> None:
    """Write rows as CSV with ``columns`` (default :data:`COLUMNS`), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    write_atomic(path, buf.getvalue())


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read ``results.csv`` back with typed values (floats, ints, bools; empty -> None).

    Raises
    ------
    rtopt.common.errors.InstanceError
        The file is missing or is not a results table (one line per problem).
    """
    return read_typed_csv(path, COLUMNS, ("instance", "profile", "repeat", "status", "objective"),
                          _FLOAT_COLS, _INT_COLS, ("best",), "results table")


def read_typed_csv(path: str | os.PathLike, columns: Sequence[str], required: Sequence[str],
                   floats: Sequence[str], ints: Sequence[str], bools: Sequence[str],
                   what: str) -> list[dict[str, Any]]:
    """Read a comparison CSV with typed cells (floats and ints, empty -> None / 0; bools from
    ``"true"``); a missing file or a missing ``required`` column is an :class:`InstanceError`
    naming the file (``what`` says what the table should have been)."""
    src, p = str(path), Path(path)
    if not p.is_file():
        raise InstanceError(src, [("", "file not found (not a comparison output folder?)")])
    text = read_text(p, limit=RESULTS_MAX_BYTES, what=what)
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _typed_rows(reader, src, columns, required, floats, ints, bools, what)
    except csv.Error as e:  # e.g. a field larger than csv.field_size_limit()
        raise InstanceError(src, [(f"line {reader.line_num}", f"not a {what}: {e}")]) from None


def _typed_rows(reader: csv.DictReader, src: str, columns: Sequence[str],
                required: Sequence[str], floats: Sequence[str], ints: Sequence[str],
                bools: Sequence[str], what: str) -> list[dict[str, Any]]:
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise InstanceError(src, [("", f"not a {what} (missing column(s) "
                                       f"{', '.join(missing)})")])
    rows = []
    for n, raw in enumerate(reader, start=2):
        r: dict[str, Any] = {k: raw.get(k, "") or "" for k in columns}
        try:
            for k in floats:
                r[k] = float(r[k]) if r[k] != "" else None
            for k in ints:
                r[k] = int(r[k]) if r[k] != "" else 0
        except ValueError as e:
            raise InstanceError(src, [(f"line {n}", str(e))]) from None
        for k in bools:
            r[k] = r[k] == "true"
        rows.append(r)
    return rows


def sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes (empty string if it cannot be read)."""
    try:
        return hashlib.sha256(read_input(path, limit=RESULTS_MAX_BYTES)).hexdigest()
    except InputFileError:
        return ""


def results_digest(path: str | os.PathLike) -> tuple[int, str]:
    """``(rows, sha256)`` of a ``results.csv`` (``(0, "")`` if it does not exist)."""
    try:
        data = read_input(path, limit=RESULTS_MAX_BYTES)
    except InputFileError:
        return 0, ""
    try:
        records = sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8", "replace"))))
    except csv.Error:
        records = 0
    return max(0, records - 1), hashlib.sha256(data).hexdigest()


def read_manifest(outdir: str | os.PathLike) -> dict[str, Any]:
    """``manifest.json`` of a comparison folder (``{}`` if missing or unreadable)."""
    try:
        d = load_json(Path(outdir) / "manifest.json")
    except InputFileError:
        return {}
    return d if isinstance(d, dict) else {}


def write_manifest(outdir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``manifest.json`` (atomically) and return it."""
    m = read_manifest(outdir)
    m.update(fields)
    write_atomic(Path(outdir) / "manifest.json", json.dumps(m, indent=2, sort_keys=True) + "\n")
    return m
