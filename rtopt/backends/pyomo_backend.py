"""``pyomo_milp`` (HiGHS) and ``pyomo_minlp`` (SCIP): algebraic Pyomo models of the schedule.

Both back-ends build an algebraic model from the same parameters the simulator uses; every
dose-dependent coefficient is a table over the dose grid computed by :mod:`rtopt.model.radiobiology`
(BED, survival) or :mod:`rtopt.model.surrogate` (TME responses), never re-derived here.  Pyomo is
imported only inside the methods that use it.

``pyomo_milp``: classic tumour BED (MILP, HiGHS)
------------------------------------------------
Objective ``tumour_bed`` only; a dose grid is required (continuous doses are declined); an
``[nk]`` table is allowed (infusions do not change tumour BED: they are placed afterwards with
:meth:`rtopt.problem.problem.Problem.first_valid_infusions`).

*Uniform dose.*  One binary ``y_nd`` per (fraction count ``n``, grid dose ``d``), exactly one
chosen; counts are those with a calendar.  With per-fraction tables ``b(d)`` (tumour BED of one
fraction in the instance's survival model: LQ, LQ-L or USC) and ``o(d)`` (OAR BED of
``delta d`` at the organ's alpha/beta)::

    max  w * sum y_nd (n b(d) - L_n)
    s.t. sum y_nd (n b(d) - L_n) >= prescription           (tumour BED incl. repopulation)
         sum y_nd n o(d)         <= B_OAR                  (each OAR with a BED limit)
         sum y_nd delta d        <= dpf_OAR                (each OAR dose-per-fraction limit)
         sum y_nd = 1

Its LP relaxation is the convex hull of the choice, so HiGHS needs no branching to speak of.
Pairs that break a limit on their own can never be the chosen one and are not created, and
HiGHS's presolve is switched off for this model (its probing takes minutes on a row with tens
of thousands of columns, and there is nothing left for it to do).  ``L_n`` is the repopulation
BED loss (:func:`rtopt.model.radiobiology.repopulation_bed_loss`) of the shortest calendar of ``n``
fractions: :meth:`rtopt.problem.problem.Problem.compact_calendar` from every allowed start day, the
shortest overall time kept (0 without repopulation).  The loss only grows with the overall
time and nothing else depends on the days, so the model is exact for the instance:
``extras["exact_for_instance"] = True``.

*Per-fraction doses* (no repopulation; with repopulation the calendar and the dose order
interact, and the back-end declines).  Default ``per_fraction_formulation = "multiplicity"``:
integers ``c_d`` (fractions at grid dose ``d``) with ``sum c_d = sum_n n s_n``, one count binary
``s_n`` chosen, and a binary ``used_d >= c_d / n_max`` for the dose-per-fraction limits.  This
is the slot model with every symmetry removed: a multiplicity vector is a sorted
(non-increasing) slot assignment.  ``"slots"`` is the literal slot model: binaries ``y_ik``
(slot ``i`` gets level ``k``), at most one per slot, level index non-increasing over the slots
(symmetry breaking that also fills the slots contiguously); it gives the same optimum and is
kept as a cross-check (about 25 times slower on a 30-fraction, 200-level instance).  Tumour
BED, OAR BED and dose-per-fraction constraints are the same tables; without repopulation the
days do not enter, so this is exact for the instance too.

The plan takes the shortest calendar for the chosen count (another allowed start if the NK
rules need it) and the doses in non-increasing order.  HiGHS reports the incumbent, the dual
bound and the gap (``claimed_objective``, ``bound``, ``extras["mip_gap"]``); with
``rel_gap > 0`` an "optimal" plan is optimal within that relative gap (the shipped profile
uses ``rel_gap = 0``).

``pyomo_minlp``: the TME model on the daily grid (MINLP, SCIP)
--------------------------------------------------------------
Objectives ``nk_favourability``, ``tumour_log_kill``, ``tumour_bed`` and ``tcp`` with
``tcp_model = "per_patient"`` (Poisson TCP at the nominal alpha), and weighted sums of them,
minus ``cost_per_fraction`` and ``cost_per_overall_day``; uniform or per-fraction doses on the
grid; NK infusions; the patient's own (endogenous) NK pool, which NK favourability counts
(docs/model.md section 13); a ``tumour_dose_ratio`` (``isodose_percent``): the decision is the
prescribed grid dose ``d``, the tumour and every TME threshold see ``ratio x d``
(:meth:`rtopt.problem.problem.Problem.tumour_doses`: the tables of fraction jumps and survival
are built at that dose), the BED prescription and the OAR limits stay on ``d``.  Declined,
with the reason: population tumour control (``local_control``
and ``tcp`` with the default ``tcp_model``: an average over patients' radiosensitivity) and
the NK-attributable gains (a counterfactual of the same plan without NK cells); and log kill
or TCP when the clonogen hypoxic shares are not linear in the FMISO fraction
(``clonogen_hypoxia_ratio * hypoxic_fraction_max >= 1``).

*One statement of the model.*  The algebraic form reads the simulator's definitions instead of
restating them: the jumps of one fraction (demand drop, vascular loss, chemokine pulse, NK kill
in tumour and blood, of the patient's own NK cells in tumour and blood) are tables from
:func:`rtopt.model.simulator.apply_fraction` evaluated on unit states at the tumour dose; the
activity constants from :func:`rtopt.model.simulator.nk_activity` and
:func:`rtopt.model.simulator.endogenous_activity`; the endogenous level and start from
:func:`rtopt.model.circulation.endogenous_level` and
:func:`rtopt.model.simulator.endogenous_start`; the trafficking rate is
:func:`rtopt.model.surrogate.nk_infiltration_rate` itself, called on numbers by :meth:`DailyModel
.forward` and on Pyomo expressions by the model; survival tables are
:func:`rtopt.model.radiobiology.neg_log_survival` and the compartment shares
:func:`rtopt.model.surrogate.clonogen_hypoxic_shares`.  Tests hold :meth:`DailyModel.forward` to the
simulator on random schedules and the per-fraction survival to
:func:`rtopt.model.simulator.fraction_log_survival`.

*Decisions.*  Binaries ``x_j`` (fraction on day ``j``, only on allowed days), ``u_j`` (NK
infusion on day ``j``, only in ``[earliest_day, latest_day]``) and the dose level of every
fraction: one-hot ``q_jk`` with ``sum_k q_jk = x_j``.  With uniform doses ``q_jk <= z_k``,
``sum_k z_k = 1`` (one level for all fractions; then ``q_jk = x_j z_k`` at integer points and
``q`` may be continuous).  Levels that break ``d_max`` or an OAR dose-per-fraction limit, or
that no allowed count can combine with the prescription and OAR BED limits, are dropped.

*Rules (linear).*  Count ``n_min <= sum x <= n_max``; ``min_interval_days`` as "at most one
fraction in every window of that many days"; ``max_overall_days`` as ``x_i + x_j <= 1`` for
pairs further apart; NK count, spacing windows, and ``u_t + x_f <= 1`` for
``t < f <= t + min_days_before_next_fraction``.  Prescription and OAR BED are linear in ``q``
(tables of :func:`rtopt.model.radiobiology.bed_per_fraction`); the overall time (repopulation loss
and gain, cost per overall day) uses first/last fraction-day variables, ``last - first`` at
least the overall time and equal to it at an optimum (a longer overall time only costs).  The
cost per fraction is ``cost_per_fraction * sum x``.

*States* (start of day ``j``, before its fraction; ``+`` after that day's fraction):
each fraction multiplies ``w`` by ``1 - m(d)``, ``v`` by ``1 - V(d)``, ``T`` by ``exp(-d/D0)``,
``B`` by ``exp(-f_blood d/D0)`` and adds ``A(d) norm`` to ``P`` (the tables above, ``d`` the
tumour dose),
aggregated per day as ``sum_k coef_k q_jk`` (linear), so each jump is one bilinear term
(state x aggregated factor).  An infusion adds ``u_j`` to ``B``.  Between days, ``w, v, P, C``
use the exact one-day propagators of their linear ODEs (``exp(-1/tau_w)``, ``exp(-1/tau_v)``,
and the Bateman pair from :func:`rtopt.model.surrogate.chemokine_rates`).  Hypoxia
``h = min(h_max, h0 (w/v)^gamma)`` through a ratio variable ``r`` with ``r v >= w`` (the cap
``h_max`` with one binary per day where the bounds say it can bind).

*NK trafficking (the daily-step approximation).*  Over day ``j`` the trafficking rate
``k_in = k0 v (1 + g C / (C50 + C))`` is frozen at mid-day chemokine and perfusion,
``c_j = exp(-k_e/2) C_j + (Bateman half-day coefficient) P+_j`` and
``v_j = 1 - exp(-1/(2 tau_v)) (1 - v+_j)`` (both linear; the simulator instead follows it
through each sub-step, fourth order), ``kin_j = nk_infiltration_rate(c_j, v_j)`` (an equality),
and ``B``, ``T`` are then propagated exactly: ``B_{j+1} = B++_j beta(kin_j)``,
``T_{j+1} = exp(-k_out) T+_j + B++_j gamma(kin_j)``, and the day's integral
``int T dt = T+_j (1 - exp(-k_out))/k_out + B++_j a(kin_j)``.  The factors ``beta, gamma, a``
depend on the trafficking rate only; they are closed forms (with Gauss-Legendre quadrature for
the inner integrals) replaced in the model by Chebyshev polynomial fits in ``kin`` on
``[0, kin_max]`` (``kin_max`` the rate at the chemokine bound ``c_max`` from the pulse kernel
and full perfusion), with the fit error in ``extras["fit_max_abs_error"]``.  The day's
activity integral is ``Ed_j = kappa (1 - treg) int T dt (1 - eta (h+_j + h_{j+1})/2)``
(hypoxia averaged over the day by the trapezoid rule).

*The patient's own NK cells* (only when NK favourability is in the objective and
:func:`rtopt.model.simulator.endogenous_active`; tumour outcomes use the infused cells alone,
docs/model.md section 13).  The circulating pool ``G`` (1 on day 0) jumps by the fraction's
blood survival, ``G+ = G (1 - fG(d))``, and recovers exactly, ``G_{j+1} = 1 - e^{-k_e} (1 -
G+_j)`` (linear; here ``k_e`` is the pool's turnover ``nk_endogenous_turnover_per_day``).
The tumour pool ``Te`` starts at its steady state ``k0 n_e / k_e``, jumps by the in-field
survival ``Te+ = Te (1 - fTe(d))``, and over day ``j``, with the same frozen
trafficking rate ``kin_j`` as the infused cells and ``G`` exact within the day,
``Te_{j+1} = e^{-k_e} Te+_j + n_e kin_j (g0 + g1 G+_j)`` and ``int Te dt = Te+_j (1 -
e^{-k_e}) / k_e + n_e kin_j (i0 + i1 G+_j)`` (constants by the same Gauss-Legendre nodes; the
product of the day's rate and the pool is the one bilinear trafficking term).  Its activity
integral ``Ede_j = kappa_e (1 - treg) int Te dt (1 - eta hbar_j)`` as above, so the trafficking
rate is a variable on every day (from day 0) when the pool is modelled.

NK favourability is ``sum_j (Ed_j + Ede_j)``.  On 25 random lung schedules this daily model
is within 1.3 % of the simulator's NK favourability without the endogenous pool, 0.27 % with
it (most of the lung's favourability; at tumour dose ratio 1 and 1.2 alike), and 0.04 % of its
log kill (the tests check 2 % and 0.5 %); the difference is the one frozen trafficking rate per
day (with a constant rate the daily model is exact to 0.005 %).

*Clonogen survival* (only for ``tumour_log_kill`` / ``tcp``): per fraction day, with shares
``h_i = s_i h``, ``h_a = s_a h`` (linear in the FMISO fraction ``h`` before the fraction, slopes
from :func:`rtopt.model.surrogate.clonogen_hypoxic_shares`),
``ln S_j >= -A_ox + ln(1 - h_i - h_a + h_i exp(A_ox - A_int) + h_a exp(A_ox - A_an))`` with
``A_k = a_k + rho_j a'_k``: ``a_k`` the per-level tables of
:func:`rtopt.model.radiobiology.neg_log_survival` at ``d``, ``d / oer_intermediate`` and ``d / oer``,
``a'_k`` their increase at the fully radiosensitised alpha ``alpha (1 + s)``, and
``rho_j = Ed_{j-1} / (E50 + Ed_{j-1})`` the radiosensitisation by the activity over the day
before the fraction (``Ed`` over one day is its mean).  This is exact for LQ and LQ-L (affine
in alpha) and a linear interpolation in alpha for USC with a derived transition dose.  NK
killing (``-c sum_j Ed_j``), repopulation (``ln 2 / T_pot max(0, T - T_k)``) and the
per-patient Poisson TCP ``exp(-N0 S)`` at the nominal alpha are those of
:func:`rtopt.model.simulator.tumour_outcomes`.

*Monotone relaxation.*  At a given trafficking rate every objective improves with more NK
cells (``B`` only feeds ``T``, ``T`` only adds activity, activity only adds kill and
radiosensitisation), with larger trafficking factors and with less hypoxia (lower ``w``, a
lower ratio ``r``), and never the other way.  Perfusion now acts twice: through hypoxia (more
is better) and through the trafficking rate, where more is not better on every day (cells that
reach the tumour earlier meet more in-field kill at the next fraction; a probe on the lung
product, halving ``k_in`` between an infusion and the next 16 Gy fraction, never helped, but
that is no proof).  So ``v+ = v (1 - V)``, the trafficking rate and the chemokine are
equalities (``v`` and ``k_in`` are exact at every choice of the binaries), and the other
nonlinear state equations are one-sided inequalities in the direction that can only make the
objective worse (``T_{j+1} <= ...``, ``B_{j+1} <= ...``, ``w+ >= w (1 - m)``, ``r v >= w``,
``Ed_j <= ...``, ``rho (E50 + Ed) <= Ed``, ``ln S_j >= ...``, ``last - first >=`` the overall
time; for the endogenous pool ``G+ <= G (1 - fG)``, ``Te+ <= ...``, ``Te_{j+1} <= ...``,
``Ede_j <= ...``: more of the patient's own cells only adds activity).  At an optimum the
inequalities hold with equality, so the optimum of the relaxed model is the optimum of the
daily-grid model, while every choice of the binaries stays feasible (SCIP always has an
incumbent).  An incumbent's model objective may be below the daily-grid model's value at its
binaries; ``extras["model_objective"]`` re-evaluates it (the tests check that SCIP's value
never exceeds it).

*Tightening.*  Day-wise upper bounds of ``B``, ``T``, the day's ``int T dt`` and ``Ed`` (the
latest allowed infusions at the minimum spacing, largest trafficking factors, no radiation
kill, no hypoxic suppression), of ``Te``, its integral and ``Ede`` (largest trafficking rate,
full circulating pool, no kill, no suppression), ``G >= (1 - max fG)^n_max``, and valid
linear cuts per fraction day, ``ln S >= ln S_ox`` and ``ln S >= ln(s_k h_lo) + ln S_k`` for
each hypoxic compartment ``k`` (all at the fully radiosensitised alpha;
``h_lo = h0 w_lo^gamma``).

*Warm start.*  A pool of simple schedules is scored by the simulator (greedy compact calendars
of every count from each allowed start in the first week, and for log kill or TCP also the
regular calendars of ``exhaustive``'s space with spacings up to 3 days beyond the minimum, where
spreading the fractions reoxygenates; every retained grid dose, and as
infusions the earliest valid minimum set plus, for NK objectives, the greedy maximum set from
every start day); the best ``warm_starts`` (option, default 5) are passed to SCIP as complete
solutions (binaries, the states of :meth:`DailyModel.forward` and the objective), which SCIP
checks and keeps without a completion sub-MIP.  SCIP's default emphasis here is aggressive
heuristics and fast separation (option ``scip_emphasis``); raw SCIP parameters go in option
``scip``.  ``extras["improved_on_warm_start"]`` says whether SCIP found something better (in
its model) than the pool.

*What SCIP's numbers mean.*  ``claimed_objective`` is SCIP's incumbent value and ``bound``
SCIP's dual bound, both of the daily-grid model, not of the simulator's objective: the
verified objective differs by the approximations above.  ``exact_for_instance`` is False.
At the time limit SCIP returns its incumbent (termination ``time_limit``).  Returned plans are
SCIP's solutions, best first (in its model).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtopt.backends.base import Backend, BackendOutput, SolverOptions, Termination, package_version
from rtopt.backends.exhaustive import ExhaustiveBackend, memory_budget_bytes
from rtopt.common.errors import ProblemDeclined
from rtopt.model import radiobiology as rb
from rtopt.model import simulator as sim
from rtopt.model import surrogate as sg
from rtopt.model.circulation import endogenous_level
from rtopt.problem.problem import Plan, Problem

# pyomo and pyscipopt (seconds to import) are imported inside the functions that build or solve a
# model.

__all__ = ["PyomoMilpBackend", "PyomoMinlpBackend", "DailyModel"]

_INT_TOL = 0.5  # binaries are read as value > 0.5


# ---------------------------------------------------------------------------- shared helpers


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def _termination(tc: Any, has_solution: bool) -> str:
    """Map a ``pyomo.contrib.solver`` TerminationCondition to :class:`Termination`."""
    name = getattr(tc, "name", str(tc))
    if name == "convergenceCriteriaSatisfied":
        return Termination.OPTIMAL
    if name == "maxTimeLimit":
        return Termination.TIME_LIMIT
    if name == "iterationLimit":
        return Termination.ITERATION_LIMIT
    if name in ("provenInfeasible", "locallyInfeasible", "infeasibleOrUnbounded"):
        return Termination.INFEASIBLE
    if name in ("objectiveLimit", "minStepLength"):
        return Termination.COMPLETED if has_solution else Termination.NO_SOLUTION
    if name == "unbounded":
        return Termination.NUMERICAL
    if name == "unknown":
        return Termination.COMPLETED if has_solution else Termination.NO_SOLUTION
    return Termination.ERROR


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _extra(res: Any, key: str) -> Any:
    try:
        return res.extra_info[key]
    except Exception:  # older or newer result objects
        return None


def _rel_gap(incumbent: float | None, bound: float | None) -> float | None:
    if incumbent is None or bound is None:
        return None
    return abs(bound - incumbent) / max(abs(incumbent), 1e-9)


def _calendars(problem: Problem, n: int) -> list[tuple[int, ...]]:
    """Compact calendars of ``n`` fractions, shortest overall first (:meth:`Problem.compact_calendars`)."""
    return [c for c in problem.compact_calendars(n) if len(c) == n]


def _repop_loss(problem: Problem, overall: Any) -> np.ndarray:
    """Tumour BED lost to the overall time, as :meth:`Problem.tumour_bed` defines it.

    Measured, not re-derived: BED of one fraction on day 0 and one on day ``T`` minus twice the
    BED of a single fraction.  :meth:`Problem.tumour_bed` has no time factor (the clinical
    convention), so this is zero; the formulation keeps the term in case that changes."""
    T = np.atleast_1d(np.asarray(overall, dtype=int))
    H = problem.horizon_days
    one = np.zeros((1, H))
    one[0, 0] = 1.0
    rows = np.zeros((T.size, H))
    rows[:, 0] = 1.0
    rows[np.arange(T.size), np.clip(T, 1, H - 1)] += 1.0
    loss = 2.0 * problem.tumour_bed(one)[0] - problem.tumour_bed(rows)
    return np.where(T > 0, loss, 0.0).reshape(np.shape(overall))


def _has_repopulation(problem: Problem) -> bool:
    b = problem.biology
    return b.potential_doubling_days is not None and b.repopulation_kickoff_days is not None


def _remaining(options: SolverOptions, t0: float) -> float:
    """Seconds left for the solver: the limit minus model building so far, minus a reserve for
    reading the solution back and for rtopt's verification (5 %, at most 2 s)."""
    reserve = min(2.0, 0.05 * options.time_limit_s)
    return max(1.0, options.time_limit_s - (time.perf_counter() - t0) - reserve)


