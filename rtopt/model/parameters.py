"""Surrogate parameters: names, units, plausible ranges, provenance and presets.

Every parameter of the tumour-microenvironment (TME) surrogate is declared once here, with the
source of its value or the mark *assumption*, and the plausible range that sensitivity analysis and
robust optimisation will use.  Site presets (``lung``, ``prostate``, ...) and NK product presets
override the generic values; instance files override any of them by name
(``[tumour.surrogate]``).

The hypoxia parameters of the ``lung``, ``prostate`` and ``head_and_neck`` presets are the output
of ``rtopt calibrate`` against the observation table in ``rtopt/model/data/observations.toml``;
``tests/test_calibration.py`` re-runs the fit and checks these values are what it produces.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

ASSUMPTION = "assumption"


@dataclass(frozen=True)
class ParameterSpec:
    """Declaration of one surrogate parameter.

    Attributes
    ----------
    name : str
        Key used in instance files (``[tumour.surrogate]``) and in code.
    default : float
        Generic value (site ``generic``, product ``il15_expanded``).
    low, high : float
        Plausible range (inclusive); instance overrides outside it are rejected.
    unit : str
        Physical unit, ``"1"`` for dimensionless.
    group : str
        ``hypoxia``, ``chemokine``, ``nk`` or ``tumour``.
    source : str
        Citation of the value, or ``"assumption"`` with the reasoning.
    description : str
        One-line meaning.
    """

    name: str
    default: float
    low: float
    high: float
    unit: str
    group: str
    source: str
    description: str


_P = ParameterSpec
SPECS: dict[str, ParameterSpec] = {
    s.name: s
    for s in [
        # --- hypoxia: oxygen demand w and vascular function v (docs/model.md section 3) ---
        _P("hypoxia_gamma", 1.0, 0.5, 3.0, "1", "hypoxia",
           "docs/model.md section 3 starting value (assumption); fitted per site by rtopt calibrate",
           "exponent in h = h0 (w/v)^gamma"),
        _P("hypoxic_fraction_max", 0.9, 0.5, 1.0, "1", "hypoxia", ASSUMPTION + ": cap below 1 "
           "because perivascular rims stay oxic", "upper bound of the hypoxic fraction"),
        _P("demand_drop_max", 0.2, 0.02, 0.5, "1", "hypoxia", "docs/model.md section 3 starting value (assumption)",
           "largest fractional drop of oxygen demand per fraction (m_max)"),
        _P("demand_drop_dose_gy", 4.0, 1.0, 15.0, "Gy", "hypoxia", "docs/model.md section 3 starting value (assumption)",
           "dose scale of the demand drop m(d) = m_max (1 - exp(-d/d_m))"),
        _P("demand_recovery_days", 60.0, 7.0, 365.0, "d", "hypoxia",
           "docs/model.md section 3: regrowth is slow (weeks); " + ASSUMPTION,
           "time constant of oxygen-demand recovery (tau_w)"),
        _P("vascular_damage_max", 0.9, 0.3, 1.0, "1", "hypoxia", "docs/model.md section 3 starting value (assumption)",
           "largest fractional loss of vascular function per fraction (V_max)"),
        _P("vascular_d50_gy", 15.0, 8.0, 30.0, "Gy", "hypoxia",
           "Park, Griffin, Song et al. 2012 Radiat Res (severe damage above ~10 Gy); "
           "Garcia-Barros et al. 2003 Science (15-20 Gy)", "dose per fraction of half-maximal "
           "vascular damage (d_v50)"),
        _P("vascular_slope_gy", 1.5, 0.5, 5.0, "Gy", "hypoxia", "docs/model.md section 3 starting value (assumption)",
           "width of the logistic vascular-damage curve (s_v)"),
        _P("vascular_recovery_days", 6.0, 1.0, 30.0, "d", "hypoxia", "docs/model.md section 3 starting value (assumption)",
           "time constant of vascular recovery (tau_v)"),
        _P("oer", 2.8, 2.0, 3.5, "1", "tumour", "Rofstad 1992 (OER 2.8); ICRP X-ray range 2.5-3",
           "oxygen enhancement ratio of fully anoxic clonogens (dose-modifying)"),
        # --- clonogen hypoxia and population spread (docs/model.md, 'Tumour control') ---
        _P("oer_intermediate", 1.7, 1.55, 2.25, "1", "tumour",
           "Jeong et al. 2017 Clin Cancer Res: OER 1.70 (95% CI 1.55-2.25) of intermediately "
           "hypoxic NSCLC cells, fitted to 2,701 patients", "OER of intermediately hypoxic "
           "clonogens (glucose but no oxygen)"),
        _P("clonogen_hypoxia_ratio", 0.05, 0.0, 1.5, "1", "tumour",
           ASSUMPTION + ": radiobiologically hypoxic clonogens per unit FMISO hypoxic "
           "fraction (Jeong et al. 2017); fitted for lung by rtopt calibrate --outcomes "
           "(profile in docs/model.md section 9: >= 0.2)",
           "radiobiologically hypoxic share of clonogens per unit FMISO hypoxic fraction"),
        _P("anoxic_share", 0.0, 0.0, 0.01, "1", "tumour",
           "Jeong et al. 2017 (a small anoxic compartment); size fitted for lung by rtopt "
           "calibrate --outcomes", "share of the hypoxic clonogens that are fully anoxic (OER oer)"),
        _P("alpha_sd_per_gy", 0.08, 0.0, 0.25, "1/Gy", "tumour",
           "Webb & Nahum 1993 Phys Med Biol (inter-patient spread of alpha); fitted for lung "
           "by rtopt calibrate --outcomes", "population standard deviation of alpha "
           "(normal, truncated at 0) behind local control"),
        # --- chemokine (CXCL10 / CXCR3), docs/model.md section 4 ---
        _P("chemokine_max", 1.0, 0.1, 5.0, "1", "chemokine", "convention: the unit of the "
           "chemokine signal (it acts only through C / C50 in the trafficking rate)",
           "peak chemokine pulse of one saturating fraction (A_max)"),
        _P("chemokine_k_gy", 6.0, 2.0, 12.0, "Gy", "chemokine",
           "direction: Vanpouille-Box et al. 2017 Nat Commun (8 Gy x 3 induces IFN-beta, so K "
           "lies at or below ~8 Gy); its size within 2-12 Gy is an " + ASSUMPTION,
           "half-saturation dose of chemokine induction (K)"),
        _P("chemokine_hill", 2.0, 1.0, 4.0, "1", "chemokine", ASSUMPTION + ": no dose-response "
           "of CXCL10 in human tumours; a sigmoid rise between 2 and 8 Gy",
           "Hill exponent of chemokine induction (n)"),
        _P("trex1_threshold_gy", 15.0, 10.0, 20.0, "Gy", "chemokine",
           "Vanpouille-Box et al. 2017 Nat Commun: Trex1 induced above 12-18 Gy",
           "dose per fraction where Trex1 halves the chemokine pulse (d_trex)"),
        _P("trex1_width_gy", 1.5, 0.5, 4.0, "Gy", "chemokine",
           "bounded by Vanpouille-Box et al. 2017 Nat Commun: the Trex1 threshold lies between "
           "12 and 18 Gy across cell lines, so the switch completes within a few Gy; its "
           "width within that range is an " + ASSUMPTION,
           "width of the Trex1 switch (s_trex)"),
        _P("chemokine_peak_day", 3.0, 1.0, 6.0, "d", "chemokine",
           "Harding et al. 2017 Nature (cGAS needs mitosis: days); peak 2-4 d " + ASSUMPTION,
           "time from a fraction to the peak of its chemokine pulse"),
        _P("chemokine_decay_days", 4.0, 1.5, 10.0, "d", "chemokine", ASSUMPTION + ": 3-5 d; "
           "no human time course of intratumoural CXCL10 after a fraction",
           "decay time constant of a chemokine pulse (1/k_e)"),
        # --- NK cells, docs/model.md section 5 (product presets below override) ---
        _P("nk_blood_clearance_per_day", 0.30, 0.002, 2.0, "1/d", "nk",
           "non-expanding donor NK after lymphodepletion leave the blood at 0.2-0.7 /d (NK "
           "observation table N1-N3: Bachanova et al. 2010 Cancer Immunol Immunother "
           "59:1739-1744; Rubnitz et al. 2010 J Clin Oncol 28:955-959); product presets are "
           "fitted to N1-N5 by rtopt calibrate --nk", "first-order loss of NK cells from blood"),
        _P("nk_infiltration_per_day", 0.04, 0.001, 0.5, "1/d", "nk",
           ASSUMPTION + ": human 111In-NK imaging shows tumour uptake in only some metastases "
           "and no per-cent-of-dose figure (Meller et al. 2004 Eur J Nucl Med Mol Imaging "
           "31:403-407; Matera et al. 2006 J Transl Med 4:49); the value keeps the tumour share "
           "of an infusion below 10 % (check row N6)",
           "basal blood-to-tumour trafficking rate (k0)"),
        _P("nk_chemokine_gain", 4.0, 0.0, 20.0, "1", "nk",
           "direction: RT raises NK homing to tumours (Canter et al. 2017 J Immunother Cancer "
           "5:98; Walle et al. 2022 Sci Adv 8:eabh4050, CXCL8); size " + ASSUMPTION
           + " (CXCR3-driven recruitment, several-fold at peak chemokine)",
           "largest relative increase of trafficking by chemokine: "
           "k_in = k0 v (1 + g C / (C50 + C))"),
        _P("nk_chemokine_half_signal", 0.5, 0.05, 5.0, "1", "nk",
           ASSUMPTION + ": receptor-mediated recruitment saturates (CXCR3 occupancy); no "
           "human dose-response of NK homing to CXCL10", "chemokine signal of half-maximal "
           "extra recruitment (C50)"),
        _P("nk_tumour_loss_per_day", 0.20, 0.01, 2.0, "1/d", "nk",
           ASSUMPTION + ": no human study reports tumour NK density over time (NK observation "
           "table, docs/model.md section 13)", "exit and death of NK cells in the tumour"),
        _P("nk_d0_gy", 2.9, 1.0, 8.0, "Gy", "nk",
           "in vitro D0 of Leu19+ (CD56+) cells irradiated 1 h after PHA stimulation, 2.9 Gy "
           "(5.5 Gy unstimulated): 'The effect of low-dose irradiation on unstimulated and "
           "PHA-stimulated human lymphocyte subsets' (authors not verified; NK table N10); "
           "PHA-stimulated cells stand in for activated products (analogy)",
           "in-field NK radiosensitivity: T <- T exp(-d/D0)"),
        _P("nk_blood_dose_fraction", 0.02, 0.0, 0.2, "1", "nk",
           "mean dose to circulating blood about 2 % of the tumour dose (up to 7 % for "
           "recirculating lymphocytes), pelvic 60Co protocols: 'Mean dose to lymphocytes during "
           "radiotherapy treatments', Health Phys 1994;67:326-329 (NK table N11); a DVH gives "
           "V_in / V_blood (rtopt.model.circulation)",
           "mean dose to circulating blood per fraction, as a share of the tumour dose"),
        _P("nk_cytotoxicity", 1.0, 0.1, 5.0, "1", "nk", "convention: the unit of NK activity "
           "(one standard infusion of the generic product in the tumour); product presets "
           "scale it", "activity per tumour NK unit (kappa)"),
        _P("nk_hypoxic_suppression", 0.6, 0.0, 1.0, "1", "nk",
           "Balsamo et al. 2013 Eur J Immunol (direction); eta 0.5-0.7 " + ASSUMPTION,
           "activity loss at full hypoxia: E = kappa T (1 - eta h)"),
        _P("nk_radiosensitisation_max", 0.3, 0.0, 1.0, "1", "nk",
           "Kimura et al. 1999 Cancer Res (TNF-alpha before RT sensitises); size " + ASSUMPTION,
           "largest relative alpha increase from NK activity (s)"),
        _P("nk_radiosensitisation_e50", 0.1, 0.01, 2.0, "1", "nk", ASSUMPTION
           + ": no dose-response of radiosensitisation by NK activity",
           "NK activity of half-maximal radiosensitisation (E50)"),
        _P("nk_log_kill_per_activity_day", 0.5, 0.0, 5.0, "1/d", "nk",
           "mass-action form dN/dt = -c E N of de Pillis et al. 2005 Cancer Res; the mouse "
           "rate constant does not transfer to human tumours, so its size is an " + ASSUMPTION,
           "mass-action kill rate c: clonogens killed per clonogen, unit activity and day"),
        _P("nk_treg_penalty", 0.0, 0.0, 0.5, "1", "nk",
           "direction: host Tregs rose from 58 to 180 /uL after NK + IL-2 (Bachanova et al. "
           "2010 Cancer Immunol Immunother); Xu et al. 2024 Front Immunol (IL-2 expands Tregs); "
           "size " + ASSUMPTION, "fractional activity loss from regulatory T cells"),
        # --- the patient's own circulating NK cells (docs/model.md section 13) ---
        _P("nk_endogenous_turnover_per_day", 0.069, 0.01, 0.3, "1/d", "nk",
           "Zhang et al. 2007 Immunology 121:258-265: labelled endogenous NK cells leave the "
           "blood at 6.9 +- 4.0 %/day (production 15e6 cells/L/day); NK table N7, fitted by "
           "rtopt calibrate --nk", "homeostatic turnover of the endogenous circulating NK pool: "
           "its recovery rate after depletion"),
        _P("nk_endogenous_d0_gy", 5.5, 2.0, 10.0, "Gy", "nk",
           "in vitro D0 of unstimulated Leu19+ (CD56+) cells, 5.5 Gy: 'The effect of low-dose "
           "irradiation on unstimulated and PHA-stimulated human lymphocyte subsets' (authors "
           "not verified; NK table N9); NK are the least depleted lymphocytes in vivo (NK "
           "table N12-N13)", "radiosensitivity of resting circulating NK cells"),
        _P("nk_endogenous_count_per_ul", 420.0, 100.0, 1100.0, "cells/uL", "nk",
           "healthy adults 472 +- 247 /uL (men), 375 +- 224 /uL (women), reference range "
           "96-1103 /uL: Clin Diagn Lab Immunol 2004;11:168-173, Table 3 (NK table N8)",
           "baseline count of endogenous circulating NK cells"),
        _P("nk_endogenous_cytotoxicity", 0.3, 0.0, 1.0, "1", "nk",
           ASSUMPTION + ": activity per tumour NK unit of the patient's own resting NK cells, "
           "relative to the generic activated product (1); resting blood NK lyse tumour "
           "targets less than IL-2/IL-15-activated cells, by a factor no human tumour study "
           "measures; 0 leaves the endogenous pool out", "activity per tumour NK unit of the "
           "endogenous NK cells (kappa_e)"),
    ]
}

BASIS_KINDS = ("measured", "fitted", "convention", "direction", "assumption")
"""How a value is known: *measured* (a human or in vitro measurement gives it), *fitted* (``rtopt
calibrate`` fits it to an observation table), *convention* (it sets a unit and carries no
information), *direction* (a source gives its sign or bounds, its size is assumed) and
*assumption* (no source; the provenance says why the value was chosen)."""

BASIS: dict[str, str] = {
    "chemokine_max": "convention", "chemokine_k_gy": "direction",
    "chemokine_hill": "assumption", "trex1_threshold_gy": "measured",
    "trex1_width_gy": "direction", "chemokine_peak_day": "direction",
    "chemokine_decay_days": "assumption",
    "nk_blood_clearance_per_day": "fitted", "nk_infiltration_per_day": "direction",
    "nk_chemokine_gain": "direction", "nk_chemokine_half_signal": "assumption",
    "nk_tumour_loss_per_day": "assumption", "nk_d0_gy": "measured",
    "nk_blood_dose_fraction": "measured", "nk_cytotoxicity": "convention",
    "nk_hypoxic_suppression": "direction", "nk_radiosensitisation_max": "direction",
    "nk_radiosensitisation_e50": "assumption", "nk_log_kill_per_activity_day": "assumption",
    "nk_treg_penalty": "direction", "nk_endogenous_turnover_per_day": "fitted",
    "nk_endogenous_d0_gy": "measured", "nk_endogenous_count_per_ul": "measured",
    "nk_endogenous_cytotoxicity": "assumption",
}
"""Basis (:data:`BASIS_KINDS`) of every NK and chemokine parameter's generic value; ``rtopt model
params`` prints it and tests hold that none is missing."""


PRESET_BASIS: dict[str, dict[str, str]] = {
    "il15_expanded": {"nk_blood_clearance_per_day": "direction"},
}
"""Bases of product-preset values that differ from the parameter's :data:`BASIS` (the
il15_expanded clearance is bounded by the NK table's non-expanding products, not fitted)."""


