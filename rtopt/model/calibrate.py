"""Calibration of the hypoxia presets to the observation table (docs/model.md sections 3 and 7).

Regularised, bounded least squares (``scipy.optimize.least_squares``): residuals are
``(model - target) / sigma`` for observations with a target value (sigma = half the band width),
hinge residuals ``distance outside band / sigma`` for every band (direction-only observations
have only these), and weak prior residuals ``(theta - start) / range`` that keep
unidentified parameters at their starting values (docs/model.md section 3).  Sites are fitted in order: lung
first (O1-O3), then prostate (O4) and head and neck (O5) starting from the lung result, each with
its own free parameters.

The observation data live in ``rtopt/model/data/observations.toml``.  Hypoxic *volume* ratios (O5) are
compared with hypoxic *fraction* ratios: tumour shrinkage is ignored, a documented simplification.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rtopt.model.data.calibrated import OUTCOME as _old
from rtopt.model.parameters import SPECS
from rtopt.model.parameters import resolve
from rtopt.model.parameters import resolve as _resolve
from rtopt.model.simulator import Biology, simulate

# scipy.optimize is imported inside the fitting functions (import time: the calibrated values are
# read without it).

__all__ = ["Observation", "load_observations", "predict", "calibrate", "CalibrationResult",
           "FIT_PLAN", "write_calibrated", "OutcomeObservation", "OutcomeSite", "load_outcomes",
           "predict_outcome", "calibrate_outcomes", "OutcomeFit", "profile_hypoxic_share",
           "NO_REOXYGENATION"]

# (site, start from site, free parameters, observation ids)
FIT_PLAN: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("lung", "generic", ("demand_drop_max", "vascular_damage_max", "vascular_d50_gy",
                         "vascular_slope_gy", "vascular_recovery_days")),
    ("prostate", "lung", ("vascular_d50_gy",)),
    ("head_and_neck", "lung", ("hypoxia_gamma", "demand_drop_max", "demand_recovery_days")),
)
PRIOR_WEIGHT = 0.05
"""Weight of the prior residuals relative to one band-width of data misfit (weak on purpose)."""


@dataclass(frozen=True)
class Observation:
    """One row of the observation table."""

    id: str
    site: str
    doses_gy: tuple[float, ...]
    days: tuple[int, ...]
    baseline_hypoxic_fraction: float
    measure_day: int
    quantity: str
    band: tuple[float, float]
    source: str
    target: float | None = None

    def dose_row(self) -> np.ndarray:
        """Daily dose array covering the schedule and the measurement day."""
        row = np.zeros(self.measure_day)
        for d, day in zip(self.doses_gy, self.days):
            row[day] += d
        return row


def load_observations(path: str | Path | None = None) -> list[Observation]:
    """Read the observation table (the packaged one by default)."""
    if path is None:
        text = resources.files("rtopt.model.data").joinpath("observations.toml").read_text()
    else:
        text = Path(path).read_text()
    data = tomllib.loads(text)
    return [Observation(id=o["id"], site=o["site"], doses_gy=tuple(o["doses_gy"]),
                        days=tuple(o["days"]),
                        baseline_hypoxic_fraction=o["baseline_hypoxic_fraction"],
                        measure_day=o["measure_day"], quantity=o["quantity"],
                        band=tuple(o["band"]), source=o["source"], target=o.get("target"))
            for o in data["observation"]]


def predict(obs: Observation, values: dict[str, float]) -> float:
    """Model value of one observation under the given surrogate parameter values."""
    values = {k: v for k, v in values.items() if k in SPECS}
    params = resolve("generic").with_values(**values)
    bio = Biology(alpha_per_gy=0.35, alpha_beta_gy=10.0, clonogens=1e8,
                  hypoxic_fraction=obs.baseline_hypoxic_fraction, params=params, nk=False)
    h = float(simulate(bio, obs.dose_row(), steps_per_day=2,
                       population=False).hypoxic_fraction_end[0])
    return h if obs.quantity == "hypoxic_fraction" else h / obs.baseline_hypoxic_fraction


def _sigma(obs: Observation) -> float:
    lo, hi = obs.band
    if hi >= 1e8:
        return 0.1
    return max((hi - lo) / 2.0, 1e-3)


def _residuals(obs_list, values):
    r = []
    for o in obs_list:
        m = predict(o, values)
        s = _sigma(o)
        if o.target is not None:
            r.append((m - o.target) / s)
        lo, hi = o.band
        r.append((max(lo - m, 0.0) + max(m - hi, 0.0)) / s * 3.0)
    return r


@dataclass(frozen=True)
class CalibrationResult:
    """Fitted values per site and the fit of every observation."""

    values: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    cost: dict[str, float]

    def all_within_band(self) -> bool:
        """True if every observation's model value lies in its band."""
        return all(r["within_band"] for r in self.rows)


