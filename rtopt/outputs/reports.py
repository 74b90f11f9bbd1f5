"""``rtopt report OUTDIR``: render the report of any results folder.

A solver comparison's folder (:func:`rtopt.outputs.compare.compare`) is rendered by
:func:`rtopt.outputs.report.render`, a front comparison's (``rtopt compare --pareto``,
:func:`rtopt.outputs.compare_pareto.compare_fronts`) by :func:`rtopt.outputs.compare_pareto.render`;
this module tells them apart by the table's header, so neither renderer imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

from rtopt.outputs import compare_pareto, report

__all__ = ["render"]


def render(outdir: str | os.PathLike) -> list[str]:
    """Render ``report.html`` and ``report.md`` (and figures) of a comparison folder, solver or
    front comparison alike; never solves.

    Returns
    -------
    list of str
        One line per part of the report that could not be drawn.

    Raises
    ------
    rtopt.common.errors.InstanceError
        ``results.csv`` is missing or unreadable.
    """
    out = Path(outdir)
    if compare_pareto.is_front_table(out):  # written by 'rtopt compare --pareto'
        return compare_pareto.render(out)
    return report.render(out)