_COMPONENT_SECONDS = 100e-6
"""Pyomo model-building time per variable or constraint (measured ~85 us on a 2-core VM)."""
_COMPONENT_BYTES = 1024
"""Pyomo memory per variable or constraint with its expressions (measured ~800 bytes)."""


def _guard_size(kind: str, components: int, options: SolverOptions) -> None:
    """Decline (``ProblemDeclined``) a model whose building alone would break the time limit or
    the memory budget, before building it: Pyomo cannot be interrupted while it builds."""
    budget = memory_budget_bytes(options)
    secs = components * _COMPONENT_SECONDS
    need = components * _COMPONENT_BYTES
    if secs > 0.8 * options.time_limit_s or need > budget // 2:
        raise ProblemDeclined(
            f"{kind}: model too large: ~{components:,} variables and constraints (from the dose "
            f"grid x fraction days) would take ~{secs:.3g} s and ~{need / 2 ** 30:.3g} GiB to "
            f"build (time limit {options.time_limit_s:g} s, memory limit "
            f"{budget / 2 ** 30:.3g} GiB); use a coarser dose_step_gy or a shorter horizon_days")


def _grid_size(problem: Problem) -> int:
    if problem.continuous_dose or problem.dose_step <= 0:
        return 0
    return max(0, math.floor(problem.d_max / problem.dose_step + 1e-9)
               - math.ceil(problem.d_min / problem.dose_step - 1e-9) + 1)


def _quiet_solve(solver: Any, model: Any, **kw: Any) -> Any:
    """Run a ``pyomo.contrib.solver`` solver without output and without raising on status."""
    return solver.solve(model, tee=False, load_solutions=False,
                        raise_exception_on_nonoptimal_result=False, **kw)


# ---------------------------------------------------------------------------- MILP (HiGHS)


