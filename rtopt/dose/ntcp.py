"""Normal-tissue complication probability (NTCP) models on DVHs.

Every model is applied to the DVH converted to the model's dose scale: EQD2 of each bin for the
plan's number of fractions and the parameter set's alpha/beta (via :mod:`rtopt.model.radiobiology`),
or, for a set fitted on one schedule (``reference_fractions = N``), the LQ-isoeffective total
dose of each bin in ``N`` fractions.  Bin volumes ``v_i`` are relative (sum 1).

``lkb`` (Lyman-Kutcher-Burman)
    ``gEUD = (sum v_i D_i^(1/n))^n``, ``NTCP = Phi((gEUD - TD50) / (m TD50))``.
``logistic_eud`` (Niemierko 1999)
    ``EUD = (sum v_i D_i^a)^(1/a)``, ``NTCP = 1 / (1 + (TD50 / EUD)^(4 gamma50))``.
``relative_seriality`` (Kallman et al. 1992)
    ``P(D) = 2^(-exp(e gamma (1 - D / D50)))``,
    ``NTCP = (1 - prod_i (1 - P(D_i)^s)^(v_i))^(1 / s)``.
``log_logistic``, ``probit``, ``logit``
    Dose-response of one DVH metric ``X`` (e.g. ``Dmean``, ``Dmax``): ``1 / (1 + (TD50 /
    X)^k)``, ``Phi((X - TD50) / (m TD50))``, ``1 / (1 + exp(-(b0 + b1 X)))``.

Parameter sets ship in ``rtopt/dose/data/ntcp_parameters.toml`` with their sources
(:func:`parameter_sets`); docs/dose.md section 4 lists them.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from functools import lru_cache
from importlib import resources

import numpy as np

from rtopt.model import radiobiology
from rtopt.dose import DoseError
from rtopt.dose.dvh import DVH, evaluate_metric

__all__ = ["geud", "lkb", "logistic_eud", "relative_seriality", "ParameterSet",
           "parameter_sets", "get_parameter_set", "ntcp", "model_dose_dvh",
           "model_scale_edges", "ntcp_of_model_dvh", "MODELS"]

MODELS = ("lkb", "logistic_eud", "relative_seriality", "log_logistic", "probit", "logit")


def _phi(t: float) -> float:
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def geud(doses_gy, volumes, a: float) -> float:
    """Generalised equivalent uniform dose ``(sum v_i D_i^a)^(1/a)`` (Gy).

    Parameters
    ----------
    doses_gy : array_like
        Dose of each bin (Gy), ``>= 0``.
    volumes : array_like
        Volume of each bin (any unit; normalised to sum 1).
    a : float
        Volume-effect exponent (``a = 1/n`` of LKB), non-zero.
    """
    d = np.asarray(doses_gy, dtype=float)
    v = np.asarray(volumes, dtype=float)
    tot = v.sum()
    if not tot > 0:
        raise DoseError("gEUD of an empty DVH")
    if a == 0:
        raise DoseError("gEUD exponent a must be non-zero")
    v = v / tot
    mask = v > 0
    d, v = d[mask], v[mask]
    if a < 0 and np.any(d == 0):
        return 0.0
    # scale by the maximum so large exponents (n -> 0, serial organs) do not overflow
    top = float(d.max())
    if top == 0:
        return 0.0
    return top * float(np.sum(v * (d / top) ** a)) ** (1.0 / a)


def lkb(doses_gy, volumes, td50_gy: float, m: float, n: float) -> float:
    """LKB NTCP (0-1) of a DVH in the model's dose scale (see the module docstring)."""
    if not (td50_gy > 0 and m > 0 and n > 0):
        raise DoseError("LKB needs td50_gy, m and n > 0")
    eud = geud(doses_gy, volumes, 1.0 / n)
    return _phi((eud - td50_gy) / (m * td50_gy))


def logistic_eud(doses_gy, volumes, td50_gy: float, gamma50: float, a: float) -> float:
    """Niemierko logistic EUD NTCP (0-1)."""
    if not (td50_gy > 0 and gamma50 > 0):
        raise DoseError("logistic EUD needs td50_gy and gamma50 > 0")
    eud = geud(doses_gy, volumes, a)
    if eud <= 0:
        return 0.0
    return 1.0 / (1.0 + (td50_gy / eud) ** (4.0 * gamma50))


def relative_seriality(doses_gy, volumes, d50_gy: float, gamma: float, s: float) -> float:
    """Kallman relative-seriality NTCP (0-1)."""
    if not (d50_gy > 0 and gamma > 0 and s > 0):
        raise DoseError("relative seriality needs d50_gy, gamma and s > 0")
    d = np.asarray(doses_gy, dtype=float)
    v = np.asarray(volumes, dtype=float)
    v = v / v.sum()
    p = np.exp2(-np.exp(math.e * gamma * (1.0 - d / d50_gy)))
    # log of prod (1 - P^s)^v over the occupied bins; a bin with P^s = 1 (dose far above D50)
    # makes the product 0 and NTCP 1 (1 - 1e-300 rounds to 1, so it cannot be clipped away)
    occ = v > 0
    ps = np.minimum(p[occ] ** s, 1.0)
    if np.any(ps >= 1.0):
        return 1.0
    log_prod = np.sum(v[occ] * np.log1p(-ps))
    inner = -math.expm1(log_prod)
    return float(inner ** (1.0 / s))


