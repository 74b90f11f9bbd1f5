"""Parameter distributions, instance overrides (``[uncertainty]``) and reproducible samples.

Every uncertain model parameter gets a distribution derived from its documented plausible range
(:data:`rtopt.model.parameters.SPECS`, docs/model.md section 12) and its resolved value (site, NK
product, cytokine support and ``[tumour.surrogate]`` applied):

* **log-uniform** on ``[low, high]`` when the range spans more than one decade
  (``high / low > 10`` with ``low > 0``; rates such as ``nk_blood_clearance_per_day``
  0.002-2 /d).  Over several orders of magnitude only the order is known; a linear triangle
  would put almost all its mass in the top decade and treat 0.002 and 0.02 as equally unlikely
  as 1.8 and 2.
* **triangular** on ``[low, high]`` with its mode at the resolved value otherwise (the value is
  the best guess, the range its plausible limits; the mode is clipped into the range).
  Ranges that start at 0 (``anoxic_share``, ``nk_treg_penalty``) are triangular too: a log
  scale cannot reach 0.

Parameters that ``rtopt calibrate --outcomes`` fitted to clinical local control for the site
(lung: ``alpha_sd_per_gy``, ``clonogen_hypoxia_ratio``, ``anoxic_share``) are pinned by that
fit: their default is triangular on ``value (1 +- 0.25)`` within the plausible range (an
assumption standing in for the fit's uncertainty; a zero value stays fixed).  Their full
plausible range is a prior the calibration has already narrowed; give an ``[uncertainty]``
entry to use it.

Tumour radiobiology is not in ``SPECS`` (it lives in ``[tumour]``); its ranges are relative to
the instance's value (:data:`TUMOUR_SPECS`): ``alpha_per_gy`` triangular on 0.75-1.25 x value
(the uncertainty of the population mean; the inter-patient spread is ``alpha_sd_per_gy``),
``alpha_beta_gy`` triangular on 0.5-2 x value (lung alpha/beta estimates run from ~5 to ~20 Gy
around Fowler's 10 Gy).

An instance overrides any of them in an ``[uncertainty]`` table, one sub-table per parameter::

    [uncertainty.nk_chemokine_gain]
    distribution = "uniform"          # uniform | loguniform | triangular | normal | lognormal | fixed
    low = 1.0
    high = 10.0

    [uncertainty.alpha_per_gy]
    distribution = "normal"           # truncated to [low, high] (default: the plausible range)
    sd = 0.03                         # mean = mode = the resolved value unless 'mean' is given

    [uncertainty.oer]
    distribution = "fixed"            # held at the resolved value (or 'value')

Bounds must lie inside the parameter's plausible range.  :func:`validate_table` returns every
problem as ``(field.path, message)`` for the instance loader's one-line errors.

Samples are reproducible from a seed: Latin hypercube (``scipy.stats.qmc.LatinHypercube``) or
plain Monte Carlo (``numpy.random.default_rng``) points in the unit cube, mapped through each
distribution's quantile function.  :func:`sample_biology` returns a
:class:`rtopt.model.simulator.Biology` whose parameters are arrays of length ``n``, so
:func:`rtopt.model.simulator.simulate` evaluates one sample per row.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from rtopt.common.errors import RtoptError
from rtopt.model.parameters import SPECS, SurrogateParameters, resolve

# scipy.stats and the simulator (numba) are imported inside the functions that use them: instance
# validation reads this module and needs neither.

__all__ = ["Distribution", "TUMOUR_SPECS", "UNCERTAIN_NAMES", "DISTRIBUTIONS",
           "default_distribution", "distributions_for", "validate_table", "unit_sample",
           "sample_values", "sample_biology", "biology_rows", "UncertaintyError"]

DISTRIBUTIONS = ("uniform", "loguniform", "triangular", "normal", "lognormal", "fixed")
_KEYS = ("distribution", "low", "high", "mode", "mean", "sd", "value")


class UncertaintyError(RtoptError):
    """Invalid uncertainty settings or sample requests (the message says which)."""


@dataclass(frozen=True)
class TumourSpec:
    """A tumour parameter whose plausible range is relative to the instance's value."""

    name: str
    low_factor: float
    high_factor: float
    unit: str
    source: str
    description: str