class PyomoMilpBackend(Backend):
    name = "pyomo_milp"
    description = "Pyomo MILP of the classic tumour-BED problem on the dose grid, solved by HiGHS"
    objectives = ("tumour_bed",)
    supports_nk = False  # infusions do not enter tumour BED; they are placed after the solve
    supports_per_fraction = True
    supports_continuous_dose = False
    global_optimality = True
    requires = ("pyomo", "highspy")
    guarantee = ("optimal tumour BED over the dose grid within rel_gap, for the instance "
                 "(uniform doses, or per-fraction doses without repopulation)")

    def check(self, problem: Problem) -> tuple[bool, str]:
        ok, why = super().check(problem)
        if not ok:
            return ok, why
        if not problem.uniform and _has_repopulation(problem):
            return False, (f"{self.name} handles per-fraction doses only without repopulation "
                           "(the calendar and the dose order would interact)")
        return True, ""

    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:
        t0 = time.perf_counter()
        name, version = "HiGHS via Pyomo", ""
        try:
            import pyomo.environ as pyo
            from pyomo.contrib.solver.common.factory import SolverFactory

            solver = SolverFactory("highs")
            version = (".".join(str(x) for x in solver.version())
                       + f" (Pyomo {package_version('pyomo')})")
            formulation = str(options.options.get("per_fraction_formulation", "multiplicity"))
            if formulation not in ("multiplicity", "slots"):
                return BackendOutput((), Termination.ERROR, message="options."
                                     "per_fraction_formulation must be 'multiplicity' or 'slots'",
                                     solver_name=name, solver_version=version)
            lo, hi = problem.fraction_count_range()
            _guard_size(self.name, max(1, hi - lo + 1 if problem.uniform else hi)
                        * _grid_size(problem), options)
            built = self._build(pyo, problem, formulation)
            if isinstance(built, BackendOutput):
                return built
            model, read = built
            build_s = time.perf_counter() - t0
            opts: dict[str, Any] = {"random_seed": int(options.seed),
                                    "mip_feasibility_tolerance": 1e-9,
                                    "primal_feasibility_tolerance": 1e-9}
            if problem.uniform:
                # HiGHS's presolve (probing) spends minutes on a multiple-choice row with tens
                # of thousands of columns; the LP relaxation is already the convex hull
                opts["presolve"] = "off"
            opts.update(options.options.get("highs", {}))
            res = _quiet_solve(solver, model, time_limit=_remaining(options, t0),
                               rel_gap=options.rel_gap, threads=options.threads,
                               solver_options=opts)
            has_sol = res.solution_status.name in ("optimal", "feasible")
            term = _termination(res.termination_condition, has_sol)
            inc, bound = _finite(res.incumbent_objective), _finite(res.objective_bound)
            extras: dict[str, Any] = {
                "exact_for_instance": True,
                "formulation": ("uniform (count x dose binaries)" if problem.uniform
                                else f"per-fraction ({formulation})"),
                "highs_status": res.termination_condition.name,
                "mip_gap": _rel_gap(inc, bound), "build_s": round(build_s, 4),
                "solve_s": round(time.perf_counter() - t0 - build_s, 4),
                "variables": model.nvariables(), "constraints": model.nconstraints()}
            if not has_sol:
                msg = ("HiGHS proved the grid model infeasible" if term == Termination.INFEASIBLE
                       else f"HiGHS stopped without a plan ({res.termination_condition.name})")
                return BackendOutput((), term, message=msg, solver_name=name,
                                     solver_version=version, extras=extras)
            res.solution_loader.load_vars()
            n, doses = read()
            plan, msg = self._place(problem, n, doses)
            if plan is None:
                return BackendOutput((), Termination.NO_SOLUTION, inc, bound, message=msg,
                                     solver_name=name, solver_version=version, extras=extras)
            return BackendOutput((plan,), term, inc, bound, message=msg, solver_name=name,
                                 solver_version=version, extras=extras)
        except ProblemDeclined:
            raise  # too large to build: rtopt.planning.solve reports it as declined
        except ArithmeticError as e:
            return BackendOutput((), Termination.NUMERICAL, message=_one_line(e),
                                 solver_name=name, solver_version=version)
        except Exception as e:  # a solver fault is reported, never raised
            return BackendOutput((), Termination.ERROR, message=_one_line(e), solver_name=name,
                                 solver_version=version)

    # ------------------------------------------------------------------ model
    @staticmethod
    def _counts(problem: Problem) -> dict[int, tuple[int, ...]]:
        """Fraction counts that have a calendar -> the shortest such calendar."""
        lo, hi = problem.fraction_count_range()
        out = {}
        for n in range(lo, hi + 1):
            cals = _calendars(problem, n)
            if cals:
                out[n] = cals[0]
        return out

    def _build(self, pyo: Any, problem: Problem, formulation: str = "multiplicity") -> Any:
        grid = problem.dose_grid()
        cals = self._counts(problem)
        if not cals or grid.size == 0:
            return BackendOutput((), Termination.INFEASIBLE, message="no fraction count fits the "
                                 "calendar", solver_name="HiGHS via Pyomo")
        counts = sorted(cals)
        w_bed = problem.weights.get("tumour_bed", 1.0)
        # classical LQ whatever the survival model, as Problem.tumour_bed (the prescription's
        # arithmetic): LQ-L tables made the MILP optimise another BED than the one verified
        bpf = np.asarray(rb.bed_per_fraction(grid, problem.alpha_beta))
        loss = {n: float(_repop_loss(problem, c[-1] - c[0])) for n, c in cals.items()}
        K = range(grid.size)
        m = pyo.ConcreteModel(name="rtopt_milp")
        n_max = max(counts)
        if problem.uniform:
            # one binary per (count, grid dose): the LP relaxation is the convex hull of the
            # choice, so HiGHS closes the gap at the root even on fine grids
            # a pair that breaks a limit on its own can never be the one chosen: not created
            ok = np.ones((len(counts), grid.size), dtype=bool)
            nn = np.asarray(counts, dtype=float)[:, None]
            for o in problem.oars:
                od = np.asarray(rb.oar_doses(grid, o.sparing_factor))
                if o.max_bed_gy is not None:
                    ob = np.asarray(rb.bed_per_fraction(od, o.alpha_beta_gy))
                    ok &= nn * ob[None, :] <= o.max_bed_gy * (1 + 1e-12)
                if o.max_dose_per_fraction_gy is not None:
                    ok &= (od <= o.max_dose_per_fraction_gy * (1 + 1e-12))[None, :]
            if problem.min_bed > 0:
                lossv = np.array([loss[n] for n in counts])[:, None]
                ok &= nn * bpf[None, :] - lossv >= problem.min_bed * (1 - 1e-12)
            NK = [(n, int(k)) for i, n in enumerate(counts) for k in np.flatnonzero(ok[i])]
            if not NK:
                return BackendOutput((), Termination.INFEASIBLE, message="no (count, grid dose) "
                                     "pair meets the prescription and OAR limits",
                                     solver_name="HiGHS via Pyomo")
            m.y = pyo.Var(NK, domain=pyo.Binary)
            m.one = pyo.Constraint(expr=pyo.quicksum(m.y[n, k] for n, k in NK) == 1)
            fr_sum = lambda coef: pyo.quicksum(n * float(coef[k]) * m.y[n, k] for n, k in NK
                                               if coef[k])
            per_slot = [lambda coef: pyo.quicksum(float(coef[k]) * m.y[n, k] for n, k in NK
                                                  if coef[k])]
            loss_expr = pyo.quicksum(loss[n] * m.y[n, k] for n, k in NK if loss[n] != 0.0)
        elif formulation == "slots":
            m.s = pyo.Var(counts, domain=pyo.Binary)
            m.one_count = pyo.Constraint(expr=pyo.quicksum(m.s[n] for n in counts) == 1)
            S = range(n_max)
            m.y = pyo.Var(S, K, domain=pyo.Binary)
            m.slot = pyo.Constraint(S, rule=lambda m, i: pyo.quicksum(m.y[i, k] for k in K) <= 1)
            m.count = pyo.Constraint(expr=pyo.quicksum(m.y[i, k] for i in S for k in K)
                                     == pyo.quicksum(n * m.s[n] for n in counts))
            level = lambda i: pyo.quicksum((k + 1) * m.y[i, k] for k in K)
            # symmetry breaking: non-increasing dose levels (also fills slots contiguously)
            m.order = pyo.Constraint(range(n_max - 1), rule=lambda m, i: level(i) >= level(i + 1))
            fr_sum = lambda coef: pyo.quicksum(float(coef[k]) * m.y[i, k] for i in S for k in K
                                               if coef[k])
            per_slot = [(lambda coef, i=i: pyo.quicksum(float(coef[k]) * m.y[i, k] for k in K
                                                        if coef[k])) for i in S]
            loss_expr = 0.0
        else:
            # multiplicities: c_k fractions at level k (the sorted slot assignment, with all
            # the symmetry removed); a level used at all is flagged by a binary for the
            # dose-per-fraction limits
            m.s = pyo.Var(counts, domain=pyo.Binary)
            m.one_count = pyo.Constraint(expr=pyo.quicksum(m.s[n] for n in counts) == 1)
            m.c = pyo.Var(K, domain=pyo.NonNegativeIntegers, bounds=(0, n_max))
            m.used = pyo.Var(K, domain=pyo.Binary)
            m.count = pyo.Constraint(expr=pyo.quicksum(m.c[k] for k in K)
                                     == pyo.quicksum(n * m.s[n] for n in counts))
            m.link = pyo.Constraint(K, rule=lambda m, k: m.c[k] <= n_max * m.used[k])
            fr_sum = lambda coef: pyo.quicksum(float(coef[k]) * m.c[k] for k in K if coef[k])
            per_slot = [(lambda coef, k=k: float(coef[k]) * m.used[k]) for k in K]
            loss_expr = 0.0
        bed = fr_sum(bpf) - loss_expr
        m.obj = pyo.Objective(expr=w_bed * bed, sense=pyo.maximize)
        m.prescription = pyo.ConstraintList()
        if problem.min_bed > 0:
            m.prescription.add(bed >= problem.min_bed)
        m.oar = pyo.ConstraintList()
        for o in problem.oars:
            od = np.asarray(rb.oar_doses(grid, o.sparing_factor))
            if o.max_bed_gy is not None:
                m.oar.add(fr_sum(np.asarray(rb.bed_per_fraction(od, o.alpha_beta_gy)))
                          <= o.max_bed_gy)
            if o.max_dose_per_fraction_gy is not None and od.max() > o.max_dose_per_fraction_gy:
                for f in per_slot:
                    m.oar.add(f(od) <= o.max_dose_per_fraction_gy)

        def read() -> tuple[int, list[float]]:
            if problem.uniform:
                n, k = max(NK, key=lambda nk: pyo.value(m.y[nk]))
                return n, [float(grid[k])] * n
            n = next(n for n in counts if pyo.value(m.s[n]) > _INT_TOL)
            doses = []
            if formulation == "slots":
                for i in range(n_max):
                    vals = [pyo.value(m.y[i, k]) for k in K]
                    k = int(np.argmax(vals))
                    if vals[k] > _INT_TOL:
                        doses.append(float(grid[k]))
            else:
                for k in reversed(K):  # non-increasing, like the slot formulation
                    doses.extend([float(grid[k])] * int(round(pyo.value(m.c[k]))))
            return n, doses

        return m, read

    @staticmethod
    def _place(problem: Problem, n: int, doses: list[float]) -> tuple[Plan | None, str]:
        """The shortest calendar of ``n`` fractions whose infusions obey the NK rules."""
        if len(doses) != n:
            return None, f"inconsistent solution: {len(doses)} doses for {n} fractions"
        for cal in _calendars(problem, n):
            nk = problem.first_valid_infusions(cal)
            if nk is not None:
                return Plan(cal, tuple(doses), nk), ""
        return None, f"no calendar of {n} fractions leaves room for the NK infusions"


# ---------------------------------------------------------------------------- daily model


def _chebyshev_fit(f: Any, c_max: float, tol: float = 1e-7, max_degree: int = 8
                   ) -> tuple[np.ndarray, float]:
    """Power-basis coefficients of a polynomial in ``s = c / c_max`` fitting ``f(c)`` on
    ``[0, c_max]`` (lowest degree whose max error is below ``tol``), and that error."""
    s = np.linspace(0.0, 1.0, 401)
    y = f(s * c_max)
    best = None
    for deg in range(1, max_degree + 1):
        cheb = np.polynomial.chebyshev.Chebyshev.fit(s, y, deg, domain=[0.0, 1.0])
        coef = cheb.convert(kind=np.polynomial.Polynomial, domain=[0.0, 1.0],
                            window=[0.0, 1.0]).coef
        err = float(np.max(np.abs(np.polynomial.polynomial.polyval(s, coef) - y)))
        best = (coef, err)
        if err < tol:
            break
    return best


