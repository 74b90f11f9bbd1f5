"""The tumour-microenvironment (TME) surrogate: dose responses of one fraction (docs/model.md s3-5).

Pure, vectorised functions of the dose per fraction ``d`` (Gy) and of a
:class:`rtopt.model.parameters.SurrogateParameters`.  The simulators (:mod:`rtopt.model.simulator`) apply them
at each fraction; plots, calibration and every solver back-end reach them only through the
simulators.  Parameter values may be floats or arrays (parameter samples) that broadcast with ``d``.
"""

from __future__ import annotations

import functools

from typing import Any

import numpy as np

__all__ = [
    "demand_drop",
    "vascular_damage",
    "chemokine_amplitude",
    "chemokine_rates",
    "chemokine_pulse",
    "hypoxic_fraction",
    "clonogen_hypoxic_shares",
    "nk_infiltration_rate",
]


def demand_drop(d: Any, p: Any) -> np.ndarray:
    """Fractional drop of tumour oxygen demand caused by one fraction of ``d`` Gy.

    ``m(d) = m_max (1 - exp(-d / d_m))`` (docs/model.md s3): killed cells stop respiring.
    """
    d = np.asarray(d, dtype=float)
    return p.demand_drop_max * -np.expm1(-d / p.demand_drop_dose_gy)


def vascular_damage(d: Any, p: Any) -> np.ndarray:
    """Fractional loss of vascular function caused by one fraction of ``d`` Gy.

    Logistic in dose, ``V(d) = V_max / (1 + exp(-(d - d_v50) / s_v))``, exactly 0 at ``d = 0``
    so that days without a fraction leave the vessels alone (Park et al. 2012; Garcia-Barros 2003).
    """
    d = np.asarray(d, dtype=float)
    v = p.vascular_damage_max / (1.0 + np.exp(-(d - p.vascular_d50_gy) / p.vascular_slope_gy))
    return np.where(d > 0, v, 0.0)


def chemokine_amplitude(d: Any, p: Any) -> np.ndarray:
    """Peak CXCL10 signal of the pulse that one fraction of ``d`` Gy induces (signal units).

    ``A(d) = A_max d^n / (d^n + K^n) / (1 + exp((d - d_trex) / s_trex))``: rising with dose via
    cGAS-STING, switched off above the Trex1 threshold (Vanpouille-Box et al. 2017).
    """
    d = np.asarray(d, dtype=float)
    n = p.chemokine_hill
    dn = np.power(np.maximum(d, 0.0), n)
    hill = dn / (dn + np.power(p.chemokine_k_gy, n))
    trex = 1.0 / (1.0 + np.exp((d - p.trex1_threshold_gy) / p.trex1_width_gy))
    return p.chemokine_max * hill * trex


@functools.lru_cache(maxsize=1 << 16)
def _rise_rate(peak_day: float, decay_rate: float) -> float:
    # cached: robust searches and cohorts simulate the same parameter samples block after
    # block (a root-finding each, ~0.1 ms; 256 samples x 2 passes x 67 blocks was ~5 s)
    # Bateman peak time t_p = ln(ka/ke)/(ka-ke) is symmetric in (ka, ke) and tends to 1/ke as
    # ka -> ke, so the rise rate lies above ke when t_p < 1/ke and below it otherwise.
    from scipy.optimize import brentq  # here: scipy.optimize costs ~1 s at start-up

    ke, tp = float(decay_rate), float(peak_day)
    if abs(tp * ke - 1.0) < 1e-9:
        return ke * (1.0 + 1e-6)

    def f(ka: float) -> float:
        return np.log(ka / ke) / (ka - ke) - tp

    if tp * ke < 1.0:
        return brentq(f, ke * (1 + 1e-9), ke * 1e6, xtol=1e-14, rtol=1e-13)
    return brentq(f, ke * 1e-9, ke * (1 - 1e-9), xtol=1e-14, rtol=1e-13)