def _site_start(site: str, fitted: dict[str, dict[str, float]]) -> dict[str, float]:
    base = {k: v for k, v in resolve("generic").values.items() if SPECS[k].group == "hypoxia"}
    base.update(fitted.get(site, {}))
    return base


def calibrate(observations: list[Observation] | None = None) -> CalibrationResult:
    """Fit the hypoxia parameters of every site in :data:`FIT_PLAN` to the observations."""
    from scipy.optimize import least_squares

    obs = observations if observations is not None else load_observations()
    fitted: dict[str, dict[str, float]] = {}
    costs: dict[str, float] = {}
    for site, start_from, free in FIT_PLAN:
        start = _site_start(start_from, fitted)
        site_obs = [o for o in obs if o.site == site]
        x0 = np.array([start[k] for k in free])
        lo = np.array([SPECS[k].low for k in free])
        hi = np.array([SPECS[k].high for k in free])
        prior = np.array([SPECS[k].default for k in free])
        scale = (hi - lo)

        def fun(x):
            vals = dict(start)
            vals.update(dict(zip(free, x)))
            return np.concatenate([_residuals(site_obs, vals),
                                   PRIOR_WEIGHT * (x - prior) / scale])

        sol = least_squares(fun, np.clip(x0, lo, hi), bounds=(lo, hi), x_scale=scale,
                            diff_step=1e-4, xtol=1e-10, ftol=1e-10)
        vals = dict(start)
        vals.update({k: float(np.round(v, 4)) for k, v in zip(free, sol.x)})
        fitted[site] = vals
        costs[site] = float(sol.cost)
    rows = []
    for o in obs:
        m = predict(o, fitted[o.site])
        lo, hi = o.band
        rows.append(dict(id=o.id, site=o.site, quantity=o.quantity, target=o.target,
                         band=o.band, model=m,
                         residual=None if o.target is None else m - o.target,
                         within_band=lo <= m <= hi, source=o.source))
    return CalibrationResult(values=fitted, rows=rows, cost=costs)


def write_calibrated(result: CalibrationResult, path: str | Path | None = None,
                     outcomes: "OutcomeFit | None" = None) -> Path:
    """Write the fitted values to ``rtopt/model/data/calibrated.py`` (the presets read it).

    ``outcomes`` (the result of :func:`calibrate_outcomes`) adds the outcome-fitted values of
    each site; without it the outcome values already in the file are kept.
    """
    target = Path(path) if path else Path(__file__).parent / "data" / "calibrated.py"
    if outcomes is None:
        outcome_vals = {k: dict(v) for k, v in _old.items()}
    else:
        outcome_vals = outcomes.values
    lines = ['"""Generated by `rtopt calibrate --write`; do not edit by hand."""',
             "CALIBRATED: dict[str, dict[str, float]] = {"]
    defaults = resolve("generic").values
    for site, vals in result.values.items():
        vals = {k: v for k, v in vals.items() if v != defaults[k]}
        vals.update({k: v for k, v in outcome_vals.get(site, {}).items() if k in SPECS})
        lines.append(f"    {site!r}: {{")
        for k, v in vals.items():
            lines.append(f"        {k!r}: {v!r},")
        lines.append("    },")
    lines.append("}")
    lines.append("FITTED: dict[str, tuple[str, ...]] = {")
    for site, start_from, free in FIT_PLAN:
        lines.append(f"    {site!r}: {tuple(free)!r},  # starting from {start_from}")
    lines.append("}")
    lines.append("OUTCOME: dict[str, dict[str, float]] = {")
    for site, vals in outcome_vals.items():
        lines.append(f"    {site!r}: {{")
        for k, v in vals.items():
            lines.append(f"        {k!r}: {v!r},")
        lines.append("    },")
    lines.append("}")
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(target)
    return target


