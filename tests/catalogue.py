"""Known-answer catalogue (cvxpy StandardTestLPs style): instances with answers known in closed form.

Each entry: an instance dict, the expected status, and expectations on the verified result.
The answers come from docs/model.md section 8 (Mizuta et al. 2012 rule and worked numbers) or from
the constraints themselves, never from running rtopt.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable


def classic(sparing: float, *, step: float = 0.0, min_bed: float = 10.0, n=(1, 30),
            oars: list[dict] | None = None, **fr: Any) -> dict[str, Any]:
    """docs/model.md s8 set-up: rho_T 10, one OAR rho 3 with BED <= 90, uniform dose."""
    return {
        "schema_version": 1,
        "name": f"classic-{int(sparing * 100)}",
        "tumour": {"site": "generic", "alpha_per_gy": 0.3, "alpha_beta_gy": 10.0,
                   "clonogens": 1e7, "hypoxic_fraction": 0.1},
        "prescription": {"min_bed_gy": min_bed},
        "organ_at_risk": oars if oars is not None else [
            {"name": "oar", "alpha_beta_gy": 3.0, "sparing_factor": sparing, "max_bed_gy": 90.0}],
        "fractionation": {"n_fractions": list(n), "dose_per_fraction_gy": [0.5, 100.0],
                          "dose_step_gy": step, "uniform_dose": True,
                          # closed-form optima are checked to every digit: no 0.01 Gy rounding
                          "prescription_step_gy": 0.0,
                          "treatment_weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                          "start_weekday": "mon", "min_interval_days": 1,
                          "max_overall_days": 60, "horizon_days": 60, **fr},
        "objective": {"maximise": "tumour_bed"},
    }


def with_nk(d: dict[str, Any], **nk: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    d["nk"] = {"product": "il15_expanded", "cytokine_support": "none", "n_infusions": [1, 2],
               "earliest_day": 0, "min_interval_days": 7, "min_days_before_next_fraction": 1,
               **nk}
    return d


def _two_oar_answer() -> tuple[int, float]:
    # Independent closed form (not rtopt's code): for each n the largest uniform dose under
    # both OAR BED limits, then the n with the highest tumour BED.
    import math
    best = (0, -1.0)
    for n in range(1, 31):
        ds = []
        for s, rho, b in ((0.4, 3.0, 90.0), (0.7, 10.0, 120.0)):
            # n s d (1 + s d / rho) = b  ->  d = rho/(2 s) (sqrt(1 + 4 b / (n rho)) - 1)
            ds.append(rho / (2 * s) * (math.sqrt(1 + 4 * b / (n * rho)) - 1))
        d = min(ds)
        bed = n * d * (1 + d / 10.0)
        if bed > best[1]:
            best = (n, bed)
    return best


@dataclass
class Case:
    name: str
    data: dict[str, Any]
    status: str                       # "feasible" (optimal or feasible) or "infeasible"
    bed: float | None = None          # expected tumour BED (Gy), verified
    n_fractions: int | set[int] | None = None
    check: Callable[[Any], None] | None = None
    needs: tuple[str, ...] = field(default_factory=tuple)


def _mwf(result) -> None:
    days = result.plan.fraction_days
    assert all(d % 7 in (0, 2, 4) for d in days), days       # start_weekday mon: 0=mon 2=wed 4=fri
    assert all(b - a >= 2 for a, b in zip(days, days[1:])), days


def _nk_rules(result) -> None:
    nk = result.plan.nk_days
    fr = result.plan.fraction_days
    assert 1 <= len(nk) <= 2
    assert all(b - a >= 7 for a, b in zip(nk, nk[1:]))
    assert not any(t < f <= t + 1 for t in nk for f in fr)


_N2, _BED2 = _two_oar_answer()
# docs/model.md s8 quotes 152.5 Gy (rounded): 30 fractions with 30*0.5d(1 + 0.5d/3) = 90 give
# d = (sqrt(180) - 6)/2 = 3.7082 Gy and tumour BED 30 d (1 + d/10) = 152.498 Gy.
_D_HYPER = ((180.0 ** 0.5) - 6.0) / 2.0
_BED_HYPER = 30 * _D_HYPER * (1 + _D_HYPER / 10.0)

CASES: list[Case] = [
    Case("mizuta-hypo", classic(0.2), "feasible", bed=637.5, n_fractions=1),
    Case("mizuta-hypo-grid", classic(0.2, step=0.5), "feasible", bed=637.5, n_fractions=1),
    Case("mizuta-hyper", classic(0.5), "feasible", bed=_BED_HYPER, n_fractions=30),
    Case("mizuta-neutral", classic(0.3), "feasible", bed=300.0),
    Case("two-oar", classic(0.4, oars=[
        {"name": "a", "alpha_beta_gy": 3.0, "sparing_factor": 0.4, "max_bed_gy": 90.0},
        {"name": "b", "alpha_beta_gy": 10.0, "sparing_factor": 0.7, "max_bed_gy": 120.0}]),
        "feasible", bed=_BED2, n_fractions=_N2),
    Case("calendar-mwf", classic(0.5, n=(3, 6), treatment_weekdays=["mon", "wed", "fri"],
                                 min_interval_days=2, max_overall_days=11),
         "feasible", n_fractions=6, check=_mwf),
    Case("nk-rules", with_nk(classic(0.2, step=0.5)), "feasible", bed=637.5, check=_nk_rules),
    Case("infeasible-prescription", classic(0.2, min_bed=700.0), "infeasible"),
    # infusions only on day 0 and no fraction on the 30 days after one, but >= 2 fractions
    # within a 30-day horizon
    Case("infeasible-nk", with_nk(classic(0.2, step=0.5, n=(2, 5), horizon_days=30,
                                          max_overall_days=29), n_infusions=[1, 1],
                                  earliest_day=0, latest_day=0,
                                  min_days_before_next_fraction=30), "infeasible"),
]
