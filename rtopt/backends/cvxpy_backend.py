"""``cvxpy_convex`` and ``cvxpy_ccp``: convex programming back-ends built on cvxpy.

``cvxpy_convex``: exact convex formulations of the classic tumour-BED problem
--------------------------------------------------------------------------------
Objective ``tumour_bed`` only (other objectives are declined with the reason).  For every
fraction count ``n`` the instance and the calendar allow:

* **Uniform doses.**  Tumour BED ``n BED_1(d) - L(T)`` increases with ``d`` for every survival
  model (LQ, LQ-L, USC), and no limit but the prescription depends on the calendar, so the
  optimum for ``n`` is the largest ``d`` that every OAR allows.  That is a convex QCQP in one
  variable, solved with cvxpy (CLARABEL by default) as one parametrised (DPP) problem reused
  across ``n`` (the parameter is ``B_O / n``; after a solver failure it is retried in the
  completed-square form ``|d + c1/(2 c2)| <= R``)::

      maximise d   s.t.  s_O d + s_O^2 d^2 / rho_O <= B_O / n   (every OAR with a BED limit)
                         d_min <= d <= min(d_max, m_O / s_O)    (dose range, OAR dose/fraction)

  With a dose grid the largest grid dose not above the optimum is taken (exact: the objective
  is monotone in ``d``).  The prescription ``BED >= min`` (a convex ``>=``, not DCP) is checked
  afterwards: it holds at the maximum-BED point iff ``n`` admits any feasible dose.
* **Per-fraction doses** (``uniform_dose = false``; LQ tumour, continuous doses).  The Saberian
  et al. reduction (2015 Oper Res Lett; 2016 Math Med Biol): with ``x = sum d``, ``y = sum d^2``
  the tumour BED and every OAR BED are linear in ``(x, y)``.  The linear programme over the
  *convex hull* of the attainable ``(x, y)`` is only a relaxation: with dose bounds
  ``[l, u]`` the attainable set is exactly ``{x^2/n <= y <= ymax(x), n l <= x <= n u}``, whose
  upper boundary ``ymax`` (as many fractions at ``u`` as possible, the rest at ``l``, one in
  between) is piecewise *convex*.  Because the objective increases in ``y``, the best ``y``
  for each ``x`` is ``min(ymax(x), OAR cap(x))``, and the objective along ``x`` is linear or
  convex between finitely many breakpoints (grid points of ``ymax``, crossings of OAR lines,
  crossings of ``ymax`` with OAR lines, the end of the feasible ``x`` range), so the maximum is
  found exactly by evaluating those breakpoints.  Doses are then recovered on the segment from
  the uniform schedule to the extreme one, where ``sum d`` is fixed and ``sum d^2`` runs over
  ``[x^2/n, ymax(x)]``.  cvxpy solves the Saberian LP over the convex hull
  (``x^2/n <= y <= (u + l) x - n u l``) per ``n`` as an independent upper bound, reported in
  ``extras`` (``relaxation_bound_bed_gy``).  Per-fraction doses on a dose grid (an integer
  programme) and non-LQ tumour models (BED not a function of ``(x, y)``) are declined.
* **Calendar and NK cells.**  Repopulation enters as a constant BED loss for ``n``; the
  calendar with the least overall time (the earliest compact calendar over all start days,
  :meth:`Problem.compact_calendar`) maximises the objective.  With an ``[nk]`` table the
  infusions are :meth:`Problem.first_valid_infusions` (the objective ignores them); when the
  shortest calendar admits none, longer compact calendars are tried and exactness is claimed
  only if no fraction count lost objective that way.

Guarantee: ``termination = optimal`` with ``extras["exact_for_instance"] = True`` means the plan
is optimal for the instance to the convex solver's tolerance (CLARABEL: ~1e-8 relative in the
dose; doses are polished down so the verified OAR limits hold exactly).  ``bound`` is the best
per-``n`` optimum value (equal to the claim).

``cvxpy_ccp``: sequential convex programming for the full model
------------------------------------------------------------------
Every objective (``nk_favourability``, ``tumour_log_kill``, ``tcp``, ``tumour_bed`` and weights),
NK infusions, uniform or per-fraction doses, grid or continuous.  The TME objective is a black
box (:meth:`Problem.evaluate`), so the scheme is:

1. **Outer (integer) decisions.**  Calendars: for every fraction count, the compact calendars
   (:meth:`Problem.compact_calendar`) starting on each allowed day of the first
   ``start_window_days`` (option, default 7).  Each calendar is screened at a few uniform doses
   (``screen_doses``, default 7, on the grid when there is one, up to the largest dose the OARs
   allow) with the earliest rule-abiding infusion set, all in one vectorised evaluation.  Then
   infusion days are chosen at each calendar's best screened dose by evaluating every
   rule-abiding set of the instance (all calendars in one evaluation; above
   ``max_infusion_sets``, default 2048, per calendar: coordinate ascent over single-day moves,
   additions and removals), the doses are screened again with those days, and so on while the
   best dose moves (at most ``alternations`` rounds).  The ``refine_calendars`` (default 6) best
   calendars go on to the dose SCP.
2. **Dose SCP (inner).**  At the current doses ``z_k`` the objective gradient and a diagonal
   curvature estimate come from central finite differences (step ``fd_step_gy``, default
   1e-3 Gy) of :meth:`Problem.evaluate`.  The trust-region subproblem, a convex QP/SOCP solved
   by cvxpy (CLARABEL; one compiled DPP problem per size, reused), is::

       maximise  g.(z - z_k) - 1/2 sum c_i (z_i - z_k,i)^2       (c_i = max(0, -f''_ii))
       s.t.      every OAR BED limit, exact: sum (c1 z_i + c2 z_i^2) <= B (1 - 1e-7), written
                 with the square completed as the cone ||z + c1/(2 c2)|| <= R (CLARABEL fails
                 on the quad-over-lin encoding of sum_squares when the limit is active),
                 l <= z <= u (dose range, OAR dose per fraction),
                 BED(z_k) + grad BED . (z - z_k) >= prescription  (tangent of a convex BED:
                 conservative for LQ and LQ-L),
                 |z - z_k| <= Delta.

   ``z`` is one dose (uniform) or one per fraction.  The step is accepted if the *simulated*
   objective improves and the schedule is feasible (checked on the true model, which also
   covers the USC, whose BED need not be convex); the trust region doubles after good agreement
   with the model at its edge, halves after poor agreement and quarters on rejection.  A job
   stops on a radius below ``min_trust_radius_gy``, a negligible predicted gain,
   ``max_iterations`` or the time limit.  The refined calendars run in lockstep: each round
   evaluates every job's trial point *and* its finite-difference stencil in ONE evaluate call
   (the simulator's cost is mostly its per-call time loop), so an accepted step already has
   its next gradient.
3. **Alternation.**  Infusion days are re-chosen at the new doses and the SCP is rerun where they
   changed, up to ``alternations`` (default 3) times.
4. **Grid.**  With a dose grid the final doses are rounded (down, up, nearest, and single-
   fraction variants, evaluated together); the best feasible rounding is kept, rounding down
   further when none is feasible; infusion days are re-chosen at the rounded doses.

Guarantee: a verified feasible plan that is a *local* optimum of the doses for the chosen
calendar and infusion days (no optimality over calendars, infusion days or the grid is
claimed; ``bound`` is None, ``exact_for_instance`` False).  Several candidate plans are
returned best first (``n_candidates``, default 3: every screened, infusion-chosen and refined
schedule competes), so verification can fall back.  The one-call screen always runs, so even a
tiny time limit yields plans.  The scheme is deterministic; ``seed`` drives only the optional
jitter of per-fraction starting doses (option ``jitter_gy``, default 0).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from rtopt.backends.base import Backend, BackendOutput, SolverOptions, Termination, package_version
from rtopt.common.errors import SolverConfigError
from rtopt.model import radiobiology as rb
from rtopt.problem.problem import FEAS_TOL, OBJECTIVES, Evaluation, Plan, Problem

__all__ = ["CvxpyConvexBackend", "CvxpyCcpBackend", "oar_bed_coefficients",
           "tumour_lq_coefficients", "per_fraction_max_bed"]

_OK_STATUSES = ("optimal", "optimal_inaccurate")
_EXACT_RTOL = 1e-6
"""Relative tolerance at which solver-derived BED values are compared (CLARABEL solves to
~1e-8; 1e-6 is the verification tolerance :data:`rtopt.problem.problem.FEAS_TOL`)."""


# ====================================================================== shared helpers
def _cvxpy():
    import cvxpy as cp  # lazy: available() must not import it

    return cp


def _solver_versions(solver: str) -> tuple[str, str, dict[str, str]]:
    """``("cvxpy/SOLVER", cvxpy version, {dist: version})`` without importing cvxpy."""
    dist = {"CLARABEL": "clarabel", "OSQP": "osqp", "SCS": "scs", "HIGHS": "highspy",
            "SCIP": "pyscipopt", "ECOS": "ecos"}.get(solver.upper(), "")
    extra = {dist: package_version(dist)} if dist else {}
    return f"cvxpy/{solver.upper()}", package_version("cvxpy"), extra


def unknown_solver(options: dict[str, Any]) -> str:
    """Why ``options["solver"]`` cannot be used (not a solver installed for cvxpy), or ``""``.

    Imports cvxpy (call it only when a cvxpy back-end is about to be used).
    """
    solver = str(options.get("solver", "CLARABEL")).upper()
    installed = sorted(_cvxpy().installed_solvers())
    if solver in installed:
        return ""
    return (f"options.solver: '{solver}' is not a solver installed for cvxpy (installed: "
            f"{', '.join(installed) or 'none'})")


class _SolverName:
    """Mixin: an unknown cvxpy solver name is a configuration error, found before solving."""

    @classmethod
    def config_problems(cls, options: SolverOptions) -> list[tuple[str, str]]:
        """``(field.path, message)`` for options this machine cannot honour."""
        why = unknown_solver(options.options)
        return [("options.solver", why.split(": ", 1)[1])] if why else []

    @staticmethod
    def _check_solver(options: SolverOptions) -> None:
        why = unknown_solver(options.options)
        if why:
            raise SolverConfigError(f"configuration error: {why}")


_FALLBACK_SOLVER = "SCS"
"""Conic solver tried once when the configured one raises on a subproblem (ships with cvxpy)."""


def _run_quietly(cp, prob, solver: str, solver_kw: dict[str, Any]) -> str:
    """Solve without letting cvxpy warn or raise; the status, or ``"error: ..."``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prob.solve(solver=solver, **solver_kw)
        except (cp.error.SolverError, ValueError, ArithmeticError) as e:
            return f"error: {str(e).splitlines()[0][:150]}"
    return str(prob.status)


