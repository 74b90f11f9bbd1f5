"""A synthetic lung SBRT plan: DICOM RT Dose + RT Structure Set with closed-form answers.

Geometry (patient coordinates, mm, head-first supine: x to the patient's left, y posterior,
z superior), contours every :data:`CONTOUR_SPACING_MM` on z = -60 ... 60 mm:

=============  ==================================================================
BODY           elliptic cylinder, semi-axes 150 x 100 mm, |z| <= 60
LUNG_R         ellipsoid centre (-70, 0, 0), semi-axes 55, 70, 56 mm
GTV            sphere centre (-95, 0, 0), radius 10 mm
PTV            sphere centre (-95, 0, 0), radius 15 mm
CHESTWALL_R    ring (hole by the even-odd rule): outer ellipse 150 x 100, inner
               136 x 88 mm, x < 0, |z| <= 40 (two contours per plane)
CORD           cylinder centre (0, 70), radius 5 mm, |z| <= 60
OESOPHAGUS     cylinder centre (0, 40), radius 8 mm, |z| <= 60
HEART          ellipsoid centre (45, -25, -20), semi-axes 45, 40, 35 mm
=============  ==================================================================

Dose models (plan dose, Gy):

``"sbrt"``
    ``D = P`` inside the PTV sphere and ``P exp(-(r - R)^2 / (2 sigma^2))`` outside it
    (``r`` distance from the PTV centre, ``R = 15`` mm, ``sigma = 12`` mm): the PTV's mean dose
    is exactly ``P``.
``"linear"``
    ``D = g0 + gx (x - xc) + gy (y - yc) + gz (z - zc)`` about the PTV centre: the mean dose
    of any structure symmetric about a point is the dose at that point (the PTV's mean is
    ``g0``), and bilinear/linear interpolation reproduces the field exactly.

The dose grid has :data:`DOSE_SPACING_MM` voxels (different from the contour spacing, so
contour planes fall between dose planes).  UIDs are derived from fixed strings, so the files
are byte-for-byte reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

__all__ = ["PhantomSpec", "write_phantom", "CONTOUR_SPACING_MM", "DOSE_SPACING_MM",
           "PTV_CENTRE_MM", "PTV_RADIUS_MM", "GTV_RADIUS_MM"]

CONTOUR_SPACING_MM = 2.0
DOSE_SPACING_MM = 3.0
PTV_CENTRE_MM = (-95.0, 0.0, 0.0)
PTV_RADIUS_MM = 15.0
GTV_RADIUS_MM = 10.0
_N_VERTICES = 128
_ROOT = "rtopt lung phantom v1"


@dataclasses.dataclass(frozen=True)
class PhantomSpec:
    """Options of :func:`write_phantom`.

    Attributes
    ----------
    dose_model : str
        ``"sbrt"`` or ``"linear"``.
    prescription_gy : float
        Plan dose to the PTV (``"sbrt"``) or ``g0`` (``"linear"``), Gy.
    n_fractions : int
        Fractions of the plan (written into the RT Dose comment; a FRACTION file holds
        ``prescription_gy / n_fractions``).
    summation : str
        ``"PLAN"`` or ``"FRACTION"``.
    gradient_gy_per_mm : tuple of float
        ``(gx, gy, gz)`` of the linear model (Gy/mm).
    sigma_mm : float
        Fall-off of the SBRT model (mm).
    grid_x_mm, grid_y_mm, grid_z_mm : tuple of float
        Extent of the dose grid (first and last voxel centre, mm).
    frame_of_reference_uid : str or None
        Override the RT Dose's frame of reference (tests of mismatches).
    absolute_frame_offsets : bool
        Write GridFrameOffsetVector in its absolute form (frame z) instead of relative.
    """

    dose_model: str = "sbrt"
    prescription_gy: float = 54.0
    n_fractions: int = 3
    summation: str = "PLAN"
    gradient_gy_per_mm: tuple = (0.2, 0.1, 0.3)
    sigma_mm: float = 12.0
    grid_x_mm: tuple = (-159.0, 159.0)
    grid_y_mm: tuple = (-105.0, 105.0)
    grid_z_mm: tuple = (-66.0, 66.0)
    frame_of_reference_uid: str | None = None
    absolute_frame_offsets: bool = False


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[_ROOT, *parts])


def _ellipse(cx, cy, a, b, n=_N_VERTICES):
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)])


def _half_ellipse_ring(a_out, b_out, a_in, b_in, n=_N_VERTICES):
    """Outer and inner half-ellipses (x <= 0, each closed along x = 0): two contours on one
    plane whose even-odd combination is the half ring between them."""
    t = np.linspace(0.5 * math.pi, 1.5 * math.pi, n // 2 + 1)
    outer = np.column_stack([a_out * np.cos(t), b_out * np.sin(t)])
    inner = np.column_stack([a_in * np.cos(t), b_in * np.sin(t)])
    return outer, inner


def _planes(z_lo, z_hi):
    k0 = math.ceil(z_lo / CONTOUR_SPACING_MM - 1e-9)
    k1 = math.floor(z_hi / CONTOUR_SPACING_MM + 1e-9)
    return [k * CONTOUR_SPACING_MM for k in range(k0, k1 + 1)]


def structures() -> dict[str, list[tuple[float, list[np.ndarray]]]]:
    """Contours of every structure: ``{name: [(z, [polygon, ...]), ...]}`` (mm)."""
    out: dict[str, list] = {}
    out["BODY"] = [(z, [_ellipse(0, 0, 150, 100)]) for z in _planes(-60, 60)]

    def ellipsoid(c, ax):
        res = []
        for z in _planes(c[2] - ax[2], c[2] + ax[2]):
            f = 1.0 - ((z - c[2]) / ax[2]) ** 2
            if f <= 1e-6:
                continue
            res.append((z, [_ellipse(c[0], c[1], ax[0] * math.sqrt(f), ax[1] * math.sqrt(f))]))
        return res

    out["LUNG_R"] = ellipsoid((-70.0, 0.0, 0.0), (55.0, 70.0, 56.0))
    out["GTV"] = ellipsoid(PTV_CENTRE_MM, (GTV_RADIUS_MM,) * 3)
    out["PTV"] = ellipsoid(PTV_CENTRE_MM, (PTV_RADIUS_MM,) * 3)
    out["CHESTWALL_R"] = []
    for z in _planes(-40, 40):
        outer, inner = _half_ellipse_ring(150, 100, 136, 88)
        out["CHESTWALL_R"].append((z, [outer, inner]))
    out["CORD"] = [(z, [_ellipse(0, 70, 5, 5, 64)]) for z in _planes(-60, 60)]
    out["OESOPHAGUS"] = [(z, [_ellipse(0, 40, 8, 8, 64)]) for z in _planes(-60, 60)]
    out["HEART"] = ellipsoid((45.0, -25.0, -20.0), (45.0, 40.0, 35.0))
    return out


def dose_field(spec: PhantomSpec, x, y, z) -> np.ndarray:
    """Plan dose (Gy) of the model at points (broadcast arrays, mm)."""
    cx, cy, cz = PTV_CENTRE_MM
    if spec.dose_model == "linear":
        gx, gy, gz = spec.gradient_gy_per_mm
        return spec.prescription_gy + gx * (x - cx) + gy * (y - cy) + gz * (z - cz)
    if spec.dose_model != "sbrt":
        raise ValueError(f"dose_model must be 'sbrt' or 'linear', got {spec.dose_model!r}")
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
    out = np.maximum(r - PTV_RADIUS_MM, 0.0)
    return spec.prescription_gy * np.exp(-out ** 2 / (2.0 * spec.sigma_mm ** 2))


def _base(modality: str, sop_class: str, key: str):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = _uid(key, "sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.dataset.FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "RTOPT^LUNGPHANTOM"
    ds.PatientID = "RTOPT-LUNG-PHANTOM"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid("study")
    ds.SeriesInstanceUID = _uid(key, "series")
    ds.StudyDate = "20240101"
    ds.StudyTime = "000000"
    ds.Manufacturer = "rtopt"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    return ds


def _save(ds, path: Path) -> None:
    import pydicom

    major = int(pydicom.__version__.split(".")[0])
    if major >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.4
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def write_phantom(out_dir: str | Path, spec: PhantomSpec | None = None) -> dict[str, Path]:
    """Write ``RTDOSE.dcm`` and ``RTSTRUCT.dcm`` of the phantom into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Folder (created if missing).
    spec : PhantomSpec, optional
        Options (default: the shipped plan, 54 Gy in 3 fractions, SBRT fall-off).

    Returns
    -------
    dict
        ``{"RTDOSE": path, "RTSTRUCT": path}``.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    spec = spec or PhantomSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for_uid = _uid("frame of reference")

    # ---------------------------------------------------------------- RT Structure Set
    ss = _base("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3", "rtstruct")
    ss.StructureSetLabel = "LUNG_PHANTOM"
    ss.StructureSetDate = "20240101"
    ss.StructureSetTime = "000000"
    ref = Dataset()
    ref.FrameOfReferenceUID = for_uid
    ss.ReferencedFrameOfReferenceSequence = Sequence([ref])
    rois, roi_contours, observations = [], [], []
    colours = [[255, 220, 180], [0, 128, 255], [255, 0, 0], [255, 128, 0], [200, 200, 0],
               [0, 255, 0], [160, 80, 255], [255, 0, 255]]
    for number, (name, planes) in enumerate(structures().items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = colours[(number - 1) % len(colours)]
        seq = []
        for z, polys in planes:
            for poly in polys:
                c = Dataset()
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(poly)
                pts = np.column_stack([poly, np.full(len(poly), z)])
                c.ContourData = [f"{v:.4f}".rstrip("0").rstrip(".") for v in pts.ravel()]
                seq.append(c)
        rc.ContourSequence = Sequence(seq)
        roi_contours.append(rc)
        ob = Dataset()
        ob.ObservationNumber = number
        ob.ReferencedROINumber = number
        ob.RTROIInterpretedType = "PTV" if name == "PTV" else (
            "GTV" if name == "GTV" else ("EXTERNAL" if name == "BODY" else "ORGAN"))
        ob.ROIInterpreter = ""
        observations.append(ob)
    ss.StructureSetROISequence = Sequence(rois)
    ss.ROIContourSequence = Sequence(roi_contours)
    ss.RTROIObservationsSequence = Sequence(observations)

    # ---------------------------------------------------------------- RT Dose
    ds = _base("RTDOSE", "1.2.840.10008.5.1.4.1.1.481.2", "rtdose")
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid or for_uid
    step = DOSE_SPACING_MM
    xs = np.arange(spec.grid_x_mm[0], spec.grid_x_mm[1] + 1e-6, step)
    ys = np.arange(spec.grid_y_mm[0], spec.grid_y_mm[1] + 1e-6, step)
    zs = np.arange(spec.grid_z_mm[0], spec.grid_z_mm[1] + 1e-6, step)
    gz, gy, gx = np.meshgrid(zs, ys, xs, indexing="ij")
    plan = np.maximum(dose_field(spec, gx, gy, gz), 0.0)
    summation = spec.summation.upper()
    stored = plan / spec.n_fractions if summation == "FRACTION" else plan
    scaling = max(float(stored.max()), 1e-6) / 65000.0
    pixels = np.round(stored / scaling).astype(np.uint16)
    ds.ImagePositionPatient = [float(xs[0]), float(ys[0]), float(zs[0])]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [step, step]
    ds.SliceThickness = step
    ds.Rows, ds.Columns = len(ys), len(xs)
    ds.NumberOfFrames = len(zs)
    ds.FrameIncrementPointer = (0x3004, 0x000C)
    offsets = zs if spec.absolute_frame_offsets else zs - zs[0]
    ds.GridFrameOffsetVector = [float(v) for v in offsets]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation
    ds.DoseGridScaling = f"{scaling:.10g}"
    ds.DoseComment = (f"rtopt lung phantom: {spec.dose_model} model, "
                      f"{spec.prescription_gy:g} Gy in {spec.n_fractions} fractions")
    ds.PixelData = pixels.tobytes()
    paths = {"RTDOSE": out / "RTDOSE.dcm", "RTSTRUCT": out / "RTSTRUCT.dcm"}
    _save(ds, paths["RTDOSE"])
    _save(ss, paths["RTSTRUCT"])
    return paths
