"""The heuristic Pareto front: pymoo NSGA-II (two objectives) / NSGA-III (three) over scipy-de's
genome (:class:`rtopt.backends.scipy_backend.Decoder`: fraction count, start day, spacing, dose,
infusion count and days), the constraint slacks of :meth:`rtopt.problem.problem.Problem.evaluate` as pymoo
inequality constraints (``g <= 0``).  pymoo is imported here only."""

from __future__ import annotations

from typing import Any

import numpy as np

from rtopt.backends.scipy_backend import Decoder
from rtopt.problem.problem import Plan, Problem

# pymoo is imported inside heuristic_front (import time: ~0.5 s; exact fronts never need it).

__all__ = ["heuristic_front", "objective_matrix"]


def objective_matrix(objs: list, metrics: dict[str, Any]) -> np.ndarray:
    """``(N, k)`` matrix of the objectives ``objs`` (:class:`rtopt.decisions.pareto.Objective`),
    each minimised (maximised ones negated), from a metrics dict of ``N`` plans."""
    cols = [np.asarray(metrics[o.metric], dtype=float) * (-1.0 if o.maximise else 1.0)
            for o in objs]
    return np.stack(np.broadcast_arrays(*cols), axis=1)


def heuristic_front(problem: Problem, objs: list, *, pop_size: int = 60, generations: int = 60,
                    seed: int = 0, calendar: str = "regular", start_window: int = 7,
                    extra_spacing: int = 3, time_limit_s: float | None = None
                    ) -> tuple[list[Plan], dict[str, Any]]:
    """Plans of the final non-dominated feasible set (not yet verified) and a description.

    With ``time_limit_s`` the run also stops when that much time has passed (pymoo's
    time-based termination, checked between generations); ``info["time_limit_reached"]``
    then says so."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.algorithms.moo.nsga3 import NSGA3
    from pymoo.core.problem import Problem as MooProblem
    from pymoo.optimize import minimize
    from pymoo.util.ref_dirs import get_reference_directions

    dec = Decoder(problem, calendar, start_window, extra_spacing, repair=True)
    g = dec.genome
    lo, hi = np.array(g.lo, dtype=float), np.array(g.hi, dtype=float)
    sim = any(o.needs_simulation for o in objs)
    full = any(o.metric in ("local_control", "tcp") or o.metric.startswith("nk_gain")
               for o in objs)
    probe = problem.evaluate(*dec.decode(lo[None, :]), simulate_tme=False)
    keys = list(probe.slacks)

    class _Moo(MooProblem):
        def __init__(self) -> None:
            super().__init__(n_var=len(lo), n_obj=len(objs), n_ieq_constr=len(keys), xl=lo,
                             xu=hi)

        def _evaluate(self, X, out, *args, **kwargs):
            D, U = dec.decode(np.asarray(X, dtype=float))
            ev = problem.evaluate(D, U, simulate_tme=sim, all_metrics=full)
            out["F"] = objective_matrix(objs, ev.metrics)
            G = []
            for k in keys:
                val, lim, sense, _ = ev.slacks[k]
                sl = (np.asarray(val, dtype=float) - lim) if sense == ">=" else \
                    (lim - np.asarray(val, dtype=float))
                G.append(-sl / max(1.0, abs(lim)))
            out["G"] = np.nan_to_num(np.stack(G, axis=1), posinf=1e6, neginf=-1e6)

    if len(objs) == 2:
        algo = NSGA2(pop_size=pop_size)
        name = "NSGA-II"
    else:
        ref = get_reference_directions("das-dennis", 3, n_partitions=12)
        algo = NSGA3(ref_dirs=ref, pop_size=max(pop_size, len(ref)))
        name = "NSGA-III"
    termination: Any = ("n_gen", generations)
    if time_limit_s is not None:
        from pymoo.termination.collection import TerminationCollection
        from pymoo.termination.max_gen import MaximumGenerationTermination
        from pymoo.termination.max_time import TimeBasedTermination

        termination = TerminationCollection(MaximumGenerationTermination(generations),
                                            TimeBasedTermination(float(time_limit_s)))
    res = minimize(_Moo(), algo, termination, seed=seed, verbose=False)
    n_gen = int(getattr(res.algorithm, "n_gen", generations) or generations)
    plans: list[Plan] = []
    if res.X is not None:
        X = np.atleast_2d(res.X)
        D, U = dec.decode(X)
        seen = set()
        for d, u in zip(D, U):
            p = Plan.from_daily(d, u)
            if p not in seen:
                seen.add(p)
                plans.append(p)
    label = (f"heuristic: pymoo {name}, population {algo.pop_size}, {generations} generations, "
             f"seed {seed}, scipy-de's genome ({calendar} calendars)")
    stopped = time_limit_s is not None and n_gen - 1 < generations
    if stopped:
        label += f" (time limit {time_limit_s:g} s reached after {n_gen - 1} generations)"
    return plans, {"label": label, "evaluations": int(res.algorithm.evaluator.n_eval),
                   "generations": min(n_gen - 1, generations) if time_limit_s is not None
                   else generations, "time_limit_reached": bool(stopped)}
