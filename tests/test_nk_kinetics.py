"""NK kinetics from human data (docs/model.md section 13): the NK observation table, its fit,
the circulating blood compartment and the basis of every NK and chemokine parameter."""

from __future__ import annotations

import numpy as np
import pytest

from rtopt.model import radiobiology as rb
from rtopt.model.calibrate_nk import (calibrate_nk, load_nk_observations, predict_nk,
                                      schedule_doses)
from rtopt.model.circulation import blood_survival, circulating_nk
from rtopt.model.data.nk_calibrated import NK_FITTED
from rtopt.model.parameters import (ASSUMPTION, BASIS, BASIS_KINDS, SPECS, basis,
                                    basis_summary, resolve)


@pytest.fixture(scope="module")
def table():
    return load_nk_observations()


def test_the_table_has_sources_bands_and_model_quantities(table):
    ids = [r.id for r in table.rows]
    assert ids == [f"N{i}" for i in range(1, len(ids) + 1)]        # N1, N2, ... in order
    cats = {r.category for r in table.rows}
    # what the issue asks the table to hold: persistence by product, homing, endogenous counts
    # and turnover, radiosensitivity, blood dose, circulating NK during RT
    assert {"persistence", "homing", "endogenous", "radiosensitivity", "blood_dose",
            "lymphopenia"} <= cats
    for r in table.rows:
        assert r.source and r.endpoint and r.band[0] <= r.band[1], r.id
        if r.target is not None:
            assert r.band[0] <= r.target <= r.band[1], r.id


def test_every_row_lies_in_its_band_with_the_shipped_presets(table):
    # the presets (with the fitted values of nk_calibrated.py) reproduce the human data
    for r in table.rows:
        m = predict_nk(r)
        assert r.band[0] <= m <= r.band[1], (r.id, m, r.band)


def test_the_fit_reproduces_the_shipped_values_and_every_row_is_in_band():
    fit = calibrate_nk()
    assert fit.all_within_band()
    # written to 4 significant digits; the optimiser is deterministic
    assert fit.values.keys() == NK_FITTED.keys()
    for k, v in NK_FITTED.items():
        assert fit.values[k] == pytest.approx(v, rel=2e-4), k
    roles = {r["id"]: r["role"] for r in fit.rows}
    assert roles["N1"] == roles["N5"] == roles["N7"] == "fit"
    assert roles["N9"] == "source" and roles["N14"] == "check"


def test_product_persistence_orders_as_the_trials_report():
    # CAR-NK (>= 12 months) > memory-like (> 3 months) > IL-2-activated (~1-2 weeks)
    k = {p: resolve("generic", p).nk_blood_clearance_per_day
         for p in ("car_nk_il15", "memory_like_il12_15_18", "il2_activated")}
    assert k["car_nk_il15"] < k["memory_like_il12_15_18"] < k["il2_activated"]


def test_circulating_pool_matches_a_tight_ode_integration():
    # the closed form against solve_ivp of dN/dt = k (1 - N) with the fraction jumps
    from scipy.integrate import solve_ivp

    p = resolve("lung")
    D = np.zeros(30)
    D[[0, 1, 2, 3, 4, 7, 8, 9]] = 9.0
    c = circulating_nk(D, p.nk_blood_dose_fraction, p.nk_endogenous_d0_gy,
                       p.nk_endogenous_turnover_per_day)
    k = p.nk_endogenous_turnover_per_day
    y = np.array([1.0, 0.0])
    lows = []
    for j in range(D.size):
        y[0] *= float(blood_survival(D[j], p.nk_blood_dose_fraction, p.nk_endogenous_d0_gy))
        lows.append(y[0])
        sol = solve_ivp(lambda t, z: [k * (1 - z[0]), z[0]], (j, j + 1), y, rtol=1e-11,
                        atol=1e-13)
        y = sol.y[:, -1].copy()
    # both exact up to the integrator's tolerance (1e-11 relative)
    assert c.auc[0] == pytest.approx(y[1], rel=1e-9)
    assert c.end[0] == pytest.approx(y[0], rel=1e-9)
    assert c.nadir[0] == pytest.approx(min(lows), rel=1e-12)


