"""The public batch API of the fast simulator: :func:`simulate` (many schedules at once),
:func:`infusion_kernels` (single-infusion responses for exact superposition) and
:func:`compile_kernels`.

Prepares the propagators and the fraction-jump table (from
:func:`rtopt.model.simulator.reference.apply_fraction`), runs the compiled kernels of
:mod:`rtopt.model.simulator.kernels` in chunks of rows, and hands the fractions to
:func:`rtopt.model.simulator.outcomes.tumour_outcomes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from rtopt.model import surrogate as sg
from rtopt.model.parameters import SurrogateParameters
from rtopt.model.simulator.biology import (ROW_FIELDS, STEPS_PER_DAY, Biology, Simulation,
                                           as_matrix, param_rows, tumour_rows)
from rtopt.model.simulator.kernels import (LANES, SERIAL_BELOW, TRAJ_NAMES, fraction_index,
                                           horizon_block_parallel, horizon_block_serial,
                                           infusion_block_parallel, infusion_block_serial,
                                           row_array, thread_parts)
from rtopt.model.simulator.outcomes import (as_column, compact_fractions, fraction_log_survival,
                                            tumour_outcomes)
from rtopt.model.circulation import endogenous_level
from rtopt.model.simulator.reference import (apply_fraction, endogenous_active,
                                             endogenous_start)

__all__ = ["simulate", "InfusionKernels", "infusion_kernels", "compile_kernels", "KERNEL_GROUPS"]


def simulate(bio: Biology, doses: Any, infusions: Any = None, *,
             steps_per_day: int = STEPS_PER_DAY,
             trajectory: bool = False, chunk: int = 65536,
             threads: int | None = None, record_fractions: bool = False,
             population: bool = True, counterfactual: bool = True) -> Simulation:
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
        Sub-steps per day (fourth order: the error against :func:`simulate_reference` falls
        about 16-fold per doubling; 2 keeps the NK favourability within 2e-4 on the benchmark
        schedules).
    trajectory : bool
        Also return every state on the sub-step grid (memory grows as ``N * days * steps``).
    chunk : int
        Schedules processed together (bounds memory; large chunks amortise Python overhead).
    record_fractions : bool
        Also return the NK activity and hypoxic fraction at each fraction (see
        :class:`Simulation`); :func:`infusion_kernels` uses them.
    threads : int, optional
        Threads of the compiled sub-step kernel (default: numba's, one per CPU).
    population : bool
        Compute local control (the population average; default).  False leaves
        ``local_control`` NaN and saves most of the outcome cost.
    counterfactual : bool
        Compute the same plans without NK cells and the NK-attributable gains (default).

    Returns
    -------
    Simulation
    """
    D = as_matrix(doses, "doses")
    n, days = D.shape
    U = np.zeros_like(D) if infusions is None else as_matrix(infusions, "infusions")
    if U.shape[0] == 1 and n > 1:
        U = np.broadcast_to(U, D.shape)
    if D.shape[0] == 1 and U.shape[0] > 1:
        D = np.broadcast_to(D, U.shape)
        n = D.shape[0]
    if U.shape != D.shape:
        raise ValueError(f"doses {D.shape} and infusions {U.shape} differ in shape")
    if D.min(initial=0.0) < 0 or U.min(initial=0.0) < 0:    # (no temporaries)
        raise ValueError("doses and infusions must be non-negative")
    if not bio.nk:
        U = np.zeros_like(D)
    starts = range(0, n, chunk)

    def run(i: int) -> Simulation:
        return _simulate_chunk(tumour_rows(bio, slice(i, i + chunk), n), D[i:i + chunk],
                               U[i:i + chunk],
                               param_rows(bio, slice(i, i + chunk), n), steps_per_day, trajectory,
                               record_fractions, population, counterfactual)

    previous = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        parts = [run(i) for i in starts]
    finally:
        numba.set_num_threads(previous)
    if len(parts) == 1:
        return parts[0]
    out = {name: np.concatenate([getattr(s, name) for s in parts]) for name in ROW_FIELDS}
    traj = None
    if trajectory:
        traj = {k: np.concatenate([s.trajectory[k] for s in parts]) for k in parts[0].trajectory}
    if record_fractions:
        out["fraction_activity"] = np.concatenate([s.fraction_activity for s in parts])
        out["fraction_hypoxia"] = np.concatenate([s.fraction_hypoxia for s in parts])
    return Simulation(**out, t_days=parts[0].t_days, trajectory=traj)


