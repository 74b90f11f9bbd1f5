"""The fast simulator against the solve_ivp reference, and the model's invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rtopt.outputs.bench import random_schedules
from rtopt.model.simulator import Biology, infusion_kernels, simulate, simulate_reference

# The fast simulator is fourth order in the sub-step (default 1/2 d): Simpson quadrature of
# the activity and hypoxia integrals and of the trafficking rate.  Measured errors on random
# schedules are <= 2e-4 (activity integral), <= 2e-5 (ln survival) and <= 6e-4 (mean hypoxic
# fraction, whose cap makes it kinked); the tolerances leave margin for other presets while
# still catching any real discrepancy in the equations (a wrong sign or rate changes these
# outputs by percent or more).
RTOL_NK = 2e-3
RTOL_LN_S = 2e-4
RTOL_H = 2e-3


@pytest.mark.parametrize("site,product,support", [
    ("lung", "il15_expanded", "none"),
    ("prostate", "memory_like_il12_15_18", "il2"),
    ("head_and_neck", "car_nk_il15", "il15"),   # gamma = 3: the nonlinear hypoxia branch
    ("pancreas", "il2_activated", "il2"),
])
def test_fast_matches_reference_on_random_schedules(site, product, support):
    bio = Biology.simple(site, product=product, cytokine_support=support)
    D, U = random_schedules(12, seed=hash(site) % 1000)
    fast = simulate(bio, D, U)
    ref = simulate_reference(bio, D, U)
    np.testing.assert_allclose(fast.nk_auc, ref.nk_auc, rtol=RTOL_NK)
    np.testing.assert_allclose(fast.ln_survival, ref.ln_survival, rtol=RTOL_LN_S)
    np.testing.assert_allclose(fast.mean_hypoxic_fraction, ref.mean_hypoxic_fraction, rtol=RTOL_H)
    # the end state is exact for hypoxia (closed form between events)
    np.testing.assert_allclose(fast.hypoxic_fraction_end, ref.hypoxic_fraction_end, rtol=1e-9)


def test_fast_matches_reference_with_parameter_samples():
    # one parameter sample per schedule: arrays broadcast along the schedule axis
    rng = np.random.default_rng(3)
    n = 6
    base = Biology.simple("lung")
    samples = {"vascular_d50_gy": rng.uniform(12, 20, n), "nk_chemokine_gain": rng.uniform(1, 8, n),
               "nk_blood_clearance_per_day": rng.uniform(0.1, 0.6, n)}
    bio = Biology(**{**base.__dict__, "params": base.params.with_values(**samples)})
    D, U = random_schedules(n, seed=5)
    fast = simulate(bio, D, U, chunk=4)          # chunks must slice the samples consistently
    ref = simulate_reference(bio, D, U)
    np.testing.assert_allclose(fast.nk_auc, ref.nk_auc, rtol=RTOL_NK)
    np.testing.assert_allclose(fast.ln_survival, ref.ln_survival, rtol=RTOL_LN_S)


def test_error_falls_with_sub_step():
    # fourth-order convergence: halving the step should cut the error about 16-fold (at
    # least three-fold asserted)
    bio = Biology.simple("lung")
    D, U = random_schedules(8, seed=11)
    ref = simulate_reference(bio, D, U).nk_auc
    errs = [np.max(np.abs(simulate(bio, D, U, steps_per_day=s).nk_auc / ref - 1)) for s in (4, 8, 16)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[0] / errs[1] > 3.0 and errs[1] / errs[2] > 3.0


def test_chunking_and_threads_do_not_change_results():
    bio = Biology.simple("lung")
    D, U = random_schedules(300, seed=2)
    a = simulate(bio, D, U)
    b = simulate(bio, D, U, chunk=64, threads=2)
    np.testing.assert_array_equal(a.nk_auc, b.nk_auc)
    np.testing.assert_array_equal(a.ln_survival, b.ln_survival)


def test_infusion_superposition_is_exact():
    bio = Biology.simple("lung")
    D, _ = random_schedules(4, seed=8)
    days = np.arange(0, 30)
    ker = infusion_kernels(bio, D, days)
    sets = np.zeros((3, days.size))
    sets[0, [2, 9]] = 1
    sets[1, [20]] = 1
    sets[2, [0, 7, 14]] = 1
    for i in range(len(D)):
        comb = ker.combine(i, sets)
        U = np.zeros((3, D.shape[1]))
        U[:, :days.size] = sets
        direct = simulate(bio, np.repeat(D[i:i + 1], 3, axis=0), U)
        # linear algebra on the same floating-point numbers: round-off only
        np.testing.assert_allclose(comb.nk_auc, direct.nk_auc, rtol=1e-12)
        np.testing.assert_allclose(comb.ln_survival, direct.ln_survival, rtol=1e-12)


def test_without_nk_there_is_no_activity():
    bio = Biology.simple("lung", product=None)
    D, U = random_schedules(5)
    s = simulate(bio, D, U)
    assert np.all(s.nk_auc == 0) and np.all(s.nk_log10_kill == 0)


def test_no_dose_no_kill_and_baseline_hypoxia():
    bio = Biology.simple("lung", hypoxic_fraction=0.21)
    s = simulate(bio, np.zeros(42))
    assert s.ln_survival[0] == 0.0
    assert s.hypoxic_fraction_end[0] == pytest.approx(0.21, rel=1e-12)


def test_classic_survival_when_tme_is_neutral():
    # With no hypoxia and no NK cells the clonogen survival is plain LQ: ln S = -sum(alpha d + beta d^2)
    bio = Biology.simple("lung", product=None, hypoxic_fraction=0.0)
    d = np.zeros(42)
    d[[0, 2, 4]] = 18.0
    s = simulate(bio, d)
    expected = -3 * (0.35 * 18 + 0.035 * 18 ** 2)
    assert s.ln_survival[0] == pytest.approx(expected, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(doses=st.lists(st.floats(0.0, 30.0), min_size=42, max_size=42),
       inf=st.lists(st.integers(0, 2), min_size=42, max_size=42))
def test_invariants(doses, inf):
    bio = Biology.simple("lung")
    s = simulate(bio, np.array(doses), np.array(inf, dtype=float), trajectory=True)
    tr = s.trajectory
    assert np.all((tr["hypoxic_fraction"] >= 0) & (tr["hypoxic_fraction"] <= 1))
    for k in ("nk_blood", "nk_tumour", "nk_activity", "chemokine"):
        assert np.all(tr[k] >= -1e-12), k
    assert np.all((tr["demand"] > 0) & (tr["demand"] <= 1 + 1e-12))
    assert np.all((tr["vascular"] > 0) & (tr["vascular"] <= 1 + 1e-12))
    assert 0.0 <= s.tcp[0] <= 1.0
    assert s.ln_survival[0] <= 1e-12 + float(np.log(2) / 3 * 42)   # repopulation bound (none set)


def test_more_dose_more_kill():
    bio = Biology.simple("lung", product=None)
    D = np.zeros((30, 42))
    D[:, [0, 1, 2, 3]] = np.linspace(1, 20, 30)[:, None]
    s = simulate(bio, D)
    assert np.all(np.diff(s.log10_kill) > 0)


def test_activity_is_linear_in_infusions():
    bio = Biology.simple("lung")
    d = np.zeros(42)
    d[[0, 1, 2, 3]] = 12.5
    u1 = np.zeros(42); u1[5] = 1
    s = simulate(bio, np.stack([d, d, d]), np.stack([0 * u1, u1, 2 * u1]))
    # the infused part is linear in the infusions; the endogenous part does not depend on them
    inf = s.nk_auc - s.nk_auc_endogenous
    assert inf[2] == pytest.approx(2 * inf[1], rel=1e-12) and inf[0] == 0.0
    assert s.nk_auc_endogenous[0] > 0
    np.testing.assert_allclose(s.nk_auc_endogenous, s.nk_auc_endogenous[0], rtol=1e-14)


def test_vectorisable_exponentials_match_libm():
    # the kernels' arithmetic exp and expm1 (so loops over schedules vectorise) against numpy
    from numba import njit

    from rtopt.model.simulator.kernels import _exp, _expm1

    @njit
    def both(y, a, b):
        for i in range(y.size):
            a[i] = _exp(y[i])
            b[i] = _expm1(y[i])

    rng = np.random.default_rng(0)
    y = np.concatenate([rng.uniform(-708, 700, 20000), rng.uniform(-1, 1, 20000),
                        rng.uniform(-1e-6, 1e-6, 2000), [0.0, -1e-300, 1e-300, -0.5, 0.5]])
    a, b = np.empty_like(y), np.empty_like(y)
    both(y, a, b)
    np.testing.assert_allclose(a, np.exp(y), rtol=4e-16, atol=0)
    np.testing.assert_allclose(b, np.expm1(y), rtol=4e-16, atol=1e-320)




def test_population_tcp_exponential_matches_libm():
    # the population TCP's shorter exponential (series to r^11): within 1e-14 relative of
    # numpy over its range there (POPULATION_TCP_ABS_ERROR counts on it)
    from numba import njit

    from rtopt.model.simulator.kernels import _exp_tcp

    @njit
    def exp(y, a):
        for i in range(y.size):
            a[i] = _exp_tcp(y[i])

    rng = np.random.default_rng(1)
    y = np.concatenate([rng.uniform(-708, 700, 20000), rng.uniform(-41, 7, 20000),
                        [0.0, -0.5 * np.log(2.0), 0.5 * np.log(2.0), -40.0, 6.5]])
    a = np.empty_like(y)
    exp(y, a)
    np.testing.assert_allclose(a, np.exp(y), rtol=1e-14, atol=0)

def test_vectorisable_logarithm_matches_libm():
    # the kernels' arithmetic logarithm (closes the population nodes' ln S, vectorised)
    # against numpy: within 2 ulp over the normal doubles, exact at 1, NaN kept
    from numba import njit

    from rtopt.model.simulator.kernels import _log

    @njit
    def log(y, a):
        for i in range(y.size):
            a[i] = _log(y[i])

    rng = np.random.default_rng(0)
    y = np.concatenate([10 ** rng.uniform(-307, 308, 20000), rng.uniform(0.5, 2.0, 20000),
                        1.0 + rng.uniform(-1e-6, 1e-6, 2000),
                        [1.0, 2.0, 0.5, 1e-250, 2.2250738585072014e-308, 1.7e308,
                         np.sqrt(2.0), np.nextafter(np.sqrt(2.0), 0.0)]])
    a = np.empty_like(y)
    log(y, a)
    ref = np.log(y)
    assert np.all(np.abs(a - ref) <= 2 * np.spacing(np.abs(ref)))
    assert a[-8] == 0.0
    nan = np.array([np.nan])
    log(nan, nan)
    assert np.isnan(nan[0])

def test_fraction_index_matches_the_dose_matrix():
    # the compiled fraction scan: each row's fractions in day order, a jump table over each
    # row's runs of equal doses, and the overall time of rtopt.model.radiobiology.overall_days
    from rtopt.model import radiobiology as rb
    from rtopt.model.simulator.kernels import fraction_index

    D, _ = random_schedules(700, seed=4)
    D[5] = 0.0                                    # a row without fractions
    D[6, [3, 4, 9]] = [8.0, 8.0, 6.0]             # a row with two distinct doses
    rowptr, jidx, tdose, trow, span, fmax = fraction_index(np.ascontiguousarray(D))
    np.testing.assert_array_equal(span, rb.overall_days(D))
    assert fmax == (D > 0).sum(axis=1).max()
    for i in range(len(D)):
        ks = np.arange(rowptr[i], rowptr[i + 1])
        np.testing.assert_array_equal(tdose[jidx[ks]], D[i][D[i] > 0])
        assert np.all(trow[jidx[ks]] == i)
    assert tdose.size < rowptr[-1]                # equal doses share their jumps