def basis(name: str, provenance: str | None = None) -> str | None:
    """The basis (:data:`BASIS_KINDS`) of a parameter's value, None outside the NK and
    chemokine groups.

    With the resolved ``provenance`` (:attr:`SurrogateParameters.provenance`): a value fitted
    by ``rtopt calibrate`` is *fitted*, an instance override is *override* (the instance file
    states its source), and a product preset's own basis (:data:`PRESET_BASIS`) wins.
    """
    if name not in BASIS:
        return None
    if provenance:
        if "instance override" in provenance:
            return "override"
        head = provenance.split(":", 1)[0]
        if head in PRESET_BASIS and name in PRESET_BASIS[head]:
            return PRESET_BASIS[head][name]
        if "fitted to" in provenance:
            return "fitted"
    return BASIS[name]


def basis_summary(provenance: Mapping[str, str] | None = None) -> dict[str, int]:
    """How many NK and chemokine parameters have each basis (for resolved ``provenance``)."""
    out = {k: 0 for k in BASIS_KINDS + ("override",)}
    for name in BASIS:
        out[basis(name, (provenance or {}).get(name))] += 1
    return out


NAMES: tuple[str, ...] = tuple(SPECS)
"""All surrogate parameter names, in declaration order (the keys accepted by ``[tumour.surrogate]``)."""

