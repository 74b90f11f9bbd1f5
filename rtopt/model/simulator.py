"""Simulators of the TME surrogate: a fast vectorised one and a plain reference (``solve_ivp``).

State (docs/model.md), all relative to pre-treatment or to one standard NK infusion:

======  ==========================================================================
``w``   oxygen demand (1 at baseline); each fraction ``w <- w (1 - m(d))``, relaxes to 1
``v``   vascular function (1 at baseline); ``v <- v (1 - V(d))``, relaxes to 1
``P``   chemokine precursor; a fraction adds ``A(d) norm``; ``dP/dt = -k_rise P``
``C``   chemokine signal; ``dC/dt = k_rise P - k_decay C``
``B``   NK cells in blood; an infusion adds 1; ``dB/dt = -(k_cl + k_in) B``
``T``   NK cells in the tumour; ``dT/dt = k_in B - k_out T``,
        ``k_in = k0 v (1 + g C / (C50 + C))`` (perfusion and saturating recruitment)
======  ==========================================================================

FMISO hypoxic fraction ``h = min(h_max, h0 (w/v)^gamma)``; NK activity
``E = kappa (1 - treg) T (1 - eta h)`` (hypoxia suppresses NK killing).  At a fraction of ``d``
Gy on day ``j`` (time ``t = j``, before any infusion that day) in-field NK cells die,
``T <- T exp(-d / D0)``, and blood NK receive ``f_blood d``.

Tumour control (:func:`_outcomes`, shared by every simulator and by :class:`InfusionKernels`):
each fraction kills clonogens in three compartments, oxic, intermediately hypoxic (OER
``oer_intermediate``) and anoxic (OER ``oer``), whose shares follow from the FMISO fraction
(:func:`rtopt.model.surrogate.clonogen_hypoxic_shares`); survivors redistribute between fractions.
Alpha is raised by the NK activity present over the day before the fraction,
``alpha (1 + s E_prev / (E50 + E_prev))``.  NK cells kill clonogens by mass action
(``dN/dt = -c E N``, so ``ln S -= c * integral(E dt)``); repopulation adds
``ln 2 / T_pot * max(0, T - T_k)``.  Per-patient Poisson TCP uses the nominal alpha; local
control averages it over a normal spread of alpha (:func:`rtopt.model.radiobiology.population_tcp`).
The same plan without NK cells (no radiosensitisation, no NK kill; hypoxia does not depend on
NK cells) gives the NK-attributable gains.

:func:`simulate` evaluates many schedules at once (rows of a ``(N, days)`` dose matrix) and
broadcasts array-valued parameters (parameter samples) along the same rows.  The jumps of every
state at every fraction are computed first, for the whole dose matrix, by the numpy functions of
:mod:`rtopt.model.surrogate` (through :func:`_apply_fraction`); one compiled kernel (numba, parallel
over schedules) then runs the whole horizon of each schedule: the jumps on fraction days,
infusions, and between them sub-steps exact for ``w, v, P, C``, with ``B, T`` exact for the
trafficking rate frozen at the chemokine and perfusion of each sub-step's midpoint (second
order); the activity and hypoxia integrals use the trapezoid rule; ``steps_per_day`` sets the
sub-step.  :func:`simulate_reference` integrates the same equations
with ``scipy.integrate.solve_ivp`` one schedule at a time; the tests hold the two together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

# numba caches compiled kernels beside the source by default; inside site-packages those files
# outlive `pip uninstall` and leave an `rtopt/` folder without a package that shadows a later
# install.  A per-user cache avoids that (an explicit NUMBA_CACHE_DIR still wins).
os.environ.setdefault("NUMBA_CACHE_DIR",
                      os.path.join(os.path.expanduser("~"), ".cache", "rtopt", "numba"))
from llvmlite import ir  # noqa: E402
from numba import get_num_threads, njit, prange, types  # noqa: E402  (after the cache location is set)
from numba.extending import intrinsic  # noqa: E402

from rtopt.model import radiobiology as rb
from rtopt.model import surrogate as sg
from rtopt.model.parameters import SurrogateParameters, resolve

__all__ = ["Biology", "Simulation", "simulate", "simulate_reference", "STATE_NAMES",
           "fraction_log_survival",
           "InfusionKernels", "infusion_kernels"]

STEPS_PER_DAY = 2
"""Default sub-steps per day of :func:`simulate` and :func:`infusion_kernels` (fourth-order
scheme: at 2 a day the NK favourability is within 2e-4 of :func:`simulate_reference` on the
benchmark schedules)."""

TRAJECTORY_STEPS_PER_DAY = 8
"""Sub-steps per day of trajectories shown to people (plots, ``rtopt simulate --json``): a
finer grid than the accuracy needs, for smooth curves."""

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
        """Keyword arguments of :func:`rtopt.model.radiobiology.neg_log_survival` for this tumour."""
        return dict(model=self.survival_model, transition_dose_gy=self.transition_dose_gy,
                    d0_gy=self.usc_d0_gy, dq_gy=self.usc_dq_gy)

    @classmethod
    def from_instance(cls, inst: Any, **param_overrides: Any) -> "Biology":
        """Build from a validated :class:`rtopt.problem.instance.Instance` (optional parameter overrides)."""
        t = inst.tumour
        params = inst.surrogate_parameters()
        if param_overrides:
            params = params.with_values(**param_overrides)
        clonogens = t.clonogens
        if clonogens is None:                       # the site's outcome-calibrated value
            from rtopt.model.data.calibrated import OUTCOME

            clonogens = OUTCOME[str(getattr(t.site, "value", t.site))]["clonogens"]
        return cls(alpha_per_gy=t.alpha_per_gy, alpha_beta_gy=t.alpha_beta_gy,
                   clonogens=clonogens, hypoxic_fraction=t.hypoxic_fraction, params=params,
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
        NK favourability: integral of NK activity over the horizon (activity-days).  It measures
        how much NK activity the tumour sees, not an outcome: activity counts whether or not
        clonogens remain.
    ln_survival : ndarray
        Natural log of the clonogen surviving fraction at the nominal alpha (RT over the three
        clonogen compartments with NK radiosensitisation, NK killing, repopulation).
    log10_kill : ndarray
        ``-ln_survival / ln 10``.
    tcp : ndarray
        Per-patient Poisson tumour control probability ``exp(-N0 S)`` at the nominal alpha.
    local_control : ndarray
        Population tumour control: ``tcp`` averaged over the spread of alpha
        (``alpha_sd_per_gy``); what clinical series report.
    nk_log10_kill : ndarray
        The part of ``log10_kill`` due to direct NK killing.
    log10_kill_without_nk, local_control_without_nk : ndarray
        The same plan without NK cells.
    nk_gain_log10_kill, nk_gain_local_control : ndarray
        NK-attributable gains: the outcome with NK cells minus the same plan without them.
    hypoxic_fraction_end : ndarray
        FMISO hypoxic fraction at the end of the horizon.
    mean_hypoxic_fraction : ndarray
        Time-averaged FMISO hypoxic fraction over the horizon.
    t_days : ndarray or None
        Trajectory times, shape ``(K,)`` (only with ``trajectory=True``).
    trajectory : dict or None
        ``{name: (N, K) array}`` for ``hypoxic_fraction``, ``demand``, ``vascular``,
        ``chemokine``, ``nk_blood``, ``nk_tumour``, ``nk_activity`` and ``log10_survival``
        (cumulative log10 surviving fraction of clonogens at the nominal alpha).
    fraction_activity, fraction_hypoxia : ndarray or None
        ``(N, days)``: NK activity over the day before each fraction (its mean, the
        radiosensitising activity) and the FMISO hypoxic fraction at each fraction (0 on days
        without one); only with ``record_fractions=True``.
    """

    nk_auc: np.ndarray
    ln_survival: np.ndarray
    log10_kill: np.ndarray
    tcp: np.ndarray
    local_control: np.ndarray
    nk_log10_kill: np.ndarray
    log10_kill_without_nk: np.ndarray
    local_control_without_nk: np.ndarray
    nk_gain_log10_kill: np.ndarray
    nk_gain_local_control: np.ndarray
    hypoxic_fraction_end: np.ndarray
    mean_hypoxic_fraction: np.ndarray
    t_days: np.ndarray | None = None
    trajectory: dict[str, np.ndarray] | None = field(default=None, repr=False)
    fraction_activity: np.ndarray | None = field(default=None, repr=False)
    fraction_hypoxia: np.ndarray | None = field(default=None, repr=False)


_ROW_FIELDS = ("nk_auc", "ln_survival", "log10_kill", "tcp", "local_control", "nk_log10_kill",
               "log10_kill_without_nk", "local_control_without_nk", "nk_gain_log10_kill",
               "nk_gain_local_control", "hypoxic_fraction_end", "mean_hypoxic_fraction")
"""The per-schedule fields of :class:`Simulation`."""


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


def _tumour_rows(bio: Biology, rows: slice, n: int) -> Biology:
    """Slice array-valued tumour values (per-sample alpha, alpha/beta, N0) to a chunk."""
    kw = {}
    for k in ("alpha_per_gy", "alpha_beta_gy", "clonogens"):
        a = np.asarray(getattr(bio, k), dtype=float)
        if a.ndim == 1 and a.shape[0] == n:
            kw[k] = a[rows]
    return replace(bio, **kw) if kw else bio


