"""Dose-volume histograms: the :class:`DVH` object, its metrics and fractionation conversion.

Conventions (docs/dose.md section 2):

* A DVH holds *differential* bins: bin ``i`` covers physical doses ``[edges[i], edges[i+1])``
  (Gy, total dose of the plan, i.e. all fractions) and holds ``volume_cc[i]`` cm^3.  A bin's
  dose is its centre.
* Cumulative volumes ``V(D)`` (volume receiving at least ``D``) are piecewise linear between
  the edges: the volume of a bin is spread uniformly over its dose range.  ``Dv`` metrics
  invert that curve, so ``D2cc`` is the smallest dose received by the hottest 2 cm^3.
* ``n_fractions`` is the number of fractions the plan dose is delivered in; BED and EQD2
  conversions assume each voxel receives ``D / n`` per fraction (uniform fractionation of the
  plan's shape).

Metric syntax (:func:`parse_metric`), case-insensitive, no spaces::

    Dmax | Dmin | Dmean            dose in Gy
    D<v>cc      e.g. D0.1cc, D2cc  minimum dose to the hottest v cm^3 (Gy)
    D<x>%       e.g. D95%, D2%     minimum dose to the hottest x % of the volume (Gy)
    V<x>Gy      e.g. V20Gy         volume receiving >= x Gy (cm^3)
    V<x>Gy%     e.g. V20Gy%        the same as a percentage of the structure volume
    CV<x>Gy     e.g. CV13.5Gy      critical volume: volume receiving < x Gy (cm^3)

Any metric may be prefixed by ``EQD2_`` or ``BED_``: doses (in the result, and the threshold of
``V``/``CV`` metrics) are then EQD2 or BED of each bin for the DVH's number of fractions and the
alpha/beta given (``EQD2_V20Gy``, ``BED_D2cc``).  ``V_EQD2_20Gy`` is accepted for
``EQD2_V20Gy``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np

from rtopt.model import radiobiology
from rtopt.dose import DoseError

__all__ = ["DVH", "Metric", "parse_metric", "evaluate_metric", "evaluate_metrics", "DOSE_QUANTITIES"]

DOSE_QUANTITIES = ("physical", "eqd2", "bed")
"""Dose quantities a metric can be expressed in."""


@dataclasses.dataclass(frozen=True)
class DVH:
    """Differential dose-volume histogram of one structure.

    Parameters
    ----------
    name : str
        Structure name.
    edges_gy : numpy.ndarray
        Bin edges (Gy, total plan dose), shape ``(k + 1,)``, strictly increasing, ``>= 0``.
    volume_cc : numpy.ndarray
        Volume of each bin (cm^3), shape ``(k,)``, ``>= 0``.
    n_fractions : int or None
        Number of fractions the plan is delivered in (needed for BED/EQD2).
    volume_outside_cc : float
        Volume of the structure outside the dose grid (cm^3): its dose is unknown and it is
        not in the bins.
    source : str
        Where the DVH came from (file name), for messages.
    """

    name: str
    edges_gy: np.ndarray
    volume_cc: np.ndarray
    n_fractions: int | None = None
    volume_outside_cc: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges_gy, dtype=float)
        vol = np.asarray(self.volume_cc, dtype=float)
        if edges.ndim != 1 or vol.ndim != 1 or edges.size != vol.size + 1 or vol.size == 0:
            raise DoseError(f"{self._where()}DVH needs k >= 1 volumes and k + 1 dose edges, "
                            f"got {vol.size} and {edges.size}")
        if np.any(~np.isfinite(edges)) or np.any(np.diff(edges) <= 0) or edges[0] < 0:
            raise DoseError(f"{self._where()}DVH dose edges must be finite, >= 0 and strictly "
                            "increasing")
        if np.any(~(vol >= 0)):
            raise DoseError(f"{self._where()}DVH volumes must be >= 0 cm^3")
        if self.n_fractions is not None and int(self.n_fractions) < 1:
            raise DoseError(f"{self._where()}n_fractions must be >= 1, got {self.n_fractions}")
        object.__setattr__(self, "edges_gy", edges)
        object.__setattr__(self, "volume_cc", vol)

    def _where(self) -> str:
        label = f"{self.source}: " if self.source else ""
        return f"{label}{self.name}: " if self.name else label

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_samples(cls, name: str, doses_gy, weights_cc, bin_width_gy: float = 0.01,
                     **kw) -> "DVH":
        """DVH of sampled points: each point ``i`` has dose ``doses_gy[i]`` and volume
        ``weights_cc[i]`` (cm^3).  Bins of ``bin_width_gy`` (Gy) start at 0 Gy and end past
        the largest dose."""
        if not bin_width_gy > 0:
            raise DoseError(f"bin width must be > 0 Gy, got {bin_width_gy}")
        d = np.asarray(doses_gy, dtype=float).ravel()
        w = np.broadcast_to(np.asarray(weights_cc, dtype=float), d.shape).ravel()
        top = float(np.max(d)) if d.size else 0.0
        nbins = max(1, int(math.floor(top / bin_width_gy)) + 1)
        edges = np.arange(nbins + 1) * bin_width_gy
        idx = np.clip(np.floor(d / bin_width_gy).astype(np.int64), 0, nbins - 1)
        vol = np.bincount(idx, weights=w, minlength=nbins)
        return cls(name, edges, vol, **kw)

    @classmethod
    def from_cumulative(cls, name: str, doses_gy, cumulative_cc, **kw) -> "DVH":
        """DVH from a cumulative curve: ``cumulative_cc[j]`` cm^3 receive ``>= doses_gy[j]`` Gy.

        The volume receiving at least the first dose point is the structure's volume; volume
        still left at the last point is placed in one more bin as wide as the last interval.
        Increases of the cumulative volume with dose (export rounding) are removed."""
        d = np.asarray(doses_gy, dtype=float)
        c = np.asarray(cumulative_cc, dtype=float)
        if d.size < 2 or d.size != c.size:
            raise DoseError(f"{kw.get('source', '')}: {name}: a cumulative DVH needs at least "
                            "two (dose, volume) points")
        order = np.argsort(d, kind="stable")
        d, c = d[order], c[order]
        keep = np.concatenate([[True], np.diff(d) > 0])
        d, c = d[keep], c[keep]
        c = np.minimum.accumulate(c)  # a cumulative DVH never increases with dose
        vol = np.concatenate([c[:-1] - c[1:], [c[-1]]])
        last_width = d[-1] - d[-2]
        edges = np.concatenate([d, [d[-1] + last_width]])
        return cls(name, edges, vol, **kw)

    @classmethod
    def from_differential(cls, name: str, doses_gy, volume_cc, **kw) -> "DVH":
        """DVH from bin centres ``doses_gy`` (Gy, equally or unequally spaced) and volumes."""
        centres = np.asarray(doses_gy, dtype=float)
        if centres.size < 1:
            raise DoseError(f"{kw.get('source', '')}: {name}: empty differential DVH")
        if centres.size == 1:
            edges = np.array([max(0.0, centres[0] - 0.005), centres[0] + 0.005])
        else:
            mids = 0.5 * (centres[1:] + centres[:-1])
            first = max(0.0, centres[0] - (mids[0] - centres[0]))
            last = centres[-1] + (centres[-1] - mids[-1])
            edges = np.concatenate([[first], mids, [last]])
        return cls(name, edges, volume_cc, **kw)

    # ------------------------------------------------------------------ basic quantities
    @property
    def centres_gy(self) -> np.ndarray:
        """Dose of each bin (Gy): the bin centre."""
        return 0.5 * (self.edges_gy[1:] + self.edges_gy[:-1])

    @property
    def volume_total_cc(self) -> float:
        """Volume inside the dose grid (cm^3): the sum of the bins."""
        return float(np.sum(self.volume_cc))

    @property
    def fraction_outside(self) -> float:
        """Fraction of the structure's volume outside the dose grid (0-1)."""
        total = self.volume_total_cc + self.volume_outside_cc
        return self.volume_outside_cc / total if total > 0 else 0.0

    def _occupied(self) -> np.ndarray:
        return np.flatnonzero(self.volume_cc > 0)

    def d_mean(self) -> float:
        """Mean dose (Gy) over the volume inside the grid."""
        tot = self.volume_total_cc
        return float(np.dot(self.centres_gy, self.volume_cc) / tot) if tot > 0 else 0.0

    def d_max(self) -> float:
        """Maximum dose (Gy): the upper edge of the highest non-empty bin (where the cumulative
        DVH reaches zero; at most one bin width above the largest sampled dose)."""
        occ = self._occupied()
        return float(self.edges_gy[occ[-1] + 1]) if occ.size else 0.0

    def d_min(self) -> float:
        """Minimum dose (Gy): the lower edge of the lowest non-empty bin."""
        occ = self._occupied()
        return float(self.edges_gy[occ[0]]) if occ.size else 0.0

    def cumulative_cc(self) -> np.ndarray:
        """Cumulative volume (cm^3) receiving at least each edge dose, shape ``(k + 1,)``."""
        c = np.concatenate([np.cumsum(self.volume_cc[::-1])[::-1], [0.0]])
        return c

    def volume_at_dose(self, dose_gy: float) -> float:
        """Volume (cm^3) receiving at least ``dose_gy`` Gy (linear within bins)."""
        return float(np.interp(dose_gy, self.edges_gy, self.cumulative_cc(),
                               left=self.volume_total_cc, right=0.0))

    def volume_below_dose(self, dose_gy: float) -> float:
        """Critical volume (cm^3): volume receiving less than ``dose_gy`` Gy."""
        return self.volume_total_cc - self.volume_at_dose(dose_gy)

    def dose_at_volume(self, volume_cc: float) -> float:
        """Minimum dose (Gy) to the hottest ``volume_cc`` cm^3 (``D<v>cc``).

        Returns the minimum dose when ``volume_cc`` is at least the structure's volume."""
        if volume_cc < 0:
            raise DoseError(f"{self._where()}volume must be >= 0 cm^3, got {volume_cc}")
        cum = self.cumulative_cc()
        if volume_cc >= cum[0]:
            return self.d_min() if volume_cc > cum[0] else float(self.edges_gy[0])
        if volume_cc <= 0:
            return self.d_max()
        # cum is non-increasing; interpolate on the reversed (increasing) arrays
        rc, re_ = cum[::-1], self.edges_gy[::-1]
        j = int(np.searchsorted(rc, volume_cc, side="left"))
        c0, c1, e0, e1 = rc[j - 1], rc[j], re_[j - 1], re_[j]
        return float(e1) if c1 == c0 else float(e0 + (volume_cc - c0) * (e1 - e0) / (c1 - c0))

    def dose_at_percent(self, percent: float) -> float:
        """Minimum dose (Gy) to the hottest ``percent`` % of the volume inside the grid."""
        if not 0 <= percent <= 100:
            raise DoseError(f"{self._where()}volume percentage must be in [0, 100], "
                            f"got {percent}")
        return self.dose_at_volume(self.volume_total_cc * percent / 100.0)

    # ------------------------------------------------------------------ fractionation
    def with_fractions(self, n_fractions: int) -> "DVH":
        """The same plan dose, declared as delivered in ``n_fractions`` fractions."""
        return dataclasses.replace(self, n_fractions=int(n_fractions))

    def scaled(self, factor: float) -> "DVH":
        """Every bin's dose multiplied by ``factor`` (> 0); volumes unchanged."""
        if not factor > 0:
            raise DoseError(f"{self._where()}dose scale factor must be > 0, got {factor}")
        return dataclasses.replace(self, edges_gy=self.edges_gy * factor)

    def rescaled(self, new_dose_per_fraction_gy: float, prescription_per_fraction_gy: float,
                 n_fractions: int | None = None) -> "DVH":
        """The plan's shape kept at a new prescription dose per fraction.

        Each bin's dose per fraction scales by ``new / prescription``; with ``n_fractions``
        the plan is then delivered in that many fractions (default: the DVH's own number).

        Parameters
        ----------
        new_dose_per_fraction_gy : float
            New prescription dose per fraction (Gy).
        prescription_per_fraction_gy : float
            The plan's prescription dose per fraction (Gy).
        n_fractions : int, optional
            Number of fractions of the new schedule.

        Returns
        -------
        DVH
            Total plan dose per bin ``D_i / n_old * (new / old) * n_new``.
        """
        n_old = self._need_fractions("rescaling")
        n_new = n_old if n_fractions is None else int(n_fractions)
        if not (new_dose_per_fraction_gy > 0 and prescription_per_fraction_gy > 0):
            raise DoseError(f"{self._where()}doses per fraction must be > 0 Gy")
        ratio = new_dose_per_fraction_gy / prescription_per_fraction_gy
        out = self.scaled(ratio * n_new / n_old)
        return dataclasses.replace(out, n_fractions=n_new)

    def _need_fractions(self, what: str) -> int:
        if self.n_fractions is None:
            raise DoseError(f"{self._where()}{what} needs the number of fractions of the plan")
        return int(self.n_fractions)

    def bed_of(self, doses_gy, alpha_beta_gy: float) -> np.ndarray:
        """BED (Gy) of total plan doses ``doses_gy`` given in this DVH's fractions."""
        n = self._need_fractions("BED")
        d = np.asarray(doses_gy, dtype=float)
        return radiobiology.bed_uniform(n, d / n, alpha_beta_gy)

    def eqd2_of(self, doses_gy, alpha_beta_gy: float) -> np.ndarray:
        """EQD2 (Gy) of total plan doses ``doses_gy`` given in this DVH's fractions."""
        return radiobiology.eqd2_from_bed(self.bed_of(doses_gy, alpha_beta_gy), alpha_beta_gy)

    def bin_bed(self, alpha_beta_gy: float) -> np.ndarray:
        """BED (Gy) of every bin (at its centre dose), shape ``(k,)``."""
        return np.asarray(self.bed_of(self.centres_gy, alpha_beta_gy), dtype=float)

    def bin_eqd2(self, alpha_beta_gy: float) -> np.ndarray:
        """EQD2 (Gy) of every bin (at its centre dose), shape ``(k,)``."""
        return np.asarray(self.eqd2_of(self.centres_gy, alpha_beta_gy), dtype=float)

    def in_quantity(self, quantity: str, alpha_beta_gy: float | None = None) -> "DVH":
        """This DVH with its dose axis in ``quantity`` (``"physical"``, ``"eqd2"``, ``"bed"``).

        BED and EQD2 increase with dose, so edges map to edges and the volumes stay in their
        bins (the DVH of a monotonic transform).  The result has ``n_fractions=None``: its
        doses are no longer physical doses to fractionate."""
        q = quantity.lower()
        if q == "physical":
            return self
        if q not in DOSE_QUANTITIES:
            raise DoseError(f"unknown dose quantity {quantity!r}; one of {DOSE_QUANTITIES}")
        if alpha_beta_gy is None:
            raise DoseError(f"{self._where()}{q.upper()} needs an alpha/beta (Gy)")
        conv = self.eqd2_of if q == "eqd2" else self.bed_of
        return dataclasses.replace(self, edges_gy=np.asarray(conv(self.edges_gy, alpha_beta_gy),
                                                             dtype=float), n_fractions=None)

    # ------------------------------------------------------------------ export
    def relative_volumes(self) -> np.ndarray:
        """Volume fraction of each bin (sums to 1 over the volume inside the grid)."""
        tot = self.volume_total_cc
        return self.volume_cc / tot if tot > 0 else np.zeros_like(self.volume_cc)

    def summary(self) -> dict:
        """Volume (cm^3), outside volume, min/mean/max and the standard D metrics (Gy)."""
        return {
            "structure": self.name,
            "volume_cc": self.volume_total_cc,
            "volume_outside_grid_cc": self.volume_outside_cc,
            "n_fractions": self.n_fractions,
            "Dmin_gy": self.d_min(), "Dmean_gy": self.d_mean(), "Dmax_gy": self.d_max(),
            "D0.1cc_gy": self.dose_at_volume(0.1), "D1cc_gy": self.dose_at_volume(1.0),
            "D2cc_gy": self.dose_at_volume(2.0), "D95%_gy": self.dose_at_percent(95.0),
            "D2%_gy": self.dose_at_percent(2.0),
        }