SITES = ("lung", "prostate", "head_and_neck", "breast", "pancreas", "generic")
PRODUCTS = ("il2_activated", "il15_expanded", "memory_like_il12_15_18", "car_nk_il15")
CYTOKINE_SUPPORT = ("none", "il2", "il15")


@dataclass(frozen=True)
class Preset:
    """Values that a site or product preset sets, each with its provenance."""

    values: Mapping[str, float]
    sources: Mapping[str, str] = field(default_factory=dict)
    note: str = ""


# Hypoxia values of lung, prostate and head_and_neck: `rtopt calibrate` output (see module doc).
# They are regenerated by `rtopt calibrate --write` and checked by tests/test_calibration.py.
from rtopt.model.data.calibrated import CALIBRATED as _CAL, FITTED as _FIT  # noqa: E402  (generated)


from rtopt.model.data.calibrated import OUTCOME as _OUT  # noqa: E402  (generated)


def reference_gtv_cc(site: str) -> float:
    """Reference GTV volume of a site's outcome fit (cm3): ``[site.SITE] reference_gtv_cc`` of
    rtopt/model/data/outcomes.toml (10 cm3 when the site has no row or no value).  The fitted
    clonogen number belongs to a tumour of this volume; ``[tumour] gtv_cc`` scales it
    (:meth:`rtopt.model.simulator.Biology.from_instance`)."""
    return _reference_volumes().get(site, 10.0)


