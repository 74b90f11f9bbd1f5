"""rtopt: radiotherapy schedule optimiser for an NK-cell favourable tumour microenvironment.

Public API (everything else is internal)::

    import rtopt
    result = rtopt.solve("instances/lung-sbrt-peripheral.toml", solver="exhaustive")
    print(result.status, result.plan.describe(), result.objective)

Solver comparisons: ``from rtopt.outputs.compare import compare`` (the module name is kept free).

The names below are imported on first use (module ``__getattr__``), so ``import rtopt`` and the
``rtopt`` command start without loading numpy, numba or scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    "InfeasibleProblem": ("rtopt.common.errors", "InfeasibleProblem"),
    "InstanceError": ("rtopt.common.errors", "InstanceError"),
    "ProblemDeclined": ("rtopt.common.errors", "ProblemDeclined"),
    "RtoptError": ("rtopt.common.errors", "RtoptError"),
    "SolverUnavailable": ("rtopt.common.errors", "SolverUnavailable"),
    "Instance": ("rtopt.problem.instance", "Instance"),
    "instance_from_dict": ("rtopt.problem.instance", "instance_from_dict"),
    "instance_json_schema": ("rtopt.problem.instance", "instance_json_schema"),
    "load_instance": ("rtopt.problem.instance", "load_instance"),
    "SurrogateParameters": ("rtopt.model.parameters", "SurrogateParameters"),
    "resolve_parameters": ("rtopt.model.parameters", "resolve"),
    "Plan": ("rtopt.problem.problem", "Plan"),
    "Problem": ("rtopt.problem.problem", "Problem"),
    "Biology": ("rtopt.model.simulator", "Biology"),
    "Simulation": ("rtopt.model.simulator", "Simulation"),
    "simulate": ("rtopt.model.simulator", "simulate"),
    "simulate_reference": ("rtopt.model.simulator", "simulate_reference"),
    "Result": ("rtopt.planning.solve", "Result"),
    "solve": ("rtopt.decisions.facade", "solve"),
    "render_report": ("rtopt.outputs.reports", "render"),
    "pareto": ("rtopt.decisions.pareto", "pareto"),
    "update": ("rtopt.decisions.adaptive", "update"),
    "replan": ("rtopt.decisions.adaptive", "replan"),
    "load_course": ("rtopt.problem.course", "load_course"),
}

__all__ = [
    "__version__", "solve", "Result", "render_report", "Plan", "Problem", "Instance", "load_instance",
    "instance_from_dict", "instance_json_schema", "Biology", "Simulation", "simulate",
    "simulate_reference", "pareto", "update", "replan", "load_course", "SurrogateParameters", "resolve_parameters", "RtoptError",
    "InstanceError", "SolverUnavailable", "ProblemDeclined", "InfeasibleProblem",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'rtopt' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from rtopt.decisions.adaptive import replan, update
    from rtopt.problem.course import load_course
    from rtopt.common.errors import (InfeasibleProblem, InstanceError, ProblemDeclined, RtoptError,
                              SolverUnavailable)
    from rtopt.problem.instance import Instance, instance_from_dict, instance_json_schema, load_instance
    from rtopt.model.parameters import SurrogateParameters, resolve as resolve_parameters
    from rtopt.problem.problem import Plan, Problem
    from rtopt.outputs.reports import render as render_report
    from rtopt.model.simulator import Biology, Simulation, simulate, simulate_reference
    from rtopt.decisions.facade import solve
    from rtopt.planning.solve import Result