# ------------------------------------------------------------------ clinical outcomes


@dataclass(frozen=True)
class OutcomeSite:
    """The tumour values an outcome fit holds fixed for one site, and what it fits."""

    site: str
    alpha_per_gy: float
    alpha_beta_gy: float
    hypoxic_fraction: float
    survival_model: str
    repopulation_kickoff_days: float | None
    potential_doubling_days: float | None
    free: tuple[str, ...]
    reference_gtv_cc: float = 10.0
    fixed_zero: tuple[str, ...] = ()

    def fixed(self) -> dict[str, Any]:
        """The fixed tumour values as ``{field: value}`` (instance ``[tumour]`` keys)."""
        return {"alpha_per_gy": self.alpha_per_gy, "alpha_beta_gy": self.alpha_beta_gy,
                "hypoxic_fraction": self.hypoxic_fraction, "survival_model": self.survival_model,
                "repopulation_kickoff_days": self.repopulation_kickoff_days,
                "potential_doubling_days": self.potential_doubling_days}


@dataclass(frozen=True)
class OutcomeObservation:
    """One row of the clinical outcome tables (local control of one published cohort).

    ``doses_gy`` are prescribed doses; the tumour receives ``tumour_dose_ratio`` times them
    (the source's prescription convention).  ``gtv_cc`` (None: the site's reference volume)
    scales the clonogen number.  ``role`` is ``training`` (fitted) or ``validation`` (never
    seen by the fit).
    """

    id: str
    site: str
    doses_gy: tuple[float, ...]
    days: tuple[int, ...]
    target: float
    band: tuple[float, float]
    source: str
    role: str = "training"
    tumour_dose_ratio: float = 1.0
    convention: str = "isocentre"
    schedule: str | None = None
    gtv_cc: float | None = None
    endpoint: str = ""
    time_years: float | None = None
    n_patients: int | None = None
    median_followup_months: float | None = None
    year: int | None = None
    verified: bool = False
    unverified: str = ""

    def dose_row(self) -> np.ndarray:
        """Daily *tumour* dose array from day 0 to the last fraction (prescription x ratio)."""
        row = np.zeros(max(self.days) + 1)
        for d, day in zip(self.doses_gy, self.days):
            row[day] += d * self.tumour_dose_ratio
        return row

    def describe(self) -> str:
        """``54 Gy / 3`` style label (prescribed dose)."""
        return f"{sum(self.doses_gy):g} Gy / {len(self.doses_gy)}"


OUTCOME_BOUNDS = {"clonogens": (1e6, 1e11)}
"""Fit range of the clonogen number at the reference GTV volume (the surrogate parameters use
their plausible range).  Lower end: 1e5 clonogens per cm3 for a 10 cm3 GTV (about 1e8-1e9 cells
per cm3 with a clonogenic share of 1e-4 or more); below it the fit buys a flat dose response
with implausibly few clonogens and an extreme spread of radiosensitivity."""


def _row_schedule(o: dict[str, Any]) -> tuple[tuple[float, ...], tuple[int, ...], float, str,
                                                str | None]:
    """Doses, days, tumour-dose ratio, convention label and standard name of one table row."""
    from rtopt.model.standards import standard_schedule, tumour_dose_ratio

    name = o.get("schedule")
    if name is not None:
        st = standard_schedule(name)
        doses, days = st.doses_gy, st.days
        presc, iso = st.prescription, st.isodose_percent
    else:
        doses, days = tuple(float(x) for x in o["doses_gy"]), tuple(int(x) for x in o["days"])
        presc, iso = o.get("prescription", "isocentre"), o.get("isodose_percent")
    presc = o.get("prescription", presc)
    iso = o.get("isodose_percent", iso) if presc != "isocentre" else None
    ratio = tumour_dose_ratio(iso, o.get("tumour_dose_ratio"))
    label = "isocentre" if iso is None else f"PTV edge {iso:g} %"
    return doses, days, ratio, label, name