@functools.lru_cache(maxsize=1)
def _reference_volumes() -> dict[str, float]:
    import tomllib
    from importlib import resources

    data = tomllib.loads(resources.files("rtopt.model.data").joinpath("outcomes.toml")
                         .read_text())
    return {name: float(v.get("reference_gtv_cc", 10.0))
            for name, v in data.get("site", {}).items()}


def _calibrated(site: str, obs: str) -> tuple[dict[str, float], dict[str, str]]:
    vals = dict(_CAL.get(site, {}))
    src = {k: (f"fitted to {obs} by rtopt calibrate" if k in _FIT.get(site, ()) else
               "fitted to the training outcomes T1-T7 by rtopt calibrate --outcomes"
               if k in _OUT.get(site, {}) else "from the lung fit (rtopt calibrate)")
           for k in vals}
    return vals, src


SITE_PRESETS: dict[str, Preset] = {
    "generic": Preset({}, note="docs/model.md section 3 starting values; all hypoxia values are "
                      "the lung starting values (assumption for an unspecified site)"),
    "lung": Preset(*_calibrated("lung", "O1-O3"),
                   note="NSCLC; O1 Kelada et al. 2018 IJROBP, O2 Inada et al. 2023 Radiother "
                        "Oncol, O3 refs 119-120 of Zheng et al. 2024"),
    "prostate": Preset(*_calibrated("prostate", "O4"),
                       note="O4 Supiot et al. 2019 Radiother Oncol: hypoxic volume fell after "
                            "20 Gy; vascular threshold higher than lung"),
    "head_and_neck": Preset(*_calibrated("head_and_neck", "O5"),
                            note="O5 FMISO reoxygenation during 70 Gy / 35 (review ref 118, "
                                 "Okamoto et al. 2016 EJNMMI; docs/model.md also names Wiedenmann 2015)"),
    "breast": Preset({"vascular_d50_gy": 16.0},
                     {"vascular_d50_gy": ASSUMPTION + ": between lung and prostate; no imaging "
                      "data in the sources"}, note="hypoxia otherwise generic (assumption)"),
    "pancreas": Preset({"vascular_d50_gy": 14.0, "hypoxic_fraction_max": 0.95,
                        "chemokine_k_gy": 7.0},
                       {"vascular_d50_gy": ASSUMPTION + ": hypovascular, stroma-rich tumour",
                        "hypoxic_fraction_max": ASSUMPTION + ": pancreatic tumours are among "
                        "the most hypoxic",
                        "chemokine_k_gy": ASSUMPTION + ": CXCL8 axis dominates (Walle et al. "
                        "2022 Sci Adv), CXCR3 induction weaker"}),
}