def chemokine_rates(p: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rates of the chemokine pulse: ``(k_rise, k_decay, norm)`` in 1/d, 1/d and 1.

    A fraction adds ``A(d) * norm`` to a precursor ``P`` (``dP/dt = -k_rise P``) that feeds the
    signal ``C`` (``dC/dt = k_rise P - k_decay C``): a Bateman pulse whose peak is ``A(d)`` at
    ``chemokine_peak_day``.  Pulses add up, so repeated moderate fractions build a larger signal
    (docs/model.md s4).
    """
    ke = 1.0 / np.asarray(p.chemokine_decay_days, dtype=float)
    tp = np.asarray(p.chemokine_peak_day, dtype=float)
    # one root-finding per distinct (peak day, decay) pair: parameter samples repeat them
    tp_b, ke_b = np.broadcast_arrays(tp, ke)
    pairs, inv = np.unique(np.stack([tp_b.ravel(), ke_b.ravel()]), axis=1, return_inverse=True)
    ka = np.array([_rise_rate(a, b) for a, b in pairs.T], dtype=float)[inv.ravel()]
    ka = ka.reshape(tp_b.shape)
    peak = ka / (ka - ke) * (np.exp(-ke * tp) - np.exp(-ka * tp))
    return ka, ke, 1.0 / peak


def chemokine_pulse(t: Any, d: Any, p: Any) -> np.ndarray:
    """Chemokine signal ``t`` days after one fraction of ``d`` Gy (0 before the fraction)."""
    t = np.asarray(t, dtype=float)
    ka, ke, norm = chemokine_rates(p)
    tt = np.maximum(t, 0.0)
    c = chemokine_amplitude(d, p) * norm * ka / (ka - ke) * (np.exp(-ke * tt) - np.exp(-ka * tt))
    return np.where(t >= 0, c, 0.0)


def hypoxic_fraction(w: Any, v: Any, h0: Any, p: Any) -> np.ndarray:
    """Hypoxic fraction from oxygen demand ``w`` and vascular function ``v`` (both 1 at baseline).

    ``h = min(h_max, h0 (w / v)^gamma)`` (docs/model.md s3).
    """
    ratio = np.asarray(w, dtype=float) / np.asarray(v, dtype=float)
    g = p.hypoxia_gamma
    if np.ndim(g) == 0 and float(g) == 1.0:
        h = h0 * ratio
    else:
        h = h0 * np.power(ratio, g)
    return np.minimum(h, p.hypoxic_fraction_max)


def clonogen_hypoxic_shares(h: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """Shares of clonogens that are intermediately hypoxic and fully anoxic at FMISO fraction h.

    The FMISO-avid (hypoxic) *volume* is not the share of clonogens that hypoxia protects from
    dose: most FMISO-avid cells are intermediately hypoxic (OER ~1.7, Jeong et al. 2017) and
    only a small share is anoxic (OER ~2.8).  The radiobiologically hypoxic share is
    ``h_c = min(1, r h)`` with ``r = clonogen_hypoxia_ratio``; of it, ``anoxic_share`` is anoxic.

    Returns
    -------
    (intermediate, anoxic) : tuple of ndarray
        Shares in [0, 1]; the oxic share is ``1 - intermediate - anoxic``.
    """
    hc = np.minimum(1.0, p.clonogen_hypoxia_ratio * np.asarray(h, dtype=float))
    anoxic = hc * p.anoxic_share
    return hc - anoxic, anoxic


def nk_infiltration_rate(c: Any, v: Any, p: Any) -> np.ndarray:
    """Blood-to-tumour NK trafficking rate (1/d) at chemokine signal ``c`` and perfusion ``v``.

    ``k_in = k0 v (1 + g C / (C50 + C))``: cells reach the tumour only through perfused vessels
    (vascular function ``v``, 1 at baseline), and CXCR3-driven recruitment saturates with the
    chemokine signal.  The compiled simulator kernel inlines this formula; the reference
    simulator calls this function, and the tests hold the two together.  ``c`` and ``v`` may
    also be algebraic-model expressions (Pyomo): they are then used as they are, so the Pyomo
    MINLP states the same formula (:mod:`rtopt.backends.pyomo_backend`).
    """
    c, v = _numeric(c), _numeric(v)
    return (p.nk_infiltration_per_day * v
            * (1.0 + p.nk_chemokine_gain * c / (p.nk_chemokine_half_signal + c)))


def _numeric(x: Any) -> Any:
    """``x`` as a float array, unless it is an algebraic-model expression (an object with
    Pyomo's ``is_potentially_variable``), which is returned unchanged."""
    if hasattr(x, "is_potentially_variable"):
        return x
    return np.asarray(x, dtype=float)