def load_outcomes(path: str | Path | None = None
                  ) -> tuple[dict[str, OutcomeSite], list[OutcomeObservation]]:
    """Read the clinical outcome tables (the packaged one by default): training and validation."""
    if path is None:
        text = resources.files("rtopt.model.data").joinpath("outcomes.toml").read_text()
    else:
        text = Path(path).read_text()
    data = tomllib.loads(text)
    sites = {name: OutcomeSite(site=name, alpha_per_gy=v["alpha_per_gy"],
                               alpha_beta_gy=v["alpha_beta_gy"],
                               hypoxic_fraction=v["hypoxic_fraction"],
                               survival_model=v.get("survival_model", "lq"),
                               repopulation_kickoff_days=v.get("repopulation_kickoff_days"),
                               potential_doubling_days=v.get("potential_doubling_days"),
                               free=tuple(v["free"]),
                               reference_gtv_cc=float(v.get("reference_gtv_cc", 10.0)),
                               fixed_zero=tuple(v.get("fixed_zero", ())))
             for name, v in data.get("site", {}).items()}
    obs = []
    for o in data["outcome"]:
        doses, days, ratio, label, name = _row_schedule(o)
        source = o.get("source") or f"{o.get('reference', '')}: {o.get('endpoint', '')}"
        obs.append(OutcomeObservation(
            id=o["id"], site=o["site"], doses_gy=doses, days=days, target=o["target"],
            band=tuple(o["band"]), source=source, role=o.get("role", "training"),
            tumour_dose_ratio=ratio, convention=label, schedule=name, gtv_cc=o.get("gtv_cc"),
            endpoint=o.get("endpoint", ""), time_years=o.get("time_years"),
            n_patients=o.get("n_patients"),
            median_followup_months=o.get("median_followup_months"), year=o.get("year"),
            verified=bool(o.get("verified", False)), unverified=o.get("unverified", "")))
    return sites, obs


def _outcome_biology(site: OutcomeSite, values: dict[str, float], clonogens: Any = None,
                     reoxygenation: bool = True):
    surrogate = {k: v for k, v in values.items() if k in SPECS}
    surrogate.update({k: 0.0 for k in site.fixed_zero})
    params = _resolve(site.site).with_values(**surrogate)
    if not reoxygenation:
        params = params.with_values(**NO_REOXYGENATION)
    return Biology(alpha_per_gy=site.alpha_per_gy, alpha_beta_gy=site.alpha_beta_gy,
                   clonogens=values["clonogens"] if clonogens is None else clonogens,
                   hypoxic_fraction=site.hypoxic_fraction,
                   params=params, survival_model=site.survival_model,
                   repopulation_kickoff_days=site.repopulation_kickoff_days,
                   potential_doubling_days=site.potential_doubling_days, nk=False)


NO_REOXYGENATION = {"demand_drop_max": 0.0, "vascular_damage_max": 0.0}
"""Surrogate values that hold the FMISO hypoxic fraction at its pre-treatment value (no
demand drop, no vascular damage): the counterfactual "without reoxygenation" of
``reoxygenation_gain_local_control`` (docs/model.md section 9)."""


def predict_outcome(site: OutcomeSite, obs: list[OutcomeObservation],
                    values: dict[str, float], reoxygenation: bool = True) -> np.ndarray:
    """Local control of each row's schedule (radiotherapy alone) under ``values``.

    Each row gets its own tumour dose (prescription x its convention's ratio) and clonogen
    number (the fitted number x ``gtv_cc / reference_gtv_cc``).  ``reoxygenation=False`` holds
    the hypoxic fraction at its pre-treatment value (:data:`NO_REOXYGENATION`).
    """
    rows = [o.dose_row() for o in obs]
    width = max(r.size for r in rows)
    D = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        D[i, :r.size] = r
    n0 = np.array([values["clonogens"] * (o.gtv_cc / site.reference_gtv_cc
                                          if o.gtv_cc is not None else 1.0) for o in obs])
    # 2 sub-steps suffice: without NK cells the outcome depends only on the hypoxic fraction
    # at the fractions, whose demand and vascular propagators are exact for any sub-step
    return simulate(_outcome_biology(site, values, clonogens=n0, reoxygenation=reoxygenation),
                    D, steps_per_day=2).local_control