from rtopt.model.data.nk_calibrated import NK_FITTED as _NKF  # noqa: E402  (generated)

_FIT_NK = "fitted to the NK observation table by rtopt calibrate --nk"


def _nk_fit(product: str, name: str) -> float:
    return _NKF[f"{product}.{name}"]


PRODUCT_PRESETS: dict[str, Preset] = {
    "il2_activated": Preset(
        {"nk_blood_clearance_per_day": _nk_fit("il2_activated", "nk_blood_clearance_per_day"),
         "nk_cytotoxicity": 1.0, "nk_d0_gy": 2.9, "nk_tumour_loss_per_day": 0.35},
        {"nk_blood_clearance_per_day": _FIT_NK + " (N1-N3: Bachanova et al. 2010 Cancer "
                                       "Immunol Immunother, donor NK undetectable after 7 d; "
                                       "Rubnitz et al. 2010 J Clin Oncol, engraftment 10 d, "
                                       "1.5 % left on day 14; with IL-2 support)",
         "nk_cytotoxicity": ASSUMPTION + ": reference product",
         "nk_d0_gy": "PHA-stimulated CD56+ D0 2.9 Gy in vitro (NK table N10; analogy)",
         "nk_tumour_loss_per_day": "IL-2-activated NK cells die by cytokine withdrawal within "
                                   "days (Bachanova et al. 2010); half-life ~2 d " + ASSUMPTION}),
    "il15_expanded": Preset(
        {"nk_blood_clearance_per_day": 0.30, "nk_cytotoxicity": 1.1, "nk_d0_gy": 2.9,
         "nk_tumour_loss_per_day": 0.20},
        {"nk_blood_clearance_per_day": ASSUMPTION + ": no human persistence data for an ex "
                                       "vivo IL-15-expanded product; 0.30 /d lies inside the "
                                       "0.2-0.7 /d that non-expanding products show (NK table "
                                       "N1-N3; Rubnitz et al. 2010: 1.5 % left on day 14, "
                                       "0.30 /d)",
         "nk_cytotoxicity": "Xu et al. 2024 Front Immunol (IL-15 priming); size " + ASSUMPTION,
         "nk_d0_gy": "PHA-stimulated CD56+ D0 2.9 Gy in vitro (NK table N10; analogy)",
         "nk_tumour_loss_per_day": "generic value; half-life ~3.5 d in the tumour " + ASSUMPTION}),
    "memory_like_il12_15_18": Preset(
        {"nk_blood_clearance_per_day": _nk_fit("memory_like_il12_15_18",
                                               "nk_blood_clearance_per_day"),
         "nk_cytotoxicity": 1.4, "nk_d0_gy": 2.9, "nk_tumour_loss_per_day": 0.10},
        {"nk_blood_clearance_per_day": _FIT_NK + " (N4: Bednarski et al. 2022 Blood, "
                                       "memory-like NK detectable > 3 months)",
         "nk_cytotoxicity": "Romee et al. 2016 (enhanced response); size " + ASSUMPTION,
         "nk_d0_gy": "PHA-stimulated CD56+ D0 2.9 Gy in vitro (NK table N10; analogy)",
         "nk_tumour_loss_per_day": "Romee et al. 2016 (memory-like NK persist); half-life "
                                   "~7 d in the tumour " + ASSUMPTION}),
    "car_nk_il15": Preset(
        {"nk_blood_clearance_per_day": _nk_fit("car_nk_il15", "nk_blood_clearance_per_day"),
         "nk_cytotoxicity": 1.6, "nk_d0_gy": 2.9, "nk_tumour_loss_per_day": 0.04},
        {"nk_blood_clearance_per_day": _FIT_NK + " (N5: Liu et al. 2020 NEJM, IL-15-armed "
                                       "CAR-NK persisted >= 12 months)",
         "nk_cytotoxicity": ASSUMPTION + ": antigen-directed killing",
         "nk_d0_gy": "PHA-stimulated CD56+ D0 2.9 Gy in vitro (NK table N10; analogy)",
         "nk_tumour_loss_per_day": "Liu et al. 2020 NEJM (IL-15-armed CAR-NK persist); "
                                   "half-life ~17 d in the tumour " + ASSUMPTION}),
}
"""NK product presets.  Blood clearances of il2_activated, memory_like_il12_15_18 and
car_nk_il15 are ``rtopt calibrate --nk`` output (``rtopt/model/data/nk_calibrated.py``; the
value without cytokine support); tests re-run the fit."""