_SERIAL_BELOW = 512
"""Batches smaller than this run the compiled kernels without threads (pool start-up costs
milliseconds per call, more than the work of a few hundred schedules)."""


def _parts(n: int) -> int:
    """How many runs of blocks the horizon kernels split ``n`` schedules into: one per call of
    the block body, so arrays are reference-counted per run, not per 64-schedule block (two
    threads counting the same arrays cost ~10 % of the throughput); four per thread balance
    blocks with and without NK work."""
    return 1 if n < _SERIAL_BELOW else 4 * get_num_threads()


def _jit_pair(fn: Any, **jit: Any) -> tuple[Any, Any]:
    """Threaded and serial compiled variants of ``fn``.

    Each compiles a copy of ``fn`` under its own name: numba's on-disk cache is keyed by the
    function's name and signature, not by ``parallel``, so two variants of one function would
    share cache entries and one would load the other's machine code (the threaded variant
    running the serial code, or the reverse)."""
    import types as _t

    out = []
    for suffix, par in (("_parallel", True), ("_serial", False)):
        f = _t.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__,
                            fn.__closure__)
        f.__qualname__ = fn.__qualname__ + suffix
        f.__doc__ = fn.__doc__
        f.__module__ = fn.__module__
        out.append(njit(parallel=par, **jit)(f))
    return out[0], out[1]


def _col(x: Any, nd: int) -> Any:
    """A per-schedule parameter array ``(N,)`` as ``(N, 1, ...)`` with ``nd`` axes in all."""
    if np.ndim(x) == 1:
        return np.reshape(x, (-1,) + (1,) * (nd - 1))
    return x


def fraction_log_survival(d: Any, h: Any, act: Any, bio: Biology, p: Any,
                          scale: Any = None) -> np.ndarray:
    """ln S of one fraction over the oxic, intermediate and anoxic clonogen compartments.

    Parameters
    ----------
    d, h, act : array_like
        Dose (Gy), FMISO hypoxic fraction before the fraction, and the NK activity over the
        day before it (radiosensitisation); they broadcast together.
    bio : Biology
    p : SurrogateParameters
        Values broadcast against ``d`` (per-schedule arrays already shaped by the caller).
    scale : array_like, optional
        A patient's radiosensitivity relative to the nominal one (alpha and beta scaled
        together, fixed alpha/beta); may carry a trailing axis (population nodes), in which
        case ``d``, ``h`` and ``act`` need a matching singleton axis.  Default 1.
    """
    nd = max(np.ndim(d), np.ndim(act))               # per-sample alpha follows the rows
    a = _col(bio.alpha_per_gy, nd) * (1.0 + p.nk_radiosensitisation_max * act
                                      / (p.nk_radiosensitisation_e50 + act))
    b = _col(bio.beta_per_gy2, nd)
    kw = bio.survival_kw
    hi, ha = sg.clonogen_hypoxic_shares(h, p)
    doses = (d, d / p.oer_intermediate, d / p.oer)
    with np.errstate(divide="ignore"):
        logw = (np.log1p(-(hi + ha)), np.log(hi), np.log(ha))
    if scale is None:
        neg = [rb.neg_log_survival(x, a, b, **kw) for x in doses]
    elif bio.survival_model in ("lq", "lq_l"):
        # LQ and LQ-L are proportional to (alpha, beta) at a fixed transition dose: scale the
        # nominal values instead of re-evaluating the model at every node
        neg = [rb.neg_log_survival(x, a, b, **kw) * scale for x in doses]
    else:
        neg = [rb.neg_log_survival(x, a * scale, b * scale, **kw) for x in doses]
    terms = [w - n for w, n in zip(logw, neg)]
    # log-sum-exp without underflow at large doses
    return np.logaddexp(np.logaddexp(terms[0], terms[1]), terms[2])


