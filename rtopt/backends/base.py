"""The solver protocol every back-end implements, and what a back-end hands back.

A back-end is a class with capability flags as class attributes, ``available()`` that answers
whether its libraries import (tried once per process in a child process, lazily: only when the
back-end is listed or used, never at CLI start; nothing heavy is imported here),
``check(problem)`` that declines a problem it cannot
handle (with the reason), and ``solve(problem, options)`` returning a :class:`BackendOutput`.
Back-ends never report feasibility themselves: :func:`rtopt.planning.solve.solve` re-simulates and
re-checks every plan they return (:meth:`rtopt.problem.problem.Problem.verify`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from rtopt.problem.problem import Plan, Problem

__all__ = ["Backend", "BackendOutput", "SolverOptions", "Termination", "module_available",
           "module_import_error", "check_imports", "package_version"]


class Termination:
    """Why a back-end stopped (kept apart from how good the plan is)."""

    OPTIMAL = "optimal"              # proved optimal over the back-end's formulation
    COMPLETED = "completed"          # heuristic finished its budget/iterations normally
    TIME_LIMIT = "time_limit"
    ITERATION_LIMIT = "iteration_limit"
    INFEASIBLE = "infeasible"        # the back-end proved its formulation infeasible
    NO_SOLUTION = "no_solution"      # stopped without a candidate plan
    NUMERICAL = "numerical_error"
    ERROR = "error"
    NOT_RUN = "not_run"              # unavailable or declined: the back-end never started


@dataclass(frozen=True)
class SolverOptions:
    """Common options (from a solver profile or the CLI) plus a free ``options`` table."""

    time_limit_s: float = 60.0
    rel_gap: float = 1e-4
    threads: int = 1
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendOutput:
    """What a back-end returns: candidate plans, its own claims, and why it stopped.

    ``plans`` is ordered best first by the back-end's own judgement; :func:`rtopt.planning.solve.solve`
    verifies them in order and reports the best verified feasible one.
    """

    plans: tuple[Plan, ...]
    termination: str
    claimed_objective: float | None = None
    bound: float | None = None
    message: str = ""
    solver_name: str = ""
    solver_version: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


class Backend:
    """Base class of solver back-ends (see module docstring)."""

    name: ClassVar[str] = "base"
    description: ClassVar[str] = ""
    #: which objectives the back-end optimises
    objectives: ClassVar[tuple[str, ...]] = ()
    #: optimises NK infusion decisions for objectives that depend on them (``check`` declines
    #: such instances otherwise; an ``[nk]`` table with a tumour-BED objective is accepted)
    supports_nk: ClassVar[bool] = False
    #: handles per-fraction (non-uniform) doses
    supports_per_fraction: ClassVar[bool] = False
    #: handles continuous dose (``dose_step_gy = 0``)
    supports_continuous_dose: ClassVar[bool] = False
    #: handles objective costs per fraction / per overall day
    supports_costs: ClassVar[bool] = False
    #: honours ``[prescription] min_local_control`` / ``local_control_vs`` (local control from
    #: the simulator, checked on every candidate)
    supports_outcome_limits: ClassVar[bool] = False
    #: simulates the tumour at ``tumour_dose_ratio`` x the prescribed dose
    supports_tumour_dose_ratio: ClassVar[bool] = False
    #: handles DVH and NTCP limits of ``[dvh_plan]`` organs (it scores schedules with
    #: :meth:`Problem.evaluate`, where they are computed); others decline such instances
    supports_dvh: ClassVar[bool] = False
    #: proves optimality (over its documented formulation) when it terminates normally
    global_optimality: ClassVar[bool] = False
    #: modules needed at run time (found with importlib.util.find_spec, then imported once by
    #: available(), so that a library installed but broken shows as unavailable)
    requires: ClassVar[tuple[str, ...]] = ()
    #: what the back-end guarantees, for `rtopt solvers` and reports
    guarantee: ClassVar[str] = ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the back-end can run here, and the reason if not.

        First whether each required module is installed (``find_spec``), then whether it
        imports: tried once per process in a child process and cached
        (:func:`module_import_error`), so call this only when the back-end is listed or used.
        """
        missing = [m for m in cls.requires if not module_available(m)]
        if missing:
            return False, f"missing Python package(s): {', '.join(missing)}"
        for m in cls.requires:
            why = module_import_error(m)
            if why:
                return False, f"Python package {m} is installed but fails to import: {why}"
        return True, ""

    def check(self, problem: Problem) -> tuple[bool, str]:
        """Whether this back-end can handle ``problem``; the reason if not."""
        unsupported = [k for k in problem.weights if k not in self.objectives]
        if unsupported:
            return False, (f"{self.name} does not optimise {', '.join(unsupported)} "
                           f"(supports {', '.join(self.objectives) or 'nothing'})")
        if getattr(problem, "has_dvh_limits", False) and not self.supports_dvh:
            return False, (f"{self.name}: DVH limits are not in the algebraic model "
                           "(organs given by [dvh_plan] structures; use exhaustive or scipy_de)")
        if problem.nk is not None and problem.needs_simulation and not self.supports_nk:
            return False, f"{self.name} does not model NK infusions"
        if not problem.uniform and not self.supports_per_fraction:
            return False, f"{self.name} handles uniform doses only (instance has uniform_dose = false)"
        if problem.has_costs and not self.supports_costs:
            return False, (f"{self.name} does not model cost_per_fraction / "
                           "cost_per_overall_day")
        if problem.continuous_dose and not self.supports_continuous_dose:
            return False, f"{self.name} needs a dose grid (instance has dose_step_gy = 0)"
        if problem.has_outcome_limits and not self.supports_outcome_limits:
            return False, (f"{self.name} does not model local-control limits "
                           "(prescription.min_local_control / local_control_vs)")
        if (problem.tumour_dose_ratio != 1.0 and problem.needs_simulation
                and not self.supports_tumour_dose_ratio):
            return False, (f"{self.name} does not model a tumour dose other than the prescribed "
                           f"dose (prescription tumour_dose_ratio {problem.tumour_dose_ratio:g})")
        return True, ""

    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """Capability flags as a dict (for listings and reports)."""
        return {"objectives": list(cls.objectives), "nk": cls.supports_nk,
                "per_fraction_doses": cls.supports_per_fraction,
                "continuous_dose": cls.supports_continuous_dose, "costs": cls.supports_costs,
                "outcome_limits": cls.supports_outcome_limits,
                "tumour_dose_ratio": cls.supports_tumour_dose_ratio,
                "dvh_limits": cls.supports_dvh,
                "global_optimality": cls.global_optimality}