def test_more_fractions_of_the_same_bed_deplete_more_circulating_nk(instances_dir):
    # every fraction irradiates the blood: at the same tumour BED10 (151.2 Gy) 8 fractions
    # deliver more physical dose than 3, so the circulating NK pool falls lower and loses more
    # area, on the shipped lung instance through Problem.verify
    from rtopt.problem.problem import Plan, Problem

    problem = Problem.from_path(instances_dir / "lung-sbrt-peripheral.toml")
    bed = 3 * 18.0 * (1 + 18.0 / 10.0)
    d8 = float(rb.dose_per_fraction_for_bed(bed, 8, 10.0))
    three = problem.verify(Plan.uniform((0, 2, 4), 18.0, (5, 12)))
    eight = problem.verify(Plan.uniform((0, 1, 2, 3, 4, 7, 8, 9), d8, (10, 17)))
    assert eight.metrics["tumour_bed_gy"] == pytest.approx(three.metrics["tumour_bed_gy"],
                                                           rel=1e-9)
    assert eight.metrics["circulating_nk_nadir"] < three.metrics["circulating_nk_nadir"] < 1.0
    assert eight.metrics["circulating_nk_auc"] < three.metrics["circulating_nk_auc"]


def test_without_fractions_the_pool_stays_at_baseline():
    c = circulating_nk(np.zeros((2, 10)), 0.02, 5.5, 0.069)
    assert np.all(c.nadir == 1.0) and np.allclose(c.auc, 10.0) and np.all(c.end == 1.0)


def test_schedule_reader():
    d = schedule_doses("2 Gy x 6, weekdays")
    assert list(np.flatnonzero(d)) == [0, 1, 2, 3, 4, 7] and d.sum() == 12.0
    with pytest.raises(ValueError):
        schedule_doses("2 Gy in 6")


# ------------------------------------------------------------------ basis of the parameters
def test_every_nk_and_chemokine_parameter_has_a_basis_and_a_reason():
    nk = [n for n, s in SPECS.items() if s.group in ("nk", "chemokine")]
    assert sorted(nk) == sorted(BASIS)
    for n in nk:
        assert BASIS[n] in BASIS_KINDS, n
        src = SPECS[n].source
        if BASIS[n] == "assumption":
            # an assumption says why: "assumption: <reason>" or "... is an assumption"
            assert (src.startswith(ASSUMPTION + ":") or "so its size is an assumption" in src), n
        if BASIS[n] in ("measured", "fitted", "direction"):
            assert any(ch.isdigit() for ch in src), n           # a cited year or number


def test_at_most_30_percent_of_the_nk_and_chemokine_parameters_are_bare_assumptions():
    p = resolve("lung", "il15_expanded")
    summary = basis_summary(p.provenance)
    assert sum(summary.values()) == len(BASIS)
    assert summary["assumption"] / len(BASIS) <= 0.30, summary


def test_fitted_values_are_reported_as_fitted():
    p = resolve("generic", "car_nk_il15")
    assert basis("nk_blood_clearance_per_day", p.provenance["nk_blood_clearance_per_day"]) == \
        "fitted"
    p = resolve("generic", "il15_expanded")   # no human row: bounded by the others, not fitted
    assert basis("nk_blood_clearance_per_day", p.provenance["nk_blood_clearance_per_day"]) == \
        "direction"


def test_cli_calibrate_nk_prints_every_row_in_band(repo_root):
    from tests.test_uncertainty import run_cli

    r = run_cli("calibrate", "--nk", "--json", cwd=repo_root)
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert [x["id"] for x in doc["rows"]] == [f"N{i}" for i in range(1, 15)]
    assert all(x["within_band"] for x in doc["rows"])
    assert all("residual" in x for x in doc["rows"])


def test_model_params_json_gives_every_nk_parameter_a_basis(repo_root):
    import json

    from tests.test_uncertainty import run_cli

    r = run_cli("model", "params", "instances/lung-sbrt-peripheral.toml", "--json",
                cwd=repo_root)
    assert r.returncode == 0, r.stderr
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    for n in BASIS:
        assert rows[n]["basis"] in BASIS_KINDS + ("override",), n
        assert rows[n]["provenance"], n