# ---------------------------------------------------------------------- metric syntax
@dataclasses.dataclass(frozen=True)
class Metric:
    """A parsed DVH metric.

    Attributes
    ----------
    text : str
        The specification as given.
    kind : str
        ``"dmax"``, ``"dmin"``, ``"dmean"``, ``"d_cc"``, ``"d_pct"``, ``"v_gy"``, ``"v_gy_pct"``
        or ``"cv_gy"``.
    value : float or None
        Volume (cm^3 or %) for D metrics, dose threshold (Gy) for V and CV metrics.
    quantity : str
        ``"physical"``, ``"eqd2"`` or ``"bed"``.
    """

    text: str
    kind: str
    value: float | None
    quantity: str = "physical"

    @property
    def unit(self) -> str:
        """Unit of the metric's value: ``"Gy"``, ``"cc"`` or ``"%"``."""
        if self.kind.startswith("d"):
            return "Gy"
        return "%" if self.kind == "v_gy_pct" else "cc"


_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_PATTERNS = [
    (re.compile(r"dmax"), "dmax"), (re.compile(r"dmin"), "dmin"),
    (re.compile(r"dmean"), "dmean"),
    (re.compile(rf"d{_NUM}cc"), "d_cc"), (re.compile(rf"d{_NUM}%"), "d_pct"),
    (re.compile(rf"v{_NUM}gy%"), "v_gy_pct"), (re.compile(rf"v{_NUM}gy"), "v_gy"),
    (re.compile(rf"cv{_NUM}gy"), "cv_gy"),
]


