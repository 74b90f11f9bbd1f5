"""``scipy_de`` and ``scipy_milp``: back-ends built on :mod:`scipy.optimize`.

``scipy_de`` -- differential evolution (:func:`scipy.optimize.differential_evolution`)
==========================================================================================

A heuristic for every objective, with or without NK infusions, uniform or per-fraction doses,
grid or continuous doses.  Each DE individual (the *genotype*, a real vector with some integer
coordinates handled by ``integrality=``) is decoded into a schedule (the *phenotype*: daily dose
and infusion rows), and the whole population of a generation is scored by **one**
:meth:`rtopt.problem.problem.Problem.evaluate` call (``vectorized=True``, ``updating='deferred'``).

Genotype (a coordinate whose range is a single value is fixed and left out of the vector):

* ``n`` (integer): number of fractions, in :meth:`Problem.fraction_count_range`.
* Calendar, option ``calendar``:

  - ``"gaps"`` (default): ``start`` (integer) indexes the allowed days before
    ``start_window_days`` (option, default 7); ``gap_1 .. gap_{n_max-1}`` (integers in
    ``0 .. extra_spacing_days``, option, default 3) are extra days on top of
    ``min_interval_days``: fraction ``i`` falls on the first allowed day at least
    ``min_interval_days + gap_i`` after fraction ``i - 1``.  Weekdays and the minimum interval
    therefore hold by construction; ``max_overall_days`` is checked by the evaluation.  This
    contains every regular calendar of the ``exhaustive`` back-end (all gaps equal).
  - ``"regular"``: ``start`` as above and one ``spacing`` (integer in ``min_interval_days ..
    min_interval_days + extra_spacing_days``): exactly ``exhaustive``'s regular calendars.

  Fractions that would fall beyond the horizon are dropped (the evaluation then sees fewer
  fractions and judges the schedule as it is) unless the repair below replaces the calendar.
* Dose: on a grid, an integer index into :meth:`Problem.dose_grid`; continuous, a real value
  in ``dose_per_fraction_gy``.  Uniform doses use one dose coordinate; per-fraction doses use
  ``n_max`` coordinates, of which the first ``n`` are used.
* NK infusions (instances with ``[nk]``): ``n_infusions`` (integer) and ``infusion_1 ..
  infusion_{n_max}`` (integer days in ``[earliest_day, latest_day]``), the first
  ``n_infusions`` used after sorting.

Repairs (option ``repair``, default true) map a genotype to a nearby rule-abiding phenotype, so
that the penalty is spent on the hard limits rather than on calendar rules:

* a calendar that overruns the horizon or ``max_overall_days`` is replaced by the compact one
  (every gap 0) from the same first day, when that fits;

* a uniform dose above the largest dose the OAR limits allow for ``n`` fractions
  (:meth:`Problem.max_uniform_dose`) is lowered to it (the largest grid point below it on a grid);
  per-fraction doses are lowered to the OAR dose-per-fraction caps, then, if an OAR BED limit is
  broken, all scaled down by the largest common factor that meets it (bisection on
  :meth:`Problem.oar_bed`) and snapped down to the grid;
* each infusion moves to the first day at or after its genotype day (and at least
  ``min_interval_days`` after the previous infusion) that the NK window and the
  no-fraction-after-infusion rule allow (:meth:`Problem.infusion_day_ok`, vectorised here).

With per-fraction doses (and no ``init`` option) a third of the initial population has equal
doses, so DE starts from uniform schedules as well as random ones.

Energy (DE minimises): ``-objective`` for schedules that satisfy every constraint; for the others
``c0 + violation`` where ``violation`` is :attr:`rtopt.problem.problem.Evaluation.violation` and ``c0`` is
a proved upper bound of ``-objective`` over feasible schedules (0 for NK favourability, TCP and
tumour BED, which are non-negative on feasible schedules; the repopulation log gain for tumour
log kill; option ``penalty_offset`` overrides it).  Hence any violation loses to any feasible
schedule (Deb's feasibility rule) without a huge constant that would blind DE's relative
convergence test.

Options (profile ``[options]``): DE's own ``strategy``, ``maxiter`` (default 300), ``popsize``
(default 15, lowered to keep the population near 400 members, never below 5: DE's per-member
bookkeeping is Python while the evaluation is one vectorised call), ``tol`` (default 0.001:
scipy's 0.01 stops early on objectives whose good values differ by under 1 %), ``atol`` (0),
``mutation`` ((0.7, 1.5), wider than scipy's (0.5, 1)), ``recombination`` (0.7), ``init`` ("latinhypercube"); and this
module's ``calendar``, ``start_window_days``, ``extra_spacing_days``, ``repair``, ``polish``
(default true), ``polish_maxiter`` (100), ``n_candidates`` (5), ``penalty_offset``.  Unknown
options end the run with termination ``error`` naming them.  ``seed`` seeds DE (same seed and
options -> same plan, unless the time limit stops a run early); ``time_limit_s`` is checked
after every generation (termination ``time_limit``) and bounds the polish; ``threads`` is
not used (a vectorised DE runs in one worker; the evaluation is numpy).

DE's own polish is off; with a continuous dose the best schedule's dose(s) are then polished by
SLSQP with every integer decision fixed, the constraints being the scaled slacks of
:meth:`Problem.evaluate`.  The back-end returns the best few distinct feasible schedules it saw
(best first) so that verification can fall back.

Guarantee: none beyond feasibility after verification (a heuristic: ``bound`` is None and the
result is never reported as optimal).

``scipy_milp`` -- exact MILP for the classic objective (:func:`scipy.optimize.milp`, HiGHS)
==========================================================================================

Objective ``tumour_bed`` only (the TME objectives are not linear in the decisions), on a dose
grid; uniform or per-fraction doses; an ``[nk]`` table is allowed (infusions do not change the
tumour BED: they are placed with :meth:`Problem.first_valid_infusions`).

Tumour BED is additive over fractions, ``sum_i b(d_i) - L(T)``, where ``b`` is the per-fraction
BED (computed with :meth:`Problem.tumour_bed`, i.e. by :mod:`rtopt.model.radiobiology`, on
one-fraction rows) and ``L(T)`` a loss depending only on the overall time ``T`` (zero: the
prescription BED has no time factor, see :meth:`Problem.tumour_bed`; the formulation keeps the
term so a time factor can come back without a new model).  OAR BEDs (:func:`rtopt.model.radiobiology.bed_per_fraction` of the spared dose) and dose per
fraction limits are additive or per-fraction too.  For each fraction count ``n`` the calendar
is the one with the shortest overall time (a greedy packing from every possible first day, which
is exact by the exchange argument of :func:`rtopt.problem.calendar.max_fractions_that_fit`), so
``L(T_n)`` is the smallest loss any calendar of ``n`` fractions can have; without repopulation
the calendar does not matter.

* Uniform doses: binaries ``z[n, k]`` = "``n`` fractions of grid dose ``d_k``", ``sum z = 1``;
  tumour BED ``sum (n b(d_k) - L(T_n)) z``, OAR BED ``sum n b_o(delta_o d_k) z <= B_o``,
  OAR dose per fraction ``sum delta_o d_k z <= D_o``, prescription ``tumour BED >= P``.
  Since exactly one ``z`` is 1, a column whose own coefficients break a row can never be 1 and
  is left out; with option ``reduce`` (default true) only the best remaining column of each
  ``n`` is kept (every other column of that ``n`` is dominated).  Both are exact reductions;
  they matter because HiGHS's presolve takes tens of seconds on ~10^5 such columns.
* Per-fraction doses: integers ``m[k]`` = "number of fractions at grid dose ``d_k``" and
  binaries ``u[n]`` = "``n`` fractions" (``sum u = 1``, ``sum m = sum n u[n]``); tumour BED
  ``sum b(d_k) m - sum L(T_n) u``, OAR BED ``sum b_o(delta_o d_k) m <= B_o``, prescription;
  grid doses above an OAR dose-per-fraction cap (or whose single fraction already breaks an OAR
  BED limit) have ``m[k] = 0``.  This is the slot formulation ``y[i, k]`` ("fraction ``i`` gets
  dose ``d_k``", ``m[k] = sum_i y[i, k]``) with its ``n!`` slot permutations aggregated away:
  every BED is a sum over fractions, so only how many fractions get each dose matters.  The
  slot form took over a minute on a 200-point grid with 30 fractions; this one takes seconds.
  The plan gives the doses in non-decreasing order over the calendar.  With several OARs the
  optimum need not be uniform (Saberian, Ghate & Kim 2015 reduce it to an LP in ``sum d`` and
  ``sum d^2``): the tests check the MILP reaches that LP's optimum.

Every coefficient is computed on the grid by rtopt's radiobiology, never re-derived here.
``time_limit_s`` and ``rel_gap`` go to HiGHS (``time_limit``, ``mip_rel_gap``); ``threads`` is
not exposed by scipy.  Termination ``optimal`` means HiGHS proved optimality within
``rel_gap``; ``bound`` is HiGHS's dual bound.  ``exact_for_instance`` is true when the
formulation loses nothing: always, except with an ``[nk]`` table that requires infusions where
the shortest calendar of some fraction count leaves no rule-abiding infusion days (then the
best calendar that does is used, and the claim is dropped).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from rtopt.backends.base import Backend, BackendOutput, SolverOptions, Termination, package_version
from rtopt.model import radiobiology as rb
from rtopt.problem.problem import FEAS_TOL, OBJECTIVES, Plan, Problem

# scipy.optimize is imported inside the search functions (import time; the decoder alone needs
# numpy only).

_CHUNK_SIM_DAYS = 131072
"""Schedule-days simulated between two deadline checks in differential evolution (~0.3 s, plus
the simulator's per-day overhead of ~0.4 ms per horizon day)."""
_SKIPPED_ENERGY = 1e300
"""Energy of a member left unsimulated after the deadline (worse than any penalty)."""

__all__ = ["ScipyDEBackend", "ScipyMilpBackend"]

_DE_PASSTHROUGH = {"strategy": str, "maxiter": int, "popsize": int, "tol": float, "atol": float,
                   "mutation": None, "recombination": float, "init": str}
_DE_OWN = {"calendar": "gaps", "start_window_days": 7, "extra_spacing_days": 3, "repair": True,
           "polish": True, "polish_maxiter": 100, "n_candidates": 5, "penalty_offset": None}
_DE_DEFAULTS = {"maxiter": 300, "popsize": 15, "tol": 1e-3, "mutation": (0.7, 1.5)}
"""DE settings rtopt changes from scipy's: a tighter ``tol`` (see the module docstring) and a
wider ``mutation`` dither, because the NK landscapes are multi-modal (with scipy's (0.5, 1)
lung-sbrt-central converged 6.7 % below the exhaustive optimum, with (0.7, 1.5) 1.7 %)."""


def _version() -> str:
    return package_version("scipy")


def _plan_key(plan: Plan) -> tuple:
    return (plan.fraction_days, tuple(round(d, 9) for d in plan.doses_gy), plan.nk_days)


def _plan_from_rows(d_row: np.ndarray, u_row: np.ndarray) -> Plan:
    return Plan.from_daily(d_row, u_row)


# ====================================================================== shared calendar helpers
def _greedy_chains(problem: Problem, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy calendars from every allowed first day: ``days[s, i]`` is the day of fraction ``i``
    (``-1`` when it does not fit in the horizon) and ``span[s, i]`` its overall time so far."""
    allowed = problem.allowed_days
    S = allowed.size
    days = np.full((S, max(n_max, 1)), -1, dtype=np.int64)
    if S == 0 or n_max <= 0:
        return days, days.copy()
    nxt = np.searchsorted(allowed, allowed + problem.min_interval, side="left")
    nxt = np.append(nxt, S)
    cur = np.arange(S)
    alive = np.ones(S, dtype=bool)
    days[:, 0] = allowed
    for i in range(1, n_max):
        cand = nxt[cur]
        alive &= cand < S
        cur = np.where(alive, cand, cur)
        days[:, i] = np.where(alive, allowed[np.minimum(cur, S - 1)], -1)
    span = np.where(days >= 0, days - allowed[:, None], -1)
    return days, span


# ====================================================================== differential evolution
class _Genome:
    """Layout of the DE vector: named coordinates, bounds and integrality (fixed ones omitted)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.integer: list[bool] = []
        self.fixed: dict[str, float] = {}

    def add(self, name: str, lo: float, hi: float, integer: bool) -> None:
        if hi - lo <= (0.0 if integer else 1e-12):
            self.fixed[name] = float(lo)
            return
        self.names.append(name)
        self.lo.append(float(lo))
        self.hi.append(float(hi))
        self.integer.append(integer)

    def col(self, X: np.ndarray, name: str) -> np.ndarray:
        """Column ``name`` of a ``(P, dims)`` population (constant if fixed)."""
        if name in self.fixed:
            return np.full(X.shape[0], self.fixed[name])
        return X[:, self.names.index(name)]

    def icol(self, X: np.ndarray, name: str) -> np.ndarray:
        return np.rint(self.col(X, name)).astype(np.int64)


class Decoder:
    """Turns DE populations into daily dose and infusion rows (see module docstring)."""

    def __init__(self, problem: Problem, calendar: str, start_window: int, extra_spacing: int,
                 repair: bool):
        self.p = problem
        self.H = H = problem.horizon_days
        self.calendar = calendar
        self.repair = repair
        self.n_lo, self.n_hi = problem.fraction_count_range()
        allowed = problem.allowed_days
        starts = allowed[allowed < max(1, start_window)]
        self.starts = starts if starts.size else allowed[:1]
        self.extra = max(0, int(extra_spacing))
        chains, _ = _greedy_chains(problem, self.n_hi)
        self.chains = chains[np.searchsorted(allowed, self.starts)]  # compact calendar per start
        # next allowed day at or after t (H = none), for t = 0 .. H
        nxt = np.full(H + 1, H, dtype=np.int64)
        for t in range(H - 1, -1, -1):
            nxt[t] = t if problem.day_allowed[t] else nxt[t + 1]
        self.next_allowed = nxt
        self.grid = problem.dose_grid()
        g = _Genome()
        g.add("n", self.n_lo, self.n_hi, True)
        g.add("start", 0, self.starts.size - 1, True)
        mi = problem.min_interval
        if calendar == "regular":
            g.add("spacing", mi, mi + self.extra, True)
        else:
            for i in range(1, self.n_hi):
                g.add(f"gap_{i}", 0, self.extra, True)
        n_dose = 1 if problem.uniform else self.n_hi
        for i in range(n_dose):
            name = "dose" if problem.uniform else f"dose_{i}"
            if problem.continuous_dose:
                g.add(name, problem.d_min, problem.d_max, False)
            else:
                g.add(name, 0, self.grid.size - 1, True)
        r = problem.nk
        self.nk_max = 0 if r is None else r.n_max
        if r is not None and r.n_max > 0:
            g.add("n_infusions", r.n_min, r.n_max, True)
            for j in range(r.n_max):
                g.add(f"infusion_{j + 1}", r.earliest_day, r.latest_day, True)
        self.genome = g
        # dose caps for the repair
        self.cap_pf = problem.d_max
        for o in problem.oars:
            if o.max_dose_per_fraction_gy is not None:
                self.cap_pf = min(self.cap_pf, o.max_dose_per_fraction_gy / o.sparing_factor)
        ns = np.arange(self.n_lo, self.n_hi + 1)
        caps = np.array([problem.max_uniform_dose(int(n)) for n in ns]) if ns.size else ns
        if not problem.continuous_dose and ns.size:
            caps = np.array([self._grid_floor(c) for c in caps])
        self.cap_uniform = caps  # indexed by n - n_lo; nan = no allowed dose

    def _grid_floor(self, d: float) -> float:
        g = self.grid[self.grid <= d * (1 + 1e-12) + 1e-12]
        return float(g.max()) if g.size else float("nan")

    # ------------------------------------------------------------------ decode
    def decode(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Daily dose ``D`` and infusion ``U`` rows of a ``(P, dims)`` population."""
        g, p, H = self.genome, self.p, self.H
        P = X.shape[0]
        n = np.clip(g.icol(X, "n"), self.n_lo, self.n_hi)
        start_idx = np.clip(g.icol(X, "start"), 0, self.starts.size - 1)
        start = self.starts[start_idx]
        days = np.empty((P, max(self.n_hi, 1)), dtype=np.int64)
        days[:, 0] = start
        cur = start
        for i in range(1, self.n_hi):
            step = (g.icol(X, "spacing") if self.calendar == "regular"
                    else p.min_interval + g.icol(X, f"gap_{i}"))
            cur = self.next_allowed[np.minimum(cur + step, H)]
            days[:, i] = cur
        used = (np.arange(days.shape[1])[None, :] < n[:, None]) & (days < H)
        if self.repair:
            # a calendar that overruns the horizon or max_overall_days becomes the compact one
            # from the same first day (when that fits)
            last = np.where(used, days, -1).max(axis=1)
            bad = (used.sum(axis=1) < n) | (last - days[:, 0] > p.max_overall)
            if bad.any():
                comp = self.chains[start_idx]
                ok = (comp[np.arange(P), n - 1] >= 0) & (
                    comp[np.arange(P), n - 1] - comp[:, 0] <= p.max_overall)
                swap = bad & ok
                days = np.where(swap[:, None], np.where(comp >= 0, comp, H), days)
                used = (np.arange(days.shape[1])[None, :] < n[:, None]) & (days < H)
        # doses
        if p.uniform:
            dose = self._dose(g.col(X, "dose"))
            if self.repair:
                cap = self.cap_uniform[n - self.n_lo]
                dose = np.where(np.isfinite(cap) & (dose > cap), cap, dose)
            doses = np.repeat(dose[:, None], days.shape[1], axis=1)
        else:
            doses = np.stack([self._dose(g.col(X, f"dose_{i}")) for i in range(self.n_hi)], axis=1)
            if self.repair and self.cap_pf >= p.d_min:
                cap = self.cap_pf if p.continuous_dose else self._grid_floor(self.cap_pf)
                doses = np.minimum(doses, cap)
        D = np.zeros((P, H))
        rows = np.broadcast_to(np.arange(P)[:, None], days.shape)
        D[rows[used], days[used]] = doses[used]
        if self.repair and not p.uniform:
            D = self._scale_to_oar_bed(D)
        U = np.zeros((P, H))
        if self.nk_max > 0:
            self._infusions(X, D, U)
        return D, U

    def _scale_to_oar_bed(self, D: np.ndarray, iterations: int = 40) -> np.ndarray:
        """Scale the doses of rows that break an OAR BED limit by the largest common factor
        that meets every limit (bisection on :meth:`Problem.oar_bed`), then snap down to the
        grid; doses that would fall below ``d_min`` stay at ``d_min`` (the evaluation judges)."""
        p = self.p
        lims = np.array([np.inf if o.max_bed_gy is None else o.max_bed_gy for o in p.oars])
        if not np.isfinite(lims).any():
            return D
        over = (p.oar_bed(D) > lims).any(axis=1)
        if not over.any():
            return D
        Dv = D[over]
        lo, hi = np.zeros(len(Dv)), np.ones(len(Dv))
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            ok = (p.oar_bed(Dv * mid[:, None]) <= lims).all(axis=1)
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        Dv = Dv * lo[:, None]
        if not p.continuous_dose:
            # snap down to the grid (multiples of the step, :meth:`Problem.dose_grid`)
            g = self.grid
            idx = np.searchsorted(g, Dv + 1e-9, side="right") - 1
            Dv = np.where(Dv > 0, g[np.maximum(idx, 0)], 0.0)
        Dv = np.where(D[over] > 0, np.maximum(Dv, p.d_min), 0.0)
        D = D.copy()
        D[over] = Dv
        return D

    def _dose(self, col: np.ndarray) -> np.ndarray:
        if self.p.continuous_dose:
            return np.clip(col, self.p.d_min, self.p.d_max)
        return self.grid[np.clip(np.rint(col).astype(np.int64), 0, self.grid.size - 1)]

    def _infusions(self, X: np.ndarray, D: np.ndarray, U: np.ndarray) -> None:
        g, r, H = self.genome, self.p.nk, self.H
        P = X.shape[0]
        cnt = np.clip(g.icol(X, "n_infusions"), r.n_min, r.n_max)
        raw = np.stack([g.icol(X, f"infusion_{j + 1}") for j in range(r.n_max)], axis=1)
        raw = np.where(np.arange(r.n_max)[None, :] < cnt[:, None], raw, np.iinfo(np.int64).max)
        raw = np.sort(raw, axis=1)
        if self.repair:
            # valid[p, t]: t in the window and no fraction on days t+1 .. t+m (infusion_day_ok)
            cs = np.concatenate([np.zeros((P, 1)), np.cumsum(D > 0, axis=1)], axis=1)
            t = np.arange(H)
            m = r.min_days_before_next_fraction
            later = cs[:, np.minimum(t + m + 1, H)] - cs[:, t + 1]
            valid = (t >= r.earliest_day) & (t <= r.latest_day) & (later == 0)
            idx = np.where(valid, t, H)
            nv = np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]
            nv = np.concatenate([nv, np.full((P, 1), H)], axis=1)
        prev = np.full(P, -10 ** 9, dtype=np.int64)
        rows = np.arange(P)
        for j in range(r.n_max):
            use = j < cnt
            want = np.minimum(np.maximum(raw[:, j], prev + r.min_interval_days), H)
            day = want
            if self.repair:
                day = nv[rows, want]
                day = np.where(day < H, day, want)  # nothing valid: keep it; evaluation flags it
            day = np.minimum(day, H - 1)
            np.add.at(U, (rows[use], day[use]), 1.0)
            prev = np.where(use, day, prev)


class ScipyDEBackend(Backend):
    name = "scipy_de"
    description = ("scipy differential evolution with integrality over fraction count, calendar, "
                   "doses and infusion days; one vectorised evaluation per generation")
    objectives = OBJECTIVES
    supports_costs = True
    supports_outcome_limits = True
    supports_tumour_dose_ratio = True
    supports_nk = True
    supports_dvh = True  # penalised through Problem.evaluate's violation; caps include them
    supports_per_fraction = True
    supports_continuous_dose = True
    global_optimality = False
    requires = ("scipy",)
    guarantee = ("heuristic: a verified feasible plan when it finds one, no optimality claim and "
                 "no bound; the best few distinct feasible schedules seen are returned")

    def check(self, problem: Problem) -> tuple[bool, str]:
        ok, why = super().check(problem)
        if not ok:
            return ok, why
        if problem.allowed_days.size == 0:
            return False, f"{self.name}: no allowed fraction day in the horizon"
        return True, ""

    @staticmethod
    def _options(opt: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        unknown = sorted(set(opt) - set(_DE_PASSTHROUGH) - set(_DE_OWN))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} (known: "
                             f"{', '.join(sorted({**_DE_PASSTHROUGH, **_DE_OWN}))})")
        de = dict(_DE_DEFAULTS)
        de["popsize"] = None  # decided in _run once the genome size is known
        for k, typ in _DE_PASSTHROUGH.items():
            if k in opt:
                v = opt[k]
                if k == "mutation":
                    v = tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)
                de[k] = typ(v) if typ else v
        own = {k: opt.get(k, v) for k, v in _DE_OWN.items()}
        if own["calendar"] not in ("gaps", "regular"):
            raise ValueError(f"calendar must be 'gaps' or 'regular', got {own['calendar']!r}")
        return de, own

    @staticmethod
    def _feasible_upper_bound(problem: Problem) -> float:
        """Upper bound of ``-objective`` over feasible schedules (see module docstring)."""
        c0 = 0.0
        b = problem.biology
        w = problem.weights.get("tumour_log_kill", 0.0)
        if w and b.potential_doubling_days is not None:
            gain = float(rb.repopulation_log_gain(problem.max_overall, b.potential_doubling_days,
                                                  b.repopulation_kickoff_days))
            c0 += w * gain / math.log(10.0)
        # costs lower the objective by at most their value at the most fractions and days
        c0 += (problem.cost_per_fraction * problem.n_max
               + problem.cost_per_overall_day * problem.max_overall)
        return c0

    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:
        name, version = "scipy.optimize.differential_evolution", _version()
        t0 = time.perf_counter()
        try:
            de_opt, own = self._options(dict(options.options))
        except (TypeError, ValueError) as e:
            return BackendOutput((), Termination.ERROR, message=f"scipy_de options: {e}",
                                 solver_name=name, solver_version=version)
        n_lo, n_hi = problem.fraction_count_range()
        if n_hi < n_lo:
            return BackendOutput((), Termination.INFEASIBLE, message="no fraction count fits the "
                                 "calendar", solver_name=name, solver_version=version)
        try:
            return self._run(problem, options, de_opt, own, t0, name, version)
        except (FloatingPointError, ArithmeticError, np.linalg.LinAlgError) as e:
            return BackendOutput((), Termination.NUMERICAL, message=f"{type(e).__name__}: {e}",
                                 solver_name=name, solver_version=version)
        except Exception as e:  # a solver library fault: report it, never raise
            return BackendOutput((), Termination.ERROR,
                                 message=f"{type(e).__name__}: {e}".splitlines()[0][:500],
                                 solver_name=name, solver_version=version)

    def _run(self, problem, options, de_opt, own, t0, name, version) -> BackendOutput:
        from scipy.optimize import differential_evolution

        dec = Decoder(problem, own["calendar"], int(own["start_window_days"]),
                       int(own["extra_spacing_days"]), bool(own["repair"]))
        g = dec.genome
        c0 = (float(own["penalty_offset"]) if own["penalty_offset"] is not None
              else self._feasible_upper_bound(problem))
        n_keep = max(1, int(own["n_candidates"]))
        archive: dict[tuple, tuple[float, Plan]] = {}
        least_bad: list[Any] = [np.inf, None]
        stats = {"evaluations": 0}
        deadline = t0 + options.time_limit_s
        stopped = {"time": False}
        # Members are simulated in chunks of about _CHUNK_SIM_DAYS schedule-days (a fraction of
        # a second) with the deadline checked between chunks: a generation on a long horizon
        # can take longer than the whole limit.  Past the deadline the remaining members get a
        # worse-than-any energy and are not simulated, so DE ends the generation at once and
        # the callback stops it.
        chunk = max(1, _CHUNK_SIM_DAYS // problem.horizon_days)

        def energies(X: np.ndarray) -> np.ndarray:
            D, U = dec.decode(X)
            E = np.full(len(D), _SKIPPED_ENERGY)
            for a in range(0, len(D), chunk):
                if time.perf_counter() > deadline and (archive or least_bad[1] is not None):
                    stopped["time"] = True
                    break
                Dc, Uc = D[a:a + chunk], U[a:a + chunk]
                ev = problem.evaluate(Dc, Uc)
                obj = ev.objective
                good = ev.feasible & np.isfinite(obj)
                E[a:a + chunk] = np.where(good, -np.where(good, obj, 0.0),
                                          c0 + np.maximum(ev.violation, FEAS_TOL)
                                          + (~np.isfinite(obj)))
                stats["evaluations"] += len(Dc)
                self._remember(archive, least_bad, Dc, Uc, obj, good, ev.violation, n_keep)
            return E

        if not g.names:  # every decision fixed: a single schedule
            energies(np.zeros((1, 0)))
            term, msg = Termination.COMPLETED, "every decision is fixed"
            de_info: dict[str, Any] = {}
        else:
            def func(x: np.ndarray) -> np.ndarray:
                # vectorised DE passes x with shape (dims, S)
                return energies(x.T if x.ndim == 2 else x[None, :])

            def callback(intermediate_result):  # noqa: ARG001 - scipy's signature
                if time.perf_counter() > deadline:
                    stopped["time"] = True
                    return True
                return False

            if de_opt.get("popsize") is None:
                # scipy's population is popsize * dims members and DE spends Python time per
                # member; cap the default at ~400 members (still >= 5 per dimension)
                de_opt = {**de_opt, "popsize": max(5, min(15, math.ceil(400 / len(g.names))))}
            extras_pop = int(de_opt["popsize"]) * len(g.names)
            if not problem.uniform and "init" not in de_opt:
                de_opt = {**de_opt, "init": self._initial_population(
                    g, extras_pop, np.random.default_rng([options.seed, 1]))}
            res = differential_evolution(
                func, list(zip(g.lo, g.hi)), integrality=np.array(g.integer),
                vectorized=True, updating="deferred", polish=False, callback=callback,
                rng=np.random.default_rng(options.seed), **de_opt)
            if stopped["time"] or time.perf_counter() > deadline:
                term = Termination.TIME_LIMIT
            elif res.success:
                term = Termination.COMPLETED
            elif "iterations" in str(res.message).lower():
                term = Termination.ITERATION_LIMIT
            else:
                term = Termination.COMPLETED
            msg = str(res.message)
            de_info = {"nit": int(res.nit), "nfev_calls": int(res.nfev), "dims": len(g.names),
                       "population": extras_pop}

        extras: dict[str, Any] = {"exact_for_instance": False, "calendar": own["calendar"],
                                  "repair": bool(own["repair"]), **de_info,
                                  "evaluations": stats["evaluations"]}
        ranked = sorted(archive.values(), key=lambda t: -t[0])
        if not ranked:
            plans = (least_bad[1],) if least_bad[1] is not None else ()
            return BackendOutput(plans, term if plans else Termination.NO_SOLUTION, None, None,
                                 message="no feasible schedule found; the least-violating one "
                                 f"is returned ({msg})", solver_name=name, solver_version=version,
                                 extras=extras)
        de_best = ranked[0][0]
        extras["de_best_objective"] = de_best
        in_time = time.perf_counter() < t0 + options.time_limit_s
        if problem.continuous_dose and own["polish"] and in_time:
            polished = self._polish(problem, ranked[0][1], int(own["polish_maxiter"]),
                                    t0 + options.time_limit_s)
            if polished is not None and polished[0] > de_best:
                extras["polish_gain"] = polished[0] - de_best
                key = _plan_key(polished[1])
                if key not in archive:
                    ranked.insert(0, polished)
        plans = tuple(p for _, p in ranked[:n_keep])
        return BackendOutput(plans, term, float(ranked[0][0]), None, message=msg,
                             solver_name=name, solver_version=version, extras=extras)

    @staticmethod
    def _initial_population(g: _Genome, size: int, rng: np.random.Generator) -> np.ndarray:
        """Latin hypercube population in which a third of the members have equal per-fraction
        doses: uniform schedules are a thin subset of the per-fraction space that random
        sampling misses, and they are often optimal or close to it (e.g. the lung example)."""
        from scipy.stats import qmc

        lo, hi = np.array(g.lo), np.array(g.hi)
        X = qmc.scale(qmc.LatinHypercube(d=len(g.names), rng=rng).random(size), lo, hi)
        cols = [i for i, nm in enumerate(g.names) if nm.startswith("dose_")]
        if len(cols) > 1:
            rows = np.arange(0, size, 3)
            X[np.ix_(rows, cols)] = X[rows, cols[0]][:, None]
        return X

    @staticmethod
    def _remember(archive, least_bad, D, U, obj, good, viol, n_keep) -> None:
        """Keep the best ``n_keep`` distinct feasible schedules (and the least-violating one)."""
        if good.any():
            idx = np.flatnonzero(good)
            worst = min(t[0] for t in archive.values()) if len(archive) >= n_keep else -np.inf
            idx = idx[obj[idx] > worst]
            for i in idx[np.argsort(-obj[idx], kind="stable")][:n_keep]:
                plan = _plan_from_rows(D[i], U[i])
                archive.setdefault(_plan_key(plan), (float(obj[i]), plan))
            if len(archive) > n_keep:
                for k, _ in sorted(archive.items(), key=lambda kv: -kv[1][0])[n_keep:]:
                    del archive[k]
        else:
            i = int(np.argmin(viol))
            if viol[i] < least_bad[0]:
                least_bad[0], least_bad[1] = float(viol[i]), _plan_from_rows(D[i], U[i])

    @staticmethod
    def _polish(problem: Problem, plan: Plan, maxiter: int,
                deadline: float) -> tuple[float, Plan] | None:
        """SLSQP on the continuous dose(s) of ``plan`` with days and infusions fixed.

        Objective and constraint gradients are forward differences computed in ONE vectorised
        :meth:`Problem.evaluate` call per point (the point and one row per dose variable); the
        constraints are the scaled slacks of the clinical limits and the dose range.  Returns the
        best feasible point seen (also when the deadline interrupts SLSQP), or None.
        """
        from scipy.optimize import minimize

        H = problem.horizon_days
        days = np.array(plan.fraction_days, dtype=int)
        _, u_row = plan.daily(H)
        uniform = problem.uniform
        x0 = np.array([plan.doses_gy[0]] if uniform else plan.doses_gy, dtype=float)
        nx = x0.size
        lo, hi = problem.d_min, problem.d_max
        cache: dict[bytes, Any] = {}
        best: list[Any] = [-np.inf, None]

        class _Timeout(Exception):
            pass

        def point(x):
            x = np.clip(np.asarray(x, dtype=float), lo, hi)
            key = x.tobytes()
            if key in cache:
                return cache[key]
            if time.perf_counter() > deadline:
                raise _Timeout
            h = 1e-5 * np.maximum(1.0, np.abs(x))
            h = np.where(x + h > hi, -h, h)  # backward difference at the upper bound
            X = np.repeat(x[None, :], nx + 1, axis=0)
            X[1:] += np.diag(h)
            D = np.zeros((nx + 1, H))
            D[:, days] = X if not uniform else X[:, :1]
            e = problem.evaluate(D, np.repeat(u_row[None, :], nx + 1, axis=0))
            cons = []
            for nm, (val, lim, sense, kind) in e.slacks.items():
                if kind == "limit" or nm.startswith("dose_per_fraction"):
                    sl = (val - lim) if sense == ">=" else (lim - val)
                    cons.append(sl / max(1.0, abs(lim)))
            C = np.array(cons)  # (n_cons, nx + 1)
            f = e.objective
            out = (float(f[0]), (f[1:] - f[0]) / h, C[:, 0], (C[:, 1:] - C[:, :1]) / h[None, :])
            cache[key] = out
            if e.feasible[0] and np.isfinite(f[0]) and f[0] > best[0]:
                best[0], best[1] = float(f[0]), x.copy()
            return out

        try:
            scale = max(1.0, abs(point(x0)[0]))
            with np.errstate(all="ignore"):
                minimize(lambda x: -point(x)[0] / scale, x0, method="SLSQP",
                         jac=lambda x: -point(x)[1] / scale, bounds=[(lo, hi)] * nx,
                         constraints=[{"type": "ineq", "fun": lambda x: point(x)[2],
                                       "jac": lambda x: point(x)[3]}],
                         options={"maxiter": maxiter, "ftol": 1e-12})
        except _Timeout:
            pass
        except Exception:  # the polish is optional: keep DE's plan
            pass
        if best[1] is None:
            return None
        x = best[1]
        doses = (float(x[0]),) * len(days) if uniform else tuple(float(v) for v in x)
        return best[0], Plan(tuple(days), doses, plan.nk_days)


# ====================================================================== MILP
class ScipyMilpBackend(Backend):
    name = "scipy_milp"
    description = "exact MILP of the classic tumour-BED problem on the dose grid (scipy + HiGHS)"
    objectives = ("tumour_bed",)
    supports_nk = False  # declines NK objectives; with [nk] and tumour BED, infusions placed by first_valid_infusions
    supports_per_fraction = True
    supports_continuous_dose = False
    global_optimality = True
    requires = ("scipy",)
    guarantee = ("exact optimum of tumour BED over the dose grid, every fraction count and the "
                 "shortest calendar of each count (HiGHS proves optimality within rel_gap; the "
                 "dual bound is reported); exact for the instance unless NK rules force a "
                 "longer calendar (extras.exact_for_instance)")
    MAX_BINARIES = 2_000_000  # dense coefficient rows of this length still fit in memory

    def check(self, problem: Problem) -> tuple[bool, str]:
        ok, why = super().check(problem)
        if not ok:
            return ok, why
        k = problem.dose_grid().size
        n_lo, n_hi = problem.fraction_count_range()
        size = max(0, n_hi - n_lo + 1) * k if problem.uniform else k + max(0, n_hi - n_lo + 1)
        if size > self.MAX_BINARIES:
            return False, (f"{self.name}: {size} variables ({k} grid doses) exceed "
                           f"{self.MAX_BINARIES}; use a coarser dose_step_gy")
        return True, ""

    # ------------------------------------------------------------------ calendars
    @staticmethod
    def calendars(problem: Problem, n_lo: int, n_hi: int) -> tuple[dict[int, tuple], bool]:
        """Per fraction count: ``(days, nk_days, loss_gy)`` of the shortest calendar that admits
        rule-abiding infusions, and whether every count got its shortest possible calendar."""
        days, span = _greedy_chains(problem, n_hi)
        out: dict[int, tuple] = {}
        exact = True
        for n in range(max(n_lo, 1), n_hi + 1):
            T = span[:, n - 1]
            ok = (T >= 0) & (T <= problem.max_overall)
            if not ok.any():
                continue
            order = np.flatnonzero(ok)[np.argsort(T[ok], kind="stable")]
            # Problem.tumour_bed has no time factor (the clinical convention), so no calendar
            # loses BED; the shortest calendar is kept as the natural clinical choice.
            loss = np.zeros(order.shape)
            for s, l_s in zip(order, loss):
                cal = tuple(int(x) for x in days[s, :n])
                nk = problem.first_valid_infusions(cal)
                if nk is not None:
                    out[n] = (cal, nk, float(l_s))
                    exact &= bool(l_s <= loss[0] + 1e-12)
                    break
            else:
                exact = False
        return out, exact

    # ------------------------------------------------------------------ solve
    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:
        name, version = "scipy.optimize.milp (HiGHS)", _version()
        try:
            return self._run(problem, options, name, version)
        except (FloatingPointError, ArithmeticError, np.linalg.LinAlgError) as e:
            return BackendOutput((), Termination.NUMERICAL, message=f"{type(e).__name__}: {e}",
                                 solver_name=name, solver_version=version)
        except Exception as e:  # a solver library fault: report it, never raise
            return BackendOutput((), Termination.ERROR,
                                 message=f"{type(e).__name__}: {e}".splitlines()[0][:500],
                                 solver_name=name, solver_version=version)

    def _coefficients(self, problem: Problem, grid: np.ndarray):
        """Per grid dose: tumour BED of one fraction, OAR BED of one fraction, OAR dose."""
        H = problem.horizon_days
        rows = np.zeros((grid.size, H))
        rows[:, 0] = grid
        b = np.asarray(problem.tumour_bed(rows), dtype=float)  # one fraction: T = 0, no loss
        oar_bed = [np.asarray(rb.bed_per_fraction(rb.oar_doses(grid, o.sparing_factor),
                                                  o.alpha_beta_gy), dtype=float)
                   for o in problem.oars]
        oar_dose = [np.asarray(rb.oar_doses(grid, o.sparing_factor), dtype=float)
                    for o in problem.oars]
        return b, oar_bed, oar_dose

    def _run(self, problem: Problem, options: SolverOptions, name: str,
             version: str) -> BackendOutput:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_array

        t0 = time.perf_counter()
        w = problem.weights.get("tumour_bed", 0.0)
        opt = dict(options.options)
        unknown = sorted(set(opt) - {"reduce", "presolve"})
        if unknown:
            return BackendOutput((), Termination.ERROR, message=f"scipy_milp options: unknown "
                                 f"option(s) {', '.join(unknown)} (known: presolve, reduce)",
                                 solver_name=name, solver_version=version)
        reduce = bool(opt.get("reduce", True))
        grid = problem.dose_grid()
        n_lo, n_hi = problem.fraction_count_range()
        cals, exact = self.calendars(problem, n_lo, n_hi)
        ns = sorted(cals)
        extras: dict[str, Any] = {"formulation": "uniform" if problem.uniform else "per_fraction",
                                  "grid_doses": int(grid.size), "fraction_counts": ns}
        if not ns:
            return BackendOutput((), Termination.INFEASIBLE, message="no fraction count has a "
                                 "calendar (with rule-abiding infusions) that fits",
                                 solver_name=name, solver_version=version,
                                 extras={**extras, "exact_for_instance": exact})
        b, oar_bed, oar_dose = self._coefficients(problem, grid)
        loss = np.array([cals[n][2] for n in ns])
        K = grid.size
        tol = 1e-9  # relative slack when removing grid doses that break a limit on their own
        lo: list[float] = []
        hi: list[float] = []
        if problem.uniform:
            nv = np.array(ns, dtype=float)[:, None]
            tum = (nv * b[None, :] - loss[:, None]).ravel()  # z[n, k], row-major
            nvar = tum.size
            integrality = np.ones(nvar)
            ub = np.ones(nvar)
            rows = [np.ones(nvar), tum]
            lo += [1.0, problem.min_bed]
            hi += [1.0, np.inf]
            # exactly one z is 1, so a z whose own coefficient breaks a limit must be 0: fixing
            # it removes nothing feasible and makes the LP relaxation integral (fast proofs)
            ub[tum < problem.min_bed - tol * max(1.0, abs(problem.min_bed))] = 0.0
            for o, ob, od in zip(problem.oars, oar_bed, oar_dose):
                if o.max_bed_gy is not None:
                    row = (nv * ob[None, :]).ravel()
                    rows.append(row); lo.append(-np.inf); hi.append(o.max_bed_gy)
                    ub[row > o.max_bed_gy * (1 + tol)] = 0.0
                if o.max_dose_per_fraction_gy is not None:
                    row = np.tile(od, len(ns))
                    rows.append(row); lo.append(-np.inf); hi.append(o.max_dose_per_fraction_gy)
                    ub[row > o.max_dose_per_fraction_gy * (1 + tol)] = 0.0
            # Keep only columns that can be 1.  With ``reduce`` (option, default true) also keep
            # only the best column of each fraction count: any feasible column is feasible alone,
            # so a column with a lower objective in the same count is dominated.  The model stays
            # exact either way; HiGHS's presolve is slow on tens of thousands of such columns.
            keep = ub > 0
            if reduce:
                blk = np.where(keep, tum, -np.inf).reshape(len(ns), K)
                best = np.argmax(blk, axis=1)
                keep = np.zeros_like(keep)
                ok = np.isfinite(blk[np.arange(len(ns)), best])
                keep[(np.arange(len(ns)) * K + best)[ok]] = True
            cols = np.flatnonzero(keep)
            if cols.size == 0:
                return BackendOutput((), Termination.INFEASIBLE, message="no (fraction count, "
                                     "grid dose) pair meets the prescription and OAR limits",
                                     solver_name=name, solver_version=version,
                                     extras={**extras, "exact_for_instance": exact})
            tum, ub, nvar = tum[cols], ub[cols], cols.size
            integrality = np.ones(nvar)
            A = csr_array(np.array(rows)[:, cols])
        else:
            # m[k]: number of fractions at grid dose k (integer); u[n]: "n fractions" (binary)
            tum = np.concatenate([b, -loss])
            nvar = K + len(ns)
            integrality = np.ones(nvar)
            ub = np.concatenate([np.full(K, float(max(ns))), np.ones(len(ns))])
            for o, od in zip(problem.oars, oar_dose):
                if o.max_dose_per_fraction_gy is not None:
                    ub[:K][od > o.max_dose_per_fraction_gy * (1 + tol)] = 0.0
            rows = [np.concatenate([np.ones(K), -np.array(ns, dtype=float)]),  # sum m = n
                    np.concatenate([np.zeros(K), np.ones(len(ns))]),            # one count
                    tum]                                                        # prescription
            lo += [0.0, 1.0, problem.min_bed]
            hi += [0.0, 1.0, np.inf]
            for o, ob in zip(problem.oars, oar_bed):
                if o.max_bed_gy is not None:
                    rows.append(np.concatenate([ob, np.zeros(len(ns))]))
                    lo.append(-np.inf); hi.append(o.max_bed_gy)
                    # one fraction at dose k alone breaks the limit: no fraction can have it
                    ub[:K][ob > o.max_bed_gy * (1 + tol)] = 0.0
            A = csr_array(np.array(rows))
        c = -w * tum
        extras["variables"] = int(nvar)
        extras["constraints"] = int(A.shape[0])
        time_left = max(1e-3, options.time_limit_s - (time.perf_counter() - t0))
        res = milp(c, integrality=integrality, bounds=Bounds(np.zeros(nvar), ub),
                   constraints=LinearConstraint(A, np.array(lo), np.array(hi)),
                   options={"time_limit": time_left, "mip_rel_gap": float(options.rel_gap),
                            "disp": False, "presolve": bool(opt.get("presolve", True))})
        extras.update({"highs_status": int(res.status), "mip_gap": getattr(res, "mip_gap", None),
                       "mip_node_count": getattr(res, "mip_node_count", None)})
        msg = str(res.message)
        if res.status == 2:
            return BackendOutput((), Termination.INFEASIBLE, message=msg, solver_name=name,
                                 solver_version=version,
                                 extras={**extras, "exact_for_instance": exact})
        if res.x is None:
            term = (Termination.NO_SOLUTION if res.status == 1 else
                    Termination.ERROR if res.status == 3 else Termination.NUMERICAL)
            return BackendOutput((), term, message=msg, solver_name=name,
                                 solver_version=version, extras=extras)
        x = np.rint(np.asarray(res.x)).astype(np.int64)
        if problem.uniform:
            j = int(cols[int(np.argmax(x))])
            n, k = ns[j // K], j % K
            days, nk_days, _ = cals[n]
            plan = Plan.uniform(days, float(grid[k]), nk_days)
        else:
            n = ns[int(np.argmax(x[K:]))]
            # non-decreasing doses over the calendar (the order does not change any BED)
            doses = tuple(float(d) for d in np.repeat(grid, np.maximum(x[:K], 0)))
            days, nk_days, _ = cals[n]
            plan = Plan(days, doses, nk_days)
        claimed = -float(res.fun) if res.fun is not None else None
        dual = getattr(res, "mip_dual_bound", None)
        bound = -float(dual) if dual is not None and np.isfinite(dual) else claimed
        if res.status == 0:
            term = Termination.OPTIMAL
        elif res.status == 1:
            term = (Termination.TIME_LIMIT if "time" in msg.lower()
                    else Termination.ITERATION_LIMIT)
        else:
            term = Termination.NUMERICAL
        extras["exact_for_instance"] = bool(exact and term == Termination.OPTIMAL)
        return BackendOutput((plan,), term, claimed, bound, message=msg, solver_name=name,
                             solver_version=version, extras=extras)
