"""Decisions beyond one nominal solve: robust solves, virtual trials, sensitivity analysis,
Pareto fronts, adaptive re-planning, and the local or distributed map they run on.

:func:`rtopt.decisions.facade.solve` is the public :func:`rtopt.solve`: the nominal solve of
:mod:`rtopt.planning.solve`, or the robust one with ``robust=``.
"""
