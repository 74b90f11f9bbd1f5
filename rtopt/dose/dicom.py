"""Cumulative DVHs from a DICOM RT Dose and an RT Structure Set (pydicom).

Method (docs/dose.md section 1):

* The dose grid is read with ``DoseGridScaling``; frame positions come from
  ``GridFrameOffsetVector`` in its relative form (first element 0: offsets from
  ``ImagePositionPatient`` z) or absolute form (first element non-zero: the frames' z).  Only
  axial grids with ``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]`` (head-first supine) are
  read; other orientations are declined.
* ``DoseSummationType`` ``PLAN``/``MULTI_PLAN`` is the dose of the whole plan; ``FRACTION`` is
  multiplied by the number of fractions (given, or read from an RT Plan).  Other types
  (``BEAM``, ``BRACHY``, ``CONTROL_POINT`` ...) are declined.
* Each closed planar contour plane represents a slab of the structure as thick as the
  structure's smallest contour z spacing, centred on the plane (the dicompyler convention).
  Several contours on one plane combine by the even-odd (XOR) rule, so an inner contour is a
  hole.
* Each plane is sampled on a sub-voxel grid (default 0.5 mm, coarsened so that a plane has at
  most :data:`MAX_SAMPLES_PER_PLANE` samples); the dose at each sample is interpolated
  bilinearly in the plane and linearly between the two dose frames around the contour plane.
* Samples outside the dose grid (beyond half a voxel from the outer voxel centres, in-plane or
  in z) have unknown dose: their volume is reported as ``volume_outside_cc`` and left out of
  the DVH.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rtopt.dose import DoseError
from rtopt.dose.dvh import DVH

__all__ = ["DoseGrid", "Structure", "StructureSet", "PlanDVHs", "read_rtdose",
           "read_rtstruct", "read_rtplan_fractions", "structure_dvh", "compute_dvhs",
           "MAX_SAMPLES_PER_PLANE", "DEFAULT_SAMPLING_MM"]

DEFAULT_SAMPLING_MM = 0.5
"""Default in-plane sample spacing (mm)."""

MAX_SAMPLES_PER_PLANE = 400_000
"""Largest number of in-plane samples per contour plane; larger structures are sampled more
coarsely (a 300 mm x 300 mm body contour at 0.47 mm)."""

_AXIAL_HFS = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
_PLAN_TYPES = ("PLAN", "MULTI_PLAN")


@dataclasses.dataclass(frozen=True)
class DoseGrid:
    """A dose grid in patient coordinates.

    Attributes
    ----------
    path : str
        File it was read from.
    x_mm, y_mm, z_mm : numpy.ndarray
        Voxel centre coordinates (mm), increasing.
    dose_gy : numpy.ndarray
        Dose of the whole plan (Gy), shape ``(len(z), len(y), len(x))``.
    summation_type : str
        ``DoseSummationType`` as read.
    n_fractions : int or None
        Number of fractions the plan dose is delivered in, when known.
    frame_of_reference_uid : str
        ``FrameOfReferenceUID``.
    """

    path: str
    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray
    dose_gy: np.ndarray
    summation_type: str
    n_fractions: int | None
    frame_of_reference_uid: str

    def plane(self, z: float) -> np.ndarray | None:
        """Dose (Gy) on the axial plane at ``z`` mm, interpolated linearly between frames, or
        None when ``z`` is more than half a frame spacing outside the grid."""
        zs = self.z_mm
        if zs.size == 1:
            half = 0.5 * _spacing(self.x_mm)  # a single frame: assume a cubic-ish voxel
            return self.dose_gy[0] if abs(z - zs[0]) <= half else None
        half_lo, half_hi = 0.5 * (zs[1] - zs[0]), 0.5 * (zs[-1] - zs[-2])
        if z < zs[0] - half_lo - 1e-6 or z > zs[-1] + half_hi + 1e-6:
            return None
        zc = min(max(z, zs[0]), zs[-1])
        j = int(np.clip(np.searchsorted(zs, zc, side="right") - 1, 0, zs.size - 2))
        w = (zc - zs[j]) / (zs[j + 1] - zs[j])
        return (1.0 - w) * self.dose_gy[j] + w * self.dose_gy[j + 1]

    def describe_extent(self) -> str:
        """The grid's extent as text (mm)."""
        return (f"x {self.x_mm[0]:.1f}..{self.x_mm[-1]:.1f}, y {self.y_mm[0]:.1f}.."
                f"{self.y_mm[-1]:.1f}, z {self.z_mm[0]:.1f}..{self.z_mm[-1]:.1f} mm")


