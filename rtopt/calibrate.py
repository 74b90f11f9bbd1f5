"""Calibration of the hypoxia presets to the observation table (MODEL.md sections 3 and 7).

Regularised, bounded least squares (``scipy.optimize.least_squares``): residuals are
``(model - target) / sigma`` for observations with a target value (sigma = half the band width),
hinge residuals ``distance outside band / sigma`` for every band (direction-only observations
have only these), and weak prior residuals ``(theta - prototype) / range`` that keep
unidentified parameters at their MODEL.md prototype values.  Sites are fitted in order: lung
first (O1-O3), then prostate (O4) and head and neck (O5) starting from the lung result, each with
its own free parameters.

The observation data live in ``rtopt/data/observations.toml``.  Hypoxic *volume* ratios (O5) are
compared with hypoxic *fraction* ratios: tumour shrinkage is ignored, a documented simplification.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rtopt.parameters import SPECS, resolve
from rtopt.simulator import Biology, simulate

__all__ = ["Observation", "load_observations", "predict", "calibrate", "CalibrationResult",
           "FIT_PLAN", "write_calibrated"]

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
        text = resources.files("rtopt.data").joinpath("observations.toml").read_text()
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
    params = resolve("generic").with_values(**values)
    bio = Biology(alpha_per_gy=0.35, alpha_beta_gy=10.0, clonogens=1e8,
                  hypoxic_fraction=obs.baseline_hypoxic_fraction, params=params, nk=False)
    h = float(simulate(bio, obs.dose_row(), steps_per_day=2).hypoxic_fraction_end[0])
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


def write_calibrated(result: CalibrationResult, path: str | Path | None = None) -> Path:
    """Write the fitted values to ``rtopt/data/calibrated.py`` (the presets read it)."""
    target = Path(path) if path else Path(__file__).parent / "data" / "calibrated.py"
    lines = ['"""Generated by `rtopt calibrate --write`; do not edit by hand."""',
             "CALIBRATED: dict[str, dict[str, float]] = {"]
    defaults = resolve("generic").values
    for site, vals in result.values.items():
        vals = {k: v for k, v in vals.items() if v != defaults[k]}
        lines.append(f"    {site!r}: {{")
        for k, v in vals.items():
            lines.append(f"        {k!r}: {v!r},")
        lines.append("    },")
    lines.append("}")
    lines.append("FITTED: dict[str, tuple[str, ...]] = {")
    for site, start_from, free in FIT_PLAN:
        lines.append(f"    {site!r}: {tuple(free)!r},  # starting from {start_from}")
    lines.append("}")
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(target)
    return target
