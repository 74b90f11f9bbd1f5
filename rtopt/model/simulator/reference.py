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
from rtopt.model.parameters import SurrogateParameters
from rtopt.model.simulator.biology import Biology, Simulation, as_matrix, param_rows
from rtopt.model.simulator.outcomes import compact_fractions, tumour_outcomes

__all__ = ["apply_fraction", "nk_activity", "simulate_reference"]


def apply_fraction(d, state, bio, p, chem_norm):
    """Jumps of every TME state at a fraction (shared by both simulators)."""
    w, v, P, C, B, T = state
    w = w * (1.0 - sg.demand_drop(d, p))
    v = v * (1.0 - sg.vascular_damage(d, p))
    P = P + sg.chemokine_amplitude(d, p) * chem_norm
    T = T * np.exp(-d / p.nk_d0_gy)
    B = B * np.exp(-p.nk_blood_dose_fraction * d / p.nk_d0_gy)
    return (w, v, P, C, B, T)


def nk_activity(T, h, p):
    """NK activity ``E = kappa (1 - treg) T (1 - eta h)`` of tumour NK cells ``T`` (relative to one
    standard infusion) at FMISO hypoxic fraction ``h`` (hypoxia suppresses NK killing)."""
    return p.nk_cytotoxicity * (1.0 - p.nk_treg_penalty) * T * (1.0 - p.nk_hypoxic_suppression * h)


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
    res = {k: np.zeros(n) for k in ("auc", "h_end", "h_mean")}
    fh_all, fa_all = np.zeros((n, days)), np.zeros((n, days))
    for i in range(n):
        p = param_rows(bio, slice(i, i + 1), n)
        pv = {k: (np.asarray(v).ravel()[0] if np.ndim(v) else v) for k, v in p.values.items()}
        p = SurrogateParameters(pv, p.provenance)
        ka, ke, norm = (float(x) for x in sg.chemokine_rates(p))
        h0 = bio.hypoxic_fraction

        def rhs(t, y):
            w, v, P, C, B, T, _, _ = y
            kin = float(sg.nk_infiltration_rate(C, v, p))
            h = float(sg.hypoxic_fraction(w, v, h0, p))
            E = float(nk_activity(T, h, p)) if bio.nk else 0.0
            return [(1 - w) / p.demand_recovery_days, (1 - v) / p.vascular_recovery_days,
                    -ka * P, ka * P - ke * C,
                    -(p.nk_blood_clearance_per_day + kin) * B,
                    kin * B - p.nk_tumour_loss_per_day * T, E, h]

        y = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        prev_day = 0.0
        for j in range(days):
            d = D[i, j]
            if d > 0:
                fh_all[i, j] = float(sg.hypoxic_fraction(y[0], y[1], h0, p))
                fa_all[i, j] = prev_day if bio.nk else 0.0
                st = apply_fraction(np.float64(d), tuple(y[:6]), bio, p, norm)
                y[:6] = [float(s) for s in st]
            if bio.nk and U[i, j] > 0:
                y[4] += U[i, j]
            start = y[6]
            sol = solve_ivp(rhs, (j, j + 1), y, method="DOP853", rtol=rtol, atol=atol)
            y = sol.y[:, -1].copy()
            prev_day = y[6] - start
        res["auc"][i] = y[6]
        res["h_end"][i] = sg.hypoxic_fraction(y[0], y[1], h0, p)
        res["h_mean"][i] = y[7] / days
    fd, fh, fa = compact_fractions(D, fh_all, fa_all)
    out = tumour_outcomes(bio, bio.params, D, fd, fh, fa, res["auc"])
    return Simulation(nk_auc=res["auc"], **out, hypoxic_fraction_end=res["h_end"],
                      mean_hypoxic_fraction=res["h_mean"])
