"""Tests of the Pyomo back-ends: ``pyomo_milp`` (HiGHS) and ``pyomo_minlp`` (SCIP).

Known answers are docs/model.md section 8 (Mizuta et al. 2012): rho_T 10 Gy, one OAR with
rho 3 Gy and BED limit 90 Gy, 1..30 fractions, every weekday allowed.  The MILP is exact on
the dose grid, so it must agree with the ``exhaustive`` reference to rounding (both are
re-verified by the same code, so "exactly" means 1e-9 relative).  The MINLP optimises a
daily-grid approximation of the simulator, stated with the simulator's own functions; its
tests hold its forward pass to the simulator, check the rules and that it returns verified
plans whose objective is compared with ``exhaustive``.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from rtopt.model import radiobiology as rb
from rtopt.backends.base import SolverOptions, Termination, module_available
from rtopt.problem.instance import instance_from_dict
from rtopt.problem.problem import Plan, Problem
from rtopt.planning.profiles import Profile, resolve_profile
from rtopt.planning.solve import solve
from _timing import GENEROUS_OVERSHOOT_S

HAVE_PYOMO = module_available("pyomo")
needs_highs = pytest.mark.skipif(not (HAVE_PYOMO and module_available("highspy")),
                                 reason="pyomo_milp needs pyomo and highspy")
needs_scip = pytest.mark.skipif(not (HAVE_PYOMO and module_available("pyscipopt")),
                                reason="pyomo_minlp needs pyomo and pyscipopt")

LUNG = Path(__file__).resolve().parent / "fixtures" / "lung-example.toml"
REL = 1e-9  # "exact": both results are verified by the same code; only float rounding differs
EXHAUSTIVE_FAST = {"start_window_days": 1, "extra_spacing_days": 0}  # calendar never binds


def classic(sparing=0.2, step=0.5, doses=(0.5, 100.0), n=(1, 30), uniform=True, oars=None,
            min_bed=1.0, repopulation=None, nk=None, objective="tumour_bed"):
    """docs/model.md s8 classic instance (all weekdays, long horizon, non-binding prescription)."""
    tumour = {"site": "generic", "alpha_per_gy": 0.35, "alpha_beta_gy": 10.0, "clonogens": 1e8,
              "hypoxic_fraction": 0.0}
    if repopulation:
        tumour.update(repopulation_kickoff_days=repopulation[0],
                      potential_doubling_days=repopulation[1])
    data = {
        "schema_version": 1, "name": "classic", "tumour": tumour,
        "prescription": {"min_bed_gy": min_bed},
        "organ_at_risk": oars or [{"name": "oar", "alpha_beta_gy": 3.0,
                                   "sparing_factor": sparing, "max_bed_gy": 90.0}],
        "fractionation": {"n_fractions": list(n), "dose_per_fraction_gy": list(doses),
                          "dose_step_gy": step, "uniform_dose": uniform,
                          # closed-form optima are checked to every digit: no 0.01 Gy rounding
                          "prescription_step_gy": 0.0,
                          "treatment_weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                          "max_overall_days": 35, "horizon_days": 42},
        "objective": {"maximise": objective},
    }
    if nk:
        data["nk"] = nk
    return instance_from_dict(data)


def lung_dict(endogenous: bool = False, ratio: float | None = None) -> dict:
    """The lung example, by default without the patient's own NK cells (the infused cells'
    part alone, as the earlier tests measured it); ``endogenous`` keeps the endogenous pool
    (docs/model.md section 13), ``ratio`` sets ``[prescription] tumour_dose_ratio``."""
    with open(LUNG, "rb") as fh:
        data = tomllib.load(fh)
    if not endogenous:
        data["tumour"].setdefault("surrogate", {})["nk_endogenous_cytotoxicity"] = 0.0
    if ratio is not None:
        data["prescription"]["tumour_dose_ratio"] = ratio
    return data


def test_minlp_accepts_the_endogenous_pool_and_a_tumour_dose_ratio():
    """The MINLP states the patient's own NK pool and the tumour dose ratio (it declined both
    before): the lung example with its endogenous pool, at ratio 1 and 1.2."""
    from rtopt.model import simulator as sim
    from rtopt.backends.pyomo_backend import PyomoMinlpBackend

    for ratio in (None, 1.2):
        p = Problem(instance_from_dict(lung_dict(endogenous=True, ratio=ratio)))
        assert sim.endogenous_active(p.biology)
        assert PyomoMinlpBackend().check(p) == (True, "")


def milp(time_limit=60.0, **options) -> Profile:
    """The shipped MILP profile (rel_gap 0), with extra options."""
    p = resolve_profile("pyomo-highs-milp")
    o = p.options
    return Profile(p.name, p.backend, p.description,
                   SolverOptions(time_limit, o.rel_gap, o.threads, o.seed,
                                 {**o.options, **options}), p.path)


def assert_same(a, b):
    assert a.objective == pytest.approx(b.objective, rel=REL, abs=REL)


# ---------------------------------------------------------------------------- plumbing


def test_profiles_name_the_backends():
    assert resolve_profile("pyomo-highs-milp").backend == "pyomo_milp"
    assert resolve_profile("pyomo-scip-minlp").backend == "pyomo_minlp"
    assert resolve_profile("pyomo-highs-milp").options.rel_gap == 0.0


def test_available_imports_no_solver_library():
    code = ("import sys; from rtopt.backends import get_backend;"
            "[get_backend(n).available() for n in ('pyomo_milp', 'pyomo_minlp')];"
            "bad = [m for m in ('pyomo', 'highspy', 'pyscipopt') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == ""


@needs_highs
def test_milp_declines_what_it_cannot_do():
    r = solve(classic(step=0.0), "pyomo_milp")
    assert r.status == "declined" and "dose grid" in r.message
    r = solve(classic(objective="tcp"), "pyomo_milp")
    assert r.status == "declined" and "tcp" in r.message
    r = solve(classic(uniform=False, repopulation=(21, 3.0)), "pyomo_milp")
    assert r.status == "declined" and "repopulation" in r.message


# ---------------------------------------------------------------------------- MILP oracles


@needs_highs
def test_hypofractionate_when_sparing_below_ratio():
    # delta 0.2 < rho_OAR / rho_T = 0.3: one fraction; OAR BED 15 (1 + 15/3) = 90 at d = 75 Gy,
    # which lies on the 0.5 Gy grid, so the grid optimum is the continuous one exactly.
    r = solve(classic(0.2), milp())
    assert r.status == "optimal" and r.termination == Termination.OPTIMAL
    assert r.plan.n_fractions == 1 and r.plan.doses_gy[0] == 75.0
    assert r.objective == pytest.approx(637.5, rel=REL)
    assert r.bound == pytest.approx(637.5, rel=REL) and r.extras["mip_gap"] == pytest.approx(0.0)
    assert r.extras["exact_for_instance"] is True


@needs_highs
def test_neutral_sparing_every_count_gives_300():
    # delta 0.3 = rho_OAR / rho_T: every N reaches tumour BED B / delta = 300 Gy with the
    # continuous dose d*(N); on a grid of step s the best dose is at most s below d*, losing at
    # most N s (1 + 2 d*/rho_T) (the BED slope at d*, an upper bound of the slope below it).
    r = solve(classic(0.3), milp())
    assert r.objective == pytest.approx(300.0, rel=REL)  # d = 50 Gy (N = 1) is on the grid
    step = 0.1
    for n in (1, 5, 12, 30):
        r = solve(classic(0.3, step=step, n=(n, n)), milp())
        d_star = float(rb.max_oar_dose_for_bed(90.0, n, 3.0)) / 0.3
        tol = n * step * (1 + 2 * d_star / 10.0)
        assert r.plan.n_fractions == n
        assert 300.0 - tol - 1e-9 <= r.objective <= 300.0 + 1e-9


@needs_highs
def test_hyperfractionate_when_sparing_above_ratio():
    # delta 0.5 > 0.3: the most fractions, N = 30, BED 152.5 Gy at d* = 3.708 Gy.  On a grid
    # the answer is within N s (1 + 2 d*/rho_T) = 0.052 Gy of 152.5 for s = 0.001 Gy; a coarse
    # grid can change N (with s = 0.5 Gy, 27 x 4 Gy = 151.2 Gy beats 30 x 3.5 Gy), so the test
    # uses s = 0.001 Gy on [3.6, 3.9] Gy (containing d* of N = 28..30; fewer fractions are
    # worse even at their own continuous optimum).
    step = 0.001
    r = solve(classic(0.5, step=step, doses=(3.6, 3.9)), milp())
    d_star = float(rb.max_oar_dose_for_bed(90.0, 30, 3.0)) / 0.5
    assert d_star == pytest.approx(3.708, abs=1e-3)
    tol = 30 * step * (1 + 2 * d_star / 10.0)
    assert r.status == "optimal" and r.plan.n_fractions == 30
    assert 152.5 - tol <= r.objective <= 152.5 + 1e-9
    r_coarse = solve(classic(0.5), milp())
    assert r_coarse.plan.n_fractions == 27 and r_coarse.objective == pytest.approx(151.2)


def _two_oars():
    return [{"name": "cord", "alpha_beta_gy": 2.0, "sparing_factor": 0.3, "max_bed_gy": 50.0},
            {"name": "lung", "alpha_beta_gy": 3.0, "sparing_factor": 0.5, "max_bed_gy": 90.0,
             "max_dose_per_fraction_gy": 6.0}]


@needs_highs
def test_two_oars_brute_force():
    inst = classic(oars=_two_oars(), step=0.25, doses=(1.0, 20.0))
    r = solve(inst, milp())
    # independent brute force over (N, d) with the closed forms (Saberian et al. 2015: the
    # optimum sits where one of the OAR constraints binds)
    d = np.arange(1.0, 20.0 + 1e-9, 0.25)
    best = -np.inf
    for n in range(1, 31):
        ok = ((n * 0.3 * d * (1 + 0.3 * d / 2.0) <= 50.0 + 1e-9)
              & (n * 0.5 * d * (1 + 0.5 * d / 3.0) <= 90.0 + 1e-9) & (0.5 * d <= 6.0 + 1e-9))
        if ok.any():
            best = max(best, float(np.max(n * d[ok] * (1 + d[ok] / 10.0))))
    assert r.objective == pytest.approx(best, rel=REL)
    assert all(c.ok for c in r.constraints)
    assert r.metrics["oar.cord.bed_gy"] <= 50.0 + 1e-6
    assert r.metrics["oar.lung.bed_gy"] <= 90.0 + 1e-6


@needs_highs
@pytest.mark.parametrize("kw", [dict(sparing=0.2), dict(sparing=0.3), dict(sparing=0.5),
                                dict(oars=_two_oars(), step=0.25, doses=(1.0, 20.0)),
                                dict(sparing=0.5, repopulation=(21, 3.0)),
                                dict(sparing=0.5, min_bed=140.0)],
                         ids=["hypo", "neutral", "hyper", "two-oars", "repopulation", "rx"])
def test_milp_agrees_with_exhaustive(kw):
    inst = classic(**kw)
    a = solve(inst, milp())
    b = solve(inst, "exhaustive", options=EXHAUSTIVE_FAST)
    assert a.status == "optimal" and b.feasible
    assert_same(a, b)
    assert a.metrics["tumour_bed_gy"] == pytest.approx(b.metrics["tumour_bed_gy"], rel=REL)


@needs_highs
def test_repopulation_uses_the_shortest_calendar():
    # Day 0 a Friday, Mon-Fri allowed: 5 fractions from day 0 take 6 days, from Monday 4.
    inst = classic(0.5, repopulation=(2, 3.0), n=(5, 5))
    data = inst.to_dict()
    data["fractionation"].update(treatment_weekdays=["mon", "tue", "wed", "thu", "fri"],
                                 start_weekday="fri")
    r = solve(instance_from_dict(data), milp())
    assert r.status == "optimal"
    assert r.plan.fraction_days[-1] - r.plan.fraction_days[0] == 4


@needs_highs
def test_per_fraction_doses_match_brute_force_and_both_formulations():
    inst = classic(0.5, step=1.0, doses=(1.0, 10.0), n=(1, 4), uniform=False)
    a = solve(inst, milp())
    b = solve(inst, milp(per_fraction_formulation="slots"))
    uni = solve(classic(0.5, step=1.0, doses=(1.0, 10.0), n=(1, 4)), milp())
    levels = np.arange(1.0, 10.0 + 1e-9, 1.0)
    best = -np.inf
    for n in range(1, 5):
        for combo in itertools.combinations_with_replacement(levels, n):
            c = np.array(combo)
            if np.sum(0.5 * c * (1 + 0.5 * c / 3.0)) <= 90.0 + 1e-9:
                best = max(best, float(np.sum(c * (1 + c / 10.0))))
    for r in (a, b):
        assert r.status == "optimal" and r.objective == pytest.approx(best, rel=REL)
        assert list(r.plan.doses_gy) == sorted(r.plan.doses_gy, reverse=True)
    assert a.objective >= uni.objective - 1e-9


@needs_highs
def test_infeasible_prescription_is_diagnosed():
    r = solve(classic(0.5, min_bed=400.0), milp())
    assert r.status == "infeasible" and r.termination == Termination.INFEASIBLE
    assert r.diagnosis is not None and r.diagnosis.conflicts
    assert "prescription" in r.diagnosis.conflicts[0] and "oar.oar.max_bed_gy" in r.message


@needs_highs
def test_nk_table_infusions_are_placed():
    data = lung_dict()
    data["objective"] = {"maximise": "tumour_bed"}
    inst = instance_from_dict(data)
    r = solve(inst, milp())
    assert r.status == "optimal" and r.verified
    assert len(r.plan.nk_days) >= 1 and all(c.ok for c in r.constraints)
    assert_same(r, solve(inst, "exhaustive"))


# ---------------------------------------------------------------------------- MINLP


def _lung(objective="nk_favourability", **objective_kw) -> Problem:
    data = lung_dict()
    data["objective"] = {"maximise": objective, **objective_kw}
    return Problem(instance_from_dict(data))


def _random_schedules(p: Problem, dm, n: int = 25, seed: int = 1):
    """Random uniform-dose lung schedules: 1-8 fractions on allowed days of the first 16,
    one retained grid dose, two infusion days anywhere in the horizon."""
    rng = np.random.default_rng(seed)
    plans, levels = [], []
    for _ in range(n):
        k_fr = int(rng.integers(1, 9))
        days = np.sort(rng.choice(p.allowed_days[:16], k_fr, replace=False))
        k = int(rng.integers(dm.levels.size))
        nk = np.sort(rng.choice(p.horizon_days, 2, replace=False))
        plans.append(Plan.uniform(days, dm.levels[k], nk))
        levels.append((days, [k] * k_fr, nk))
    return plans, levels


@pytest.mark.parametrize("objective,endogenous,ratio", [
    ("nk_favourability", False, None), ("tumour_log_kill", False, None),
    ("nk_favourability", True, None), ("nk_favourability", True, 1.2),
    ("tumour_log_kill", True, 1.2)])
def test_daily_model_tracks_the_simulator(objective, endogenous, ratio):
    """The MINLP's daily-grid model against the simulator on 25 random lung schedules.

    NK favourability within 2 % (measured max 1.28 %).  The simulator with 8 sub-steps a day
    is converged here (32 sub-steps move the largest difference by 0.001 %), so the difference
    is the daily model's own, and it is the one trafficking rate per day, frozen at mid-day
    chemokine and perfusion while both move within the day: with a constant rate (no
    chemokine gain, no vascular damage) the daily model matches the simulator at 64 sub-steps
    to 0.005 % (0.04 % at 8), and without hypoxic suppression the difference stays 1.3 %
    (the day-averaged suppression costs nothing visible).  The factor fits in the trafficking
    rate are accurate to 1e-7.  2 % is the bound the earlier daily model was held to.

    Log kill within 0.5 % (measured max 0.04 %): RT survival per fraction is the same
    three-compartment formula at the same hypoxic fraction (exact day-grid propagators of
    demand and perfusion), so only the NK terms (kill and radiosensitisation, a small part of
    the log kill) carry the activity error above.

    With the patient's own NK pool (``endogenous``; most of the lung's NK favourability, 1.7-8.7
    of 2.3-10.1 activity-days on these schedules) the measured max is 0.27 %, at tumour dose
    ratio 1 and 1.2 alike (the endogenous pool, 0.26 %, carries the same frozen trafficking
    rate, and its 15-day turnover averages the within-day error out); log kill at ratio 1.2
    0.04 %.  With ratio 1.2 the simulator sees 1.2 x the prescribed dose: a daily model that
    ignored the ratio would be off NK favourability by up to 75 % (median 6 %) on these
    schedules, so the 2 % check holds the ratio too.
    """
    from rtopt.backends.pyomo_backend import DailyModel

    p = Problem(instance_from_dict({**lung_dict(endogenous, ratio),
                                    "objective": {"maximise": objective}}))
    assert p.tumour_dose_ratio == (ratio or 1.0)
    dm = DailyModel.build(p)
    assert dm.need_endogenous == (endogenous and objective == "nk_favourability")
    assert max(dm.fit_error.values()) < 1e-6
    plans, levels = _random_schedules(p, dm)
    sim = p.evaluate_plans(plans, simulate_tme=True).metrics
    fw = [dm.forward(*lv) for lv in levels]
    if dm.need_endogenous or not endogenous:
        # (log kill with the endogenous pool: the model leaves out what only NK favourability
        # counts; tumour outcomes use the infused cells alone)
        model = np.array([f["nk_favourability"] for f in fw])
        assert np.max(np.abs(model / sim["nk_favourability"] - 1)) < 0.02
    if dm.need_endogenous:
        own = np.array([f["nk_favourability_endogenous"] for f in fw])
        assert np.max(np.abs(own / sim["nk_favourability_endogenous"] - 1)) < 0.02
    if objective == "tumour_log_kill":
        model = np.array([f["tumour_log10_kill"] for f in fw])
        assert np.max(np.abs(model / sim["tumour_log10_kill"] - 1)) < 0.005
    # the model's objective is assembled by Problem.objective_from_metrics, like the simulator's
    ev = p.evaluate_plans(plans[:3])
    for f, o in zip(fw[:3], ev.objective):
        assert f["objective"] == pytest.approx(o, rel=0.02)


def test_daily_model_reads_the_shared_definitions():
    """Per-fraction survival, hypoxia and trafficking of the algebraic form are the simulator's
    functions (to rounding, 1e-12): three clonogen compartments (made non-trivial here with
    clonogen_hypoxia_ratio 0.3 and anoxic_share 0.01), radiosensitisation by the previous
    day's activity, ``rtopt.model.surrogate.nk_infiltration_rate`` for numbers and for Pyomo."""
    from rtopt.model import simulator as sim
    from rtopt.model import surrogate as sg
    from rtopt.backends.pyomo_backend import DailyModel

    data = lung_dict()
    data["tumour"]["surrogate"] = {"clonogen_hypoxia_ratio": 0.3, "anoxic_share": 0.01}
    data["objective"] = {"maximise": "tumour_log_kill"}
    p = Problem(instance_from_dict(data))
    dm = DailyModel.build(p)
    bio, par = p.biology, p.biology.params
    assert dm.const["shares_linear"] and dm.const["s_an"] > 0
    for k in (0, dm.levels.size // 2, dm.levels.size - 1):
        for h in (0.0, 0.21, 0.6):
            for act in (0.0, 0.3, 2.0):
                ref = float(sim.fraction_log_survival(dm.levels[k], h, act, bio, par))
                assert dm.log_survival(k, h, act) == pytest.approx(ref, rel=1e-12, abs=1e-12)
    r = np.linspace(0.2, dm.const["r_cap"], 7)
    assert np.allclose(dm.hyp(r), sg.hypoxic_fraction(r, 1.0, bio.hypoxic_fraction, par),
                       rtol=1e-12)
    cm, vm = np.linspace(0, 2, 5), np.linspace(0.1, 1, 5)
    assert np.array_equal(dm.kin(cm, vm), sg.nk_infiltration_rate(cm, vm, par))
    if HAVE_PYOMO:
        import pyomo.environ as pyo

        m = pyo.ConcreteModel()
        m.c, m.v = pyo.Var(initialize=0.7), pyo.Var(initialize=0.4)
        assert pyo.value(dm.kin(m.c, m.v)) == pytest.approx(
            float(sg.nk_infiltration_rate(0.7, 0.4, par)), rel=1e-15)


def test_daily_model_endogenous_pool_reads_the_shared_definitions():
    """The endogenous pool of the algebraic form, at tumour dose ratio 1.2: its fraction jumps
    are the model's (blood survival at the resting D0 of the tumour dose's blood share, in-field
    kill at the resting D0, both at 1.2 x the grid dose), its day propagator coefficients are
    the closed forms of ``dG/dt = k_e (1 - G)``, ``dTe/dt = kin n_e G - k_e Te`` (to 1e-12: the
    Gauss-Legendre nodes are exact to rounding on these exponentials), and without fractions it
    stays at its steady state ``rtopt.model.simulator.endogenous_start`` and gives the
    simulator's endogenous NK favourability to 1e-6 (constant rate and hypoxia: both are exact
    up to the simulator's fourth-order sub-steps)."""
    from rtopt.model import simulator as sim
    from rtopt.model.circulation import blood_survival
    from rtopt.backends.pyomo_backend import DailyModel

    p = Problem(instance_from_dict(lung_dict(endogenous=True, ratio=1.2)))
    dm = DailyModel.build(p)
    par, c, t = p.biology.params, dm.const, dm.tab
    assert dm.need_endogenous
    dt = 1.2 * dm.levels
    assert np.allclose(1 - t["fG"], blood_survival(dt, par.nk_blood_dose_fraction,
                                                   par.nk_endogenous_d0_gy), rtol=1e-12)
    assert np.allclose(1 - t["fTe"], np.exp(-dt / par.nk_endogenous_d0_gy), rtol=1e-12)
    assert np.allclose(1 - t["fT"], np.exp(-dt / par.nk_d0_gy), rtol=1e-12)
    k = float(par.nk_endogenous_turnover_per_day)
    eg = np.exp(-k)
    assert c["te_g1"] == pytest.approx(eg, rel=1e-12)
    assert c["te_g0"] + c["te_g1"] == pytest.approx((1 - eg) / k, rel=1e-12)
    assert c["te_i1"] == pytest.approx((1 - eg - k * eg) / k ** 2, rel=1e-12)
    assert c["te_i0"] + c["te_i1"] == pytest.approx((1 - (1 - eg) / k) / k, rel=1e-12)
    fw = dm.forward((), (), ())
    assert np.allclose(fw["states"]["Te"], float(sim.endogenous_start(par)), rtol=1e-12)
    assert np.allclose(fw["states"]["G"], 1.0)
    ev = p.evaluate(np.zeros((1, p.horizon_days)), simulate_tme=True)
    assert fw["nk_favourability"] == pytest.approx(
        float(ev.metrics["nk_favourability_endogenous"][0]), rel=1e-6)


def test_minlp_declines_what_its_algebraic_form_cannot_represent():
    """The daily-grid form states NK favourability, log kill, tumour BED and per-patient TCP;
    population control (local control, ``tcp`` with the default tcp_model) and the
    NK-attributable gains (a counterfactual without NK cells) are declined, with the reason."""
    from rtopt.backends.pyomo_backend import PyomoMinlpBackend

    be = PyomoMinlpBackend()
    for term in ("tcp", "local_control", "nk_gain_local_control", "nk_gain_log_kill"):
        ok, why = be.check(_lung(term))
        assert not ok and term in why
    ok, why = be.check(_lung("tcp"))
    assert "per_patient" in why
    for term in ("nk_favourability", "tumour_log_kill", "tumour_bed"):
        assert be.check(_lung(term)) == (True, "")
    assert be.check(_lung("tcp", tcp_model="per_patient")) == (True, "")
    assert be.check(_lung("tumour_log_kill", cost_per_fraction=0.1,
                          cost_per_overall_day=0.01)) == (True, "")


def _small_lung(objective: dict, endogenous: bool = False, ratio: float | None = None,
                n_max: int = 3):
    """1-``n_max`` fractions of 8-16 Gy (2 Gy steps), one infusion, a 14-day horizon."""
    data = lung_dict(endogenous, ratio)
    data["fractionation"].update(n_fractions=[1, n_max], dose_per_fraction_gy=[8.0, 16.0],
                                 dose_step_gy=2.0, horizon_days=14, max_overall_days=14)
    data["nk"]["n_infusions"] = [1, 1]
    data["prescription"]["min_bed_gy"] = 50.0
    data["objective"] = objective
    return instance_from_dict(data)


@pytest.mark.slow
@needs_scip
def test_minlp_log_kill_small_instance():
    """SCIP on a small log-kill instance (1-3 fractions of 8-16 Gy, one infusion, 14 days) at its
    root node, against exhaustive.  Measured: verified log kill 10.7574, exhaustive's plan (3 x 16 Gy
    on days 1, 7, 11, NK day 4), SCIP's bound of its model 13.14 after the root.  With compact
    calendars only in the warm-start pool it returned 10.361 (days 3, 4, 7), 3.7 % below: SCIP
    does not reach the spread calendar from there in 8 s, so the pool now holds exhaustive's
    regular calendars for log kill.  The bound of 2 %: the pool's best is scored by the
    simulator and SCIP only improves on it (in its model), plus the daily-grid log-kill error
    (< 0.5 %, test above)."""
    inst = _small_lung({"maximise": "tumour_log_kill"})
    # stopped at the root node: deterministic under any load (a time limit raced the machine)
    r = solve(inst, "pyomo-scip-minlp", time_limit_s=600,
              options={"scip": {"limits/nodes": 1}})
    assert r.feasible and r.verified and all(c.ok for c in r.constraints)
    # the model's value at the returned plan is the simulator's within the log-kill tolerance
    assert r.extras["model_objective"] == pytest.approx(r.objective, rel=0.005)
    # one-sided relaxation: SCIP's value never exceeds the daily-grid model's at its binaries
    assert r.claimed_objective <= r.extras["model_objective"] * (1 + 1e-6) + 1e-6
    assert r.bound is None or r.bound >= r.claimed_objective - 1e-6
    ex = solve(inst, "exhaustive")
    assert r.objective >= ex.objective * (1 - 0.02)


@needs_scip
def test_minlp_costs_per_fraction_and_overall_day():
    """Costs enter the model as a sum of fraction binaries and last-minus-first fraction day.
    Measured (5 s): 15.2963 verified, the plan exhaustive finds (3 x 16 Gy on days 2-4, NK day
    0).  Same 2 % floor as the log-kill test; the verified objective charges the costs."""
    inst = _small_lung({"maximise": "tumour_log_kill", "cost_per_fraction": 1.0,
                        "cost_per_overall_day": 0.2})
    # stopped at the root node: deterministic under any load (the time limit a safety net)
    r = solve(inst, "pyomo-scip-minlp", time_limit_s=600,
              options={"scip": {"limits/nodes": 1}})
    assert r.feasible and r.verified
    m = r.metrics
    assert r.objective == pytest.approx(m["tumour_log10_kill"] - m["n_fractions"]
                                        - 0.2 * m["overall_days"], rel=1e-12)
    assert r.claimed_objective <= r.extras["model_objective"] * (1 + 1e-6) + 1e-6
    ex = solve(inst, "exhaustive")
    assert r.objective >= ex.objective - 0.02 * abs(ex.objective)


@needs_scip
@pytest.mark.slow
def test_minlp_lung_example_against_exhaustive():
    """SCIP on the lung example (42-day horizon, NK favourability) for 10 s: a verified plan
    within 2 % of exhaustive's (the warm-start pool contains exhaustive's optimum and SCIP stays
    at its root node even in 60 s, so the limit decides nothing the test checks; measured equal
    to exhaustive with 5 s and with 30 s)."""
    lung = instance_from_dict(lung_dict())
    r = solve(lung, "pyomo-scip-minlp", time_limit_s=10)
    ex = solve(lung, "exhaustive")
    assert r.feasible and r.verified and all(c.ok for c in r.constraints)
    assert r.termination in (Termination.TIME_LIMIT, Termination.OPTIMAL)
    assert r.wall_time_s < 10 + GENEROUS_OVERSHOOT_S
    assert r.objective >= ex.objective * (1 - 0.02)
    assert r.claimed_objective == pytest.approx(r.objective, rel=0.02)
    assert r.bound >= r.claimed_objective - 1e-6
    assert "daily-grid" in r.extras["bound_of"]


@needs_scip
@pytest.mark.slow
@pytest.mark.parametrize("ratio", [None, 1.2], ids=["ratio1", "ratio1.2"])
def test_minlp_endogenous_pool_and_dose_ratio_against_exhaustive(ratio):
    """SCIP on a small lung instance with the patient's own NK pool (NK favourability, 1-2
    fractions of 8-16 Gy, one infusion, 14 days; 8 s), at tumour dose ratio 1 and 1.2,
    against exhaustive on the same space: with at most two fractions, start days over the whole
    horizon and every spacing, exhaustive's regular calendars are every calendar, so its
    optimum is the instance's (uniform doses on the grid, as here).  The MINLP's verified plan
    can then be no better, and must be within 2 % (the daily-grid tolerance of NK
    favourability, test above), its claim within 2 % of its verified value.  That claim also
    checks that the ratio is honoured: at ratio 1.2 the plan's NK favourability is 28 % below
    the same plan at the prescribed dose.  Measured (8 s each): ratio 1, 2 x 12 Gy on days 0-1
    with NK day 2, verified 3.7564, SCIP's claim 3.7674 (0.3 % above: the frozen daily
    trafficking rate), bound of its model 5.62; ratio 1.2, 2 x 12 Gy on days 0-1 with NK day 3,
    verified 2.6590 (3.7104 at the prescribed dose), claim 2.6662, bound 5.20; both
    exhaustive's plan and objective exactly."""
    inst = _small_lung({"maximise": "nk_favourability"}, endogenous=True, ratio=ratio, n_max=2)
    r = solve(inst, "pyomo-scip-minlp", time_limit_s=8)
    ex = solve(inst, "exhaustive", options={"start_window_days": 14, "extra_spacing_days": 14})
    assert r.feasible and r.verified and all(c.ok for c in r.constraints)
    assert r.metrics["nk_favourability_endogenous"] > 0.5 * r.objective  # the pool is there
    assert r.extras["endogenous_pool"] and r.extras["tumour_dose_ratio"] == (ratio or 1.0)
    assert r.claimed_objective == pytest.approx(r.objective, rel=0.02)
    assert r.extras["model_objective"] == pytest.approx(r.objective, rel=0.02)
    assert r.claimed_objective <= r.extras["model_objective"] * (1 + 1e-6) + 1e-6
    assert r.bound is None or r.bound >= r.claimed_objective - 1e-6
    # exhaustive's optimum is the instance's here: the MINLP's can be no better
    assert ex.objective * (1 - 0.02) <= r.objective <= ex.objective * (1 + 1e-9)
    if ratio is not None:
        at_prescribed = Problem(inst).evaluate_plans([r.plan], dose_ratio=1.0).objective[0]
        assert at_prescribed > 1.1 * r.objective  # the ratio matters to this plan


@needs_scip
def test_minlp_bed_objective_matches_milp():
    # per-fraction doses, tumour BED: SCIP proves its (here exact, linear) model optimal
    inst = classic(0.5, step=0.5, doses=(0.5, 20.0), n=(1, 10), uniform=False)
    a = solve(inst, "pyomo-scip-minlp", time_limit_s=20)
    b = solve(inst, milp())
    assert a.feasible and a.termination == Termination.OPTIMAL
    assert_same(a, b)
    assert a.status == "feasible" and a.extras["exact_for_instance"] is False


@needs_scip
def test_minlp_solver_fault_is_reported_not_raised():
    from rtopt.backends.pyomo_backend import PyomoMinlpBackend

    inst = classic(0.5, step=1.0, doses=(1.0, 10.0), n=(1, 3))
    out = PyomoMinlpBackend().solve(Problem(inst), SolverOptions(
        time_limit_s=5, options={"scip": {"no/such/parameter": 1}}))
    assert out.termination in (Termination.ERROR, Termination.NUMERICAL)
    assert out.plans == () and out.message and "\n" not in out.message


@needs_highs
def test_bed_tables_are_classical_lq_whatever_the_survival_model():
    """Tumour BED is the prescription's classical LQ (Problem.tumour_bed) also on an LQ-L
    instance: the MILP's claim equals the verified BED and its optimum exhaustive's (with LQ-L
    tables it claimed 156.0 'optimal' for a plan verified at 172.2 < 173.075)."""
    import tomllib

    path = Path(__file__).resolve().parents[1] / "instances" / "lung-sbrt-classic-bed.toml"
    d = tomllib.loads(path.read_text())
    d["tumour"].update(survival_model="lq_l", transition_dose_gy=6.0)
    inst = instance_from_dict(d)
    r = solve(inst, milp(), time_limit_s=60)
    ex = solve(inst, "exhaustive")
    assert r.feasible and r.termination == Termination.OPTIMAL
    assert r.claimed_objective == pytest.approx(r.objective, rel=1e-9)
    assert r.objective == pytest.approx(ex.objective, rel=1e-9)
