"""The plain statement of the TME equations and the ``solve_ivp`` reference simulator.

:func:`apply_fraction` (the jumps of every state at a fraction) and :func:`nk_activity` are the
one statement of those parts of the model: the fast simulator tabulates its jumps from
:func:`apply_fraction` and the algebraic back-ends read both.  :func:`simulate_reference` writes
the continuous equations out as a right-hand side and integrates them with a tight-tolerance
Runge-Kutta method, one schedule at a time; the tests hold the fast simulator to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtopt.model import surrogate as sg
from rtopt.model.circulation import blood_survival, endogenous_level
from rtopt.model.parameters import SurrogateParameters
from rtopt.model.simulator.biology import Biology, Simulation, as_matrix, param_rows
from rtopt.model.simulator.outcomes import compact_fractions, tumour_outcomes

# scipy.integrate is imported inside simulate_reference (import time: the fast simulator never
# needs it).

__all__ = ["apply_fraction", "nk_activity", "simulate_reference", "endogenous_active",
           "endogenous_start", "endogenous_activity"]


def apply_fraction(d, state, bio, p, chem_norm):
    """Jumps of every TME state at a fraction (shared by both simulators).

    ``state`` is ``(w, v, P, C, B, T)`` or, with the endogenous pool, ``(w, v, P, C, B, T, G,
    Te)``: infused NK in the tumour die at their D0, infused NK in the blood receive the mean
    blood dose ``f d`` (:mod:`rtopt.model.circulation`); the endogenous circulating pool ``G``
    receives the same blood dose and the endogenous tumour NK ``Te`` the tumour dose, both at
    the resting D0 ``nk_endogenous_d0_gy``."""
    w, v, P, C, B, T = state[:6]
    w = w * (1.0 - sg.demand_drop(d, p))
    v = v * (1.0 - sg.vascular_damage(d, p))
    P = P + sg.chemokine_amplitude(d, p) * chem_norm
    T = T * np.exp(-d / p.nk_d0_gy)
    B = B * blood_survival(d, p.nk_blood_dose_fraction, p.nk_d0_gy)
    if len(state) == 6:
        return (w, v, P, C, B, T)
    G, Te = state[6:]
    G = G * blood_survival(d, p.nk_blood_dose_fraction, p.nk_endogenous_d0_gy)
    Te = Te * np.exp(-d / p.nk_endogenous_d0_gy)
    return (w, v, P, C, B, T, G, Te)


def endogenous_active(bio: Biology) -> bool:
    """Whether the patient's own NK cells are modelled: with NK cells (``bio.nk``) and a
    non-zero endogenous activity (``nk_endogenous_cytotoxicity``) and count."""
    p = bio.params
    return bool(bio.nk) and bool(np.any(np.asarray(p.nk_endogenous_cytotoxicity) > 0)) and \
        bool(np.any(np.asarray(p.nk_endogenous_count_per_ul) > 0))


def endogenous_start(p: Any) -> Any:
    """Endogenous tumour NK before treatment (standard-infusion units): the steady state of
    ``dTe/dt = k0 n_e G - k_e Te`` at ``G = 1``, baseline perfusion and no chemokine,
    ``k0 n_e / k_e`` (``n_e`` :func:`rtopt.model.circulation.endogenous_level`, ``k_e`` the
    endogenous turnover)."""
    return p.nk_infiltration_per_day * endogenous_level(p) / p.nk_endogenous_turnover_per_day


def nk_activity(T, h, p):
    """NK activity ``E = kappa (1 - treg) T (1 - eta h)`` of tumour NK cells ``T`` (relative to one
    standard infusion) at FMISO hypoxic fraction ``h`` (hypoxia suppresses NK killing)."""
    return p.nk_cytotoxicity * (1.0 - p.nk_treg_penalty) * T * (1.0 - p.nk_hypoxic_suppression * h)


def endogenous_activity(Te, h, p):
    """Activity of the endogenous tumour NK ``Te``: ``kappa_e (1 - treg) Te (1 - eta h)``."""
    return (p.nk_endogenous_cytotoxicity * (1.0 - p.nk_treg_penalty) * Te
            * (1.0 - p.nk_hypoxic_suppression * h))


def simulate_reference(bio: Biology, doses: Any, infusions: Any = None, *, rtol: float = 1e-10,
                       atol: float = 1e-12) -> Simulation:
    """Simulate schedules one at a time with ``solve_ivp`` (the plain reference).

    Integrates the continuous equations (with the hypoxic fraction, the activity and its integral
    as quadratures of the state) between events with a tight-tolerance Runge-Kutta method and
    applies the same jump and outcome functions as :func:`simulate`.  Slow; for tests and
    benchmarks.
    """
    from scipy.integrate import solve_ivp

    D = as_matrix(doses, "doses")
    U = np.zeros_like(D) if infusions is None else as_matrix(infusions, "infusions")
    if U.shape[0] == 1 and D.shape[0] > 1:
        U = np.broadcast_to(U, D.shape)
    n, days = D.shape
    endo = endogenous_active(bio)
    res = {k: np.zeros(n) for k in ("auc", "h_end", "h_mean", "auc_e")}
    fh_all, fa_all = np.zeros((n, days)), np.zeros((n, days))
    for i in range(n):
        p = param_rows(bio, slice(i, i + 1), n)
        pv = {k: (np.asarray(v).ravel()[0] if np.ndim(v) else v) for k, v in p.values.items()}
        p = SurrogateParameters(pv, p.provenance)
        ka, ke, norm = (float(x) for x in sg.chemokine_rates(p))
        h0 = bio.hypoxic_fraction

        n_e = float(endogenous_level(p)) if endo else 0.0
        k_e = float(p.nk_endogenous_turnover_per_day)

        def rhs(t, y):
            w, v, P, C, B, T, _, _, G, Te, _ = y
            kin = float(sg.nk_infiltration_rate(C, v, p))
            h = float(sg.hypoxic_fraction(w, v, h0, p))
            E = float(nk_activity(T, h, p)) if bio.nk else 0.0
            Ee = float(endogenous_activity(Te, h, p)) if endo else 0.0
            return [(1 - w) / p.demand_recovery_days, (1 - v) / p.vascular_recovery_days,
                    -ka * P, ka * P - ke * C,
                    -(p.nk_blood_clearance_per_day + kin) * B,
                    kin * B - p.nk_tumour_loss_per_day * T, E, h,
                    k_e * (1 - G), kin * n_e * G - k_e * Te, Ee]

        # states: w, v, P, C, B, T, activity integral, hypoxia integral, then the endogenous
        # circulating pool G, endogenous tumour NK Te and their activity integral
        y = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0,
                      float(endogenous_start(p)) if endo else 0.0, 0.0])
        prev_day = 0.0
        for j in range(days):
            d = D[i, j]
            if d > 0:
                fh_all[i, j] = float(sg.hypoxic_fraction(y[0], y[1], h0, p))
                fa_all[i, j] = prev_day if bio.nk else 0.0
                st = apply_fraction(np.float64(d), tuple(y[:6]) + (y[8], y[9]), bio, p, norm)
                y[:6] = [float(s) for s in st[:6]]
                y[8], y[9] = float(st[6]), float(st[7])
            if bio.nk and U[i, j] > 0:
                y[4] += U[i, j]
            start = y[6]
            sol = solve_ivp(rhs, (j, j + 1), y, method="DOP853", rtol=rtol, atol=atol)
            y = sol.y[:, -1].copy()
            prev_day = y[6] - start
        res["auc"][i] = y[6]
        res["auc_e"][i] = y[10]
        res["h_end"][i] = sg.hypoxic_fraction(y[0], y[1], h0, p)
        res["h_mean"][i] = y[7] / days
    fd, fh, fa = compact_fractions(D, fh_all, fa_all)
    # tumour outcomes from the infused NK cells only (docs/model.md section 13)
    out = tumour_outcomes(bio, bio.params, D, fd, fh, fa, res["auc"])
    return Simulation(nk_auc=res["auc"] + res["auc_e"], **out,
                      hypoxic_fraction_end=res["h_end"], mean_hypoxic_fraction=res["h_mean"],
                      nk_auc_endogenous=res["auc_e"])
