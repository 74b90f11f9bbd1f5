"""Robust plans: sample-average approximation (SAA) over parameter samples.

A robust solve draws ``S`` parameter samples (:func:`rtopt.model.uncertainty.sample_values`, Latin
hypercube from a seed), scores every candidate plan on every sample with the instance's own
objective (:meth:`rtopt.problem.problem.Problem.objective_from_metrics`: weighted terms minus costs) and
maximises a statistic of the ``S`` objective values:

``expected``        the sample mean (SAA of the expected objective)
``cvar:ALPHA``      the mean of the worst ``ceil(ALPHA S)`` values: conditional value at risk of
                    the lower tail of a maximised objective (Rockafellar & Uryasev 2000)
``worst``           the minimum over the samples
``prob-better:REF`` the share of samples in which the plan beats the reference plan ``REF``
                    (ties between plans broken by the expected objective)

Constraints (prescription, OAR limits, calendar and NK rules) do not depend on the uncertain
parameters: they are checked once, as in a nominal solve.  Local-control limits
(``min_local_control``, ``local_control_vs``) are checked at nominal parameters like every
limit; the report adds the probability that they hold over the samples
(:func:`local_control_limit_probability`).

Back-ends: ``exhaustive`` (every candidate of its structured space scored on all samples, NK
infusion sets by exact superposition per sample row, :class:`rtopt.model.simulator.InfusionKernels`;
blocks of schedules run as Dask chunks, :mod:`rtopt.decisions.distributed`) and ``scipy_de`` (differential
evolution with the robust statistic as its fitness).  The chosen plan is verified nominally
(:meth:`Problem.verify`) and re-evaluated **out of sample** on ``4 S`` fresh samples from another
seed; ``Result.extras["robust"]`` reports both.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rtopt.backends import get_backend
from rtopt.backends.base import BackendOutput, Termination, package_version
from rtopt.backends.exhaustive import ExhaustiveBackend
from rtopt.common.console import search_progress
from rtopt.common.errors import RtoptError
from rtopt.decisions.distributed import map_chunks
from rtopt.model.simulator import infusion_kernels, simulate, tumour_outcomes
from rtopt.model.standards import standard_schedule
from rtopt.model.uncertainty import biology_rows, biology_with, distributions_for, sample_values
from rtopt.planning.solve import Result, finish
from rtopt.problem.problem import SIMULATION_METRICS, Evaluation, Plan, Problem, load_plan_file

__all__ = ["RobustSpec", "parse_robust", "statistic", "search_fitness", "solve_robust", "sample_objectives",
           "score_block", "robust_search", "bounds_apply", "infusion_matrix", "BOUND_INFLATION",
           "local_control_limit_probability",
           "OUT_OF_SAMPLE_FACTOR", "ROBUST_BACKENDS"]

OUT_OF_SAMPLE_FACTOR = 4
"""The out-of-sample check uses this many times the optimisation's samples."""
ROBUST_BACKENDS = ("exhaustive", "scipy_de")


class RobustError(RtoptError):
    """Invalid robust settings (the message says which)."""


@dataclass(frozen=True)
class RobustSpec:
    """A robust statistic: ``kind`` in expected, cvar, worst, prob-better."""

    kind: str
    alpha: float | None = None
    reference: Plan | None = None
    reference_name: str = ""

    @property
    def label(self) -> str:
        if self.kind == "cvar":
            return f"cvar:{self.alpha:g}"
        if self.kind == "prob-better":
            return f"prob-better:{self.reference_name}"
        return self.kind


def parse_robust(text: str, reference: Plan | None = None, problem: Any = None, *,
                 force: bool = False) -> RobustSpec:
    """Parse ``expected``, ``cvar:ALPHA``, ``worst`` or ``prob-better:PLAN.json`` (the plan
    checked against ``problem`` when given, see :func:`load_plan`)."""
    kind, _, arg = str(text).partition(":")
    if kind in ("expected", "worst"):
        if arg:
            raise RobustError(f"--robust {text}: {kind!r} takes no argument")
        return RobustSpec(kind)
    if kind == "cvar":
        try:
            alpha = float(arg)
        except ValueError:
            raise RobustError(f"--robust {text}: expected cvar:ALPHA with ALPHA in (0, 1], "
                              "e.g. cvar:0.1") from None
        if not 0 < alpha <= 1:
            raise RobustError(f"--robust {text}: ALPHA must be in (0, 1], got {alpha:g}")
        return RobustSpec("cvar", alpha)
    if kind == "prob-better":
        if reference is None:
            if not arg:
                raise RobustError(f"--robust {text}: expected prob-better:PLAN.json")
            reference = load_plan(arg, problem, force=force, option="--robust prob-better")
        return RobustSpec("prob-better", reference=reference, reference_name=arg or "reference")
    raise RobustError(f"--robust {text}: unknown statistic {kind!r} (expected, cvar:ALPHA, "
                      "worst, prob-better:PLAN.json)")


