"""What every report renderer shares: the templates folder and its jinja2 environments
(HTML autoescaped; Markdown with every ``{{ ... }}`` escaped), number and time formats, figures
as byte-identical PNGs.  Used by :mod:`rtopt.outputs.report` and
:mod:`rtopt.outputs.compare_pareto`."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rtopt.common import fileio
from rtopt.common.errors import InstanceError

# jinja2 is imported inside template_env (import time).

__all__ = ["TEMPLATES", "png_bytes", "fmt_number", "fmt_seconds", "anchor", "load_json",
           "utc_date", "template_env", "MdSafe"]


TEMPLATES = Path(__file__).resolve().parent / "templates"
"""The jinja2 templates of every report (``rtopt/outputs/templates``)."""


_DPI = 100


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes, without timestamps or software tags (byte-identical
    on every render)."""
    buf = io.BytesIO()
    # no timestamps or software tags in the file: the same table renders byte-identically
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def fmt_number(x: Any, digits: int = 6) -> str:
    """A table cell for a number: ``digits`` significant digits, scientific outside
    [1e-3, 1e6), empty for None, "yes"/"" for booleans, signed infinity."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else ""
    if isinstance(x, (int, np.integer)):
        return str(x)
    x = float(x)
    if not math.isfinite(x):
        return "\u221e" if x > 0 else "-\u221e"
    if x == 0:
        return "0"
    if abs(x) >= 1e6 or abs(x) < 1e-3:
        return f"{x:.{max(1, digits - 3)}e}"
    return f"{x:.{digits}g}"


def fmt_seconds(x: Any) -> str:
    """A wall time in seconds (``"1.23 s"``; empty for None)."""
    if x is None:
        return ""
    x = float(x)
    return f"{x:.3g} s" if x < 100 else f"{x:.0f} s"


def anchor(name: str) -> str:
    """An HTML anchor id for an instance name (``inst-`` and the name, other characters ``-``)."""
    return "inst-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None if it is missing or not JSON."""
    try:
        return fileio.load_json(path, limit=256 * 1024 * 1024)
    except InstanceError:  # InputFileError included: missing, not a regular file, not JSON
        return None


def utc_date(iso: str) -> str:
    """``2026-01-31 14:05 UTC`` from an ISO date (as it is if it does not parse)."""
    try:
        d = dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso or ""
    if d.tzinfo is not None:
        d = d.astimezone(dt.timezone.utc)
    return d.strftime("%Y-%m-%d %H:%M UTC")


def template_env(html: bool) -> Any:
    """The jinja2 environment of the report templates: autoescaped HTML, or Markdown whose
    every ``{{ ... }}`` is escaped (filter ``md`` for cells).  jinja2 is imported on first use
    (start-up)."""
    import jinja2

    kw = {} if html else {"finalize": _md_finalize}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=html, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined, **kw)
    env.filters["md"] = _md_cell
    return env


class MdSafe(str):
    """Text already escaped for Markdown (the ``md`` filter's output, links, fixed markup)."""


_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "\\`"}


def _md_text(x: Any) -> str:
    """Text from files made inert in Markdown: HTML ``<>&`` escaped (a Markdown viewer would
    run raw HTML), table pipes and backticks escaped, one line."""
    s = "" if x is None else str(x)
    return "".join(_MD_ESCAPES.get(c, c) for c in " ".join(s.split()))


def _md_cell(x: Any) -> MdSafe:
    """A Markdown table cell (or any text from files): see :func:`_md_text`."""
    return x if isinstance(x, MdSafe) else MdSafe(_md_text(x))


def _md_finalize(x: Any) -> Any:
    """Every ``{{ ... }}`` of the Markdown template is escaped unless already escaped."""
    if isinstance(x, (MdSafe, int, float)) or x is None:
        return "" if x is None else x
    return _md_cell(x)