def _survival_trajectory(bio, p, D, t, ln_frac, activity) -> np.ndarray:
    """Cumulative log10 clonogen survival on the trajectory grid (nominal alpha)."""
    n, days = D.shape
    spd = (t.size - 1) // days
    steps = np.zeros((n, t.size))
    steps[:, 0:days * spd:spd] = ln_frac                      # fraction kill at the day's start
    ln = np.cumsum(steps, axis=1)
    if bio.nk:
        dt = t[1] - t[0]
        cum = np.concatenate([np.zeros((n, 1)),
                              np.cumsum(0.5 * dt * (activity[:, 1:] + activity[:, :-1]), axis=1)],
                             axis=1)
        ln -= as_column(p.nk_log_kill_per_activity_day, 2) * cum
    if bio.potential_doubling_days and bio.repopulation_kickoff_days is not None:
        frac = D > 0
        has = frac.any(axis=1)
        first = np.where(has, frac.argmax(axis=1), 0)[:, None]
        last = np.where(has, days - 1 - frac[:, ::-1].argmax(axis=1), 0)[:, None]
        elapsed = np.clip(np.minimum(t[None, :], last) - first, 0, None)
        ln += np.log(2.0) / bio.potential_doubling_days * np.maximum(
            0.0, elapsed - bio.repopulation_kickoff_days) * has[:, None]
    return ln / np.log(10.0)


def _prepare(bio, D, p, spd):
    """What the compiled kernels need besides the schedules: sub-step propagators, hypoxia
    constants and the fraction jumps (row ``i``'s fractions are ``rowptr[i]:rowptr[i + 1]``, in
    day order; fraction ``k``'s jumps are entry ``jidx[k]`` of a table over each row's distinct
    doses), and each row's overall time."""
    n, days = D.shape
    dt = 1.0 / spd
    ka, ke, norm = sg.chemokine_rates(p)
    # exact sub-step propagators of the linear parts (arrays: shared or one per sample)
    e_a, e_e = np.exp(-ka * dt), np.exp(-ke * dt)
    e_ah, e_eh = np.exp(-ka * dt / 2), np.exp(-ke * dt / 2)
    c_pc = ka / (ke - ka) * (e_a - e_e)          # P -> C over dt
    c_pch = ka / (ke - ka) * (e_ah - e_eh)      # P -> C over dt/2
    kcl, kout = p.nk_blood_clearance_per_day, p.nk_tumour_loss_per_day
    act_scale = p.nk_cytotoxicity * (1.0 - p.nk_treg_penalty)
    eta, h0 = p.nk_hypoxic_suppression, float(bio.hypoxic_fraction)
    consts = [row_array(x) for x in (
        np.exp(-dt / p.demand_recovery_days), np.exp(-dt / p.vascular_recovery_days), e_e, e_a,
        c_pc, e_eh, c_pch, np.exp(-dt / (2 * p.vascular_recovery_days)),
        p.nk_infiltration_per_day, p.nk_chemokine_gain, p.nk_chemokine_half_signal,
        kcl * dt, np.exp(-kout * dt), np.exp(-dt / (2 * p.demand_recovery_days)),
        np.exp(-kout * dt / 2), np.exp(-dt / (4 * p.demand_recovery_days)),
        np.exp(-dt / (4 * p.vascular_recovery_days)))]
    # the endogenous pool (docs/model.md section 13): its turnover propagators, level and
    # pre-treatment tumour NK (zero level when it is not modelled)
    endo = endogenous_active(bio)
    k_e = p.nk_endogenous_turnover_per_day
    consts += [row_array(x) for x in (
        np.exp(-k_e * dt), np.exp(-k_e * dt / 2),
        endogenous_level(p) if endo else 0.0, endogenous_start(p) if endo else 0.0)]
    shape_c = [row_array(x) for x in (p.hypoxic_fraction_max, p.hypoxia_gamma, eta)]
    # jumps of every state at each fraction, from apply_fraction on unit states (the one
    # statement of the jumps), over each row's distinct doses
    rowptr, jidx, tdose, trow, span, F = fraction_index(D)

    def on_rows(x):  # per-schedule parameters (samples) follow the table's rows
        return x[trow] if np.ndim(x) and np.shape(x)[0] == n else x

    ps = SurrogateParameters({k: on_rows(x) for k, x in p.values.items()}, p.provenance)
    one = np.ones(tdose.size)
    jumps = apply_fraction(tdose, (one, one, 0.0 * one, 0.0, one, one, one, one), bio, ps,
                           on_rows(norm))
    jw, jv, jP, jB, jT, jG, jTe = (np.ascontiguousarray(np.broadcast_to(jumps[c], tdose.shape),
                                                        dtype=float) for c in (0, 1, 2, 4, 5, 6, 7))
    act_e = p.nk_endogenous_cytotoxicity * (1.0 - p.nk_treg_penalty) if endo else 0.0
    return dict(dt=dt, rowptr=rowptr, jidx=jidx, F=max(F, 1), jumps=(jw, jv, jP, jT, jB),
                jumps_e=(jG, jTe), ascale=row_array(act_scale), act_scale=act_scale,
                act_scale_e=act_e, endo=endo, consts=consts, h0=h0, shape_c=shape_c, span=span)


