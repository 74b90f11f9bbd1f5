"""Trade-offs: Pareto fronts of tumour control, organ-at-risk dose and NK benefit.

:func:`pareto` returns the non-dominated set of verified plans for two or three objectives:

* **exact** over the exhaustive back-end's documented space (uniform doses on the grid, regular
  calendars, every infusion-day set; :mod:`rtopt.backends.exhaustive`): every schedule of that
  space that meets the limits in closed form is scored with every infusion set it allows (exact
  superposition, :func:`rtopt.model.simulator.infusion_kernels`) and the non-dominated points are kept
  ("exact over the exhaustive space", not over the instance's full decision space);
* optionally a **heuristic** front from pymoo (NSGA-II for two objectives, NSGA-III for three)
  over scipy-de's genome (:class:`rtopt.backends.scipy_backend.Decoder`), with the constraint
  slacks as pymoo inequality constraints, compared with the exact front by hypervolume (pymoo
  ``HV``) and by the generational / inverted generational distance (pymoo ``GD`` / ``IGD``).

Every point of either front is re-verified by :meth:`rtopt.problem.problem.Problem.verify`; a point that
fails verification is dropped (and counted).  Objectives are reported in their own sense
(maximised ones as they are); internally everything is minimised.
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from rtopt.backends.base import SolverOptions
from rtopt.backends.exhaustive import ExhaustiveBackend
from rtopt.common.errors import ProblemDeclined, RtoptError
from rtopt.decisions.pareto_moo import heuristic_front, objective_matrix
from rtopt.model.simulator import STEPS_PER_DAY, compile_kernels, infusion_kernels
from rtopt.problem.problem import SIMULATION_METRICS, Plan, Problem

# pymoo is imported inside the functions that use it (import time).

__all__ = ["Objective", "ParetoPoint", "ParetoResult", "parse_objectives", "pareto",
           "non_dominated", "hypervolume", "knee_index", "OBJECTIVE_NAMES"]

_MAXIMISED = {
    "local_control": ("local_control", "local control"),
    "tcp": ("tcp", "TCP"),
    "tumour_log_kill": ("tumour_log10_kill", "tumour log10 kill"),
    "nk_gain": ("nk_gain_local_control", "NK gain (local control)"),
    "nk_favourability": ("nk_favourability", "NK favourability"),
    "tumour_bed": ("tumour_bed_gy", "tumour BED (Gy)"),
}
_MINIMISED = {
    "n_fractions": ("n_fractions", "fractions"),
    "overall_days": ("overall_days", "overall time (days)"),
}
OBJECTIVE_NAMES = (tuple(_MAXIMISED) + ("oar:NAME", "oar_eqd2:NAME", "ntcp:NAME")
                   + tuple(_MINIMISED))
"""Objective names accepted by :func:`parse_objectives`."""

REFERENCE_DEFAULT = "54/3"
"""Default reference: the standard schedule 54/3 (rtopt/model/data/standard_schedules.toml:
18 Gy x 3 on days 0, 4, 8 at the 80 % isodose), with its best infusions."""


@dataclass(frozen=True)
class Objective:
    """One objective: its name, the metric it reads, and whether it is maximised."""

    name: str
    metric: str
    maximise: bool
    label: str

    @property
    def needs_simulation(self) -> bool:
        return self.metric in SIMULATION_METRICS


def parse_objectives(spec: str | Sequence[str], problem: Problem) -> list[Objective]:
    """Objectives from ``"a,b[,c]"`` (or a list); one-line :class:`RtoptError` on bad input."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [s for s in names if s]
    if not 2 <= len(names) <= 3:
        raise RtoptError(f"--objectives: give two or three objectives separated by commas, got "
                         f"{len(names)} ({','.join(names) or 'none'})")
    if len(set(names)) != len(names):
        raise RtoptError(f"--objectives: an objective is repeated ({','.join(names)})")
    oars = [o.name for o in problem.oars]
    out = []
    for name in names:
        if name in _MAXIMISED:
            metric, label = _MAXIMISED[name]
            out.append(Objective(name, metric, True, label))
        elif name in _MINIMISED:
            metric, label = _MINIMISED[name]
            out.append(Objective(name, metric, False, label))
        elif name.split(":", 1)[0] in ("oar", "oar_eqd2") and ":" in name:
            kind, oar = name.split(":", 1)
            if oar not in oars:
                raise RtoptError(f"--objectives: unknown organ at risk {oar!r} in {name!r}"
                                 f"{did_you_mean_hint(oar, oars, kind + ':')}; the instance has "
                                 f"{', '.join(oars) or 'none'}")
            what = "bed_gy" if kind == "oar" else "eqd2_gy"
            label = f"{oar} {'BED' if kind == 'oar' else 'EQD2'} (Gy)"
            out.append(Objective(name, f"oar.{oar}.{what}", False, label))
        elif name.startswith("ntcp:"):
            label = name.split(":", 1)[1]
            terms = list(problem.dvh.ntcps) if getattr(problem, "dvh", None) is not None else []
            match = [t for t in terms if t.label == label]
            if not match:
                labels = [t.label for t in terms]
                raise RtoptError(f"--objectives: unknown NTCP {label!r} in {name!r}"
                                 f"{did_you_mean_hint(label, labels, 'ntcp:')}; the instance has "
                                 f"{', '.join('ntcp:' + x for x in labels) or 'no [[organ_at_risk.ntcp]]'}")
            t = match[0]
            out.append(Objective(name, t.metric_key, False, f"NTCP {label} ({t.organ})"))
        else:
            ntcp_names = [f"ntcp:{t.label}" for t in
                          (problem.dvh.ntcps if getattr(problem, "dvh", None) is not None else [])]
            known = [*_MAXIMISED, *_MINIMISED, *(f"oar:{o}" for o in oars),
                     *(f"oar_eqd2:{o}" for o in oars), *ntcp_names]
            raise RtoptError(f"--objectives: unknown objective {name!r}"
                             f"{did_you_mean_hint(name, known)}; choose from "
                             f"{', '.join(OBJECTIVE_NAMES)}")
        if out[-1].name in ("nk_gain", "nk_favourability") and problem.nk is None:
            raise RtoptError(f"--objectives: {name} needs NK cells and the instance has no [nk]")
    return out


