"""Solver profiles: ``solvers/*.toml`` files naming a back-end and its options.

A profile is a TOML file::

    backend = "scipy_de"            # a name from rtopt.backends.BACKENDS
    description = "differential evolution with integrality"
    time_limit_s = 60
    rel_gap = 1e-4
    threads = 1
    seed = 0
    [options]                       # free table passed to the back-end
    popsize = 30

The profile's name is the file name without ``.toml``.  Profiles are looked up in
``./solvers`` (the working directory), then in the ``solvers/`` folder of the rtopt checkout,
then in ``$RTOPT_SOLVERS`` (a folder); a bare back-end name is a profile with default options.
A profile in ``./solvers`` therefore replaces a shipped one of the same name: every run records
the profile file it used (``Profile.path``; ``profile_file`` in ``results.csv`` and in the plan
files' ``extras``), and ``rtopt solvers`` shows each profile's file and what it shadows.

Options that make a solver write files are refused: the ``[options]`` table (at any depth, so
also the raw ``[options.highs]``, ``[options.scip]`` and ``solver_options`` tables passed to
HiGHS, SCIP and cvxpy's solvers) may not name a file, path or folder (e.g. HiGHS
``log_file``, ``solution_file``, ``write_model_to_file``; SCIP ``visual/vbcfilename``; SCS
``write_data_filename``; any key containing ``file``, ``path``, ``dir``, ``folder`` or
``vbc``, and a text value for a key containing ``log``, ``out``, ``write``, ``save`` or
``dump``).  A profile you trust can allow them with ``allow_file_options = true``.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtopt.backends import BACKENDS
from rtopt.backends.base import SolverOptions
from rtopt.common.errors import InstanceError, RtoptError

__all__ = ["Profile", "load_profile", "list_profiles", "resolve_profile", "ProfileError",
           "profile_dirs", "file_options", "profile_origin", "shadowed"]


class ProfileError(InstanceError):
    """A solver profile file is invalid (same one-line-per-problem format as instances)."""


class _ProfileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str
    description: str = ""
    time_limit_s: float = Field(60.0, gt=0)
    rel_gap: float = Field(1e-4, ge=0)
    threads: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    allow_file_options: bool = False
    options: dict[str, Any] = Field(default_factory=dict)


_FILE_KEY = re.compile(r"file|path|folder|vbc|dir(?!ect)|prefix|basename", re.IGNORECASE)
"""Option names that take (or switch on writing to) a file or folder: HiGHS ``log_file``,
``solution_file``, ``write_model_file``, ``write_model_to_file``, ``write_solution_to_file``,
``read_basis_file``...; SCIP ``visual/vbcfilename``, ``visual/bakfilename``...; SCS
``write_data_filename``, ``log_csv_filename``; Gurobi ``LogFile``, ``ResultFile``,
``NodefileDir``; SCIP ``concurrent/paramsetprefix`` (a path prefix); ``dir(?!ect)`` spares
``direction``.  Any text value that looks like a path (contains ``/`` or ``\\``, or starts with
``~`` or ``.``) is refused too, whatever its key."""


def _looks_like_path(v: Any) -> bool:
    return isinstance(v, str) and ("/" in v or "\\" in v or v.startswith(("~", ".")))

_WRITE_KEY = re.compile(r"log|out|write|save|dump", re.IGNORECASE)
"""Option names that take a file name when their value is text (``log = "x.txt"``); their
boolean and numeric values (``log_to_console = false``, ``output_flag``) are harmless."""


def file_options(options: Any, prefix: str = "options") -> list[tuple[str, str]]:
    """``(field.path, message)`` for every option in ``options`` (nested tables included)
    that would make a solver read or write a file (see the module docstring)."""
    out: list[tuple[str, str]] = []
    if not isinstance(options, dict):
        return out
    for k, v in options.items():
        where = f"{prefix}.{k}"
        if isinstance(v, dict):
            out.extend(file_options(v, where))
            continue
        if isinstance(v, list):
            bad = any(_looks_like_path(x) for x in v)
        else:
            bad = _looks_like_path(v)
        if bad or _FILE_KEY.search(str(k)) or (_WRITE_KEY.search(str(k)) and isinstance(v, str)):
            out.append((where, "names a file or folder for the solver to write or read; "
                               "refused (set allow_file_options = true in the profile if "
                               "you trust it)"))
    return out


@dataclass(frozen=True)
class Profile:
    """A named back-end configuration."""

    name: str
    backend: str
    description: str = ""
    options: SolverOptions = field(default_factory=SolverOptions)
    path: str | None = None

    def with_overrides(self, time_limit_s: float | None = None, seed: int | None = None,
                       options: Mapping[str, Any] | None = None) -> "Profile":
        """Copy with the CLI's ``--time-limit`` / ``--seed`` applied and back-end ``options``
        merged over the profile's."""
        o = self.options
        opts = SolverOptions(time_limit_s=time_limit_s if time_limit_s is not None else o.time_limit_s,
                             rel_gap=o.rel_gap, threads=o.threads,
                             seed=seed if seed is not None else o.seed,
                             options={**o.options, **(options or {})})
        return Profile(self.name, self.backend, self.description, opts, self.path)