def _simulate_chunk(bio, D, U, p, spd, want_traj, want_rec=False, population=True,
                    counterfactual=True):
    n, days = D.shape
    D = np.ascontiguousarray(D, dtype=float)
    U = np.ascontiguousarray(np.broadcast_to(U, D.shape), dtype=float)
    prep = _prepare(bio, D, p, spd)
    dt, F, act_scale = prep["dt"], prep["F"], prep["act_scale"]
    nk = bool(bio.nk)
    nt = len(TRAJ_NAMES)
    traj = np.empty((n, days * spd + 1, nt)) if want_traj else np.empty((0, 0, nt))
    rec_shape = (n, days) if want_rec or want_traj else (0, 0)
    fh_all, fa_all = np.zeros(rec_shape), np.zeros(rec_shape)
    fd, fh, fa = np.zeros((n, F)), np.zeros((n, F)), np.zeros((n, F))
    st = np.empty((n, 10))
    kernel = horizon_block_serial if n < SERIAL_BELOW else horizon_block_parallel
    kernel(spd, dt, D, U, prep["rowptr"], prep["jidx"], *prep["jumps"], *prep["jumps_e"],
           prep["ascale"], *prep["consts"], prep["h0"], *prep["shape_c"], nk, prep["endo"], traj,
           fh_all, fa_all, fd, fh, fa, st, thread_parts(n))
    h, hsum, auc = st[:, 6], st[:, 7], st[:, 8]
    auc = auc * act_scale if nk else np.zeros(n)
    auc_e = st[:, 9] * prep["act_scale_e"] if prep["endo"] else np.zeros(n)
    # tumour outcomes from the infused NK cells only: the clinical outcome calibration (RT
    # alone) already contains what the patient's own NK cells do (docs/model.md section 13)
    out = tumour_outcomes(bio, p, D, fd, fh, fa, auc, population, counterfactual=counterfactual,
                          overall=prep["span"])
    t = tr = None
    if want_traj:
        t = np.arange(days * spd + 1) * dt
        tr = {name: traj[:, :, c].copy() for c, name in enumerate(TRAJ_NAMES)}
        if not nk:
            tr["nk_activity"][:] = 0.0
        tr["nk_activity"] *= np.reshape(act_scale, (-1, 1)) if np.ndim(act_scale) else act_scale
        pd = SurrogateParameters({k: as_column(x, 2) for k, x in p.values.items()}, p.provenance)
        ln_frac = np.where(D > 0, fraction_log_survival(D, fh_all, fa_all, bio, pd), 0.0)
        tr["log10_survival"] = _survival_trajectory(bio, p, D, t, ln_frac, tr["nk_activity"])
        # activity of the endogenous tumour NK; nk_activity becomes the total the tumour sees
        act_e = as_column(prep["act_scale_e"], 2)
        tr["nk_activity_infused"] = tr["nk_activity"].copy()
        tr["nk_activity_endogenous"] = (act_e * tr["nk_endogenous"]
                                        * (1.0 - as_column(p.nk_hypoxic_suppression, 2)
                                           * tr["hypoxic_fraction"]))
        tr["nk_activity"] = tr["nk_activity"] + tr["nk_activity_endogenous"]
    return Simulation(nk_auc=auc + auc_e, nk_auc_endogenous=auc_e, **out,
                      hypoxic_fraction_end=h.copy(),
                      mean_hypoxic_fraction=hsum / days, t_days=t, trajectory=tr,
                      fraction_activity=fa_all if want_rec else None,
                      fraction_hypoxia=fh_all if want_rec else None)