@dataclass
class DailyModel:
    """Coefficient tables and the forward evaluation of the MINLP's daily-grid model.

    Built once per problem; :meth:`forward` evaluates the model's equations (with equality) for
    given fraction days, dose levels and infusion days, which gives the warm start and lets tests
    compare the model with the simulator.
    """

    problem: Problem
    levels: np.ndarray                       # dose of each retained grid level (Gy)
    days_needed: int                         # states on days 0 .. days_needed
    need_hypoxia: bool
    need_nk: bool
    need_survival: bool
    frac_days: tuple[int, ...]               # allowed fraction days with a decision variable
    inf_days: tuple[int, ...]                # allowed infusion days with a decision variable
    need_endogenous: bool = False            # the patient's own NK pool (NK favourability)
    tab: dict[str, np.ndarray] = field(default_factory=dict)
    const: dict[str, float] = field(default_factory=dict)
    poly: dict[str, np.ndarray] = field(default_factory=dict)
    fit_error: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, problem: Problem, quad_nodes: int = 8) -> "DailyModel":
        bio = problem.biology
        grid = problem.dose_grid()
        levels = cls._feasible_levels(problem, grid)
        w = problem.weights
        nk_terms = {"nk_favourability", "tumour_log_kill", "tcp"} & set(w)
        need_survival = bool({"tumour_log_kill", "tcp"} & set(w))
        need_nk = problem.nk is not None and bool(nk_terms) and bio.nk
        need_hyp = need_nk or need_survival
        allowed = [int(d) for d in problem.allowed_days]
        if need_nk:
            days = problem.horizon_days
        elif need_survival:
            days = (max(allowed) + 1) if allowed else 0
        else:
            days = 0
        inf_days: tuple[int, ...] = ()
        if problem.nk is not None:
            r = problem.nk
            inf_days = tuple(range(r.earliest_day, min(r.latest_day, problem.horizon_days - 1) + 1))
        # the patient's own NK cells count in NK favourability only (tumour outcomes use the
        # infused cells', docs/model.md section 13)
        need_endo = bool(need_nk and any(problem.metric_of(k) == "nk_favourability" for k in w)
                         and sim.endogenous_active(bio))
        dm = cls(problem, levels, days, need_hyp, need_nk, need_survival, tuple(allowed), inf_days,
                 need_endo)
        dm._tables(quad_nodes)
        return dm

    @staticmethod
    def _feasible_levels(problem: Problem, grid: np.ndarray) -> np.ndarray:
        """Grid levels that some allowed count can use within the radiobiological limits."""
        lo, hi = problem.fraction_count_range()
        ok = grid <= problem.d_max + 1e-9
        for o in problem.oars:
            if o.max_dose_per_fraction_gy is not None:
                od = rb.oar_doses(grid, o.sparing_factor)
                ok &= od <= o.max_dose_per_fraction_gy * (1 + 1e-12)
        if problem.uniform:
            # some n in [lo, hi] meets every BED limit with n fractions of this dose
            bpf = np.asarray(rb.bed_per_fraction(grid, problem.alpha_beta))
            any_n = np.zeros_like(ok)
            for n in range(lo, hi + 1):
                good = n * bpf >= problem.min_bed - 1e-9 * max(1.0, problem.min_bed)
                for o in problem.oars:
                    if o.max_bed_gy is not None:
                        ob = rb.bed_per_fraction(rb.oar_doses(grid, o.sparing_factor),
                                                 o.alpha_beta_gy)
                        good &= n * ob <= o.max_bed_gy * (1 + 1e-12)
                any_n |= good
            ok &= any_n
        else:
            for o in problem.oars:
                if o.max_bed_gy is not None:
                    ob = rb.bed_per_fraction(rb.oar_doses(grid, o.sparing_factor), o.alpha_beta_gy)
                    ok &= ob <= o.max_bed_gy * (1 + 1e-12)
        return grid[ok]

    def _tables(self, quad_nodes: int) -> None:
        pr, bio = self.problem, self.problem.biology
        p, d = bio.params, self.levels
        # the tumour (and every TME threshold) sees the tumour dose, the prescribed grid dose
        # times the prescription's tumour_dose_ratio (Problem.tumour_doses); the prescription
        # BED and the OAR limits stay on the prescribed dose
        dt = np.asarray(pr.tumour_doses(d), dtype=float)
        t, c = self.tab, self.const
        t["bed"] = np.asarray(rb.bed_per_fraction(d, pr.alpha_beta), dtype=float)
        for i, o in enumerate(pr.oars):
            t[f"oar_bed{i}"] = np.asarray(rb.bed_per_fraction(rb.oar_doses(d, o.sparing_factor),
                                                              o.alpha_beta_gy), dtype=float)
        # the jumps of one fraction, read from the simulators' own jump function on unit states
        # (with the endogenous pool: circulating G and tumour Te too)
        ka, ke, norm = (float(x) for x in sg.chemokine_rates(p))
        one, zero = np.ones_like(dt), np.zeros_like(dt)
        w1, v1, P1, _, B1, T1, G1, Te1 = (np.asarray(x, dtype=float) for x in sim.apply_fraction(
            dt, (one, one, zero, zero, one, one, one, one), bio, p, norm))
        t["m"], t["V"], t["A"] = 1.0 - w1, 1.0 - v1, P1      # demand drop, vascular loss, pulse
        t["fT"], t["fB"] = 1.0 - T1, 1.0 - B1                 # tumour / blood NK killed
        t["fTe"], t["fG"] = 1.0 - Te1, 1.0 - G1               # the patient's own, killed
        # exact one-day propagators of the linear parts (the kernel's, with one sub-step a day)
        c["e_w"] = math.exp(-1.0 / p.demand_recovery_days)
        c["e_v"] = math.exp(-1.0 / p.vascular_recovery_days)
        c["e_vh"] = math.exp(-0.5 / p.vascular_recovery_days)              # perfusion, 1/2 day
        c["e_a"], c["e_e"] = math.exp(-ka), math.exp(-ke)
        c["c_pc"] = ka / (ke - ka) * (math.exp(-ka) - math.exp(-ke))          # P -> C, 1 day
        c["e_eh"] = math.exp(-ke / 2)
        c["c_pch"] = ka / (ke - ka) * (math.exp(-ka / 2) - math.exp(-ke / 2))  # P -> C, 1/2 day
        kcl, kout = float(p.nk_blood_clearance_per_day), float(p.nk_tumour_loss_per_day)
        # activity E = kappa T (1 - eta h), read from the simulators' activity function
        kappa = float(sim.nk_activity(1.0, 0.0, p))
        eta = (kappa - float(sim.nk_activity(1.0, 1.0, p))) / kappa if kappa > 0 else 0.0
        c.update(kcl=kcl, kout=kout, e_out=math.exp(-kout), t_int=-math.expm1(-kout) / kout,
                 kappa=kappa, eta=eta, h0=float(bio.hypoxic_fraction),
                 hmax=float(p.hypoxic_fraction_max), gamma=float(p.hypoxia_gamma),
                 e50=float(p.nk_radiosensitisation_e50), s_rad=float(p.nk_radiosensitisation_max),
                 k_nk=float(p.nk_log_kill_per_activity_day), ln_n0=math.log(bio.clonogens))
        # bounds
        n_hi = pr.fraction_count_range()[1]
        c["w_lo"] = float((1.0 - t["m"].max(initial=0.0)) ** n_hi)
        c["v_lo"] = max(float((1.0 - t["V"].max(initial=0.0)) ** n_hi), 1e-12)
        r_cap = (c["hmax"] / c["h0"]) ** (1.0 / c["gamma"]) if c["h0"] > 0 else np.inf
        c["r_cap"] = float(r_cap)
        c["cap_binds"] = float(1.0 / c["v_lo"] > r_cap)
        c["r_hi"] = float(min(r_cap, 1.0 / c["v_lo"]))
        # chemokine bound: n_hi pulses of the largest amplitude at the best distinct lags
        lag = np.arange(0, max(self.days_needed, 1) + 1, dtype=float)
        kern = lambda tt: ka / (ke - ka) * (np.exp(-ka * tt) - np.exp(-ke * tt))
        a_max = float(t["A"].max(initial=0.0))
        top = lambda v: float(np.sort(v)[::-1][:n_hi].sum())
        c["c_max"] = max(a_max * max(top(kern(lag + 0.5)), top(kern(lag + 1.0))), 1e-6) * 1.0001
        c["P_max"] = a_max * n_hi
        n_inf = pr.nk.n_max if pr.nk is not None else 0
        c["nk_max"] = float(max(n_inf, 0))
        # trafficking rate: increasing in chemokine and perfusion (v <= 1), so its largest value
        # is at (c_max, 1); rtopt.model.surrogate.nk_infiltration_rate states it for both forms
        c["kin_max"] = float(sg.nk_infiltration_rate(c["c_max"], 1.0, p)) * 1.0001
        # daily propagator factors of B, T as functions of the day's trafficking rate kin
        x_, w_ = np.polynomial.legendre.leggauss(quad_nodes)
        gs, gw = 0.5 * (x_ + 1.0), 0.5 * w_

        def factors(kin_: np.ndarray) -> dict[str, np.ndarray]:
            kin = np.asarray(kin_, dtype=float)[..., None]
            x = kcl + kin - kout
            beta = np.exp(-(kcl + kin))[..., 0]
            # arrivals that survive to the day's end: kin e^{-kout} int_0^1 e^{-x s} ds
            gam = (kin * math.exp(-kout) * np.sum(gw * np.exp(-x * gs), axis=-1,
                                                  keepdims=True))[..., 0]
            # int_0^1 (arrivals present at t) dt = kin int_0^1 e^{-kout t} t phi(x t) dt
            inner = np.sum(gw * np.exp(-x[..., None] * gs[:, None] * gs[None, :]), axis=-1)
            a = kin[..., 0] * np.sum(gw * np.exp(-kout * gs) * gs * inner, axis=-1)
            return {"beta": beta, "gamma": gam, "a": a}

        self._factors = factors
        for key in ("beta", "gamma", "a"):
            coef, err = _chebyshev_fit(lambda kk, key=key: factors(kk)[key], c["kin_max"])
            self.poly[key], self.fit_error[key] = coef, err
        if self.need_endogenous:
            self._endogenous_constants(gs, gw)
        # clonogen compartments: shares linear in the FMISO fraction h on [0, h_max] (checked;
        # the back-end declines otherwise), slopes from rtopt.model.surrogate.clonogen_hypoxic_shares
        hh = np.linspace(0.0, c["hmax"], 11)
        si, sa = (np.asarray(x, dtype=float) for x in sg.clonogen_hypoxic_shares(hh, p))
        c["s_int"], c["s_an"] = float(si[-1] / hh[-1]), float(sa[-1] / hh[-1])
        c["shares_linear"] = float(np.allclose(si, c["s_int"] * hh, rtol=1e-12, atol=1e-15)
                                   and np.allclose(sa, c["s_an"] * hh, rtol=1e-12, atol=1e-15)
                                   and (c["s_int"] + c["s_an"]) * c["hmax"] <= 1.0)
        # survival tables: oxic, intermediate (d / OER_i) and anoxic (d / OER) doses, at alpha
        # and their increase at the fully radiosensitised alpha (1 + s)
        if self.need_survival:
            a, b = bio.alpha_per_gy, bio.beta_per_gy2
            kw = bio.survival_kw
            a2 = a * (1.0 + c["s_rad"])
            for key, dd in (("ox", dt), ("int", dt / p.oer_intermediate), ("an", dt / p.oer)):
                base = np.asarray(rb.neg_log_survival(dd, a, b, **kw), dtype=float)
                t[f"a_{key}"] = base
                full = np.asarray(rb.neg_log_survival(dd, a2, b, **kw), dtype=float)
                t[f"da_{key}"] = full - base

    def _endogenous_constants(self, gs: np.ndarray, gw: np.ndarray) -> None:
        """Constants of the patient's own NK pool (docs/model.md section 13).

        The circulating pool recovers exactly between fractions, ``dG/dt = k_e (1 - G)``, so
        over a day from ``G+`` (after that day's fraction) ``G(s) = 1 - (1 - G+) e^{-k_e s}``;
        the tumour pool ``dTe/dt = kin n_e G - k_e Te`` with the day's trafficking rate ``kin``
        frozen as for the infused cells gives ``Te(1) = e^{-k_e} Te+ + n_e kin (g0 + g1 G+)``
        and ``int_0^1 Te dt = Te+ (1 - e^{-k_e}) / k_e + n_e kin (i0 + i1 G+)``: both affine
        in ``G+``, coefficients by the Gauss-Legendre nodes of the infused factors.  The level
        ``n_e`` is :func:`rtopt.model.circulation.endogenous_level`, the start
        :func:`rtopt.model.simulator.endogenous_start`, the activity constants are read from
        :func:`rtopt.model.simulator.endogenous_activity`."""
        p, c = self.problem.biology.params, self.const
        ke = float(p.nk_endogenous_turnover_per_day)

        def g_of(s: np.ndarray, gp: float) -> np.ndarray:   # circulating pool s days on
            return 1.0 - (1.0 - gp) * np.exp(-ke * s)

        def per_unit(gp: float) -> tuple[float, float]:
            # arrivals per unit n_e kin: present at the day's end, and their integral over it
            end = float(np.sum(gw * np.exp(-ke * (1.0 - gs)) * g_of(gs, gp)))
            inner = np.sum(gw * np.exp(-ke * gs[:, None] * (1.0 - gs[None, :]))
                           * g_of(gs[:, None] * gs[None, :], gp), axis=-1)
            return end, float(np.sum(gw * gs * inner))

        (e0, i0), (e1, i1) = per_unit(0.0), per_unit(1.0)
        kap = float(sim.endogenous_activity(1.0, 0.0, p))
        c.update(e_g=math.exp(-ke), g_int=-math.expm1(-ke) / ke, te_g0=e0, te_g1=e1 - e0,
                 te_i0=i0, te_i1=i1 - i0, n_e=float(endogenous_level(p)),
                 te0=float(sim.endogenous_start(p)), kappa_e=kap,
                 eta_e=(kap - float(sim.endogenous_activity(1.0, 1.0, p))) / kap if kap > 0
                 else 0.0)
        n_hi = self.problem.fraction_count_range()[1]
        c["G_lo"] = float((1.0 - self.tab["fG"].max(initial=0.0)) ** n_hi)

    def endogenous_bounds(self) -> dict[str, np.ndarray]:
        """Valid day-wise upper bounds of the endogenous tumour NK ``Te`` (start of day), the
        day's ``int Te dt`` and its activity integral: the largest trafficking rate, a full
        circulating pool, no radiation kill, no hypoxic suppression."""
        H, c = self.days_needed, self.const
        inflow = c["n_e"] * c["kin_max"]
        te = np.zeros(H + 1)
        te[0] = c["te0"]
        for j in range(H):
            te[j + 1] = c["e_g"] * te[j] + inflow * (c["te_g0"] + c["te_g1"])
        i = c["g_int"] * te + inflow * (c["te_i0"] + c["te_i1"])
        return {"Te": te, "I": i, "Ed": c["kappa_e"] * i}

    # ------------------------------------------------------------------ helpers
    def polyval(self, key: str, kin: Any) -> Any:
        """The fitted factor ``key`` at the day's trafficking rate ``kin`` (numpy or Pyomo)."""
        coef = self.poly[key]
        s = kin * (1.0 / self.const["kin_max"])
        out = float(coef[-1])
        for a in coef[-2::-1]:
            out = out * s + float(a)
        return out

    def hyp(self, r: Any) -> Any:
        """FMISO hypoxic fraction ``h0 r^gamma`` from the (capped) ratio ``r = w / v``, the
        uncapped branch of :func:`rtopt.model.surrogate.hypoxic_fraction` (the cap ``h_max`` is the
        cap of ``r``, so this is the same function; a test holds them together)."""
        c = self.const
        return c["h0"] * (r if c["gamma"] == 1.0 else r ** c["gamma"])

    def kin(self, cm: Any, vm: Any) -> Any:
        """The day's trafficking rate at mid-day chemokine ``cm`` and perfusion ``vm``
        (:func:`rtopt.model.surrogate.nk_infiltration_rate`; numpy or Pyomo)."""
        return sg.nk_infiltration_rate(cm, vm, self.problem.biology.params)

    def nk_bounds(self) -> dict[str, np.ndarray]:
        """Valid day-wise upper bounds of ``B`` (start of day), ``B++`` (after the infusion),
        ``T``, the day's ``int T dt`` and the day's activity integral: the latest allowed
        infusions at the minimum spacing, with the largest trafficking factors, no radiation
        kill and no hypoxic suppression."""
        H, c = self.days_needed, self.const
        ks = np.linspace(0.0, c["kin_max"], 401)
        f = self._factors(ks)
        fmax = {k: float(max(np.max(f[k]), np.max(self.polyval(k, ks)))) for k in f}
        r = self.problem.nk
        inf = np.array(sorted(self.inf_days), dtype=int)
        bpp = np.zeros(H + 1)
        for j in range(H + 1):
            prev = inf[inf <= j]
            tot, n = 0.0, 0
            while prev.size and n < (r.n_max if r else 0):
                t0 = int(prev[-1])
                tot += fmax["beta"] ** (j - t0)
                n += 1
                prev = prev[prev <= t0 - max(1, r.min_interval_days)]
            bpp[j] = tot
        b = np.concatenate([[0.0], bpp[:-1] * fmax["beta"]])
        t = np.zeros(H + 1)
        for j in range(H):
            t[j + 1] = c["e_out"] * t[j] + bpp[j] * fmax["gamma"]
        i = c["t_int"] * t + bpp * fmax["a"]
        return {"B": b, "Bpp": bpp, "T": t, "I": i, "Ed": c["kappa"] * i, "fmax": fmax}

    @property
    def nk_start(self) -> int:
        """First day on which NK cells can be present."""
        return min(self.inf_days) if self.inf_days else self.days_needed

    def log_survival(self, k: int, h: float, act: float) -> float:
        """ln S of one fraction at level ``k``, FMISO fraction ``h`` and previous-day activity
        ``act``, from the tables: the algebraic form the MINLP states (a test holds it to
        :func:`rtopt.model.simulator.fraction_log_survival`)."""
        c, t = self.const, self.tab
        rho = act / (c["e50"] + act) if act > 0 else 0.0
        hi, ha = c["s_int"] * h, c["s_an"] * h
        terms = [(1.0 - hi - ha, "ox"), (hi, "int"), (ha, "an")]
        return float(np.logaddexp.reduce([math.log(wt) - (t[f"a_{key}"][k]
                                                          + rho * t[f"da_{key}"][k])
                                          for wt, key in terms if wt > 0]))

    # ------------------------------------------------------------------ forward model
    def forward(self, fraction_days: Any, levels: Any, infusion_days: Any = ()) -> dict[str, Any]:
        """Evaluate the daily-grid model (equalities) for one schedule.

        ``levels`` are indices into :attr:`levels`, one per fraction day.  Returns the states
        (arrays over days ``0 .. days_needed``), per-day auxiliaries and the model's metrics
        and objective (:meth:`rtopt.problem.problem.Problem.objective_from_metrics`).
        """
        H = self.days_needed
        c, t = self.const, self.tab
        lev = {int(j): int(k) for j, k in zip(fraction_days, levels)}
        inf = {int(j) for j in infusion_days}
        st = {k: np.zeros(H + 1) for k in ("w", "v", "P", "C", "B", "T", "r", "h", "G", "Te")}
        aux = {k: np.zeros(max(H, 1)) for k in ("wp", "vp", "Pp", "Tp", "Bp", "rp", "hp", "cm",
                                                "vm", "kin", "beta", "gamma", "a", "I", "Ed",
                                                "E", "rho", "lnS", "mw", "mv", "fT", "fB",
                                                "Gp", "Tep", "fG", "fTe", "Ie", "Ede")}
        aux["cap"], aux["capp"] = np.zeros(H + 1), np.zeros(max(H, 1))
        w = v = 1.0
        P = C = B = T = 0.0
        endo = self.need_endogenous
        G, Te = (1.0, c["te0"]) if endo else (0.0, 0.0)

        def ratio(w, v):
            raw = w / v
            return (c["r_cap"], 1.0) if raw >= c["r_cap"] else (raw, 0.0)

        for j in range(H + 1):
            r, cap = ratio(w, v)
            h = self.hyp(r)
            st["w"][j], st["v"][j], st["P"][j], st["C"][j] = w, v, P, C
            st["B"][j], st["T"][j], st["r"][j], st["h"][j] = B, T, r, h
            st["G"][j], st["Te"][j] = G, Te
            aux["cap"][j] = cap
            if j == H:
                break
            k = lev.get(j)
            if k is not None:
                # radiosensitisation by the activity over the day before the fraction
                E = aux["Ed"][j - 1] if (j > 0 and self.need_nk) else 0.0
                aux["E"][j] = E
                aux["rho"][j] = E / (c["e50"] + E) if E > 0 else 0.0
                if self.need_survival:
                    aux["lnS"][j] = self.log_survival(k, h, E)
                aux["mw"][j], aux["mv"][j] = t["m"][k], t["V"][k]
                aux["fT"][j], aux["fB"][j] = t["fT"][k], t["fB"][k]
                w, v = w * (1 - t["m"][k]), v * (1 - t["V"][k])
                P = P + t["A"][k]
                T, B = T * (1 - t["fT"][k]), B * (1 - t["fB"][k])
                if endo:
                    aux["fG"][j], aux["fTe"][j] = t["fG"][k], t["fTe"][k]
                    G, Te = G * (1 - t["fG"][k]), Te * (1 - t["fTe"][k])
            aux["wp"][j], aux["vp"][j], aux["Pp"][j] = w, v, P
            aux["Tp"][j], aux["Bp"][j] = T, B
            aux["Gp"][j], aux["Tep"][j] = G, Te
            rp, capp = ratio(w, v)
            aux["rp"][j], aux["hp"][j], aux["capp"][j] = rp, self.hyp(rp), capp
            if j in inf:
                B = B + 1.0
            # trafficking frozen at mid-day chemokine and perfusion
            cm = c["e_eh"] * C + c["c_pch"] * P
            vm = 1.0 - c["e_vh"] * (1.0 - v)
            kin = float(self.kin(cm, vm))
            be, ga, a = (self.polyval(key, kin) for key in ("beta", "gamma", "a"))
            aux["cm"][j], aux["vm"][j], aux["kin"][j] = cm, vm, kin
            aux["beta"][j], aux["gamma"][j], aux["a"][j] = be, ga, a
            aux["I"][j] = T * c["t_int"] + B * a
            T, B = c["e_out"] * T + B * ga, B * be
            if endo:
                aux["Ie"][j] = c["g_int"] * Te + c["n_e"] * kin * (c["te_i0"] + c["te_i1"] * G)
                Te = c["e_g"] * Te + c["n_e"] * kin * (c["te_g0"] + c["te_g1"] * G)
                G = 1.0 - (1.0 - G) * c["e_g"]
            w, v = 1 - (1 - w) * c["e_w"], 1 - (1 - v) * c["e_v"]
            C, P = c["e_e"] * C + c["c_pc"] * P, c["e_a"] * P
            # the day's activity integral, hypoxia averaged over the day (trapezoid)
            hbar = 0.5 * (aux["hp"][j] + self.hyp(ratio(w, v)[0]))
            aux["Ed"][j] = c["kappa"] * aux["I"][j] * (1.0 - c["eta"] * hbar) if self.need_nk \
                else 0.0
            if endo:
                aux["Ede"][j] = c["kappa_e"] * aux["Ie"][j] * (1.0 - c["eta_e"] * hbar)
        out: dict[str, Any] = {"states": st, "aux": aux}
        auc = float(np.sum(aux["Ed"][:H])) if self.need_nk else 0.0
        auc_e = float(np.sum(aux["Ede"][:H])) if endo else 0.0
        # NK favourability counts both pools; tumour outcomes the infused cells' only
        out["nk_favourability"] = auc + auc_e
        out["nk_favourability_endogenous"] = auc_e
        days = sorted(lev)
        overall = (days[-1] - days[0]) if days else 0
        pr = self.problem
        bed = float(sum(t["bed"][lev[j]] for j in days) - _repop_loss(pr, overall))
        out["tumour_bed_gy"] = bed
        if self.need_survival:
            ln_s = float(np.sum(aux["lnS"][:H])) - c["k_nk"] * auc + float(
                rb.repopulation_log_gain(float(overall), pr.biology.potential_doubling_days,
                                         pr.biology.repopulation_kickoff_days))
            out["ln_survival"] = ln_s
            out["tumour_log10_kill"] = -ln_s / math.log(10.0)
            out["tcp"] = float(rb.poisson_tcp(pr.biology.clonogens, ln_s))
        out["n_fractions"] = float(len(days))
        out["overall_days"] = float(overall)
        metrics = {k: np.array([v]) for k, v in out.items() if isinstance(v, float)}
        out["objective"] = float(pr.objective_from_metrics(metrics, 1)[0])
        return out