def did_you_mean_hint(word: str, choices: Sequence[str], prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the closest choice (difflib), or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:  # a prefix of exactly one name (oar:chest_wall -> oar:chest_wall_rib)
        close = [c for c in choices if c.startswith(word)][:2]
        close = close if len(close) == 1 else []
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------- dominance
def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of ``F`` (all minimised), duplicates kept once (the
    first), in ascending order of the first objective."""
    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return np.zeros(0, dtype=int)
    order = np.lexsort(F.T[::-1])  # by first objective, then the others; stable
    keep: list[int] = []
    front = np.empty((0, F.shape[1]))
    for i in order:
        f = F[i]
        if front.size and np.any(np.all(front <= f, axis=1)):
            continue  # dominated by, or equal to, a kept point (sorted: no later point dominates a kept one)
        keep.append(int(i))
        front = np.vstack([front, f])
    return np.asarray(keep, dtype=int)


def hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of ``F`` (minimised) with reference point ``ref`` (pymoo's ``HV``)."""
    from pymoo.indicators.hv import HV

    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(ref, dtype=float))(F))


def knee_index(F: np.ndarray) -> int:
    """Knee of a front (minimised ``F``): in objective space normalised to [0, 1], for two
    objectives the point farthest from the line joining the two extremes; for three, the point
    closest to the ideal point."""
    F = np.asarray(F, dtype=float)
    if len(F) <= 2:
        return 0
    lo, hi = F.min(axis=0), F.max(axis=0)
    N = (F - lo) / np.where(hi > lo, hi - lo, 1.0)
    if F.shape[1] == 2:
        a, b = N[np.argmin(N[:, 0])], N[np.argmin(N[:, 1])]
        d = b - a
        L = math.hypot(*d)
        if L == 0:
            return 0
        dist = np.abs(d[0] * (N[:, 1] - a[1]) - d[1] * (N[:, 0] - a[0])) / L
        return int(np.argmax(dist))
    return int(np.argmin(np.linalg.norm(N, axis=1)))


# ---------------------------------------------------------------------- results
@dataclass
class ParetoPoint:
    """A verified plan on a front: its objective values (own sense) and every metric."""

    plan: Plan
    values: dict[str, float]
    metrics: dict[str, float]
    feasible: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "describe": self.plan.describe(),
                "objectives": self.values, "metrics": self.metrics, "feasible": self.feasible}


