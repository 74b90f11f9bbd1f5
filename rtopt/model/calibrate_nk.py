"""NK kinetics from human data: the NK observation table and its fit (docs/model.md section 13).

``rtopt/model/data/nk_observations.toml`` holds what people show about NK cells: blood
persistence of infused products, homing, the endogenous pool's count and turnover,
radiosensitivity, the dose to circulating blood and circulating NK during RT.  Each row names
the model quantity it is compared with (:func:`predict_nk`); :func:`calibrate_nk` fits the
parameters the table's ``fit`` list names by bounded, weakly regularised least squares (the
scheme of :func:`rtopt.model.calibrate.calibrate`: ``(model - target) / sigma`` with sigma half
the band, on a log10 scale for ``scale = "log"`` rows; a hinge residual outside every band;
prior residuals of weight :data:`PRIOR_WEIGHT` towards the starting values) and reports every
row with its residual and whether it lies in its band.  Rows with ``verified = false`` would be
listed but never fitted (the shipped table has none).

What the table cannot identify stays an assumption and says so
(:data:`rtopt.model.parameters.BASIS`): no human study reports tumour NK density over time,
tumour per-cent-of-dose, or per-cell killing in a tumour.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rtopt.model.circulation import circulating_nk
from rtopt.model.parameters import CYTOKINE_MODIFIERS, SPECS, SurrogateParameters, resolve

__all__ = ["NKObservation", "load_nk_observations", "predict_nk", "calibrate_nk", "NKFit",
           "write_nk_calibrated", "schedule_doses", "PRIOR_WEIGHT"]

PRIOR_WEIGHT = 0.05
"""Weight of the prior residuals relative to one band-width of misfit (as the hypoxia fit)."""


@dataclass(frozen=True)
class NKObservation:
    """One row of the NK observation table (fields as in the TOML header)."""

    id: str
    category: str
    product: str
    cytokine_support: str
    quantity: str
    band: tuple[float, float]
    scale: str
    source: str
    verified: bool
    endpoint: str = ""
    clinical_product: str = ""
    cell_dose: str = ""
    n_patients: int = -1
    spread: str = ""
    note: str = ""
    target: float | None = None
    time_days: float | None = None
    parameter: str | None = None
    site: str = "generic"
    schedule: str | None = None
    versus: str | None = None
    blood_dose_scale: float = 1.0


@dataclass(frozen=True)
class NKTable:
    """The table: its rows and the parameters it fits (``product.parameter`` or ``parameter``)."""

    rows: list[NKObservation]
    fit: tuple[str, ...] = field(default_factory=tuple)


def load_nk_observations(path: str | Path | None = None) -> NKTable:
    """Read the NK observation table (the packaged one by default)."""
    if path is None:
        text = resources.files("rtopt.model.data").joinpath("nk_observations.toml").read_text()
    else:
        text = Path(path).read_text()
    data = tomllib.loads(text)
    keys = NKObservation.__dataclass_fields__
    rows = []
    for r in data["row"]:
        kw = {k: v for k, v in r.items() if k in keys}
        kw["band"] = tuple(float(x) for x in r["band"])
        rows.append(NKObservation(**kw))
    return NKTable(rows=rows, fit=tuple(data.get("fit", ())))


_SCHEDULE = re.compile(r"^\s*([\d.]+)\s*Gy\s*x\s*(\d+)\s*,\s*(weekdays|daily)\s*$")


def schedule_doses(text: str) -> np.ndarray:
    """Daily doses of ``"2 Gy x 25, weekdays"`` (from a Monday, day 0) or ``"..., daily"``."""
    m = _SCHEDULE.match(text)
    if not m:
        raise ValueError(f"cannot read schedule {text!r}; expected e.g. '2 Gy x 25, weekdays'")
    d, n, when = float(m.group(1)), int(m.group(2)), m.group(3)
    days = []
    j = 0
    while len(days) < n:
        if when == "daily" or j % 7 < 5:
            days.append(j)
        j += 1
    row = np.zeros(days[-1] + 1)
    row[days] = d
    return row


def _params(obs: NKObservation, fitted: dict[str, float]) -> SurrogateParameters:
    """Resolved parameters of a row: its site and product, then the fitted values."""
    product = obs.product if obs.product not in ("endogenous", "generic") else None
    support = obs.cytokine_support
    p = resolve(obs.site, product, support)
    over = {}
    for key, v in fitted.items():
        prod, _, name = key.rpartition(".")
        if prod and prod != product:
            continue
        # a product's fitted value is the value without cytokine support
        over[name] = v * CYTOKINE_MODIFIERS[support].get(name, 1.0) if prod else v
    return p.with_values(**over) if over else p


def _single_infusion(p: SurrogateParameters, days: int,
                     tumour: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Blood and tumour NK after one infusion on day 0 without RT (the simulator's states).

    ``tumour`` False: a patient without a solid tumour to enter (trafficking rate 0), as in
    the persistence rows (haematological malignancies), so that their blood loss is the
    product's clearance alone."""
    from rtopt.model.simulator import Biology, simulate

    if not tumour:
        p = p.with_values(nk_infiltration_per_day=0.0)
    bio = Biology(alpha_per_gy=0.35, alpha_beta_gy=10.0, clonogens=1e8, hypoxic_fraction=0.2,
                  params=p, nk=True)
    u = np.zeros(days + 1)
    u[0] = 1.0
    sim = simulate(bio, np.zeros(days + 1), u, steps_per_day=2, trajectory=True,
                   population=False, counterfactual=False)
    return sim.trajectory["nk_blood"][0][::2], sim.trajectory["nk_tumour"][0][::2]