# ------------------------------------------------------------------ the endogenous pool
def test_endogenous_pool_fast_simulator_matches_the_reference():
    # the compiled kernel against solve_ivp (rtol 1e-10) on the headline schedules: the
    # fourth-order sub-steps at 2 a day keep NK favourability within 2e-4 (section 5)
    from rtopt.model.simulator import Biology, simulate, simulate_reference

    bio = Biology.simple("lung", product="il15_expanded")
    D = np.zeros((3, 42))
    D[0, [0, 1, 2, 3]] = 12.5
    D[1, [0, 2, 4]] = 18.0
    D[2, [0, 1, 2, 3, 4, 7, 8, 9]] = 9.0
    U = np.zeros_like(D)
    U[0, [4, 11]] = U[1, [5, 12]] = U[2, [10, 17]] = 1.0
    fast, ref = simulate(bio, D, U), simulate_reference(bio, D, U)
    np.testing.assert_allclose(fast.nk_auc_endogenous, ref.nk_auc_endogenous, rtol=2e-4)
    np.testing.assert_allclose(fast.nk_auc, ref.nk_auc, rtol=2e-4)
    assert np.all(fast.nk_auc_endogenous > 0)


def test_endogenous_pool_switched_off_leaves_the_infused_cells():
    from rtopt.model.simulator import Biology, simulate

    on = Biology.simple("lung", product="il15_expanded")
    off = Biology.simple("lung", product="il15_expanded",
                         overrides={"nk_endogenous_cytotoxicity": 0.0})
    D = np.zeros(42)
    D[[0, 1, 2, 3]] = 12.5
    U = np.zeros(42)
    U[[4, 11]] = 1.0
    a, b = simulate(on, D, U), simulate(off, D, U)
    assert b.nk_auc_endogenous[0] == 0.0
    # infused favourability and every tumour outcome are the same (outcomes use infused cells)
    assert a.nk_auc[0] - a.nk_auc_endogenous[0] == pytest.approx(b.nk_auc[0], rel=1e-12)
    assert a.log10_kill[0] == pytest.approx(b.log10_kill[0], rel=1e-12)


def test_simulate_json_reports_the_circulating_and_endogenous_metrics(repo_root):
    import json

    from tests.test_uncertainty import run_cli

    r = run_cli("simulate", "instances/lung-sbrt-peripheral.toml", "--dose", "12.5", "--days",
                "0,1,2,3", "--nk-days", "4,11", "--json", cwd=repo_root)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["metrics"]
    assert 0 < m["circulating_nk_nadir"] < 1 and 0 < m["circulating_nk_auc"] < 42
    assert m["nk_favourability"] == pytest.approx(
        m["nk_favourability_infused"] + m["nk_favourability_endogenous"], rel=1e-6)


def test_circulating_metrics_see_the_tumour_dose_as_the_simulator_does(instances_dir):
    """``nk_blood_dose_fraction`` is per Gy of tumour dose (the simulator's pools receive the
    tumour dose): the circulating-NK metrics of a plan use the tumour dose too, so an 80 %
    isodose prescription (tumour dose 1.2 x) depletes more than the same prescription at the
    isocentre."""
    from rtopt.model.circulation import circulating_metrics
    from rtopt.problem.problem import Plan, Problem

    problem = Problem.from_path(instances_dir / "lung-sbrt-peripheral.toml")
    assert problem.tumour_dose_ratio == pytest.approx(1.2)
    D, U = Plan.uniform([0, 2, 4], 18.0, [8]).daily(problem.horizon_days)
    m = problem.evaluate(D[None], U[None]).metrics
    want = circulating_metrics(1.2 * D[None], problem.biology.params)
    assert m["circulating_nk_nadir"] == pytest.approx(want["circulating_nk_nadir"], rel=1e-12)
    iso = problem.evaluate(D[None], U[None], dose_ratio=1.0).metrics
    assert iso["circulating_nk_nadir"] > m["circulating_nk_nadir"]