def _ln_s_nodes_py(fd, fh, fa, alpha, beta, smax, e50, ratio, anox, oer_i, oer, d_t, lq_l,
                   scale, out):  # pragma: no cover - compiled
    """``out[i, q]``: ln S of row ``i``'s fractions at population node ``q`` (LQ and LQ-L).

    The compiled form of :func:`fraction_log_survival` summed over fractions, for the survival
    models that are proportional to the patient's radiosensitivity ``scale[i|0, q]`` (relative
    to the nominal alpha).  Per fraction, ``ln sum_k w_k exp(-scale n_k)`` over the three
    compartments is written as ``-scale n_min + ln sum_k w_k exp(-scale (n_k - n_min))`` with
    ``n_min`` the least-killed populated compartment, so the sum lies in ``[w_min, 1]`` (no
    underflow), and the compartment factors follow the node grid, linear in ``scale`` above 0,
    as a geometric sequence: two exponentials per compartment and fraction instead of one per
    node.  The per-fraction sums are multiplied (rescaled before they could underflow) and one
    logarithm per node closes the row.  ``fd, fh, fa`` are ``(N, F)`` dose, FMISO fraction and
    previous-day activity (0-dose padding contributes nothing).
    """
    n, F = fd.shape
    Q = scale.shape[1]
    for blk in prange((n + 63) // 64):             # rows in blocks: scratch allocated once
        tot = np.empty(Q)
        prod = np.empty(Q)
        neg = np.empty(3)
        w = np.empty(3)
        for i in range(blk * 64, min(n, blk * 64 + 64)):
            sc = scale[i] if scale.shape[0] > 1 else scale[0]
            a0, b, sm, e5 = _at(alpha, i), _at(beta, i), _at(smax, i), _at(e50, i)
            rt, ax, oi, oa = _at(ratio, i), _at(anox, i), _at(oer_i, i), _at(oer, i)
            dti = _at(d_t, i)
            q0 = 0
            while q0 < Q and sc[q0] <= 0.0:
                q0 += 1
            step = (sc[Q - 1] - sc[q0]) / (Q - 1 - q0) if q0 < Q - 1 else 0.0
            tot[:] = 0.0
            prod[:] = 1.0
            for f in range(F):
                d = fd[i, f]
                if d <= 0.0:
                    continue
                act = fa[i, f]
                a = a0 * (1.0 + sm * act / (e5 + act))
                hc = rt * fh[i, f]
                hc = hc if hc < 1.0 else 1.0
                ha = hc * ax
                hi = hc - ha
                w[0], w[1], w[2] = 1.0 - (hi + ha), hi, ha
                for k in range(3):
                    x = d if k == 0 else d / oi if k == 1 else d / oa
                    lq = x * (a + b * x)
                    if lq_l and x > dti:
                        lq = dti * (a + b * dti) + (a + 2.0 * b * dti) * (x - dti)
                    neg[k] = lq
                nmin = np.inf                            # least-killed populated compartment
                for k in range(3):
                    if w[k] > 0.0 and neg[k] < nmin:
                        nmin = neg[k]
                if nmin == np.inf:
                    nmin = 0.0
                for q in range(q0):                      # nodes at alpha = 0: no kill
                    s = w[0] + w[1] + w[2]
                    prod[q] *= s
                e0 = w[0] * np.exp(-sc[q0] * (neg[0] - nmin)) if w[0] > 0.0 else 0.0
                e1 = w[1] * np.exp(-sc[q0] * (neg[1] - nmin)) if w[1] > 0.0 else 0.0
                e2 = w[2] * np.exp(-sc[q0] * (neg[2] - nmin)) if w[2] > 0.0 else 0.0
                r0 = r1 = r2 = 1.0
                if Q - q0 > 1:                           # (unused for a single node)
                    r0 = np.exp(-step * (neg[0] - nmin))
                    r1 = np.exp(-step * (neg[1] - nmin))
                    r2 = np.exp(-step * (neg[2] - nmin))
                for q in range(q0, Q):
                    tot[q] -= sc[q] * nmin
                    p = prod[q] * (e0 + e1 + e2)
                    if p < 1e-250:                       # rescale before underflow
                        tot[q] += np.log(p)
                        p = 1.0
                    prod[q] = p
                    e0 *= r0
                    e1 *= r1
                    e2 *= r2
            for q in range(Q):
                out[i, q] = tot[q] + np.log(prod[q])


_ln_s_nodes_parallel, _ln_s_nodes_serial = _jit_pair(_ln_s_nodes_py, cache=True,
                                                     error_model="numpy")


def _ln_s_nodes(bio, p, fd, fh, fa, scale):
    """ln S ``(N, Q)`` at the nodes ``scale`` (``(N|1, Q)``) by :func:`_ln_s_nodes_py`."""
    lq_l = bio.survival_model == "lq_l"
    vals = [_row_array(x) for x in (
        bio.alpha_per_gy, bio.beta_per_gy2, p.nk_radiosensitisation_max,
        p.nk_radiosensitisation_e50, p.clonogen_hypoxia_ratio, p.anoxic_share,
        p.oer_intermediate, p.oer, bio.transition_dose_gy if lq_l else 1.0)]
    fd, fh, fa = (np.ascontiguousarray(x, dtype=float) for x in np.broadcast_arrays(fd, fh, fa))
    out = np.empty((fd.shape[0], scale.shape[1]))
    kernel = _ln_s_nodes_serial if fd.shape[0] < _SERIAL_BELOW else _ln_s_nodes_parallel
    kernel(fd, fh, fa, *vals, lq_l, np.ascontiguousarray(scale, dtype=float), out)
    return out


def _population_tcp_py(ln_s, log_n0, lo, frac, w, out):  # pragma: no cover - compiled
    """:func:`rtopt.model.radiobiology.population_tcp` fused into one pass per row (same grid, same
    linear interpolation and clipping; a test holds the two together).  The per-patient TCP
    of all fine points is one branch-free loop with :func:`_exp` (vectorised); a per-patient
    TCP below the smallest normal double (1e-308) counts as 0."""
    n, _ = ln_s.shape
    J = lo.shape[0]
    for blk in prange((n + 63) // 64):
        x = np.empty(J)
        x1 = np.empty(J)
        for i in range(blk * 64, min(n, blk * 64 + 64)):
            c = log_n0[i] if log_n0.shape[0] > 1 else log_n0[0]
            for j in range(J):                      # gather the bracketing nodes
                x[j] = ln_s[i, lo[j]]
                x1[j] = ln_s[i, lo[j] + 1]
            for j in range(J):                      # branch-free: vectorised
                xj = (1.0 - frac[j]) * x[j] + frac[j] * x1[j] + c
                xj = -40.0 if xj < -40.0 else xj
                xj = 700.0 if xj > 700.0 else xj
                y = -_exp(xj)
                x[j] = 0.0 if y < -708.0 else _exp(y if y > -708.0 else -708.0)
            acc = 0.0
            for j in range(J):
                acc += w[j] * x[j]
            out[i] = acc if acc < 1.0 else 1.0  # the weights sum to 1 only to round-off


_population_tcp_parallel, _population_tcp_serial = _jit_pair(_population_tcp_py, cache=True,
                                                             error_model="numpy")
_FINE_LO, _FINE_FRAC = rb.fine_grid_interpolation()


def population_tcp(clonogens: Any, ln_s: np.ndarray) -> np.ndarray:
    """Compiled :func:`rtopt.model.radiobiology.population_tcp` for ``(N, Q)`` node values."""
    ln_s = np.ascontiguousarray(ln_s, dtype=float)
    with np.errstate(divide="ignore"):
        log_n0 = np.ascontiguousarray(np.atleast_1d(np.log(np.asarray(clonogens, dtype=float)))
                                      .ravel())
    out = np.empty(ln_s.shape[0])
    kernel = _population_tcp_serial if ln_s.shape[0] < _SERIAL_BELOW else _population_tcp_parallel
    kernel(ln_s, log_n0, _FINE_LO, _FINE_FRAC, rb.FINE_WEIGHTS, out)
    return out


def _outcomes_proportional(bio, p, D, fd, fh, fa, auc, shared=False, counterfactual=True,
                           overall=None):
    """:func:`_outcomes` for LQ and LQ-L (proportional to the patient's radiosensitivity)."""
    alphas = rb.population_alphas(_col(bio.alpha_per_gy, 1), _col(p.alpha_sd_per_gy, 1))
    scale = np.ascontiguousarray(np.reshape(alphas / _col(bio.alpha_per_gy, 2),
                                            (-1, alphas.shape[-1])))

    def node_sums(act, fd, fh):
        return _ln_s_nodes(bio, p, fd, fh, act, scale)

    ln_nk = node_sums(fa, fd, fh)
    if not counterfactual:
        ln_0 = None
    elif bio.nk and np.any(fa > 0):
        # without NK cells every row of a shared schedule is the same: compute one
        ln_0 = (node_sums(np.zeros_like(fa[:1]), fd[:1], fh[:1]) if shared
                else node_sums(np.zeros_like(fa), fd, fh))
    else:
        ln_0 = ln_nk
    return _assemble(bio, p, D, auc, ln_nk, ln_0, True, overall)


def _outcomes(bio: Biology, p: Any, D: np.ndarray, fd: np.ndarray, fh: np.ndarray,
              fa: np.ndarray, auc: np.ndarray, population: bool = True,
              general: bool = False, shared: bool = False,
              counterfactual: bool = True, overall: Any = None) -> dict[str, np.ndarray]:
    """Tumour outcomes of ``N`` schedules from their fractions (the one place they are computed).

    ``fd, fh, fa`` are ``(N, F)`` dose, FMISO hypoxic fraction and previous-day NK activity of
    each fraction (0-dose padding contributes nothing); ``auc`` the NK activity integral.
    ``population`` False skips the population average (local control is then NaN): a
    shortcut for searches whose objective does not need it.  ``general`` forces the plain
    numpy path (tests hold the compiled node expansion to it).  ``shared`` says every row
    has the same doses and hypoxia (only the NK activity differs, as in
    :meth:`InfusionKernels.combine`), so the plan without NK cells is computed once.
    ``counterfactual`` False skips the plan without NK cells (its outcomes and the
    NK-attributable gains are then NaN): for searches whose objective does not use them.
    ``overall`` is each row's overall time when the caller has it
    (:func:`rtopt.model.radiobiology.overall_days` of ``D`` otherwise).
    """
    if population and not general and bio.survival_model in ("lq", "lq_l") and fd.shape[1] > 0:
        # rows share one counterfactual only when nothing differs between them but the NK
        # activity: same schedule and no per-row parameter samples
        shared = (shared and np.ndim(bio.clonogens) == 0 and np.ndim(bio.alpha_per_gy) == 0
                  and np.ndim(bio.alpha_beta_gy) == 0
                  and all(np.ndim(v) == 0 for v in p.values.values()))
        return _outcomes_proportional(bio, p, D, fd, fh, fa, auc, shared, counterfactual,
                                      overall)
    if (not population and not general and bio.survival_model in ("lq", "lq_l")
            and fd.shape[1] > 0):
        # the nominal node alone (the patient's radiosensitivity is the nominal one)
        one = np.ones((1, 1))
        ln_nk = _ln_s_nodes(bio, p, fd, fh, fa, one)
        if not counterfactual:
            ln_0 = None
        elif bio.nk and np.any(fa > 0):
            ln_0 = _ln_s_nodes(bio, p, fd, fh, np.zeros_like(fa), one)
        else:
            ln_0 = ln_nk
        return _assemble(bio, p, D, auc, ln_nk, ln_0, False, overall)
    if not population:
        sd = np.asarray(p.alpha_sd_per_gy, dtype=float)
        p = SurrogateParameters({**p.values, "alpha_sd_per_gy": np.zeros_like(sd)}, p.provenance)
    alphas = rb.population_alphas(_col(bio.alpha_per_gy, 1), _col(p.alpha_sd_per_gy, 1))
    if not population:
        alphas = alphas[..., rb.POPULATION_Z.size // 2:rb.POPULATION_Z.size // 2 + 1]
    scale = np.reshape(alphas / _col(bio.alpha_per_gy, 2), (-1, 1, alphas.shape[-1]))
    pc = SurrogateParameters({k: _col(v, 3) for k, v in p.values.items()}, p.provenance)
    d, h = fd[:, :, None], fh[:, :, None]
    ln_nk = fraction_log_survival(d, h, fa[:, :, None], bio, pc, scale).sum(axis=1)  # (N, Q)
    if not counterfactual:
        ln_0 = None
    elif bio.nk and np.any(fa > 0):
        ln_0 = fraction_log_survival(d, h, 0.0, bio, pc, scale).sum(axis=1)
    else:
        ln_0 = ln_nk
    return _assemble(bio, p, D, auc, ln_nk, ln_0, population, overall)


def _assemble(bio, p, D, auc, ln_nk, ln_0, population, overall=None):
    """Outcomes from ln S at the population nodes (``(N, Q)``, with and without NK cells);
    ``overall``: each row's overall time if known (else from ``D``)."""
    n = ln_nk.shape[0]
    nk_ln = -p.nk_log_kill_per_activity_day * auc if bio.nk else np.zeros(n)
    nk_ln = np.broadcast_to(nk_ln, (n,))
    repop = rb.repopulation_log_gain(rb.overall_days(D) if overall is None else overall,
                                     bio.potential_doubling_days,
                                     bio.repopulation_kickoff_days)
    repop = np.broadcast_to(repop, (n,))
    with_nk = ln_nk + (nk_ln + repop)[:, None]
    if ln_0 is None:                          # counterfactual not asked for
        ln_0 = np.full((1, ln_nk.shape[1]), np.nan)
    one = ln_0.shape[0] == 1 and n > 1        # one counterfactual row for a shared schedule
    without = ln_0 + repop[:1, None] if one else ln_0 + repop[:, None]
    mid = with_nk.shape[1] // 2                                       # z = 0: nominal alpha
    n0 = np.asarray(bio.clonogens, dtype=float)
    ln_s, ln_s0 = with_nk[:, mid], np.broadcast_to(without[:, mid], (n,))
    if population:
        lc = population_tcp(n0, with_nk)
        lc0 = (lc if ln_0 is ln_nk and not np.any(nk_ln) else
               np.full(without.shape[0], np.nan) if np.isnan(without).all()
               else population_tcp(n0, without))
        if one:
            lc0 = np.broadcast_to(lc0, (n,))
    else:
        lc = lc0 = np.full(n, np.nan)
    ln10 = np.log(10.0)
    return dict(ln_survival=ln_s, log10_kill=-ln_s / ln10, tcp=rb.poisson_tcp(n0, ln_s),
                local_control=lc, nk_log10_kill=-nk_ln / ln10,
                log10_kill_without_nk=-ln_s0 / ln10, local_control_without_nk=lc0,
                nk_gain_log10_kill=(ln_s0 - ln_s) / ln10, nk_gain_local_control=lc - lc0)


def _apply_fraction(d, state, bio, p, chem_norm):
    """Jumps of every TME state at a fraction (shared by both simulators)."""
    w, v, P, C, B, T = state
    w = w * (1.0 - sg.demand_drop(d, p))
    v = v * (1.0 - sg.vascular_damage(d, p))
    P = P + sg.chemokine_amplitude(d, p) * chem_norm
    T = T * np.exp(-d / p.nk_d0_gy)
    B = B * np.exp(-p.nk_blood_dose_fraction * d / p.nk_d0_gy)
    return (w, v, P, C, B, T)


def _activity(T, h, p):
    return p.nk_cytotoxicity * (1.0 - p.nk_treg_penalty) * T * (1.0 - p.nk_hypoxic_suppression * h)


def _compact_fractions(D: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """``(N, days)`` arrays restricted to each row's fraction days, as ``(N, F)`` (zero-padded)."""
    frac = D > 0
    cnt = frac.sum(axis=1)
    F = max(int(cnt.max(initial=0)), 1)
    rows, cols = np.nonzero(frac)
    pos = np.arange(rows.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    out = []
    for a in (D,) + arrays:
        m = np.zeros((D.shape[0], F))
        m[rows, pos] = a[rows, cols]
        out.append(m)
    return out


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
    if D.min(initial=0.0) < 0 or U.min(initial=0.0) < 0:    # (no temporaries)
        raise ValueError("doses and infusions must be non-negative")
    if not bio.nk:
        U = np.zeros_like(D)
    starts = range(0, n, chunk)

    def run(i: int) -> Simulation:
        return _simulate_chunk(_tumour_rows(bio, slice(i, i + chunk), n), D[i:i + chunk],
                               U[i:i + chunk],
                               _param_rows(bio, slice(i, i + chunk), n), steps_per_day, trajectory,
                               record_fractions, population, counterfactual)

    import numba

    previous = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        parts = [run(i) for i in starts]
    finally:
        numba.set_num_threads(previous)
    if len(parts) == 1:
        return parts[0]
    out = {name: np.concatenate([getattr(s, name) for s in parts]) for name in _ROW_FIELDS}
    traj = None
    if trajectory:
        traj = {k: np.concatenate([s.trajectory[k] for s in parts]) for k in parts[0].trajectory}
    if record_fractions:
        out["fraction_activity"] = np.concatenate([s.fraction_activity for s in parts])
        out["fraction_hypoxia"] = np.concatenate([s.fraction_hypoxia for s in parts])
    return Simulation(**out, t_days=parts[0].t_days, trajectory=traj)


def _row_array(x: Any) -> np.ndarray:
    """A parameter as a float array of length 1 (shared) or N (one sample per schedule)."""
    return np.ascontiguousarray(np.atleast_1d(np.asarray(x, dtype=float)))


@njit(cache=True, inline="always")
def _at(a, i):  # pragma: no cover - compiled
    return a[i] if a.shape[0] > 1 else a[0]


@njit(cache=True, inline="always")
def _hypoxia(dw, dv, h0, g, hmx):  # pragma: no cover - compiled
    """:func:`rtopt.model.surrogate.hypoxic_fraction` on the deficits ``dw = 1 - w``, ``dv = 1 - v``."""
    r = (1.0 - dw) / (1.0 - dv)
    h = h0 * r if g == 1.0 else h0 * r ** g
    return h if h < hmx else hmx


@njit(cache=True, inline="always")
def _record(traj, i, c, s, l, E):  # pragma: no cover - compiled
    """One trajectory column (the order of :data:`_TRAJ_NAMES`) from lane ``l`` of ``s``."""
    traj[i, c, 0] = s[_S_H * _LANES + l]
    traj[i, c, 1] = 1.0 - s[_S_DW * _LANES + l]
    traj[i, c, 2] = 1.0 - s[_S_DV * _LANES + l]
    traj[i, c, 3] = s[_S_C * _LANES + l]
    traj[i, c, 4] = s[_S_B * _LANES + l]
    traj[i, c, 5] = s[_S_T * _LANES + l]
    traj[i, c, 6] = E


# ----------------------------------------------------------------------------- block kernel
@intrinsic
def _i64_as_f64(typingctx, x):  # pragma: no cover - compiled
    """Reinterpret the bits of an int64 as a float64 (lets LLVM vectorise :func:`_expm1`)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


@njit(cache=True, inline="always", error_model="numpy")
def _expm1(y):  # pragma: no cover - compiled
    """``exp(y) - 1`` for ``|y| < 700`` in arithmetic only, so loops over lanes vectorise
    (numba calls libm's scalar ``expm1`` otherwise).  ``y = n ln 2 + r`` with ``|r| <= ln 2 / 2``;
    ``expm1(r)`` by its Taylor series to ``r^14`` (truncation < 1e-17 relative);
    ``expm1(y) = 2^n expm1(r) + (2^n - 1)``, exact in ``2^n - 1`` and without cancellation for
    ``n = 0``.  Within 2 ulp of libm (a test holds the two together)."""
    n = np.floor(y * 1.4426950408889634 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 87178291200.0
    p = p * r + 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    q = (p * r) * r + r                              # expm1(r)
    s = _i64_as_f64((np.int64(n) + 1023) << 52)      # 2^n
    return s * q + (s - 1.0)


@njit(cache=True, inline="always", error_model="numpy")
def _exp(y):  # pragma: no cover - compiled
    """``exp(y)`` for ``|y| <= 708`` in arithmetic only (as :func:`_expm1`), so loops vectorise."""
    n = np.floor(y * 1.4426950408889634 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 87178291200.0
    p = p * r + 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    q = (p * r) * r + r                              # expm1(r)
    s = _i64_as_f64((np.int64(n) + 1023) << 52)      # 2^n
    return s * q + s


_LANES = 64
"""Schedules advanced together by :func:`_horizon_block_py` (structure-of-arrays lanes; small
enough for the block's state and parameters to stay in L1 cache)."""

# rows of the block's state array ``s``, parameter array ``q`` and NK propagator array ``cf``
_S_DW, _S_DV, _S_P, _S_C, _S_B, _S_T, _S_H, _S_E, _S_HS, _S_AU, _S_K = range(11)
(_Q_EW, _Q_EV, _Q_EE, _Q_EA, _Q_CPC, _Q_EEH, _Q_CPCH, _Q_SQV, _Q_K0, _Q_GAIN, _Q_C50, _Q_KCL,
 _Q_EO, _Q_HMX, _Q_G, _Q_ETA, _Q_ASC, _Q_EWH, _Q_EOH, _Q_EOHI, _Q_EWQ, _Q_EVQ) = range(22)
_CF_EO, _CF_TB, _CF_BB, _CF_EOH, _CF_TBM, _CF_SM, _CF_S1 = range(7)


@njit(cache=True, inline="always", error_model="numpy")
def _load_lanes(q, s, i0, m, h0, e_w, e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50,
                kcl_dt, e_out, h_max, gamma, eta, ascale, e_wh, e_oh, e_wq,
                e_vq):  # pragma: no cover - compiled
    """Parameters of the lanes ``i0:i0 + m`` into ``q``, their baseline hypoxia into ``s``;
    returns the block's hypoxia-exponent mode (1, 2, 3 when every lane has that exponent,
    else 0)."""
    g1 = g2 = g3 = True
    for l in range(m):
        i = i0 + l
        q[_Q_EW * _LANES + l], q[_Q_EV * _LANES + l] = _at(e_w, i), _at(e_v, i)
        q[_Q_EE * _LANES + l], q[_Q_EA * _LANES + l] = _at(e_e, i), _at(e_a, i)
        q[_Q_CPC * _LANES + l], q[_Q_EEH * _LANES + l] = _at(c_pc, i), _at(e_eh, i)
        q[_Q_CPCH * _LANES + l], q[_Q_SQV * _LANES + l] = _at(c_pch, i), _at(sq_ev, i)
        q[_Q_K0 * _LANES + l], q[_Q_GAIN * _LANES + l] = _at(k0, i), _at(gain, i)
        q[_Q_C50 * _LANES + l], q[_Q_KCL * _LANES + l] = _at(c50, i), _at(kcl_dt, i)
        q[_Q_EO * _LANES + l], q[_Q_HMX * _LANES + l] = _at(e_out, i), _at(h_max, i)
        q[_Q_G * _LANES + l], q[_Q_ETA * _LANES + l] = _at(gamma, i), _at(eta, i)
        q[_Q_ASC * _LANES + l], q[_Q_EWH * _LANES + l] = _at(ascale, i), _at(e_wh, i)
        q[_Q_EOH * _LANES + l] = _at(e_oh, i)
        q[_Q_EWQ * _LANES + l], q[_Q_EVQ * _LANES + l] = _at(e_wq, i), _at(e_vq, i)
        q[_Q_EOHI * _LANES + l] = 1.0 / q[_Q_EOH * _LANES + l]
        g = q[_Q_G * _LANES + l]
        g1 = g1 and g == 1.0
        g2 = g2 and g == 2.0
        g3 = g3 and g == 3.0
        s[_S_H * _LANES + l] = _hypoxia(0.0, 0.0, h0, g, q[_Q_HMX * _LANES + l])
    return 1 if g1 else 2 if g2 else 3 if g3 else 0


@njit(cache=True, inline="always", error_model="numpy")
def _hyp_ratio(r, h0, q, l, mode):  # pragma: no cover - compiled
    """:func:`_hypoxia` of lane ``l`` from ``r = w / v``, the exponent dispatched by the
    literal ``mode``."""
    if mode == 1:
        hr = r
    elif mode == 2:
        hr = r * r
    elif mode == 3:
        hr = r * r * r
    else:
        hr = r ** q[_Q_G * _LANES + l]
    hn = h0 * hr
    hmx = q[_Q_HMX * _LANES + l]
    return hn if hn < hmx else hmx


@njit(cache=True, inline="always", error_model="numpy")
def _start_day(s, q):  # pragma: no cover - compiled
    """The trafficking rate ``k0 v (1 + g C / (C50 + C))``
    (:func:`rtopt.model.surrogate.nk_infiltration_rate`) at the start of a day, after its fraction."""
    for l in range(_LANES):
        C = s[_S_C * _LANES + l]
        s[_S_K * _LANES + l] = (q[_Q_K0 * _LANES + l] * (1.0 - s[_S_DV * _LANES + l])
                                * (1.0 + q[_Q_GAIN * _LANES + l] * C
                                   / (q[_Q_C50 * _LANES + l] + C)))


@njit(cache=True, inline="always", error_model="numpy")
def _sub_steps(s, q, cf, dt, h0, nkw, store, mode):  # pragma: no cover - compiled
    """One sub-step of every lane (see :func:`_horizon_block_py`): the TME to the sub-step's
    midpoint and end (exact), the hypoxic fraction there, and with ``nkw`` the NK pair and the
    Simpson sums of hypoxia and activity; ``store`` writes the NK propagator of the sub-step to
    ``cf`` (for :func:`_infusion_block_py`).  ``nkw``, ``store`` and ``mode`` (the hypoxia
    exponent: 1, 2, 3, or 0 for any) are literals at each call, and the lanes are a fixed
    count at fixed offsets of flat arrays, so every variant is one branch-free loop that LLVM
    vectorises without run-time alias checks.

    The NK pair ``B' = -(kcl + kin) B``, ``T' = kin B - kout T`` uses the trafficking rate at
    the start ``k0`` (carried in ``s``), midpoint ``km`` and end ``k1``: ``B`` exact but for
    ``int kin``, which is Simpson's rule over the sub-step and the quadratic through the three
    values over its first half; ``T = e^{-kout t} T0 + int e^{-kout (t - u)} kin B du`` with
    the same two rules (fourth order).  The hypoxic fraction, whose cap ``h_max`` makes it
    kinked, is also evaluated at the quarter points (composite Simpson over four panels for
    its integral); its quotients and those of the saturating chemokine term share one
    division."""
    dt6, dt24 = dt / 6.0, dt / 24.0
    for l in range(_LANES):
        dw0, dv0 = s[_S_DW * _LANES + l], s[_S_DV * _LANES + l]
        P0, C0 = s[_S_P * _LANES + l], s[_S_C * _LANES + l]
        dwm, dvm = dw0 * q[_Q_EWH * _LANES + l], dv0 * q[_Q_SQV * _LANES + l]
        dw1, dv1 = dw0 * q[_Q_EW * _LANES + l], dv0 * q[_Q_EV * _LANES + l]
        C1 = C0 * q[_Q_EE * _LANES + l] + P0 * q[_Q_CPC * _LANES + l]
        s[_S_DW * _LANES + l], s[_S_DV * _LANES + l] = dw1, dv1
        s[_S_C * _LANES + l], s[_S_P * _LANES + l] = C1, P0 * q[_Q_EA * _LANES + l]
        dwq1, dvq1 = dw0 * q[_Q_EWQ * _LANES + l], dv0 * q[_Q_EVQ * _LANES + l]
        dwq3, dvq3 = dwm * q[_Q_EWQ * _LANES + l], dvm * q[_Q_EVQ * _LANES + l]
        vq1, vm, vq3, v1 = 1.0 - dvq1, 1.0 - dvm, 1.0 - dvq3, 1.0 - dv1
        p12, p34 = vq1 * vm, vq3 * v1
        if nkw or store:
            Cm = C0 * q[_Q_EEH * _LANES + l] + P0 * q[_Q_CPCH * _LANES + l]
            c50 = q[_Q_C50 * _LANES + l]
            am, a1 = c50 + Cm, c50 + C1
            p56 = am * a1
            inv = 1.0 / (p12 * p34 * p56)
            x, y, z = p34 * p56 * inv, p12 * p56 * inv, p12 * p34 * inv
            iam, ia1 = a1 * z, am * z                        # 1 / (C50 + C) at midpoint, end
        else:
            inv = 1.0 / (p12 * p34)
            x, y = p34 * inv, p12 * inv
        ivq1, ivm, ivq3, iv1 = vm * x, vq1 * x, v1 * y, vq3 * y  # 1 / v at the quarter points
        hq1 = _hyp_ratio((1.0 - dwq1) * ivq1, h0, q, l, mode)
        hm = _hyp_ratio((1.0 - dwm) * ivm, h0, q, l, mode)
        hq3 = _hyp_ratio((1.0 - dwq3) * ivq3, h0, q, l, mode)
        h1 = _hyp_ratio((1.0 - dw1) * iv1, h0, q, l, mode)
        s[_S_HS * _LANES + l] += s[_S_H * _LANES + l] + 4.0 * (hq1 + hq3) + 2.0 * hm + h1
        s[_S_H * _LANES + l] = h1
        if nkw or store:
            k0, g = q[_Q_K0 * _LANES + l], q[_Q_GAIN * _LANES + l]
            ks = s[_S_K * _LANES + l]
            km = k0 * vm * (1.0 + g * Cm * iam)
            k1 = k0 * v1 * (1.0 + g * C1 * ia1)
            s[_S_K * _LANES + l] = k1
            kcl = q[_Q_KCL * _LANES + l]
            fbm = _exp(-(0.5 * kcl + dt24 * (5.0 * ks + 8.0 * km - k1)))  # B(mid) / B0
            fb1 = _exp(-(kcl + dt6 * (ks + 4.0 * km + k1)))             # B(end) / B0
            eo, eoh = q[_Q_EO * _LANES + l], q[_Q_EOH * _LANES + l]
            tb = dt6 * (eo * ks + 4.0 * eoh * km * fbm + k1 * fb1)       # T(end) per B0
            tbm = dt24 * (5.0 * eoh * ks + 8.0 * km * fbm
                          - q[_Q_EOHI * _LANES + l] * k1 * fb1)            # T(mid) per B0
            eta = q[_Q_ETA * _LANES + l]
            sm, s1 = 1.0 - eta * hm, 1.0 - eta * h1
            if nkw:
                B0, T0 = s[_S_B * _LANES + l], s[_S_T * _LANES + l]
                T1 = eo * T0 + tb * B0
                Tm = eoh * T0 + tbm * B0
                s[_S_B * _LANES + l] = B0 * fb1
                s[_S_T * _LANES + l] = T1
                E1 = T1 * s1
                s[_S_AU * _LANES + l] += s[_S_E * _LANES + l] + 4.0 * (Tm * sm) + E1
                s[_S_E * _LANES + l] = E1
            if store:
                cf[_CF_EO * _LANES + l], cf[_CF_TB * _LANES + l] = eo, tb
                cf[_CF_BB * _LANES + l], cf[_CF_EOH * _LANES + l] = fb1, eoh
                cf[_CF_TBM * _LANES + l] = tbm
                cf[_CF_SM * _LANES + l], cf[_CF_S1 * _LANES + l] = sm, s1



@njit(cache=True, inline="always", error_model="numpy")
def _sub_steps_mode(s, q, cf, dt, h0, nkw, store, mode):  # pragma: no cover - compiled
    """:func:`_sub_steps` with the block's hypoxia exponent ``mode`` as a constant in each branch,
    so that every inlined copy is specialised (no per-lane dispatch in the vectorised loop)."""
    if mode == 1:
        _sub_steps(s, q, cf, dt, h0, nkw, store, 1)
    elif mode == 2:
        _sub_steps(s, q, cf, dt, h0, nkw, store, 2)
    elif mode == 3:
        _sub_steps(s, q, cf, dt, h0, nkw, store, 3)
    else:
        _sub_steps(s, q, cf, dt, h0, nkw, store, 0)

@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _horizon_block_body(b0, b1, spd, dt, D, U, rowptr, jidx, jw, jv, jP, jT, jB, ascale, e_w, e_v, e_e,
                      e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh, e_oh,
                      e_wq, e_vq, h0, h_max, gamma, eta, nk, traj, fh_full, fa_full, fd_c, fh_c, fa_c,
                      out):  # pragma: no cover - compiled
    """Blocks ``b0`` to ``b1 - 1`` (schedules ``b * _LANES`` on) of :func:`_horizon_block_py`."""
    n, days = D.shape
    want = traj.shape[0] > 0
    rec = fh_full.shape[0] > 0
    for b in range(b0, b1):   # one call per thread: no per-block reference counting
        i0 = b * _LANES
        m = min(_LANES, n - i0)
        s = np.zeros(11 * _LANES)
        q = np.ones(22 * _LANES)
        cf = np.zeros(7 * _LANES)
        hs_tot = np.zeros(_LANES)
        au_tot = np.zeros(_LANES)
        au_start = np.zeros(_LANES)
        cnt = np.zeros(_LANES, np.int64)
        mode = _load_lanes(q, s, i0, m, h0, e_w, e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0,
                           gain, c50, kcl_dt, e_out, h_max, gamma, eta, ascale, e_wh, e_oh,
                           e_wq, e_vq)
        nkon = False
        for j in range(days):
            for l in range(m):                      # fractions (branchy; few lane-days)
                i = i0 + l
                d = D[i, j]
                if d > 0.0:
                    c = cnt[l]
                    k = jidx[rowptr[i] + c]
                    cnt[l] = c + 1
                    hi = s[_S_H * _LANES + l]
                    # the activity integral over day j - 1
                    a = q[_Q_ASC * _LANES + l] * (au_tot[l] - au_start[l]) if nk else 0.0
                    fd_c[i, c], fh_c[i, c], fa_c[i, c] = d, hi, a
                    if rec:
                        fh_full[i, j], fa_full[i, j] = hi, a
                    dwi = 1.0 - (1.0 - s[_S_DW * _LANES + l]) * jw[k]
                    dvi = 1.0 - (1.0 - s[_S_DV * _LANES + l]) * jv[k]
                    s[_S_DW * _LANES + l], s[_S_DV * _LANES + l] = dwi, dvi
                    s[_S_P * _LANES + l] += jP[k]
                    s[_S_T * _LANES + l] *= jT[k]
                    s[_S_B * _LANES + l] *= jB[k]
                    s[_S_H * _LANES + l] = _hypoxia(dwi, dvi, h0, q[_Q_G * _LANES + l],
                                                    q[_Q_HMX * _LANES + l])
            if nk:                                  # infusions (B, T >= 0)
                cells = 0.0
                for l in range(m):
                    Bi = s[_S_B * _LANES + l] + U[i0 + l, j]
                    Ti = s[_S_T * _LANES + l]
                    s[_S_B * _LANES + l] = Bi
                    s[_S_E * _LANES + l] = Ti * (1.0 - q[_Q_ETA * _LANES + l]
                                                 * s[_S_H * _LANES + l])
                    cells += Bi + Ti
                nkon = nkon or cells > 0.0
            for l in range(_LANES):
                au_start[l] = au_tot[l]
                s[_S_HS * _LANES + l] = 0.0
                s[_S_AU * _LANES + l] = 0.0
            if nkon:
                _start_day(s, q)
            for k in range(spd):
                if want:
                    for l in range(m):
                        _record(traj, i0 + l, j * spd + k, s, l, s[_S_E * _LANES + l])
                if nkon:
                    _sub_steps_mode(s, q, cf, dt, h0, True, False, mode)
                else:
                    _sub_steps_mode(s, q, cf, dt, h0, False, False, mode)
            for l in range(_LANES):
                hs_tot[l] += dt / 12.0 * s[_S_HS * _LANES + l]
                au_tot[l] += dt / 6.0 * s[_S_AU * _LANES + l]
        for l in range(m):
            i = i0 + l
            Ti, hi = s[_S_T * _LANES + l], s[_S_H * _LANES + l]
            if want:
                _record(traj, i, days * spd, s, l, Ti * (1.0 - q[_Q_ETA * _LANES + l] * hi))
            for c, r in enumerate((_S_DW, _S_DV, _S_P, _S_C, _S_B, _S_T, _S_H)):
                out[i, c] = s[r * _LANES + l]
            out[i, 7], out[i, 8] = hs_tot[l], au_tot[l]


def _horizon_block_py(spd, dt, D, U, rowptr, jidx, jw, jv, jP, jT, jB, ascale, e_w, e_v, e_e,
                      e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh, e_oh,
                      e_wq, e_vq, h0, h_max, gamma, eta, nk, traj, fh_full, fa_full, fd_c, fh_c, fa_c,
                      out, parts):  # pragma: no cover - compiled
    """The whole horizon of every schedule in one compiled pass, ``_LANES`` schedules at a time.

    Day ``j`` of row ``i``: at the start, a fraction (``D[i, j] > 0``) records the FMISO
    fraction and the activity over the previous day, then applies the jumps ``jw, jv``
    (multiplying ``w, v``), ``jP`` (added to ``P``), ``jT, jB`` (multiplying the NK cells) that
    :func:`_apply_fraction` gives on unit states; the day's infusions ``U`` are added to the
    blood; then ``spd`` sub-steps (:func:`_sub_steps`): exact propagators for the demand and
    vascular deficits ``dw = 1 - w``, ``dv = 1 - v`` and the chemokine pair ``P, C`` to each
    sub-step's midpoint and end; ``B, T`` fourth order in the trafficking rate
    ``k0 v (1 + g C / (C50 + C))`` (:func:`rtopt.model.surrogate.nk_infiltration_rate`) at the
    sub-step's start, midpoint and end; Simpson sums of the hypoxic fraction and of
    ``T (1 - eta h)`` (the activity without its constant factor).  ``out``
    (``(N, 9)``) receives ``1 - w, 1 - v, P, C, B, T, h``, the hypoxia integral and the
    (unscaled) activity integral; ``traj`` (``(N, K, 7)`` or empty) the states on the sub-step
    grid.

    Laid out for SIMD: the sub-steps of a block of schedules run as one loop over lanes
    (structure of arrays) without calls or branches
    (:func:`_exp` instead of libm; the hypoxia exponent dispatched per block), and the NK
    equations are skipped while a block has no NK cells (before its first infusion, and always
    when ``nk`` is off: they would add exact zeros).  Fraction jumps come from a table
    (:func:`_prepare`: row ``i``'s fractions are ``rowptr[i]:rowptr[i + 1]``, in day order,
    fraction ``k``'s jumps entry ``jidx[k]`` of ``jw, jv, jP, jT, jB``); the
    dose, hypoxic fraction and previous-day activity of each fraction are written compacted to
    ``fd_c, fh_c, fa_c`` (``(N, F)``) and, when they are not empty, to ``fh_full, fa_full``
    (``(N, days)``).
    """
    n = D.shape[0]
    nblocks = (n + _LANES - 1) // _LANES
    parts = max(1, min(nblocks, parts))     # contiguous runs of blocks, one call each
    for t in prange(parts):
        _horizon_block_body(np.int64(t * nblocks // parts), np.int64((t + 1) * nblocks // parts),
                            spd, dt, D, U, rowptr, jidx, jw, jv, jP, jT, jB, ascale, e_w, e_v,
                            e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out,
                            e_wh, e_oh, e_wq, e_vq, h0, h_max, gamma, eta, nk, traj, fh_full,
                            fa_full, fd_c, fh_c, fa_c, out)


# contraction (fused multiply-add) only: no reassociation, no assumptions about NaN or inf
_KERNEL_JIT = dict(cache=True, error_model="numpy", fastmath={"contract"})
_horizon_block_parallel, _horizon_block_serial = _jit_pair(_horizon_block_py, **_KERNEL_JIT)


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _infusion_block_body(b0, b1, spd, dt, D, rowptr, jidx, jw, jv, jP, jT, jB, ascale, e_w, e_v, e_e,
                       e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh, e_oh,
                       e_wq, e_vq, h0, h_max, gamma, eta, cdays, auc, fa):  # pragma: no cover - compiled
    """Blocks ``b0`` to ``b1 - 1`` (schedules ``b * _LANES`` on) of :func:`_infusion_block_py`."""
    n, days = D.shape
    K = cdays.shape[0]
    for b in range(b0, b1):   # one call per thread: no per-block reference counting
        i0 = b * _LANES
        m = min(_LANES, n - i0)
        s = np.zeros(11 * _LANES)
        q = np.ones(22 * _LANES)
        cf = np.zeros(7 * _LANES)
        Bc = np.zeros((K, _LANES))
        Tc = np.zeros((K, _LANES))
        Ec = np.zeros((K, _LANES))
        au = np.zeros((K, _LANES))
        au_tot = np.zeros((K, _LANES))
        au_start = np.zeros((K, _LANES))
        cnt = np.zeros(_LANES, np.int64)
        mode = _load_lanes(q, s, i0, m, h0, e_w, e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0,
                           gain, c50, kcl_dt, e_out, h_max, gamma, eta, ascale, e_wh, e_oh,
                           e_wq, e_vq)
        kon = 0                                     # channels started (infused by day j)
        for j in range(days):
            while kon < K and cdays[kon] <= j:
                kon += 1
            for l in range(m):
                i = i0 + l
                d = D[i, j]
                if d > 0.0:
                    c = cnt[l]
                    k = jidx[rowptr[i] + c]
                    cnt[l] = c + 1
                    for ch in range(kon):
                        fa[i, ch, c] = q[_Q_ASC * _LANES + l] * (au_tot[ch, l] - au_start[ch, l])
                        Tc[ch, l] *= jT[k]
                        Bc[ch, l] *= jB[k]
                    dwi = 1.0 - (1.0 - s[_S_DW * _LANES + l]) * jw[k]
                    dvi = 1.0 - (1.0 - s[_S_DV * _LANES + l]) * jv[k]
                    s[_S_DW * _LANES + l], s[_S_DV * _LANES + l] = dwi, dvi
                    s[_S_P * _LANES + l] += jP[k]
                    s[_S_H * _LANES + l] = _hypoxia(dwi, dvi, h0, q[_Q_G * _LANES + l],
                                                    q[_Q_HMX * _LANES + l])
            for ch in range(kon):
                if cdays[ch] == j:
                    for l in range(m):
                        Bc[ch, l] += 1.0
                for l in range(m):
                    au_start[ch, l] = au_tot[ch, l]
                    Ec[ch, l] = Tc[ch, l] * (1.0 - q[_Q_ETA * _LANES + l] * s[_S_H * _LANES + l])
                    au[ch, l] = 0.0
            if kon > 0:
                _start_day(s, q)
            for k in range(spd):
                if kon > 0:
                    _sub_steps_mode(s, q, cf, dt, h0, False, True, mode)
                else:
                    _sub_steps_mode(s, q, cf, dt, h0, False, False, mode)
                for ch in range(kon):
                    for l in range(m):
                        B0, T0 = Bc[ch, l], Tc[ch, l]
                        T1 = cf[_CF_EO * _LANES + l] * T0 + cf[_CF_TB * _LANES + l] * B0
                        Tm = cf[_CF_EOH * _LANES + l] * T0 + cf[_CF_TBM * _LANES + l] * B0
                        Bc[ch, l] = B0 * cf[_CF_BB * _LANES + l]
                        Tc[ch, l] = T1
                        E1 = T1 * cf[_CF_S1 * _LANES + l]
                        au[ch, l] += Ec[ch, l] + 4.0 * (Tm * cf[_CF_SM * _LANES + l]) + E1
                        Ec[ch, l] = E1
            for ch in range(kon):
                for l in range(m):
                    au_tot[ch, l] += dt / 6.0 * au[ch, l]
        for l in range(m):
            for ch in range(K):
                auc[i0 + l, ch] = au_tot[ch, l]


def _infusion_block_py(spd, dt, D, rowptr, jidx, jw, jv, jP, jT, jB, ascale, e_w, e_v, e_e,
                       e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh, e_oh,
                       e_wq, e_vq, h0, h_max, gamma, eta, cdays, auc, fa,
                       parts):  # pragma: no cover - compiled
    """Single-infusion responses for :func:`infusion_kernels`, sharing the TME between them.

    Every NK state is linear in the infusions and the TME does not depend on them, so each row
    runs the TME of :func:`_horizon_block_py` once and carries one NK channel (``B, T``) per
    candidate infusion day ``cdays`` (ascending): the expensive part of a sub-step (trafficking
    rates, exponentials, hypoxia) is computed once (:func:`_sub_steps` with ``store``) and its
    linear propagator applied to every channel that has started.  ``auc`` (``(N, K)``) receives
    each channel's (unscaled) activity integral, ``fa`` (``(N, K, F)``) its scaled activity over
    the day before each fraction.
    """
    n = D.shape[0]
    nblocks = (n + _LANES - 1) // _LANES
    parts = max(1, min(nblocks, parts))     # contiguous runs of blocks, one call each
    for t in prange(parts):
        _infusion_block_body(np.int64(t * nblocks // parts),
                             np.int64((t + 1) * nblocks // parts), spd, dt, D, rowptr, jidx, jw,
                             jv, jP, jT, jB, ascale, e_w, e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev,
                             k0, gain, c50, kcl_dt, e_out, e_wh, e_oh, e_wq, e_vq, h0, h_max,
                             gamma, eta, cdays, auc, fa)


_infusion_block_parallel, _infusion_block_serial = _jit_pair(_infusion_block_py, **_KERNEL_JIT)


_TRAJ_NAMES = ("hypoxic_fraction", "demand", "vascular", "chemokine", "nk_blood", "nk_tumour",
               "nk_activity")


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
        ln -= _col(p.nk_log_kill_per_activity_day, 2) * cum
    if bio.potential_doubling_days and bio.repopulation_kickoff_days is not None:
        frac = D > 0
        has = frac.any(axis=1)
        first = np.where(has, frac.argmax(axis=1), 0)[:, None]
        last = np.where(has, days - 1 - frac[:, ::-1].argmax(axis=1), 0)[:, None]
        elapsed = np.clip(np.minimum(t[None, :], last) - first, 0, None)
        ln += np.log(2.0) / bio.potential_doubling_days * np.maximum(
            0.0, elapsed - bio.repopulation_kickoff_days) * has[:, None]
    return ln / np.log(10.0)


def _fraction_scan_py(D, cnt, nu, span):  # pragma: no cover - compiled
    """Per row of ``D``: the number of fractions ``cnt``, of fractions whose dose differs from
    the row's previous fraction ``nu`` (the distinct doses whose jumps are computed), and the
    days from the first to the last fraction ``span`` (:func:`rtopt.model.radiobiology.overall_days`;
    a test holds the two together)."""
    n, days = D.shape
    for i in prange(n):
        c = 0
        u = 0
        first = days
        last = -1
        prev = 0.0
        for j in range(days):                   # branch-free (fractions fall on random days)
            d = D[i, j]
            f = d > 0.0
            u += f and (c == 0 or d != prev)
            c += f
            prev = d if f else prev
            first = j if f and j < first else first
            last = j if f else last
        cnt[i] = c
        nu[i] = u
        span[i] = last - first if c > 0 else 0


def _fraction_fill_py(D, rowptr, uptr, jidx, tdose, trow):  # pragma: no cover - compiled
    """The fractions of every row in day order (``rowptr`` from :func:`_fraction_scan_py`):
    ``jidx[k]`` indexes the jump table ``tdose`` (one entry per run of equal doses in a row,
    ``trow`` its row, ``uptr`` the rows' first entries)."""
    n, days = D.shape
    for i in prange(n):
        k = rowptr[i]
        u = uptr[i] - 1
        prev = 0.0
        for j in range(days):
            d = D[i, j]
            if d > 0.0:
                if k == rowptr[i] or d != prev:
                    u += 1
                    tdose[u] = d
                    trow[u] = i
                prev = d
                jidx[k] = u
                k += 1


_fraction_scan_parallel, _fraction_scan_serial = _jit_pair(_fraction_scan_py, cache=True)
_fraction_fill_parallel, _fraction_fill_serial = _jit_pair(_fraction_fill_py, cache=True)


def _fraction_index(D):
    """``rowptr, jidx, tdose, trow, span`` of :func:`_fraction_fill_py` for a float dose matrix."""
    n = D.shape[0]
    serial = n < _SERIAL_BELOW
    cnt, nu, span = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    (_fraction_scan_serial if serial else _fraction_scan_parallel)(D, cnt, nu, span)
    rowptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(cnt, out=rowptr[1:])
    uptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(nu, out=uptr[1:])
    jidx = np.empty(rowptr[-1], np.int64)
    tdose, trow = np.empty(uptr[-1]), np.empty(uptr[-1], np.int64)
    (_fraction_fill_serial if serial else _fraction_fill_parallel)(D, rowptr, uptr, jidx, tdose,
                                                                   trow)
    return rowptr, jidx, tdose, trow, span, int(cnt.max(initial=0))


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
    consts = [_row_array(x) for x in (
        np.exp(-dt / p.demand_recovery_days), np.exp(-dt / p.vascular_recovery_days), e_e, e_a,
        c_pc, e_eh, c_pch, np.exp(-dt / (2 * p.vascular_recovery_days)),
        p.nk_infiltration_per_day, p.nk_chemokine_gain, p.nk_chemokine_half_signal,
        kcl * dt, np.exp(-kout * dt), np.exp(-dt / (2 * p.demand_recovery_days)),
        np.exp(-kout * dt / 2), np.exp(-dt / (4 * p.demand_recovery_days)),
        np.exp(-dt / (4 * p.vascular_recovery_days)))]
    shape_c = [_row_array(x) for x in (p.hypoxic_fraction_max, p.hypoxia_gamma, eta)]
    # jumps of every state at each fraction, from _apply_fraction on unit states (the one
    # statement of the jumps), over each row's distinct doses
    rowptr, jidx, tdose, trow, span, F = _fraction_index(D)

    def on_rows(x):  # per-schedule parameters (samples) follow the table's rows
        return x[trow] if np.ndim(x) and np.shape(x)[0] == n else x

    ps = SurrogateParameters({k: on_rows(x) for k, x in p.values.items()}, p.provenance)
    one = np.ones(tdose.size)
    jumps = _apply_fraction(tdose, (one, one, 0.0 * one, 0.0, one, one), bio, ps,
                            on_rows(norm))
    jw, jv, jP, jB, jT = (np.ascontiguousarray(np.broadcast_to(jumps[c], tdose.shape),
                                               dtype=float) for c in (0, 1, 2, 4, 5))
    return dict(dt=dt, rowptr=rowptr, jidx=jidx, F=max(F, 1), jumps=(jw, jv, jP, jT, jB),
                ascale=_row_array(act_scale), act_scale=act_scale, consts=consts, h0=h0,
                shape_c=shape_c, span=span)


def _simulate_chunk(bio, D, U, p, spd, want_traj, want_rec=False, population=True,
                    counterfactual=True):
    n, days = D.shape
    D = np.ascontiguousarray(D, dtype=float)
    U = np.ascontiguousarray(np.broadcast_to(U, D.shape), dtype=float)
    prep = _prepare(bio, D, p, spd)
    dt, F, act_scale = prep["dt"], prep["F"], prep["act_scale"]
    nk = bool(bio.nk)
    traj = np.empty((n, days * spd + 1, 7)) if want_traj else np.empty((0, 0, 7))
    rec_shape = (n, days) if want_rec or want_traj else (0, 0)
    fh_all, fa_all = np.zeros(rec_shape), np.zeros(rec_shape)
    fd, fh, fa = np.zeros((n, F)), np.zeros((n, F)), np.zeros((n, F))
    st = np.empty((n, 9))
    kernel = _horizon_block_serial if n < _SERIAL_BELOW else _horizon_block_parallel
    kernel(spd, dt, D, U, prep["rowptr"], prep["jidx"], *prep["jumps"], prep["ascale"],
           *prep["consts"], prep["h0"], *prep["shape_c"], nk, traj, fh_all, fa_all, fd, fh, fa,
           st, _parts(n))
    h, hsum, auc = st[:, 6], st[:, 7], st[:, 8]
    auc = auc * act_scale if nk else np.zeros(n)
    out = _outcomes(bio, p, D, fd, fh, fa, auc, population, counterfactual=counterfactual,
                    overall=prep["span"])
    t = tr = None
    if want_traj:
        t = np.arange(days * spd + 1) * dt
        tr = {name: traj[:, :, c].copy() for c, name in enumerate(_TRAJ_NAMES)}
        if not nk:
            tr["nk_activity"][:] = 0.0
        tr["nk_activity"] *= np.reshape(act_scale, (-1, 1)) if np.ndim(act_scale) else act_scale
        pd = SurrogateParameters({k: _col(x, 2) for k, x in p.values.items()}, p.provenance)
        ln_frac = np.where(D > 0, fraction_log_survival(D, fh_all, fa_all, bio, pd), 0.0)
        tr["log10_survival"] = _survival_trajectory(bio, p, D, t, ln_frac, tr["nk_activity"])
    return Simulation(nk_auc=auc, **out, hypoxic_fraction_end=h.copy(),
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
    then follow in closed form from the same :func:`_outcomes`.  :meth:`combine` is therefore
    exact (to round-off), not an approximation, and scores thousands of infusion sets for the
    cost of a few simulations.

    Attributes
    ----------
    doses : ndarray, shape (S, days)
    days : ndarray, shape (K,)
        Candidate infusion days.
    auc : ndarray, shape (S, K)
        Activity integral of one infusion on each candidate day.
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
        out = _outcomes(self.bio, self.bio.params, D, fd, fh, act, auc * 1.0, population,
                        shared=True, counterfactual=counterfactual)
        b = self.base
        return Simulation(nk_auc=auc * 1.0, **out,
                          hypoxic_fraction_end=np.full(m, b.hypoxic_fraction_end[i]),
                          mean_hypoxic_fraction=np.full(m, b.mean_hypoxic_fraction[i]))


def infusion_kernels(bio: Biology, doses: Any, days: Any, *,
                     steps_per_day: int = STEPS_PER_DAY,
                     population: bool = True) -> InfusionKernels:
    """Simulate every schedule with one infusion on each candidate day (see
    :class:`InfusionKernels`): the schedules once without infusions (:func:`simulate`), then
    the ``K`` single-infusion responses of each schedule in one compiled pass that shares the
    TME between them (:func:`_infusion_block_py`), in chunks of rows that bound memory.
    Array-valued parameters of ``bio`` (samples) have one value per schedule row."""
    D = _as_matrix(doses, "doses")
    days = np.asarray(days, dtype=int)
    S, H = D.shape
    K = days.size
    base_sim = simulate(bio, D, steps_per_day=steps_per_day, record_fractions=True,
                        population=population)
    F = max(int((D > 0).sum(axis=1).max(initial=0)), 1)
    auc = np.zeros((S, K))
    activity = np.zeros((S, K, F))
    order = np.argsort(days, kind="stable")
    cdays = np.ascontiguousarray(days[order], dtype=np.int64)
    if bio.nk and K:
        chunk = max(_LANES, (1 << 21) // max(1, K * F))
        for i in range(0, S, chunk):
            rows = slice(i, i + chunk)
            Dc = np.ascontiguousarray(D[rows], dtype=float)
            p = _param_rows(bio, rows, S)
            prep = _prepare(_tumour_rows(bio, rows, S), Dc, p, steps_per_day)
            a = np.zeros((Dc.shape[0], K))
            fa = np.zeros((Dc.shape[0], K, prep["F"]))
            kernel = (_infusion_block_serial if Dc.shape[0] < _SERIAL_BELOW
                      else _infusion_block_parallel)
            kernel(steps_per_day, prep["dt"], Dc, prep["rowptr"], prep["jidx"], *prep["jumps"],
                   prep["ascale"], *prep["consts"], prep["h0"], *prep["shape_c"], cdays, a, fa,
                   _parts(Dc.shape[0]))
            auc[rows][:, order] = a * np.reshape(prep["ascale"], (-1, 1))
            activity[rows][:, order, :prep["F"]] = fa
    frac_dose, frac_h = _compact_fractions(D, base_sim.fraction_hypoxia)
    base = Simulation(**{k: getattr(base_sim, k) for k in _ROW_FIELDS})
    return InfusionKernels(bio, D, days, auc, activity, frac_dose, frac_h, base)


def simulate_reference(bio: Biology, doses: Any, infusions: Any = None, *, rtol: float = 1e-10,
                       atol: float = 1e-12) -> Simulation:
    """Simulate schedules one at a time with ``solve_ivp`` (the plain reference).

    Integrates the continuous equations (with the hypoxic fraction, the activity and its integral
    as quadratures of the state) between events with a tight-tolerance Runge-Kutta method and
    applies the same jump and outcome functions as :func:`simulate`.  Slow; for tests and
    benchmarks.
    """
    from scipy.integrate import solve_ivp

    D = _as_matrix(doses, "doses")
    U = np.zeros_like(D) if infusions is None else _as_matrix(infusions, "infusions")
    if U.shape[0] == 1 and D.shape[0] > 1:
        U = np.broadcast_to(U, D.shape)
    n, days = D.shape
    res = {k: np.zeros(n) for k in ("auc", "h_end", "h_mean")}
    fh_all, fa_all = np.zeros((n, days)), np.zeros((n, days))
    for i in range(n):
        p = _param_rows(bio, slice(i, i + 1), n)
        pv = {k: (np.asarray(v).ravel()[0] if np.ndim(v) else v) for k, v in p.values.items()}
        p = SurrogateParameters(pv, p.provenance)
        ka, ke, norm = (float(x) for x in sg.chemokine_rates(p))
        h0 = bio.hypoxic_fraction

        def rhs(t, y):
            w, v, P, C, B, T, _, _ = y
            kin = float(sg.nk_infiltration_rate(C, v, p))
            h = float(sg.hypoxic_fraction(w, v, h0, p))
            E = float(_activity(T, h, p)) if bio.nk else 0.0
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
                st = _apply_fraction(np.float64(d), tuple(y[:6]), bio, p, norm)
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
    fd, fh, fa = _compact_fractions(D, fh_all, fa_all)
    out = _outcomes(bio, bio.params, D, fd, fh, fa, res["auc"])
    return Simulation(nk_auc=res["auc"], **out, hypoxic_fraction_end=res["h_end"],
                      mean_hypoxic_fraction=res["h_mean"])


_KERNELS_READY = False


def compile_kernels() -> None:
    """Compile every simulator kernel variant (or load it from numba's on-disk cache), once per
    process.

    Solves call this before they start their clock: in a fresh installation the first compile
    takes tens of seconds, and inside a time limit it would leave the search no time (the
    bundled lung solve then stopped at its limit with a poor plan).  With a warm cache it costs
    well under a second, and nothing after the first call.
    """
    global _KERNELS_READY
    if _KERNELS_READY:
        return
    bio = Biology.simple("lung", product="il15_expanded")
    for n in (8, _SERIAL_BELOW):                      # serial and threaded variants
        D = np.zeros((n, 21))
        D[:, [0, 1, 2]] = 10.0
        U = np.zeros_like(D)
        U[:, 3] = 1.0
        simulate(bio, D, U, population=True)
        infusion_kernels(bio, D, np.array([3, 10]))
    _KERNELS_READY = True