@dataclass(frozen=True)
class OutcomeFit:
    """Outcome-fitted values per site and the fit of every outcome row (both tables)."""

    values: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    cost: dict[str, float]
    sites: dict[str, OutcomeSite]

    def all_within_band(self, role: str = "training") -> bool:
        """True if every row of ``role`` lies in its band."""
        return all(r["within_band"] for r in self.rows if r["role"] == role)

    def share_within_band(self, role: str = "validation") -> float:
        """Share of the rows of ``role`` whose model value lies in the band."""
        rows = [r for r in self.rows if r["role"] == role]
        return sum(r["within_band"] for r in rows) / len(rows) if rows else float("nan")


HINGE_WEIGHT = 100.0
"""Weight of the residual outside a band relative to the distance from the target: rows of one
schedule with different targets (RTOG 0236 and CHISEL, 54 Gy / 3) are reconciled inside their
bands rather than between their targets."""
BAND_MARGIN = 0.002
"""The hinge starts this far inside each band, so that the fitted values, written to 4-5
significant digits, still put the row inside it."""


def _fit_site(site: OutcomeSite, obs: list[OutcomeObservation], free: tuple[str, ...],
              fixed: dict[str, float]) -> tuple[dict[str, float], float]:
    """Bounded least squares of ``free`` on the training rows ``obs`` (others from ``fixed``)."""
    from scipy.optimize import least_squares

    lo, hi, x0 = [], [], []
    for k in free:
        if k == "clonogens":
            a, b = OUTCOME_BOUNDS["clonogens"]
            lo.append(np.log10(a)), hi.append(np.log10(b)), x0.append(9.0)
        else:
            lo.append(SPECS[k].low), hi.append(SPECS[k].high)
            x0.append(float(np.clip(SPECS[k].default, SPECS[k].low, SPECS[k].high)))
    lo_a, hi_a = np.array(lo), np.array(hi)
    target = np.array([o.target for o in obs])
    band = np.array([o.band for o in obs])
    sig = (band[:, 1] - band[:, 0]) / 2.0

    def unpack(x: np.ndarray) -> dict[str, float]:
        v = dict(fixed)
        for k, xi in zip(free, x):
            v[k] = float(10.0 ** xi) if k == "clonogens" else float(xi)
        return v

    def fun(x: np.ndarray) -> np.ndarray:
        m = predict_outcome(site, obs, unpack(x))
        hinge = (np.maximum(band[:, 0] + BAND_MARGIN - m, 0)
                 + np.maximum(m - band[:, 1] + BAND_MARGIN, 0)) / sig * HINGE_WEIGHT
        return np.concatenate([(m - target) / sig, hinge])

    # a few starts: the local-control surface has flat regions (all 0 or all 1)
    best = None
    for start in (np.array(x0), 0.5 * (lo_a + hi_a), lo_a + 0.2 * (hi_a - lo_a)):
        sol = least_squares(fun, np.clip(start, lo_a, hi_a), bounds=(lo_a, hi_a),
                            x_scale=hi_a - lo_a, diff_step=1e-3, xtol=1e-10, ftol=1e-10)
        if best is None or sol.cost < best.cost:
            best = sol
    return unpack(best.x), float(best.cost)


def _round_outcome(k: str, v: float) -> float:
    return float(f"{v:.4g}") if k == "clonogens" else float(np.round(v, 5))


