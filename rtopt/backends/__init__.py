"""Solver back-ends: one module each, registered here by name and imported lazily."""

from __future__ import annotations

import importlib

from rtopt.backends.base import Backend, BackendOutput, SolverOptions, Termination

__all__ = ["BACKENDS", "get_backend", "Backend", "BackendOutput", "SolverOptions", "Termination"]

BACKENDS: dict[str, str] = {
    "exhaustive": "rtopt.backends.exhaustive:ExhaustiveBackend",
    "scipy_de": "rtopt.backends.scipy_backend:ScipyDEBackend",
    "scipy_milp": "rtopt.backends.scipy_backend:ScipyMilpBackend",
    "pyomo_milp": "rtopt.backends.pyomo_backend:PyomoMilpBackend",
    "pyomo_minlp": "rtopt.backends.pyomo_backend:PyomoMinlpBackend",
    "cvxpy_convex": "rtopt.backends.cvxpy_backend:CvxpyConvexBackend",
    "cvxpy_ccp": "rtopt.backends.cvxpy_backend:CvxpyCcpBackend",
}
"""Back-end name -> ``module:Class`` (modules are imported only when the back-end is used)."""


def get_backend(name: str) -> type[Backend]:
    """Return the back-end class registered as ``name`` (KeyError if unknown)."""
    if name not in BACKENDS:
        raise KeyError(name)
    mod, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(mod), cls)