@dataclass(frozen=True)
class InfusionKernels:
    """Responses of schedules to single NK infusions, for exact superposition.

    For fixed doses every NK state is linear in the infusions (they enter only as ``B += u``
    and every NK equation is linear in ``B, T``), and hypoxia, perfusion and chemokine do not
    depend on them.  So the activity integral and the previous-day activity before each
    fraction of any set of infusion days are sums of single-infusion responses; the outcomes
    then follow in closed form from the same :func:`tumour_outcomes`.  :meth:`combine` is therefore
    exact (to round-off), not an approximation, and scores thousands of infusion sets for the
    cost of a few simulations.

    Attributes
    ----------
    doses : ndarray, shape (S, days)
    days : ndarray, shape (K,)
        Candidate infusion days.
    auc : ndarray, shape (S, K)
        Activity integral of one infusion on each candidate day (the endogenous NK activity,
        which no infusion changes, is ``base.nk_auc_endogenous``; :meth:`combine` adds it).
    activity : ndarray, shape (S, K, F)
        Previous-day activity before each of the (up to F) fractions of each schedule.
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

    def combine(self, i: int, sets: np.ndarray, population: bool = True,
                counterfactual: bool = True) -> Simulation:
        """Outputs of schedule ``i`` with each row of ``sets`` (``(M, K)`` infusion counts);
        ``population`` as in :func:`simulate`."""
        sets = np.asarray(sets, dtype=float)
        m = len(sets)
        auc = sets @ self.auc[i]
        act = sets @ self.activity[i]                         # (M, F)
        fd = np.broadcast_to(self.frac_dose[i], act.shape)
        fh = np.broadcast_to(self.frac_h[i], act.shape)
        D = np.broadcast_to(self.doses[i], (m, self.doses.shape[1]))
        out = tumour_outcomes(self.bio, self.bio.params, D, fd, fh, act, auc * 1.0, population,
                              shared=True, counterfactual=counterfactual)
        b = self.base
        # the endogenous NK activity does not depend on the infusions: the base schedule's
        e = np.full(m, b.nk_auc_endogenous[i])
        return Simulation(nk_auc=auc + e, nk_auc_endogenous=e, **out,
                          hypoxic_fraction_end=np.full(m, b.hypoxic_fraction_end[i]),
                          mean_hypoxic_fraction=np.full(m, b.mean_hypoxic_fraction[i]))


def infusion_kernels(bio: Biology, doses: Any, days: Any, *,
                     steps_per_day: int = STEPS_PER_DAY,
                     population: bool = True) -> InfusionKernels:
    """Simulate every schedule with one infusion on each candidate day (see
    :class:`InfusionKernels`): the schedules once without infusions (:func:`simulate`), then
    the ``K`` single-infusion responses of each schedule in one compiled pass that shares the
    TME between them (:func:`infusion_block`), in chunks of rows that bound memory.
    Array-valued parameters of ``bio`` (samples) have one value per schedule row."""
    D = as_matrix(doses, "doses")
    days = np.asarray(days, dtype=int)
    S, H = D.shape
    K = days.size
    base_sim = simulate(bio, D, steps_per_day=steps_per_day, record_fractions=True,
                        population=population)
    auc, activity = _infusion_responses(bio, D, days, steps_per_day)
    frac_dose, frac_h = compact_fractions(D, base_sim.fraction_hypoxia)
    base = Simulation(**{k: getattr(base_sim, k) for k in ROW_FIELDS})
    return InfusionKernels(bio, D, days, auc, activity, frac_dose, frac_h, base)


def _infusion_responses(bio: Biology, D: np.ndarray, days: np.ndarray,
                        steps_per_day: int) -> tuple[np.ndarray, np.ndarray]:
    """The single-infusion activity integrals ``(S, K)`` and activities before each fraction
    ``(S, K, F)`` of :func:`infusion_kernels` (the compiled pass alone)."""
    S, K = D.shape[0], days.size
    F = max(int((D > 0).sum(axis=1).max(initial=0)), 1)
    auc = np.zeros((S, K))
    activity = np.zeros((S, K, F))
    order = np.argsort(days, kind="stable")
    cdays = np.ascontiguousarray(days[order], dtype=np.int64)
    if bio.nk and K:
        chunk = max(LANES, (1 << 21) // max(1, K * F))
        for i in range(0, S, chunk):
            rows = slice(i, i + chunk)
            Dc = np.ascontiguousarray(D[rows], dtype=float)
            p = param_rows(bio, rows, S)
            prep = _prepare(tumour_rows(bio, rows, S), Dc, p, steps_per_day)
            a = np.zeros((Dc.shape[0], K))
            fa = np.zeros((Dc.shape[0], K, prep["F"]))
            kernel = (infusion_block_serial if Dc.shape[0] < SERIAL_BELOW
                      else infusion_block_parallel)
            kernel(steps_per_day, prep["dt"], Dc, prep["rowptr"], prep["jidx"], *prep["jumps"],
                   prep["ascale"], *prep["consts"], prep["h0"], *prep["shape_c"], cdays, a, fa,
                   thread_parts(Dc.shape[0]))
            auc[rows][:, order] = a * np.reshape(prep["ascale"], (-1, 1))
            activity[rows][:, order, :prep["F"]] = fa
    return auc, activity


def _warm_infusion() -> None:
    """Compile (into the on-disk cache) the single-infusion kernel alone: run by
    :func:`compile_kernels` in a second process while the first compiles the others."""
    bio = Biology.simple("lung", product="il15_expanded")
    D = np.zeros((8, 21))
    D[:, [0, 1, 2]] = 10.0
    _infusion_responses(bio, D, np.array([3, 10]), STEPS_PER_DAY)


def _compile_infusion_aside() -> Any:
    """A second process compiling the single-infusion kernel (the slowest after the horizon
    one) into the shared on-disk cache, or None when there is one CPU.  Two cores compile the
    groups of a first solve in about half the time (numba compiles one function at a time)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if (os.cpu_count() or 1) < 2:
        return None
    root = str(Path(__file__).resolve().parents[3])      # the folder holding this rtopt
    code = ("import sys; sys.path.insert(0, %r); "
            "from rtopt.model.simulator.batch import _warm_infusion; _warm_infusion()" % root)
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


