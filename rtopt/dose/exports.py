"""Readers of DVH text exports: Eclipse, RayStation and plain CSV.

:func:`read_dvh_export` detects the format from the file's first lines.

Eclipse (Varian) "DVH export" text
    A header (``Patient Name``, ``Prescribed dose [cGy]`` ...) then one block per structure
    starting ``Structure: NAME`` with ``Volume [cm³]`` and a table whose header names its
    columns, e.g. ``Dose [cGy]  Relative dose [%]  Ratio of Total Structure Volume [%]``
    (cumulative) or ``... dVolume / dDose [cm³ / cGy]`` (differential).  Doses may be in cGy
    or Gy; volumes in % of the structure (then scaled by its volume) or cm³.
RayStation DVH export
    Blocks starting ``#RoiName:NAME`` with a ``#Unit:`` line (dose unit ``cGy`` or ``Gy``
    and volume unit ``%`` or ``cm3``), then cumulative ``dose volume`` pairs (whitespace,
    tab or comma separated).  A ``#RoiVolume:`` line (cm³) scales percentage volumes.
Plain CSV
    A header naming ``structure``, ``dose_gy`` and ``volume_cc`` or ``volume_percent``
    (then ``structure_volume_cc`` gives the structure's volume), optionally
    ``type`` = ``cumulative`` (default) or ``differential``; one row per point.

Every reader returns :class:`~rtopt.dose.dvh.DVH` objects of total plan dose (Gy).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np

from rtopt.dose import DoseError
from rtopt.dose.dvh import DVH

__all__ = ["read_dvh_export", "read_eclipse", "read_raystation", "read_csv", "detect_format"]


def _text(path: str | Path) -> str:
    from rtopt.common.fileio import InputFileError, read_input

    try:
        raw = read_input(path, limit=64 * 1024 * 1024, what="DVH export")
    except InputFileError as e:
        raise DoseError(e.lines()[0]) from None
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise DoseError(f"{path}: cannot decode the file as text")  # pragma: no cover (latin-1)


def detect_format(text: str) -> str:
    """``"eclipse"``, ``"raystation"`` or ``"csv"`` from a file's text, or DoseError."""
    head = text[:4000]
    if re.search(r"^#RoiName\s*:", head, re.M):
        return "raystation"
    if re.search(r"^\s*Structure\s*:", text, re.M) and ("Patient" in head or "Dose [" in text):
        return "eclipse"
    first = next((ln for ln in text.splitlines() if ln.strip()), "").lower()
    if "dose_gy" in first and "structure" in first:
        return "csv"
    raise DoseError("not a recognised DVH export (Eclipse 'Structure:' blocks, RayStation "
                    "'#RoiName:' blocks, or CSV with structure,dose_gy,volume_cc columns)")


def read_dvh_export(path: str | Path, n_fractions: int | None = None) -> list[DVH]:
    """Read every structure's DVH from a text export (format detected).

    Parameters
    ----------
    path : str or Path
        The export.
    n_fractions : int, optional
        Number of fractions of the plan (for BED/EQD2 metrics).

    Raises
    ------
    rtopt.dose.DoseError
        Unknown format or malformed content; the message starts with the file.
    """
    text = _text(path)
    try:
        fmt = detect_format(text)
    except DoseError as exc:
        raise DoseError(f"{path}: {exc}") from None
    reader = {"eclipse": _eclipse, "raystation": _raystation, "csv": _csv}[fmt]
    dvhs = reader(text, str(path), n_fractions)
    if not dvhs:
        raise DoseError(f"{path}: no DVH data found ({fmt} format)")
    return dvhs


def read_eclipse(path, n_fractions=None):
    """Read an Eclipse DVH text export (see the module docstring)."""
    return _eclipse(_text(path), str(path), n_fractions)


def read_raystation(path, n_fractions=None):
    """Read a RayStation DVH export (see the module docstring)."""
    return _raystation(_text(path), str(path), n_fractions)


def read_csv(path, n_fractions=None):
    """Read a plain CSV DVH (see the module docstring)."""
    return _csv(_text(path), str(path), n_fractions)


def _number(s: str) -> float:
    return float(s.strip().replace(",", "."))


def _dose_factor(unit: str, source: str) -> float:
    u = unit.strip().lower()
    if u == "cgy":
        return 0.01
    if u == "gy":
        return 1.0
    raise DoseError(f"{source}: dose unit {unit!r} not supported (cGy or Gy)")