# ---------------------------------------------------------------------------- MINLP (SCIP)


class PyomoMinlpBackend(Backend):
    name = "pyomo_minlp"
    description = ("Pyomo MINLP of the TME model on the daily grid (fraction, dose-level and "
                   "infusion binaries), solved by SCIP")
    # what the daily-grid algebraic form states; ``tcp`` only as per-patient Poisson TCP
    objectives = ("nk_favourability", "tumour_log_kill", "tumour_bed", "tcp")
    supports_nk = True
    supports_per_fraction = True
    supports_continuous_dose = False
    supports_costs = True  # a sum of fraction binaries and the last-minus-first fraction day
    supports_tumour_dose_ratio = True  # tumour tables at ratio x the prescribed grid dose
    global_optimality = False  # optimal for its daily-grid approximation, not the simulator
    requires = ("pyomo", "pyscipopt")
    guarantee = ("SCIP's optimum (or incumbent at the time limit) of a daily-grid approximation "
                 "of the simulator; the bound is of that model; plans are verified by simulation")

    def check(self, problem: Problem) -> tuple[bool, str]:
        not_algebraic = [k for k in problem.weights
                         if k not in self.objectives
                         or problem.metric_of(k) in ("local_control", "nk_gain_local_control")]
        if not_algebraic:
            why = []
            for k in not_algebraic:
                if k == "tcp":
                    why.append("tcp with tcp_model = \"population\" (local control, an average "
                               "of TCP over patients' radiosensitivity; set tcp_model = "
                               "\"per_patient\" for Poisson TCP at the nominal alpha)")
                elif k.startswith("nk_gain"):
                    why.append(f"{k} (a counterfactual of the same plan without NK cells)")
                else:
                    why.append(f"{k} (population tumour control)" if k == "local_control"
                               else k)
            return False, (f"{self.name} does not optimise {'; '.join(why)}: its daily-grid "
                           f"algebraic form states {', '.join(self.objectives[:3])} and "
                           "per-patient tcp only")
        ok, why = super().check(problem)
        if not ok:
            return ok, why
        p = problem.biology.params
        hc = np.asarray(sg.clonogen_hypoxic_shares(p.hypoxic_fraction_max, p), dtype=float)
        if float(np.sum(hc)) >= 1.0 and {"tumour_log_kill", "tcp"} & set(problem.weights):
            return False, (f"{self.name} needs clonogen hypoxic shares linear in the FMISO "
                           "fraction (clonogen_hypoxia_ratio * hypoxic_fraction_max < 1)")
        return True, ""

    def solve(self, problem: Problem, options: SolverOptions) -> BackendOutput:
        t0 = time.perf_counter()
        name, version = "SCIP via Pyomo", package_version("pyscipopt")
        try:
            import pyomo.environ as pyo

            _guard_size(self.name, 2 * int(problem.allowed_days.size) * _grid_size(problem)
                        + 20 * problem.horizon_days, options)
            dm = DailyModel.build(problem)
            if dm.levels.size == 0:
                return BackendOutput((), Termination.INFEASIBLE, message="no grid dose meets the "
                                     "dose-per-fraction and BED limits with any allowed count",
                                     solver_name=name, solver_version=version)
            starts = self._warm_starts(problem, dm, int(options.options.get("warm_starts", 5)))
            m, handles = _build_minlp(pyo, problem, dm)
            build_s = time.perf_counter() - t0
            solver = _scip_solver()
            version = _scip_version(solver)
            start_vals = []
            for plan_levels in starts:
                fw = dm.forward(*plan_levels)
                start_vals.append((handles.start_values(fw, plan_levels), fw["objective"]))
            solver.extra_starts = start_vals
            solver.emphasis = dict(options.options.get("scip_emphasis",
                                                       {"heuristics": "aggressive",
                                                        "separating": "fast"}))
            scip_opts = {"randomization/randomseedshift": int(options.seed)}
            scip_opts.update(options.options.get("scip", {}))
            res = _quiet_solve(solver, m, time_limit=_remaining(options, t0),
                               rel_gap=options.rel_gap, threads=options.threads,
                               warmstart_discrete_vars=bool(start_vals), solver_options=scip_opts)
            n_sol = res.solution_loader.get_number_of_solutions()
            term = _termination(res.termination_condition, n_sol > 0)
            inc, bound = _finite(res.incumbent_objective), _finite(res.objective_bound)
            extras: dict[str, Any] = {
                "exact_for_instance": False,
                "bound_of": "SCIP's dual bound of its daily-grid model, not of the simulator",
                "scip_status": res.termination_condition.name,
                "scip_gap": _rel_gap(inc, bound), "scip_nodes": _extra(res, "NNodes"),
                "build_s": round(build_s, 4), "solutions": n_sol,
                "warm_starts": [self._describe_start(dm, s) for s in starts],
                "variables": m.nvariables(), "constraints": m.nconstraints(),
                "dose_levels": int(dm.levels.size), "days_modelled": dm.days_needed,
                "endogenous_pool": dm.need_endogenous,
                "tumour_dose_ratio": float(problem.tumour_dose_ratio),
                "fit_max_abs_error": {k: float(v) for k, v in dm.fit_error.items()},
                "formulation": "uniform" if problem.uniform else "per_fraction"}
            if n_sol == 0:
                msg = ("SCIP proved the daily-grid model infeasible"
                       if term == Termination.INFEASIBLE
                       else f"SCIP stopped without a plan ({res.termination_condition.name})")
                return BackendOutput((), term, message=msg, solver_name=name,
                                     solver_version=version, extras=extras)
            plans, model_obj = [], []
            for sid in res.solution_loader.get_solution_ids():
                vals = res.solution_loader.solution(sid).get_vars()
                fd, lv, nk = handles.read(vals)
                plan = Plan(fd, tuple(float(dm.levels[k]) for k in lv), nk)
                if plan not in plans:
                    plans.append(plan)
                    model_obj.append(dm.forward(fd, lv, nk)["objective"])
            extras["model_objective"] = model_obj[0]
            extras["model_objectives"] = model_obj
            warm = [dm.forward(*st)["objective"] for st in starts]
            extras["warm_start_model_objective"] = max(warm) if warm else None
            extras["improved_on_warm_start"] = bool(
                not warm or max(model_obj) > max(warm) + 1e-9 * max(1.0, abs(max(warm))))
            msg = ("claimed objective and bound are SCIP's for its daily-grid model "
                   f"(incumbent {inc if inc is not None else float('nan'):.6g}, "
                   f"bound {bound if bound is not None else float('nan'):.6g})")
            return BackendOutput(tuple(plans), term, inc, bound, message=msg, solver_name=name,
                                 solver_version=version, extras=extras)
        except ProblemDeclined:
            raise  # too large to build: rtopt.planning.solve reports it as declined
        except ArithmeticError as e:
            return BackendOutput((), Termination.NUMERICAL, message=_one_line(e),
                                 solver_name=name, solver_version=version)
        except Exception as e:  # a solver fault is reported, never raised
            return BackendOutput((), Termination.ERROR, message=_one_line(e), solver_name=name,
                                 solver_version=version)

    # ------------------------------------------------------------------ warm start
    @staticmethod
    def _describe_start(dm: DailyModel, s: tuple) -> str:
        fd, lv, nk = s
        return Plan(fd, tuple(float(dm.levels[k]) for k in lv), nk).describe()

    @staticmethod
    def _warm_starts(problem: Problem, dm: DailyModel, how_many: int, max_pool: int = 60000
                     ) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """Simple feasible schedules, best first by the simulator.

        The pool: greedy (compact) calendars of every count from each allowed start in the first
        week, every retained dose level (the same for all fractions), and as infusions the
        earliest valid minimum set plus, when the objective involves NK cells, the greedy set of
        the maximum count from every start day.  Subsampled over dose levels above ``max_pool``.
        """
        if how_many <= 0:
            return []
        lo, hi = problem.fraction_count_range()
        allowed_frac, allowed_inf = set(dm.frac_days), set(dm.inf_days)
        first = int(dm.frac_days[0]) if dm.frac_days else 0
        cals = set()
        for n in range(lo, hi + 1):
            for s0 in dm.frac_days:
                if s0 >= first + 7:
                    break
                cal = problem.compact_calendar(n, start=s0)
                if cal is not None and len(cal) == n and set(cal) <= allowed_frac:
                    cals.add(cal)
            if dm.need_survival:
                # tumour kill gains from spreading the fractions (reoxygenation): also the
                # regular calendars of exhaustive's space, spacings up to 3 days beyond the
                # minimum, which SCIP does not reach from the compact ones in seconds
                cals.update(c for c in ExhaustiveBackend.calendars(problem, n, first + 7, 3)
                            if len(c) == n and set(c) <= allowed_frac)
        pairs = []
        for cal in sorted(cals):
            sets = []
            nk = problem.first_valid_infusions(cal)
            if nk is not None and set(nk) <= allowed_inf:
                sets.append(nk)
            if dm.need_nk:
                r = problem.nk
                for t0 in dm.inf_days:
                    days: list[int] = []
                    for tt in range(t0, r.latest_day + 1):
                        if len(days) == r.n_max:
                            break
                        if (not days or tt - days[-1] >= r.min_interval_days) \
                                and problem.infusion_day_ok(cal, tt):
                            days.append(tt)
                    if len(days) >= r.n_min and tuple(days) not in sets:
                        sets.append(tuple(days))
            pairs.extend((cal, nk) for nk in sets)
        if not pairs:
            return []
        levels = np.arange(dm.levels.size)
        if len(pairs) * levels.size > max_pool:
            step = int(np.ceil(len(pairs) * levels.size / max_pool))
            levels = np.unique(np.concatenate([levels[::step], levels[-1:]]))
        cands = [(cal, (int(k),) * len(cal), nk) for cal, nk in pairs for k in levels]
        H = problem.horizon_days
        D = np.zeros((len(cands), H))
        U = np.zeros((len(cands), H))
        for i, (cal, lv, nk) in enumerate(cands):
            D[i, list(cal)] = dm.levels[list(lv)]
            for d in nk:
                U[i, d] += 1
        ev = problem.evaluate(D, U, simulate_tme=problem.needs_simulation)
        obj = np.where(ev.feasible, ev.objective, -np.inf)
        order = [i for i in np.argsort(-obj, kind="stable") if np.isfinite(obj[i])]
        return [cands[i] for i in order[:how_many]]