@dataclasses.dataclass(frozen=True)
class Structure:
    """A structure (ROI) of an RT Structure Set.

    Attributes
    ----------
    number : int
        ``ROINumber``.
    name : str
        ``ROIName``.
    planes : dict of float to list of numpy.ndarray
        Closed planar contours by plane z (mm, rounded to 0.01 mm): arrays of shape ``(k, 2)``
        of x, y (mm).
    """

    number: int
    name: str
    planes: dict

    def z_spacing(self) -> float | None:
        """Smallest spacing (mm) between this structure's contour planes, or None."""
        zs = np.array(sorted(self.planes))
        if zs.size < 2:
            return None
        d = np.diff(zs)
        d = d[d > 1e-3]
        return float(d.min()) if d.size else None


@dataclasses.dataclass(frozen=True)
class StructureSet:
    """Structures of an RT Structure Set, by name (in file order)."""

    path: str
    frame_of_reference_uids: tuple
    structures: dict

    def find(self, name: str) -> Structure:
        """The structure called ``name`` (exact, then case-insensitive), or a DoseError with a
        'did you mean' suggestion."""
        if name in self.structures:
            return self.structures[name]
        lower = {k.lower(): v for k, v in self.structures.items()}
        if name.lower() in lower:
            return lower[name.lower()]
        names = list(self.structures)
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5) or \
            [n for n in names if name.lower() in n.lower()][:1]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DoseError(f"{self.path}: no structure named {name!r}{hint} "
                        f"(structures: {', '.join(names)})")

    def min_spacing(self) -> float | None:
        """Smallest contour plane spacing (mm) over all structures, or None."""
        vals = [s.z_spacing() for s in self.structures.values()]
        vals = [v for v in vals if v is not None]
        return min(vals) if vals else None


@dataclasses.dataclass(frozen=True)
class PlanDVHs:
    """DVHs computed from one dose grid and structure set, with the warnings raised."""

    dose: DoseGrid
    structures: StructureSet
    dvhs: list
    warnings: list


# ------------------------------------------------------------------------------- reading
def _read(path: str | Path, modality: str, role: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    from rtopt.common.fileio import InputFileError, check_input

    path = str(path)
    try:   # regular files only (a FIFO would block), at most 1 GiB
        check_input(path, limit=1024 ** 3, what=f"{role} file")
    except InputFileError as e:
        raise DoseError(e.lines()[0]) from None
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DoseError(f"{path}: not a DICOM file (no DICM preamble); expected the {role}")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt files
        raise DoseError(f"{path}: corrupt DICOM file ({type(exc).__name__}: "
                        f"{_first_line(exc)})") from None
    found = str(getattr(ds, "Modality", "") or "")
    if found != modality:
        what = found or "no Modality"
        raise DoseError(f"{path}: Modality is {what}, expected {modality} (the {role})")
    return ds


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def _spacing(arr: np.ndarray) -> float:
    return float(arr[1] - arr[0]) if arr.size > 1 else 1.0


def read_rtplan_fractions(path: str | Path) -> int:
    """Number of fractions planned in an RT Plan (first fraction group).

    Raises
    ------
    rtopt.dose.DoseError
        Not an RT Plan, or no ``NumberOfFractionsPlanned``.
    """
    ds = _read(path, "RTPLAN", "RT Plan")
    try:
        n = int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned)
    except (AttributeError, IndexError, TypeError, ValueError):
        raise DoseError(f"{path}: RT Plan has no FractionGroupSequence/NumberOfFractionsPlanned")
    if n < 1:
        raise DoseError(f"{path}: NumberOfFractionsPlanned is {n}, expected >= 1")
    return n