def _quadratic_coefficients(fun: Callable[[float], float],
                            scale: float = 1.0) -> tuple[float, float]:
    """``(c1, c2)`` with ``fun(d) = c1 d + c2 d^2``, read off a function that must be LQ.

    The coefficients come from ``fun`` itself (a :mod:`rtopt.model.radiobiology` expression), so no
    formula is re-derived here; a fourth point checks the quadratic form.
    """
    a, b, c = scale, 2.0 * scale, 3.0 * scale
    fa, fb, fc, f0 = (float(fun(x)) for x in (a, b, c, 0.0))
    c2 = (fb - 2.0 * fa) / (2.0 * a * a)
    c1 = (fa - c2 * a * a) / a
    if abs(f0) > 1e-12 or abs(c1 * c + c2 * c * c - fc) > 1e-9 * max(1.0, abs(fc)):
        raise ValueError("expression is not linear-quadratic through the origin")
    return c1, c2


def oar_bed_coefficients(problem: Problem) -> list[tuple[str, float, float, float]]:
    """``(name, c1, c2, B)`` per OAR with a BED limit: OAR BED of one fraction of tumour dose
    ``d`` is ``c1 d + c2 d^2`` and the course must keep ``sum <= B`` (coefficients read off
    :func:`rtopt.model.radiobiology.bed_per_fraction` of :func:`rtopt.model.radiobiology.oar_doses`)."""
    rows = []
    for o in problem.oars:
        if o.max_bed_gy is None:
            continue
        c1, c2 = _quadratic_coefficients(
            lambda d, o=o: rb.bed_per_fraction(rb.oar_doses(d, o.sparing_factor), o.alpha_beta_gy))
        rows.append((o.name, c1, c2, float(o.max_bed_gy)))
    return rows


def tumour_lq_coefficients(problem: Problem) -> tuple[float, float]:
    """``(c1, c2)`` of the LQ tumour BED of one fraction, ``c1 d + c2 d^2`` (from radiobiology)."""
    return _quadratic_coefficients(lambda d: rb.bed_per_fraction(d, problem.alpha_beta))


def _dose_upper(problem: Problem) -> float:
    """Largest dose per fraction allowed by the dose range and every OAR dose-per-fraction limit."""
    u = problem.d_max
    for o in problem.oars:
        if o.max_dose_per_fraction_gy is not None:
            u = min(u, o.max_dose_per_fraction_gy / o.sparing_factor)
    return u


def _repop_loss(problem: Problem, overall: int) -> float:
    b = problem.biology
    return float(rb.repopulation_bed_loss(float(overall), b.alpha_per_gy,
                                          b.potential_doubling_days, b.repopulation_kickoff_days))


def _daily(problem: Problem, days: tuple[int, ...], doses: np.ndarray) -> np.ndarray:
    row = np.zeros(problem.horizon_days)
    row[list(days)] = doses
    return row


def _calendars(problem: Problem, n: int, starts: np.ndarray | None = None) -> list[tuple[int, ...]]:
    """Distinct compact calendars of ``n`` fractions, shortest first (:meth:`Problem.compact_calendars`)."""
    return problem.compact_calendars(n, starts)


def _feasible_mask(ev, skip: tuple[str, ...] = (), rel: float = FEAS_TOL) -> np.ndarray:
    """Rows of an :class:`Evaluation` that satisfy every constraint except those in ``skip``."""
    ok = np.ones(len(ev.objective), dtype=bool)
    for name, (val, lim, sense, _) in ev.slacks.items():
        if name in skip:
            continue
        sl = (val - lim) if sense == ">=" else (lim - val)
        ok &= sl >= -rel * max(1.0, abs(lim))
    return ok


# ====================================================================== per-fraction reduction
def _ymax(x: float, n: int, l: float, u: float) -> float:
    """Largest ``sum d^2`` over ``d in [l, u]^n`` with ``sum d = x``."""
    if u - l <= 0:
        return n * l * l
    k = int(min(max(math.floor((x - n * l) / (u - l) + 1e-12), 0), n - 1))
    r = x - n * l - k * (u - l)
    return k * u * u + (n - k - 1) * l * l + (l + r) ** 2


def _extreme(x: float, n: int, l: float, u: float) -> np.ndarray:
    """The schedule attaining :func:`_ymax` (ascending doses)."""
    if u - l <= 0:
        return np.full(n, l)
    k = int(min(max(math.floor((x - n * l) / (u - l) + 1e-12), 0), n - 1))
    r = min(max(x - n * l - k * (u - l), 0.0), u - l)
    return np.array([l] * (n - k - 1) + [l + r] + [u] * k)


