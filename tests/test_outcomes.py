"""Tumour control against the clinic: outcome calibration, population control, NK gains, costs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtopt.model import radiobiology as rb
from rtopt.model.calibrate import calibrate_outcomes, load_outcomes, predict_outcome
from rtopt.model.data.calibrated import OUTCOME
from rtopt.problem.instance import instance_from_dict, load_instance
from rtopt.problem.problem import Plan, Problem
from rtopt.model.simulator import Biology, simulate, simulate_reference

ROOT = Path(__file__).resolve().parents[1]
LUNG = ROOT / "instances" / "lung-sbrt-peripheral.toml"
WEEKDAYS_6W = [d for d in range(42) if d % 7 < 5][:30]


@pytest.fixture(scope="module")
def fit():
    return calibrate_outcomes()


def test_outcome_fit_reproduces_training_and_predicts_validation(fit):
    # every training row in its band; at least 80 % of the validation rows (never fitted)
    roles = {r["id"]: r["role"] for r in fit.rows}
    assert {k for k, v in roles.items() if v == "training"} == {f"T{i}" for i in range(1, 8)}
    assert sum(v == "validation" for v in roles.values()) >= 8
    bad = [(r["id"], r["model"], r["band"]) for r in fit.rows
           if r["role"] == "training" and not r["within_band"]]
    assert not bad
    assert fit.share_within_band("validation") >= 0.8


def test_shipped_outcome_values_are_what_the_fit_produces(fit):
    # written to 4 significant digits (clonogens) or 5 decimals; the fit is deterministic
    for site, vals in OUTCOME.items():
        for k, v in vals.items():
            assert fit.values[site][k] == pytest.approx(v, rel=2e-3, abs=2e-5), (site, k)


def test_shipped_presets_reproduce_the_table_directly():
    # the presets as shipped (not a refit) put every training row in its band
    sites, obs = load_outcomes()
    lung = [o for o in obs if o.site == "lung" and o.role == "training"]
    lc = predict_outcome(sites["lung"], lung, dict(OUTCOME["lung"]))
    for o, m in zip(lung, lc):
        assert o.band[0] <= m <= o.band[1], (o.id, m)


def test_hypoxia_reaches_the_outcome():
    # the fitted share is far from 0, and reoxygenation moves conventional control by > 0.01
    assert OUTCOME["lung"]["clonogen_hypoxia_ratio"] > 0.2
    sites, obs = load_outcomes()
    conv = [o for o in obs if o.id == "T5"]
    vals = dict(OUTCOME["lung"])
    gain = (predict_outcome(sites["lung"], conv, vals)
            - predict_outcome(sites["lung"], conv, vals, reoxygenation=False))
    assert gain[0] > 0.01


@pytest.mark.parametrize("name,band", [
    ("54/3", (0.85, 0.997)),      # T1 RTOG 0236
    ("34/1", (0.80, 0.97)),       # T2 RTOG 0915
    ("48/4", (0.83, 0.98)),       # T3 RTOG 0915
    ("66/33", (0.55, 0.85)),      # conventional (CHISEL), the acceptance band
])
def test_lung_instance_local_control_of_standard_schedules(name, band):
    # each standard with its source's prescription convention, on the shipped instance's tumour
    p = Problem.from_path(LUNG)
    ok, why = p.outcome_calibration()
    assert ok, why
    assert band[0] <= p.standard_local_control(name) <= band[1]


def test_changed_tumour_values_are_flagged_not_calibrated():
    inst = load_instance(LUNG)
    data = inst.model_dump(mode="json", exclude_none=True)
    data["tumour"]["alpha_per_gy"] = 0.30
    ok, why = Problem(instance_from_dict(data)).outcome_calibration()
    assert not ok and "alpha_per_gy" in why
    data = load_instance(ROOT / "instances" / "prostate-sbrt.toml").model_dump(
        mode="json", exclude_none=True)
    ok, why = Problem(instance_from_dict(data)).outcome_calibration()
    assert not ok and "no clinical outcome data" in why


def test_population_control_reduces_to_poisson_tcp_without_spread():
    ln_s = -rb.population_alphas(0.35, 0.0) * 60.0
    assert rb.population_tcp(np.exp(20.0), ln_s) == pytest.approx(
        float(rb.poisson_tcp(np.exp(20.0), -0.35 * 60.0)), rel=1e-12)


def test_population_control_matches_dense_quadrature():
    # ln S affine in alpha (one compartment): compare with a 200,001-point rule on +-8 sd;
    # 1e-4 covers the linear interpolation between nodes and the ignored tails (6e-7)
    from scipy.stats import norm

    lc = rb.population_tcp(np.exp(20.0), -rb.population_alphas(0.35, 0.1) * 60.0)
    z = np.linspace(-8, 8, 200001)
    a = np.maximum(0.35 + 0.1 * z, 0)
    dense = np.sum(np.exp(-np.exp(20 - a * 60)) * norm.pdf(z)) * (z[1] - z[0])
    assert lc == pytest.approx(dense, abs=1e-4)


def test_local_control_rises_with_dose_and_stays_in_unit_interval():
    bio = Biology.simple("lung", clonogens=OUTCOME["lung"]["clonogens"], product=None)
    D = np.zeros((12, 10))
    for i, d in enumerate(np.linspace(2, 24, 12)):
        D[i, [0, 2, 4]] = d
    lc = simulate(bio, D).local_control
    assert np.all((lc >= 0) & (lc <= 1))
    assert np.all(np.diff(lc) >= -1e-12)


def test_nk_gain_is_zero_without_infusions_and_positive_with_them():
    p = Problem.from_path(LUNG)
    no = p.verify(Plan.uniform((0, 1, 2, 3), 12.5))
    yes = p.verify(Plan.uniform((0, 1, 2, 3), 12.5, (4, 11)))
    assert no.metrics["nk_gain_local_control"] == 0.0
    assert no.metrics["nk_gain_log10_kill"] == 0.0
    assert yes.metrics["nk_gain_local_control"] > 0
    assert yes.metrics["nk_gain_log10_kill"] > 0
    # the gain is the difference to the same plan without NK cells
    assert yes.metrics["local_control"] - yes.metrics["local_control_without_nk"] == \
        pytest.approx(yes.metrics["nk_gain_local_control"], abs=1e-12)
    assert yes.metrics["local_control_without_nk"] == pytest.approx(
        no.metrics["local_control"], abs=1e-12)


def test_radiosensitisation_needs_activity_the_day_before():
    # an infusion after the day's fraction cannot sensitise it; one the day before can
    bio = Biology.simple("lung", overrides={"nk_log_kill_per_activity_day": 0.0})
    D = np.zeros(14)
    D[[0, 3]] = 10.0
    same_day = np.zeros(14)
    same_day[3] = 1
    day_before = np.zeros(14)
    day_before[2] = 1
    s = simulate(bio, np.vstack([D, D]), np.vstack([same_day, day_before]),
                 record_fractions=True)
    assert s.fraction_activity[0, 3] == 0.0 and s.nk_gain_log10_kill[0] == 0.0
    assert s.fraction_activity[1, 3] > 0 and s.nk_gain_log10_kill[1] > 0


def test_infiltration_needs_perfusion_and_saturates():
    from rtopt.model import surrogate as sg

    p = Biology.simple("lung").params
    c = np.array([0.0, 0.5, 5.0, 500.0])
    assert np.all(np.diff(sg.nk_infiltration_rate(c, 1.0, p)) > 0)
    assert sg.nk_infiltration_rate(500.0, 1.0, p) < p.nk_infiltration_per_day * (
        1 + p.nk_chemokine_gain)
    assert sg.nk_infiltration_rate(1.0, 0.0, p) == 0.0
    assert sg.nk_infiltration_rate(1.0, 0.5, p) == pytest.approx(
        0.5 * sg.nk_infiltration_rate(1.0, 1.0, p))


def test_fast_outcomes_match_the_reference():
    # 0.5 % on local control and gains: the sub-step error of the NK states (see
    # test_simulator), which enters through the activity integral
    bio = Biology.simple("lung", clonogens=OUTCOME["lung"]["clonogens"])
    rng = np.random.default_rng(3)
    D = np.zeros((4, 28))
    U = np.zeros((4, 28))
    for i in range(4):
        days = np.sort(rng.choice(12, 4, replace=False))
        D[i, days] = rng.choice([8.0, 10.0, 12.5, 15.0])
        U[i, [days[-1] + 1, days[-1] + 8]] = 1
    fast = simulate(bio, D, U)
    ref = simulate_reference(bio, D, U)
    for name in ("local_control", "nk_gain_log10_kill", "log10_kill"):
        assert getattr(fast, name) == pytest.approx(getattr(ref, name), rel=5e-3, abs=1e-4), name


def test_superposition_gives_the_same_outcomes():
    from rtopt.model.simulator import infusion_kernels

    bio = Biology.simple("lung", clonogens=OUTCOME["lung"]["clonogens"])
    D = np.zeros((1, 21))
    D[0, [0, 2, 4]] = 12.0
    ker = infusion_kernels(bio, D, [1, 5, 9])
    sets = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 1]])
    comb = ker.combine(0, sets)
    U = np.zeros((3, 21))
    U[:, [1, 5, 9]] = sets
    direct = simulate(bio, np.repeat(D, 3, axis=0), U)
    for name in ("local_control", "nk_gain_local_control", "log10_kill", "nk_auc"):
        assert getattr(comb, name) == pytest.approx(getattr(direct, name), rel=1e-9, abs=1e-12)


def test_tcp_objective_is_population_unless_per_patient_is_asked():
    data = load_instance(LUNG).model_dump(mode="json", exclude_none=True)
    data["objective"] = {"maximise": "tcp"}
    p = Problem(instance_from_dict(data))
    plan = Plan.uniform((0, 1, 2, 3), 12.0)
    v = p.verify(plan)
    assert v.objective == pytest.approx(v.metrics["local_control"])
    data["objective"]["tcp_model"] = "per_patient"
    v2 = Problem(instance_from_dict(data)).verify(plan)
    assert v2.objective == pytest.approx(v2.metrics["tcp"])


@pytest.mark.slow
def test_cost_per_fraction_changes_the_optimum():
    from rtopt import solve

    data = load_instance(LUNG).model_dump(mode="json", exclude_none=True)
    free = solve(instance_from_dict(data), "exhaustive")
    # the shipped instance charges nothing per fraction (the biology does); 2 activity-days a
    # fraction, ~14 % of the optimum, buys one fraction less (0.5 and 1 leave 5 x 10 Gy)
    data["objective"]["cost_per_fraction"] = 2.0
    costly = solve(instance_from_dict(data), "exhaustive")
    assert free.feasible and costly.feasible
    assert costly.plan.n_fractions < free.plan.n_fractions
    m = costly.metrics
    assert costly.objective == pytest.approx(m["nk_favourability"] - 2.0 * m["n_fractions"])


def test_backends_that_cannot_charge_costs_decline():
    from rtopt import solve

    data = load_instance(ROOT / "instances" / "lung-sbrt-classic-bed.toml").model_dump(
        mode="json", exclude_none=True)
    data["objective"]["cost_per_fraction"] = 1.0
    r = solve(instance_from_dict(data), "scipy-milp")
    assert r.status == "declined" and "cost_per_fraction" in r.message


def test_no_reference_outside_the_repository():
    # the product stands on its own: no file points at the design brief or a sibling folder
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    # spelt in pieces so that this file does not match itself
    MARKERS = ("MODEL" + ".md", "../" + "shared", "shared" + "/seeds")
    offenders = []
    for f in files:
        path = ROOT / f
        if path.suffix in {".png", ".pdf"} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        if any(marker in text for marker in MARKERS):
            offenders.append(f)
    assert not offenders


def test_model_doc_lists_every_parameter_with_its_range():
    from rtopt.model.parameters import SPECS, resolve

    doc = (ROOT / "docs" / "model.md").read_text()
    for name, spec in SPECS.items():
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert line is not None, name
        cells = [c.strip() for c in line.strip("|").split("|")]
        # generic value, lung preset and range as the code has them (the table is generated
        # from rtopt.model.parameters; this catches a stale copy)
        assert cells[1] == f"{spec.default:g}", name
        assert cells[2] == f"{resolve('lung').values[name]:.4g}", name
        assert cells[3] == f"{spec.low:g}-{spec.high:g}", name


@pytest.mark.parametrize("model", ["lq", "lq_l"])
def test_compiled_population_expansion_matches_the_numpy_path(model):
    # same equations, two evaluation orders: agreement to round-off (1e-9)
    from rtopt.model.simulator import compact_fractions, tumour_outcomes

    bio = Biology.simple("lung", clonogens=3e9, survival_model=model, transition_dose_gy=6.2,
                         overrides={"clonogen_hypoxia_ratio": 0.5, "anoxic_share": 0.01})
    rng = np.random.default_rng(5)
    D = np.zeros((50, 21))
    fh, fa = np.zeros_like(D), np.zeros_like(D)
    for i in range(50):
        days = np.sort(rng.choice(14, int(rng.integers(1, 6)), replace=False))
        D[i, days] = rng.uniform(2, 25)
        fh[i, days] = rng.uniform(0, 0.6, days.size)
        fa[i, days] = rng.uniform(0, 0.5, days.size)
    fd, fh2, fa2 = compact_fractions(D, fh, fa)
    auc = rng.uniform(0, 3, 50)
    a = tumour_outcomes(bio, bio.params, D, fd, fh2, fa2, auc)
    b = tumour_outcomes(bio, bio.params, D, fd, fh2, fa2, auc, general=True)
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k


def test_cli_says_whether_tumour_control_is_calibrated():
    from typer.testing import CliRunner

    from rtopt.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["simulate", str(LUNG), "--dose", "18", "--days", "0,2,4"])
    assert "calibrated to the lung clinical outcomes T1-T7" in r.output
    assert "local control" in r.output
    pro = ROOT / "instances" / "prostate-sbrt.toml"
    r = runner.invoke(app, ["simulate", str(pro), "--dose", "7.25", "--days", "0,2,4,7,9",
                            "--json"])
    data = json.loads(r.stdout)
    assert "no clinical outcome data" in data["outcome_calibration"]
    assert 0.0 <= data["metrics"]["local_control"] <= 1.0


def test_headline_mechanism_example_runs():
    # the README's mechanism table comes from this script; it must keep running
    import os

    # this checkout's rtopt, not whichever is installed
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "headline_mechanism.py")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("shipped parameters")]
    assert len(rows) == 2
    ratio = float(rows[0].split()[-1])
    assert ratio > 1.0  # 12.5 x 4 beats 18 x 3 under the NK objective


def test_compiled_population_control_matches_radiobiology():
    # the simulator's fused kernel and the plain numpy reference: same grid, within the
    # kernel's stated bound (it takes the per-patient TCP as 1 or 0 where it is within 1.4e-11)
    from rtopt.model.simulator import population_tcp as fast
    from rtopt.model.simulator.kernels import POPULATION_TCP_ABS_ERROR

    rng = np.random.default_rng(11)
    ln_s = -rb.population_alphas(0.35, 0.1)[None, :] * rng.uniform(30, 90, (700, 1))
    for n0 in (1e8, 5.3e9, np.full(700, 2e9)):
        ref = rb.population_tcp(n0, ln_s)
        assert fast(n0, ln_s) == pytest.approx(ref, abs=POPULATION_TCP_ABS_ERROR)


def test_compiled_population_control_skips_the_settled_intervals():
    """The compiled population TCP evaluates only the node intervals where the per-patient TCP
    is neither 1 (to 1.4e-11) nor 0 (to 1.7e-12), with ``e^x`` as a geometric sequence there:
    within POPULATION_TCP_ABS_ERROR (2e-11) of the plain computation over all 401 fine points.
    Cases: clinical spreads (steep and shallow), an alpha spread truncated at 0, no spread
    (every node equal), curves that are not monotone (noise), and rows whose TCP crosses the
    skip thresholds inside one interval."""
    from rtopt.model.simulator import population_tcp as fast
    from rtopt.model.simulator.kernels import POPULATION_TCP_ABS_ERROR

    rng = np.random.default_rng(5)
    z = rb.POPULATION_Z
    cases = [
        -rb.population_alphas(0.35, 0.1)[None, :] * rng.uniform(20, 120, (300, 1)),  # clinical
        -rb.population_alphas(0.3, 0.25)[None, :] * rng.uniform(20, 120, (300, 1)),  # truncated
        np.full((50, z.size), -1.0) * rng.uniform(10, 40, (50, 1)),                 # no spread
        -rb.population_alphas(0.35, 0.1)[None, :] * 60 + rng.normal(0, 3, (300, z.size)),
        -20.0 - 0.5 * (z[None, :] + 5) * rng.uniform(0.5, 20, (300, 1)),           # shallow
    ]
    for ln_s in cases:
        for n0 in (1e8, 5.3e9, np.full(len(ln_s), 2e9)):
            ref = rb.population_tcp(n0, ln_s)
            got = fast(n0, ln_s)
            assert got == pytest.approx(ref, abs=POPULATION_TCP_ABS_ERROR)
            assert 0.0 < ref.mean() < 1.0 or ln_s is cases[2]  # the cases cross the sigmoid



def test_compiled_population_control_series_in_the_lower_tail():
    """Rows with the same ln S at every node (no spread) and x = ln N0 + ln S inside the
    evaluated window: every fine point is evaluated, none skipped, so the compiled TCP is
    within 2e-13 of the plain sum (the series 1 - y + y^2/2 below x = -11.5 is within
    y^3/6 < 2e-16 of exp(-y), _exp_tcp's within 1.4e-14 per point, and each side's sum of
    401 weighted terms rounds by less than 400 x 1.1e-16).  A series one term short (1 - y)
    would be off by y^2/2, 1.9e-11 at x = -12; in the full formula's range too (x = -11, 0,
    3)."""
    from rtopt.model.simulator import population_tcp as fast

    n0 = 1e9
    for x in (-24.9, -20.0, -15.0, -12.0, -11.6, -11.0, 0.0, 3.0):
        ln_s = np.full((3, rb.POPULATION_Z.size), x - np.log(n0))
        ln_s[1] -= 1e-9 * np.arange(rb.POPULATION_Z.size)          # falling: the series
        ln_s[2, ::2] += 1e-9                                        # rising: the full formula
        ref = rb.population_tcp(n0, ln_s)
        assert fast(n0, ln_s) == pytest.approx(ref, abs=2e-13, rel=0), x

def _fraction_rows(rng, n, nk=True):
    D = np.zeros((n, 21))
    fh, fa = np.zeros_like(D), np.zeros_like(D)
    for i in range(n):
        days = np.sort(rng.choice(14, int(rng.integers(1, 7)), replace=False))
        D[i, days] = rng.uniform(2, 25)
        fh[i, days] = rng.uniform(0, 0.6, days.size)
        fa[i, days] = rng.uniform(0, 0.5, days.size) * (nk and i % 3 > 0)
    return D, fh, fa


@pytest.mark.parametrize("model", ["lq", "lq_l"])
def test_fused_population_outcomes_within_the_bound_of_the_plain_definition(model, monkeypatch):
    """The compiled pass per row (ln S at the 41 nodes, the NK kill and repopulation shift,
    the population TCP) against the plain numpy path with the plain population TCP over all
    401 fine points (rtopt.model.radiobiology.population_tcp).  Local control within
    POPULATION_TCP_ABS_ERROR plus 1e-12 (ln S at the nodes differs between the two evaluation
    orders by < 1e-12 and the per-patient TCP's slope in ln S is at most 1/e); every other
    outcome to round-off (1e-9).  Cases: shared parameters with NK activity before fractions
    (a second pass without it), per-row samples (alpha, its spread, N0, OER), NK kill without
    activity (the same nodes under two shifts), repopulation, a shared schedule (one row
    without NK cells), no counterfactual and no population average; 600 rows (the threaded
    kernels) or 40 (serial)."""
    import dataclasses

    import rtopt.model.simulator.outcomes as O
    from rtopt.model.parameters import SurrogateParameters
    from rtopt.model.simulator import compact_fractions, tumour_outcomes
    from rtopt.model.simulator.kernels import POPULATION_TCP_ABS_ERROR

    rng = np.random.default_rng(7)
    base = Biology.simple("lung", clonogens=3e9, survival_model=model, transition_dose_gy=6.2,
                          overrides={"clonogen_hypoxia_ratio": 0.5, "anoxic_share": 0.01})
    n = 600
    p = base.params
    sampled = dataclasses.replace(
        base, alpha_per_gy=rng.uniform(0.25, 0.45, n), clonogens=10 ** rng.uniform(8, 10, n),
        params=SurrogateParameters({**p.values, "alpha_sd_per_gy": rng.uniform(0.05, 0.15, n),
                                    "oer": rng.uniform(2.5, 3.0, n)}, p.provenance))
    repop = Biology.simple("lung", clonogens=1e9, survival_model=model, transition_dose_gy=6.2,
                           repopulation_kickoff_days=5, potential_doubling_days=3)
    D, fh, fa = _fraction_rows(rng, n)
    fd, fh, fa = compact_fractions(D, fh, fa)
    auc = rng.uniform(0, 3, n)
    shared_d = np.broadcast_to(D[:1], D.shape)
    cases = [  # (bio, D, fd, fh, fa, keyword arguments)
        (base, D, fd, fh, fa, {}),
        (sampled, D, fd, fh, fa, {}),
        (base, D, fd, fh, np.zeros_like(fa), {}),
        (repop, D, fd, fh, fa, {}),
        (base, shared_d, np.broadcast_to(fd[:1], fd.shape), np.broadcast_to(fh[:1], fh.shape),
         fa, {"shared": True}),
        (base, D, fd, fh, fa, {"counterfactual": False}),
        (sampled, D, fd, fh, fa, {"population": False}),
        (base, D[:40], fd[:40], fh[:40], fa[:40], {}),
    ]
    for k, (bio, Dc, fdc, fhc, fac, kw) in enumerate(cases):
        m = len(Dc)
        fast = tumour_outcomes(bio, bio.params, Dc, fdc, fhc, fac, auc[:m], **kw)
        with monkeypatch.context() as mp:
            mp.setattr(O, "population_tcp", rb.population_tcp)
            plain = tumour_outcomes(bio, bio.params, Dc, fdc, fhc, fac, auc[:m], general=True,
                                    **kw)
        for key in fast:
            got, ref = np.asarray(fast[key]), np.asarray(plain[key])
            assert got.shape == (m,), (k, key)
            if key.startswith("local_control") or key == "nk_gain_local_control":
                bound = POPULATION_TCP_ABS_ERROR * (2 if key.startswith("nk_gain") else 1)
                assert got == pytest.approx(ref, abs=bound + 1e-12, nan_ok=True), (k, key)
            else:
                assert got == pytest.approx(ref, rel=1e-9, abs=1e-12, nan_ok=True), (k, key)
        lc = np.asarray(fast["local_control"])
        assert np.all(np.isnan(lc)) if kw.get("population") is False else 0 < lc.mean() < 1, k


def test_compiled_population_nodes_rescale_before_underflow():
    """Nearly all clonogens oxic (hypoxic shares ~1e-61) and ten fractions: at 25 Gy the
    per-fraction factor at the most radiosensitive node is 1e-36 (the oxic kill beyond the
    least-killed, anoxic, compartment), 1e-358 over the ten, so the compiled node products
    are rescaled on the way (20 Gy: 1e-244, just not; 12 Gy: none); ln S at all 41 nodes
    against the plain numpy log-sum-exp (fraction_log_survival), to round-off (1e-9
    relative)."""
    from rtopt.model.parameters import SurrogateParameters
    from rtopt.model.simulator import compact_fractions, fraction_log_survival
    from rtopt.model.simulator.outcomes import _ln_s_nodes, as_column

    bio = Biology.simple("lung")
    p = bio.params
    D = np.zeros((3, 21))
    D[:, :10] = [[25.0], [20.0], [12.0]]
    fh = np.where(D > 0, 1e-60, 0.0)
    fa = np.where(D > 0, 0.2, 0.0)
    fd, fh, fa = compact_fractions(D, fh, fa)
    alphas = rb.population_alphas(bio.alpha_per_gy, p.alpha_sd_per_gy)
    scale = (alphas / bio.alpha_per_gy)[None, :]
    got = _ln_s_nodes(bio, p, fd, fh, fa, scale)
    pc = SurrogateParameters({k: as_column(v, 3) for k, v in p.values.items()}, p.provenance)
    ref = fraction_log_survival(fd[:, :, None], fh[:, :, None], fa[:, :, None], bio, pc,
                                scale[:, None, :]).sum(axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
