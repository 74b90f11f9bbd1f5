"""Decisions beyond one nominal solve: robust solves, virtual trials, sensitivity analysis,
Pareto fronts, adaptive re-planning, and the local or distributed map they run on.
"""
