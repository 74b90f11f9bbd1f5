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

from rtopt.model.parameters import SPECS, resolve
from rtopt.model.simulator import Biology, simulate

__all__ = ["Observation", "load_observations", "predict", "calibrate", "CalibrationResult",
           "FIT_PLAN", "write_calibrated", "OutcomeObservation", "OutcomeSite", "load_outcomes",
           "predict_outcome", "calibrate_outcomes", "OutcomeFit"]

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
        from rtopt.model.data.calibrated import OUTCOME as _old

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

    def fixed(self) -> dict[str, Any]:
        """The fixed tumour values as ``{field: value}`` (instance ``[tumour]`` keys)."""
        return {"alpha_per_gy": self.alpha_per_gy, "alpha_beta_gy": self.alpha_beta_gy,
                "hypoxic_fraction": self.hypoxic_fraction, "survival_model": self.survival_model,
                "repopulation_kickoff_days": self.repopulation_kickoff_days,
                "potential_doubling_days": self.potential_doubling_days}


@dataclass(frozen=True)
class OutcomeObservation:
    """One row of the clinical outcome table (local control of a standard schedule)."""

    id: str
    site: str
    doses_gy: tuple[float, ...]
    days: tuple[int, ...]
    target: float
    band: tuple[float, float]
    source: str

    def dose_row(self) -> np.ndarray:
        """Daily dose array from day 0 to the last fraction."""
        row = np.zeros(max(self.days) + 1)
        for d, day in zip(self.doses_gy, self.days):
            row[day] += d
        return row

    def describe(self) -> str:
        """``54 Gy / 3`` style label."""
        return f"{sum(self.doses_gy):g} Gy / {len(self.doses_gy)}"


OUTCOME_BOUNDS = {"clonogens": (1e5, 1e11)}
"""Fit range of the clonogen number (the surrogate parameters use their plausible range)."""


def load_outcomes(path: str | Path | None = None
                  ) -> tuple[dict[str, OutcomeSite], list[OutcomeObservation]]:
    """Read the clinical outcome table (the packaged one by default)."""
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
                               free=tuple(v["free"]))
             for name, v in data.get("site", {}).items()}
    obs = [OutcomeObservation(id=o["id"], site=o["site"], doses_gy=tuple(o["doses_gy"]),
                              days=tuple(o["days"]), target=o["target"], band=tuple(o["band"]),
                              source=o["source"])
           for o in data["outcome"]]
    return sites, obs


def _outcome_biology(site: OutcomeSite, values: dict[str, float]):
    from rtopt.model.parameters import resolve as _resolve

    surrogate = {k: v for k, v in values.items() if k in SPECS}
    params = _resolve(site.site).with_values(**surrogate)
    return Biology(alpha_per_gy=site.alpha_per_gy, alpha_beta_gy=site.alpha_beta_gy,
                   clonogens=values["clonogens"], hypoxic_fraction=site.hypoxic_fraction,
                   params=params, survival_model=site.survival_model,
                   repopulation_kickoff_days=site.repopulation_kickoff_days,
                   potential_doubling_days=site.potential_doubling_days, nk=False)


def predict_outcome(site: OutcomeSite, obs: list[OutcomeObservation],
                    values: dict[str, float]) -> np.ndarray:
    """Local control of each observation's schedule (radiotherapy alone) under ``values``."""
    rows = [o.dose_row() for o in obs]
    width = max(r.size for r in rows)
    D = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        D[i, :r.size] = r
    # 2 sub-steps suffice: without NK cells the outcome depends only on the hypoxic fraction
    # at the fractions, whose demand and vascular propagators are exact for any sub-step
    return simulate(_outcome_biology(site, values), D, steps_per_day=2).local_control


@dataclass(frozen=True)
class OutcomeFit:
    """Outcome-fitted values per site and the fit of every outcome observation."""

    values: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    cost: dict[str, float]
    sites: dict[str, OutcomeSite]

    def all_within_band(self) -> bool:
        """True if every observation's model value lies in its band."""
        return all(r["within_band"] for r in self.rows)


def calibrate_outcomes(sites: dict[str, OutcomeSite] | None = None,
                       observations: list[OutcomeObservation] | None = None) -> OutcomeFit:
    """Fit each site's free outcome parameters to its local-control table.

    Bounded least squares on ``(LC - target) / sigma`` (sigma = half the band) plus hinge
    residuals outside the band (weight 3, as for the hypoxia fit).  The clonogen number is
    fitted on a log10 scale.  The hypoxia (FMISO) presets are not touched: they come from
    :func:`calibrate` and enter here unchanged.
    """
    from scipy.optimize import least_squares

    if sites is None or observations is None:
        s0, o0 = load_outcomes()
        sites = s0 if sites is None else sites
        observations = o0 if observations is None else observations
    values: dict[str, dict[str, float]] = {}
    cost: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for name, site in sites.items():
        obs = [o for o in observations if o.site == name]
        if not obs:
            continue
        free = site.free
        lo, hi, x0 = [], [], []
        base = resolve(name).values
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
            v = {k: float(base[k]) for k in ("alpha_sd_per_gy", "clonogen_hypoxia_ratio",
                                              "anoxic_share")}
            v["clonogens"] = 1e9
            for k, xi in zip(free, x):
                v[k] = float(10.0 ** xi) if k == "clonogens" else float(xi)
            return v

        def fun(x: np.ndarray) -> np.ndarray:
            m = predict_outcome(site, obs, unpack(x))
            hinge = (np.maximum(band[:, 0] - m, 0) + np.maximum(m - band[:, 1], 0)) / sig * 3
            return np.concatenate([(m - target) / sig, hinge])

        # a few starts: the local-control surface has flat regions (all 0 or all 1)
        best = None
        for start in (x0, 0.5 * (lo_a + hi_a)):
            sol = least_squares(fun, np.clip(start, lo_a, hi_a), bounds=(lo_a, hi_a),
                                x_scale=hi_a - lo_a, diff_step=1e-3, xtol=1e-10, ftol=1e-10)
            if best is None or sol.cost < best.cost:
                best = sol
        vals = unpack(best.x)
        vals = {k: (float(f"{v:.4g}") if k == "clonogens" else float(np.round(v, 5)))
                for k, v in vals.items() if k in free}
        values[name] = vals
        cost[name] = float(best.cost)
        full = unpack(np.array([np.log10(vals[k]) if k == "clonogens" else vals[k]
                                for k in free]))
        m = predict_outcome(site, obs, full)
        for o, mi in zip(obs, m):
            lo_b, hi_b = o.band
            rows.append(dict(id=o.id, site=name, schedule=o.describe(), target=o.target,
                             band=o.band, model=float(mi), residual=float(mi - o.target),
                             within_band=bool(lo_b <= mi <= hi_b), source=o.source))
    return OutcomeFit(values=values, rows=rows, cost=cost, sites=dict(sites))
