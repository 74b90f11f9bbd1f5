"""The solver protocol every back-end implements, and what a back-end hands back.

A back-end is a class with capability flags as class attributes, ``available()`` that answers
without importing heavy native libraries, ``check(problem)`` that declines a problem it cannot
handle (with the reason), and ``solve(problem, options)`` returning a :class:`BackendOutput`.
Back-ends never report feasibility themselves: :func:`rtopt.solve.solve` re-simulates and
re-checks every plan they return (:meth:`rtopt.problem.Problem.verify`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rtopt.problem import Plan, Problem

__all__ = ["Backend", "BackendOutput", "SolverOptions", "Termination", "module_available",
           "package_version"]


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

    ``plans`` is ordered best first by the back-end's own judgement; :func:`rtopt.solve.solve`
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
    #: proves optimality (over its documented formulation) when it terminates normally
    global_optimality: ClassVar[bool] = False
    #: modules needed at run time (checked with importlib.util.find_spec, nothing imported)
    requires: ClassVar[tuple[str, ...]] = ()
    #: what the back-end guarantees, for `rtopt solvers` and reports
    guarantee: ClassVar[str] = ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the back-end can run here, and the reason if not (no heavy imports)."""
        missing = [m for m in cls.requires if not module_available(m)]
        if missing:
            return False, f"missing Python package(s): {', '.join(missing)}"
        return True, ""

    def check(self, problem: Problem) -> tuple[bool, str]:
        """Whether this back-end can handle ``problem``; the reason if not."""
        unsupported = [k for k in problem.weights if k not in self.objectives]
        if unsupported:
            return False, (f"{self.name} does not optimise {', '.join(unsupported)} "
                           f"(supports {', '.join(self.objectives) or 'nothing'})")
        if problem.nk is not None and problem.needs_simulation and not self.supports_nk:
            return False, f"{self.name} does not model NK infusions"
        if not problem.uniform and not self.supports_per_fraction:
            return False, f"{self.name} handles uniform doses only (instance has uniform_dose = false)"
        if problem.continuous_dose and not self.supports_continuous_dose:
            return False, f"{self.name} needs a dose grid (instance has dose_step_gy = 0)"
        return True, ""

    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def capabilities(cls) -> dict[str, Any]:
        """Capability flags as a dict (for listings and reports)."""
        return {"objectives": list(cls.objectives), "nk": cls.supports_nk,
                "per_fraction_doses": cls.supports_per_fraction,
                "continuous_dose": cls.supports_continuous_dose,
                "global_optimality": cls.global_optimality}


def module_available(name: str) -> bool:
    """True if ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def package_version(dist: str) -> str:
    """Installed version of a distribution, or ``""``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""
