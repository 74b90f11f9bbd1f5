"""Known-answer and invariant tests for rtopt.model.radiobiology (docs/model.md sections 2 and 8)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rtopt.model import radiobiology as rb

# Park et al. 2008 (IJROBP), NSCLC cell line H460.
H460 = dict(alpha=0.33, beta=0.038, d0_gy=1.25, dq_gy=1.8)
# Exact formulas evaluated in floating point: only rounding error is expected.
EXACT = 1e-12


def _tangent_beta(alpha, d0, dq):
    # Park et al. 2008: the beta at which LQ meets the USC asymptote with equal slope.
    return (1.0 - alpha * d0) ** 2 / (4.0 * d0 * dq)


# --------------------------------------------------------------------------- textbook values


@pytest.mark.parametrize(
    ("total", "n", "rho", "expected"),
    [
        (54.0, 3, 10.0, 151.2),  # lung SABR 54/3
        (48.0, 4, 10.0, 105.6),  # lung SABR 48/4
        (60.0, 30, 10.0, 72.0),  # conventional 60/30
        (50.0, 5, 10.0, 100.0),  # 50/5: the BED10 >= 100 Gy threshold (Onishi et al. 2007)
    ],
)
def test_textbook_bed(total, n, rho, expected):
    d = total / n
    assert rb.bed_uniform(n, d, rho) == pytest.approx(expected, rel=EXACT)
    assert rb.bed(np.full(n, d), rho) == pytest.approx(expected, rel=EXACT)


def test_prostate_36_25_in_5_eqd2():
    # PACE-B 36.25/5 at rho 1.5; the published EQD2 is rounded to 0.1 Gy.
    assert rb.eqd2(np.full(5, 7.25), 1.5) == pytest.approx(90.6, abs=0.05)
    assert rb.eqd2_from_bed(rb.bed_uniform(5, 7.25, 1.5), 1.5) == pytest.approx(90.625, rel=EXACT)


def test_conventional_70_in_35_is_its_own_eqd2():
    # 2 Gy fractions are the EQD2 reference, so the identity is exact up to rounding.
    assert rb.eqd2(np.full(35, 2.0), 10.0) == pytest.approx(70.0, rel=EXACT)


def test_eqd2_of_50_in_5():
    # BED 100 / (1 + 2/10) = 83.33...; closed form, rounding error only.
    assert rb.eqd2(np.full(5, 10.0), 10.0) == pytest.approx(100.0 / 1.2, rel=EXACT)


# --------------------------------------------------------------------------- inverses


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.floats(0.0, 40.0),
    rho=st.floats(0.5, 1e6),
)
def test_dose_for_bed_inverts_bed_uniform(n, d, rho):
    b = rb.bed_uniform(n, d, rho)
    # The stable closed form loses at most a few ulps; abs covers d == 0.
    assert rb.dose_per_fraction_for_bed(b, n, rho) == pytest.approx(d, rel=1e-12, abs=1e-12)
    assert rb.max_oar_dose_for_bed(b, n, rho) == pytest.approx(d, rel=1e-12, abs=1e-12)


def test_dose_for_bed_is_stable_for_huge_rho():
    # rho -> infinity makes BED = physical dose; the naive sqrt form cancels to 0 here.
    assert rb.dose_per_fraction_for_bed(60.0, 30, 1e15) == pytest.approx(2.0, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(x=st.floats(0.0, 1e4), rho=st.floats(0.1, 100.0))
def test_eqd2_bed_round_trip(x, rho):
    # Two float operations each way: rounding error only.
    assert rb.bed_from_eqd2(rb.eqd2_from_bed(x, rho), rho) == pytest.approx(x, rel=EXACT, abs=EXACT)


# --------------------------------------------------------------------------- LQ-L


def test_lq_l_equals_lq_below_transition():
    d = np.linspace(0.0, 8.0, 81)
    lq = rb.bed_per_fraction(d, 10.0)
    lql = rb.bed_per_fraction(d, 10.0, model="lq_l", transition_dose_gy=8.0)
    np.testing.assert_array_equal(lql, lq)
    np.testing.assert_array_equal(
        rb.neg_log_survival(d, 0.3, 0.03, model="lq_l", transition_dose_gy=8.0),
        rb.neg_log_survival(d, 0.3, 0.03),
    )


@pytest.mark.parametrize(("rho", "dt"), [(10.0, 8.0), (3.0, 6.0), (2.8, 12.0)])
def test_lq_l_is_linear_above_transition_with_lq_slope(rho, dt):
    d = np.linspace(dt, dt + 30.0, 61)
    b = rb.bed_per_fraction(d, rho, model="lq_l", transition_dose_gy=dt)
    slopes = np.diff(b) / np.diff(d)
    # Differences of nearby floats: rounding error of order 1e-13 relative.
    np.testing.assert_allclose(slopes, 1.0 + 2.0 * dt / rho, rtol=1e-9)
    # Continuity at d_T: both branches evaluated at d_T give d_T (1 + d_T / rho).
    assert b[0] == pytest.approx(dt * (1.0 + dt / rho), rel=EXACT)
    just_above = rb.bed_per_fraction(dt + 1e-9, rho, model="lq_l", transition_dose_gy=dt)
    # A 1e-9 Gy step changes BED by about slope * 1e-9.
    assert just_above == pytest.approx(b[0], abs=1e-8)


def test_lq_l_matches_model_md_formula():
    # docs/model.md s2: d_T(1 + d_T/rho) + (d - d_T)(1 + 2 d_T/rho); 18 Gy, d_T 10, rho 10 -> 20 + 8*3.
    assert rb.bed_per_fraction(18.0, 10.0, model="lq_l", transition_dose_gy=10.0) == pytest.approx(
        44.0, rel=EXACT
    )
    # neg_log_survival / alpha reproduces it (alpha 0.35, rho 10).
    nls = rb.neg_log_survival(18.0, 0.35, 0.035, model="lq_l", transition_dose_gy=10.0)
    assert nls / 0.35 == pytest.approx(44.0, rel=EXACT)


# --------------------------------------------------------------------------- USC


def test_usc_h460_transition_dose():
    # Park et al. 2008 report D_T = 6.2 Gy; the published (rounded) alpha, D0, Dq give 6.13 Gy.
    dt = rb.usc_transition_dose(H460["alpha"], H460["d0_gy"], H460["dq_gy"])
    assert dt == pytest.approx(6.2, abs=0.1)
    assert dt == pytest.approx(2 * 1.8 / (1 - 0.33 * 1.25), rel=EXACT)


def test_usc_h460_continuous_at_transition():
    dt = rb.usc_transition_dose(H460["alpha"], H460["d0_gy"], H460["dq_gy"])
    below = rb.neg_log_survival(dt * (1 - 1e-12), model="usc", **H460)
    at = rb.neg_log_survival(dt, model="usc", **H460)
    # Published beta 0.038 is rounded from the tangency value 0.03835; the branches then
    # differ by about 0.4 %.
    assert below == pytest.approx(at, rel=0.01)


def test_usc_smooth_with_tangent_beta():
    a, d0, dq = H460["alpha"], H460["d0_gy"], H460["dq_gy"]
    beta = _tangent_beta(a, d0, dq)
    assert beta == pytest.approx(0.038, abs=0.0005)  # Park et al. publish beta to 0.001
    dt = rb.usc_transition_dose(a, d0, dq)
    lq_at = a * dt + beta * dt**2
    lin_at = (dt - dq) / d0
    # With the tangency beta both value and slope match exactly (rounding error only).
    assert lq_at == pytest.approx(lin_at, rel=1e-12)
    assert a + 2 * beta * dt == pytest.approx(1.0 / d0, rel=1e-12)
    h = 1e-6
    left = rb.neg_log_survival(dt - h, a, beta, model="usc", d0_gy=d0, dq_gy=dq)
    right = rb.neg_log_survival(dt + h, a, beta, model="usc", d0_gy=d0, dq_gy=dq)
    # Smooth join: a 2e-6 Gy step changes -ln S by slope * 2e-6 plus O(h^2).
    assert right - left == pytest.approx(2 * h / d0, rel=1e-4)


def test_usc_is_linear_above_and_lq_below():
    a, b, d0, dq = H460["alpha"], H460["beta"], H460["d0_gy"], H460["dq_gy"]
    d = np.array([1.0, 3.0, 6.0, 10.0, 20.0, 30.0])
    got = rb.neg_log_survival(d, model="usc", **H460)
    dt = rb.usc_transition_dose(a, d0, dq)
    expected = np.where(d < dt, a * d + b * d**2, a * dt + b * dt**2 + (d - dt) / d0)
    np.testing.assert_allclose(got, expected, rtol=EXACT)  # same formula, rounding only
    # Park's asymptote d/D0 - Dq/D0: the joined curve differs from it only by the published
    # parameters' rounding (the branches differ by 0.4 % at D_T, 0.2 % on the scale above it).
    np.testing.assert_allclose(got[d >= dt], ((d - dq) / d0)[d >= dt], rtol=5e-3)


def test_usc_bed_per_fraction_uses_beta_alpha_over_rho():
    a, d0, dq = 0.33, 1.25, 1.8
    rho = a / 0.038
    d = np.array([2.0, 5.0, 8.0, 15.0])
    got = rb.bed_per_fraction(d, rho, model="usc", alpha=a, d0_gy=d0, dq_gy=dq)
    expected = rb.neg_log_survival(d, a, 0.038, model="usc", d0_gy=d0, dq_gy=dq) / a
    np.testing.assert_allclose(got, expected, rtol=1e-12)  # beta = alpha/rho round trip only
    # Below D_T the USC BED is the LQ BED.
    assert got[0] == pytest.approx(2.0 * (1 + 2.0 / rho), rel=1e-12)


def test_usc_transition_override():
    d = np.array([4.0, 5.0, 6.0])
    got = rb.neg_log_survival(d, model="usc", transition_dose_gy=5.0, **H460)
    lq5 = 0.33 * 5 + 0.038 * 25  # value at the overridden D_T = 5 Gy; slope 1/D0 above it
    expected = [0.33 * 4 + 0.038 * 16, lq5, lq5 + 1.0 / 1.25]
    np.testing.assert_allclose(got, expected, rtol=EXACT)  # rounding only


# --------------------------------------------------------------------------- invariants

MODEL_KW = {
    "lq": {},
    "lq_l": {"transition_dose_gy": 7.0},
    "usc": {"alpha": 0.33, "d0_gy": 1.25, "dq_gy": 1.8},
}
# The USC implies its own alpha/beta (smooth join), so rho is not free for that model.
H460_RHO = 0.33 / _tangent_beta(0.33, 1.25, 1.8)


def _rho_for(model, rho):
    return H460_RHO if model == "usc" else rho


@pytest.mark.parametrize("model", rb.SURVIVAL_MODELS)
def test_zero_dose_gives_exactly_zero(model):
    assert rb.bed_per_fraction(0.0, _rho_for(model, 10.0), model=model, **MODEL_KW[model]) == 0.0
    assert rb.neg_log_survival(0.0, 0.33, 0.038, model=model, transition_dose_gy=7.0,
                               d0_gy=1.25, dq_gy=1.8) == 0.0
    # Dq = 0 puts the USC transition at 0 Gy; a zero dose must still give 0.
    assert rb.neg_log_survival(0.0, 0.33, 0.038, model="usc", d0_gy=1.25, dq_gy=0.0) == 0.0


@pytest.mark.parametrize("model", rb.SURVIVAL_MODELS)
@settings(max_examples=60, deadline=None)
@given(
    doses=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                     elements=st.floats(0.0, 30.0)),
    rho=st.floats(0.5, 20.0),
)
def test_per_fraction_beds_add_to_total(model, doses, rho):
    kw = MODEL_KW[model]
    rho = _rho_for(model, rho)
    total = rb.bed(doses, rho, model=model, **kw)
    parts = [rb.bed_per_fraction(float(x), rho, model=model, **kw) for x in doses.ravel()]
    parts = np.asarray(parts).reshape(doses.shape).sum(axis=-1)
    # Same additions in possibly different order: rounding only.
    np.testing.assert_allclose(total, parts, rtol=1e-12, atol=1e-12)
    assert np.all(total >= 0)


@pytest.mark.parametrize("model", rb.SURVIVAL_MODELS)
@settings(max_examples=60, deadline=None)
@given(
    # A 1 mGy grid: deliverable resolution, and steps large enough to resolve in BED.
    mgy=hnp.arrays(np.int64, st.integers(2, 40), elements=st.integers(0, 40_000), unique=True),
    rho=st.floats(0.5, 20.0),
)
def test_bed_strictly_increasing_in_dose(model, mgy, rho):
    d = np.sort(mgy) / 1000.0
    b = rb.bed_per_fraction(d, _rho_for(model, rho), model=model, **MODEL_KW[model])
    assert np.all(np.diff(b) > 0)


def test_bed_axis_and_leading_axes():
    doses = np.array([[2.0, 2.0, 0.0], [8.0, 0.0, 8.0]])
    np.testing.assert_allclose(rb.bed(doses, 10.0), [4.8, 28.8], rtol=EXACT)  # rounding only
    np.testing.assert_allclose(rb.bed(doses.T, 10.0, axis=0), [4.8, 28.8], rtol=EXACT)
    # Per-fraction rho (broadcast against doses) is allowed; EQD2 then converts per fraction.
    rho = np.array([[10.0], [3.0]])
    np.testing.assert_allclose(rb.eqd2(doses, rho), [4.0, 2 * 8 * (1 + 8 / 3) / (1 + 2 / 3)],
                               rtol=EXACT)


def test_neg_log_survival_broadcasts_alpha_per_schedule():
    # NK-radiosensitised alpha: one per schedule (rows) against per-fraction doses (columns).
    alpha = np.array([[0.3], [0.45]])
    d = np.array([2.0, 8.0, 18.0])
    got = rb.neg_log_survival(d, alpha, 0.03, model="lq_l", transition_dose_gy=10.0)
    assert got.shape == (2, 3)
    expected_row = 0.45 * 10 + 0.03 * 100 + (0.45 + 2 * 0.03 * 10) * 8
    assert got[1, 2] == pytest.approx(expected_row, rel=EXACT)
    # USC with a per-schedule alpha: each alpha needs its own smooth-join beta.
    a = np.array([[0.33], [0.36]])
    usc = rb.neg_log_survival(d, a, _tangent_beta(a, 1.25, 1.8), model="usc", d0_gy=1.25,
                              dq_gy=1.8)
    assert usc.shape == (2, 3)
    assert np.all(np.diff(usc, axis=-1) > 0)


def test_usc_stays_continuous_and_increasing_for_any_parameters():
    # alpha/beta 10 with the H460 D0, Dq does not satisfy Park's smooth-join relation; the curve
    # is joined by construction, so there is no jump at D_T and survival falls with dose.
    a, d0, dq = 0.33, 1.25, 1.8
    dt = rb.usc_transition_dose(a, d0, dq)
    d = np.linspace(0.0, 30.0, 30001)
    y = rb.neg_log_survival(d, a, a / 10.0, model="usc", d0_gy=d0, dq_gy=dq)
    assert np.all(np.diff(y) > 0)
    h = 1e-9
    left, right = rb.neg_log_survival(np.array([dt - h, dt + h]), a, a / 10.0, model="usc",
                                      d0_gy=d0, dq_gy=dq)
    assert right - left == pytest.approx(0.0, abs=1e-8)  # step of 2e-9 Gy times a slope < 1/Gy


def test_scalar_in_numpy_float_out():
    out = rb.bed_per_fraction(2.0, 10.0)
    assert isinstance(out, np.floating)
    assert isinstance(rb.bed(np.full(3, 2.0), 10.0), np.floating)


def _reference_bed(doses, rho, dt=None):
    # Plain-Python restatement of docs/model.md s2, to cross-check the vectorised code.
    total = 0.0
    for d in doses:
        if dt is None or d <= dt:
            total += d * (1 + d / rho)
        else:
            total += dt * (1 + dt / rho) + (d - dt) * (1 + 2 * dt / rho)
    return total


@settings(max_examples=100, deadline=None)
@given(
    doses=st.lists(st.floats(0.0, 30.0), min_size=0, max_size=40),
    rho=st.floats(0.5, 20.0),
    dt=st.floats(3.0, 15.0),
)
def test_vectorised_bed_matches_reference(doses, rho, dt):
    # Summation order differs from the loop: rounding only.
    assert rb.bed(doses, rho) == pytest.approx(_reference_bed(doses, rho), rel=1e-12, abs=1e-12)
    assert rb.bed(doses, rho, model="lq_l", transition_dose_gy=dt) == pytest.approx(
        _reference_bed(doses, rho, dt), rel=1e-12, abs=1e-12
    )


# --------------------------------------------------------------------------- section 8 oracles

RHO_T, RHO_OAR, OAR_LIMIT = 10.0, 3.0, 90.0


def _tumour_bed_at_oar_limit(delta, n):
    d_oar = rb.max_oar_dose_for_bed(OAR_LIMIT, n, RHO_OAR)
    return rb.bed_uniform(n, d_oar / delta, RHO_T)


def test_mizuta_hypofractionate_when_sparing_low():
    # delta 0.2 < rho_OAR/rho_T: one fraction; OAR 15 Gy, tumour 75 Gy, BED 637.5 (exact numbers).
    assert rb.max_oar_dose_for_bed(OAR_LIMIT, 1, RHO_OAR) == pytest.approx(15.0, rel=EXACT)
    assert _tumour_bed_at_oar_limit(0.2, 1) == pytest.approx(637.5, rel=EXACT)
    beds = _tumour_bed_at_oar_limit(0.2, np.arange(1, 31))
    assert np.argmax(beds) == 0
    assert np.all(np.diff(beds) < 0)


def test_mizuta_most_fractions_when_sparing_high():
    # docs/model.md quotes 152.5, rounded to 0.1 Gy.
    assert _tumour_bed_at_oar_limit(0.5, 30) == pytest.approx(152.5, abs=0.05)
    beds = _tumour_bed_at_oar_limit(0.5, np.arange(1, 31))
    assert np.argmax(beds) == 29
    assert np.all(np.diff(beds) > 0)


def test_mizuta_indifferent_at_ratio_of_rhos():
    # delta = rho_OAR/rho_T: tumour BED = OAR limit / delta = 300 for every n (rounding only).
    np.testing.assert_allclose(_tumour_bed_at_oar_limit(0.3, np.arange(1, 31)), 300.0, rtol=1e-12)


def test_oar_doses():
    np.testing.assert_allclose(rb.oar_doses([10.0, 0.0, 20.0], 0.3), [3.0, 0.0, 6.0], rtol=EXACT)


# --------------------------------------------------------------------------- repopulation and time


def test_repopulation_head_and_neck():
    # alpha 0.3, T_pot 3 d, T_k 21 d, T 45 d: 24 d * ln2/(0.3*3) = 18.4839 Gy; 0.77 Gy/day lies in
    # the 0.6-1 Gy/day H&N band of Withers 1988. Closed form, so rounding error only.
    loss = rb.repopulation_bed_loss(45.0, 0.3, 3.0, 21.0)
    assert loss == pytest.approx(24.0 * math.log(2.0) / 0.9, rel=EXACT)
    assert loss == pytest.approx(18.48, abs=0.005)  # the brief's value, quoted to 0.01 Gy
    assert 0.6 <= loss / 24.0 <= 1.0
    gain = rb.repopulation_log_gain(45.0, 3.0, 21.0)
    assert gain == pytest.approx(loss * 0.3, rel=EXACT)


def test_repopulation_none_before_kickoff_or_without_parameters():
    np.testing.assert_array_equal(rb.repopulation_bed_loss([0.0, 10.0, 21.0], 0.3, 3.0, 21.0), 0.0)
    assert rb.repopulation_bed_loss(45.0, 0.3, None, 21.0) == 0.0
    assert rb.repopulation_bed_loss(45.0, 0.3, 3.0, None) == 0.0
    assert rb.repopulation_log_gain(np.array([30.0, 45.0]), None, None).shape == (2,)


def test_overall_days_examples():
    assert rb.overall_days([0, 2, 0, 2, 2, 0]) == 3
    assert rb.overall_days([0, 0, 18, 0]) == 0
    assert rb.overall_days([0.0, 0.0]) == 0
    week = np.array([[2, 2, 2, 2, 2, 0, 0, 2], [0, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(rb.overall_days(week), [7, 0])
    np.testing.assert_array_equal(rb.overall_days(week.T, axis=0), [7, 0])


@settings(max_examples=100, deadline=None)
@given(days=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(0, 30)),
                       elements=st.sampled_from([0.0, 0.0, 2.0, 8.0])))
def test_overall_days_matches_reference(days):
    expected = []
    for row in days:
        idx = [i for i, x in enumerate(row) if x != 0]
        expected.append(idx[-1] - idx[0] if len(idx) > 1 else 0)
    np.testing.assert_array_equal(rb.overall_days(days), expected)


# --------------------------------------------------------------------------- TCP


def test_poisson_tcp_values_and_stability():
    # N0 S = 1 gives e^-1; closed form, rounding only.
    assert rb.poisson_tcp(1e9, -math.log(1e9)) == pytest.approx(math.exp(-1.0), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / underflow / divide warnings allowed
        tcp = rb.poisson_tcp(np.array([1e9, 1e9, 1e9, 0.0]), np.array([-1e6, 0.0, 1e6, 0.0]))
    np.testing.assert_array_equal(tcp, [1.0, 0.0, 0.0, 1.0])
    # Kill far beyond what exp(ln S) could represent still gives a sensible TCP.
    assert rb.poisson_tcp(1e300, -800.0) == 1.0


@settings(max_examples=100, deadline=None)
@given(n0=st.floats(1.0, 1e12), log_s=st.floats(-2000.0, 50.0))
def test_poisson_tcp_in_unit_interval_and_decreasing_in_survival(n0, log_s):
    t1 = rb.poisson_tcp(n0, log_s)
    t2 = rb.poisson_tcp(n0, log_s + 1.0)
    assert 0.0 <= t2 <= t1 <= 1.0


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rb.bed_uniform(5, 2.0, 0.0), "alpha_beta_gy"),
        (lambda: rb.bed([2.0], -3.0), "alpha_beta_gy"),
        (lambda: rb.eqd2_from_bed(10.0, np.nan), "alpha_beta_gy"),
        (lambda: rb.bed_per_fraction(2.0, 10.0, model="lqq"), "unknown survival model"),
        (lambda: rb.neg_log_survival(2.0, 0.3, 0.03, model="LQ"), "unknown survival model"),
        (lambda: rb.bed_per_fraction(2.0, 10.0, model="lq_l"), "transition_dose_gy"),
        (lambda: rb.neg_log_survival(2.0, 0.3, 0.03, model="lq_l"), "transition_dose_gy"),
        (lambda: rb.bed_per_fraction(2.0, 10.0, model="lq_l", transition_dose_gy=0.0),
         "transition_dose_gy"),
        (lambda: rb.neg_log_survival(2.0, 0.3, 0.03, model="usc", d0_gy=1.25), "d0_gy and dq_gy"),
        (lambda: rb.bed_per_fraction(2.0, 10.0, model="usc", d0_gy=1.25, dq_gy=1.8), "alpha"),
        (lambda: rb.usc_transition_dose(0.9, 1.25, 1.8), "alpha \\* d0_gy"),
        (lambda: rb.bed_per_fraction([2.0, -1.0], 10.0), "doses must be >= 0"),
        (lambda: rb.dose_per_fraction_for_bed(100.0, 0, 10.0), "n: must be > 0"),
        (lambda: rb.dose_per_fraction_for_bed(-1.0, 5, 10.0), "bed"),
        (lambda: rb.repopulation_bed_loss(45.0, 0.3, 0.0, 21.0), "potential_doubling_days"),
        (lambda: rb.repopulation_bed_loss(45.0, 0.0, 3.0, 21.0), "alpha"),
        (lambda: rb.oar_doses([2.0], -0.1), "sparing_factor"),
        (lambda: rb.poisson_tcp(-1.0, -10.0), "clonogens"),
    ],
)
def test_invalid_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bed_of_a_scaled_course_from_its_dose_sums_and_back():
    # the DVH-bin form used by rtopt.dose.schedule: exact against bed() of the scaled doses
    d = np.array([7.0, 9.5, 12.0])
    for r in (0.0, 0.3, 1.0, 1.7):
        direct = rb.bed(r * d, 3.0)
        assert rb.bed_scaled_course(r, d.sum(), (d * d).sum(), 3.0) == pytest.approx(direct,
                                                                                     rel=1e-12)
        if r > 0:
            assert rb.scale_for_bed(direct, d.sum(), (d * d).sum(), 3.0) == pytest.approx(
                r, rel=1e-12)
    assert np.isinf(rb.scale_for_bed(10.0, 0.0, 0.0, 3.0))