def _circulating(p: SurrogateParameters, doses: np.ndarray):
    return circulating_nk(doses, p.nk_blood_dose_fraction, p.nk_endogenous_d0_gy,
                          p.nk_endogenous_turnover_per_day)


def predict_nk(obs: NKObservation, fitted: dict[str, float] | None = None) -> float:
    """Model value of one row under the presets and the ``fitted`` values.

    ``fitted`` maps ``product.parameter`` (a product preset's value without cytokine support)
    or ``parameter`` (every row) to a value.
    """
    p = _params(obs, fitted or {})
    q = obs.quantity
    if q == "infused_blood_ratio":
        t = int(round(obs.time_days))
        return float(_single_infusion(p, t, tumour=False)[0][t])
    if q == "tumour_peak_share":
        return float(_single_infusion(p, 28)[1].max())
    if q == "parameter":
        return float(p.values[obs.parameter])
    if q == "circulating_nk_end":
        D = np.append(schedule_doses(obs.schedule), 0.0)  # measured the day after the course
        return float(_circulating(p, D).end[0])
    if q == "circulating_nk_nadir_ratio":
        a, b = schedule_doses(obs.schedule), schedule_doses(obs.versus)
        # the schedule's blood dose share relative to the versus arm's: V_in grows with the
        # irradiated volume (rtopt.model.circulation.blood_dose_fraction_from_volume)
        pa = p.with_values(nk_blood_dose_fraction=p.nk_blood_dose_fraction
                           * obs.blood_dose_scale)
        return float(_circulating(pa, a).nadir[0] / _circulating(p, b).nadir[0])
    raise ValueError(f"{obs.id}: unknown quantity {q!r}")


def _sigma(obs: NKObservation) -> float:
    lo, hi = obs.band
    if obs.scale == "log":
        return max((np.log10(hi) - np.log10(lo)) / 2.0, 1e-3)
    return max((hi - lo) / 2.0, 1e-6)


def _residual(obs: NKObservation, m: float) -> float | None:
    if obs.target is None:
        return None
    if obs.scale == "log":
        return float(np.log10(max(m, 1e-300)) - np.log10(obs.target))
    return float(m - obs.target)


def _hinge(obs: NKObservation, m: float) -> float:
    lo, hi = obs.band
    if obs.scale == "log":
        lm = np.log10(max(m, 1e-300))
        return max(np.log10(lo) - lm, 0.0) + max(lm - np.log10(hi), 0.0) if lo > 0 else \
            max(lm - np.log10(hi), 0.0)
    return max(lo - m, 0.0) + max(m - hi, 0.0)


PRIORS: dict[str, float] = {
    "il2_activated.nk_blood_clearance_per_day": 0.45,
    "memory_like_il12_15_18.nk_blood_clearance_per_day": 0.12,
    "car_nk_il15.nk_blood_clearance_per_day": 0.01,
    "il15_expanded.nk_blood_clearance_per_day": 0.30,
    "nk_endogenous_turnover_per_day": 0.069,
}
"""Start and prior of each fitted value: the hand-set presets before the fit (half-lives read
from the sources) and Zhang et al. 2007's 0.069 /d; the fit does not depend on the shipped
(fitted) values, so re-running it reproduces them."""


def _start(key: str) -> float:
    if key in PRIORS:
        return PRIORS[key]
    prod, _, name = key.rpartition(".")
    return float(SPECS[name].default)