def _scip_version(solver: Any) -> str:
    """``SCIP x.y.z (pyscipopt a.b.c, Pyomo p.q.r)``."""
    try:
        import pyscipopt

        m = pyscipopt.Model()
        scip = f"SCIP {m.getMajorVersion()}.{m.getMinorVersion()}.{m.getTechVersion()} "
    except Exception:  # an older pyscipopt without the version getters
        scip = ""
    return (f"{scip}(pyscipopt {'.'.join(str(x) for x in solver.version())}, "
            f"Pyomo {package_version('pyomo')})")


def _scip_solver() -> Any:
    """``scip_direct`` with a warm start that also passes continuous values and several
    solutions (Pyomo's own ``warmstart_discrete_vars`` passes one, integers only)."""
    from pyomo.contrib.solver.solvers.scip.scip_direct import ScipDirect

    class _Scip(ScipDirect):
        extra_starts: list = []
        emphasis: dict = {}

        def _mipstart(self) -> None:
            self._emphasis()
            vmap = getattr(self, "_pyomo_var_to_solver_var_map", None)
            if vmap is None or not self.extra_starts:
                return super()._mipstart()
            sm = self._solver_model
            for values, obj_val in self.extra_starts:
                pairs = []
                for pv, sv in vmap.items():
                    val = values.get(pv, pv.value if pv.fixed else None)
                    if val is not None:
                        pairs.append((sv, float(val)))
                # a complete solution is checked and stored as it is; a partial one would be
                # completed by SCIP's completesol sub-MIP, which spends seconds per start
                obj_var = getattr(self, "_obj_var", None)
                complete = len(pairs) == len(vmap) and obj_var is not None and obj_val is not None
                if complete:
                    # the epigraph variable of the objective, just inside its constraint
                    pairs.append((obj_var, float(obj_val) - 1e-9 * max(1.0, abs(obj_val))))
                sol = sm.createSol() if complete else sm.createPartialSol()
                for sv, val in pairs:
                    sol[sv] = val
                if complete:
                    sm.addSol(sol, free=True)
                else:
                    sm.addSol(sol)

        def _emphasis(self) -> None:
            """Parameter emphasis settings (``heuristics``, ``separating``, ``presolving``:
            ``aggressive`` / ``fast`` / ``off`` / ``default``), which are not plain parameters."""
            from pyscipopt import SCIP_PARAMSETTING

            sm = self._solver_model
            for what, level in self.emphasis.items():
                setting = getattr(SCIP_PARAMSETTING, str(level).upper())
                {"heuristics": sm.setHeuristics, "separating": sm.setSeparating,
                 "presolving": sm.setPresolve}[what](setting)

    s = _Scip()
    if not s.available():
        raise RuntimeError("SCIP (pyscipopt) is not available")
    return s