def module_available(name: str) -> bool:
    """True if ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


IMPORT_CHECK_TIMEOUT_S = 120.0
"""Bound on one import check (a library whose import hangs is reported, not waited for);
the slowest real import here (cvxpy) takes about 2 s."""

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@functools.cache
def module_import_error(name: str) -> str:
    """``""`` if ``name`` imports, else the first line of why not (tried once per process).

    The import is tried in a child Python process (same interpreter and ``sys.path``), so
    that nothing heavy is imported here and a library that crashes or hangs on import cannot
    take this process with it.  Any failure counts: a native library that is missing or of
    the wrong version often raises ``OSError`` or ``AttributeError``, not ``ImportError``.
    A module already imported here has imported fine.
    """
    if name in sys.modules:
        return ""
    if not _MODULE_NAME.fullmatch(name):
        return f"not a module name: {name!r}"
    code = f"import sys; sys.path[:] = {sys.path!r}; import {name}"
    try:
        cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=IMPORT_CHECK_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"importing it did not finish in {IMPORT_CHECK_TIMEOUT_S:g} s"
    except OSError as e:
        return f"cannot start {sys.executable} to try the import: {e.strerror or e}"
    if cp.returncode == 0:
        return ""
    if cp.returncode < 0:
        return f"importing it kills the process (signal {-cp.returncode})"
    lines = [ln.strip() for ln in cp.stderr.splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit code {cp.returncode}")[:300]


def check_imports(names: Iterable[str]) -> None:
    """Try several imports at once (:func:`module_import_error`, cached), e.g. before a
    listing of every back-end, so that the checks overlap instead of adding up."""
    todo = sorted({n for n in names if module_available(n)})
    if todo:
        with ThreadPoolExecutor(max_workers=len(todo)) as ex:
            list(ex.map(module_import_error, todo))


def package_version(dist: str) -> str:
    """Installed version of a distribution, or ``""``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""