def load_plan(path: str | Path, problem: Any = None, *, force: bool = False,
              option: str = "") -> Plan:
    """A plan from the JSON of ``rtopt solve -o``: :func:`rtopt.problem.problem.load_plan_file`
    (checked against ``problem`` when given)."""
    return load_plan_file(path, problem, force=force, option=option)


BOUND_INFLATION = 1e-9
"""Relative margin added to each sample's objective bound (:func:`score_block` with
``bounds_only``) before its statistic: the bound and the exact value are computed by different
sums, so round-off (~1e-16 relative) could otherwise put a bound a hair below the value it bounds
and prune the optimum; the objectives the statistics compare differ by far more than 1e-9."""


def statistic(spec: RobustSpec, obj: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """The robust statistic over the last axis (samples) of ``obj``; NaN stays NaN."""
    obj = np.asarray(obj, dtype=float)
    if spec.kind == "expected":
        return obj.mean(axis=-1)
    if spec.kind == "worst":
        return obj.min(axis=-1)
    if spec.kind == "cvar":
        k = max(1, math.ceil(spec.alpha * obj.shape[-1] - 1e-12))
        return np.sort(obj, axis=-1)[..., :k].mean(axis=-1)
    if spec.kind == "prob-better":
        return (obj > ref).mean(axis=-1)
    raise RobustError(f"unknown robust statistic {spec.kind!r}")  # pragma: no cover


def search_fitness(spec: RobustSpec, obj: np.ndarray, ref: np.ndarray | None = None, *,
                   upper: bool = False) -> np.ndarray:
    """What the search maximises: the statistic, with ties of ``prob-better`` broken by the
    expected objective.  The tie-break term lies in ``[0, 1 / (2 S))``, below one sample's
    share, so it never outranks a plan that wins on one more sample.

    ``upper``: ``obj`` are upper bounds of the objective per sample, and the result an upper
    bound of the fitness of every plan they bound, safe against round-off: the values are
    inflated by :data:`BOUND_INFLATION`, and for ``prob-better`` a sample counts as winnable
    when its inflated bound exceeds the reference unless the bound equals the reference
    exactly (both at the same saturated value, e.g. local control 1: a plan below its bound
    cannot beat it there)."""
    obj = np.asarray(obj, dtype=float)
    raw = obj
    if upper:
        obj = obj + BOUND_INFLATION * np.maximum(1.0, np.abs(obj))
    if spec.kind != "prob-better":
        return statistic(spec, obj, ref)
    st = ((obj > ref) & (raw != ref)).mean(axis=-1) if upper else statistic(spec, obj, ref)
    S = np.shape(obj)[-1]
    with np.errstate(over="ignore"):
        tb = 1.0 / (1.0 + np.exp(-np.clip(np.mean(obj, axis=-1), -700, 700)))
    return st + tb / (2.0 * S + 1.0)


def sample_objectives(problem: Problem, D: np.ndarray, U: np.ndarray,
                      values: dict[str, np.ndarray]) -> np.ndarray:
    """Objective of each schedule row on each sample: ``(len(D), S)`` (direct simulation)."""
    S = len(next(iter(values.values())))
    n = len(D)
    p = copy.copy(problem)
    p.biology = biology_with(problem.biology, {k: np.tile(v, n) for k, v in values.items()})
    ev = Problem.evaluate(p, np.repeat(D, S, axis=0), np.repeat(U, S, axis=0), simulate_tme=True,
                          all_metrics=problem.needs_population)
    return ev.objective.reshape(n, S)


def local_control_limit_probability(problem: Problem, plan: Plan,
                                    values: dict[str, np.ndarray]) -> float:
    """Share of the parameter samples ``values`` in which ``plan`` meets the prescription's
    local-control limits *in that sample*: ``min_local_control``, and local control at least the
    named standard's (radiotherapy alone, its source's convention, the same sample) minus
    ``local_control_margin``.  The nominal limits are what :meth:`Problem.verify` checks; this
    is their probabilistic counterpart, reported by robust solves."""
    S = len(next(iter(values.values())))
    p = copy.copy(problem)
    p.biology = biology_with(problem.biology, values)
    D, U = plan.daily(problem.horizon_days)
    ev = Problem.evaluate(p, np.repeat(D[None], S, axis=0), np.repeat(U[None], S, axis=0),
                          simulate_tme=True, all_metrics=True,
                          dose_ratio=problem.dose_ratio_of(plan))
    lc = np.asarray(ev.metrics["local_control"], dtype=float)
    ok = np.ones(S, dtype=bool)
    if problem.min_local_control is not None:
        ok &= lc >= problem.min_local_control - 1e-9
    if problem.local_control_vs is not None:
        st = standard_schedule(problem.local_control_vs)
        width = max(problem.horizon_days, st.days[-1] + 1)
        d = np.zeros((S, width))
        d[:, list(st.days)] = st.dose_per_fraction_gy
        std = simulate(replace(p.biology, nk=False), p.tumour_doses(d, st.tumour_dose_ratio),
                       steps_per_day=problem.steps_per_day).local_control
        ok &= lc >= np.asarray(std) - problem.local_control_margin - 1e-9
    return float(ok.mean())


def summary_stats(obj: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and 5th/50th/95th percentiles of sampled objective values."""
    return {"mean": float(obj.mean()), "sd": float(obj.std()),
            **{f"p{q}": float(np.percentile(obj, q)) for q in (5, 50, 95)}}


class _RobustProblem(Problem):
    """A problem whose :meth:`evaluate` scores the robust statistic (for heuristics)."""

    @classmethod
    def wrap(cls, problem: Problem, fitness: Callable[[np.ndarray, np.ndarray], np.ndarray],
             tick: Callable[[int, float], None] | None = None):
        """``problem`` scored by ``fitness``; ``tick(n, best)`` after each batch (the count and
        the best fitness of its feasible plans, for a progress bar)."""
        obj = copy.copy(problem)
        obj.__class__ = cls
        obj._fitness = fitness
        obj._tick = tick
        return obj

    def evaluate(self, D: Any, U: Any = None, *, simulate_tme: bool | None = None,
                 all_metrics: bool = False) -> Evaluation:
        ev = Problem.evaluate(self, D, U, simulate_tme=False)
        D = np.atleast_2d(np.asarray(D, dtype=float))
        U = np.zeros_like(D) if U is None else np.broadcast_to(
            np.atleast_2d(np.asarray(U, dtype=float)), D.shape)
        fit = self._fitness(D, np.ascontiguousarray(U))
        if self._tick is not None:
            good = fit[ev.feasible & np.isfinite(fit)]
            self._tick(len(D), float(good.max()) if good.size else float("nan"))
        return Evaluation(fit, ev.metrics, ev.slacks, ev.violation)


# ----------------------------------------------------------------------------- exhaustive
def _space(problem: Problem, opt: dict[str, Any]):
    """The exhaustive back-end's structured space, closed-form limits applied."""
    start_window = int(opt.get("start_window_days", 7))
    extra_spacing = int(opt.get("extra_spacing_days", 3))
    cont_step = float(opt.get("continuous_step_gy", 0.1))
    day_step = int(opt.get("nk_day_step", 1))
    H = problem.horizon_days
    n_lo, n_hi = problem.fraction_count_range()
    rows, plans_rt = [], []
    for n in range(n_lo, n_hi + 1):
        ds = ExhaustiveBackend.doses(problem, n, cont_step)
        for days in (ExhaustiveBackend.calendars(problem, n, start_window, extra_spacing) if ds.size else []):
            for d in ds:
                row = np.zeros(H)
                row[list(days)] = d
                rows.append(row)
                plans_rt.append((days, float(d)))
    if not rows:
        return np.zeros((0, H)), [], np.zeros(0), [()]
    D = np.array(rows)
    ev = problem.evaluate(D, simulate_tme=False)
    ok = np.ones(len(D), dtype=bool)
    for key, (val, lim, sense, _) in ev.slacks.items():
        if key.startswith("nk."):
            continue
        sl = (val - lim) if sense == ">=" else (lim - val)
        ok &= sl >= -1e-9 * max(1.0, abs(lim))
    sets = ExhaustiveBackend.infusion_sets(problem, day_step) if problem.nk is not None else [()]
    return (D[ok], [p for p, k in zip(plans_rt, ok) if k], ev.metrics["tumour_bed_gy"][ok],
            sets)


def infusion_matrix(sets: list) -> tuple[np.ndarray, np.ndarray]:
    """Candidate infusion days and the ``(len(sets), K)`` count matrix of the infusion sets."""
    cand = np.array(sorted({d for s in sets for d in s}), dtype=int)
    pos = {d: i for i, d in enumerate(cand)}
    M = np.zeros((len(sets), len(cand)))
    for r, s in enumerate(sets):
        for d in s:
            M[r, pos[d]] += 1
    return cand, M


def bounds_apply(problem: Problem, values: dict[str, np.ndarray]) -> bool:
    """Whether :func:`robust_search` may prune schedules by an upper bound: the objective never
    decreases when an infusion is added (:attr:`Problem.objective_nondecreasing_in_infusions`)
    and no sample makes NK cells harmful (negative radiosensitisation or NK kill)."""
    if problem.nk is None or not problem.objective_nondecreasing_in_infusions:
        return False
    p = problem.biology.params
    for key in ("nk_radiosensitisation_max", "nk_log_kill_per_activity_day",
                "nk_radiosensitisation_e50"):
        v = np.concatenate([np.ravel(p.values[key]), np.ravel(values.get(key, []))])
        if np.any(v < 0) or (key.endswith("e50") and np.any(v <= 0)):
            return False
    return True


def _block_context(problem: Problem, values: dict[str, np.ndarray], Db: np.ndarray,
                   cand: np.ndarray) -> dict[str, Any]:
    """Everything the infusion sets of a block of schedules share on all ``S`` samples: the
    single-infusion responses (row ``i * S + j``: schedule ``i``, sample ``j``), the metrics
    that no infusion changes, and the nominal responses for local-control limits."""
    S = len(next(iter(values.values())))
    b = len(Db)
    bio_s = biology_with(problem.biology, values)
    DD = np.repeat(Db, S, axis=0)
    bio_k = biology_rows(bio_s, np.tile(np.arange(S), b), S)     # one sample per row
    ker = infusion_kernels(bio_k, problem.tumour_doses(DD), cand,
                           steps_per_day=problem.steps_per_day, population=False)
    fixed: dict[str, np.ndarray] = {}
    if problem.needs_reoxygenation:     # radiotherapy alone: the same for every infusion set
        p = copy.copy(problem)
        p.biology = bio_k
        fixed = {k: np.asarray(v, dtype=float)
                 for k, v in p.reoxygenation_metrics(DD).items()}
    nominal = (infusion_kernels(problem.biology, problem.tumour_doses(Db), cand,
                                steps_per_day=problem.steps_per_day, population=True)
               if problem.has_outcome_limits else None)
    return {"S": S, "bio_s": bio_s, "ker": ker, "fixed": fixed, "nominal": nominal}


def _set_objectives(problem: Problem, ctx: dict[str, Any], i: int, Db: np.ndarray, bed: float,
                    days: tuple, act: np.ndarray, auc_inf: np.ndarray) -> np.ndarray:
    """Objective ``(m, S)`` of schedule ``i`` of a block with ``m`` infusion responses: NK
    activity over the day before each fraction ``act`` (``(m, S, F)``) and the infused cells'
    activity integral ``auc_inf`` (``(m, S)``), from single infusions or bounds on them."""
    S, ker, bio_s = ctx["S"], ctx["ker"], ctx["bio_s"]
    m = act.shape[0]
    N = m * S
    r = i * S + np.arange(S)
    auc_inf = auc_inf.reshape(-1)                              # (m * S,) set-major
    # the endogenous NK activity does not depend on the infusions (the base schedule's)
    auc_e = np.tile(ker.base.nk_auc_endogenous[r], m)
    out: dict[str, np.ndarray] = {}
    # objectives of NK favourability (and BED) need no tumour outcome: skip that arithmetic
    if {problem.metric_of(k) for k in problem.weights} - {"nk_favourability", "tumour_bed_gy"}:
        fd = np.tile(ker.frac_dose[r], (m, 1))
        fh = np.tile(ker.frac_h[r], (m, 1))
        bio_r = biology_rows(bio_s, np.tile(np.arange(S), m), S)
        Dr = np.broadcast_to(problem.tumour_doses(Db[i]), (N, Db.shape[1]))
        # NK kill from the infused cells (docs/model.md section 13)
        # rows k * S + j: set k on sample j; without NK cells the sets are alike (one cycle)
        out = tumour_outcomes(bio_r, bio_r.params, Dr, fd, fh, act.reshape(N, -1), auc_inf,
                              problem.needs_population, shared=S,
                              counterfactual=problem.needs_counterfactual)
    mets: dict[str, np.ndarray] = {}
    for name, attr in SIMULATION_METRICS.items():
        if attr == "nk_auc":
            mets[name] = auc_inf + auc_e
        elif attr == "nk_auc_endogenous":
            mets[name] = auc_e
        elif attr in out:
            mets[name] = out[attr]
        elif attr in ("hypoxic_fraction_end", "mean_hypoxic_fraction"):
            mets[name] = np.tile(getattr(ker.base, attr)[r], m)
    for name, v in ctx["fixed"].items():
        mets[name] = np.tile(v[r], m)
    mets["nk_favourability_infused"] = auc_inf
    mets["tumour_bed_gy"] = np.full(N, bed)
    mets["n_fractions"] = np.full(N, float(len(days)))
    mets["overall_days"] = np.full(N, float(days[-1] - days[0]) if days else 0.0)
    return problem.objective_from_metrics(mets, N).reshape(m, S)


def score_block(problem: Problem, spec: RobustSpec, values: dict[str, np.ndarray],
                ref: np.ndarray | None, D: np.ndarray, plans_rt: list, bed: np.ndarray,
                sets: list, idx: np.ndarray, *, bounds_only: bool = False
                ) -> dict[str, np.ndarray]:
    """Best infusion set and its statistic for each schedule of a block (all samples).

    Returns ``fitness`` (:func:`search_fitness`, ``-inf`` when no set is allowed or the
    nominal local-control limits fail), ``stat`` (:func:`statistic`) and ``set`` (index into
    ``sets``).  With ``bounds_only`` it returns instead, per schedule, ``upper``: a bound on
    the fitness of every allowed set (each sample's objective with, before each fraction, the
    sum of the largest single-infusion activities a set can hold, and the largest activity
    integral of any allowed set, made safe against
    round-off by :func:`search_fitness` with ``upper``; valid when :func:`bounds_apply`), and ``lower``: the exact fitness
    of one allowed set (the one with the largest activity integral summed over the samples).
    """
    S = len(next(iter(values.values())))
    Db = D[idx]
    b = len(Db)
    if problem.nk is None or not any(sets):
        if bounds_only:
            raise RobustError("score_block: bounds need infusion sets")  # pragma: no cover
        obj = sample_objectives(problem, Db, np.zeros_like(Db), values)
        fit = search_fitness(spec, obj, ref)
        if problem.has_outcome_limits:  # the nominal local-control limits, as verify checks
            fit = np.where(problem.outcome_limits_ok(problem.evaluate(Db).metrics), fit, -np.inf)
        return {"fitness": fit, "stat": statistic(spec, obj, ref),
                "set": np.zeros(b, dtype=int)}
    cand, M = infusion_matrix(sets)
    ctx = _block_context(problem, values, Db, cand)
    ker, nominal = ctx["ker"], ctx["nominal"]
    K = len(cand)
    res = ({"upper": np.full(b, -np.inf), "lower": np.full(b, -np.inf)} if bounds_only else
           {"fitness": np.full(b, -np.inf), "stat": np.full(b, -np.inf),
            "set": np.full(b, -1)})
    for i in range(b):
        days = plans_rt[idx[i]][0]
        bad = np.array([not problem.infusion_day_ok(days, int(t)) for t in cand], dtype=float)
        valid = np.flatnonzero((M @ bad) == 0)
        if valid.size == 0:
            continue
        Mv = M[valid]
        r = i * S + np.arange(S)
        auc_inf = Mv @ ker.auc[r].T                                         # (nv, S)
        A = ker.activity[r]                                                 # (S, K, F)

        def acts(rows: Any) -> np.ndarray:
            """NK activity before each fraction of the sets ``Mv[rows]``: ``(m, S, F)``."""
            Mr = Mv[rows]
            return (Mr @ A.transpose(1, 0, 2).reshape(K, -1)).reshape(len(Mr), S, -1)

        def limits_ok(rows: np.ndarray) -> np.ndarray:
            """The nominal local-control limits of the sets ``Mv[rows]``, as verify checks."""
            if nominal is None:
                return np.ones(len(rows), dtype=bool)
            lc = nominal.combine(i, Mv[rows].astype(float), population=True).local_control
            return np.asarray(problem.outcome_limits_ok({"local_control": lc}), dtype=bool)

        if bounds_only:
            # activity before each fraction of any allowed set: at most the sum of its
            # largest ``n`` single-infusion activities over the allowed days (``n`` infusions
            # per set at most; n times the largest when a set repeats a day)
            chan = Mv.any(axis=0)
            n_inf = int(Mv.sum(axis=1).max())
            Aa = A[:, chan, :]
            act_ub = (n_inf * Aa.max(axis=1) if Mv.max() > 1 else
                      np.sort(Aa, axis=1)[:, Aa.shape[1] - n_inf:, :].sum(axis=1))
            ub = _set_objectives(problem, ctx, i, Db, bed[idx[i]], days, act_ub[None],
                                 auc_inf.max(axis=0)[None])
            u = search_fitness(spec, ub, ref, upper=True)[0]
            res["upper"][i] = np.inf if np.isnan(u) else u
            k = int(np.argmax(auc_inf.sum(axis=1)))
            if limits_ok(np.array([k]))[0]:
                lo = _set_objectives(problem, ctx, i, Db, bed[idx[i]], days, acts([k]),
                                     auc_inf[k:k + 1])
                res["lower"][i] = search_fitness(spec, lo, ref)[0]
            continue
        obj = _set_objectives(problem, ctx, i, Db, bed[idx[i]], days, acts(slice(None)),
                              auc_inf)
        fit = np.where(limits_ok(np.arange(len(valid))), search_fitness(spec, obj, ref), -np.inf)
        k = int(np.argmax(fit))
        res["fitness"][i], res["set"][i] = fit[k], valid[k]
        res["stat"][i] = statistic(spec, obj[k], ref)
    return res


def robust_search(problem: Problem, spec: RobustSpec, values: dict[str, np.ndarray],
                  ref: np.ndarray | None, D: np.ndarray, plans_rt: list, bed: np.ndarray,
                  sets: list, *, scheduler: Any = None, progress: str | None = None,
                  block: int | None = None, prune: bool = True) -> dict[str, Any]:
    """The robust fitness of every schedule row of ``D`` with its best infusion set.

    Exact over the space, with pruning (branch and bound over schedules) when
    :func:`bounds_apply` and the objective needs tumour outcomes (the expensive part): a first
    pass bounds every schedule's fitness from above and evaluates one infusion set exactly
    (:func:`score_block` with ``bounds_only``); the second scores every infusion set of the
    schedules whose bound reaches the best of those exact values.  A pruned schedule's bound
    is below a fitness that is achieved, so it cannot hold the optimum, and ties are kept
    (pruning is strict): the result is the full enumeration's, schedule for schedule, among
    those scored.  Returns ``fitness`` (``-inf`` for pruned schedules and those without an
    allowed set), ``stat``, ``set``, ``scored`` (schedules scored exactly) and ``pruned``.
    Blocks of ``block`` schedules run as chunks (:func:`rtopt.decisions.distributed.map_chunks`).
    """
    n = len(D)
    S = len(next(iter(values.values())))
    block = max(1, int(block or max(1, 4096 // max(1, S))))
    outcome = bool({problem.metric_of(k) for k in problem.weights}
                   - {"nk_favourability", "tumour_bed_gy"})
    keep = np.arange(n)
    bounded = (prune and n > 1 and any(sets) and outcome and bounds_apply(problem, values))
    if bounded:
        items = [np.arange(a, min(a + block, n)) for a in range(0, n, block)]
        parts = map_chunks(lambda idx: score_block(problem, spec, values, ref, D, plans_rt,
                                                   bed, sets, idx, bounds_only=True),
                           items, scheduler=scheduler,
                           progress=None if progress is None else progress + " (bounds)")
        upper = np.concatenate([p["upper"] for p in parts])
        lower = np.concatenate([p["lower"] for p in parts])
        floor = lower.max(initial=-np.inf)
        if np.isfinite(floor):
            keep = np.flatnonzero(upper >= floor)
    if bounded:   # few schedules left, each costly: smaller chunks keep the progress bar moving
        block = max(1, min(block, math.ceil(len(keep) / 8)))
    items = [keep[a:a + block] for a in range(0, len(keep), block)]
    parts = map_chunks(lambda idx: score_block(problem, spec, values, ref, D, plans_rt, bed,
                                               sets, idx),
                       items, scheduler=scheduler, progress=progress)
    fit, stat, st = np.full(n, -np.inf), np.full(n, -np.inf), np.full(n, -1)
    if parts:
        fit[keep] = np.concatenate([p["fitness"] for p in parts])
        stat[keep] = np.concatenate([p["stat"] for p in parts])
        st[keep] = np.concatenate([p["set"] for p in parts])
    return {"fitness": fit, "stat": stat, "set": st, "scored": int(len(keep)),
            "pruned": int(n - len(keep)), "bounded": bool(bounded)}


def _robust_exhaustive(problem, spec, values, ref, options, scheduler, progress):
    name, version = "rtopt enumeration + SAA", package_version("numpy")
    D, plans_rt, bed, sets = _space(problem, options.options)
    if len(D) == 0:
        return BackendOutput((), Termination.INFEASIBLE, message="no schedule in the space meets "
                             "the limits", solver_name=name, solver_version=version)
    S = len(next(iter(values.values())))
    found = robust_search(problem, spec, values, ref, D, plans_rt, bed, sets,
                          scheduler=scheduler, progress=progress,
                          block=options.options.get("robust_block"),
                          prune=bool(options.options.get("robust_prune", True)))
    fit, stat, st = found["fitness"], found["stat"], found["set"]
    if not np.isfinite(fit).any():
        return BackendOutput((), Termination.INFEASIBLE, message="no infusion set obeys the NK "
                             "rules with any schedule in the space", solver_name=name,
                             solver_version=version)
    i = int(np.argmax(np.where(np.isfinite(fit), fit, -np.inf)))
    days, d = plans_rt[i]
    plan = Plan.uniform(days, d, sets[int(st[i])])
    return BackendOutput((plan,), Termination.OPTIMAL, None, None, solver_name=name,
                         solver_version=version,
                         extras={"schedules": len(D), "infusion_sets": len(sets),
                                 "schedules_scored": found["scored"],
                                 "schedules_pruned": found["pruned"],
                                 "evaluations": int(found["scored"] * len(sets) * S),
                                 "robust_fitness": float(stat[i]),
                                 "exact_for_instance": False})


# ----------------------------------------------------------------------------- driver
def solve_robust(problem: Problem, profile: Any, spec: RobustSpec | str, samples: int,
                 seed: int, t0: float, base: dict[str, Any], *, scheduler: Any = None,
                 progress: str | None = "robust scoring", reference: Plan | None = None) -> Any:
    """Robust solve (see the module docstring); returns a verified :class:`rtopt.planning.solve.Result`.

    ``reference``: a plan to report the probability of beating (in and out of sample) for any
    statistic; ``prob-better`` uses its own reference.

    Raises
    ------
    RobustError
        ``samples < 1``, an unknown statistic, or an objective that no parameter changes.
    """
    if isinstance(spec, str):
        spec = parse_robust(spec, problem=problem)
    if spec.reference is None and reference is not None:
        spec = replace(spec, reference=reference, reference_name="reference")
    if int(samples) < 1:
        raise RobustError(f"--samples must be >= 1 for a robust solve, got {samples}")
    if profile.backend not in ROBUST_BACKENDS:
        raise RobustError(f"robust solves run on {' or '.join(ROBUST_BACKENDS)}, not "
                          f"{profile.backend!r} (profile {profile.name})")
    if not problem.needs_simulation:
        raise RobustError("the objective (tumour BED) does not depend on any uncertain "
                          "parameter: a robust solve equals the nominal one")
    S = int(samples)
    dists = distributions_for(problem)
    values = sample_values(dists, S, seed)
    ref = None
    if spec.reference is not None:
        spec.reference.daily(problem.horizon_days)
        ref = sample_objectives(problem, *(a[None] for a in spec.reference.daily(
            problem.horizon_days)), values)[0]
    if profile.backend == "exhaustive":
        out = _robust_exhaustive(problem, spec, values, ref, profile.options, scheduler,
                                 progress)
    else:
        with search_progress(None if progress is None else f"robust {profile.backend}",
                             profile.options.time_limit_s, unit=f"plans x {S} samples") as tick:
            def fitness(D, U):
                return search_fitness(spec, sample_objectives(problem, D, U, values), ref)

            out = get_backend(profile.backend)().solve(
                _RobustProblem.wrap(problem, fitness, tick), profile.options)
        if out.plans:  # the back-end's claim is the robust statistic, not the nominal value

            # only the back-end's robust best: verification must not re-rank by the nominal
            out = replace(out, plans=out.plans[:1], claimed_objective=None,
                          extras={**out.extras, "search_fitness": out.claimed_objective})
    res: Result = finish(problem, profile, out, t0, base)
    if res.plan is None or not res.feasible:
        return res
    # in-sample and out-of-sample distributions of the chosen plan's objective
    D, U = (a[None] for a in res.plan.daily(problem.horizon_days))
    ins = sample_objectives(problem, D, U, values)[0]
    n_oos = OUT_OF_SAMPLE_FACTOR * S
    oos_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
    v_oos = sample_values(dists, n_oos, oos_seed)
    oos = sample_objectives(problem, D, U, v_oos)[0]
    report: dict[str, Any] = {
        "statistic": spec.label, "samples": S, "seed": seed, "sampling": "latin hypercube",
        "nominal_objective": res.objective,
        "in_sample": {"statistic": float(statistic(spec, ins, ref)), **summary_stats(ins)},
        "out_of_sample": {"samples": n_oos, "seed": oos_seed},
    }
    if spec.reference is not None:
        ref_oos = sample_objectives(problem, *(a[None] for a in spec.reference.daily(
            problem.horizon_days)), v_oos)[0]
        report["reference"] = spec.reference.describe()
        report["in_sample"]["prob_better_than_reference"] = float((ins > ref).mean())
        report["out_of_sample"]["prob_better_than_reference"] = float((oos > ref_oos).mean())
    else:
        ref_oos = None
    report["out_of_sample"].update({"statistic": float(statistic(spec, oos, ref_oos)),
                                    **summary_stats(oos)})
    lc_msg = ""
    if problem.has_outcome_limits:
        p_in = local_control_limit_probability(problem, res.plan, values)
        p_out = local_control_limit_probability(problem, res.plan, v_oos)
        report["in_sample"]["prob_local_control_limits"] = p_in
        report["out_of_sample"]["prob_local_control_limits"] = p_out
        lc_msg = (f"; local-control limits hold in {100 * p_out:.1f} % of the out-of-sample "
                  f"draws ({100 * p_in:.1f} % in sample; at nominal parameters they hold)")
    extras = {**res.extras, "robust": report}
    extras.setdefault("robust_fitness", report["in_sample"]["statistic"])
    pruned = extras.get("schedules_pruned")
    search = (f"; {extras['schedules_scored']} of {extras['schedules']} schedules scored in full "
              f"(the other {pruned}: bound below a robust value found)" if pruned else "")
    msg = (f"robust {spec.label} over {S} samples (seed {seed}){search}; re-verified out of "
           f"sample on "
           f"{n_oos} fresh samples (seed {oos_seed}): {spec.label} "
           f"{report['out_of_sample']['statistic']:.4g} (in sample "
           f"{report['in_sample']['statistic']:.4g})" + lc_msg)

    return replace(res, extras=extras, message=(res.message + "; " if res.message else "") + msg,
                   wall_time_s=time.perf_counter() - t0)