def read_rtdose(path: str | Path, n_fractions: int | None = None) -> DoseGrid:
    """Read an RT Dose file into a :class:`DoseGrid` of plan dose (Gy).

    Parameters
    ----------
    path : str or Path
        RT Dose file.
    n_fractions : int, optional
        Number of fractions: multiplies a ``FRACTION`` dose; recorded for a ``PLAN`` dose.

    Raises
    ------
    rtopt.dose.DoseError
        Wrong modality, unsupported orientation, summation type or units, inconsistent grid.
    """
    path = str(path)
    ds = _read(path, "RTDOSE", "RT Dose")
    try:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except AttributeError as exc:
        raise DoseError(f"{path}: RT Dose lacks {_missing_attr(exc)}") from None
    if iop.size != 6 or not np.allclose(iop, _AXIAL_HFS, atol=1e-4):
        raise DoseError(f"{path}: ImageOrientationPatient {list(iop)} is not axial head-first "
                        "supine [1, 0, 0, 0, 1, 0]; other orientations are not supported")
    units = str(getattr(ds, "DoseUnits", "GY")).upper()
    if units != "GY":
        raise DoseError(f"{path}: DoseUnits is {units}; only absolute dose (GY) is supported")
    if str(getattr(ds, "DoseType", "PHYSICAL")).upper() == "ERROR":
        raise DoseError(f"{path}: DoseType is ERROR (a dose difference), not a dose")
    summation = str(getattr(ds, "DoseSummationType", "PLAN")).upper()
    try:
        scaling = float(ds.DoseGridScaling)
        pixels = ds.pixel_array
    except AttributeError as exc:
        raise DoseError(f"{path}: RT Dose lacks {_missing_attr(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - pixel decoding errors
        raise DoseError(f"{path}: cannot decode the dose pixel data ({_first_line(exc)})") \
            from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    dose = np.asarray(pixels, dtype=float).reshape(frames, rows, cols) * scaling
    offsets = getattr(ds, "GridFrameOffsetVector", None)
    if offsets is None or len(offsets) == 0:
        if frames > 1:
            raise DoseError(f"{path}: {frames} frames but no GridFrameOffsetVector")
        z = np.array([ipp[2]])
    else:
        off = np.array([float(v) for v in offsets])
        if off.size != frames:
            raise DoseError(f"{path}: GridFrameOffsetVector has {off.size} values for "
                            f"{frames} frames")
        # PS3.3 C.8.8.3.2: first element 0 -> offsets relative to ImagePositionPatient z;
        # otherwise the values are the frames' z coordinates.
        z = ipp[2] + off if off[0] == 0 else off
    order = np.argsort(z, kind="stable")
    z, dose = z[order], dose[order]
    if z.size > 1 and np.any(np.diff(z) <= 0):
        raise DoseError(f"{path}: GridFrameOffsetVector has repeated frame positions")
    x = ipp[0] + col_mm * np.arange(cols)
    y = ipp[1] + row_mm * np.arange(rows)
    if summation in _PLAN_TYPES:
        pass
    elif summation == "FRACTION":
        if n_fractions is None:
            raise DoseError(f"{path}: DoseSummationType is FRACTION (dose of one fraction): "
                            "give the number of fractions (--fractions N or --plan RTPLAN)")
        dose = dose * int(n_fractions)
    else:
        raise DoseError(f"{path}: DoseSummationType {summation} is not supported (PLAN, "
                        "MULTI_PLAN or FRACTION); sum the doses into a plan dose first")
    if n_fractions is not None and int(n_fractions) < 1:
        raise DoseError(f"{path}: number of fractions must be >= 1, got {n_fractions}")
    return DoseGrid(path, x, y, z, dose, summation,
                    None if n_fractions is None else int(n_fractions),
                    str(getattr(ds, "FrameOfReferenceUID", "")))


def _missing_attr(exc: AttributeError) -> str:
    text = str(exc)
    return text.split("'")[-2] if text.count("'") >= 2 else text


def read_rtstruct(path: str | Path) -> StructureSet:
    """Read the closed planar contours of an RT Structure Set.

    Raises
    ------
    rtopt.dose.DoseError
        Wrong modality or no structures.
    """
    path = str(path)
    ds = _read(path, "RTSTRUCT", "RT Structure Set")
    names = {}
    for roi in getattr(ds, "StructureSetROISequence", []) or []:
        names[int(roi.ROINumber)] = str(getattr(roi, "ROIName", "") or f"ROI {roi.ROINumber}")
    if not names:
        raise DoseError(f"{path}: RT Structure Set has no StructureSetROISequence")
    structures: dict[str, Structure] = {}
    contours_by_number: dict[int, dict] = {n: {} for n in names}
    for rc in getattr(ds, "ROIContourSequence", []) or []:
        number = int(rc.ReferencedROINumber)
        planes = contours_by_number.setdefault(number, {})
        for c in getattr(rc, "ContourSequence", []) or []:
            if str(getattr(c, "ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            data = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
            if data.shape[0] < 3:
                continue
            if np.ptp(data[:, 2]) > 0.01:
                raise DoseError(f"{path}: {names.get(number, number)}: a contour is not "
                                "axial (its points have different z)")
            zkey = round(float(data[0, 2]), 2)
            planes.setdefault(zkey, []).append(data[:, :2].copy())
    for number, name in names.items():
        key = name
        if key in structures:  # duplicate names: keep both, distinguishable
            key = f"{name} ({number})"
        structures[key] = Structure(number, name, contours_by_number.get(number, {}))
    fors = tuple(str(f.FrameOfReferenceUID) for f in
                 getattr(ds, "ReferencedFrameOfReferenceSequence", []) or []
                 if getattr(f, "FrameOfReferenceUID", None))
    return StructureSet(path, fors, structures)


# ------------------------------------------------------------------------------- DVHs
def _inside_even_odd(polygons: Sequence[np.ndarray], pts: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as MplPath

    inside = np.zeros(pts.shape[0], dtype=bool)
    for poly in polygons:
        inside ^= MplPath(poly, closed=False).contains_points(pts)
    return inside


def _bilinear(plane: np.ndarray, x0: float, dx: float, y0: float, dy: float,
              px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dose at points (bilinear); also a mask of points inside the grid (half a voxel margin,
    where the outer voxel's value is used)."""
    ny, nx = plane.shape
    fx = (px - x0) / dx
    fy = (py - y0) / dy
    ok = (fx >= -0.5 - 1e-9) & (fx <= nx - 0.5 + 1e-9) & (fy >= -0.5 - 1e-9) & \
        (fy <= ny - 0.5 + 1e-9)
    fx = np.clip(fx[ok], 0.0, nx - 1.0)
    fy = np.clip(fy[ok], 0.0, ny - 1.0)
    i0 = np.minimum(np.floor(fx).astype(np.int64), max(nx - 2, 0))
    j0 = np.minimum(np.floor(fy).astype(np.int64), max(ny - 2, 0))
    i1 = np.minimum(i0 + 1, nx - 1)
    j1 = np.minimum(j0 + 1, ny - 1)
    wx = fx - i0
    wy = fy - j0
    val = ((1 - wx) * (1 - wy) * plane[j0, i0] + wx * (1 - wy) * plane[j0, i1]
           + (1 - wx) * wy * plane[j1, i0] + wx * wy * plane[j1, i1])
    return val, ok


def structure_dvh(dose: DoseGrid, structure: Structure, thickness_mm: float,
                  bin_width_gy: float = 0.01,
                  sampling_mm: float = DEFAULT_SAMPLING_MM) -> DVH:
    """DVH of one structure (volume inside the grid in the bins, the rest reported outside).

    Parameters
    ----------
    dose : DoseGrid
        Plan dose.
    structure : Structure
        Contours.
    thickness_mm : float
        Slab thickness of each contour plane (mm).
    bin_width_gy : float
        DVH bin width (Gy).
    sampling_mm : float
        In-plane sample spacing (mm), coarsened to keep at most
        :data:`MAX_SAMPLES_PER_PLANE` samples per plane.
    """
    if not sampling_mm > 0:
        raise DoseError(f"sampling must be > 0 mm, got {sampling_mm}")
    doses: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    outside_cc = 0.0
    x0, dx = float(dose.x_mm[0]), _spacing(dose.x_mm)
    y0, dy = float(dose.y_mm[0]), _spacing(dose.y_mm)
    for z, polygons in sorted(structure.planes.items()):
        allpts = np.concatenate(polygons)
        xmin, ymin = allpts.min(axis=0)
        xmax, ymax = allpts.max(axis=0)
        area_box = max((xmax - xmin) * (ymax - ymin), 1e-9)
        s = max(sampling_mm, math.sqrt(area_box / MAX_SAMPLES_PER_PLANE))
        nxs = max(1, int(math.ceil((xmax - xmin) / s)))
        nys = max(1, int(math.ceil((ymax - ymin) / s)))
        # centre the sample lattice on the bounding box so the cover is symmetric
        xs = 0.5 * (xmin + xmax) + (np.arange(nxs) - (nxs - 1) / 2.0) * s
        ys = 0.5 * (ymin + ymax) + (np.arange(nys) - (nys - 1) / 2.0) * s
        gx, gy = np.meshgrid(xs, ys)
        pts = np.column_stack([gx.ravel(), gy.ravel()])
        inside = _inside_even_odd(polygons, pts)
        n_in = int(np.count_nonzero(inside))
        if n_in == 0:
            continue
        cell_cc = s * s * thickness_mm / 1000.0
        plane = dose.plane(z)
        if plane is None:
            outside_cc += n_in * cell_cc
            continue
        p = pts[inside]
        val, ok = _bilinear(plane, x0, dx, y0, dy, p[:, 0], p[:, 1])
        outside_cc += (n_in - int(np.count_nonzero(ok))) * cell_cc
        doses.append(val)
        weights.append(np.full(val.size, cell_cc))
    d = np.concatenate(doses) if doses else np.zeros(0)
    w = np.concatenate(weights) if weights else np.zeros(0)
    return DVH.from_samples(structure.name, d, w, bin_width_gy=bin_width_gy,
                            n_fractions=dose.n_fractions, volume_outside_cc=outside_cc,
                            source=dose.path)


def compute_dvhs(rtdose: str | Path, rtstruct: str | Path,
                 structures: Iterable[str] | None = None, *, bin_width_gy: float = 0.01,
                 sampling_mm: float = DEFAULT_SAMPLING_MM, n_fractions: int | None = None,
                 rtplan: str | Path | None = None) -> PlanDVHs:
    """DVHs of structures from an RT Dose and an RT Structure Set.

    Parameters
    ----------
    rtdose, rtstruct : str or Path
        The files.
    structures : iterable of str, optional
        Structure names (default: every structure with contours).  A named structure that is
        missing, has no contours or lies entirely outside the dose grid is an error; unnamed
        ones in that state are skipped with a warning.
    bin_width_gy : float
        DVH bin width (Gy).
    sampling_mm : float
        In-plane sample spacing (mm).
    n_fractions : int, optional
        Number of fractions (multiplies a FRACTION dose); overrides ``rtplan``.
    rtplan : str or Path, optional
        RT Plan to read the number of fractions from.

    Returns
    -------
    PlanDVHs
        DVHs and warnings (structures partly outside the grid, skipped structures).

    Raises
    ------
    rtopt.dose.DoseError
        Bad files, mismatched frames of reference, unknown structures.
    """
    if not bin_width_gy > 0:
        raise DoseError(f"bin width must be > 0 Gy, got {bin_width_gy}")
    if n_fractions is None and rtplan is not None:
        n_fractions = read_rtplan_fractions(rtplan)
    ss = read_rtstruct(rtstruct)
    dose = read_rtdose(rtdose, n_fractions=n_fractions)
    if ss.frame_of_reference_uids and dose.frame_of_reference_uid and \
            dose.frame_of_reference_uid not in ss.frame_of_reference_uids:
        raise DoseError(f"{rtstruct}: FrameOfReferenceUID {ss.frame_of_reference_uids[0]} "
                        f"differs from the RT Dose's {dose.frame_of_reference_uid} "
                        f"({rtdose}); the files belong to different frames of reference")
    explicit = structures is not None
    chosen = [ss.find(n) for n in structures] if explicit else list(ss.structures.values())
    fallback = ss.min_spacing() or _spacing(dose.z_mm)
    warnings: list[str] = []
    dvhs: list[DVH] = []
    for st in chosen:
        if not st.planes:
            msg = f"{rtstruct}: structure {st.name!r} has no closed planar contours"
            if explicit:
                raise DoseError(msg)
            warnings.append(msg + "; skipped")
            continue
        thickness = st.z_spacing() or fallback
        h = structure_dvh(dose, st, thickness, bin_width_gy, sampling_mm)
        if h.volume_total_cc <= 0:
            msg = (f"{rtdose}: the dose grid ({dose.describe_extent()}) misses structure "
                   f"{st.name!r} entirely")
            if explicit:
                raise DoseError(msg)
            warnings.append(msg + "; skipped")
            continue
        if h.volume_outside_cc > 0:
            warnings.append(
                f"{rtdose}: {h.fraction_outside:.1%} of {st.name!r} "
                f"({h.volume_outside_cc:.3g} of {h.volume_total_cc + h.volume_outside_cc:.4g} "
                "cm^3) lies outside the dose grid; its dose is unknown and its DVH covers the "
                f"{h.volume_total_cc:.4g} cm^3 inside")
        dvhs.append(h)
    if not dvhs:
        raise DoseError(f"{rtstruct}: no structure has volume inside the dose grid")
    return PlanDVHs(dose, ss, dvhs, warnings)
