"""``exhaustive``: the reference back-end, exact over a documented structured space.

The space
---------
* **Fraction count** ``n``: every value the instance and the calendar allow.
* **Dose**: uniform over the fractions, every point of the dose grid; with a continuous dose
  (``dose_step_gy = 0``) a grid of ``continuous_step_gy`` (option, default 0.1 Gy) plus, for each
  ``n``, the largest dose the OAR limits allow (where the classic tumour-BED optimum lies).
* **Calendar**: regular patterns.  A start day ``s`` among the allowed days of the first
  ``start_window_days`` days (option, default 7) and a spacing ``k`` from ``min_interval_days``
  to ``min_interval_days + extra_spacing_days`` (option, default 3): each fraction falls on the
  first allowed day at least ``k`` days after the previous one (so weekends are skipped).
* **NK infusions**: every set of infusion days in ``[earliest_day, latest_day]`` (on a
  ``nk_day_step`` grid, option, default 1) with a count in the instance's range that obeys the
  spacing and the no-fraction-after-infusion rule.

Schedules that break a radiobiological limit (prescription, OAR BED, dose per fraction) are
removed in closed form before any simulation.  With NK cells, the
simulator is run once per schedule and candidate infusion day, and every infusion set is scored
by superposition (:class:`rtopt.model.simulator.InfusionKernels`): the NK compartments are linear in
the infusions and hypoxia does not depend on them, so this is exact, not an approximation.

Bounded time and memory
-----------------------
Before building anything the back-end estimates the size of the space (schedules, infusion
sets) and the memory it needs; above the memory budget (option ``memory_limit_mb``, default
4096 MiB, or ``rtopt solve --memory-limit``) it declines with a message naming the settings
that make the space large.  Within the budget it works in blocks sized to the budget and
checks the deadline in every loop: at the time limit it returns the best plan found so far
(termination ``time_limit``).  The overshoot is at most one block (about a second) plus the
verification of the returned plan; the first schedule is always scored, so a limit shorter than
the set-up still returns a plan.

Guarantee: the returned plan is optimal over this space (termination ``optimal``); it is
optimal for the instance when the instance's own decision space adds nothing the objective can
use (uniform doses and the tumour-BED objective, which has no time factor).
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import numpy as np

from rtopt.backends.base import Backend, BackendOutput, SolverOptions, Termination, package_version
from rtopt.common.errors import ProblemDeclined, RtoptError
from rtopt.model.radiobiology import POPULATION_Z
from rtopt.model.simulator import infusion_kernels
from rtopt.problem.problem import OBJECTIVES, SIMULATION_METRICS, Plan, Problem

__all__ = ["ExhaustiveBackend", "DEFAULT_MEMORY_LIMIT_MB", "memory_budget_bytes", "SpaceEstimate"]

DEFAULT_MEMORY_LIMIT_MB = 4096
"""Memory budget of a search when neither the profile nor the CLI sets ``memory_limit_mb``."""

_ROW_OVERHEAD = 200
"""Bytes per stored schedule besides its daily dose row (plan tuple, objective, list slot)."""
_SET_OVERHEAD = 120
"""Bytes per stored infusion set besides its row of the incidence matrix (tuple, list slot)."""
_BLOCK_SIM_DAYS = 524288
"""Simulated schedule-days per kernel block (about 1 s on one core): bounds the overshoot.
Smaller blocks cost speed (lung: 1.5 s with unbounded blocks, 2.2 s with these, 3.9 s with a
quarter of them, on a loaded 2-core VM)."""
_POPULATION_WORK = 1_000_000
"""Fraction x population-node evaluations per scoring chunk when local control is needed."""
_SET_CHUNK = 16384
"""Infusion sets scored per step (about 0.25 s): bounds the overshoot."""
_SIM_ROW_ARRAYS = 8
"""Arrays of one horizon row each that a kernel simulation holds per simulated schedule
(doses, infusions, recorded activity and hypoxia, and the simulator's temporaries)."""


def memory_budget_bytes(options: SolverOptions) -> int:
    """The memory budget of a search (``memory_limit_mb`` option, MiB) in bytes."""
    mb = options.options.get("memory_limit_mb", DEFAULT_MEMORY_LIMIT_MB)
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not math.isfinite(mb) or mb <= 0:
        raise RtoptError(f"option memory_limit_mb must be a number of MiB > 0, got {mb!r:.40}")
    return int(mb * 2 ** 20)


def _int_option(opt: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = opt.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RtoptError(f"exhaustive: option {key} must be a whole number in [{lo}, {hi}], "
                         f"got {v!r:.40}")
    return v


def _float_option(opt: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = opt.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not lo <= v <= hi:
        raise RtoptError(f"exhaustive: option {key} must be a number in [{lo:g}, {hi:g}] Gy, "
                         f"got {v!r:.40}")
    return float(v)


class SpaceEstimate:
    """Size of the exhaustive search space and the memory it needs, computed without building it.

    Attributes: ``schedules`` (upper bound: calendars x doses before the closed-form limits),
    ``infusion_sets``, ``candidate_days``, ``bytes`` (peak estimate) and ``evaluations``.
    """

    def __init__(self, problem: Problem, opts: dict[str, Any], budget: int):
        self.horizon = H = problem.horizon_days
        self.budget = budget
        n_lo, n_hi = problem.fraction_count_range()
        self.n_range = (n_lo, n_hi)
        prefixes = ExhaustiveBackend._prefixes(problem, opts["start_window"], opts["extra_spacing"],
                                               n_hi)
        self.schedules = 0
        for n in range(n_lo, n_hi + 1):
            cals = sum(1 for seq in prefixes if len(seq) >= n and seq[n - 1] - seq[0]
                       <= problem.max_overall)
            if cals:
                self.schedules += cals * ExhaustiveBackend.dose_count(problem, n,
                                                                      opts["cont_step"])
        self.infusion_sets, self.candidate_days = ExhaustiveBackend.infusion_set_count(
            problem, opts["day_step"])
        K = self.candidate_days
        store = self.schedules * (H * 8 + _ROW_OVERHEAD)
        sets = self.infusion_sets * (K + _SET_OVERHEAD)
        self.bytes = store + sets
        self.evaluations = self.schedules * max(1, self.infusion_sets)

    @property
    def fits(self) -> bool:
        """Whether the stored space takes at most half the budget (blocks use the rest)."""
        return self.bytes <= self.budget // 2

    def describe(self) -> str:
        return (f"~{self.schedules:,} schedules x {self.infusion_sets:,} infusion set(s) over "
                f"{self.horizon} days need ~{_gib(self.bytes)} GiB")


def _gib(b: float) -> str:
    return f"{b / 2 ** 30:.3g}"


class ExhaustiveBackend(Backend):
    name = "exhaustive"
    description = "vectorised enumeration of uniform doses x regular calendars x infusion days"
    objectives = OBJECTIVES
    supports_costs = True
    supports_nk = True
    supports_per_fraction = True  # searches the uniform-dose subspace; says so in the result
    supports_outcome_limits = True
    supports_tumour_dose_ratio = True
    supports_dvh = True  # limits are checked by Problem.evaluate; max_uniform_dose includes them
    supports_continuous_dose = True
    global_optimality = True
    guarantee = ("exact optimum over the structured space (uniform doses on the grid, regular "
                 "calendars, all infusion-day sets); a feasible plan for the full instance")

    # ------------------------------------------------------------------ space
    @staticmethod
    def _prefixes(problem: Problem, start_window: int, extra_spacing: int,
                  n_max: int) -> list[tuple[int, ...]]:
        """Greedy day sequences (up to ``n_max`` days) per start day and spacing; the calendar
        with ``n`` fractions of a (start, spacing) pair is the first ``n`` days of its sequence."""
        allowed = problem.allowed_days
        out = []
        for s in allowed[allowed < start_window]:
            for k in range(problem.min_interval, problem.min_interval + extra_spacing + 1):
                days = [int(s)]
                while len(days) < n_max and days[-1] - days[0] <= problem.max_overall:
                    j = int(np.searchsorted(allowed, days[-1] + k))
                    if j >= allowed.size:
                        break
                    days.append(int(allowed[j]))
                out.append(tuple(days))
        return out

    @staticmethod
    def calendars(problem: Problem, n: int, start_window: int, extra_spacing: int) -> list[tuple[int, ...]]:
        """Regular fraction calendars with ``n`` fractions (see module docstring)."""
        out = set()
        for seq in ExhaustiveBackend._prefixes(problem, start_window, extra_spacing, n):
            if len(seq) >= n and seq[n - 1] - seq[0] <= problem.max_overall:
                out.add(seq[:n])
        return sorted(out)

    @staticmethod
    def dose_count(problem: Problem, n: int, continuous_step: float) -> int:
        """Number of candidate doses for ``n`` fractions (at least :meth:`doses` gives), without
        building the grid."""
        hi = min(problem.d_max, problem.max_uniform_dose(n))
        if not hi >= problem.d_min * (1 - 1e-12):
            return 0
        if problem.continuous_dose:
            return int((hi - problem.d_min) // continuous_step) + 2
        step = problem.dose_step
        k0 = math.ceil(problem.d_min / step - 1e-9)
        k1 = math.floor(hi * (1 + 1e-12) / step + 1e-9)
        return max(0, k1 - k0 + 1)

    @staticmethod
    def doses(problem: Problem, n: int, continuous_step: float) -> np.ndarray:
        """Candidate uniform doses for ``n`` fractions, limits applied in closed form."""
        if problem.continuous_dose:
            grid = np.arange(problem.d_min, problem.d_max + 1e-9, continuous_step)
            dmax = problem.max_uniform_dose(n)
            extra = [dmax] if problem.d_min <= dmax <= problem.d_max else []
            grid = np.unique(np.concatenate([grid, extra]))
        else:
            grid = problem.dose_grid()
        return grid[grid <= problem.max_uniform_dose(n) * (1 + 1e-12)]

    @staticmethod
    def _infusion_grid(problem: Problem, day_step: int) -> tuple[list[int], int]:
        r = problem.nk
        cand = list(range(r.earliest_day, r.latest_day + 1, max(1, day_step)))
        gap = max(1, -(-r.min_interval_days // max(1, day_step)))  # in grid steps
        return cand, gap

    @staticmethod
    def infusion_set_count(problem: Problem, day_step: int) -> tuple[int, int]:
        """(number of infusion sets, number of candidate days), without enumerating them."""
        r = problem.nk
        if r is None:
            return 1, 0
        cand, gap = ExhaustiveBackend._infusion_grid(problem, day_step)
        L = len(cand)
        total = 0
        for c in range(r.n_min, r.n_max + 1):
            free = L - (c - 1) * (gap - 1) if c > 0 else L
            if free >= c:
                total += math.comb(free, c)
        return total, L

    @staticmethod
    def infusion_sets(problem: Problem, day_step: int) -> list[tuple[int, ...]]:
        """Infusion-day sets obeying count, window and spacing (fraction rule checked later)."""
        r = problem.nk
        if r is None:
            return [()]
        cand, gap = ExhaustiveBackend._infusion_grid(problem, day_step)
        L = len(cand)
        sets: list[tuple[int, ...]] = []
        for c in range(r.n_min, r.n_max + 1):
            free = L - (c - 1) * (gap - 1) if c > 0 else L
            if free < c:
                continue
            # c-subsets with index gaps >= gap <-> any c-subset of a shorter range (same order)
            for combo in itertools.combinations(range(free), c):
                sets.append(tuple(cand[i + j * (gap - 1)] for j, i in enumerate(combo)))
        return sets

    @staticmethod
    def infusion_matrix(problem: Problem, day_step: int) -> tuple[np.ndarray, np.ndarray]:
        """(candidate days, incidence matrix) of :meth:`infusion_sets`, in the same order,
        built with numpy: row r marks the candidate days of set r."""
        r = problem.nk
        cand, gap = ExhaustiveBackend._infusion_grid(problem, day_step)
        L = len(cand)
        blocks = []
        for c in range(r.n_min, r.n_max + 1):
            free = L - (c - 1) * (gap - 1) if c > 0 else L
            if free < c:
                continue
            count = math.comb(free, c)
            block = np.zeros((count, L), dtype=bool)
            if c > 0:
                idx = np.fromiter(itertools.chain.from_iterable(
                    itertools.combinations(range(free), c)), dtype=np.int64,
                    count=count * c).reshape(count, c) + np.arange(c) * (gap - 1)
                block[np.arange(count)[:, None], idx] = True
            blocks.append(block)
        M = np.concatenate(blocks) if blocks else np.zeros((0, L), dtype=bool)
        return np.asarray(cand, dtype=int), M

    # ------------------------------------------------------------------ solve
    @staticmethod
    def options_of(options: SolverOptions) -> dict[str, Any]:
        """The back-end's own options, checked (one-line error for a bad value)."""
        opt = options.options
        return {"start_window": _int_option(opt, "start_window_days", 7, 1, 3650),
                "extra_spacing": _int_option(opt, "extra_spacing_days", 3, 0, 3650),
                "cont_step": _float_option(opt, "continuous_step_gy", 0.1, 1e-4, 100.0),
                "day_step": _int_option(opt, "nk_day_step", 1, 1, 3650)}

    @classmethod
    def estimate(cls, problem: Problem, options: SolverOptions | None = None) -> SpaceEstimate:
        """Size and memory of the search for ``problem`` (see :class:`SpaceEstimate`)."""
        options = options or SolverOptions()
        return SpaceEstimate(problem, cls.options_of(options), memory_budget_bytes(options))

    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:
        t0 = time.perf_counter()
        deadline = t0 + options.time_limit_s
        o = self.options_of(options)
        budget = memory_budget_bytes(options)
        start_window, extra_spacing = o["start_window"], o["extra_spacing"]
        cont_step, day_step = o["cont_step"], o["day_step"]
        est = SpaceEstimate(problem, o, budget)
        if not est.fits:
            raise ProblemDeclined(
                f"exhaustive: search space too large for the memory limit: {est.describe()} "
                f"(limit {_gib(budget)} GiB); use a coarser dose_step_gy (or option "
                f"continuous_step_gy), a shorter horizon_days, a narrower n_fractions or NK "
                f"window, a larger nk_day_step, or raise memory_limit_mb / --memory-limit")
        H = problem.horizon_days
        n_lo, n_hi = problem.fraction_count_range()
        space = dict(start_window_days=start_window, extra_spacing_days=extra_spacing,
                     continuous_step_gy=cont_step if problem.continuous_dose else None,
                     nk_day_step=day_step if problem.nk else None)
        name, version = "rtopt enumeration + numpy", package_version("numpy")
        # Schedules in blocks (one fraction count and a slice of its calendars at a time), the
        # radiobiological limits applied in closed form per block; rows keep the order
        # (count, calendar, dose) so ties are broken as always.
        block_rows = max(1, budget // 4 // (H * 8 * 12))
        kept_D, plans_rt, kept_bed = [], [], []
        seen = 0
        cut = False
        for n in range(n_lo, n_hi + 1):
            if time.perf_counter() > deadline and plans_rt:
                cut = True
                break
            ds = self.doses(problem, n, cont_step)
            if ds.size == 0:
                continue
            cals = self.calendars(problem, n, start_window, extra_spacing)
            per = max(1, block_rows // ds.size)
            for a in range(0, len(cals), per):
                if time.perf_counter() > deadline and plans_rt:
                    cut = True
                    break  # stop at the limit once some schedule meets the limits
                chunk = cals[a:a + per]
                for b in range(0, ds.size, block_rows):
                    dd = ds[b:b + block_rows]
                    D = np.zeros((len(chunk) * dd.size, H))
                    cal_of_row = np.repeat(np.arange(len(chunk)), dd.size)
                    cols = np.array(chunk, dtype=int)[cal_of_row]          # (rows, n) days
                    D[np.arange(len(D))[:, None], cols] = np.tile(dd, len(chunk))[:, None]
                    seen += len(D)
                    ok, bed = self.limits_ok(problem, D)
                    if ok.any():
                        kept_D.append(D[ok])
                        kept_bed.append(bed[ok])
                        idx = np.flatnonzero(ok)
                        plans_rt.extend((chunk[i // dd.size], float(dd[i % dd.size])) for i in idx)
            if cut:
                break
        timed_out = cut
        n_sched = len(plans_rt)
        # Exact for the instance when nothing outside the space can raise the objective:
        # uniform doses and a tumour-BED objective (no time factor: the calendar cannot matter).
        exact = (problem.uniform and set(problem.weights) == {"tumour_bed"}
                 and not problem.cost_per_overall_day)
        extras: dict[str, Any] = {"space": space, "schedules": n_sched,
                                  "exact_for_instance": exact and not timed_out,
                                  "estimated_bytes": est.bytes,
                                  "memory_limit_mb": budget // 2 ** 20}
        if seen == 0 and not timed_out:
            return BackendOutput((), Termination.INFEASIBLE, message="no schedule in the space "
                                 "meets the calendar and dose limits", solver_name=name,
                                 solver_version=version, extras={"space": space})
        if n_sched == 0:
            if timed_out:
                return BackendOutput((), Termination.TIME_LIMIT, message="time limit reached "
                                     "while enumerating schedules, before any met the limits",
                                     solver_name=name, solver_version=version, extras=extras)
            return BackendOutput((), Termination.INFEASIBLE, message="no schedule in the space "
                                 "meets the prescription and OAR limits", solver_name=name,
                                 solver_version=version, extras=extras)
        D = np.concatenate(kept_D) if len(kept_D) > 1 else kept_D[0]
        del kept_D
        bed = np.concatenate(kept_bed)
        if problem.nk is not None and problem.needs_simulation:
            cand, M = self.infusion_matrix(problem, day_step)
            extras["infusion_sets"] = len(M)
            return self.superposition(problem, D, plans_rt, bed, cand, M, deadline, name,
                                       version, extras, budget, timed_out)
        sets = self.infusion_sets(problem, day_step) if problem.nk is not None else [()]
        extras["infusion_sets"] = len(sets)
        # Infusions do not change the objective: best schedule, then any infusion set it allows.
        if problem.needs_simulation:
            obj = np.full(n_sched, -np.inf)
            step = max(1, budget // 4 // (H * 8 * _SIM_ROW_ARRAYS * problem.steps_per_day))
            for a in range(0, n_sched, step):
                if time.perf_counter() > deadline and a > 0:
                    timed_out = True
                    break
                ev = problem.evaluate(D[a:a + step])
                obj[a:a + step] = np.where(problem.outcome_limits_ok(ev.metrics), ev.objective,
                                           -np.inf)
        else:
            obj = problem.objective_from_metrics(self._plan_metrics(plans_rt, bed), n_sched)
        term = Termination.TIME_LIMIT if timed_out else Termination.OPTIMAL
        for i in np.argsort(-obj, kind="stable"):
            if not np.isfinite(obj[i]):
                break
            days, d = plans_rt[i]
            for s in sets:
                if not s or self.rule_ok(problem, days, np.asarray(s)).all():
                    return BackendOutput((Plan.uniform(days, d, s),), term,
                                         float(obj[i]),
                                         float(obj[i]) if term == Termination.OPTIMAL else None,
                                         solver_name=name, solver_version=version,
                                         extras={**extras, "evaluations": len(D)})
            if time.perf_counter() > deadline + 1.0:
                break  # the rule search is part of the budget too (1 s grace: it is cheap)
        return BackendOutput((), Termination.TIME_LIMIT if timed_out else Termination.INFEASIBLE,
                             message=self._none_message(problem), solver_name=name,
                             solver_version=version, extras=extras)

    @staticmethod
    def _none_message(problem: Problem) -> str:
        """Why no plan was found once the closed-form limits left schedules to score."""
        if problem.has_outcome_limits:
            lims = ", ".join(f"{k} >= {v:.4g}" for k, v in problem.outcome_limits().items())
            return (f"no schedule and infusion set in the space meets the local-control limits "
                    f"({lims}) together with the NK rules")
        return "no infusion set obeys the NK rules with any schedule in the space"

    @staticmethod
    def limits_ok(problem: Problem, D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form prescription / OAR / calendar check of a block: (ok mask, tumour BED)."""
        ev = problem.evaluate(D, simulate_tme=False)
        ok = np.ones(len(D), dtype=bool)
        for key, (val, lim, sense, _) in ev.slacks.items():
            if key.startswith("nk."):
                continue  # infusion rules are enforced per infusion set below
            sl = (val - lim) if sense == ">=" else (lim - val)
            ok &= sl >= -1e-9 * max(1.0, abs(lim))
        return ok, np.asarray(ev.metrics["tumour_bed_gy"])

    @staticmethod
    def _plan_metrics(plans_rt: list, bed: np.ndarray) -> dict[str, np.ndarray]:
        """The closed-form metrics an objective may use besides the simulated ones."""
        days = [p[0] for p in plans_rt]
        return {"tumour_bed_gy": np.asarray(bed, dtype=float),
                "n_fractions": np.array([len(d) for d in days], dtype=float),
                "overall_days": np.array([d[-1] - d[0] if d else 0 for d in days], dtype=float)}

    @staticmethod
    def rule_ok(problem: Problem, days: tuple[int, ...], inf_days: np.ndarray) -> np.ndarray:
        """Per candidate infusion day: window and no fraction on the m days after it."""
        return np.array([problem.infusion_day_ok(days, int(t)) for t in inf_days], dtype=bool)

    def superposition(self, problem, D, plans_rt, bed, cand, M, deadline, name, version, extras,
                      budget, timed_out=False):
        """Score every (schedule, infusion set) pair exactly from single-infusion kernels.

        ``M`` is the incidence matrix of the infusion sets over the candidate days ``cand``.
        Blocks of schedules are simulated together (block size from the memory budget and a
        time bound) and the infusion sets are scored in chunks; the deadline is checked per
        schedule and per chunk.  The first schedule is always scored, so a time limit shorter
        than the set-up still returns a plan (the overshoot is then one schedule's scoring).
        """
        used = M.any(axis=0)
        if not used.all():  # candidate days no set uses (e.g. n_infusions = [0, 0])
            cand, M = cand[used], M[:, used]
        K = len(cand)
        best = (-np.inf, None, None)
        n_sim = 0
        S = len(D)
        H = problem.horizon_days
        spd = problem.steps_per_day
        # kernel block: S_b * (K + 1) simulations, each holding a few horizon-long rows
        per = max(1, min(_BLOCK_SIM_DAYS // ((K + 1) * H),
                         budget // 4 // ((K + 1) * H * 8 * _SIM_ROW_ARRAYS)))
        F = max(1, int((D > 0).sum(axis=1).max()))
        # scoring chunk: each set row costs a float copy of its incidence row, the (set, fraction)
        # activity and survival arrays and horizon-long temporaries
        set_chunk = max(1, min(_SET_CHUNK, budget // 4 // (8 * (K + 4 * F + 3 * H))))
        if problem.needs_population:
            # local control evaluates every fraction at the population nodes: keep a chunk's
            # scoring to ~1e6 fraction-node evaluations (tens of ms) between deadline checks
            set_chunk = max(1, min(set_chunk, _POPULATION_WORK // (F * POPULATION_Z.size)))
        n_sets = len(M)
        term = Termination.TIME_LIMIT if timed_out else Termination.OPTIMAL
        done = 0
        for a in range(0, S, per):
            if time.perf_counter() > deadline and best[1] is not None:
                term = Termination.TIME_LIMIT
                break
            block = D[a:a + per]
            ker = infusion_kernels(problem.biology, problem.tumour_doses(block), cand,
                                   steps_per_day=spd,
                                   population=problem.needs_population)
            n_sim += len(block) * (K + 1)
            reox = problem.reoxygenation_metrics(block) if problem.needs_reoxygenation else None
            for i in range(len(block)):
                if time.perf_counter() > deadline and best[1] is not None:
                    term = Termination.TIME_LIMIT
                    break
                days = plans_rt[a + i][0]
                bad = ~self.rule_ok(problem, days, cand)
                for c0 in range(0, n_sets, set_chunk):
                    Mc = M[c0:c0 + set_chunk]
                    valid = ~Mc[:, bad].any(axis=1) if bad.any() else np.ones(len(Mc), bool)
                    if not valid.any():
                        continue
                    sim = ker.combine(i, Mc[valid].astype(float),
                                      population=problem.needs_population,
                                      counterfactual=problem.needs_counterfactual)
                    nv = int(valid.sum())
                    mets = {k: np.broadcast_to(v[0], (nv,)) for k, v in self._plan_metrics(
                        [plans_rt[a + i]], bed[a + i:a + i + 1]).items()}
                    mets.update({k: getattr(sim, attr) for k, attr in SIMULATION_METRICS.items()})
                    if reox is not None:  # radiotherapy alone: the same for every infusion set
                        mets.update({k: np.broadcast_to(v[i], (nv,)) for k, v in reox.items()})
                    obj = problem.objective_from_metrics(mets, nv)
                    obj = np.where(problem.outcome_limits_ok(mets), obj, -np.inf)
                    k = int(np.argmax(obj))
                    if obj[k] > best[0]:
                        best = (float(obj[k]), a + i, c0 + int(np.flatnonzero(valid)[k]))
                    if time.perf_counter() > deadline and best[1] is not None:
                        term = Termination.TIME_LIMIT
                        break
                else:
                    done += 1
                    continue
                break
            if term == Termination.TIME_LIMIT and time.perf_counter() > deadline:
                break
        if best[1] is None:
            if term == Termination.TIME_LIMIT:
                return BackendOutput((), Termination.TIME_LIMIT, message="time limit reached "
                                     "before any schedule and infusion set was scored",
                                     solver_name=name, solver_version=version,
                                     extras={**extras, "simulations": n_sim})
            return BackendOutput((), Termination.INFEASIBLE, message=self._none_message(problem),
                                 solver_name=name, solver_version=version, extras=extras)
        days, d = plans_rt[best[1]]
        plan = Plan.uniform(days, d, tuple(int(x) for x in cand[M[best[2]]]))
        extras = {**extras, "simulations": n_sim, "schedules_scored": done,
                  "evaluations": S * n_sets if term == Termination.OPTIMAL else None,
                  "method": "exact superposition of single-infusion responses"}
        if term != Termination.OPTIMAL:
            extras["exact_for_instance"] = False
        return BackendOutput((plan,), term, best[0], best[0] if term == Termination.OPTIMAL else None,
                             solver_name=name, solver_version=version, extras=extras)