_CIRCULATING = ("nk_endogenous_turnover_per_day", "nk_blood_dose_fraction", "nk_endogenous_d0_gy")


def depends(obs: NKObservation, key: str) -> bool:
    """Whether a row's model value depends on the fitted value ``key``."""
    prod, _, name = key.rpartition(".")
    if prod and prod != obs.product:
        return False
    if obs.quantity == "parameter":
        return obs.parameter == name
    if obs.quantity == "infused_blood_ratio":
        return name == "nk_blood_clearance_per_day"
    if obs.quantity == "tumour_peak_share":
        return name in ("nk_blood_clearance_per_day", "nk_infiltration_per_day",
                        "nk_tumour_loss_per_day")
    return name in _CIRCULATING


def _role(obs: NKObservation, free: list[str]) -> str:
    """``fit`` (its residual enters the fit of a free value), ``source`` (a parameter row that
    sets an unfitted value directly), ``check`` (held by its band only, or not verified)."""
    if obs.target is None or not obs.verified:
        return "check"
    if any(depends(obs, k) for k in free):
        return "fit"
    return "source" if obs.quantity == "parameter" else "check"


@dataclass(frozen=True)
class NKFit:
    """Fitted values (``product.parameter`` or ``parameter``) and every row's fit."""

    values: dict[str, float]
    rows: list[dict[str, Any]]
    cost: float

    def all_within_band(self) -> bool:
        """True if every row's model value lies in its band."""
        return all(r["within_band"] for r in self.rows)


def calibrate_nk(table: NKTable | None = None) -> NKFit:
    """Fit the table's ``fit`` parameters to its rows and report every row (see module doc)."""
    from scipy.optimize import least_squares

    table = table if table is not None else load_nk_observations()
    free = list(table.fit)
    names = [k.rpartition(".")[2] for k in free]
    lo = np.array([SPECS[n].low for n in names])
    hi = np.array([SPECS[n].high for n in names])
    x0 = np.array([_start(k) for k in free])
    logs = np.array([lo_ > 0 and hi_ / lo_ > 10 for lo_, hi_ in zip(lo, hi)])
    # rates spanning decades are fitted on a log scale
    to_u = lambda x: np.where(logs, np.log10(x), x)           # noqa: E731
    from_u = lambda u: np.where(logs, 10.0 ** u, u)          # noqa: E731
    ulo, uhi, u0 = to_u(lo), to_u(hi), to_u(x0)
    rows = [r for r in table.rows if r.verified]

    def fun(u):
        vals = dict(zip(free, from_u(u)))
        res = []
        for r in rows:
            m = predict_nk(r, vals)
            s = _sigma(r)
            e = _residual(r, m)
            if e is not None:
                res.append(e / s)
            res.append(3.0 * _hinge(r, m) / s)
        res.extend(PRIOR_WEIGHT * (u - u0) / (uhi - ulo))
        return np.array(res)

    sol = least_squares(fun, np.clip(u0, ulo, uhi), bounds=(ulo, uhi), diff_step=1e-4,
                        xtol=1e-10, ftol=1e-10)
    values = {k: float(np.format_float_positional(v, precision=4, fractional=False,
                                                  unique=True, trim="-"))
              for k, v in zip(free, from_u(sol.x))}
    out = []
    for r in table.rows:
        m = predict_nk(r, values)
        lo_b, hi_b = r.band
        out.append(dict(id=r.id, category=r.category, product=r.product,
                        support=r.cytokine_support, quantity=r.quantity,
                        parameter=r.parameter, time_days=r.time_days, target=r.target,
                        band=r.band, scale=r.scale, model=m, residual=_residual(r, m),
                        within_band=bool(lo_b <= m <= hi_b), verified=r.verified,
                        role=_role(r, free),
                        endpoint=r.endpoint, source=r.source))
    return NKFit(values=values, rows=out, cost=float(sol.cost))


def write_nk_calibrated(fit: NKFit, path: str | Path | None = None) -> Path:
    """Write the fitted values to ``rtopt/model/data/nk_calibrated.py`` (the presets read it)."""
    target = Path(path) if path else Path(__file__).parent / "data" / "nk_calibrated.py"
    lines = ['"""Generated by `rtopt calibrate --nk --write`; do not edit by hand."""',
             "NK_FITTED: dict[str, float] = {"]
    for k, v in fit.values.items():
        lines.append(f"    {k!r}: {v!r},")
    lines.append("}")
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(target)
    return target
