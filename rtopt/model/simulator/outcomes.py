"""Tumour outcomes of simulated schedules: ln S per fraction over the clonogen compartments,
NK killing, repopulation, per-patient TCP and population local control.

:func:`tumour_outcomes` is the one place they are computed, for every simulator and for
:class:`rtopt.model.simulator.InfusionKernels`; the compiled node expansion
(:mod:`rtopt.model.simulator.kernels`) is held by the tests to the plain numpy path here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtopt.model import radiobiology as rb
from rtopt.model import surrogate as sg
from rtopt.model.parameters import SurrogateParameters
from rtopt.model.simulator.biology import Biology
from rtopt.model.simulator.kernels import (SERIAL_BELOW, ln_s_nodes_parallel, ln_s_nodes_serial,
                                           population_outcomes_parallel,
                                           population_outcomes_serial, population_tcp_parallel,
                                           population_tcp_serial, row_array)

__all__ = ["fraction_log_survival", "population_tcp", "tumour_outcomes", "compact_fractions",
           "as_column"]


def as_column(x: Any, nd: int) -> Any:
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
    a = as_column(bio.alpha_per_gy, nd) * (1.0 + p.nk_radiosensitisation_max * act
                                      / (p.nk_radiosensitisation_e50 + act))
    b = as_column(bio.beta_per_gy2, nd)
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


def _node_inputs(bio, p, fd, fh, fa):
    """The parameters of the node kernels (:func:`_ln_s_nodes_py`) as row arrays, the LQ-L
    flag, and ``fd, fh, fa`` as contiguous float arrays of one shape."""
    lq_l = bio.survival_model == "lq_l"
    vals = [row_array(x) for x in (
        bio.alpha_per_gy, bio.beta_per_gy2, p.nk_radiosensitisation_max,
        p.nk_radiosensitisation_e50, p.clonogen_hypoxia_ratio, p.anoxic_share,
        p.oer_intermediate, p.oer, bio.transition_dose_gy if lq_l else 1.0)]
    fd, fh, fa = (np.ascontiguousarray(x, dtype=float) for x in np.broadcast_arrays(fd, fh, fa))
    return vals, lq_l, fd, fh, fa


def _ln_s_nodes(bio, p, fd, fh, fa, scale):
    """ln S ``(N, Q)`` at the nodes ``scale`` (``(N|1, Q)``) by :func:`_ln_s_nodes_py`."""
    vals, lq_l, fd, fh, fa = _node_inputs(bio, p, fd, fh, fa)
    out = np.empty((fd.shape[0], scale.shape[1]))
    kernel = ln_s_nodes_serial if fd.shape[0] < SERIAL_BELOW else ln_s_nodes_parallel
    kernel(fd, fh, fa, *vals, lq_l, np.ascontiguousarray(scale, dtype=float), out)
    return out


_FINE_LO, _FINE_FRAC = rb.fine_grid_interpolation()
# fine points between nodes q and q + 1: _FINE_START[q]:_FINE_START[q + 1], weight _FINE_WSUM[q]
_FINE_START = np.searchsorted(_FINE_LO, np.arange(rb.POPULATION_Z.size), side="left").astype(np.int64)
_FINE_WSUM = np.add.reduceat(rb.FINE_WEIGHTS, _FINE_START[:-1])
_FINE = (_FINE_FRAC, rb.FINE_WEIGHTS, _FINE_START, _FINE_WSUM)


def _log_clonogens(clonogens: Any) -> np.ndarray:
    """``ln N0`` as a row array (``-inf`` for no clonogens: certain control)."""
    with np.errstate(divide="ignore"):
        return row_array(np.log(np.asarray(clonogens, dtype=float)).ravel())


def population_tcp(clonogens: Any, ln_s: np.ndarray) -> np.ndarray:
    """Compiled :func:`rtopt.model.radiobiology.population_tcp` for ``(N, Q)`` node values."""
    ln_s = np.ascontiguousarray(ln_s, dtype=float)
    out = np.empty(ln_s.shape[0])
    kernel = population_tcp_serial if ln_s.shape[0] < SERIAL_BELOW else population_tcp_parallel
    kernel(ln_s, _log_clonogens(clonogens), *_FINE, out)
    return out


def _population_outcomes(vals, lq_l, fd, fh, fa, scale, shift, shift0, log_n0):
    """ln S at the nominal node (without ``shift``) and the population TCP of each row, and
    with ``shift0`` that under the second shift, by :func:`_population_outcomes_py`."""
    n = fd.shape[0]
    ln_mid, lc = np.empty(n), np.empty(n)
    lc0 = np.empty(n if shift0 is not None else 0)
    kernel = population_outcomes_serial if n < SERIAL_BELOW else population_outcomes_parallel
    # writeable arrays: a read-only one (a broadcast shift) is another numba type, compiled
    # again inside a first solve's clock (8 s)
    kernel(fd, fh, fa, *vals, lq_l, scale, np.require(row_array(shift), requirements="W"),
           np.require(row_array(() if shift0 is None else shift0), requirements="W"), log_n0,
           *_FINE, ln_mid, lc, lc0)
    return ln_mid, lc, lc0


def _shifts(bio, p, D, auc, n, overall):
    """Each row's NK log kill (ln S, ``<= 0``) and repopulation gain (ln), as ``(n,)`` arrays;
    ``overall`` the rows' overall times if known (else from ``D``; not needed, and not
    computed, without repopulation)."""
    nk_ln = np.broadcast_to(-p.nk_log_kill_per_activity_day * auc if bio.nk else 0.0, (n,))
    if bio.potential_doubling_days is None or bio.repopulation_kickoff_days is None:
        repop = np.zeros(n)                          # rb.repopulation_log_gain's gain 0
    else:
        repop = rb.repopulation_log_gain(rb.overall_days(D) if overall is None else overall,
                                         bio.potential_doubling_days,
                                         bio.repopulation_kickoff_days)
    return nk_ln, np.broadcast_to(repop, (n,))


def _outcomes_proportional(bio, p, D, fd, fh, fa, auc, shared=False, counterfactual=True,
                           overall=None):
    """:func:`tumour_outcomes` for LQ and LQ-L (proportional to the patient's radiosensitivity):
    one compiled pass per row (:func:`_population_outcomes_py`), a second one for the plan
    without NK cells only when the NK activity changes the ln S at the nodes."""
    alphas = rb.population_alphas(as_column(bio.alpha_per_gy, 1), as_column(p.alpha_sd_per_gy, 1))
    scale = np.ascontiguousarray(np.reshape(alphas / as_column(bio.alpha_per_gy, 2),
                                            (-1, alphas.shape[-1])))
    vals, lq_l, fd, fh, fa = _node_inputs(bio, p, fd, fh, fa)
    n = fd.shape[0]
    nk_ln, repop = _shifts(bio, p, D, auc, n, overall)
    log_n0 = _log_clonogens(bio.clonogens)
    # the plan without NK cells has the same ln S at the nodes unless the NK activity
    # radiosensitised a fraction; then only its shift differs (no NK kill)
    same_nodes = not (bio.nk and np.any(fa > 0))
    kill = bool(np.any(nk_ln))
    second = counterfactual and same_nodes and kill
    ln_mid, lc, lc0 = _population_outcomes(vals, lq_l, fd, fh, fa, scale, nk_ln + repop,
                                           repop if second else None, log_n0)
    ln_s = ln_mid + (nk_ln + repop)
    if not counterfactual:
        ln_s0, lc0 = np.full(n, np.nan), np.full(n, np.nan)
    elif same_nodes:
        ln_s0 = ln_mid + repop
        lc0 = lc0 if second else lc
    else:
        # without NK cells the rows of a cycle repeat (a shared schedule: one row; a schedule
        # on S samples with several infusion sets: S rows): compute one cycle
        m = int(shared) if shared and n % int(shared) == 0 else n
        cut = lambda v: v[:m] if v.shape[0] == n else v
        mid0, lc0, _ = _population_outcomes([cut(v) for v in vals], lq_l, fd[:m], fh[:m],
                                            np.zeros((m, fa.shape[1])), cut(scale), repop[:m],
                                            None, cut(log_n0))
        ln_s0 = np.tile(mid0 + repop[:m], n // m)
        lc0 = np.tile(lc0, n // m)
    return _outcome_dict(bio.clonogens, ln_s, ln_s0, nk_ln, lc, lc0)


def tumour_outcomes(bio: Biology, p: Any, D: np.ndarray, fd: np.ndarray, fh: np.ndarray,
              fa: np.ndarray, auc: np.ndarray, population: bool = True,
              general: bool = False, shared: bool | int = False,
              counterfactual: bool = True, overall: Any = None) -> dict[str, np.ndarray]:
    """Tumour outcomes of ``N`` schedules from their fractions (the one place they are computed).

    ``fd, fh, fa`` are ``(N, F)`` dose, FMISO hypoxic fraction and previous-day NK activity of
    each fraction (0-dose padding contributes nothing); ``auc`` the NK activity integral.
    ``population`` False skips the population average (local control is then NaN): a
    shortcut for searches whose objective does not need it.  ``general`` forces the plain
    numpy path (tests hold the compiled node expansion to it).  ``shared`` True says every row
    has the same doses and hypoxia (only the NK activity differs, as in
    :meth:`InfusionKernels.combine`), so the plan without NK cells is computed once; an
    integer ``k`` says the rows repeat in cycles of ``k`` in everything but the NK activity
    (row ``i`` and ``i + k``: the same schedule and parameter sample, as one schedule's
    infusion sets on ``k`` samples), so it is computed for the first ``k`` rows.
    ``counterfactual`` False skips the plan without NK cells (its outcomes and the
    NK-attributable gains are then NaN): for searches whose objective does not use them.
    ``overall`` is each row's overall time when the caller has it
    (:func:`rtopt.model.radiobiology.overall_days` of ``D`` otherwise).
    """
    if population and not general and bio.survival_model in ("lq", "lq_l") and fd.shape[1] > 0:
        # rows share one counterfactual only when nothing differs between them but the NK
        # activity: same schedule and no per-row parameter samples
        if shared is True:
            shared = (np.ndim(bio.clonogens) == 0 and np.ndim(bio.alpha_per_gy) == 0
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
    alphas = rb.population_alphas(as_column(bio.alpha_per_gy, 1), as_column(p.alpha_sd_per_gy, 1))
    if not population:
        alphas = alphas[..., rb.POPULATION_Z.size // 2:rb.POPULATION_Z.size // 2 + 1]
    scale = np.reshape(alphas / as_column(bio.alpha_per_gy, 2), (-1, 1, alphas.shape[-1]))
    pc = SurrogateParameters({k: as_column(v, 3) for k, v in p.values.items()}, p.provenance)
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
    nk_ln, repop = _shifts(bio, p, D, auc, n, overall)
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
    return _outcome_dict(n0, ln_s, ln_s0, nk_ln, lc, lc0)


def _outcome_dict(n0, ln_s, ln_s0, nk_ln, lc, lc0):
    """The outcomes of :func:`tumour_outcomes` from each row's ln S with and without NK cells
    (nominal alpha), NK log kill and local control with and without NK cells."""
    ln10 = np.log(10.0)
    return dict(ln_survival=ln_s, log10_kill=-ln_s / ln10, tcp=rb.poisson_tcp(n0, ln_s),
                local_control=lc, nk_log10_kill=-nk_ln / ln10,
                log10_kill_without_nk=-ln_s0 / ln10, local_control_without_nk=lc0,
                nk_gain_log10_kill=(ln_s0 - ln_s) / ln10, nk_gain_local_control=lc - lc0)


def compact_fractions(D: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
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