def shipped_dir() -> Path | None:
    """The profiles shipped with rtopt: the checkout's ``solvers/`` folder, or, in an installed
    package, the package data folder ``rtopt/_solvers`` (pyproject maps one to the other)."""
    for d in (Path(__file__).resolve().parents[2] / "solvers",
              Path(__file__).resolve().parents[1] / "_solvers"):
        if d.is_dir():
            return d
    return None


def profile_dirs() -> list[Path]:
    """Folders searched for profiles, in order: the shipped profiles (:func:`shipped_dir`),
    ``$RTOPT_SOLVERS``, then the working folder's ``solvers/``.  A profile file in the working
    folder therefore never replaces a shipped profile of the same name (``rtopt solvers`` and
    comparison reports say it is not used); give its path to use it."""
    shipped = shipped_dir()
    dirs = [] if shipped is None else [shipped]
    env = os.environ.get("RTOPT_SOLVERS")
    if env:
        dirs.append(Path(env))
    dirs.append(Path.cwd() / "solvers")
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [x.resolve() for x in out]:
            out.append(d)
    return out


def load_profile(path: str | Path, *, explicit: bool = True) -> Profile:
    """Read and validate one profile file (raises :class:`ProfileError`).

    ``explicit``: the user named this file by its path (``--solver path/X.toml``).  Only such
    a profile, or a shipped one, may set ``allow_file_options = true``: a file dropped into
    ``./solvers`` or ``$RTOPT_SOLVERS`` and picked up by name may not switch the file-option
    check off for itself.
    """
    from rtopt.common.fileio import InputFileError, load_toml

    p = Path(path)
    src = str(path)
    try:
        data = load_toml(p, what="solver profile")
    except InputFileError as exc:
        raise ProfileError(exc.source, exc.problems) from None
    try:
        m = _ProfileModel.model_validate(data)
    except ValidationError as e:
        probs = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(err["loc"][-1]), _ProfileModel.model_fields, 1)
                msg = f"unknown key '{err['loc'][-1]}'" + (f"; did you mean '{close[0]}'?" if close else "")
            elif err["type"] == "missing":
                msg = "required"
            else:
                msg = err["msg"]
            probs.append((loc, msg))
        raise ProfileError(src, probs) from None
    if m.backend not in BACKENDS:
        close = difflib.get_close_matches(m.backend, BACKENDS, 1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ProfileError(src, [("backend", f"unknown backend '{m.backend}'{hint} "
                                             f"(one of {', '.join(BACKENDS)})")])
    trusted = explicit or profile_origin(str(p)) == "shipped"
    if m.allow_file_options and not trusted:
        raise ProfileError(src, [("allow_file_options", (
            f"honoured only for shipped profiles and for a profile given by its path (this "
            f"one was found by name in the {profile_origin(str(p))}); give --solver "
            f"{p} to trust it")) ])
    if not m.allow_file_options:
        bad = file_options(m.options)
        if bad:
            raise ProfileError(src, bad)
    opts = SolverOptions(m.time_limit_s, m.rel_gap, m.threads, m.seed, dict(m.options))
    return Profile(p.stem, m.backend, m.description, opts, str(p.resolve()))


def profile_origin(path: str | None) -> str:
    """Where a profile file comes from: ``shipped``, ``working folder``, ``$RTOPT_SOLVERS``
    or ``file`` (a path given by hand); ``back-end defaults`` for ``None``."""
    if not path:
        return "back-end defaults"
    d = Path(path).resolve().parent
    shipped = shipped_dir()
    if shipped is not None and d == shipped.resolve():
        return "shipped"
    if d == (Path.cwd() / "solvers").resolve():
        return "working folder"
    env = os.environ.get("RTOPT_SOLVERS")
    if env and d == Path(env).resolve():
        return "$RTOPT_SOLVERS"
    return "file"


def shadowed(profile: Profile) -> list[str]:
    """Profile files of the same name that ``profile`` hides (later in :func:`profile_dirs`)."""
    if not profile.path:
        return []
    mine = Path(profile.path).resolve()
    out = []
    for d in profile_dirs():
        f = (d / f"{profile.name}.toml").resolve()
        if f.is_file() and f != mine:
            out.append(str(f))
    return out


def list_profiles() -> list[Profile | ProfileError]:
    """Every profile file found in :func:`profile_dirs` (invalid ones as their error)."""
    seen: dict[str, Profile | ProfileError] = {}
    for d in profile_dirs():
        for f in sorted(d.glob("*.toml")):
            if f.stem in seen:
                continue
            try:
                seen[f.stem] = load_profile(f, explicit=False)
            except ProfileError as e:
                seen[f.stem] = e
    return list(seen.values())


def resolve_profile(name_or_path: str) -> Profile:
    """A profile by file path, profile name, or back-end name (default options)."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_profile(name_or_path)
    for d in profile_dirs():
        f = d / f"{name_or_path}.toml"
        if f.exists():
            return load_profile(f, explicit=False)
    if name_or_path in BACKENDS:
        return Profile(name_or_path, name_or_path, "back-end defaults")
    names = sorted({p.name for p in list_profiles() if isinstance(p, Profile)} | set(BACKENDS))
    close = difflib.get_close_matches(name_or_path, names, 1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise RtoptError(f"{name_or_path}: unknown solver profile or backend{hint} "
                     f"(known: {', '.join(names)})")