@dataclass
class ParetoResult:
    """Fronts and their reading (see :func:`pareto`)."""

    instance: str
    objectives: list[Objective]
    exact: list[ParetoPoint]
    exact_label: str
    knee: int | None
    reference: ParetoPoint | None
    reference_better: int | None
    reference_sentence: str
    standards: list[tuple[str, ParetoPoint]]
    heuristic: list[ParetoPoint] = field(default_factory=list)
    heuristic_label: str = ""
    indicators: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def minimised(self, points: Sequence[ParetoPoint]) -> np.ndarray:
        return np.array([[(-p.values[o.name] if o.maximise else p.values[o.name])
                          for o in self.objectives] for p in points]).reshape(-1, len(self.objectives))

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance,
                "objectives": [{"name": o.name, "metric": o.metric,
                                "sense": "max" if o.maximise else "min", "label": o.label}
                               for o in self.objectives],
                "exact": {"label": self.exact_label, "points": [p.to_dict() for p in self.exact]},
                "knee": self.knee,
                "reference": None if self.reference is None else self.reference.to_dict(),
                "reference_better": self.reference_better,
                "reference_sentence": self.reference_sentence,
                "standards": [{"name": n, **p.to_dict()} for n, p in self.standards],
                "heuristic": {"label": self.heuristic_label,
                              "points": [p.to_dict() for p in self.heuristic]},
                "indicators": self.indicators, "timings_s": self.timings, "counts": self.counts}


# ---------------------------------------------------------------------- exact front


def _point(objs: list[Objective], v: Any) -> ParetoPoint:
    vals = {o.name: float(v.metrics[o.metric]) for o in objs}
    return ParetoPoint(v.plan, vals, {k: float(x) for k, x in v.metrics.items()}, bool(v.feasible))