@dataclass
class _Handles:
    """How to read a solution of the MINLP and how to write a warm start into it."""

    m: Any
    dm: DailyModel

    def read(self, vals: Any) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        m, dm = self.m, self.dm
        K = range(dm.levels.size)
        fd, lv = [], []
        for j in dm.frac_days:
            if vals[m.x[j]] > _INT_TOL:
                fd.append(j)
                if dm.problem.uniform:
                    lv.append(max(K, key=lambda k: vals[m.z[k]]))
                else:
                    lv.append(max(K, key=lambda k: vals[m.q[j, k]]))
        nk = tuple(j for j in dm.inf_days if vals[m.u[j]] > _INT_TOL)
        return tuple(fd), tuple(lv), nk

    def start_values(self, fw: dict[str, Any], sched: tuple) -> dict[Any, float]:
        """Values of every model variable for a schedule, from :meth:`DailyModel.forward`."""
        m, dm = self.m, self.dm
        fd, lv, nk = sched
        from pyomo.common.collections import ComponentMap

        lev = dict(zip(fd, lv))
        out = ComponentMap()
        for j in dm.frac_days:
            out[m.x[j]] = 1.0 if j in lev else 0.0
            for k in range(dm.levels.size):
                out[m.q[j, k]] = 1.0 if lev.get(j) == k else 0.0
        if dm.problem.uniform:
            k0 = lv[0] if lv else 0
            for k in range(dm.levels.size):
                out[m.z[k]] = 1.0 if k == k0 else 0.0
        for j in dm.inf_days:
            out[m.u[j]] = 1.0 if j in nk else 0.0
        st, aux = fw["states"], fw["aux"]
        for comp, arr in (("w", st["w"]), ("v", st["v"]), ("P", st["P"]), ("C", st["C"]),
                          ("B", st["B"]), ("T", st["T"]), ("r", st["r"]), ("cap", aux["cap"]),
                          ("wp", aux["wp"]), ("vp", aux["vp"]), ("Tp", aux["Tp"]),
                          ("Bp", aux["Bp"]), ("rp", aux["rp"]), ("capp", aux["capp"]),
                          ("mw", aux["mw"]), ("mv", aux["mv"]), ("fT", aux["fT"]),
                          ("fB", aux["fB"]), ("beta", aux["beta"]), ("gamma", aux["gamma"]),
                          ("a", aux["a"]), ("I", aux["I"]), ("Ed", aux["Ed"]),
                          ("cm", aux["cm"]), ("kin", aux["kin"]), ("rho", aux["rho"]),
                          ("lnS", aux["lnS"]), ("G", st["G"]), ("Te", st["Te"]),
                          ("Gp", aux["Gp"]), ("Tep", aux["Tep"]), ("fG", aux["fG"]),
                          ("fTe", aux["fTe"]), ("Ie", aux["Ie"]), ("Ede", aux["Ede"])):
            var = getattr(m, comp, None)
            if var is None:
                continue
            for idx in var:
                if idx < len(arr):
                    out[var[idx]] = float(arr[idx])
        if hasattr(m, "sv"):
            for (j, key) in m.sv:
                k = lev.get(j)
                out[m.sv[j, key]] = float(dm.tab[key][k]) if k is not None else 0.0
        if hasattr(m, "first"):
            out[m.first] = float(fd[0]) if fd else 0.0
            out[m.last] = float(fd[-1]) if fd else 0.0
        if hasattr(m, "excess"):
            tk = float(dm.problem.biology.repopulation_kickoff_days)
            out[m.excess] = max(0.0, (fd[-1] - fd[0] if fd else 0.0) - tk)
        return out


