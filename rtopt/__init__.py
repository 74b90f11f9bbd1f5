"""rtopt: radiotherapy schedule optimiser for an NK-cell favourable tumour microenvironment.

Public API (everything else is internal)::

    import rtopt
    result = rtopt.solve("instances/lung-sbrt-peripheral.toml", solver="exhaustive")
    print(result.status, result.plan.describe(), result.objective)

Solver comparisons: ``from rtopt.compare import compare`` (the module name is kept free).
"""

from __future__ import annotations

__version__ = "0.1.0"

from rtopt.errors import (InfeasibleProblem, InstanceError, ProblemDeclined, RtoptError,
                          SolverUnavailable)
from rtopt.instance import Instance, instance_from_dict, instance_json_schema, load_instance
from rtopt.parameters import SurrogateParameters, resolve as resolve_parameters
from rtopt.problem import Plan, Problem
from rtopt.simulator import Biology, Simulation, simulate, simulate_reference
from rtopt.solve import Result, solve
from rtopt.report import render as render_report

__all__ = [
    "__version__", "solve", "Result", "render_report", "Plan", "Problem", "Instance", "load_instance",
    "instance_from_dict", "instance_json_schema", "Biology", "Simulation", "simulate",
    "simulate_reference", "SurrogateParameters", "resolve_parameters", "RtoptError",
    "InstanceError", "SolverUnavailable", "ProblemDeclined", "InfeasibleProblem",
]