@dataclasses.dataclass(frozen=True)
class ParameterSet:
    """One shipped (or user) NTCP parameter set.

    Attributes
    ----------
    name : str
        Key in the TOML file.
    model : str
        One of :data:`MODELS`.
    params : dict
        Model parameters (``td50_gy``, ``m``, ``n``, ``gamma50``, ``a``, ``d50_gy``, ``gamma``,
        ``s``, ``k``, ``b0``, ``b1_per_gy``, ``metric``).
    alpha_beta_gy : float
        alpha/beta (Gy) of the dose conversion.
    reference_fractions : int or None
        Schedule the set was fitted on (doses converted to it), or None for EQD2.
    organ, endpoint, reference, note : str
        Description and source.
    verified : bool
        Whether the numbers were checked against the paper while writing the file.
    """

    name: str
    model: str
    params: dict
    alpha_beta_gy: float
    reference_fractions: int | None
    organ: str
    endpoint: str
    reference: str
    note: str
    verified: bool

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "ParameterSet":
        """Build from a TOML table (see ``ntcp_parameters.toml``)."""
        d = dict(d)
        model = d.pop("model", None)
        if model not in MODELS:
            raise DoseError(f"NTCP set {name!r}: model must be one of {MODELS}, got {model!r}")
        meta = {k: d.pop(k, "") for k in ("organ", "endpoint", "reference", "note")}
        verified = bool(d.pop("verified", False))
        ab = d.pop("alpha_beta_gy", None)
        if ab is None or not float(ab) > 0:
            raise DoseError(f"NTCP set {name!r}: alpha_beta_gy (> 0 Gy) is required")
        ref = d.pop("reference_fractions", None)
        need = {"lkb": ("td50_gy", "m", "n"), "logistic_eud": ("td50_gy", "gamma50", "a"),
                "relative_seriality": ("d50_gy", "gamma", "s"),
                "log_logistic": ("metric", "td50_gy", "k"), "probit": ("metric", "td50_gy", "m"),
                "logit": ("metric", "b0", "b1_per_gy")}[model]
        missing = [k for k in need if k not in d]
        if missing:
            raise DoseError(f"NTCP set {name!r}: model {model} needs {', '.join(missing)}")
        return cls(name, model, d, float(ab), None if ref is None else int(ref),
                   meta["organ"], meta["endpoint"], meta["reference"], meta["note"], verified)


@lru_cache(maxsize=1)
def parameter_sets() -> dict[str, ParameterSet]:
    """The shipped parameter sets by name (``rtopt/dose/data/ntcp_parameters.toml``)."""
    text = resources.files("rtopt.dose").joinpath("data/ntcp_parameters.toml").read_text("utf-8")
    data = tomllib.loads(text)
    return {name: ParameterSet.from_dict(name, table) for name, table in data.items()}


def get_parameter_set(name: str) -> ParameterSet:
    """A shipped set by name, or DoseError listing the names."""
    sets = parameter_sets()
    if name not in sets:
        import difflib

        close = difflib.get_close_matches(name, list(sets), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DoseError(f"unknown NTCP parameter set {name!r}{hint} (one of {', '.join(sets)})")
    return sets[name]


def model_scale_edges(bed_edges_gy, pset: ParameterSet) -> np.ndarray:
    """BED values (Gy, at ``pset.alpha_beta_gy``) converted to ``pset``'s dose scale: EQD2, or
    the LQ-isoeffective total dose in ``pset.reference_fractions`` fractions."""
    bed = np.asarray(bed_edges_gy, dtype=float)
    if pset.reference_fractions is None:
        return np.asarray(radiobiology.eqd2_from_bed(bed, pset.alpha_beta_gy), dtype=float)
    n_ref = pset.reference_fractions
    d_ref = radiobiology.dose_per_fraction_for_bed(bed, n_ref, pset.alpha_beta_gy)
    return np.asarray(d_ref, dtype=float) * n_ref


def model_dose_dvh(dvh: DVH, pset: ParameterSet) -> DVH:
    """``dvh`` with its dose axis converted to ``pset``'s dose scale (EQD2 or isoeffective
    total dose in ``pset.reference_fractions`` fractions)."""
    if pset.reference_fractions is None:
        return dvh.in_quantity("eqd2", pset.alpha_beta_gy)
    edges = model_scale_edges(dvh.bed_of(dvh.edges_gy, pset.alpha_beta_gy), pset)
    return dataclasses.replace(dvh, edges_gy=edges, n_fractions=None)


def ntcp_of_model_dvh(h: DVH, pset: ParameterSet) -> float:
    """NTCP (0-1) of a DVH whose dose axis is already in ``pset``'s dose scale
    (:func:`model_dose_dvh`)."""
    ps = pset
    d, v = h.centres_gy, h.volume_cc
    p = ps.params
    if ps.model == "lkb":
        return lkb(d, v, p["td50_gy"], p["m"], p["n"])
    if ps.model == "logistic_eud":
        return logistic_eud(d, v, p["td50_gy"], p["gamma50"], p["a"])
    if ps.model == "relative_seriality":
        return relative_seriality(d, v, p["d50_gy"], p["gamma"], p["s"])
    x = evaluate_metric(h, p["metric"])
    if ps.model == "log_logistic":
        return 0.0 if x <= 0 else 1.0 / (1.0 + (p["td50_gy"] / x) ** p["k"])
    if ps.model == "probit":
        return _phi((x - p["td50_gy"]) / (p["m"] * p["td50_gy"]))
    z = p["b0"] + p["b1_per_gy"] * x
    return 1.0 / (1.0 + math.exp(-z))


def ntcp(dvh: DVH, pset: ParameterSet | str) -> float:
    """NTCP (0-1) of a structure's DVH under a parameter set.

    Parameters
    ----------
    dvh : DVH
        Total plan dose; ``dvh.n_fractions`` must be set (BED/EQD2 conversion).
    pset : ParameterSet or str
        A set, or the name of a shipped one.
    """
    ps = get_parameter_set(pset) if isinstance(pset, str) else pset
    return ntcp_of_model_dvh(model_dose_dvh(dvh, ps), ps)