def _build_minlp(pyo: Any, problem: Problem, dm: DailyModel) -> tuple[Any, _Handles]:
    """The MINLP of the module docstring (monotone relaxation of the daily-grid model)."""
    c, t = dm.const, dm.tab
    H = dm.days_needed
    K = list(range(dm.levels.size))
    Jf = list(dm.frac_days)
    Ju = list(dm.inf_days)
    Jf_set, Ju_set = set(Jf), set(Ju)
    q_sum = pyo.quicksum
    m = pyo.ConcreteModel(name="rtopt_minlp")
    m.x = pyo.Var(Jf, domain=pyo.Binary)
    m.u = pyo.Var(Ju, domain=pyo.Binary)
    if problem.uniform:
        m.z = pyo.Var(K, domain=pyo.Binary)
        m.q = pyo.Var(Jf, K, bounds=(0, 1))
        m.one_dose = pyo.Constraint(expr=q_sum(m.z[k] for k in K) == 1)
        m.q_z = pyo.Constraint(Jf, K, rule=lambda m, j, k: m.q[j, k] <= m.z[k])
    else:
        m.q = pyo.Var(Jf, K, domain=pyo.Binary)
    m.q_x = pyo.Constraint(Jf, rule=lambda m, j: q_sum(m.q[j, k] for k in K) == m.x[j])
    lin = lambda coef, j: q_sum(float(coef[k]) * m.q[j, k] for k in K if coef[k] != 0.0)

    # ---- calendar and count rules
    lo, hi = problem.fraction_count_range()
    m.rules = pyo.ConstraintList()
    n_fr = q_sum(m.x[j] for j in Jf)
    m.rules.add(n_fr >= lo)
    m.rules.add(n_fr <= hi)
    mi = problem.min_interval
    if mi > 1:
        for j in Jf:
            win = [i for i in Jf if j <= i < j + mi]
            if len(win) > 1:
                m.rules.add(q_sum(m.x[i] for i in win) <= 1)
    for a in Jf:
        for b in Jf:
            if b - a > problem.max_overall:
                m.rules.add(m.x[a] + m.x[b] <= 1)
    if problem.nk is not None:
        r = problem.nk
        n_u = q_sum(m.u[j] for j in Ju)
        if r.n_min > 0:
            m.rules.add(n_u >= r.n_min)
        m.rules.add(n_u <= r.n_max)
        if r.min_interval_days > 1:
            for j in Ju:
                win = [i for i in Ju if j <= i < j + r.min_interval_days]
                if len(win) > 1:
                    m.rules.add(q_sum(m.u[i] for i in win) <= 1)
        for tday in Ju:
            for f in Jf:
                if tday < f <= tday + r.min_days_before_next_fraction:
                    m.rules.add(m.u[tday] + m.x[f] <= 1)

    # ---- overall time (repopulation, cost per overall day) and clinical limits
    repop = _has_repopulation(problem)
    loss_expr = 0.0
    gain_expr = 0.0
    overall_expr = 0.0
    if repop or problem.cost_per_overall_day:
        big = float(problem.horizon_days)
        m.first = pyo.Var(bounds=(0, big))
        m.last = pyo.Var(bounds=(0, big))
        # first <= every fraction day, last >= every fraction day: last - first >= the overall
        # time, with equality at an optimum (a longer overall time only costs)
        for j in Jf:
            m.rules.add(m.first <= j + big * (1 - m.x[j]))
            m.rules.add(m.last >= j * m.x[j])
        overall_expr = m.last - m.first
    if repop:
        bio = problem.biology
        m.excess = pyo.Var(bounds=(0, big))
        m.rules.add(m.excess >= m.last - m.first - bio.repopulation_kickoff_days)
        # slopes from rtopt.model.radiobiology (both linear in the overall time beyond T_k)
        tk = float(bio.repopulation_kickoff_days)
        slope_gain = float(rb.repopulation_log_gain(tk + 1.0, bio.potential_doubling_days, tk))
        slope_loss = float(_repop_loss(problem, tk + 1.0) - _repop_loss(problem, tk))
        loss_expr = slope_loss * m.excess
        gain_expr = slope_gain * m.excess
    bed = q_sum(lin(t["bed"], j) for j in Jf) - loss_expr
    if problem.min_bed > 0:
        m.rules.add(bed >= problem.min_bed)
    for i, o in enumerate(problem.oars):
        if o.max_bed_gy is not None:
            m.rules.add(q_sum(lin(t[f"oar_bed{i}"], j) for j in Jf) <= o.max_bed_gy)

    # ---- states
    auc = 0.0          # the infused cells' activity integral
    auc_e = 0.0        # the patient's own NK cells' (NK favourability only)
    ln_s_total = 0.0
    if dm.need_hypoxia and H > 0:
        days = list(range(H + 1))
        Jfh = [j for j in Jf if j < H]
        m.w = pyo.Var(days, bounds=(c["w_lo"], 1.0))
        m.v = pyo.Var(days, bounds=(c["v_lo"], 1.0))
        m.r = pyo.Var(days, bounds=(c["w_lo"], c["r_hi"]))
        m.wp = pyo.Var(Jfh, bounds=(c["w_lo"], 1.0))
        m.vp = pyo.Var(Jfh, bounds=(c["v_lo"], 1.0))
        m.rp = pyo.Var(Jfh, bounds=(c["w_lo"], c["r_hi"]))
        m.mw = pyo.Var(Jfh, bounds=(0.0, float(t["m"].max(initial=0.0))))
        m.mv = pyo.Var(Jfh, bounds=(0.0, float(t["V"].max(initial=0.0))))
        m.dyn = pyo.ConstraintList()
        m.w[0].fix(1.0)
        m.v[0].fix(1.0)
        wp = {j: (m.wp[j] if j in m.wp else m.w[j]) for j in range(H)}
        vp = {j: (m.vp[j] if j in m.vp else m.v[j]) for j in range(H)}
        for j in Jfh:
            m.dyn.add(m.mw[j] == lin(t["m"], j))
            m.dyn.add(m.mv[j] == lin(t["V"], j))
            m.dyn.add(m.wp[j] >= m.w[j] - m.w[j] * m.mw[j])
            # perfusion is exact: it also sets the trafficking rate, and earlier infiltration
            # is not better on every day (see the module docstring)
            m.dyn.add(m.vp[j] == m.v[j] - m.v[j] * m.mv[j])
        for j in range(H):
            m.dyn.add(m.w[j + 1] == 1.0 - c["e_w"] + c["e_w"] * wp[j])
            m.dyn.add(m.v[j + 1] == 1.0 - c["e_v"] + c["e_v"] * vp[j])
        # hypoxia ratio r >= w / v, capped at r_cap (h_max) with a binary where it can bind
        cap = bool(c["cap_binds"])
        if cap:
            m.cap = pyo.Var(days, domain=pyo.Binary)
            m.capp = pyo.Var(Jfh, domain=pyo.Binary)

        def ratio(rv, vv, ww, bvar):
            if cap:
                m.dyn.add(rv * vv >= ww - bvar)
                m.dyn.add(rv >= c["r_cap"] * bvar)
            else:
                m.dyn.add(rv * vv >= ww)

        for j in days:
            ratio(m.r[j], m.v[j], m.w[j], m.cap[j] if cap else None)
        for j in Jfh:
            ratio(m.rp[j], m.vp[j], m.wp[j], m.capp[j] if cap else None)
        h = {j: dm.hyp(m.r[j]) for j in days}
        hp = {j: (dm.hyp(m.rp[j]) if j in m.rp else h[j]) for j in range(H)}

        if dm.need_nk:
            s0 = dm.nk_start
            nb = dm.nk_bounds()
            tol = 1.0 + 1e-6
            m.P = pyo.Var(days, bounds=(0.0, c["P_max"]))
            m.C = pyo.Var(days, bounds=(0.0, c["c_max"]))
            m.B = pyo.Var(days, bounds=lambda m, j: (0.0, nb["B"][j] * tol))
            m.T = pyo.Var(days, bounds=lambda m, j: (0.0, nb["T"][j] * tol))
            for comp in (m.P, m.C, m.B, m.T):
                comp[0].fix(0.0)
            for j in days:
                if j < s0:
                    m.B[j].fix(0.0)
                    m.T[j].fix(0.0)
            Pp = {j: m.P[j] + (lin(t["A"], j) if j in Jf_set else 0.0) for j in range(H)}
            for j in range(H):
                m.dyn.add(m.P[j + 1] == c["e_a"] * Pp[j])
                m.dyn.add(m.C[j + 1] == c["e_e"] * m.C[j] + c["c_pc"] * Pp[j])
            Jn = [j for j in range(H) if j >= s0]
            Jnf = [j for j in Jfh if j >= s0]
            m.fT = pyo.Var(Jnf, bounds=(0.0, float(t["fT"].max(initial=0.0))))
            m.fB = pyo.Var(Jnf, bounds=(0.0, float(t["fB"].max(initial=0.0))))
            m.Tp = pyo.Var(Jnf, bounds=lambda m, j: (0.0, nb["T"][j] * tol))
            m.Bp = pyo.Var(Jnf, bounds=lambda m, j: (0.0, nb["B"][j] * tol))
            for j in Jnf:
                m.dyn.add(m.fT[j] == lin(t["fT"], j))
                m.dyn.add(m.fB[j] == lin(t["fB"], j))
                m.dyn.add(m.Tp[j] <= m.T[j] - m.T[j] * m.fT[j])
                m.dyn.add(m.Bp[j] <= m.B[j] - m.B[j] * m.fB[j])
            Tp = {j: (m.Tp[j] if j in m.Tp else m.T[j]) for j in Jn}
            Bpp = {j: (m.Bp[j] if j in m.Bp else m.B[j]) + (m.u[j] if j in Ju_set else 0.0)
                   for j in Jn}
            fmax = nb["fmax"]
            m.beta = pyo.Var(Jn, bounds=(0.0, fmax["beta"] * 1.001))
            m.gamma = pyo.Var(Jn, bounds=(0.0, fmax["gamma"] * 1.001))
            m.a = pyo.Var(Jn, bounds=(0.0, fmax["a"] * 1.001))
            m.I = pyo.Var(Jn, bounds=lambda m, j: (0.0, nb["I"][j] * tol))
            m.Ed = pyo.Var(Jn, bounds=lambda m, j: (0.0, nb["Ed"][j] * tol))
            # mid-day chemokine as a variable, and the day's trafficking rate from
            # rtopt.model.surrogate.nk_infiltration_rate at mid-day chemokine and perfusion, so the
            # factor polynomials are in one variable
            # (every day with the patient's own NK cells, which are there from day 0)
            endo = dm.need_endogenous
            Jk = list(range(H)) if endo else Jn
            m.cm = pyo.Var(Jk, bounds=(0.0, c["c_max"]))
            m.kin = pyo.Var(Jk, bounds=(0.0, c["kin_max"]))
            for j in Jk:
                vm = 1.0 - c["e_vh"] + c["e_vh"] * vp[j]
                m.dyn.add(m.cm[j] == c["e_eh"] * m.C[j] + c["c_pch"] * Pp[j])
                m.dyn.add(m.kin[j] == dm.kin(m.cm[j], vm))
            for j in Jn:
                m.dyn.add(m.beta[j] <= dm.polyval("beta", m.kin[j]))
                m.dyn.add(m.gamma[j] <= dm.polyval("gamma", m.kin[j]))
                m.dyn.add(m.a[j] <= dm.polyval("a", m.kin[j]))
                m.dyn.add(m.B[j + 1] <= Bpp[j] * m.beta[j])
                m.dyn.add(m.T[j + 1] <= c["e_out"] * Tp[j] + Bpp[j] * m.gamma[j])
                m.dyn.add(m.I[j] <= c["t_int"] * Tp[j] + Bpp[j] * m.a[j])
                # the day's activity integral (hypoxia averaged over the day, trapezoid)
                m.dyn.add(m.Ed[j] <= c["kappa"] * (m.I[j] - 0.5 * c["eta"] * m.I[j]
                                                   * (hp[j] + h[j + 1])))
            auc = q_sum(m.Ed[j] for j in Jn)
            if endo:
                # the patient's own NK pool (docs/model.md section 13): circulating G (1 at
                # baseline), tumour Te from its steady state; the same fraction jumps (tables
                # of apply_fraction), the same frozen trafficking rate and day-averaged hypoxia
                # as the infused cells, one-sided where more can only help
                eb = dm.endogenous_bounds()
                m.G = pyo.Var(days, bounds=(c["G_lo"] / tol, 1.0))
                m.Te = pyo.Var(days, bounds=lambda m, j: (0.0, eb["Te"][j] * tol))
                m.G[0].fix(1.0)
                m.Te[0].fix(c["te0"])
                m.fG = pyo.Var(Jfh, bounds=(0.0, float(t["fG"].max(initial=0.0))))
                m.fTe = pyo.Var(Jfh, bounds=(0.0, float(t["fTe"].max(initial=0.0))))
                m.Gp = pyo.Var(Jfh, bounds=(c["G_lo"] / tol, 1.0))
                m.Tep = pyo.Var(Jfh, bounds=lambda m, j: (0.0, eb["Te"][j] * tol))
                for j in Jfh:
                    m.dyn.add(m.fG[j] == lin(t["fG"], j))
                    m.dyn.add(m.fTe[j] == lin(t["fTe"], j))
                    m.dyn.add(m.Gp[j] <= m.G[j] - m.G[j] * m.fG[j])
                    m.dyn.add(m.Tep[j] <= m.Te[j] - m.Te[j] * m.fTe[j])
                Gp = {j: (m.Gp[j] if j in m.Gp else m.G[j]) for j in range(H)}
                Tep = {j: (m.Tep[j] if j in m.Tep else m.Te[j]) for j in range(H)}
                m.Ie = pyo.Var(range(H), bounds=lambda m, j: (0.0, eb["I"][j] * tol))
                m.Ede = pyo.Var(range(H), bounds=lambda m, j: (0.0, eb["Ed"][j] * tol))
                ne = c["n_e"]
                for j in range(H):
                    m.dyn.add(m.G[j + 1] == 1.0 - c["e_g"] + c["e_g"] * Gp[j])
                    # the one bilinear trafficking term: the day's rate times the pool
                    m.dyn.add(m.Te[j + 1] <= c["e_g"] * Tep[j] + ne * m.kin[j]
                              * (c["te_g0"] + c["te_g1"] * Gp[j]))
                    m.dyn.add(m.Ie[j] <= c["g_int"] * Tep[j] + ne * m.kin[j]
                              * (c["te_i0"] + c["te_i1"] * Gp[j]))
                    m.dyn.add(m.Ede[j] <= c["kappa_e"] * (m.Ie[j] - 0.5 * c["eta_e"] * m.Ie[j]
                                                          * (hp[j] + h[j + 1])))
                auc_e = q_sum(m.Ede[j] for j in range(H))

        if dm.need_survival:
            Js = Jfh
            keys = ["ox"] + (["int"] if c["s_int"] > 0 else []) + (["an"] if c["s_an"] > 0 else [])
            worst = float(np.max(t["a_ox"] + t["da_ox"], initial=0.0))
            m.lnS = pyo.Var(Js, bounds=(-worst - 1.0, 0.0))
            # radiosensitisation by the activity over the day before each fraction
            Jr = [j for j in Js if dm.need_nk and (j - 1) in getattr(m, "Ed", {})]
            m.rho = pyo.Var(Js, bounds=(0.0, 1.0))
            for j in Js:
                if j not in Jr:
                    m.rho[j].fix(0.0)
            for j in Jr:
                m.dyn.add(m.rho[j] * c["e50"] + m.rho[j] * m.Ed[j - 1] <= m.Ed[j - 1])
            # valid linear cuts: S >= S_ox (hypoxic compartments survive better) and
            # S >= share_k(h_lo) S_k for the hypoxic compartments, all at the fully
            # radiosensitised alpha, with h >= h0 w_lo^gamma
            h_lo = min(c["hmax"], float(dm.hyp(c["w_lo"])))
            for j in Js:
                m.dyn.add(m.lnS[j] >= -lin(t["a_ox"] + t["da_ox"], j))
                for key in keys[1:]:
                    share = c[f"s_{key}"] * h_lo
                    if share > 0:
                        m.dyn.add(m.lnS[j] >= math.log(share) * m.x[j]
                                  - lin(t[f"a_{key}"] + t[f"da_{key}"], j))
            # per-day survival coefficients as variables (one-hot sums of the tables), so the
            # nonlinear terms stay small
            names = [f"{pre}_{key}" for key in keys for pre in ("a", "da")]
            m.sv = pyo.Var(Js, names, bounds=(0.0, None))
            for j in Js:
                for name in names:
                    m.dyn.add(m.sv[j, name] == lin(t[name], j))
                eff = {key: m.sv[j, f"a_{key}"] + m.rho[j] * m.sv[j, f"da_{key}"] for key in keys}
                if len(keys) > 1:
                    # ln[(1 - h_i - h_a) S_ox + h_i S_int + h_a S_an], shares linear in h
                    mix = 1.0 - (c["s_int"] + c["s_an"]) * h[j]
                    for key in keys[1:]:
                        mix = mix + c[f"s_{key}"] * h[j] * pyo.exp(eff["ox"] - eff[key])
                    m.dyn.add(m.lnS[j] >= -eff["ox"] + pyo.log(mix))
                else:
                    m.dyn.add(m.lnS[j] >= -eff["ox"])
            ln_s_total = q_sum(m.lnS[j] for j in Js)

    # ---- objective: the daily-grid approximation of the simulator's, minus the costs
    metric: dict[str, Any] = {"tumour_bed_gy": bed, "nk_favourability": auc + auc_e}
    if dm.need_survival:
        ln_s = ln_s_total - c["k_nk"] * auc + gain_expr
        metric["tumour_log10_kill"] = -ln_s / math.log(10.0)
        metric["tcp"] = pyo.exp(-pyo.exp(c["ln_n0"] + ln_s))       # per-patient Poisson TCP
    obj = 0.0
    for term, wt in problem.weights.items():
        name = problem.metric_of(term)
        if name not in metric:
            raise ValueError(f"the daily-grid model has no {name} (objective term {term})")
        obj = obj + wt * metric[name]
    if problem.cost_per_fraction:
        obj = obj - problem.cost_per_fraction * n_fr
    if problem.cost_per_overall_day:
        obj = obj - problem.cost_per_overall_day * overall_expr
    if isinstance(obj, float):
        m.dummy = pyo.Var(bounds=(0, 0))
        obj = obj + m.dummy
    m.obj = pyo.Objective(expr=obj, sense=pyo.maximize)
    return m, _Handles(m, dm)
