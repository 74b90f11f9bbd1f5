"""DVH metrics and NTCP of many candidate schedules at once, with the plan's shape kept.

A plan's DVH is scaled to a candidate schedule of tumour doses per fraction ``d_1 .. d_n``
(docs/dose.md, "DVHs in instances"): a voxel whose plan dose per fraction is ``r`` times the
plan's prescription dose per fraction receives ``r d_j`` in fraction ``j``.  Its LQ BED at
alpha/beta ``ab`` is then

    ``BED(r) = r S1 + r^2 S2 / ab``,  ``S1 = sum_j d_j``,  ``S2 = sum_j d_j^2``,

so a schedule enters every bin only through ``(S1, S2)``, and BED increases with ``r`` for
every schedule: the order of the bins is the same for all schedules.  Hence

* ``D<v>cc``, ``D<x>%``, ``Dmax``, ``Dmin``: the bin and the position inside it do not depend on
  the schedule; the value is ``BED`` of the two edges interpolated at that position (O(1) per
  schedule);
* ``Dmean`` in BED or EQD2: ``S1 <r> + S2 <r^2> / ab`` with bin averages (O(1) per schedule);
* ``V<x>Gy``, ``CV<x>Gy``: the threshold's ``r`` solves a quadratic, then one ``searchsorted``;
* NTCP needs every bin: it is computed once per distinct ``(S1, S2)`` pair.

The conventions are those of :class:`rtopt.dose.dvh.DVH` with its dose axis converted bin edge
by bin edge (``DVH.in_quantity``): for a uniform schedule of ``n`` fractions the values equal
``evaluate_metric(dvh.rescaled(d, prescription, n), metric, ab)`` to rounding (tested).

Metric values are returned in the metric's own quantity: BED or EQD2 (``BED_``/``EQD2_``
prefix) or, for a physical-dose metric, the LQ-isoeffective total dose in a stated number of
fractions (the way TG-101 and similar tables state limits "in 3 fractions"); for a schedule of
exactly that many equal fractions it is the physical dose itself.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rtopt.dose import DoseError
from rtopt.dose.dvh import DVH, Metric, parse_metric
from rtopt.model import radiobiology

__all__ = ["ScheduleDVH", "to_bed", "from_bed", "dose_sums"]


def dose_sums(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sum d, sum d^2)`` of each row of tumour doses per fraction ``D`` (Gy, shape (N, H))."""
    D = np.atleast_2d(np.asarray(D, dtype=float))
    return D.sum(axis=1), (D * D).sum(axis=1)


def to_bed(x, quantity: str, alpha_beta_gy: float, fractions: int | None = None) -> np.ndarray:
    """Convert a dose in ``quantity`` to BED (Gy).

    Parameters
    ----------
    x : array_like
        Dose (Gy): BED, EQD2, or the total physical dose in ``fractions`` equal fractions.
    quantity : {"bed", "eqd2", "physical"}
    alpha_beta_gy : float
        alpha/beta (Gy).
    fractions : int, optional
        Fraction count of a physical dose (required for ``"physical"``).
    """
    x = np.asarray(x, dtype=float)
    if quantity == "bed":
        return x
    if quantity == "eqd2":
        return np.asarray(radiobiology.bed_from_eqd2(x, alpha_beta_gy), dtype=float)
    if fractions is None:
        raise DoseError("a physical dose needs the number of fractions it is stated for")
    return np.asarray(radiobiology.bed_uniform(fractions, x / fractions, alpha_beta_gy),
                      dtype=float)


def from_bed(b, quantity: str, alpha_beta_gy: float, fractions: int | None = None) -> np.ndarray:
    """Inverse of :func:`to_bed`: BED (Gy) to ``quantity``."""
    b = np.asarray(b, dtype=float)
    if quantity == "bed":
        return b
    if quantity == "eqd2":
        return np.asarray(radiobiology.eqd2_from_bed(b, alpha_beta_gy), dtype=float)
    if fractions is None:
        raise DoseError("a physical dose needs the number of fractions it is stated for")
    d = radiobiology.dose_per_fraction_for_bed(np.maximum(b, 0.0), fractions, alpha_beta_gy)
    return np.asarray(d, dtype=float) * fractions