def per_fraction_max_bed(n: int, l: float, u: float, oar_rows, tumour: tuple[float, float]
                         ) -> tuple[float, np.ndarray] | None:
    """Exact maximum of ``c1 x + c2 y`` (tumour LQ BED, ``x = sum d``, ``y = sum d^2``) over
    ``d in [l, u]^n`` with every OAR row ``a1 x + a2 y <= B``; ``(value, doses)`` or None.

    See the module docstring: the attainable set is ``x^2/n <= y <= ymax(x)``; the best ``y``
    for each ``x`` is ``min(ymax(x), cap(x))`` and the objective along ``x`` is linear or convex
    between the breakpoints enumerated here, so the best breakpoint is the optimum.
    """
    if u < l - 1e-12 or n < 1:
        return None
    u = max(u, l)
    t1, t2 = tumour
    lines = [(a1, a2, B) for (_, a1, a2, B) in oar_rows]

    def cap(x: float) -> float:
        return min([(B - a1 * x) / a2 for a1, a2, B in lines], default=math.inf)

    x_lo, x_hi = n * l, n * u
    for a1, a2, B in lines:  # x^2/n <= (B - a1 x)/a2  <=>  a2 x^2/n + a1 x - B <= 0
        qa, qb, qc = a2 / n, a1, -B
        root = (-qb + math.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
        x_hi = min(x_hi, root)
    if x_hi < x_lo - 1e-9 * max(1.0, x_lo):
        return None
    x_hi = max(x_hi, x_lo)
    cands = {x_lo, x_hi}
    if u > l:
        for k in range(1, n):
            cands.add(x_lo + k * (u - l))
    for (a1, a2, B), (b1, b2, C) in itertools.combinations(lines, 2):
        den = a1 / a2 - b1 / b2
        if abs(den) > 1e-15:
            cands.add((B / a2 - C / b2) / den)
    if u > l:
        for k in range(n):  # piece k: ymax = K + (x - x0)^2
            K = k * u * u + (n - k - 1) * l * l
            x0 = x_lo + k * (u - l) - l
            lo_k, hi_k = x_lo + k * (u - l), x_lo + (k + 1) * (u - l)
            for a1, a2, B in lines:  # K + (x - x0)^2 = (B - a1 x)/a2
                qa, qb, qc = 1.0, -2 * x0 + a1 / a2, x0 * x0 + K - B / a2
                disc = qb * qb - 4 * qa * qc
                if disc < 0:
                    continue
                for sgn in (-1.0, 1.0):
                    xr = (-qb + sgn * math.sqrt(disc)) / 2
                    if lo_k - 1e-9 <= xr <= hi_k + 1e-9:
                        cands.add(xr)
    best = None
    for x in sorted(cands):
        if not x_lo - 1e-12 <= x <= x_hi + 1e-12:
            continue
        x = min(max(x, x_lo), x_hi)
        ymin = x * x / n
        y = min(_ymax(x, n, l, u), cap(x))
        if y < ymin - 1e-9 * max(1.0, ymin):
            continue
        y = max(y, ymin)
        val = t1 * x + t2 * y
        if best is None or val > best[0] + 1e-12 * max(1.0, abs(val)):
            best = (val, x, y)
    if best is None:
        return None
    val, x, y = best
    unif = np.full(n, x / n)
    ext = _extreme(x, n, l, u)
    span = float(np.sum(ext ** 2)) - x * x / n
    frac = min(max((y - x * x / n) / span, 0.0), 1.0) if span > 1e-14 * max(1.0, y) else 0.0
    t = math.sqrt(frac)
    d = np.clip(np.sort(unif + t * (ext - unif)), l, u)
    return val, d


# ====================================================================== cvxpy_convex
@dataclass
class _PerN:
    n: int
    status: str                         # "feasible", "oar_infeasible", "prescription", "calendar",
    dose: np.ndarray | None = None      # "nk", "numerical"
    days: tuple[int, ...] | None = None
    nk_days: tuple[int, ...] = ()
    bed: float | None = None            # tumour BED of the plan (Problem.tumour_bed)
    bound: float | None = None          # optimum for n with the least repopulation loss
    claim: float | None = None          # cvxpy value converted to BED
    relaxation: float | None = None
    note: str = ""


class CvxpyConvexBackend(_SolverName, Backend):
    name = "cvxpy_convex"
    description = "exact convex QCQP per fraction count for the classic tumour-BED problem (cvxpy)"
    objectives = ("tumour_bed",)
    supports_nk = False             # declines NK objectives; with [nk] and tumour BED, infusions are placed by the rules
    supports_per_fraction = True    # LQ tumour and continuous doses only (see check)
    supports_continuous_dose = True
    global_optimality = True
    requires = ("cvxpy",)
    guarantee = ("optimal for the instance (tumour BED, to solver tolerance) when termination is "
                 "optimal and exact_for_instance is set: one convex QCQP per fraction count for "
                 "uniform doses, the exact Saberian (x, y) reduction for per-fraction LQ doses")

    def check(self, problem: Problem) -> tuple[bool, str]:
        ok, why = super().check(problem)
        if not ok:
            return ok, why
        if not problem.uniform:
            if not problem.continuous_dose:
                return False, ("cvxpy_convex: per-fraction doses on a dose grid are an integer "
                               "programme; the Saberian reduction is exact only for continuous "
                               "doses")
            if problem.biology.survival_model != "lq":
                return False, ("cvxpy_convex: per-fraction doses need an LQ tumour "
                               f"(survival_model '{problem.biology.survival_model}' makes tumour "
                               "BED depend on more than sum d and sum d^2)")
        return True, ""

    # ------------------------------------------------------------------ solve
    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:
        solver = str(options.options.get("solver", "CLARABEL")).upper()
        name, version, extra_versions = _solver_versions(solver)
        self._check_solver(options)  # a configuration error, raised before any solve
        try:
            return self._solve(problem, options, solver, name, version, extra_versions)
        except Exception as e:  # solver faults are reported, never raised
            term = (Termination.NUMERICAL if isinstance(e, (ArithmeticError, FloatingPointError))
                    or "Solver" in type(e).__name__ else Termination.ERROR)
            return BackendOutput((), term, message=f"{type(e).__name__}: {e}".splitlines()[0][:500],
                                 solver_name=name, solver_version=version)

    def _solve(self, problem, options, solver, name, version, extra_versions) -> BackendOutput:
        t0 = time.perf_counter()
        deadline = t0 + options.time_limit_s
        cp = _cvxpy()
        solver_kw = dict(options.options.get("solver_options", {}))
        weight = problem.weights.get("tumour_bed", 1.0)
        oar_rows = oar_bed_coefficients(problem)
        l, u = problem.d_min, _dose_upper(problem)
        n_lo, n_hi = problem.fraction_count_range()
        repop = (problem.biology.potential_doubling_days is not None
                 and problem.biology.repopulation_kickoff_days is not None)
        per_n: list[_PerN] = []
        timed_out = False
        if problem.uniform:
            forms = [self._uniform_problem(cp, oar_rows, l, u)]
        else:
            prob, params = self._relaxation_problem(cp, oar_rows, l, u,
                                                    tumour_lq_coefficients(problem))
        for n in range(n_lo, n_hi + 1):
            if time.perf_counter() > deadline:
                timed_out = True
                break
            if problem.uniform:
                r = self._solve_uniform_n(problem, cp, forms, oar_rows, n, l, u, solver, solver_kw)
            else:
                r = self._solve_per_fraction_n(problem, cp, prob, params, oar_rows, n, l, u, solver,
                                               solver_kw)
            if r.status == "feasible":
                self._place(problem, r, repop)
            per_n.append(r)
        feas = [r for r in per_n if r.status == "feasible"]
        extras: dict[str, Any] = {
            "formulation": ("uniform: max d s.t. OAR QCQP per n" if problem.uniform
                            else "per-fraction: exact Saberian (x, y) reduction"),
            "solver_versions": extra_versions,
            "per_n": {r.n: {"status": r.status, "tumour_bed_gy": r.bed, "bound_gy": r.bound,
                            "claim_gy": r.claim, "dose_gy": None if r.dose is None
                            else [round(float(x), 9) for x in np.atleast_1d(r.dose)],
                            "relaxation_bound_bed_gy": r.relaxation, "note": r.note}
                      for r in per_n},
        }
        bad = [r for r in per_n if r.status == "numerical"]
        if not feas:
            extras["exact_for_instance"] = False
            if timed_out:
                return BackendOutput((), Termination.TIME_LIMIT, message="time limit before any "
                                     "fraction count was solved", solver_name=name,
                                     solver_version=version, extras=extras)
            if bad:
                return BackendOutput((), Termination.NUMERICAL, message="; ".join(
                    f"n={r.n}: {r.note}" for r in bad)[:500], solver_name=name,
                    solver_version=version, extras=extras)
            if any(r.status in ("nk", "calendar") for r in per_n):
                return BackendOutput((), Termination.NO_SOLUTION, message="; ".join(
                    f"n={r.n}: {r.note}" for r in per_n if r.status in ("nk", "calendar"))[:500],
                    solver_name=name, solver_version=version, extras=extras)
            return BackendOutput((), Termination.INFEASIBLE,
                                 message=self._why_infeasible(per_n, problem),
                                 solver_name=name, solver_version=version, extras=extras)
        # best BED; ties (within the solver's accuracy) go to the fewest fractions
        top = max(r.bed for r in feas)
        tol = _EXACT_RTOL * max(1.0, abs(top))
        feas.sort(key=lambda r: (r.bed < top - tol, -r.bed if r.bed < top - tol else r.n))
        best = feas[0]
        # fall-back plans: the next fraction counts that are not ties of the best (a tie that
        # verification scores a hair higher would otherwise replace the documented choice)
        keep = [best] + [r for r in feas[1:] if r.bed < top - tol][:4]
        plans = tuple(Plan(r.days, tuple(float(x) for x in np.broadcast_to(r.dose, (r.n,))),
                           r.nk_days) for r in keep)
        solved_all = not timed_out and not bad
        # exact when no fraction count could beat the plan had it found a plan for its bound
        # (bounds and claims both come from the solver, so they compare at its accuracy)
        lost = [r for r in per_n if r.bound is not None and r.bound > best.claim + tol
                and (r.status != "feasible" or r.claim < r.bound - tol)]
        exact = solved_all and not lost
        extras["exact_for_instance"] = exact
        if lost:
            extras["not_exact_because"] = [f"n={r.n}: {r.note}" for r in lost]
        term = Termination.OPTIMAL if solved_all else (Termination.TIME_LIMIT if timed_out
                                                       else Termination.NUMERICAL)
        claim = weight * (best.claim if best.claim is not None else best.bed)
        msg = f"best n = {best.n}"
        if bad:
            msg += "; solver failed for " + ", ".join(f"n={r.n} ({r.note})" for r in bad)
        return BackendOutput(plans, term, claimed_objective=claim,
                             bound=claim if exact else None, message=msg, solver_name=name,
                             solver_version=version, extras=extras)

    # ------------------------------------------------------------------ formulations
    @staticmethod
    def _uniform_problem(cp, oar_rows, l, u, soc: bool = False):
        """``max d`` over the OAR limits for one ``n`` (set by :meth:`_set_n`).

        ``soc=False``: the QCQP ``c1 d + c2 d^2 <= B / n`` as written.  ``soc=True`` (the
        fallback after a solver failure): the same set with the square completed,
        ``|d + a| <= R``, ``a = c1 / (2 c2)``, ``R = sqrt(B / (n c2) + a^2)``.
        """
        d = cp.Variable(name="dose_per_fraction_gy")
        cap = cp.Parameter(len(oar_rows), nonneg=True, name="oar_cap") if oar_rows else None
        cons = [d >= l, d <= u]
        for j, (_, c1, c2, _) in enumerate(oar_rows):
            if soc:
                cons.append(cp.abs(d + c1 / (2.0 * c2)) <= cap[j])
            else:
                cons.append(c1 * d + c2 * cp.square(d) <= cap[j])
        return cp.Problem(cp.Maximize(d), cons), cap, d, soc

    @staticmethod
    def _set_n(form, oar_rows, n) -> None:
        _, cap, _, soc = form
        if cap is None:
            return
        if soc:
            cap.value = np.array([math.sqrt(B / (n * c2) + (c1 / (2.0 * c2)) ** 2)
                                  for (_, c1, c2, B) in oar_rows])
        else:
            cap.value = np.array([B / n for (_, _, _, B) in oar_rows])

    @staticmethod
    def _relaxation_problem(cp, oar_rows, l, u, tumour):
        """Saberian LP over conv{(sum d, sum d^2)}: x^2/n <= y <= (u+l) x - n u l."""
        x, y = cp.Variable(name="sum_dose"), cp.Variable(name="sum_dose_squared")
        n = cp.Parameter(nonneg=True, name="n_fractions")
        nul = cp.Parameter(name="n_u_l")
        xlo, xhi = cp.Parameter(name="x_lo"), cp.Parameter(name="x_hi")
        cons = [cp.square(x) <= n * y, y <= (u + l) * x - nul, x >= xlo, x <= xhi]
        for _, c1, c2, B in oar_rows:
            cons.append(c1 * x + c2 * y <= B)
        prob = cp.Problem(cp.Maximize(tumour[0] * x + tumour[1] * y), cons)
        return prob, {"n": n, "nul": nul, "xlo": xlo, "xhi": xhi}

    @staticmethod
    def _run(cp, prob, solver, solver_kw) -> tuple[str, str]:
        status = _run_quietly(cp, prob, solver, solver_kw)
        return (status, "") if not status.startswith("error") else ("error", status)

    def _solve_uniform_n(self, problem, cp, forms, oar_rows, n, l, u, solver, solver_kw) -> _PerN:
        if u < l:
            return _PerN(n, "oar_infeasible", note=f"dose-per-fraction limits allow at most "
                                                   f"{u:.4g} Gy < d_min {l:g} Gy")
        for attempt in range(2):
            if attempt == 1 and len(forms) == 1:
                forms.append(self._uniform_problem(cp, oar_rows, l, u, soc=True))
            form = forms[attempt]
            self._set_n(form, oar_rows, n)
            status, err = self._run(cp, form[0], solver, solver_kw)
            if status in _OK_STATUSES + ("infeasible", "infeasible_inaccurate"):
                break
        if status in ("infeasible", "infeasible_inaccurate"):
            return _PerN(n, "oar_infeasible", note="OAR limits exclude every dose >= d_min")
        if status not in _OK_STATUSES or form[2].value is None:
            return _PerN(n, "numerical", note=f"solver status {status} {err}".strip())
        d_star = float(form[2].value)
        d = self._polish_uniform(d_star, n, oar_rows, l, u)
        if d is None:
            return _PerN(n, "oar_infeasible", note="OAR limits exclude every dose >= d_min")
        if not problem.continuous_dose:
            # largest grid dose within the solver's accuracy of the optimum that meets every
            # limit exactly (a grid point at the optimum, e.g. 75 Gy, must not round to 74.5)
            grid = problem.dose_grid()
            g = grid[grid <= d_star * (1.0 + _EXACT_RTOL) + 1e-9]
            g = [x for x in g[::-1][:3] if self._uniform_ok(x, n, oar_rows, u)]
            if not g or g[0] < l - 1e-12:
                return _PerN(n, "oar_infeasible", note=f"no grid dose <= {d:.4g} Gy")
            d_claim = d = float(g[0])
        else:
            d_claim = d_star
        r = _PerN(n, "feasible", dose=np.array(d),
                  note=f"cvxpy {status}" + (" (completed-square SOC form)" if form[3] else ""))
        r.claim = float(n * self._bed1(problem, d_claim))  # loss added in _place
        return r

    @staticmethod
    def _uniform_ok(d, n, oar_rows, u) -> bool:
        """Grid dose ``d`` meets every limit up to floating-point rounding (1e-12 relative)."""
        return d <= u * (1 + 1e-12) and all(n * (c1 * d + c2 * d * d) <= B * (1 + 1e-12)
                                            for _, c1, c2, B in oar_rows)

    def _polish_uniform(self, d, n, oar_rows, l, u) -> float | None:
        """Move the solver's dose down by its (tiny) constraint violation so limits hold exactly."""
        d = min(max(d, l), u)
        for _ in range(60):
            e = max([n * (c1 * d + c2 * d * d) / B - 1.0 for _, c1, c2, B in oar_rows],
                    default=-1.0)
            if e <= 0:
                return d
            d = d * (1.0 - e) - 1e-13 * max(1.0, d)
            if d < l * (1 - 1e-12):
                return None
        return None

    @staticmethod
    def _bed1(problem: Problem, d: float) -> float:
        """Tumour BED of one fraction of ``d`` Gy under the instance's survival model."""
        b = problem.biology
        return float(rb.bed_per_fraction(d, problem.alpha_beta, model=b.survival_model,
                                         transition_dose_gy=b.transition_dose_gy,
                                         alpha=b.alpha_per_gy, d0_gy=b.usc_d0_gy,
                                         dq_gy=b.usc_dq_gy))

    def _solve_per_fraction_n(self, problem, cp, prob, params, oar_rows, n, l, u, solver,
                              solver_kw) -> _PerN:
        tum = tumour_lq_coefficients(problem)
        res = per_fraction_max_bed(n, l, u, oar_rows, tum)
        relax = None
        if u >= l:
            params["n"].value = float(n)
            params["nul"].value = n * u * l
            params["xlo"].value, params["xhi"].value = n * l, n * u
            status, err = self._run(cp, prob, solver, solver_kw)
            if status in _OK_STATUSES:
                relax = float(prob.value)
            elif status not in ("infeasible", "infeasible_inaccurate"):
                return _PerN(n, "numerical",
                             note=f"relaxation: solver status {status} {err}".strip())
        if res is None:
            return _PerN(n, "oar_infeasible", relaxation=relax,
                         note="OAR limits exclude every schedule with doses >= d_min")
        val, d = res
        note = "exact (x, y) breakpoints"
        if relax is not None and relax < val - 1e-6 * max(1.0, abs(val)):
            note += f"; relaxation {relax:.9g} below the exact value (solver inaccuracy)"
        d = self._polish_vector(d, oar_rows, l)
        if d is None:
            return _PerN(n, "oar_infeasible", relaxation=relax, note="rounding broke an OAR limit")
        return _PerN(n, "feasible", dose=d, claim=float(val), relaxation=relax, note=note)

    @staticmethod
    def _polish_vector(d, oar_rows, l):
        for _ in range(60):
            e = max([float(c1 * d.sum() + c2 * (d ** 2).sum()) / B - 1.0
                     for _, c1, c2, B in oar_rows], default=-1.0)
            if e <= 0:
                return d
            d = np.maximum(d * (1.0 - e) - 1e-13 * np.maximum(1.0, d), l)
        return None

    def _place(self, problem: Problem, r: _PerN, repop: bool) -> None:
        """Choose the calendar (least overall time that admits the NK rules) and finish ``r``."""
        cals = _calendars(problem, r.n) if (repop or problem.nk is not None) else \
            [c for c in [problem.compact_calendar(r.n)] if c is not None]
        if not cals:
            cals = _calendars(problem, r.n)
        if not cals:
            r.status, r.note = "calendar", f"no compact calendar of {r.n} fractions fits"
            return
        loss_min = _repop_loss(problem, cals[0][-1] - cals[0][0])
        base = r.claim
        r.bound = base - loss_min
        r.claim = base - loss_min
        for cal in cals:
            nk = problem.first_valid_infusions(cal)
            if nk is None:
                continue
            row = _daily(problem, cal, np.broadcast_to(r.dose, (r.n,)))
            r.days, r.nk_days = cal, nk
            r.bed = float(problem.tumour_bed(row)[0])
            loss = _repop_loss(problem, cal[-1] - cal[0])
            r.claim = base - loss
            if loss > loss_min:
                r.note += f"; NK rules need a longer calendar (repopulation loss {loss:.4g} Gy)"
            break
        else:
            r.status, r.note = "nk", (f"no compact calendar of {r.n} fractions admits "
                                      f"{problem.nk.n_min} rule-abiding NK infusion(s)")
            return
        if r.bed < problem.min_bed - FEAS_TOL * max(1.0, problem.min_bed):
            r.status = "prescription"
            r.note = (f"max tumour BED {r.bed:.6g} Gy < prescription {problem.min_bed:g} Gy")

    @staticmethod
    def _why_infeasible(per_n: list[_PerN], problem: Problem) -> str:
        pres = [r for r in per_n if r.status == "prescription"]
        if pres:
            b = max(pres, key=lambda r: r.bed)
            return (f"prescription {problem.min_bed:g} Gy is above the highest tumour BED the "
                    f"limits allow ({b.bed:.6g} Gy at n = {b.n})")
        return "the OAR and dose limits exclude every fraction count"


# ====================================================================== cvxpy_ccp
@dataclass
class _Cand:
    objective: float
    plan: Plan
    source: str


@dataclass
class _Stats:
    evaluate_calls: int = 0
    evaluations: int = 0
    solves: int = 0
    solver_failures: int = 0
    iterations: int = 0
    accepted: int = 0
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class _Job:
    """One calendar being refined: doses ``z`` (one value if uniform), infusions, objective."""

    cal: tuple[int, ...]
    z: np.ndarray
    nk: tuple[int, ...]
    f: float
    radius: float = 1.0
    grad: tuple | None = None
    done: bool = False


class CvxpyCcpBackend(_SolverName, Backend):
    name = "cvxpy_ccp"
    description = ("sequential convex programming (trust-region SCP, cvxpy) over doses, with "
                   "calendars and NK infusion days as outer decisions")
    objectives = OBJECTIVES
    supports_costs = True
    supports_nk = True
    supports_per_fraction = True
    supports_outcome_limits = True
    supports_tumour_dose_ratio = True
    supports_continuous_dose = True
    global_optimality = False
    requires = ("cvxpy",)
    guarantee = ("local optimum: a verified feasible plan whose doses are a local optimum for the "
                 "chosen calendar and infusion days (no bound)")

    # ------------------------------------------------------------------ entry
    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:
        t_start = time.perf_counter()  # the time limit counts the solver library's import too
        solver = str(options.options.get("solver", "CLARABEL")).upper()
        name, version, extra_versions = _solver_versions(solver)
        self._check_solver(options)  # a configuration error, raised before any solve
        st = _Stats()
        cands: list[_Cand] = []
        try:
            return self._solve(problem, options, solver, name, version, extra_versions, st, cands,
                               t_start)
        except _OutOfTime:  # a large evaluation reached the deadline: keep what was found
            plans, claim = self._pack(cands, max(1, int(options.options.get("n_candidates", 3))))
            return BackendOutput(plans, Termination.TIME_LIMIT, claimed_objective=claim,
                                 message="time limit reached; best plan found so far",
                                 solver_name=name, solver_version=version,
                                 extras={"exact_for_instance": False, **st.__dict__})
        except Exception as e:  # never raise for solver faults: keep what was found
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            term = (Termination.NUMERICAL if isinstance(e, (ArithmeticError, FloatingPointError))
                    or "Solver" in type(e).__name__ else Termination.ERROR)
            plans, claim = self._pack(cands, 5)
            return BackendOutput(plans, term, claimed_objective=claim, message=msg,
                                 solver_name=name, solver_version=version,
                                 extras={"exact_for_instance": False, **st.__dict__})

    @staticmethod
    def _pack(cands: list[_Cand], k: int) -> tuple[tuple[Plan, ...], float | None]:
        best: dict[Plan, _Cand] = {}
        for c in cands:
            if np.isfinite(c.objective) and (c.plan not in best
                                             or c.objective > best[c.plan].objective):
                best[c.plan] = c
        order = sorted(best.values(), key=lambda c: -c.objective)[:k]
        return tuple(c.plan for c in order), (order[0].objective if order else None)

    @staticmethod
    def _screen(ctx: "_Context", sets: dict[tuple[int, ...], tuple[int, ...]],
                cands: list[_Cand]) -> dict[tuple[int, ...], "_Job"]:
        """Every calendar at a few uniform doses with its infusion set, in one evaluate call;
        the best feasible dose per calendar as a :class:`_Job`."""
        rows, U, meta = [], [], []
        for cal, nk in sets.items():
            for d in ctx.screen_doses(len(cal)):
                rows.append(_daily(ctx.problem, cal, np.full(len(cal), d)))
                U.append(ctx.u_row(nk))
                meta.append((cal, float(d), nk))
        out: dict[tuple[int, ...], _Job] = {}
        if not rows:
            return out
        # in chunks, collecting candidates as they come, so that a deadline reached during a
        # large screen stops it with the plans found so far (see _Context.evaluate)
        step = max(64, _EVAL_CHUNK_DAYS // max(1, ctx.problem.horizon_days))
        for a in range(0, len(rows), step):
            ev = ctx.evaluate(np.array(rows[a:a + step]), np.array(U[a:a + step]))
            ok = _feasible_mask(ev)
            for i, (cal, d, nk) in enumerate(meta[a:a + step]):
                f = float(ev.objective[i])
                if ok[i] and np.isfinite(f):
                    cands.append(_Cand(f, Plan.uniform(cal, d, nk), "screen"))
                    if cal not in out or f > out[cal].f:
                        out[cal] = _Job(cal, np.full(len(cal), d), nk, f)
        return out

    def _solve(self, problem, options, solver, name, version, extra_versions, st, cands,
               t0=None):
        t0 = time.perf_counter() if t0 is None else t0
        deadline = t0 + options.time_limit_s
        o = options.options
        cfg = dict(start_window_days=int(o.get("start_window_days", 7)),
                   screen_doses=max(2, int(o.get("screen_doses", 7))),
                   refine_calendars=max(1, int(o.get("refine_calendars", 6))),
                   alternations=max(1, int(o.get("alternations", 3))),
                   max_iterations=int(o.get("max_iterations", 40)),
                   fd_step_gy=float(o.get("fd_step_gy", 1e-3)),
                   min_radius_gy=float(o.get("min_trust_radius_gy", 1e-3)),
                   max_infusion_sets=int(o.get("max_infusion_sets", 2048)),
                   n_candidates=max(1, int(o.get("n_candidates", 3))),
                   jitter_gy=float(o.get("jitter_gy", 0.0)),
                   oar_margin=float(o.get("oar_margin", 1e-7)),
                   solver=solver, solver_options=dict(o.get("solver_options", {})))
        rng = np.random.default_rng(options.seed)
        cp = _cvxpy()
        ctx = _Context(problem, cp, cfg, deadline, st, cands)
        l, u = problem.d_min, ctx.u
        n_lo, n_hi = problem.fraction_count_range()
        allowed = problem.allowed_days
        starts = (allowed[allowed < allowed[0] + cfg["start_window_days"]] if allowed.size
                  else allowed)
        calendars: list[tuple[int, ...]] = []
        for n in range(n_lo, n_hi + 1):
            for c in _calendars(problem, n, starts):
                if c not in calendars:
                    calendars.append(c)
        extras: dict[str, Any] = {"exact_for_instance": False, "solver_versions": extra_versions,
                                  "calendars_screened": len(calendars), "config": cfg}

        def finish(term: str, msg: str) -> BackendOutput:
            plans, claim = self._pack(cands, cfg["n_candidates"])
            if not plans and term in (Termination.COMPLETED, Termination.TIME_LIMIT):
                term = Termination.NUMERICAL if st.solver_failures else Termination.NO_SOLUTION
            extras.update({k: v for k, v in st.__dict__.items() if k != "timed_out"})
            extras["wall_time_backend_s"] = round(time.perf_counter() - t0, 4)
            return BackendOutput(plans, term, claimed_objective=claim, bound=None, message=msg,
                                 solver_name=name, solver_version=version, extras=extras)

        if not calendars or u < l:
            return finish(Termination.NO_SOLUTION,
                          "no compact calendar fits the fraction range" if not calendars else
                          f"dose-per-fraction limits allow at most {u:.4g} Gy < d_min {l:g} Gy")

        # ---- stage 1: dose screen of every calendar with a default infusion set (one call)
        sets0 = {c: ctx.default_infusions(c) for c in calendars}
        start = self._screen(ctx, {c: s for c, s in sets0.items() if s is not None}, cands)
        # per-fraction LQ: where no uniform dose is feasible, start from the exact max-BED point
        if (not problem.uniform and problem.continuous_dose
                and problem.biology.survival_model == "lq"):
            oar_rows, tum = ctx.oar_rows, tumour_lq_coefficients(problem)
            for cal in calendars:
                nk0 = sets0[cal]
                if cal in start or nk0 is None:
                    continue
                res = per_fraction_max_bed(len(cal), l, u, oar_rows, tum)
                d = None if res is None else CvxpyConvexBackend._polish_vector(res[1], oar_rows, l)
                if d is None:
                    continue
                ev = ctx.evaluate(_daily(problem, cal, d)[None], ctx.u_row(nk0)[None])
                if _feasible_mask(ev)[0] and np.isfinite(ev.objective[0]):
                    f = float(ev.objective[0])
                    start[cal] = _Job(cal, d, nk0, f)
                    cands.append(_Cand(f, Plan(cal, tuple(d), nk0), "per-fraction start"))
        if not start:
            return finish(Termination.NO_SOLUTION, "no screened schedule (compact calendars x "
                          "uniform doses) meets the limits")

        # ---- stage 2: infusion days at each calendar's best screened dose (batched), then the
        # dose screen again with those days, alternating while either choice changes
        jobs = list(start.values())
        changed = jobs
        for _ in range(cfg["alternations"]):
            ctx.choose_infusions(changed)
            for j in changed:
                cands.append(_Cand(j.f, ctx.plan(j), "infusions"))
            if ctx.out_of_time() or not problem.needs_simulation or problem.nk is None:
                break
            uniform_jobs = {j.cal: j for j in jobs if np.ptp(j.z) == 0}
            again = self._screen(ctx, {c: j.nk for c, j in uniform_jobs.items()}, cands)
            moved = []
            for c, jn in again.items():
                j = uniform_jobs[c]
                if jn.f > j.f and float(jn.z[0]) != float(j.z[0]):
                    j.z, j.f = jn.z, jn.f
                    moved.append(j)
            # re-choose infusions only where the dose moved, among the leading calendars
            lead = {j.cal for j in sorted(jobs, key=lambda j: -j.f)[:2 * cfg["refine_calendars"]]}
            changed = [j for j in moved if j.cal in lead]
            if not changed:
                break
        jobs.sort(key=lambda j: -j.f)
        extras["calendars_ranked"] = len(jobs)

        # ---- stage 3: SCP on doses of the best calendars, alternating with the infusion choice
        jobs = jobs[:cfg["refine_calendars"]]
        for j in jobs:
            if problem.uniform:
                j.z = j.z[:1]
            elif cfg["jitter_gy"] > 0:
                ctx.jitter(j, rng, cfg["jitter_gy"])
        todo = list(jobs)
        for _ in range(cfg["alternations"]):
            if not todo or ctx.out_of_time():
                break
            ctx.scp(todo)
            if problem.continuous_dose:  # grid instances: only rounded plans are candidates
                for j in todo:
                    cands.append(_Cand(j.f, ctx.plan(j), "scp"))
            before = {id(j): j.nk for j in todo}
            ctx.choose_infusions(todo)
            todo = [j for j in todo if j.nk != before[id(j)]]
            for j in todo:
                j.done, j.grad = False, None
        if not problem.continuous_dose:
            ctx.round_to_grid(jobs)
            ctx.choose_infusions([j for j in jobs if np.isfinite(j.f)])
        extras["refined"] = []
        for j in jobs:
            if not np.isfinite(j.f):
                st.notes.append(f"{j.cal}: no feasible grid rounding")
                continue
            plan = ctx.plan(j)
            cands.append(_Cand(j.f, plan, "scp"))
            extras["refined"].append({"calendar": list(j.cal), "objective": j.f,
                                      "doses_gy": [round(x, 6) for x in plan.doses_gy],
                                      "nk_days": list(j.nk)})
        msg = "local optimum (sequential convex programming)"
        if st.solver_failures:
            msg += f"; {st.solver_failures} subproblem solve(s) failed"
        return finish(Termination.TIME_LIMIT if st.timed_out else Termination.COMPLETED, msg)


_EVAL_CHUNK_DAYS = 250_000
"""Simulated schedule-days per evaluation chunk (a fraction of a second on one core)."""


class _OutOfTime(Exception):
    """The deadline passed inside a large evaluation (caught by :meth:`CvxpyCcpBackend.solve`)."""


def _concat_evaluations(parts: list) -> Any:
    """One :class:`rtopt.problem.problem.Evaluation` from the evaluations of consecutive row chunks."""
    first = parts[0]
    return Evaluation(
        np.concatenate([e.objective for e in parts]),
        {k: np.concatenate([np.broadcast_to(e.metrics[k], e.objective.shape) for e in parts])
         for k in first.metrics},
        {k: (np.concatenate([np.broadcast_to(e.slacks[k][0], e.objective.shape) for e in parts]),)
         + tuple(first.slacks[k][1:]) for k in first.slacks},
        np.concatenate([e.violation for e in parts]))


class _Context:
    """State shared by the CCP stages: the problem, compiled subproblems, budget and counters.

    Every stage works on a batch of :class:`_Job` and makes one :meth:`Problem.evaluate` call
    per round for the whole batch (the simulator's cost is dominated by its per-call time loop).
    """

    def __init__(self, problem: Problem, cp, cfg: dict[str, Any], deadline: float, st: _Stats,
                 cands: list | None = None):
        self.problem, self.cp, self.cfg, self.deadline, self.st = problem, cp, cfg, deadline, st
        self.cands = cands if cands is not None else []
        self.u = _dose_upper(problem)
        self.oar_rows = oar_bed_coefficients(problem)
        self._sub: dict[tuple[int, int], Any] = {}
        self._valid_days: dict[tuple[int, ...], list[int]] = {}

    # ------------------------------------------------------------------ basics
    def out_of_time(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.st.timed_out = True
        return self.st.timed_out

    def evaluate(self, D: np.ndarray, U: np.ndarray):
        """:meth:`Problem.evaluate` in chunks of ``_EVAL_CHUNK_DAYS`` simulated schedule-days,
        checking the deadline before each chunk; past it (with a candidate plan already found)
        the stage stops by raising :class:`_OutOfTime` (the back-end then returns what it has)."""
        if self.cands and self.out_of_time():
            raise _OutOfTime
        self.st.evaluate_calls += 1
        step = max(64, _EVAL_CHUNK_DAYS // max(1, self.problem.horizon_days))
        if len(D) <= step:
            self.st.evaluations += len(D)
            return self.problem.evaluate(D, U)
        parts = []
        for a in range(0, len(D), step):
            if a and self.cands and self.out_of_time():
                raise _OutOfTime
            parts.append(self.problem.evaluate(D[a:a + step], U[a:a + step]))
            self.st.evaluations += len(D[a:a + step])
        return _concat_evaluations(parts)

    def u_row(self, nk: tuple[int, ...]) -> np.ndarray:
        u = np.zeros(self.problem.horizon_days)
        for t in nk:
            u[t] += 1
        return u

    def expand(self, z: np.ndarray, n: int) -> np.ndarray:
        z = np.atleast_1d(np.asarray(z, dtype=float))
        return np.full(n, z[0]) if z.size == 1 else z

    def row(self, cal, z) -> np.ndarray:
        return _daily(self.problem, cal, self.expand(z, len(cal)))

    def plan(self, j: _Job) -> Plan:
        return Plan(j.cal, tuple(float(x) for x in self.expand(j.z, len(j.cal))), j.nk)

    def screen_doses(self, n: int) -> np.ndarray:
        p = self.problem
        hi = min(p.max_uniform_dose(n), self.u)
        k = self.cfg["screen_doses"]
        if p.continuous_dose:
            return np.linspace(p.d_min, hi, k) if hi >= p.d_min else np.array([])
        g = p.dose_grid()
        g = g[g <= hi + 1e-9]
        if g.size <= k:
            return g
        idx = np.unique(np.round(np.linspace(0, g.size - 1, k)).astype(int))
        return g[idx]

    def jitter(self, j: _Job, rng, scale: float) -> None:
        z2 = np.clip(j.z + rng.normal(0.0, scale, j.z.shape), self.problem.d_min, self.u)
        ev = self.evaluate(self.row(j.cal, z2)[None], self.u_row(j.nk)[None])
        if _feasible_mask(ev, ("dose_grid",))[0] and np.isfinite(ev.objective[0]):
            j.z, j.f = z2, float(ev.objective[0])

    # ------------------------------------------------------------------ infusions
    def valid_days(self, cal: tuple[int, ...]) -> list[int]:
        if cal not in self._valid_days:
            r = self.problem.nk
            self._valid_days[cal] = [t for t in range(r.earliest_day, r.latest_day + 1)
                                     if self.problem.infusion_day_ok(cal, t)]
        return self._valid_days[cal]

    def default_infusions(self, cal: tuple[int, ...]) -> tuple[int, ...] | None:
        """Earliest rule-abiding minimum set (``()`` without NK)."""
        return self.problem.first_valid_infusions(cal) if self.problem.nk is not None else ()

    def _sets(self, cal) -> list[tuple[int, ...]] | None:
        """Every rule-abiding infusion set for ``cal`` (None if more than ``max_infusion_sets``)."""
        r = self.problem.nk
        valid = self.valid_days(cal)
        cap = self.cfg["max_infusion_sets"]
        out: list[tuple[int, ...]] = []

        def rec(i0: int, cur: list[int]) -> bool:
            if len(cur) >= r.n_min:
                out.append(tuple(cur))
                if len(out) > cap:
                    return False
            if len(cur) == r.n_max:
                return True
            for i in range(i0, len(valid)):
                t = valid[i]
                if cur and t - cur[-1] < r.min_interval_days:
                    continue
                cur.append(t)
                ok = rec(i + 1, cur)
                cur.pop()
                if not ok:
                    return False
            return True

        return out if rec(0, []) else None

    def _score(self, items: list[tuple[_Job, list[tuple[int, ...]]]]) -> list[np.ndarray]:
        """Objective of each job's doses with each of its candidate sets, in one evaluate call."""
        D, U, sizes = [], [], []
        for j, sets in items:
            row = self.row(j.cal, j.z)
            D.append(np.repeat(row[None], len(sets), axis=0))
            U.extend(self.u_row(s) for s in sets)
            sizes.append(len(sets))
        if not sizes or sum(sizes) == 0:
            return [np.array([]) for _ in items]
        ev = self.evaluate(np.concatenate(D), np.array(U))
        obj = np.where(_feasible_mask(ev, ("dose_grid",)) & np.isfinite(ev.objective),
                       ev.objective, -np.inf)
        return np.split(obj, np.cumsum(sizes)[:-1])

    def choose_infusions(self, jobs: list[_Job]) -> None:
        """Best infusion set for each job at its doses: every rule-abiding set when there are at
        most ``max_infusion_sets``, else coordinate ascent (moves, additions, removals)."""
        p = self.problem
        if p.nk is None or not p.needs_simulation or not jobs or self.out_of_time():
            return
        full, greedy = [], []
        for j in jobs:
            sets = self._sets(j.cal)
            if sets is None:
                greedy.append(j)
            elif sets:
                full.append((j, sets))
        for (j, sets), obj in zip(full, self._score(full)):
            k = int(np.argmax(obj))
            if obj[k] > j.f:
                j.nk, j.f = sets[k], float(obj[k])
        r = p.nk

        def ok(s):
            return (r.n_min <= len(s) <= r.n_max
                    and all(b - a >= r.min_interval_days for a, b in zip(s, s[1:])))

        for _ in range(25):
            if not greedy or self.out_of_time():
                break
            items = []
            for j in greedy:
                nb, cur = set(), j.nk
                for i in range(len(cur)):
                    rest = cur[:i] + cur[i + 1:]
                    nb.add(rest)
                    nb.update(tuple(sorted(rest + (t,))) for t in self.valid_days(j.cal))
                if len(cur) < r.n_max:
                    nb.update(tuple(sorted(cur + (t,))) for t in self.valid_days(j.cal))
                nb = [s for s in nb if s != cur and ok(s)]
                if nb:
                    items.append((j, nb))
            moved = []
            for (j, nb), obj in zip(items, self._score(items)):
                k = int(np.argmax(obj))
                if obj[k] > j.f + 1e-12 * max(1.0, abs(j.f)):
                    j.nk, j.f = nb[k], float(obj[k])
                    moved.append(j)
            greedy = moved

    # ------------------------------------------------------------------ SCP
    def _subproblem(self, m: int, n: int):
        """Compiled DPP trust-region subproblem for ``m`` dose variables standing for ``n``
        fractions (``m = 1``: uniform)."""
        key = (m, n)
        if key in self._sub:
            return self._sub[key]
        cp = self.cp
        p = self.problem
        z = cp.Variable(m, name="dose_gy")
        dz = cp.Variable(m, name="step_gy")
        par = {"zk": cp.Parameter(m, name="z_k"), "g": cp.Parameter(m, name="gradient"),
               "c": cp.Parameter(m, nonneg=True, name="neg_curvature"),
               "r": cp.Parameter(nonneg=True, name="trust_radius"),
               "pg": cp.Parameter(m, name="bed_gradient"), "prhs": cp.Parameter(name="bed_rhs")}
        mult = n if m == 1 else 1  # uniform: one variable stands for n fractions
        cons = [dz == z - par["zk"], z >= p.d_min, z <= self.u, cp.abs(dz) <= par["r"],
                par["pg"] @ z >= par["prhs"]]
        margin = self.cfg["oar_margin"]
        for _, c1, c2, B in self.oar_rows:
            # mult (c1 sum z + c2 sum z^2) <= B, with the square completed: a second-order cone
            # ||z + a|| <= R, a = c1 / (2 c2), far better conditioned for CLARABEL than the
            # quad-over-lin encoding of sum_squares near an active limit
            a = c1 / (2.0 * c2)
            R = math.sqrt(B * (1.0 - margin) / (mult * c2) + m * a * a)
            cons.append(cp.norm(z + a, 2) <= R)
        # dz enters as its own variable so that curvature * dz^2 stays DPP
        obj = cp.Maximize(par["g"] @ dz - 0.5 * cp.sum(cp.multiply(par["c"], cp.square(dz))))
        self._sub[key] = (cp.Problem(obj, cons), z, par)
        return self._sub[key]

    def _stencil(self, cal, z) -> tuple[np.ndarray, np.ndarray]:
        """Daily rows of ``z`` and its central-difference neighbours, and the steps."""
        m = z.size
        h = np.minimum(self.cfg["fd_step_gy"], 0.5 * z)
        Z = np.repeat(z[None], 2 * m + 1, axis=0)
        Z[1 + np.arange(m), np.arange(m)] += h
        Z[1 + m + np.arange(m), np.arange(m)] -= h
        return np.array([self.row(cal, zz) for zz in Z]), h

    def _eval_stencils(self, items: list[tuple[_Job, np.ndarray]]) -> list[dict[str, Any]]:
        """Evaluate each (job, z) and its stencil in one call: objective, feasibility, gradients."""
        rows, U, hs = [], [], []
        for j, z in items:
            R, h = self._stencil(j.cal, z)
            rows.append(R)
            U.append(np.broadcast_to(self.u_row(j.nk), R.shape))
            hs.append(h)
        sizes = [len(R) for R in rows]
        ev = self.evaluate(np.concatenate(rows), np.concatenate(U))
        feas = _feasible_mask(ev, ("dose_grid",), rel=1e-9)
        out = []
        a = 0
        for (j, z), h, k in zip(items, hs, sizes):
            m = z.size
            f, b = ev.objective[a:a + k], ev.metrics["tumour_bed_gy"][a:a + k]
            fp, fm, bp, bm = f[1:m + 1], f[m + 1:], b[1:m + 1], b[m + 1:]
            out.append({"f": float(f[0]), "feasible": bool(feas[a]), "bed": float(b[0]),
                        "g": (fp - fm) / (2 * h),
                        "c": np.maximum(0.0, -(fp - 2 * f[0] + fm) / h ** 2),
                        "pg": (bp - bm) / (2 * h)})
            a += k
        return out

    def scp(self, jobs: list[_Job]) -> None:
        """Trust-region SCP on the doses of every job in lockstep (infusions fixed)."""
        p, cfg, st = self.problem, self.cfg, self.st
        r0 = max(0.25, 0.1 * (self.u - p.d_min))
        r_max = max(self.u - p.d_min, r0)
        for j in jobs:
            j.radius, j.done = r0, False
        need = [j for j in jobs if j.grad is None]
        if need and not self.out_of_time():
            for j, res in zip(need, self._eval_stencils([(j, j.z) for j in need])):
                j.f, j.grad = res["f"], res
        for _ in range(cfg["max_iterations"]):
            active = [j for j in jobs if not j.done and j.grad is not None]
            if not active or self.out_of_time():
                break
            trials = []
            for j in active:
                st.iterations += 1
                t = self._trial(j)
                if t is not None:
                    trials.append(t)
            if not trials:
                break
            results = self._eval_stencils([(j, z) for j, z, _ in trials])
            for (j, z, pred), res in zip(trials, results):
                fn = res["f"]
                ratio = (fn - j.f) / pred
                step = float(np.max(np.abs(z - j.z)))
                if res["feasible"] and np.isfinite(fn) and fn > j.f and ratio > 1e-3 \
                        and np.all(np.isfinite(res["g"])):
                    j.z, j.f, j.grad = z, fn, res
                    st.accepted += 1
                    if ratio > 0.75 and step > 0.9 * j.radius:
                        j.radius = min(2.0 * j.radius, r_max)
                    elif ratio < 0.25:
                        j.radius *= 0.5
                else:
                    j.radius *= 0.25
                if j.radius < cfg["min_radius_gy"]:
                    j.done = True

    def _trial(self, j: _Job):
        """Solve the subproblem at ``j``; ``(job, z_new, predicted gain)`` or None (stop)."""
        p, cp, cfg, st = self.problem, self.cp, self.cfg, self.st
        g, curv, pg = j.grad["g"], j.grad["c"], j.grad["pg"]
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(curv))) or np.max(np.abs(g)) == 0:
            j.done = True
            return None
        prob, zvar, par = self._subproblem(j.z.size, len(j.cal))
        scale = max(float(np.max(np.abs(g))), float(np.max(curv)) * j.radius, 1e-300)
        par["zk"].value = j.z
        par["g"].value = g / scale
        par["c"].value = curv / scale
        par["r"].value = j.radius
        par["pg"].value = pg
        # tangent of the (convex) BED at z_k >= prescription, with a hair of margin
        par["prhs"].value = float(p.min_bed - j.grad["bed"] + pg @ j.z + 1e-9 * max(1.0, p.min_bed))
        st.solves += 1
        status = _run_quietly(cp, prob, cfg["solver"], cfg["solver_options"])
        if status.startswith("error") and cfg["solver"] != _FALLBACK_SOLVER:
            # an interior-point breakdown on one subproblem; a first-order conic solver is
            # slower but does not break down the same way, and the step is re-checked below
            first = status
            status = _run_quietly(cp, prob, _FALLBACK_SOLVER, {})
            st.notes.append(f"{j.cal}: {cfg['solver']} {first[7:60]}...; {_FALLBACK_SOLVER}: "
                            f"{status}")
        if status not in _OK_STATUSES or zvar.value is None:
            st.solver_failures += 1
            st.notes.append(f"{j.cal}: subproblem status {status}")
            j.radius *= 0.25
            j.done = j.radius < cfg["min_radius_gy"]
            return None
        z = np.clip(np.asarray(zvar.value, dtype=float), p.d_min, self.u)
        step = z - j.z
        pred = float(g @ step - 0.5 * np.sum(curv * step ** 2))
        if float(np.max(np.abs(step))) < 1e-9 or pred <= 1e-12 * max(1.0, abs(j.f)):
            j.done = True  # stationary for the model within the trust region
            return None
        return j, z, pred

    # ------------------------------------------------------------------ grid
    def _roundings(self, z: np.ndarray) -> list[np.ndarray]:
        grid = self.problem.dose_grid()
        lo_i = np.clip(np.searchsorted(grid, z + 1e-9, side="right") - 1, 0, grid.size - 1)
        hi_i = np.clip(lo_i + 1, 0, grid.size - 1)
        if z.size == 1:
            i = int(lo_i[0])
            return [np.array([grid[k]]) for k in range(max(0, i - 2), min(grid.size, i + 2))]
        down, up = grid[lo_i], grid[hi_i]
        near = np.where(np.abs(up - z) < np.abs(z - down), up, down)
        out = [down, up, near]
        for i in range(z.size):
            for base, alt in ((down, up), (up, down), (near, down)):
                c = base.copy()
                c[i] = alt[i]
                out.append(c)
        return out

    def round_to_grid(self, jobs: list[_Job]) -> None:
        """Best feasible grid rounding per job (down, up, nearest, single-fraction moves), all
        jobs in one call; where none is feasible, round everything down one more step."""
        grid = self.problem.dose_grid()
        pending = {id(j): (j, self._roundings(np.atleast_1d(j.z))) for j in jobs}
        for _ in range(grid.size):
            if not pending:
                break
            items = list(pending.values())
            D, U, sizes = [], [], []
            for j, cs in items:
                D.extend(self.row(j.cal, c) for c in cs)
                U.extend([self.u_row(j.nk)] * len(cs))
                sizes.append(len(cs))
            ev = self.evaluate(np.array(D), np.array(U))
            obj = np.where(_feasible_mask(ev) & np.isfinite(ev.objective), ev.objective, -np.inf)
            for (j, cs), o in zip(items, np.split(obj, np.cumsum(sizes)[:-1])):
                k = int(np.argmax(o))
                if np.isfinite(o[k]):
                    j.z, j.f = cs[k], float(o[k])
                    del pending[id(j)]
                    continue
                idx = np.searchsorted(grid, np.min(np.array(cs), axis=0) - 1e-9) - 1
                if np.any(idx < 0):
                    j.f = -np.inf
                    del pending[id(j)]
                else:
                    pending[id(j)] = (j, [grid[idx]])
        for j, _ in pending.values():
            j.f = -np.inf