# Post-infusion cytokine support: multiplicative changes (Xu et al. 2024; sizes are assumptions).
CYTOKINE_MODIFIERS: dict[str, dict[str, float]] = {
    "none": {},
    "il2": {"nk_blood_clearance_per_day": 0.7, "nk_cytotoxicity": 1.2},
    "il15": {"nk_blood_clearance_per_day": 0.5, "nk_cytotoxicity": 1.3},
}
CYTOKINE_TREG_PENALTY = {"none": 0.0, "il2": 0.15, "il15": 0.0}
"""IL-2 expands regulatory T cells (Xu et al. 2024); the 15 % activity loss is an assumption."""


@dataclass(frozen=True)
class SurrogateParameters:
    """Resolved values of every surrogate parameter (floats, or arrays for parameter samples).

    Build with :func:`resolve`; fields are the names in :data:`NAMES`.  Array-valued fields
    broadcast against the schedule axis, which is how the simulator evaluates parameter samples.
    """

    values: Mapping[str, Any]
    provenance: Mapping[str, str]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def with_values(self, **overrides: Any) -> "SurrogateParameters":
        """Return a copy with some values replaced (provenance becomes ``override``)."""
        unknown = set(overrides) - set(SPECS)
        if unknown:
            raise KeyError(f"unknown surrogate parameter(s): {sorted(unknown)}")
        vals = dict(self.values)
        vals.update(overrides)
        prov = dict(self.provenance)
        prov.update({k: "override" for k in overrides})
        return replace(self, values=vals, provenance=prov)

    def as_dict(self) -> dict[str, Any]:
        """Return the values as a plain ``{name: value}`` dict."""
        return dict(self.values)