def calibrate_outcomes(sites: dict[str, OutcomeSite] | None = None,
                       observations: list[OutcomeObservation] | None = None) -> OutcomeFit:
    """Fit each site's free outcome parameters to its *training* rows; predict every row.

    Bounded least squares on ``(LC - target) / sigma`` (sigma = half the band) plus hinge
    residuals outside the band (weight 3, as for the hypoxia fit).  The clonogen number is
    fitted on a log10 scale.  Validation rows are never seen by the fit: they are predicted
    with the fitted values and reported beside the training rows.  The hypoxia (FMISO)
    presets are not touched: they come from :func:`calibrate` and enter here unchanged.
    """
    if sites is None or observations is None:
        s0, o0 = load_outcomes()
        sites = s0 if sites is None else sites
        observations = o0 if observations is None else observations
    values: dict[str, dict[str, float]] = {}
    cost: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for name, site in sites.items():
        train = [o for o in observations if o.site == name and o.role == "training"]
        if not train:
            continue
        base = resolve(name).values
        fixed = {k: float(base[k]) for k in ("alpha_sd_per_gy", "clonogen_hypoxia_ratio",
                                             "anoxic_share")}
        fixed["clonogens"] = 1e9
        fitted, c = _fit_site(site, train, site.free, fixed)
        vals = {k: _round_outcome(k, v) for k, v in fitted.items() if k in site.free}
        vals.update({k: 0.0 for k in site.fixed_zero})
        values[name] = vals
        cost[name] = c
        full = {**fixed, **vals}
        both = [o for o in observations if o.site == name]
        m = predict_outcome(site, both, full)
        m0 = predict_outcome(site, both, full, reoxygenation=False)
        for o, mi, m0i in zip(both, m, m0):
            lo_b, hi_b = o.band
            rows.append(dict(id=o.id, site=name, role=o.role, schedule=o.describe(),
                             standard=o.schedule, convention=o.convention,
                             tumour_dose_ratio=o.tumour_dose_ratio, gtv_cc=o.gtv_cc,
                             target=o.target, band=o.band, model=float(mi),
                             residual=float(mi - o.target),
                             within_band=bool(lo_b <= mi <= hi_b),
                             reoxygenation_gain=float(mi - m0i), verified=o.verified,
                             n_patients=o.n_patients, year=o.year, endpoint=o.endpoint,
                             source=o.source))
    return OutcomeFit(values=values, rows=rows, cost=cost, sites=dict(sites))


def profile_hypoxic_share(site_name: str = "lung", grid: Any = None
                          ) -> list[dict[str, float]]:
    """Profile likelihood of ``clonogen_hypoxia_ratio``: refit the other free parameters at
    each value of ``grid`` (default 0-1.5, the plausible range) on the training rows.

    Returns one dict per grid value: the value, the least-squares cost (half the sum of
    squared residuals, so ``2 (cost - min cost)`` is the likelihood-ratio statistic for Gaussian
    residuals of the stated sigma), the training and validation rows in band, and the
    reoxygenation gain in local control of 48 Gy / 4 and 54 Gy / 3 (training rows T3, T1).
    """
    sites, obs = load_outcomes()
    site = sites[site_name]
    train = [o for o in obs if o.site == site_name and o.role == "training"]
    valid = [o for o in obs if o.site == site_name and o.role == "validation"]
    grid = np.linspace(0.0, 1.5, 16) if grid is None else np.asarray(grid, dtype=float)
    free = tuple(k for k in site.free if k != "clonogen_hypoxia_ratio")
    base = resolve(site_name).values
    out = []
    for r in grid:
        fixed = {"alpha_sd_per_gy": float(base["alpha_sd_per_gy"]), "anoxic_share": 0.0,
                 "clonogens": 1e9, "clonogen_hypoxia_ratio": float(r)}
        vals, c = _fit_site(site, train, free, fixed)
        mt = predict_outcome(site, train, vals)
        mv = predict_outcome(site, valid, vals)
        m0 = predict_outcome(site, train, vals, reoxygenation=False)
        ids = [o.id for o in train]
        row = dict(clonogen_hypoxia_ratio=float(r), cost=c, clonogens=vals["clonogens"],
                   alpha_sd_per_gy=vals["alpha_sd_per_gy"],
                   training_in_band=int(sum(o.band[0] <= m <= o.band[1]
                                            for o, m in zip(train, mt))),
                   validation_in_band=int(sum(o.band[0] <= m <= o.band[1]
                                              for o, m in zip(valid, mv))))
        for rid in ("T1", "T3"):
            if rid in ids:
                i = ids.index(rid)
                row[f"reoxygenation_gain_{rid}"] = float(mt[i] - m0[i])
        out.append(row)
    return out