@dataclasses.dataclass(frozen=True)
class ScheduleDVH:
    """A plan's DVH as a function of the tumour schedule (shape kept; module docstring).

    Parameters
    ----------
    dvh : DVH
        The structure's DVH of the plan (total plan dose, ``n_fractions`` set).
    prescription_dose_per_fraction_gy : float
        The plan's prescription (tumour) dose per fraction (Gy).
    """

    dvh: DVH
    prescription_dose_per_fraction_gy: float

    def __post_init__(self) -> None:
        if self.dvh.n_fractions is None:
            raise DoseError(f"{self.dvh.name}: the plan's number of fractions is needed")
        if not self.prescription_dose_per_fraction_gy > 0:
            raise DoseError("prescription dose per fraction must be > 0 Gy")

    # ------------------------------------------------------------------ plan geometry
    @property
    def r_edges(self) -> np.ndarray:
        """Bin edges as dose per fraction per Gy of prescribed dose per fraction (1)."""
        return self.dvh.edges_gy / (self.dvh.n_fractions * self.prescription_dose_per_fraction_gy)

    @property
    def volume_cc(self) -> float:
        """Volume inside the dose grid (cm^3)."""
        return self.dvh.volume_total_cc

    def equivalent_sparing_factor(self, metric: str | Metric) -> float | None:
        """The ratio ``r`` of a dose-at-volume metric (``Dmax``, ``D2cc``, ...): its BED is that
        of an organ with ``sparing_factor = r`` (None for other metrics)."""
        m = metric if isinstance(metric, Metric) else parse_metric(metric)
        pos = self._position(m)
        if pos is None:
            return None
        j, t = pos
        r = self.r_edges
        return float(r[j] + t * (r[j + 1] - r[j]))

    def _position(self, m: Metric) -> tuple[int, float] | None:
        """Bin ``j`` and position ``t`` in [0, 1] of a dose-at-volume metric (schedule-free)."""
        h = self.dvh
        if m.kind == "dmax":
            x = h.d_max()
        elif m.kind == "dmin":
            x = h.d_min()
        elif m.kind == "d_cc":
            x = h.dose_at_volume(m.value)
        elif m.kind == "d_pct":
            x = h.dose_at_percent(m.value)
        else:
            return None
        e = h.edges_gy
        j = int(np.clip(np.searchsorted(e, x, side="right") - 1, 0, e.size - 2))
        t = float(np.clip((x - e[j]) / (e[j + 1] - e[j]), 0.0, 1.0))
        return j, t

    # ------------------------------------------------------------------ BED of bins
    @staticmethod
    def _bed(r, s1, s2, alpha_beta_gy: float) -> np.ndarray:
        return radiobiology.bed_scaled_course(r, s1, s2, alpha_beta_gy)

    def bed_edges(self, s1, s2, alpha_beta_gy: float) -> np.ndarray:
        """BED (Gy) of every bin edge for each schedule, shape ``(N, k + 1)``."""
        s1 = np.asarray(s1, dtype=float)[:, None]
        s2 = np.asarray(s2, dtype=float)[:, None]
        return self._bed(self.r_edges[None, :], s1, s2, alpha_beta_gy)

    # ------------------------------------------------------------------ metrics
    def metric(self, metric: str | Metric, s1, s2, alpha_beta_gy: float,
               fractions: int | None = None) -> np.ndarray:
        """Value of a DVH metric for each schedule ``(S1, S2)``.

        Parameters
        ----------
        metric : str or Metric
            Metric specification (:func:`rtopt.dose.dvh.parse_metric`).
        s1, s2 : array_like, shape (N,)
            ``sum d`` (Gy) and ``sum d^2`` (Gy^2) of the tumour doses per fraction.
        alpha_beta_gy : float
            The organ's alpha/beta (Gy).
        fractions : int, optional
            For physical-dose metrics: the fraction count the dose is stated in (required).

        Returns
        -------
        numpy.ndarray, shape (N,)
            Gy (BED, EQD2 or isoeffective physical dose in ``fractions``) for D metrics,
            cm^3 for ``V``/``CV``, % for ``V..%``.
        """
        m = metric if isinstance(metric, Metric) else parse_metric(metric)
        q = m.quantity
        if q == "physical" and fractions is None:
            raise DoseError(f"metric {m.text!r}: a physical dose needs the number of fractions "
                            "it is stated for (or an EQD2_/BED_ prefix)")
        s1 = np.atleast_1d(np.asarray(s1, dtype=float))
        s2 = np.atleast_1d(np.asarray(s2, dtype=float))
        ab = float(alpha_beta_gy)
        r = self.r_edges
        pos = self._position(m)
        if pos is not None:
            j, t = pos
            # interpolate in the metric's quantity, as DVH.in_quantity does
            q0 = from_bed(self._bed(r[j], s1, s2, ab), q, ab, fractions)
            q1 = from_bed(self._bed(r[j + 1], s1, s2, ab), q, ab, fractions)
            return q0 + t * (q1 - q0)
        if m.kind == "dmean":
            if q == "physical":
                return self._mean_general(s1, s2, ab, q, fractions)
            w = self.dvh.relative_volumes()
            mean_r = float(np.dot(w, 0.5 * (r[:-1] + r[1:])))
            mean_r2 = float(np.dot(w, 0.5 * (r[:-1] ** 2 + r[1:] ** 2)))
            return from_bed(s1 * mean_r + s2 * mean_r2 / ab, q, ab, fractions)
        # V and CV metrics: volume receiving at least the threshold (in BED)
        vol = self._volume_at(float(m.value), q, fractions, s1, s2, ab)
        total = self.volume_cc
        if m.kind == "v_gy":
            return vol
        if m.kind == "v_gy_pct":
            return 100.0 * vol / total if total > 0 else np.zeros_like(vol)
        return total - vol

    def _volume_at(self, x: float, q: str, fractions: int | None, s1: np.ndarray,
                   s2: np.ndarray, ab: float) -> np.ndarray:
        """Volume (cm^3) receiving at least ``x`` Gy in quantity ``q`` (linear in ``q`` within
        a bin, as ``DVH.in_quantity`` then ``DVH.volume_at_dose``)."""
        thr = float(to_bed(x, q, ab, fractions))
        r = self.r_edges
        cum = self.dvh.cumulative_cc()
        rstar = radiobiology.scale_for_bed(thr, s1, s2, ab)
        j = np.clip(np.searchsorted(r, rstar, side="right") - 1, 0, r.size - 2)
        q0 = from_bed(self._bed(r[j], s1, s2, ab), q, ab, fractions)
        q1 = from_bed(self._bed(r[j + 1], s1, s2, ab), q, ab, fractions)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.clip(np.where(q1 > q0, (x - q0) / (q1 - q0), 1.0), 0.0, 1.0)
        vol = cum[j] + t * (cum[j + 1] - cum[j])
        vol = np.where(rstar < r[0], cum[0], vol)
        return np.where(rstar >= r[-1], 0.0, vol)

    def _mean_general(self, s1, s2, ab, q, fractions) -> np.ndarray:
        """Mean over bins of the per-bin dose in ``q`` (needs every bin; per distinct row)."""
        out = np.empty(s1.size)
        w = self.dvh.relative_volumes()
        keys, inv = np.unique(np.stack([s1, s2], axis=1), axis=0, return_inverse=True)
        for i, (a, b) in enumerate(keys):
            e = from_bed(self._bed(self.r_edges, a, b, ab), q, ab, fractions)
            out[inv.ravel() == i] = float(np.dot(w, 0.5 * (e[:-1] + e[1:])))
        return out

    # ------------------------------------------------------------------ NTCP
    def ntcp(self, pset, s1, s2) -> np.ndarray:
        """NTCP (0-1) of each schedule under an NTCP parameter set.

        Each bin's BED is computed at the set's alpha/beta (the one it was fitted with), then
        converted to the set's dose scale (EQD2, or isoeffective dose in its reference
        fraction count) by :func:`rtopt.dose.ntcp.model_scale_edges`, and the set's model is
        applied by :func:`rtopt.dose.ntcp.ntcp_of_model_dvh` (the same code as
        :func:`rtopt.dose.ntcp.ntcp`).  Computed once per distinct ``(S1, S2)``.
        """
        from rtopt.dose.ntcp import get_parameter_set, model_scale_edges, ntcp_of_model_dvh

        ps = get_parameter_set(pset) if isinstance(pset, str) else pset
        s1 = np.atleast_1d(np.asarray(s1, dtype=float))
        s2 = np.atleast_1d(np.asarray(s2, dtype=float))
        out = np.empty(s1.size)
        keys, inv = np.unique(np.stack([np.maximum(s1, 1e-12), np.maximum(s2, 0.0)], axis=1),
                              axis=0, return_inverse=True)
        inv = inv.ravel()
        for i, (a, b) in enumerate(keys):
            bed = self._bed(self.r_edges, a, b, ps.alpha_beta_gy)
            h = dataclasses.replace(self.dvh, edges_gy=model_scale_edges(bed, ps),
                                    n_fractions=None)
            out[inv == i] = ntcp_of_model_dvh(h, ps)
        return out