TUMOUR_SPECS: dict[str, TumourSpec] = {
    "alpha_per_gy": TumourSpec(
        "alpha_per_gy", 0.75, 1.25, "1/Gy",
        "assumption: +-25 % around the instance value for the population-mean alpha (Fowler "
        "0.35 /Gy against the clinical NSCLC fit 0.305 of Jeong et al. 2017)",
        "LQ alpha of oxic tumour cells (population mean)"),
    "alpha_beta_gy": TumourSpec(
        "alpha_beta_gy", 0.5, 2.0, "Gy",
        "assumption: factor 2 either side of the instance value (lung estimates ~5-20 Gy around "
        "Fowler's 10 Gy)", "tumour alpha/beta ratio"),
}

UNCERTAIN_NAMES: tuple[str, ...] = tuple(TUMOUR_SPECS) + tuple(SPECS)
"""Every parameter that can carry a distribution, tumour values first."""


@dataclass(frozen=True)
class Distribution:
    """The distribution of one parameter.

    Attributes
    ----------
    name : str
    kind : str
        One of :data:`DISTRIBUTIONS`.
    low, high : float
        Support (truncation bounds for ``normal`` and ``lognormal``).
    value : float
        The resolved (nominal) value: mode of ``triangular``, mean of ``normal``, median of
        ``lognormal``, the constant of ``fixed``.
    sd : float or None
        Standard deviation (``normal``) or standard deviation of the log (``lognormal``).
    unit, source, reason : str
        Unit, provenance of the range, and why this distribution.
    """

    name: str
    kind: str
    low: float
    high: float
    value: float
    sd: float | None = None
    unit: str = ""
    source: str = ""
    reason: str = ""

    @property
    def fixed(self) -> bool:
        """True when the parameter is not sampled."""
        return self.kind == "fixed" or self.high <= self.low

    def ppf(self, u: Any) -> np.ndarray:
        """Quantile function: map points of the unit interval to parameter values."""
        from scipy import stats

        u = np.asarray(u, dtype=float)
        lo, hi, v = self.low, self.high, self.value
        if self.fixed:
            return np.full(u.shape, v)
        if self.kind == "uniform":
            return lo + u * (hi - lo)
        if self.kind == "loguniform":
            return np.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        if self.kind == "triangular":
            c = (min(max(v, lo), hi) - lo) / (hi - lo)
            return stats.triang.ppf(u, c, loc=lo, scale=hi - lo)
        if self.kind == "normal":
            a, b = (lo - v) / self.sd, (hi - v) / self.sd
            return stats.truncnorm.ppf(u, a, b, loc=v, scale=self.sd)
        if self.kind == "lognormal":
            m = math.log(v)
            a, b = (math.log(lo) - m) / self.sd, (math.log(hi) - m) / self.sd
            return np.exp(stats.truncnorm.ppf(u, a, b, loc=m, scale=self.sd))
        raise UncertaintyError(f"unknown distribution {self.kind!r}")  # pragma: no cover

    def describe(self) -> str:
        """Short text, e.g. ``triangular(0.5, 1, 3)``."""
        if self.fixed:
            return f"fixed({self.value:.4g})"
        if self.kind == "triangular":
            return f"triangular({self.low:.4g}, {self.value:.4g}, {self.high:.4g})"
        if self.kind in ("normal", "lognormal"):
            centre = "mean" if self.kind == "normal" else "median"
            return f"{self.kind}({centre} {self.value:.4g}, sd {self.sd:.4g})"
        return f"{self.kind}({self.low:.4g}, {self.high:.4g})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distribution": self.kind, "value": self.value,
                "low": self.low, "high": self.high, "sd": self.sd, "unit": self.unit,
                "source": self.source, "reason": self.reason, "describe": self.describe()}


def plausible_range(name: str, tumour_value: float | None = None) -> tuple[float, float]:
    """The plausible range of a parameter (tumour ranges need the instance's value)."""
    if name in SPECS:
        return SPECS[name].low, SPECS[name].high
    t = TUMOUR_SPECS[name]
    if tumour_value is None:
        raise UncertaintyError(f"{name}: the plausible range needs the instance's value")
    return t.low_factor * tumour_value, t.high_factor * tumour_value


FITTED_SPREAD = 0.25
"""Half-width, relative to the value, of the default range of an outcome-fitted parameter."""


