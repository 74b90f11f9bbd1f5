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
by superposition (:class:`rtopt.simulator.InfusionKernels`): the NK compartments are linear in
the infusions and hypoxia does not depend on them, so this is exact, not an approximation.

Guarantee: the returned plan is optimal over this space (termination ``optimal``); it is
optimal for the instance when the instance's own decision space adds nothing the objective can
use (uniform doses and the tumour-BED objective, which has no time factor).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from rtopt.backends.base import Backend, BackendOutput, SolverOptions, Termination, package_version
from rtopt.problem import Plan, Problem
from rtopt.problem import OBJECTIVES, SIMULATION_METRICS
from rtopt.simulator import infusion_kernels

__all__ = ["ExhaustiveBackend"]


class ExhaustiveBackend(Backend):
    name = "exhaustive"
    description = "vectorised enumeration of uniform doses x regular calendars x infusion days"
    objectives = OBJECTIVES
    supports_costs = True
    supports_nk = True
    supports_per_fraction = True  # searches the uniform-dose subspace; says so in the result
    supports_continuous_dose = True
    global_optimality = True
    guarantee = ("exact optimum over the structured space (uniform doses on the grid, regular "
                 "calendars, all infusion-day sets); a feasible plan for the full instance")

    # ------------------------------------------------------------------ space
    @staticmethod
    def calendars(problem: Problem, n: int, start_window: int, extra_spacing: int) -> list[tuple[int, ...]]:
        """Regular fraction calendars with ``n`` fractions (see module docstring)."""
        allowed = problem.allowed_days
        out = set()
        for s in allowed[allowed < start_window]:
            for k in range(problem.min_interval, problem.min_interval + extra_spacing + 1):
                days = [int(s)]
                while len(days) < n:
                    nxt = allowed[allowed >= days[-1] + k]
                    if nxt.size == 0:
                        break
                    days.append(int(nxt[0]))
                if len(days) == n and days[-1] - days[0] <= problem.max_overall:
                    out.add(tuple(days))
        return sorted(out)

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
    def infusion_sets(problem: Problem, day_step: int) -> list[tuple[int, ...]]:
        """Infusion-day sets obeying count, window and spacing (fraction rule checked later)."""
        r = problem.nk
        if r is None:
            return [()]
        cand = list(range(r.earliest_day, r.latest_day + 1, max(1, day_step)))
        sets: list[tuple[int, ...]] = []
        for c in range(r.n_min, r.n_max + 1):
            for combo in itertools.combinations(cand, c):
                if all(b - a >= r.min_interval_days for a, b in zip(combo, combo[1:])):
                    sets.append(combo)
        return sets

    # ------------------------------------------------------------------ solve
    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:
        t0 = time.perf_counter()
        opt = options.options
        start_window = int(opt.get("start_window_days", 7))
        extra_spacing = int(opt.get("extra_spacing_days", 3))
        cont_step = float(opt.get("continuous_step_gy", 0.1))
        day_step = int(opt.get("nk_day_step", 1))
        H = problem.horizon_days
        n_lo, n_hi = problem.fraction_count_range()
        rows, plans_rt = [], []
        for n in range(n_lo, n_hi + 1):
            ds = self.doses(problem, n, cont_step)
            if ds.size == 0:
                continue
            for days in self.calendars(problem, n, start_window, extra_spacing):
                for d in ds:
                    row = np.zeros(H)
                    row[list(days)] = d
                    rows.append(row)
                    plans_rt.append((days, float(d)))
        space = dict(start_window_days=start_window, extra_spacing_days=extra_spacing,
                     continuous_step_gy=cont_step if problem.continuous_dose else None,
                     nk_day_step=day_step if problem.nk else None)
        name, version = "rtopt enumeration + numpy", package_version("numpy")
        if not rows:
            return BackendOutput((), Termination.INFEASIBLE, message="no schedule in the space "
                                 "meets the calendar and dose limits", solver_name=name,
                                 solver_version=version, extras={"space": space})
        D = np.array(rows)
        ev = problem.evaluate(D, simulate_tme=False)
        ok = np.ones(len(D), dtype=bool)
        for key, (val, lim, sense, _) in ev.slacks.items():
            if key.startswith("nk."):
                continue  # infusion rules are enforced per infusion set below
            sl = (val - lim) if sense == ">=" else (lim - val)
            ok &= sl >= -1e-9 * max(1.0, abs(lim))
        D = D[ok]
        plans_rt = [p for p, k in zip(plans_rt, ok) if k]
        bed = ev.metrics["tumour_bed_gy"][ok]
        n_sched = len(D)
        # Exact for the instance when nothing outside the space can raise the objective:
        # uniform doses and a tumour-BED objective (no time factor: the calendar cannot matter).
        exact = (problem.uniform and set(problem.weights) == {"tumour_bed"}
                 and not problem.cost_per_overall_day)
        extras: dict[str, Any] = {"space": space, "schedules": n_sched,
                                  "exact_for_instance": exact}
        if n_sched == 0:
            return BackendOutput((), Termination.INFEASIBLE, message="no schedule in the space "
                                 "meets the prescription and OAR limits", solver_name=name,
                                 solver_version=version, extras=extras)
        sets = self.infusion_sets(problem, day_step) if problem.nk is not None else [()]
        extras["infusion_sets"] = len(sets)
        deadline = t0 + options.time_limit_s
        if problem.nk is not None and problem.needs_simulation:
            return self._superposition(problem, D, plans_rt, bed, sets, deadline, name, version,
                                       extras)
        # Infusions do not change the objective: best schedule, then any infusion set it allows.
        obj = (problem.evaluate(D).objective if problem.needs_simulation
               else problem.objective_from_metrics({k: v[ok] for k, v in ev.metrics.items()},
                                                   n_sched))
        for i in np.argsort(-obj, kind="stable"):
            days, d = plans_rt[i]
            for s in sets:
                if not s or self._rule_ok(problem, days, np.asarray(s)).all():
                    return BackendOutput((Plan.uniform(days, d, s),), Termination.OPTIMAL,
                                         float(obj[i]), float(obj[i]), solver_name=name,
                                         solver_version=version,
                                         extras={**extras, "evaluations": len(D)})
        return BackendOutput((), Termination.INFEASIBLE, message="no infusion set obeys the NK "
                             "rules with any schedule in the space", solver_name=name,
                             solver_version=version, extras=extras)

    @staticmethod
    def _rule_ok(problem: Problem, days: tuple[int, ...], inf_days: np.ndarray) -> np.ndarray:
        """Per candidate infusion day: window and no fraction on the m days after it."""
        return np.array([problem.infusion_day_ok(days, int(t)) for t in inf_days], dtype=bool)

    def _superposition(self, problem, D, plans_rt, bed, sets, deadline, name, version, extras):
        """Score every (schedule, infusion set) pair exactly from single-infusion kernels."""
        cand = np.array(sorted({d for s in sets for d in s}), dtype=int)
        idx = {d: i for i, d in enumerate(cand)}
        M = np.zeros((len(sets), len(cand)))
        for r, s in enumerate(sets):
            for d in s:
                M[r, idx[d]] += 1
        w = problem.weights
        best = (-np.inf, None, None)
        n_sim = 0
        S = len(D)
        per = max(1, 32768 // (len(cand) + 1))
        term = Termination.OPTIMAL
        for a in range(0, S, per):
            if time.perf_counter() > deadline and best[1] is not None:
                term = Termination.TIME_LIMIT
                break
            block = D[a:a + per]
            ker = infusion_kernels(problem.biology, block, cand,
                                   steps_per_day=problem.steps_per_day,
                                   population=problem.needs_population)
            n_sim += len(block) * (len(cand) + 1)
            for i in range(len(block)):
                days = plans_rt[a + i][0]
                bad = (~self._rule_ok(problem, days, cand)).astype(float)
                valid = (M @ bad) == 0
                if not valid.any():
                    continue
                sim = ker.combine(i, M[valid], population=problem.needs_population)
                nv = int(valid.sum())
                mets = {name: getattr(sim, attr) for name, attr in SIMULATION_METRICS.items()}
                mets["tumour_bed_gy"] = np.full(nv, bed[a + i])
                mets["n_fractions"] = np.full(nv, float(len(days)))
                mets["overall_days"] = np.full(nv, float(days[-1] - days[0]) if days else 0.0)
                obj = problem.objective_from_metrics(mets, nv)
                k = int(np.argmax(obj))
                if obj[k] > best[0]:
                    best = (float(obj[k]), a + i, int(np.flatnonzero(valid)[k]))
        if best[1] is None:
            return BackendOutput((), Termination.INFEASIBLE, message="no infusion set obeys the NK "
                                 "rules with any schedule in the space", solver_name=name,
                                 solver_version=version, extras=extras)
        days, d = plans_rt[best[1]]
        plan = Plan.uniform(days, d, sets[best[2]])
        extras = {**extras, "simulations": n_sim,
                  "evaluations": S * len(sets) if term == Termination.OPTIMAL else None,
                  "method": "exact superposition of single-infusion responses"}
        return BackendOutput((plan,), term, best[0], best[0] if term == Termination.OPTIMAL else None,
                             solver_name=name, solver_version=version, extras=extras)