KERNEL_GROUPS = ("horizon", "population", "infusion")
"""The compiled kernels by what needs them: ``horizon`` every simulation (the TME, NK cells and
nominal outcomes), ``population`` local control (the population TCP over radiosensitivity
nodes), ``infusion`` single-infusion responses (:func:`infusion_kernels`: the exhaustive
search and Pareto fronts with NK infusions, robust solves)."""

_READY: set[tuple[str, bool]] = set()


def compile_kernels(groups: Any = KERNEL_GROUPS, *, threaded: bool = True,
                    progress: Any = None) -> float:
    """Compile the simulator kernels of ``groups`` (or load them from the on-disk cache), once
    per process.

    Solves call this before they start their clock: in a fresh installation the first compile
    takes tens of seconds, and inside a time limit it would leave the search no time (the
    bundled lung solve then stopped at its limit with a poor plan).  With a warm cache it
    costs well under a second, and nothing after the first call.  The compiled code is kept
    per user and rtopt version (:mod:`rtopt.model.jitcache`).

    Parameters
    ----------
    groups : iterable of str
        Names from :data:`KERNEL_GROUPS` (default: all).
    threaded : bool
        Also the threaded variants (batches of ``SERIAL_BELOW`` = 512 schedules or more run
        them); the serial ones are always compiled.
    progress : callable, optional
        ``progress(step, done, total)`` before each step (``step`` names it and starts with
        ``compiling`` or, when the on-disk cache has the kernel, ``loading``; ``done`` steps of
        ``total`` are finished) and ``progress(None, total, total)`` at the end: for a notice.

    Returns
    -------
    float
        Seconds this call spent compiling or loading kernels (0 when they were ready).
    """
    import time

    asked = set(groups)
    unknown = asked - set(KERNEL_GROUPS)
    if unknown:
        raise ValueError(f"unknown kernel group(s) {sorted(unknown)}; one of {KERNEL_GROUPS}")
    groups = [g for g in KERNEL_GROUPS if g in asked]
    steps = [(g, t) for t in ((False, True) if threaded else (False,)) for g in groups
             if (g, t) not in _READY]
    if not steps:
        return 0.0
    t0 = time.perf_counter()
    bio = Biology.simple("lung", product="il15_expanded")
    aside = None
    cold = [g for g in groups if not kernels_cached(g)]
    if "infusion" in cold and len(cold) > 1:
        aside = _compile_infusion_aside()
    for k, (g, t) in enumerate(steps):
        if progress is not None:
            verb = "loading" if kernels_cached(g) else "compiling"
            progress(f"{verb} the {g} kernel{' (threaded)' if t else ''}", k, len(steps))
        n = SERIAL_BELOW if t else 8
        D = np.zeros((n, 21))
        D[:, [0, 1, 2]] = 10.0
        U = np.zeros_like(D)
        U[:, 3] = 1.0
        if g == "horizon":
            simulate(bio, D, U, population=False, counterfactual=False)
        elif g == "population":
            simulate(bio, D, U, population=True, counterfactual=False)
        else:
            if aside is not None:   # compiled aside: wait for it, then load it from the cache
                try:
                    aside.wait(timeout=900)
                except Exception:   # noqa: BLE001 - a stuck helper: compile here instead
                    aside.kill()
                aside = None
            infusion_kernels(bio, D, np.array([3, 10]), population=False)
        _READY.add((g, t))
    if progress is not None:
        progress(None, len(steps), len(steps))
    return time.perf_counter() - t0


def kernels_cached(group: str) -> bool:
    """True when numba's on-disk cache holds compiled code of this source for the kernels of
    ``group`` (:data:`KERNEL_GROUPS`), so that :func:`compile_kernels` only loads it (best
    effort: reads numba's cache index; False when it cannot tell)."""
    from rtopt.model.simulator import kernels as K

    # the horizon warm-up's nominal outcomes run ln_s_nodes (one node); local control runs the
    # fused population pass (population_tcp serves the general path, compiled on first use)
    funcs = {"horizon": (K.horizon_block_body, K.ln_s_nodes_serial),
             "population": (K.population_outcomes_serial,),
             "infusion": (K.infusion_block_body,)}[group]
    try:
        return all(bool(f._cache._cache_file._load_index()) for f in funcs)
    except (AttributeError, OSError, EOFError, ValueError):
        return False
