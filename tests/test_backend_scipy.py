"""Known-answer, invariant and behaviour tests of the ``scipy_de`` and ``scipy_milp`` back-ends.

Known answers are docs/model.md section 8's classic fractionation results (Mizuta et al. 2012,
IJROBP; Saberian, Ghate & Kim 2015, Oper Res Lett) on instances built in the tests: rho_T 10 Gy,
one OAR with rho 3 Gy and BED limit 90 Gy, 1..30 fractions on every weekday, a horizon long
enough never to bind.  Tolerances are stated where they are used.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import rtopt
from _timing import GENEROUS_OVERSHOOT_S
from rtopt.model import radiobiology as rb
from rtopt.backends import get_backend
from rtopt.backends.base import SolverOptions
from rtopt.problem.instance import instance_from_dict
from rtopt.problem.problem import OBJECTIVES, Problem
from rtopt.planning.profiles import Profile, load_profile

pytest.importorskip("scipy", reason="scipy back-ends need scipy")

REPO = Path(__file__).resolve().parents[1]
LUNG = Path(__file__).resolve().parent / "fixtures" / "lung-example.toml"
if not LUNG.exists():
    LUNG = REPO / "instances" / "lung-sbrt-peripheral.toml"

# Floating-point evaluation of exact closed forms (BED of a chosen plan): rounding only.
EXACT = 1e-9
# DE's continuous optimum is the OAR-limited dose, reached exactly by the dose repair (a closed
# form inverse evaluated in floating point) or by SLSQP to ~1e-8 relative.
DE_CONT = 1e-6

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def classic(sparing=0.2, *, step=0.5, dose=(0.5, 100.0), uniform=True, n=(1, 30), oars=None,
            min_bed=1.0, **extra) -> Problem:
    """docs/model.md s8 instance: rho_T 10, one OAR (rho 3, BED <= 90), n 1..30, every weekday."""
    d = {
        "schema_version": 1, "name": "classic-test",
        "tumour": {"site": "generic", "alpha_per_gy": 0.35, "alpha_beta_gy": 10.0,
                   "clonogens": 1e8, "hypoxic_fraction": 0.0, "survival_model": "lq"},
        "prescription": {"min_bed_gy": min_bed},
        "organ_at_risk": oars if oars is not None else [
            {"name": "oar", "alpha_beta_gy": 3.0, "sparing_factor": sparing, "max_bed_gy": 90.0}],
        "fractionation": {"n_fractions": list(n), "dose_per_fraction_gy": list(dose),
                          "dose_step_gy": step, "uniform_dose": uniform,
                          # closed-form optima are checked to every digit: no 0.01 Gy rounding
                          "prescription_step_gy": 0.0,
                          "treatment_weekdays": ALL_DAYS, "start_weekday": "mon",
                          "min_interval_days": 1, "max_overall_days": 35, "horizon_days": 42},
        "objective": {"maximise": "tumour_bed"},
    }
    for section, values in extra.items():
        d.setdefault(section, {})
        d[section] = {**d[section], **values} if isinstance(values, dict) else values
    return Problem(instance_from_dict(copy.deepcopy(d)))


def profile(backend, time_limit_s=30.0, seed=0, rel_gap=1e-9, **options) -> Profile:
    return Profile(backend, backend, "test",
                   SolverOptions(time_limit_s=time_limit_s, rel_gap=rel_gap, seed=seed,
                                 options=options))


def assert_verified(r):
    assert r.feasible and r.verified, (r.status, r.message)
    assert all(c.ok for c in r.constraints)


# Continuous one-OAR optimum for n fractions (closed forms of rtopt.model.radiobiology).
def classic_bed(n, sparing, rho_t=10.0, rho_o=3.0, limit=90.0):
    d = float(rb.max_oar_dose_for_bed(limit, n, rho_o)) / sparing
    return float(rb.bed_uniform(n, d, rho_t))


# ====================================================================== capabilities
@pytest.mark.parametrize("name", ["scipy_de", "scipy_milp"])
def test_capability_flags_and_availability(name):
    cls = get_backend(name)
    assert cls.available() == (True, "")
    assert cls.requires == ("scipy",)
    assert cls.guarantee
    caps = cls.capabilities()
    if name == "scipy_de":
        assert caps == {"objectives": list(OBJECTIVES),
                        "nk": True, "per_fraction_doses": True, "continuous_dose": True,
                        "costs": True, "dvh_limits": True, "outcome_limits": True,
                        "tumour_dose_ratio": True, "global_optimality": False}
    else:
        assert caps["objectives"] == ["tumour_bed"] and not caps["continuous_dose"]
        assert caps["per_fraction_doses"] and caps["global_optimality"]


@pytest.mark.parametrize("fname, backend", [("scipy-de.toml", "scipy_de"),
                                            ("scipy-milp.toml", "scipy_milp")])
def test_profiles_load(fname, backend):
    p = load_profile(REPO / "solvers" / fname)
    assert p.backend == backend and p.options.time_limit_s > 0


# ====================================================================== MILP known answers
@pytest.mark.parametrize("uniform", [True, False])
def test_milp_hypofractionation_oracle(uniform):
    """delta 0.2 < 3/10: one fraction of 75 Gy, tumour BED 637.5 Gy (75 Gy is on the grid)."""
    r = rtopt.solve(classic(0.2, uniform=uniform), profile("scipy_milp"))
    assert_verified(r)
    assert r.status == "optimal" and r.termination == "optimal"
    assert r.plan.n_fractions == 1 and r.plan.doses_gy == (75.0,)
    assert r.objective == pytest.approx(637.5, rel=EXACT)
    assert r.bound == pytest.approx(637.5, rel=1e-9)
    assert r.extras["exact_for_instance"] is True
    assert r.solver_name == "scipy.optimize.milp (HiGHS)"
    assert r.solver_version


def test_milp_hyperfractionation_oracle_on_fine_grid():
    """delta 0.5 > 3/10: N = 30, BED 152.498 Gy needs d = 3.7082 Gy, which no grid holds.

    On a 0.01 Gy grid the MILP optimum can only lose what flooring the dose to the grid loses:
    dBED/dd = N (1 + 2 d / rho_T) = 30 * 1.742 = 52.2 Gy per Gy, so at most 0.53 Gy of BED
    for one 0.01 Gy step (the grid optimum may move to N = 29 with a larger grid dose, which
    is still within that loss).  The continuous optimum is an upper bound of any grid plan.
    """
    best = classic_bed(30, 0.5)
    assert best == pytest.approx(152.5, abs=0.01)  # docs/model.md s8 states 152.5 (rounded)
    step = 0.01
    tol = 30 * (1 + 2 * 3.7082 / 10.0) * step
    r = rtopt.solve(classic(0.5, step=step, dose=(0.5, 20.0)), profile("scipy_milp"))
    assert_verified(r)
    assert r.status == "optimal"
    assert best - tol <= r.objective <= best + 1e-9
    assert r.plan.n_fractions >= 28
    # per-fraction doses may mix neighbouring grid points and come closer still
    rp = rtopt.solve(classic(0.5, step=step, dose=(0.5, 20.0), uniform=False),
                     profile("scipy_milp", rel_gap=1e-6))
    assert_verified(rp)
    assert r.objective - 1e-9 <= rp.objective <= best + 1e-9
    assert rp.plan.n_fractions == 30


@pytest.mark.parametrize("uniform", [True, False])
def test_milp_neutral_oracle(uniform):
    """delta 0.3 = 3/10: every N gives 300 Gy; 15 x 10 Gy is on the 0.5 Gy grid."""
    r = rtopt.solve(classic(0.3, uniform=uniform), profile("scipy_milp"))
    assert_verified(r)
    assert r.objective == pytest.approx(300.0, rel=EXACT)


TWO_OARS = [
    {"name": "oar_hypo", "alpha_beta_gy": 3.0, "sparing_factor": 0.25, "max_bed_gy": 50.0},
    {"name": "oar_hyper", "alpha_beta_gy": 2.0, "sparing_factor": 0.3, "max_bed_gy": 90.0}]
# Saberian, Ghate & Kim 2015: with x = sum d and y = sum d^2 the problem is the LP
#   max x + y/10  s.t.  0.25 x + 0.25^2 y/3 <= 50,  0.3 x + 0.3^2 y/2 <= 90,
# whose vertex x = 75, y = 1500 gives 225 Gy; per-fraction doses reach it (y <= x^2, n >= 4),
# uniform doses cannot (they force y = x^2/n): their optimum is N = 4, d = 19.219, 224.625 Gy.
TWO_OAR_LP = 225.0
TWO_OAR_UNIFORM = 224.6248


def test_milp_two_oars_uniform_oracle():
    """Uniform doses, 0.01 Gy grid: within N (1 + 2 d / rho_T) * step = 4 * 4.84 * 0.01 =
    0.19 Gy below the continuous optimum (flooring the dose to the grid), never above it."""
    tol = 4 * (1 + 2 * 19.219 / 10.0) * 0.01
    r = rtopt.solve(classic(oars=TWO_OARS, step=0.01, dose=(0.5, 30.0)), profile("scipy_milp"))
    assert_verified(r)
    assert r.status == "optimal" and r.plan.n_fractions == 4
    assert TWO_OAR_UNIFORM - tol <= r.objective <= TWO_OAR_UNIFORM + 1e-3


def test_milp_two_oars_per_fraction_reaches_lp_bound():
    """Per-fraction doses on a 0.5 Gy grid reach the LP optimum 225 Gy (x = 75 and y = 1500
    are attainable with grid doses, e.g. 5 x 0.5 + 4 x 2 + 13.5 + 2 x 25.5 Gy)."""
    r = rtopt.solve(classic(oars=TWO_OARS, step=0.5, dose=(0.5, 30.0), uniform=False),
                    profile("scipy_milp", rel_gap=1e-6))
    assert_verified(r)
    assert r.objective == pytest.approx(TWO_OAR_LP, rel=1e-6)
    assert r.objective > TWO_OAR_UNIFORM + 0.3  # strictly better than any uniform schedule
    d = np.array(r.plan.doses_gy)
    assert d.sum() == pytest.approx(75.0, rel=1e-6)
    assert (d ** 2).sum() == pytest.approx(1500.0, rel=1e-6)


def test_milp_per_fraction_invariants():
    """Per-fraction plan: BEDs add up over fractions; never worse than the uniform optimum."""
    p_pf = classic(0.25, step=0.5, dose=(1.0, 30.0), uniform=False, n=(1, 6))
    p_u = classic(0.25, step=0.5, dose=(1.0, 30.0), uniform=True, n=(1, 6))
    r_pf = rtopt.solve(p_pf, profile("scipy_milp"))
    r_u = rtopt.solve(p_u, profile("scipy_milp"))
    assert_verified(r_pf)
    assert_verified(r_u)
    assert r_pf.objective >= r_u.objective - 1e-9
    d = np.array(r_pf.plan.doses_gy)
    per_fraction = float(np.sum(rb.bed_per_fraction(d, 10.0)))
    assert r_pf.metrics["tumour_bed_gy"] == pytest.approx(per_fraction, rel=EXACT)
    assert r_pf.metrics["oar.oar.bed_gy"] <= 90.0 * (1 + 1e-9)
    assert list(d) == sorted(d)  # non-decreasing over the calendar
    assert r_pf.objective == pytest.approx(r_pf.claimed_objective, rel=EXACT)


def _repopulation(uniform):
    # Weekdays only, day 0 a Wednesday: the compact calendar from day 0 is not the shortest one
    # (Mon..Fri of the next week is), so the repopulation loss depends on the calendar choice.
    return classic(0.5, step=0.5, dose=(1.0, 20.0), uniform=uniform,
                   tumour={"repopulation_kickoff_days": 7, "potential_doubling_days": 3.0},
                   fractionation={"treatment_weekdays": ALL_DAYS[:5], "start_weekday": "wed",
                                  "max_overall_days": 40, "horizon_days": 60})


def test_milp_repopulation_matches_exhaustive():
    """With repopulation set on the tumour: tumour BED is the classical LQ BED without a time
    factor (the clinical convention; repopulation acts on the simulated kill), so the MILP and
    the exhaustive back-end must agree whatever calendar each picks."""
    p = _repopulation(True)
    ex = rtopt.solve(p, "exhaustive")
    r = rtopt.solve(p, profile("scipy_milp"))
    assert_verified(r)
    assert r.status == "optimal" and r.extras["exact_for_instance"]
    assert r.objective == pytest.approx(ex.objective, rel=EXACT)
    rp = rtopt.solve(_repopulation(False), profile("scipy_milp"))
    assert_verified(rp)
    assert rp.objective >= r.objective - 1e-9


def test_milp_nk_infusions_placed_by_rules():
    """An [nk] table with the tumour_bed objective: infusions obey every rule (verified)."""
    p = classic(0.5, step=0.5, dose=(1.0, 20.0),
                nk={"product": "il15_expanded", "n_infusions": [1, 2], "earliest_day": 0,
                    "min_interval_days": 7, "min_days_before_next_fraction": 1},
                fractionation={"treatment_weekdays": ALL_DAYS[:5], "max_overall_days": 40,
                               "horizon_days": 60})
    r = rtopt.solve(p, profile("scipy_milp"))
    assert_verified(r)
    assert len(r.plan.nk_days) == 1
    assert r.objective == pytest.approx(rtopt.solve(p, "exhaustive").objective, rel=EXACT)


# ====================================================================== DE known answers
def test_de_hypofractionation_oracle_grid():
    r = rtopt.solve(classic(0.2), profile("scipy_de", maxiter=60))
    assert_verified(r)
    assert r.status == "feasible"  # a heuristic never claims optimality
    assert r.bound is None and r.extras["exact_for_instance"] is False
    assert r.plan.n_fractions == 1
    assert r.objective == pytest.approx(637.5, rel=EXACT)
    assert r.solver_name == "scipy.optimize.differential_evolution"


def test_de_hyperfractionation_oracle_continuous():
    """delta 0.5: N = 30 at the continuous OAR-limited dose, BED 152.498 Gy."""
    r = rtopt.solve(classic(0.5, step=0.0), profile("scipy_de", maxiter=100))
    assert_verified(r)
    assert r.plan.n_fractions == 30
    assert r.objective == pytest.approx(classic_bed(30, 0.5), rel=DE_CONT)


@pytest.mark.parametrize("n", [1, 7, 30])
def test_de_neutral_oracle_any_n(n):
    """delta 0.3 = 3/10: the optimum is 300 Gy whatever the (fixed) fraction count."""
    r = rtopt.solve(classic(0.3, step=0.0, n=(n, n)), profile("scipy_de", maxiter=40))
    assert_verified(r)
    assert r.plan.n_fractions == n
    assert r.objective == pytest.approx(300.0, rel=DE_CONT)


def test_de_two_oars_continuous():
    r = rtopt.solve(classic(oars=TWO_OARS, step=0.0), profile("scipy_de", maxiter=100))
    assert_verified(r)
    assert r.plan.n_fractions == 4
    assert r.objective == pytest.approx(TWO_OAR_UNIFORM, rel=1e-6)


def test_de_two_oars_per_fraction_continuous_reaches_lp_bound():
    """Continuous per-fraction doses: DE + SLSQP polish reach the LP optimum 225 Gy (within the
    verification tolerance FEAS_TOL = 1e-6 relative, which the polish may use)."""
    r = rtopt.solve(classic(oars=TWO_OARS, step=0.0, uniform=False, n=(4, 6)),
                    profile("scipy_de", maxiter=100))
    assert_verified(r)
    assert r.objective == pytest.approx(TWO_OAR_LP, rel=1e-5)


def test_de_per_fraction_grid_bounded_by_milp():
    """Per-fraction grid doses: DE's verified plan never beats the exact MILP optimum, and with
    the uniform seeding of the initial population it reaches it on this small instance."""
    p = classic(0.25, step=0.5, dose=(1.0, 30.0), uniform=False, n=(1, 6))
    exact = rtopt.solve(p, profile("scipy_milp")).objective
    r = rtopt.solve(p, profile("scipy_de", maxiter=150))
    assert_verified(r)
    assert r.objective <= exact + 1e-9
    assert r.objective >= exact * (1 - 0.02)  # heuristic: within 2 % (measured: equal)


def test_de_per_fraction_continuous_polish():
    """Two continuous per-fraction doses, one OAR with delta 0.2 < 3/10: the optimum is not
    uniform (dose concentrates in one fraction).  Reference: a brute-force 1-D search over the
    first dose, the second set by the OAR limit (closed-form LQ inverse); its 1e-4 Gy step
    changes the BED by < 1e-3 Gy near the optimum, so the tolerance is 1e-5 relative."""
    p = classic(0.2, step=0.0, dose=(1.0, 100.0), uniform=False, n=(2, 2))
    a = np.arange(1.0, 60.0, 1e-4)
    rest = 90.0 - rb.bed_per_fraction(0.2 * a, 3.0)
    ok = rest > 0
    b = rb.max_oar_dose_for_bed(np.where(ok, rest, 0.0), 1, 3.0) / 0.2
    ok &= (b >= 1.0) & (b <= 100.0)
    ref = np.max(np.where(ok, rb.bed_per_fraction(a, 10.0) + rb.bed_per_fraction(b, 10.0), -1))
    assert ref > classic_bed(2, 0.2) + 1  # non-uniform beats uniform here
    r = rtopt.solve(p, profile("scipy_de", maxiter=100))
    assert_verified(r)
    assert r.objective == pytest.approx(ref, rel=1e-5)
    assert r.extras.get("polish_gain", 0.0) >= 0.0


def test_de_returns_distinct_candidates_best_first():
    p = classic(0.3, step=0.5)
    out = get_backend("scipy_de")().solve(p, SolverOptions(seed=0, options={"maxiter": 30}))
    assert 1 < len(out.plans) <= 5
    assert len({(pl.fraction_days, pl.doses_gy) for pl in out.plans}) == len(out.plans)
    objs = [p.verify(pl).objective for pl in out.plans]
    assert objs == sorted(objs, reverse=True)
    assert out.claimed_objective == pytest.approx(objs[0], rel=EXACT)


# ====================================================================== infeasibility, declines
@pytest.mark.parametrize("backend", ["scipy_milp", "scipy_de"])
def test_infeasible_prescription_is_diagnosed(backend):
    """A prescription above the best achievable BED (637.5 Gy) is infeasible, with a diagnosis."""
    r = rtopt.solve(classic(0.2, min_bed=700.0), profile(backend, maxiter=20)
                    if backend == "scipy_de" else profile(backend))
    assert r.status == "infeasible"
    assert r.diagnosis is not None and r.diagnosis.conflicts
    assert "prescription" in r.message
    if backend == "scipy_milp":
        assert r.termination == "infeasible" and r.plan is None


def test_milp_declines_other_objectives():
    p = classic(0.2, objective={"maximise": "nk_favourability"},
                nk={"product": "il15_expanded", "n_infusions": [1, 1], "earliest_day": 0})
    r = rtopt.solve(p, profile("scipy_milp"))
    assert r.status == "declined"
    assert "nk_favourability" in r.message and "tumour_bed" in r.message


def test_milp_declines_continuous_dose():
    r = rtopt.solve(classic(0.2, step=0.0), profile("scipy_milp"))
    assert r.status == "declined"
    assert "dose grid" in r.message


def test_unknown_option_is_an_error_not_an_exception():
    for backend in ("scipy_de", "scipy_milp"):
        r = rtopt.solve(classic(0.2), profile(backend, popsise=10))
        assert r.status == "error"  # a back-end error without plans is an error status
        assert r.termination == "error" and "popsise" in r.message


# ====================================================================== lung example
def test_de_on_lung_example_matches_exhaustive():
    """DE's verified objective on the lung SBRT + NK example is within 1 % of the exhaustive
    back-end's (exact over uniform grid doses x regular calendars x all infusion sets), or better.
    DE searches a superset of that space (irregular gaps), so it may exceed it; 1 % allows for
    a heuristic's early stop.  Since the patient's own NK cells count in NK favourability
    (docs/model.md section 13) DE settles on 7 x 8 Gy, a second basin one fraction count
    away, 4.4 % below the exhaustive 5 x 10 Gy (measured 13.611 vs 14.243 on seeds 0-2):
    5 % allows for that gap."""
    ex = rtopt.solve(LUNG, "exhaustive")
    r = rtopt.solve(LUNG, profile("scipy_de", time_limit_s=60))
    assert_verified(r)
    assert r.objective >= ex.objective * (1 - 0.05)
    assert r.objective == pytest.approx(r.claimed_objective, rel=1e-9)


def test_de_reproducible_with_seed():
    p = Problem.from_path(LUNG)
    a = rtopt.solve(p, profile("scipy_de", seed=7, maxiter=12))
    b = rtopt.solve(p, profile("scipy_de", seed=7, maxiter=12))
    assert a.plan == b.plan and a.objective == b.objective
    assert a.extras["nit"] == b.extras["nit"]


def test_de_time_limit_stops_the_run():
    p = Problem.from_path(LUNG)
    r = rtopt.solve(p, profile("scipy_de", time_limit_s=0.5, maxiter=10_000, tol=0.0))
    assert r.termination == "time_limit"
    assert r.wall_time_s < 0.5 + GENEROUS_OVERSHOOT_S
    if r.plan is not None:
        assert r.verified or r.status in ("no_solution", "infeasible")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])  # seed 0 is the fast test above
def test_de_lung_seeds(seed):
    ex = rtopt.solve(LUNG, "exhaustive")
    r = rtopt.solve(LUNG, profile("scipy_de", seed=seed, time_limit_s=120))
    assert_verified(r)
    # the second basin one fraction count away (7 x 8 Gy, 4.4 % below; see
    # test_de_on_lung_example_matches_exhaustive)
    assert r.objective >= ex.objective * (1 - 0.05)