def resolve(site: str = "generic", product: str | None = None, cytokine_support: str = "none",
            overrides: Mapping[str, float] | None = None) -> SurrogateParameters:
    """Resolve surrogate parameters: generic values, then site, product, cytokine, overrides.

    Parameters
    ----------
    site : str
        One of :data:`SITES`.
    product : str or None
        NK product preset (:data:`PRODUCTS`); ``None`` keeps the generic NK values.
    cytokine_support : str
        ``none``, ``il2`` or ``il15`` (multiplies persistence and cytotoxicity).
    overrides : mapping, optional
        Values set by name, applied last (an instance's ``[tumour.surrogate]``).

    Returns
    -------
    SurrogateParameters
    """
    if site not in SITE_PRESETS:
        raise KeyError(f"unknown site {site!r}; expected one of {', '.join(SITES)}")
    vals = {n: s.default for n, s in SPECS.items()}
    prov = {n: s.source for n, s in SPECS.items()}
    sp = SITE_PRESETS[site]
    vals.update(sp.values)
    prov.update({k: f"{site} preset: {sp.sources.get(k, '')}" for k in sp.values})
    for k, v in _NKF.items():                     # generic NK fits (no product prefix)
        if "." not in k:
            vals[k] = v
            prov[k] = f"{_FIT_NK} ({SPECS[k].source})"
    if product is not None:
        if product not in PRODUCT_PRESETS:
            raise KeyError(f"unknown NK product {product!r}; expected one of {', '.join(PRODUCTS)}")
        pp = PRODUCT_PRESETS[product]
        vals.update(pp.values)
        prov.update({k: f"{product}: {pp.sources.get(k, '')}" for k in pp.values})
    if cytokine_support not in CYTOKINE_MODIFIERS:
        raise KeyError(f"unknown cytokine support {cytokine_support!r}")
    for k, factor in CYTOKINE_MODIFIERS[cytokine_support].items():
        vals[k] = vals[k] * factor
        prov[k] += f"; x{factor} with {cytokine_support} support (Xu et al. 2024, size assumption)"
    if CYTOKINE_TREG_PENALTY[cytokine_support]:
        vals["nk_treg_penalty"] = CYTOKINE_TREG_PENALTY[cytokine_support]
        prov["nk_treg_penalty"] = "IL-2 Treg expansion (Xu et al. 2024); size assumption"
    for k, v in (overrides or {}).items():
        if k not in SPECS:
            raise KeyError(f"unknown surrogate parameter {k!r}")
        vals[k] = v
        prov[k] = "instance override"
    return SurrogateParameters(vals, prov)


def out_of_range(name: str, value: float) -> str | None:
    """Return a message if ``value`` lies outside the plausible range of ``name``, else None."""
    s = SPECS[name]
    if not np.isfinite(value) or value < s.low or value > s.high:
        return f"{value!r} is outside the plausible range [{s.low}, {s.high}] {s.unit}"
    return None