def default_distribution(name: str, value: float, fitted: bool = False) -> Distribution:
    """The documented default distribution of ``name`` around its resolved ``value``.

    Log-uniform on the plausible range when it spans more than one decade (``low > 0``),
    otherwise triangular with the mode at ``value`` (see the module docstring for why).
    ``fitted``: the value was fitted to clinical outcomes for this site; the range narrows to
    ``value (1 +- FITTED_SPREAD)`` within the plausible range, triangular.
    """
    lo, hi = plausible_range(name, value)
    if name in SPECS:
        s = SPECS[name]
        unit, source = s.unit, s.source
    else:
        unit, source = TUMOUR_SPECS[name].unit, TUMOUR_SPECS[name].source
    if fitted:
        lo = max(lo, (1 - FITTED_SPREAD) * value)
        hi = min(hi, (1 + FITTED_SPREAD) * value)
        return Distribution(name, "triangular", lo, hi, float(value), unit=unit,
                            source="fitted to the clinical outcomes (rtopt calibrate --outcomes)",
                            reason="the outcome fit pins the value; +-25 % stands in for the "
                                   "fit's uncertainty (assumption)")
    if lo > 0 and hi / lo > 10:
        return Distribution(name, "loguniform", lo, hi, float(value), unit=unit, source=source,
                            reason="range spans more than a decade: only its order is known")
    return Distribution(name, "triangular", lo, hi, float(value), unit=unit, source=source,
                        reason="best guess at the value, plausible limits at the range ends")


def _nominal(problem_or_instance: Any) -> tuple[Any, dict[str, float]]:
    """The instance and every uncertain parameter's resolved value."""
    inst = getattr(problem_or_instance, "instance", problem_or_instance)
    resolved = inst.surrogate_parameters()
    vals = dict(resolved.values)
    vals["alpha_per_gy"] = float(inst.tumour.alpha_per_gy)
    vals["alpha_beta_gy"] = float(inst.tumour.alpha_beta_gy)
    fitted = {k for k, src in resolved.provenance.items() if "fitted to the clinical" in src}
    return inst, vals, fitted


def _table(inst: Any) -> Mapping[str, Mapping[str, Any]]:
    return getattr(inst, "uncertainty", None) or {}


def generic_distributions(site: str = "generic", product: str | None = "il15_expanded",
                          alpha_per_gy: float = 0.35,
                          alpha_beta_gy: float = 10.0) -> dict[str, Distribution]:
    """Default distributions around a site preset (no instance file; lung tumour values)."""
    vals = dict(resolve(site, product).values)
    vals.update(alpha_per_gy=alpha_per_gy, alpha_beta_gy=alpha_beta_gy)
    return {n: default_distribution(n, vals[n]) for n in UNCERTAIN_NAMES}


def distributions_for(problem_or_instance: Any) -> dict[str, Distribution]:
    """Every uncertain parameter's distribution for an instance (defaults, then ``[uncertainty]``).

    Parameters
    ----------
    problem_or_instance : rtopt.problem.problem.Problem or rtopt.problem.instance.Instance

    Returns
    -------
    dict
        ``{name: Distribution}`` in :data:`UNCERTAIN_NAMES` order.
    """
    inst, vals, fitted = _nominal(problem_or_instance)
    out = {n: default_distribution(n, vals[n], n in fitted) for n in UNCERTAIN_NAMES}
    # values a problem sets from the patient's own data (e.g. the blood dose of its plan):
    # narrowed around that value like an outcome fit, not the population default
    for name, value in (getattr(problem_or_instance, "patient_parameters", None) or {}).items():
        if name in out:
            lo, hi = plausible_range(name, value)
            out[name] = replace(
                out[name], kind="triangular", low=max(lo, (1 - FITTED_SPREAD) * value),
                high=min(hi, (1 + FITTED_SPREAD) * value), value=float(value),
                source="set from the patient's plan", reason=(
                    "the patient's plan sets the value; +-25 % stands in for the "
                    "uncertainty of its inputs (assumption)"))
    for name, spec in _table(inst).items():
        out[name] = _override(out[name], dict(spec))
    return out


