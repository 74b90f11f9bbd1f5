"""The circulating blood: the immune cost of each fraction (docs/model.md section 13).

Every fraction irradiates the blood that flows through the field, and with it the circulating
NK cells.  rtopt keeps the dose to circulating blood as one number per fraction and instance:
the *mean* dose the blood pool receives from a fraction, as a share ``f`` of the tumour dose
(the surrogate parameter ``nk_blood_dose_fraction``; site defaults in
:data:`rtopt.model.parameters.SITE_PRESETS`, instance override in ``[tumour.surrogate]``, and
the value a DVH-based estimate sets).

Why one number suffices for the mean: the energy a fraction deposits in blood is the dose rate
in the field times the blood mass inside the field times the beam-on time, whatever the flow,
so the mean dose over the blood pool is ``d V_in / V_blood`` (``V_in`` the blood volume inside
the irradiated volume at any moment, :func:`blood_dose_fraction_from_volume`).  Beam-on time
and cardiac output decide how that dose is *shared* (few cells with much dose when the beam is
short, many with little when it is long; Yovino et al. 2013, Cancer Invest 31:140-144), not
its mean.  Cell survival ``exp(-D / D0)`` is nearly linear in dose when ``D << D0``, so the
surviving share of circulating NK cells per fraction is ``exp(-f d / D0)`` to within
``(f d / D0)^2 / 2`` of any sharing (:func:`blood_survival`; with f 0.02 and d 2-20 Gy that is
below 0.3 % per fraction).

The endogenous circulating NK pool ``N`` (1 at baseline) falls by that share at each fraction
(``nk_endogenous_d0_gy``: resting CD56+ cells, D0 5.5 Gy in vitro) and recovers towards 1 at the
homeostatic turnover rate (``nk_endogenous_turnover_per_day``, 0.069 /d; Zhang et al. 2007,
Immunology 121:258-265): ``dN/dt = k (1 - N)``, production unchanged (the marrow is outside the
field).  Between fractions the pool is exact, ``N(t) = 1 - (1 - N_j) e^{-k (t - j)}``, so its
nadir is the smallest value just after a fraction and its area has a closed form
(:func:`circulating_nk`).  Infused NK cells in the blood receive the same mean dose at their own
D0 (``nk_d0_gy``), inside the simulator's fraction jumps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["blood_survival", "circulating_nk", "CirculatingNK", "blood_dose_fraction_from_volume",
           "BLOOD_VOLUME_ML", "circulating_metrics", "CIRCULATING_METRICS",
           "STANDARD_INFUSION_CELLS", "endogenous_level"]

BLOOD_VOLUME_ML = 5000.0
"""Adult blood volume (mL): about 70 mL/kg for a 70 kg adult (textbook physiology)."""

STANDARD_INFUSION_CELLS = 2.0e9
"""NK cells in one standard infusion, the model's NK unit: the median 29e6 NK/kg of Rubnitz et
al. 2010 (J Clin Oncol 28:955-959) for a 70 kg adult."""


def endogenous_level(params: Any) -> Any:
    """Endogenous circulating NK cells in standard-infusion units:
    ``nk_endogenous_count_per_ul x blood volume / STANDARD_INFUSION_CELLS`` (about 1)."""
    return params.nk_endogenous_count_per_ul * (BLOOD_VOLUME_ML * 1e3) / STANDARD_INFUSION_CELLS


def blood_dose_fraction_from_volume(blood_in_field_ml: Any,
                                    blood_volume_ml: Any = BLOOD_VOLUME_ML) -> np.ndarray:
    """Mean dose to the circulating blood per unit tumour dose, ``V_in / V_blood``.

    Parameters
    ----------
    blood_in_field_ml : array_like
        Blood volume inside the irradiated volume at any moment (mL), weighted by the dose
        there relative to the tumour dose (a DVH of the blood-containing tissues gives it:
        ``sum_i V_i c_i D_i / d`` with tissue blood content ``c_i``).
    blood_volume_ml : array_like
        Blood pool (mL); default :data:`BLOOD_VOLUME_ML`.

    Returns
    -------
    ndarray
        ``f`` (dimensionless), the value of ``nk_blood_dose_fraction``.
    """
    return np.asarray(blood_in_field_ml, dtype=float) / np.asarray(blood_volume_ml, dtype=float)


def blood_survival(d: Any, blood_dose_fraction: Any, d0_gy: Any) -> np.ndarray:
    """Surviving share of circulating cells after one fraction of ``d`` Gy (tumour dose).

    ``exp(-f d / D0)``: the mean blood dose ``f d`` at exponential survival of slope ``1/D0``.
    """
    d = np.asarray(d, dtype=float)
    return np.exp(-np.asarray(blood_dose_fraction, dtype=float) * d / np.asarray(d0_gy, dtype=float))


@dataclass(frozen=True)
class CirculatingNK:
    """The endogenous circulating NK pool over a horizon (arrays of shape ``(N,)``).

    Attributes
    ----------
    nadir : ndarray
        Lowest circulating NK count as a fraction of baseline (1 without fractions).
    auc : ndarray
        Integral of the circulating NK count over the horizon, in baseline-days (the horizon
        length without fractions).
    end : ndarray
        Count at the end of the horizon as a fraction of baseline.
    after_fraction : ndarray
        ``(N, days)``: the count at the start of each day, after that day's fraction if it has
        one.
    """

    nadir: np.ndarray
    auc: np.ndarray
    end: np.ndarray
    after_fraction: np.ndarray


def circulating_nk(doses: Any, blood_dose_fraction: Any, d0_gy: Any,
                   turnover_per_day: Any) -> CirculatingNK:
    """Endogenous circulating NK cells under a dose matrix (exact, vectorised over rows).

    Parameters
    ----------
    doses : array_like, shape (N, days) or (days,)
        Tumour dose per fraction on each calendar day (fractions at the start of the day).
    blood_dose_fraction, d0_gy, turnover_per_day : float or array of shape (N,)
        ``nk_blood_dose_fraction``, ``nk_endogenous_d0_gy`` (Gy) and
        ``nk_endogenous_turnover_per_day`` (1/d); arrays give one value per row.

    Returns
    -------
    CirculatingNK
    """
    D = np.asarray(doses, dtype=float)
    if D.ndim == 1:
        D = D[None, :]
    n, days = D.shape
    f = np.broadcast_to(np.asarray(blood_dose_fraction, dtype=float), (n,))
    d0 = np.broadcast_to(np.asarray(d0_gy, dtype=float), (n,))
    k = np.broadcast_to(np.asarray(turnover_per_day, dtype=float), (n,))
    decay = np.exp(-k)                                     # (1 - N) over one day
    # integral over one day of 1 - (1 - N0) e^{-k t} is 1 - (1 - N0) (1 - e^{-k}) / k
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(k > 0, -np.expm1(-k) / np.where(k > 0, k, 1.0), 1.0)
    N = np.ones(n)
    nadir = np.ones(n)
    auc = np.zeros(n)
    after = np.empty((n, days))
    for j in range(days):
        N = N * blood_survival(D[:, j], f, d0)
        after[:, j] = N
        nadir = np.minimum(nadir, N)
        deficit = 1.0 - N
        auc += 1.0 - deficit * w
        N = 1.0 - deficit * decay
    return CirculatingNK(nadir=nadir, auc=auc, end=N, after_fraction=after)


CIRCULATING_METRICS = ("circulating_nk_nadir", "circulating_nk_auc")
"""Metric names of :func:`circulating_metrics` (every verified plan reports them)."""


def circulating_metrics(doses: Any, params: Any) -> dict[str, np.ndarray]:
    """``circulating_nk_nadir`` (lowest endogenous circulating NK count, fraction of baseline)
    and ``circulating_nk_auc`` (its integral over the horizon, baseline-days) of each row of a
    dose matrix, from resolved surrogate parameters (floats, or arrays of one value per row)."""
    c = circulating_nk(doses, params.nk_blood_dose_fraction, params.nk_endogenous_d0_gy,
                       params.nk_endogenous_turnover_per_day)
    return {"circulating_nk_nadir": c.nadir, "circulating_nk_auc": c.auc}