def parse_metric(text: str) -> Metric:
    """Parse a metric specification (syntax in the module docstring).

    Raises
    ------
    rtopt.dose.DoseError
        When ``text`` is not a metric, with the accepted forms.
    """
    s = str(text).strip().lower().replace(" ", "")
    alias = re.fullmatch(rf"(c?v)_(eqd2|bed)_{_NUM}gy(%?)", s)
    if alias:
        s = f"{alias.group(2)}_{alias.group(1)}{alias.group(3)}gy{alias.group(4)}"
    quantity = "physical"
    for q in ("eqd2", "bed"):
        if s.startswith(q + "_"):
            quantity, s = q, s[len(q) + 1:]
    for pattern, kind in _PATTERNS:
        m = pattern.fullmatch(s)
        if m:
            value = float(m.group(1)) if m.groups() else None
            if kind == "d_pct" and not 0 <= value <= 100:
                break
            return Metric(str(text), kind, value, quantity)
    raise DoseError(f"metric {text!r}: not understood; use Dmax, Dmin, Dmean, D<v>cc, D<x>%, "
                    "V<x>Gy, V<x>Gy%, CV<x>Gy, optionally prefixed EQD2_ or BED_")


def evaluate_metric(dvh: DVH, metric: str | Metric, alpha_beta_gy: float | None = None) -> float:
    """Value of ``metric`` for ``dvh`` (Gy for D metrics, cm^3 or % for V metrics).

    Parameters
    ----------
    dvh : DVH
        The structure's DVH (total plan dose).
    metric : str or Metric
        Specification, e.g. ``"D2cc"``, ``"EQD2_V20Gy"``.
    alpha_beta_gy : float, optional
        alpha/beta (Gy), required for EQD2 and BED metrics (with ``dvh.n_fractions``).
    """
    m = metric if isinstance(metric, Metric) else parse_metric(metric)
    h = dvh.in_quantity(m.quantity, alpha_beta_gy)
    if m.kind == "dmax":
        return h.d_max()
    if m.kind == "dmin":
        return h.d_min()
    if m.kind == "dmean":
        return h.d_mean()
    if m.kind == "d_cc":
        return h.dose_at_volume(m.value)
    if m.kind == "d_pct":
        return h.dose_at_percent(m.value)
    if m.kind == "v_gy":
        return h.volume_at_dose(m.value)
    if m.kind == "v_gy_pct":
        tot = h.volume_total_cc
        return 100.0 * h.volume_at_dose(m.value) / tot if tot > 0 else 0.0
    return h.volume_below_dose(m.value)


def evaluate_metrics(dvh: DVH, metrics: Sequence[str],
                     alpha_beta_gy: float | None = None) -> dict[str, float]:
    """``{spec: value}`` for each metric specification (see :func:`evaluate_metric`)."""
    return {spec: evaluate_metric(dvh, spec, alpha_beta_gy) for spec in metrics}