def _override(base: Distribution, spec: dict[str, Any]) -> Distribution:
    kind = spec["distribution"]
    lo = float(spec.get("low", base.low))
    hi = float(spec.get("high", base.high))
    value = float(spec.get("value", spec.get("mode", spec.get("mean", base.value))))
    return replace(base, kind=kind, low=lo, high=hi, value=value,
                   sd=None if spec.get("sd") is None else float(spec["sd"]),
                   reason="instance [uncertainty] table")


def _did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    m = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return m[0] if m else None


def _isnum(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_table(table: Any, tumour: Any = None) -> list[tuple[str, str]]:
    """Problems of an ``[uncertainty]`` table as ``(path relative to the table, message)``.

    Parameters
    ----------
    table : dict
        ``{parameter: {distribution, low, high, mode, mean, sd, value}}``.
    tumour : rtopt.problem.instance.Tumour, optional
        For the relative ranges of ``alpha_per_gy`` and ``alpha_beta_gy`` (skipped without it).
    """
    if not isinstance(table, dict):
        return [("", "expected a table of parameters, e.g. [uncertainty.nk_chemokine_gain]")]
    probs: list[tuple[str, str]] = []
    for name, spec in table.items():
        if name not in UNCERTAIN_NAMES:
            hint = _did_you_mean(name, UNCERTAIN_NAMES)
            probs.append((name, f"unknown parameter {name!r}"
                          + (f"; did you mean {hint!r}?" if hint else
                             " (see `rtopt model params`)")))
            continue
        if not isinstance(spec, dict):
            probs.append((name, "expected a table with at least 'distribution'"))
            continue
        for k in spec:
            if k not in _KEYS:
                hint = _did_you_mean(k, _KEYS)
                probs.append((f"{name}.{k}", f"unknown key {k!r}"
                              + (f"; did you mean {hint!r}?" if hint else
                                 f" (known keys: {', '.join(_KEYS)})")))
        kind = spec.get("distribution")
        if kind is None:
            probs.append((f"{name}.distribution", "missing required key"))
            continue
        if kind not in DISTRIBUTIONS:
            hint = _did_you_mean(str(kind), DISTRIBUTIONS)
            probs.append((f"{name}.distribution", f"unknown distribution {kind!r}"
                          + (f"; did you mean {hint!r}?" if hint else "")
                          + f" (one of {', '.join(DISTRIBUTIONS)})"))
            continue
        bad = [k for k in ("low", "high", "mode", "mean", "sd", "value")
               if k in spec and not _isnum(spec[k])]
        for k in bad:
            probs.append((f"{name}.{k}", f"expected a finite number, got {spec[k]!r}"))
        if bad:
            continue
        tv = None
        if name in TUMOUR_SPECS:
            if tumour is None:
                continue
            tv = float(getattr(tumour, name))
        plo, phi = plausible_range(name, tv)
        unit = SPECS[name].unit if name in SPECS else TUMOUR_SPECS[name].unit
        unit = "" if unit == "1" else f" {unit}"
        for k in ("low", "high", "mode", "mean", "value"):
            if k in spec and not plo - 1e-12 <= spec[k] <= phi + 1e-12:
                probs.append((f"{name}.{k}", f"{spec[k]!r} is outside the plausible range "
                              f"[{plo:.6g}, {phi:.6g}]{unit}"))
        lo, hi = spec.get("low", plo), spec.get("high", phi)
        if kind != "fixed" and lo >= hi:
            probs.append((f"{name}.low", f"low {lo!r} must be below high {hi!r}"))
        for k in ("mode", "mean", "value"):
            if kind != "fixed" and k in spec and not lo <= spec[k] <= hi:
                probs.append((f"{name}.{k}", f"{spec[k]!r} lies outside [low, high] = "
                              f"[{lo!r}, {hi!r}]"))
        if kind in ("normal", "lognormal"):
            if "sd" not in spec:
                probs.append((f"{name}.sd", f"required for distribution = {kind!r}"))
            elif spec["sd"] <= 0:
                probs.append((f"{name}.sd", "must be > 0"))
        elif "sd" in spec:
            probs.append((f"{name}.sd", f"only used by normal and lognormal, not {kind!r}"))
        if kind in ("loguniform", "lognormal") and lo <= 0:
            probs.append((f"{name}.low", f"must be > 0 for distribution = {kind!r}"))
        if kind == "lognormal" and spec.get("mean", spec.get("value", 1.0)) <= 0:
            probs.append((f"{name}.mean", "must be > 0 for a lognormal"))
    return probs


def unit_sample(d: int, n: int, seed: int, method: str = "lhs") -> np.ndarray:
    """``n`` points of the ``d``-dimensional unit cube, reproducible from ``seed``.

    ``lhs``: Latin hypercube (``scipy.stats.qmc.LatinHypercube``), each margin stratified into
    ``n`` equal slices; ``random``: independent uniforms from ``numpy.random.default_rng``.
    """
    if n < 1:
        raise UncertaintyError(f"number of samples must be >= 1, got {n}")
    if d == 0:
        return np.zeros((n, 0))
    if method == "lhs":
        from scipy.stats import qmc

        return qmc.LatinHypercube(d=d, seed=np.random.default_rng(seed)).random(n)
    if method == "random":
        return np.random.default_rng(seed).random((n, d))
    raise UncertaintyError(f"unknown sampling method {method!r} (lhs or random)")


def sample_values(dists: Mapping[str, Distribution], n: int, seed: int,
                  method: str = "lhs") -> dict[str, np.ndarray]:
    """``{name: (n,) array}`` for every distribution (fixed ones repeated)."""
    free = [k for k, d in dists.items() if not d.fixed]
    u = unit_sample(len(free), n, seed, method)
    out = {k: np.full(n, d.value) for k, d in dists.items() if d.fixed}
    for j, k in enumerate(free):
        out[k] = dists[k].ppf(u[:, j])
    return {k: out[k] for k in dists}


def values_from_unit(dists: Mapping[str, Distribution], names: Sequence[str],
                     u: np.ndarray) -> dict[str, np.ndarray]:
    """Map unit-cube points (columns in ``names`` order) through the distributions; the other
    parameters stay at their resolved values."""
    n = u.shape[0]
    out = {k: np.full(n, d.value) for k, d in dists.items()}
    for j, k in enumerate(names):
        out[k] = dists[k].ppf(u[:, j])
    return out


def biology_with(base: Any, values: Mapping[str, Any]) -> Any:
    """A :class:`rtopt.model.simulator.Biology` with some parameters replaced by (array) values."""
    tum = {k: values[k] for k in TUMOUR_SPECS if k in values}
    sur = {k: v for k, v in values.items() if k in SPECS}
    params = SurrogateParameters({**base.params.values, **sur},
                                 {**base.params.provenance, **{k: "sample" for k in sur}})
    return replace(base, params=params, **tum)


def sample_biology(problem_or_instance: Any, n: int, seed: int = 0, method: str = "lhs",
                   distributions: Mapping[str, Distribution] | None = None) -> Any:
    """A :class:`rtopt.model.simulator.Biology` with ``n`` parameter samples (arrays of length ``n``).

    Parameters
    ----------
    problem_or_instance : Problem or Instance
    n : int
        Number of samples (>= 1).
    seed : int
        Seed of the sampler; the same seed gives the same samples.
    method : str
        ``lhs`` (Latin hypercube, default) or ``random``.
    distributions : mapping, optional
        Default :func:`distributions_for` the instance.

    Returns
    -------
    rtopt.model.simulator.Biology
        Simulate it with ``n`` schedule rows: row ``i`` uses sample ``i``.
    """
    from rtopt.model.simulator import Biology

    dists = distributions or distributions_for(problem_or_instance)
    inst = getattr(problem_or_instance, "instance", problem_or_instance)
    base = getattr(problem_or_instance, "biology", None) or Biology.from_instance(inst)
    return biology_with(base, sample_values(dists, n, seed, method))


def biology_rows(bio: Any, idx: np.ndarray, n: int) -> Any:
    """The rows ``idx`` of a sampled Biology whose arrays have length ``n`` (others kept)."""
    def take(v: Any) -> Any:
        a = np.asarray(v)
        return a[idx] if a.ndim == 1 and a.shape[0] == n else v

    params = SurrogateParameters({k: take(v) for k, v in bio.params.values.items()},
                                 bio.params.provenance)
    return replace(bio, params=params, alpha_per_gy=take(bio.alpha_per_gy),
                   alpha_beta_gy=take(bio.alpha_beta_gy), clonogens=take(bio.clonogens))