def _enumerate_schedules(problem: Problem, opts: dict[str, Any]):
    """The exhaustive space's schedules that meet the limits in closed form: (D, [(days, d)])."""
    H = problem.horizon_days
    n_lo, n_hi = problem.fraction_count_range()
    rows, plans = [], []
    for n in range(n_lo, n_hi + 1):
        ds = ExhaustiveBackend.doses(problem, n, opts["cont_step"])
        if ds.size == 0:
            continue
        cals = ExhaustiveBackend.calendars(problem, n, opts["start_window"], opts["extra_spacing"])
        if not cals:
            continue
        D = np.zeros((len(cals) * ds.size, H))
        cal_of_row = np.repeat(np.arange(len(cals)), ds.size)
        cols = np.array(cals, dtype=int)[cal_of_row]
        D[np.arange(len(D))[:, None], cols] = np.tile(ds, len(cals))[:, None]
        ok, _ = ExhaustiveBackend.limits_ok(problem, D)
        idx = np.flatnonzero(ok)
        rows.append(D[idx])
        plans.extend((cals[i // ds.size], float(ds[i % ds.size])) for i in idx)
    D = np.concatenate(rows) if rows else np.zeros((0, H))
    return D, plans


def exact_front(problem: Problem, objs: list[Objective], options: dict[str, Any] | None = None,
                time_limit_s: float | None = None) -> tuple[list[Plan], dict[str, int]]:
    """Candidate plans of the exact front (not yet verified) and counts.

    With ``time_limit_s`` the deadline is checked per schedule; when it passes, the schedules
    scored so far give the front and ``counts["time_limit_reached"]`` is 1 (the front is then
    not exact over the space, and :func:`pareto` says so).
    """
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s

    sopts = SolverOptions(options=dict(options or {}))
    opts = ExhaustiveBackend.options_of(sopts)
    est = ExhaustiveBackend.estimate(problem, sopts)
    if not est.fits:
        raise ProblemDeclined(f"pareto: the exhaustive space is too large for the memory limit: "
                              f"{est.describe()}; use a coarser dose_step_gy, a narrower "
                              f"n_fractions or NK window, or a larger nk_day_step")
    D, plans_rt = _enumerate_schedules(problem, opts)
    counts = {"schedules": len(plans_rt)}
    if not plans_rt:
        raise RtoptError("pareto: no schedule of the exhaustive space meets the limits")
    sim_needed = any(o.needs_simulation for o in objs)
    closed = problem.evaluate(D, simulate_tme=False).metrics
    cand_F: list[np.ndarray] = []
    cand_plan: list[Plan] = []
    if problem.nk is not None and sim_needed:
        cand, M = ExhaustiveBackend.infusion_matrix(problem, opts["day_step"])
        used = M.any(axis=0)
        if not used.all():
            cand, M = cand[used], M[:, used]
        counts["infusion_sets"] = len(M)
        pop = any(o.metric in ("local_control", "tcp", "nk_gain_local_control") for o in objs)
        cf = any(o.metric.startswith("nk_gain") for o in objs)
        per = max(1, 4096 // (len(cand) + 1))
        pairs = 0
        scored = 0
        for a in range(0, len(D), per):
            if deadline is not None and time.perf_counter() > deadline and scored:
                counts["time_limit_reached"] = 1
                break
            ker = infusion_kernels(problem.biology, problem.tumour_doses(D[a:a + per]), cand,
                                   steps_per_day=problem.steps_per_day, population=pop)
            for i in range(min(per, len(D) - a)):
                s = a + i
                if deadline is not None and time.perf_counter() > deadline and scored:
                    counts["time_limit_reached"] = 1
                    break
                scored += 1
                days, d = plans_rt[s]
                bad = ~ExhaustiveBackend.rule_ok(problem, days, cand)
                valid = ~M[:, bad].any(axis=1) if bad.any() else np.ones(len(M), bool)
                if not valid.any():
                    continue
                Mv = M[valid]
                sim = ker.combine(i, Mv.astype(float), population=pop, counterfactual=cf)
                nv = len(Mv)
                pairs += nv
                mets = {k: closed[k][s] for k in closed}
                mets.update({k: getattr(sim, attr) for k, attr in SIMULATION_METRICS.items()
                             if k in {o.metric for o in objs}})
                F = objective_matrix(objs, mets)
                F = np.broadcast_to(F, (nv, len(objs)))
                keep = non_dominated(np.round(F, 12))
                for k in keep:
                    cand_F.append(F[k])
                    cand_plan.append(Plan.uniform(days, d, tuple(int(x) for x in cand[Mv[k]])))
        counts["pairs_scored"] = pairs
        counts["schedules_scored"] = scored
    else:
        sets = ExhaustiveBackend.infusion_sets(problem, opts["day_step"]) if problem.nk is not None else [()]
        if sim_needed:  # in chunks: the simulator holds a few horizon rows per schedule
            parts = [problem.evaluate(D[a:a + 2048], simulate_tme=True, all_metrics=True).metrics
                     for a in range(0, len(D), 2048)]
            mets = {k: np.concatenate([np.asarray(m_[k], dtype=float).reshape(-1) for m_ in parts])
                    for k in {o.metric for o in objs}}
        else:
            mets = closed
        F = objective_matrix(objs, mets)
        keep = non_dominated(np.round(F, 12))
        for k in keep:
            days, d = plans_rt[k]
            for st in sets:
                if not st or ExhaustiveBackend.rule_ok(problem, days, np.asarray(st)).all():
                    cand_F.append(F[k])
                    cand_plan.append(Plan.uniform(days, d, st))
                    break
        counts["pairs_scored"] = len(D)
    Fa = np.array(cand_F).reshape(-1, len(objs))
    keep = non_dominated(np.round(Fa, 12))
    counts["candidates"] = len(keep)
    return [cand_plan[k] for k in keep], counts


def verified_front(problem: Problem, objs: list[Objective], plans: list[Plan]
                    ) -> tuple[list[ParetoPoint], int]:
    """Verify plans, drop infeasible ones and any point the verified values show dominated."""
    ver = problem.verify_prescribable(plans) if plans else []
    pts = [_point(objs, v) for v in ver]
    bad = sum(not p.feasible for p in pts)
    pts = [p for p in pts if p.feasible]
    if not pts:
        return [], bad
    F = np.array([[(-p.values[o.name] if o.maximise else p.values[o.name]) for o in objs]
                  for p in pts])
    keep = non_dominated(np.round(F, 12))
    return [pts[k] for k in keep], bad


def _best_infusions(problem: Problem, objs: list[Objective], days: tuple[int, ...], d: float,
                    day_step: int = 1, ratio: float | None = None) -> Plan:
    """The uniform schedule with its best infusion set: the set that is best on the first
    objective that depends on the infusions (then the next ones), among those the rules allow.
    ``ratio``: the schedule's tumour dose ratio when it is not the instance's (a standard)."""
    if ratio is not None and abs(ratio - problem.tumour_dose_ratio) < 1e-12:
        ratio = None
    days = tuple(days)
    if problem.nk is None:
        return Plan(days, (d,) * len(days), (), tumour_dose_ratio=ratio)
    sets = [s for s in ExhaustiveBackend.infusion_sets(problem, day_step)
            if not s or ExhaustiveBackend.rule_ok(problem, days, np.asarray(s)).all()]
    if not sets:
        return Plan(days, (d,) * len(days), (), tumour_dose_ratio=ratio)
    plans = [Plan(days, (d,) * len(days), tuple(s), tumour_dose_ratio=ratio) for s in sets]
    ev = problem.evaluate_plans(plans, simulate_tme=True, all_metrics=True)
    F = objective_matrix(objs, ev.metrics)
    order = np.lexsort(np.round(F, 12).T[::-1])
    return plans[int(order[0])]


def _standard_plans(problem: Problem, objs: list[Objective]) -> list[tuple[str, Plan]]:
    """The named standard schedules (rtopt/model/data/standard_schedules.toml, each with its
    source's calendar and prescription convention) that the instance's fraction and dose
    ranges and horizon allow, each with its best infusions."""
    from rtopt.model.standards import standard_schedules

    out = []
    for name, st in standard_schedules().items():
        n, d = len(st.days), st.dose_per_fraction_gy
        if not problem.n_min <= n <= problem.n_max or not problem.d_min <= d <= problem.d_max:
            continue
        if st.days[-1] >= problem.horizon_days:
            continue
        out.append((name, _best_infusions(problem, objs, st.days, d,
                                          ratio=st.tumour_dose_ratio)))
    return out


def _describe_change(objs: list[Objective], ref: ParetoPoint, p: ParetoPoint) -> str:
    parts = []
    for o in objs:
        a, b = ref.values[o.name], p.values[o.name]
        diff = b - a
        if abs(diff) <= 1e-9 * max(1.0, abs(a)):
            parts.append(f"same {o.label}")
            continue
        if o.metric.endswith("_gy"):
            parts.append(f"{abs(diff):.3g} Gy {'less' if diff < 0 else 'more'} "
                         f"{o.label.replace(' (Gy)', '')}")
        else:
            parts.append(f"{o.label} {a:.4g} -> {b:.4g} ({diff:+.3g})")
    return "; ".join(parts)


# ---------------------------------------------------------------------- entry point
def pareto(instance: Any, objectives: str | Sequence[str] = "local_control,tumour_bed", *,
           reference: Plan | None = None, heuristic: bool = True, pop_size: int = 60,
           generations: int = 60, seed: int = 0, options: dict[str, Any] | None = None,
           steps_per_day: int = STEPS_PER_DAY,
           time_limit_s: float | None = 600.0, compile_progress: Any = None) -> ParetoResult:
    """Pareto fronts of two or three objectives for an instance (path or Instance).

    Parameters
    ----------
    instance : path or rtopt.problem.instance.Instance
    objectives : "a,b[,c]" or list
        From ``local_control``, ``tcp``, ``tumour_log_kill``, ``nk_gain``, ``nk_favourability``,
        ``tumour_bed`` (maximised), ``oar:NAME``, ``oar_eqd2:NAME``, ``ntcp:NAME`` (an
        ``[[organ_at_risk.ntcp]]`` of a ``[dvh_plan]`` instance), ``n_fractions``,
        ``overall_days`` (minimised).
    reference : Plan, optional
        Reference schedule (default the standard 54/3, :data:`REFERENCE_DEFAULT`, with its
        best infusions).
    heuristic : bool
        Also run pymoo (NSGA-II / NSGA-III) and compare it with the exact front.
    options : dict, optional
        Exhaustive-space options (``start_window_days``, ``extra_spacing_days``,
        ``continuous_step_gy``, ``nk_day_step``).
    time_limit_s : float or None
        Time limit of the exact front's scoring (default 600 s); past it the front is built from
        the schedules scored so far and labelled as partial.
    compile_progress : callable, optional
        Told of each step of a first compile of the simulator kernels
        (:func:`rtopt.model.simulator.compile_kernels`' ``progress``), e.g. for a notice.
    """
    problem = Problem.coerce(instance, steps_per_day=steps_per_day)
    objs = parse_objectives(objectives, problem)
    # before the clock: a first compile is not search time
    compile_kernels(progress=compile_progress)
    t0 = time.perf_counter()
    plans, counts = exact_front(problem, objs, options, time_limit_s)
    exact, dropped = verified_front(problem, objs, plans)
    counts["dropped_by_verification"] = dropped
    timings = {"exact_s": time.perf_counter() - t0}
    label = ("exact over the exhaustive space (uniform doses on the grid, regular calendars, "
             "every infusion set)")
    if counts.get("time_limit_reached"):
        label = (f"partial, NOT exact: the time limit stopped the scoring after "
                 f"{counts.get('schedules_scored', 0)} of {counts['schedules']} schedules of the "
                 "exhaustive space")
    res = ParetoResult(problem.name, objs, exact, label, None, None, None, "", [],
                       timings=timings, counts=counts)
    if exact:
        res.knee = knee_index(res.minimised(exact))
    # reference and standard schedules
    if reference is None:
        from rtopt.model.standards import standard_schedule

        st = standard_schedule(REFERENCE_DEFAULT)
        if all(0 <= x < problem.horizon_days for x in st.days):
            reference = _best_infusions(problem, objs, st.days, st.dose_per_fraction_gy,
                                        ratio=st.tumour_dose_ratio)
    if reference is not None:
        res.reference = _point(objs, problem.verify(reference))
        Fr = res.minimised([res.reference])[0]
        Fe = res.minimised(exact)
        dom = np.all(Fe <= Fr + 1e-12, axis=1) & np.any(Fe < Fr - 1e-12, axis=1)
        if dom.any():
            lo, hi = Fe.min(axis=0), Fe.max(axis=0)
            scale = np.where(hi > lo, hi - lo, 1.0)
            dist = np.linalg.norm((Fe - Fr) / scale, axis=1)
            dist[~dom] = np.inf
            j = int(np.argmin(dist))
            res.reference_better = j
            res.reference_sentence = (f"{exact[j].plan.describe()} dominates the reference "
                                      f"{res.reference.plan.describe()}: "
                                      + _describe_change(objs, res.reference, exact[j]))
        elif np.any(np.all(np.abs(Fe - Fr) <= 1e-9 * np.maximum(1.0, np.abs(Fr)), axis=1)):
            j = int(np.flatnonzero(np.all(np.abs(Fe - Fr) <= 1e-9 * np.maximum(1.0, np.abs(Fr)),
                                          axis=1))[0])
            res.reference_sentence = (f"the reference {res.reference.plan.describe()} is on the "
                                      f"exact front (point {j}, {exact[j].plan.describe()}, has "
                                      f"the same objectives); no plan dominates it")
        else:
            res.reference_sentence = (f"no plan of the exact front dominates the reference "
                                      f"{res.reference.plan.describe()}")
        if not res.reference.feasible:
            v = problem.verify(reference)
            res.reference_sentence += (" (the reference itself breaks: "
                                       + ", ".join(c.name for c in v.violated) + ")")
    std = _standard_plans(problem, objs)
    if std:
        ver = problem.verify_all([p for _, p in std])
        res.standards = [(name, _point(objs, v)) for (name, _), v in zip(std, ver)]
    if heuristic:
        t1 = time.perf_counter()
        hplans, hinfo = heuristic_front(problem, objs, pop_size=pop_size,
                                        generations=generations, seed=seed)
        res.heuristic, hdrop = verified_front(problem, objs, hplans)
        res.counts["heuristic_dropped_by_verification"] = hdrop
        res.heuristic_label = hinfo["label"]
        res.timings["heuristic_s"] = time.perf_counter() - t1
        res.indicators = indicators(res)
    return res


def indicators(res: ParetoResult) -> dict[str, Any]:
    """Hypervolume of both fronts (common reference point) and GD / IGD of the heuristic front
    to the exact one, in objective space normalised by the exact front's range."""
    from pymoo.indicators.gd import GD
    from pymoo.indicators.igd import IGD

    if not res.exact or not res.heuristic:
        return {}
    Fe, Fh = res.minimised(res.exact), res.minimised(res.heuristic)
    lo = np.minimum(Fe.min(axis=0), Fh.min(axis=0))
    hi = np.maximum(Fe.max(axis=0), Fh.max(axis=0))
    scale = np.where(hi > lo, hi - lo, 1.0)
    Ne, Nh = (Fe - lo) / scale, (Fh - lo) / scale
    ref = np.full(Fe.shape[1], 1.1)
    return {"normalisation": "objectives scaled to [0, 1] over both fronts (minimised); "
                             "hypervolume reference point 1.1 in every objective",
            "hv_exact": hypervolume(Ne, ref), "hv_heuristic": hypervolume(Nh, ref),
            "gd": float(GD(Ne)(Nh)), "igd": float(IGD(Ne)(Nh))}
