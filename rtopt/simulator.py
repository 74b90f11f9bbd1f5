"""Simulators of the TME surrogate: a fast vectorised one and a plain reference (``solve_ivp``).

State (MODEL.md s3-5), all relative to pre-treatment or to one standard NK infusion:

======  ==========================================================================
``w``   oxygen demand (1 at baseline); each fraction ``w <- w (1 - m(d))``, relaxes to 1
``v``   vascular function (1 at baseline); ``v <- v (1 - V(d))``, relaxes to 1
``P``   chemokine precursor; a fraction adds ``A(d) norm``; ``dP/dt = -k_rise P``
``C``   chemokine signal; ``dC/dt = k_rise P - k_decay C``
``B``   NK cells in blood; an infusion adds 1; ``dB/dt = -(k_cl + k_in(C)) B``
``T``   NK cells in the tumour; ``dT/dt = k_in(C) B - k_out T``, ``k_in = k0 (1 + g C)``
======  ==========================================================================

Hypoxic fraction ``h = min(h_max, h0 (w/v)^gamma)``; NK activity
``E = kappa (1 - treg) T (1 - eta h)``.  At a fraction of ``d`` Gy on day ``j`` (time ``t = j``,
before any infusion that day): clonogens survive with
``S = (1 - h) S_ox(d; alpha_eff) + h S_ox(d / OER; alpha_eff)`` where
``alpha_eff = alpha (1 + s E / (E50 + E))`` (NK radiosensitisation); in-field NK cells die,
``T <- T exp(-d / D0)``, blood NK receive ``f_blood d``.  NK cells also kill clonogens directly:
``ln S -= k_nk * integral(E dt)``; repopulation adds ``ln 2 / T_pot * max(0, T - T_k)``.

:func:`simulate` evaluates many schedules at once (rows of a ``(N, days)`` dose matrix) and
broadcasts array-valued parameters (parameter samples) along the same rows.  Between events it
is exact for ``w, v, P, C``; ``B, T`` use the exact solution with the trafficking rate frozen at
the chemokine value of each sub-step's midpoint (second order), and the activity integral uses
the trapezoid rule; ``steps_per_day`` sets the sub-step.  :func:`simulate_reference` integrates
the same equations with ``scipy.integrate.solve_ivp`` one schedule at a time; the tests hold the
two together.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from rtopt import radiobiology as rb
from rtopt import surrogate as sg
from rtopt.parameters import SurrogateParameters, resolve

__all__ = ["Biology", "Simulation", "simulate", "simulate_reference", "STATE_NAMES",
           "InfusionKernels", "infusion_kernels"]

STATE_NAMES = ("demand", "vascular", "chemokine_precursor", "chemokine", "nk_blood", "nk_tumour")


@dataclass(frozen=True)
class Biology:
    """Everything the simulators need about one tumour and its NK product.

    Built from an instance with :meth:`from_instance`; the fields mirror ``[tumour]`` and the
    resolved surrogate parameters.  ``nk`` False means no NK cells are modelled (infusions are
    ignored and activity is 0).
    """

    alpha_per_gy: float
    alpha_beta_gy: float
    clonogens: float
    hypoxic_fraction: float
    params: SurrogateParameters
    survival_model: str = "lq"
    transition_dose_gy: float | None = None
    usc_d0_gy: float | None = None
    usc_dq_gy: float | None = None
    repopulation_kickoff_days: float | None = None
    potential_doubling_days: float | None = None
    nk: bool = True

    @property
    def beta_per_gy2(self) -> float:
        """Quadratic LQ coefficient beta = alpha / (alpha/beta) in 1/Gy^2."""
        return self.alpha_per_gy / self.alpha_beta_gy

    @property
    def survival_kw(self) -> dict[str, Any]:
        """Keyword arguments of :func:`rtopt.radiobiology.neg_log_survival` for this tumour."""
        return dict(model=self.survival_model, transition_dose_gy=self.transition_dose_gy,
                    d0_gy=self.usc_d0_gy, dq_gy=self.usc_dq_gy)

    @classmethod
    def from_instance(cls, inst: Any, **param_overrides: Any) -> "Biology":
        """Build from a validated :class:`rtopt.instance.Instance` (optional parameter overrides)."""
        t = inst.tumour
        params = inst.surrogate_parameters()
        if param_overrides:
            params = params.with_values(**param_overrides)
        return cls(alpha_per_gy=t.alpha_per_gy, alpha_beta_gy=t.alpha_beta_gy,
                   clonogens=t.clonogens, hypoxic_fraction=t.hypoxic_fraction, params=params,
                   survival_model=str(getattr(t.survival_model, "value", t.survival_model)),
                   transition_dose_gy=t.transition_dose_gy, usc_d0_gy=t.usc_d0_gy,
                   usc_dq_gy=t.usc_dq_gy,
                   repopulation_kickoff_days=t.repopulation_kickoff_days,
                   potential_doubling_days=t.potential_doubling_days,
                   nk=inst.nk is not None)

    @classmethod
    def simple(cls, site: str = "lung", alpha_per_gy: float = 0.35, alpha_beta_gy: float = 10.0,
               clonogens: float = 1e8, hypoxic_fraction: float = 0.21,
               product: str | None = "il15_expanded", cytokine_support: str = "none",
               overrides: Mapping[str, float] | None = None, **kw: Any) -> "Biology":
        """Build from a site preset without an instance file (scripts, calibration, tests)."""
        params = resolve(site, product, cytokine_support, overrides)
        return cls(alpha_per_gy=alpha_per_gy, alpha_beta_gy=alpha_beta_gy, clonogens=clonogens,
                   hypoxic_fraction=hypoxic_fraction, params=params, nk=product is not None, **kw)


@dataclass(frozen=True)
class Simulation:
    """Outputs of a simulation of ``N`` schedules (arrays of shape ``(N,)`` unless stated).

    Attributes
    ----------
    nk_auc : ndarray
        NK favourability: integral of NK activity over the horizon (activity-days).
    ln_survival : ndarray
        Natural log of the clonogen surviving fraction (RT with OER and NK radiosensitisation,
        NK killing, repopulation).
    log10_kill : ndarray
        ``-ln_survival / ln 10``.
    tcp : ndarray
        Poisson tumour control probability ``exp(-N0 S)``.
    nk_log10_kill : ndarray
        The part of ``log10_kill`` due to direct NK killing.
    hypoxic_fraction_end : ndarray
        Hypoxic fraction at the end of the horizon.
    mean_hypoxic_fraction : ndarray
        Time-averaged hypoxic fraction over the horizon.
    t_days : ndarray or None
        Trajectory times, shape ``(K,)`` (only with ``trajectory=True``).
    trajectory : dict or None
        ``{name: (N, K) array}`` for ``hypoxic_fraction``, ``demand``, ``vascular``,
        ``chemokine``, ``nk_blood``, ``nk_tumour``, ``nk_activity``.
    fraction_activity, fraction_hypoxia : ndarray or None
        ``(N, days)``: NK activity and hypoxic fraction just before each day's fraction (0 on
        days without one); only with ``record_fractions=True``.
    """

    nk_auc: np.ndarray
    ln_survival: np.ndarray
    log10_kill: np.ndarray
    tcp: np.ndarray
    nk_log10_kill: np.ndarray
    hypoxic_fraction_end: np.ndarray
    mean_hypoxic_fraction: np.ndarray
    t_days: np.ndarray | None = None
    trajectory: dict[str, np.ndarray] | None = field(default=None, repr=False)
    fraction_activity: np.ndarray | None = field(default=None, repr=False)
    fraction_hypoxia: np.ndarray | None = field(default=None, repr=False)


def _as_matrix(a: Any, name: str) -> np.ndarray:
    m = np.asarray(a, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2:
        raise ValueError(f"{name} must be a (N, days) or (days,) array, got shape {m.shape}")
    return m


def _param_rows(bio: Biology, rows: slice, n: int) -> SurrogateParameters:
    """Slice array-valued parameters (samples) to the rows of one chunk."""
    vals = {}
    for k, v in bio.params.values.items():
        a = np.asarray(v, dtype=float)
        vals[k] = a[rows] if a.ndim == 1 and a.shape[0] == n else v
    return SurrogateParameters(vals, bio.params.provenance)


def _clonogen_log_survival(d: np.ndarray, h: np.ndarray, act: np.ndarray, bio: Biology,
                           p: Any) -> np.ndarray:
    """ln S of one fraction with hypoxia (OER as dose modifier) and NK radiosensitisation."""
    alpha = bio.alpha_per_gy * (1.0 + p.nk_radiosensitisation_max * act
                                / (p.nk_radiosensitisation_e50 + act))
    kw = bio.survival_kw
    ln_ox = -rb.neg_log_survival(d, alpha, bio.beta_per_gy2, **kw)
    ln_hyp = -rb.neg_log_survival(d / p.oer, alpha, bio.beta_per_gy2, **kw)
    # log((1-h) e^a + h e^b) without underflow at large doses
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log1p(-h) + ln_ox, np.log(h) + ln_hyp)


def _apply_fraction(d, state, h, act, bio, p, chem_norm):
    """Jumps of every state at a fraction (shared by both simulators)."""
    w, v, P, C, B, T = state
    ln_s = _clonogen_log_survival(d, h, act, bio, p)
    w = w * (1.0 - sg.demand_drop(d, p))
    v = v * (1.0 - sg.vascular_damage(d, p))
    P = P + sg.chemokine_amplitude(d, p) * chem_norm
    T = T * np.exp(-d / p.nk_d0_gy)
    B = B * np.exp(-p.nk_blood_dose_fraction * d / p.nk_d0_gy)
    return (w, v, P, C, B, T), ln_s


def _activity(T, h, p):
    return p.nk_cytotoxicity * (1.0 - p.nk_treg_penalty) * T * (1.0 - p.nk_hypoxic_suppression * h)


def _finish(bio: Biology, doses: np.ndarray, ln_rt: np.ndarray, auc: np.ndarray, p: Any,
            h_end: np.ndarray, h_mean: np.ndarray, t=None, traj=None, rec=None) -> Simulation:
    nk_ln = -p.nk_log_kill_per_activity_day * auc
    repop = rb.repopulation_log_gain(rb.overall_days(doses), bio.potential_doubling_days,
                                     bio.repopulation_kickoff_days)
    ln_s = ln_rt + nk_ln + repop
    return Simulation(
        nk_auc=auc, ln_survival=ln_s, log10_kill=-ln_s / np.log(10.0),
        tcp=rb.poisson_tcp(bio.clonogens, ln_s), nk_log10_kill=-nk_ln / np.log(10.0),
        hypoxic_fraction_end=h_end, mean_hypoxic_fraction=h_mean, t_days=t, trajectory=traj,
        fraction_activity=None if rec is None else rec[0],
        fraction_hypoxia=None if rec is None else rec[1])


def simulate(bio: Biology, doses: Any, infusions: Any = None, *, steps_per_day: int = 8,
             trajectory: bool = False, chunk: int = 8192,
             threads: int | None = None, record_fractions: bool = False) -> Simulation:
    """Simulate many schedules at once with the fast event-driven stepper.

    Parameters
    ----------
    bio : Biology
        Tumour, NK product and surrogate parameters (array-valued parameters of length ``N``
        give one parameter sample per schedule).
    doses : array_like, shape (N, days) or (days,)
        Tumour dose per fraction in Gy on each calendar day (0 = no fraction).  The horizon is
        ``days`` days; fractions are given at the start of their day.
    infusions : array_like, shape (N, days) or (days,), optional
        Standard NK infusions given on each day (after that day's fraction).
    steps_per_day : int
        Sub-steps per day; 8 keeps the error against :func:`simulate_reference` below 0.3 %.
    trajectory : bool
        Also return every state on the sub-step grid (memory grows as ``N * days * steps``).
    chunk : int
        Schedules processed together (bounds memory; large chunks amortise Python overhead).
    record_fractions : bool
        Also return the NK activity and hypoxic fraction at each fraction (see
        :class:`Simulation`); :func:`infusion_kernels` uses them.
    threads : int, optional
        Worker threads over chunks (default 1: numpy ufuncs on chunk-sized arrays hold the
        GIL too briefly for threads to pay off at the default chunk; see `rtopt bench`).

    Returns
    -------
    Simulation
    """
    D = _as_matrix(doses, "doses")
    n, days = D.shape
    U = np.zeros_like(D) if infusions is None else _as_matrix(infusions, "infusions")
    if U.shape[0] == 1 and n > 1:
        U = np.broadcast_to(U, D.shape)
    if D.shape[0] == 1 and U.shape[0] > 1:
        D = np.broadcast_to(D, U.shape)
        n = D.shape[0]
    if U.shape != D.shape:
        raise ValueError(f"doses {D.shape} and infusions {U.shape} differ in shape")
    if np.any(D < 0) or np.any(U < 0):
        raise ValueError("doses and infusions must be non-negative")
    if not bio.nk:
        U = np.zeros_like(D)
    starts = range(0, n, chunk)

    def run(i: int) -> Simulation:
        return _simulate_chunk(bio, D[i:i + chunk], U[i:i + chunk],
                               _param_rows(bio, slice(i, i + chunk), n), steps_per_day, trajectory,
                               record_fractions)

    workers = min(len(starts), threads or 1)
    if workers > 1:
        # numpy releases the GIL inside ufuncs, so chunks run in parallel on threads
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(run, starts))
    else:
        parts = [run(i) for i in starts]
    if len(parts) == 1:
        return parts[0]
    out = {}
    for name in ("nk_auc", "ln_survival", "log10_kill", "tcp", "nk_log10_kill",
                 "hypoxic_fraction_end", "mean_hypoxic_fraction"):
        out[name] = np.concatenate([getattr(s, name) for s in parts])
    traj = None
    if trajectory:
        traj = {k: np.concatenate([s.trajectory[k] for s in parts]) for k in parts[0].trajectory}
    if record_fractions:
        out["fraction_activity"] = np.concatenate([s.fraction_activity for s in parts])
        out["fraction_hypoxia"] = np.concatenate([s.fraction_hypoxia for s in parts])
    return Simulation(**out, t_days=parts[0].t_days, trajectory=traj)


def _simulate_chunk(bio, D, U, p, spd, want_traj, want_rec=False):
    n, days = D.shape
    rec = (np.zeros((n, days)), np.zeros((n, days))) if want_rec else None
    dt = 1.0 / spd
    ka, ke, norm = sg.chemokine_rates(p)
    # exact sub-step propagators of the linear parts
    e_w = np.exp(-dt / p.demand_recovery_days)
    e_v = np.exp(-dt / p.vascular_recovery_days)
    e_a, e_e = np.exp(-ka * dt), np.exp(-ke * dt)
    e_ah, e_eh = np.exp(-ka * dt / 2), np.exp(-ke * dt / 2)
    c_pc = ka / (ke - ka) * (e_a - e_e)          # P -> C over dt
    c_pch = ka / (ke - ka) * (e_ah - e_eh)      # P -> C over dt/2
    k0, g = p.nk_infiltration_per_day, p.nk_chemokine_gain
    kcl, kout = p.nk_blood_clearance_per_day, p.nk_tumour_loss_per_day
    e_out = np.exp(-kout * dt)
    act_scale = p.nk_cytotoxicity * (1.0 - p.nk_treg_penalty)
    eta, h0 = p.nk_hypoxic_suppression, bio.hypoxic_fraction

    z = np.zeros(n)
    w, v, P, C, B, T = z + 1.0, z + 1.0, z.copy(), z.copy(), z.copy(), z.copy()
    ln_rt, auc, hsum = z.copy(), z.copy(), z.copy()
    nk = bio.nk
    traj = None
    if want_traj:
        K = days * spd + 1
        traj = {k: np.empty((n, K)) for k in ("hypoxic_fraction", "demand", "vascular",
                                              "chemokine", "nk_blood", "nk_tumour", "nk_activity")}
    h = sg.hypoxic_fraction(w, v, h0, p)
    ke_h, kp_h = k0 * g * e_eh, k0 * g * c_pch      # k_in at the sub-step midpoint
    x_off = (kcl - kout) * dt
    # Trapezoid sums are accumulated from the end-of-sub-step values only: each sub-step's start
    # value is the previous end value except at fractions, whose jumps are added separately.
    h_jump = h.copy()                                # initial value + jumps at fractions
    E = T * (1.0 - eta * h) if nk else z
    e_jump = E.copy()
    dw, dv = 1.0 - w, 1.0 - v                        # deficits relax exponentially to 0
    for j in range(days):
        d = D[:, j]
        if d.any():
            act = act_scale * E if nk else z
            if rec is not None:
                rec[0][:, j] = np.where(d > 0, act, 0.0)
                rec[1][:, j] = np.where(d > 0, h, 0.0)
            (w, v, P, C, B, T), ln_s = _apply_fraction(d, (1.0 - dw, 1.0 - dv, P, C, B, T), h,
                                                       act, bio, p, norm)
            ln_rt += np.where(d > 0, ln_s, 0.0)
            dw, dv = 1.0 - w, 1.0 - v
            h_new = sg.hypoxic_fraction(w, v, h0, p)
            h_jump += h_new - h
            h = h_new
            if nk:
                E_new = T * (1.0 - eta * h)
                e_jump += E_new - E
                E = E_new
        if nk:
            u = U[:, j]
            if u.any():
                B = B + u
        for k in range(spd):
            if want_traj:
                i = j * spd + k
                for name, val in (("hypoxic_fraction", h), ("demand", 1.0 - dw),
                                  ("vascular", 1.0 - dv), ("chemokine", C), ("nk_blood", B),
                                  ("nk_tumour", T), ("nk_activity", E)):
                    traj[name][:, i] = val
            if nk:
                # B, T exact over dt with k_in frozen at the midpoint chemokine (2nd order)
                kin = C * ke_h
                kin += P * kp_h
                kin += k0
                x = kin * dt
                x += x_off
                x += 1e-300                          # x = 0 exactly would give 0/0 below
                em = np.expm1(-x)
                x_fac = em + 1.0                     # e^{-x}
                em /= x                              # (e^{-x} - 1)/x
                em *= kin
                em *= B
                T *= e_out
                T -= em * (e_out * dt)
                x_fac *= e_out
                B *= x_fac
            C *= e_e
            C += P * c_pc
            P *= e_a
            dw *= e_w
            dv *= e_v
            h = sg.hypoxic_fraction(1.0 - dw, 1.0 - dv, h0, p)
            hsum += h
            if nk:
                E = 1.0 - eta * h
                E *= T
                auc += E
    w, v = 1.0 - dw, 1.0 - dv
    # trapezoid: every end value twice, except the last, plus the start values' extras
    hsum = 2.0 * hsum - h + h_jump
    auc = 2.0 * auc - E + e_jump if nk else auc
    t = None
    if want_traj:
        for name, val in (("hypoxic_fraction", h), ("demand", w), ("vascular", v),
                          ("chemokine", C), ("nk_blood", B), ("nk_tumour", T), ("nk_activity", E)):
            traj[name][:, -1] = val
        t = np.arange(days * spd + 1) * dt
        traj["nk_activity"] *= np.reshape(act_scale, (-1, 1)) if np.ndim(act_scale) else act_scale
    # trapezoid sums were accumulated without the 0.5 dt factor (and activity without kappa)
    auc *= 0.5 * dt * act_scale
    hsum *= 0.5 * dt
    return _finish(bio, D, ln_rt, auc, p, h, hsum / days, t, traj, rec)


@dataclass(frozen=True)
class InfusionKernels:
    """Responses of schedules to single NK infusions, for exact superposition.

    For fixed doses every NK state is linear in the infusions (they enter only as ``B += u``
    and every NK equation is linear in ``B, T``), and hypoxia does not depend on them.  So the
    activity integral and the activity at each fraction of any set of infusion days are sums
    of single-infusion responses; the clonogen survival then follows in closed form from the
    same :func:`_clonogen_log_survival`.  :meth:`combine` is therefore exact (to round-off), not
    an approximation, and scores thousands of infusion sets for the cost of a few simulations.

    Attributes
    ----------
    doses : ndarray, shape (S, days)
    days : ndarray, shape (K,)
        Candidate infusion days.
    auc : ndarray, shape (S, K)
        Activity integral of one infusion on each candidate day.
    activity : ndarray, shape (S, K, F)
        Activity just before each of the (up to F) fractions of each schedule.
    frac_dose, frac_h : ndarray, shape (S, F)
        Dose and hypoxic fraction of each fraction (0 for padding).
    base : Simulation
        The schedules without NK infusions (for U-independent outputs).
    """

    bio: Biology
    doses: np.ndarray
    days: np.ndarray
    auc: np.ndarray
    activity: np.ndarray
    frac_dose: np.ndarray
    frac_h: np.ndarray
    base: Simulation

    def combine(self, i: int, sets: np.ndarray) -> Simulation:
        """Outputs of schedule ``i`` with each row of ``sets`` (``(M, K)`` infusion counts)."""
        sets = np.asarray(sets, dtype=float)
        auc = sets @ self.auc[i]
        act = sets @ self.activity[i]                         # (M, F)
        d = self.frac_dose[i]
        used = d > 0
        p = self.bio.params
        ln = _clonogen_log_survival(d[used], self.frac_h[i, used], act[:, used], self.bio, p)
        ln_rt = ln.sum(axis=1)
        m = len(sets)
        b = self.base
        return _finish(self.bio, np.broadcast_to(self.doses[i], (m, self.doses.shape[1])),
                       ln_rt, auc * 1.0, p, np.full(m, b.hypoxic_fraction_end[i]),
                       np.full(m, b.mean_hypoxic_fraction[i]))


def infusion_kernels(bio: Biology, doses: Any, days: Any, *,
                     steps_per_day: int = 8) -> InfusionKernels:
    """Simulate every schedule with one infusion on each candidate day (see
    :class:`InfusionKernels`); ``S * (K + 1)`` simulations in one vectorised call."""
    D = _as_matrix(doses, "doses")
    days = np.asarray(days, dtype=int)
    S, H = D.shape
    K = days.size
    eye = np.zeros((K + 1, H))
    eye[np.arange(K), days] = 1.0                             # last row: no infusion
    DD = np.repeat(D, K + 1, axis=0)
    UU = np.tile(eye, (S, 1))
    sim = simulate(bio, DD, UU, steps_per_day=steps_per_day, record_fractions=True)
    auc = sim.nk_auc.reshape(S, K + 1)[:, :K]
    act_all = sim.fraction_activity.reshape(S, K + 1, H)
    F = max(int((D > 0).sum(axis=1).max()), 1)
    frac_dose = np.zeros((S, F))
    frac_h = np.zeros((S, F))
    activity = np.zeros((S, K, F))
    h_all = sim.fraction_hypoxia.reshape(S, K + 1, H)[:, K]
    for s_ in range(S):
        fd = np.flatnonzero(D[s_] > 0)
        frac_dose[s_, :fd.size] = D[s_, fd]
        frac_h[s_, :fd.size] = h_all[s_, fd]
        activity[s_, :, :fd.size] = act_all[s_, :K, fd].T
    base_rows = np.arange(S) * (K + 1) + K
    base = Simulation(**{k: getattr(sim, k)[base_rows] for k in (
        "nk_auc", "ln_survival", "log10_kill", "tcp", "nk_log10_kill", "hypoxic_fraction_end",
        "mean_hypoxic_fraction")})
    return InfusionKernels(bio, D, days, auc, activity, frac_dose, frac_h, base)


def simulate_reference(bio: Biology, doses: Any, infusions: Any = None, *, rtol: float = 1e-10,
                       atol: float = 1e-12) -> Simulation:
    """Simulate schedules one at a time with ``solve_ivp`` (the plain reference).

    Integrates the continuous equations (with the hypoxic fraction, the activity and its integral
    as quadratures of the state) between events with a tight-tolerance Runge-Kutta method and
    applies the same jump functions as :func:`simulate`.  Slow; for tests and benchmarks.
    """
    from scipy.integrate import solve_ivp

    D = _as_matrix(doses, "doses")
    U = np.zeros_like(D) if infusions is None else _as_matrix(infusions, "infusions")
    if U.shape[0] == 1 and D.shape[0] > 1:
        U = np.broadcast_to(U, D.shape)
    n, days = D.shape
    res = {k: np.zeros(n) for k in ("ln_rt", "auc", "h_end", "h_mean")}
    for i in range(n):
        p = _param_rows(bio, slice(i, i + 1), n)
        pv = {k: (np.asarray(v).ravel()[0] if np.ndim(v) else v) for k, v in p.values.items()}
        p = SurrogateParameters(pv, p.provenance)
        ka, ke, norm = (float(x) for x in sg.chemokine_rates(p))
        h0 = bio.hypoxic_fraction

        def rhs(t, y):
            w, v, P, C, B, T, _, _ = y
            kin = p.nk_infiltration_per_day * (1.0 + p.nk_chemokine_gain * C)
            h = float(sg.hypoxic_fraction(w, v, h0, p))
            E = float(_activity(T, h, p)) if bio.nk else 0.0
            return [(1 - w) / p.demand_recovery_days, (1 - v) / p.vascular_recovery_days,
                    -ka * P, ka * P - ke * C,
                    -(p.nk_blood_clearance_per_day + kin) * B,
                    kin * B - p.nk_tumour_loss_per_day * T, E, h]

        y = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        ln_rt = 0.0
        for j in range(days):
            d = D[i, j]
            if d > 0:
                h = sg.hypoxic_fraction(y[0], y[1], h0, p)
                act = _activity(y[5], h, p) if bio.nk else 0.0
                st, ln_s = _apply_fraction(np.float64(d), tuple(y[:6]), h, act, bio, p, norm)
                y[:6] = [float(s) for s in st]
                ln_rt += float(ln_s)
            if bio.nk and U[i, j] > 0:
                y[4] += U[i, j]
            sol = solve_ivp(rhs, (j, j + 1), y, method="DOP853", rtol=rtol, atol=atol)
            y = sol.y[:, -1].copy()
        res["ln_rt"][i] = ln_rt
        res["auc"][i] = y[6]
        res["h_end"][i] = sg.hypoxic_fraction(y[0], y[1], h0, p)
        res["h_mean"][i] = y[7] / days
    return _finish(bio, D, res["ln_rt"], res["auc"], bio.params, res["h_end"], res["h_mean"])
