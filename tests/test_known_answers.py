"""Every back-end on the known-answer catalogue, at its own declared tolerance.

A back-end that declines a case (e.g. a MILP on a continuous dose) is skipped with its reason;
an unavailable one is skipped with the reason ``available()`` gives.
"""

from __future__ import annotations

import pytest

from rtopt import solve
from rtopt.backends import BACKENDS, get_backend
from rtopt.problem.instance import instance_from_dict

from catalogue import CASES

# Relative tolerance on the tumour BED each back-end declares (why):
RTOL = {
    "exhaustive": 1e-9,    # enumerates the closed-form optimum dose exactly
    "scipy_milp": 1e-9,    # exact on the grid; cases with a continuous dose are declined
    "pyomo_milp": 1e-9,    # same formulation, algebraic
    "cvxpy_convex": 1e-5,  # interior-point accuracy of CLARABEL (~1e-8) on doses, amplified by d^2
    "scipy_de": 2e-2,      # heuristic; stops within its tolerance of the optimum
    "cvxpy_ccp": 2e-2,     # local method, started from a feasible point
    "pyomo_minlp": 5e-2,   # daily-grid MINLP with a time limit
}

FAST = ("exhaustive", "scipy_milp", "pyomo_milp", "cvxpy_convex")


def _params():
    for case in CASES:
        for b in BACKENDS:
            marks = [] if b in FAST else [pytest.mark.slow]
            yield pytest.param(case, b, id=f"{case.name}-{b}", marks=marks)


@pytest.mark.parametrize("case,backend", list(_params()))
def test_known_answer(case, backend):
    cls = get_backend(backend)
    ok, why = cls.available()
    if not ok:
        pytest.skip(f"{backend} unavailable: {why}")
    inst = instance_from_dict(case.data, source=case.name)
    r = solve(inst, backend, time_limit_s=30)
    if r.status == "declined":
        pytest.skip(f"{backend} declines {case.name}: {r.message}")
    if case.status == "infeasible":
        assert r.status == "infeasible", (r.status, r.message)
        assert r.diagnosis is not None and r.diagnosis.conflicts, r.message
        return
    assert r.feasible and r.verified, (r.status, r.message)
    assert all(c.ok for c in r.constraints)
    if case.bed is not None:
        assert r.metrics["tumour_bed_gy"] == pytest.approx(case.bed, rel=RTOL[backend])
    if case.n_fractions is not None and backend in FAST:
        assert r.plan.n_fractions == case.n_fractions
    if case.check is not None:
        case.check(r)


def test_infeasible_prescription_diagnosis_names_the_limit_and_best_value():
    inst = instance_from_dict(CASES[7].data, source="x")
    r = solve(inst, "exhaustive")
    assert r.status == "infeasible" and r.exit_code == 3
    assert "oar.oar.max_bed_gy" in r.diagnosis.conflicts[0]
    # the highest tumour BED the OAR allows is the Mizuta optimum, 637.5 Gy
    assert r.diagnosis.best_achievable["tumour_bed_gy"] == pytest.approx(637.5, rel=1e-9)
