"""Dose distributions of real plans: DICOM RT reading, DVHs, fractionation, NTCP, blood dose.

Sub-modules (each imports numpy, and :mod:`rtopt.dose.dicom` and :mod:`rtopt.dose.phantom`
pydicom, only when imported themselves):

``dvh``
    :class:`~rtopt.dose.dvh.DVH` (differential dose bins per plan and their volumes), metrics
    (``"D2cc"``, ``"V20Gy"``, ``"EQD2_Dmean"`` ...), scaling to a new dose per fraction and
    BED/EQD2 conversion of every bin.
``dicom``
    Cumulative DVHs from a DICOM RT Dose and an RT Structure Set.
``exports``
    Readers of DVH text exports (Eclipse, RayStation, plain CSV).
``ntcp``
    LKB, logistic EUD and relative-seriality NTCP models and the shipped parameter sets.
``blood``
    Dose to circulating blood (pass model after Yovino et al. 2013; EDIC of Jin et al.).
``phantom``
    A synthetic lung SBRT plan (RT Dose + RT Structure Set) with closed-form volumes and doses.

The conventions are in docs/dose.md.
"""

from __future__ import annotations

from rtopt.common.errors import RtoptError


class DoseError(RtoptError):
    """A dose or structure file, a DVH export or a DVH metric is invalid.

    The message is one line and starts with the file it concerns when there is one.
    """


__all__ = ["DoseError"]