def _eclipse(text: str, source: str, n_fractions) -> list[DVH]:
    out: list[DVH] = []
    blocks = re.split(r"^\s*Structure\s*:\s*", text, flags=re.M)[1:]
    for block in blocks:
        lines = block.splitlines()
        name = lines[0].strip()
        vol_cc = None
        header = None
        rows: list[list[float]] = []
        for ln in lines[1:]:
            s = ln.strip()
            if not s:
                continue
            m = re.match(r"Volume\s*\[(cm³|cm3|cc|ccm)\]\s*:\s*(\S+)", s, re.I)
            if m:
                vol_cc = _number(m.group(2))
                continue
            if header is None and re.match(r"Dose\s*\[", s) and "olume" in s:
                header = s
                continue
            if header is not None:
                parts = s.split()
                try:
                    rows.append([_number(p) for p in parts])
                except ValueError:
                    break
        if header is None or not rows:
            raise DoseError(f"{source}: structure {name!r}: no DVH table found")
        cols = [c.strip() for c in re.split(r"\s{2,}|\t", header) if c.strip()]
        arr = np.array([r[:len(cols)] for r in rows if len(r) >= len(cols)])
        dose_col = next(i for i, c in enumerate(cols) if c.lower().startswith("dose ["))
        unit = re.search(r"\[(.*?)\]", cols[dose_col]).group(1)
        dose = arr[:, dose_col] * _dose_factor(unit, source)
        vol_i = next((i for i, c in enumerate(cols) if "volume" in c.lower()), None)
        if vol_i is None:
            raise DoseError(f"{source}: structure {name!r}: no volume column in {header!r}")
        vcol = cols[vol_i].lower()
        vol = arr[:, vol_i]
        differential = "/" in vcol or "ddose" in vcol
        if "%" in vcol:
            if vol_cc is None:
                raise DoseError(f"{source}: structure {name!r}: volumes in % but no "
                                "'Volume [cm³]' line")
            vol = vol / 100.0 * vol_cc
        if differential:
            if "cgy" in vcol:  # volume per cGy: times the bin width in cGy
                widths = np.gradient(dose * 100.0) if dose.size > 1 else np.ones(1)
            else:
                widths = np.gradient(dose) if dose.size > 1 else np.ones(1)
            out.append(DVH.from_differential(name, dose, vol * widths, n_fractions=n_fractions,
                                             source=source))
        else:
            out.append(DVH.from_cumulative(name, dose, vol, n_fractions=n_fractions,
                                           source=source))
    return out


def _raystation(text: str, source: str, n_fractions) -> list[DVH]:
    out: list[DVH] = []
    blocks = re.split(r"^#RoiName\s*:\s*", text, flags=re.M)[1:]
    for block in blocks:
        lines = block.splitlines()
        name = lines[0].strip()
        dose_unit, vol_unit, roi_vol = "cGy", "%", None
        pts: list[tuple[float, float]] = []
        for ln in lines[1:]:
            s = ln.strip()
            if not s:
                continue
            if s.startswith("#"):
                key, _, val = s[1:].partition(":")
                key = key.strip().lower()
                if key == "unit" or key == "units":
                    units = [u for u in re.split(r"[\s,;]+", val.strip()) if u]
                    if units:
                        dose_unit = units[0]
                    if len(units) > 1:
                        vol_unit = units[1]
                elif key == "dose unit":
                    dose_unit = val.strip()
                elif key == "volume unit":
                    vol_unit = val.strip()
                elif key in ("roivolume", "roi volume"):
                    roi_vol = _number(re.sub(r"[^\d.,eE+-]", "", val))
                continue
            parts = [p for p in re.split(r"[\s,;]+", s) if p]
            if len(parts) < 2:
                continue
            try:
                pts.append((float(parts[0]), float(parts[1])))
            except ValueError:
                raise DoseError(f"{source}: structure {name!r}: cannot read line {s!r}") \
                    from None
        if len(pts) < 2:
            raise DoseError(f"{source}: structure {name!r}: fewer than two DVH points")
        arr = np.array(pts)
        dose = arr[:, 0] * _dose_factor(dose_unit, source)
        vol = arr[:, 1]
        if vol_unit.strip() == "%":
            if roi_vol is None:
                raise DoseError(f"{source}: structure {name!r}: volumes in % need a "
                                "'#RoiVolume:' line (cm3)")
            vol = vol / 100.0 * roi_vol
        elif vol_unit.strip().lower() not in ("cm3", "cc", "cm³"):
            raise DoseError(f"{source}: structure {name!r}: volume unit {vol_unit!r} not "
                            "supported (% or cm3)")
        out.append(DVH.from_cumulative(name, dose, vol, n_fractions=n_fractions,
                                       source=source))
    return out


def _csv(text: str, source: str, n_fractions) -> list[DVH]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    reader.fieldnames = fields
    need = {"structure", "dose_gy"}
    if not need <= set(fields) or not ({"volume_cc", "volume_percent"} & set(fields)):
        raise DoseError(f"{source}: CSV needs columns structure, dose_gy and volume_cc or "
                        f"volume_percent (found {', '.join(fields)})")
    data: dict[str, dict] = {}
    for lineno, row in enumerate(reader, start=2):
        try:
            name = row["structure"].strip()
            entry = data.setdefault(name, {"d": [], "v": [], "svol": None, "type": "cumulative"})
            entry["d"].append(float(row["dose_gy"]))
            if row.get("volume_cc") not in (None, ""):
                entry["v"].append(float(row["volume_cc"]))
            else:
                if row.get("structure_volume_cc") in (None, ""):
                    raise DoseError(f"{source}: line {lineno}: volume_percent needs "
                                    "structure_volume_cc")
                entry["svol"] = float(row["structure_volume_cc"])
                entry["v"].append(float(row["volume_percent"]) / 100.0 * entry["svol"])
            if row.get("type"):
                entry["type"] = row["type"].strip().lower()
        except (ValueError, AttributeError, TypeError):
            raise DoseError(f"{source}: line {lineno}: not a number where one is expected") \
                from None
    out = []
    for name, e in data.items():
        if e["type"] == "differential":
            out.append(DVH.from_differential(name, e["d"], e["v"], n_fractions=n_fractions,
                                             source=source))
        elif e["type"] == "cumulative":
            out.append(DVH.from_cumulative(name, e["d"], e["v"], n_fractions=n_fractions,
                                           source=source))
        else:
            raise DoseError(f"{source}: structure {name!r}: type must be cumulative or "
                            f"differential, got {e['type']!r}")
    return out
