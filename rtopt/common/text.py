"""Text from users and files made safe for the formats rtopt writes."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["md_text", "slug"]

_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "\\`", "[": "\\[",
               "]": "\\]", "\\": "\\\\"}


def md_text(x: Any) -> str:
    """``x`` as inert Markdown on one line: HTML ``<>&`` escaped (a Markdown viewer would run
    raw HTML such as ``<script>``), brackets escaped (no ``[text](javascript:...)`` links),
    table pipes and backticks escaped, whitespace runs (newlines too) made one space."""
    s = "" if x is None else str(x)
    return "".join(_MD_ESCAPES.get(c, c) for c in " ".join(s.split()))


def slug(name: str, limit: int = 60) -> str:
    """A file-name-safe form of ``name``: letters, digits, ``.-_`` kept, other runs as ``_``
    (``54/3`` -> ``54_3``); never empty, never starting with a dot."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:limit]
    return s or "arm"
