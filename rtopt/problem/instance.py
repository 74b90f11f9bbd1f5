"""The public instance format: TOML files (``schema_version = 1``) validated by pydantic models.

An instance states the tumour, the prescription, the organs at risk, the fractionation limits and
calendar, the optional NK-cell therapy and the objective (docs/model.md section 6), and optionally
the distributions of uncertain parameters (``[uncertainty]``, :mod:`rtopt.model.uncertainty`).  Every key
carries its unit in its name; biology has no silent defaults.

Use :func:`load_instance` for files and :func:`instance_from_dict` for dicts.  Both collect every
problem they find and raise one :class:`rtopt.common.errors.InstanceError` whose ``problems`` are
``(field_path, message)`` pairs such as ``("organ_at_risk[1].alpha_beta_gy", "must be > 0")``.
:func:`instance_json_schema` exports a JSON Schema for editors.

Conventions fixed by this schema (the problem and simulator modules follow them):

* Prescription and OAR limits use the classical LQ formulas of the physical schedule,
  ``BED = sum d (1 + d / rho)`` and ``EQD2 = BED / (1 + 2 / rho)``, with no time factor: that is
  how the clinical thresholds they encode (Onishi et al. 2007 BED10 >= 100 Gy, TG-101, QUANTEC)
  are defined.  ``survival_model`` and repopulation act on simulated cell kill only.
* OAR dose per fraction = ``sparing_factor`` x tumour dose per fraction (docs/model.md section 2).
* Fractions fall on days ``0 .. horizon_days - 1`` whose weekday (day 0 is ``start_weekday``) is
  in ``treatment_weekdays``, at least ``min_interval_days`` apart, with at most
  ``max_overall_days`` elapsed days from the first to the last.
* An NK infusion on day ``t`` is not allowed when a fraction falls on a day ``f`` with
  ``t < f <= t + min_days_before_next_fraction``.
"""

from __future__ import annotations

import difflib
import enum
import json
import math
import re
import weakref
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args

from pydantic import (AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field,
                      Strict, ValidationError, ValidationInfo, create_model, field_validator,
                      model_validator)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from rtopt.common.errors import InstanceError
from rtopt.common.fileio import load_toml, short, toml_message
from rtopt.model.data.calibrated import OUTCOME
from rtopt.model.parameters import CYTOKINE_SUPPORT, PRODUCTS, SITES, SPECS, out_of_range, resolve
from rtopt.model.radiobiology import SURVIVAL_MODELS
from rtopt.model.uncertainty import validate_table
from rtopt.problem import calendar
from rtopt.problem.calendar import WEEKDAYS

# tomli_w is imported inside to_toml (import time: only writing TOML needs it).

__all__ = [
    "SCHEMA_VERSION",
    "Site",
    "SurvivalModel",
    "NKProduct",
    "CytokineSupport",
    "Weekday",
    "ObjectiveTerm",
    "Tumour",
    "SurrogateOverrides",
    "Prescription",
    "OrganAtRisk",
    "DvhLimit",
    "NtcpSpec",
    "DvhPlan",
    "BloodDose",
    "check_dvh_files",
    "Fractionation",
    "NKTherapy",
    "Objective",
    "Instance",
    "load_instance",
    "instance_from_dict",
    "instance_json_schema",
]

SCHEMA_VERSION = 1
"""The instance ``schema_version`` this module reads and writes."""

MIN_DOSE_STEP_GY = 1e-4
"""Finest dose grid step (Gy) other than 0 (continuous): 100x finer than delivery precision;
bounds every dose grid to at most a million points."""

MAX_DAYS = 3650
"""Upper bound of every day count (ten years); keeps calendar checks cheap and catches typos."""

# --------------------------------------------------------------------------------------------
# Choices
# --------------------------------------------------------------------------------------------


# Choice enums are generated from the one list each choice has (rtopt.model.parameters and
# rtopt.problem.calendar), so a new site, product or weekday is added in one place.
Site = enum.Enum("Site", {x: x for x in SITES}, type=str)
Site.__doc__ = "Surrogate site preset (:data:`rtopt.model.parameters.SITES`)."
SurvivalModel = enum.Enum("SurvivalModel", {x: x for x in SURVIVAL_MODELS}, type=str)
SurvivalModel.__doc__ = "Cell-survival model of one fraction (docs/model.md section 2)."
NKProduct = enum.Enum("NKProduct", {x: x for x in PRODUCTS}, type=str)
NKProduct.__doc__ = "NK-cell product preset (:data:`rtopt.model.parameters.PRODUCTS`)."
CytokineSupport = enum.Enum("CytokineSupport", {x: x for x in CYTOKINE_SUPPORT}, type=str)
CytokineSupport.__doc__ = ("Post-infusion cytokine support "
                           "(:data:`rtopt.model.parameters.CYTOKINE_SUPPORT`).")
Weekday = enum.Enum("Weekday", {x: x for x in WEEKDAYS}, type=str)
Weekday.__doc__ = "Weekday names (:data:`rtopt.problem.calendar.WEEKDAYS`)."


class ObjectiveTerm(str, enum.Enum):
    """Quantities an objective can maximise."""

    nk_favourability = "nk_favourability"
    tumour_log_kill = "tumour_log_kill"
    tcp = "tcp"
    local_control = "local_control"
    nk_gain_local_control = "nk_gain_local_control"
    nk_gain_log_kill = "nk_gain_log_kill"
    tumour_bed = "tumour_bed"
    reoxygenation_gain_local_control = "reoxygenation_gain_local_control"


NK_OBJECTIVES = frozenset({ObjectiveTerm.nk_favourability, ObjectiveTerm.nk_gain_local_control,
                           ObjectiveTerm.nk_gain_log_kill})
"""Objective terms that need an ``[nk]`` table."""

assert tuple(w.value for w in Weekday) == calendar.WEEKDAYS

# --------------------------------------------------------------------------------------------
# Building blocks: strict scalar types, ranges, choices, and error helpers
# --------------------------------------------------------------------------------------------


def _problem(message: str) -> PydanticCustomError:
    """One ready-made message for the field being validated."""
    return PydanticCustomError("rtopt", "{message}", {"message": message})


def _problems(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """Several messages at paths relative to the model being validated."""
    return PydanticCustomError("rtopt_problems", "{summary}",
                               {"summary": "; ".join(f"{p}: {m}" if p else m for p, m in problems),
                                "problems": [list(p) for p in problems]})


def toml_repr(x: Any) -> str:
    """Show a user value the way a TOML file spells it."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, str):
        text = repr(x)
        return text if len(text) <= 60 else text[:56] + "...'"
    if isinstance(x, int):
        text = str(x)
        return text if len(text) <= 30 else f"{text[:12]}...({len(text)} digits)"
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, dict):
        return "a table"
    if isinstance(x, (list, tuple)):
        return "an array"
    if x is None:
        return "nothing"
    if hasattr(x, "isoformat"):
        return f"a date/time {x.isoformat()}"
    if isinstance(x, enum.Enum):
        return repr(x.value)
    return f"a {type(x).__name__}"


def _num(x: Any) -> str:
    """Format a bound for messages: 0 not 0.0, but 1.5 as is."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def closest_choice(word: str, choices: list[str]) -> str | None:
    """The choice ``word`` most likely meant (difflib, or a unique prefix), or None."""
    if len(word) > 100:
        return None  # no choice is that long; difflib on a huge string is slow
    match = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.6)
    if match:
        return match[0]
    prefixed = [c for c in choices if word.lower().startswith(c) or c.startswith(word.lower())]
    return prefixed[0] if len(word) >= 2 and len(prefixed) == 1 else None


def _choice(enum_cls: type[enum.Enum], kind: str):
    """Before-validator for a str enum: a human message with did-you-mean for unknown values."""
    values = [m.value for m in enum_cls]

    def check(value: Any) -> Any:
        if isinstance(value, enum_cls):
            return value
        if not isinstance(value, str):
            raise _problem(f"expected a string (one of {', '.join(values)}), got {toml_repr(value)}")
        if value not in values:
            hint = closest_choice(value, values)
            msg = f"unknown {kind} {toml_repr(value)}"
            if hint:
                msg += f"; did you mean {hint!r}?"
            raise _problem(f"{msg} (one of {', '.join(values)})")
        return value

    return BeforeValidator(check)


def _ordered(value: tuple) -> tuple:
    if value[0] > value[1]:
        raise _problem(f"range [{toml_repr(value[0])}, {toml_repr(value[1])}] has min > max")
    return value


Num = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite number (TOML integer or float; not a bool, not a string)."""
Int = Annotated[int, Strict()]
"""A TOML integer (not a float, not a bool)."""
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]

PositiveNum = Annotated[Num, Field(gt=0)]
NonNegativeNum = Annotated[Num, Field(ge=0)]
Day = Annotated[Int, Field(ge=0, le=MAX_DAYS)]


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def Ranged(lo: float, hi: float, unit: str = "", *, lo_open: bool = True, hi_open: bool = False,
           integer: bool = False) -> Any:
    """A finite number (or integer) in a physical range; outside it, one message naming the range.

    The check runs before the type's own validation and lets non-numbers through, so a string
    still gets "expected a number"; the JSON Schema carries the same bounds.
    """
    where = _interval(lo, hi, lo_open, hi_open) + (f" {unit}" if unit else "")

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        if isinstance(value, float) and not math.isfinite(value):
            return value
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            raise _problem(f"must be in {where}, got {toml_repr(value)}")
        return value

    bounds = {("gt" if lo_open else "ge"): lo, ("lt" if hi_open else "le"): hi}
    return Annotated[Int if integer else Num, Field(**bounds), BeforeValidator(check)]


# Physical ranges (the reason for each bound is in the field descriptions that use them).
AlphaPerGy = Ranged(0, 2, "1/Gy")
AlphaBetaGy = Ranged(0, 100, "Gy")
DosePerFractionGy = Ranged(0, 100, "Gy")
BedGy = Ranged(0, 5000, "Gy")
Eqd2Gy = Ranged(0, 1000, "Gy")
_ALPHA_WHY = " Range (0, 2] 1/Gy: measured alphas of tumours and tissues lie in 0.01-1 1/Gy."
_AB_WHY = (" Range (0, 100] Gy: measured ratios lie in 0.5-25 Gy; above 100 Gy the LQ model is "
           "linear in practice.")
_DOSE_WHY = (" Range (0, 100] Gy: no fraction delivers more than 100 Gy (single-fraction "
             "radiosurgery uses < 30 Gy); larger values are unit slips (cGy).")
_BED_WHY = (" Range (0, 5000] Gy: above every schedule in use (clinical BEDs < 500 Gy); larger "
            "values are unit slips.")
_EQD2_WHY = " Range (0, 1000] Gy: above every schedule in use (clinical EQD2s < 200 Gy)."

SiteField = Annotated[Site, _choice(Site, "site")]
SurvivalModelField = Annotated[SurvivalModel, _choice(SurvivalModel, "survival model")]
ProductField = Annotated[NKProduct, _choice(NKProduct, "NK product")]
CytokineField = Annotated[CytokineSupport, _choice(CytokineSupport, "cytokine support")]
WeekdayField = Annotated[Weekday, _choice(Weekday, "weekday")]
ObjectiveTermField = Annotated[ObjectiveTerm, _choice(ObjectiveTerm, "objective")]

_RANGE_DOC = "Inclusive range [min, max]."

_STRICT_MODEL = ConfigDict(extra="forbid", frozen=True)

# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _surrogate_field(name: str) -> tuple[Any, Any]:
    spec = SPECS[name]

    def check(value: float) -> float:
        msg = out_of_range(name, value)
        if msg:
            # out_of_range appends the unit; "1" (dimensionless) reads like a stray number.
            raise _problem(msg.removesuffix(" 1") if spec.unit == "1" else msg)
        return value

    return (
        Optional[Annotated[Num, AfterValidator(check)]],
        Field(None, description=f"{spec.description} [{spec.unit}]. Plausible range "
                                f"[{spec.low}, {spec.high}]. Default source: {spec.source}.",
              json_schema_extra={"minimum": spec.low, "maximum": spec.high}),
    )


SurrogateOverrides = create_model(  # type: ignore[call-overload]
    "SurrogateOverrides",
    __config__=_STRICT_MODEL,
    __doc__="Overrides of TME-surrogate parameters by name (rtopt.model.parameters.SPECS); each must lie "
            "in the parameter's plausible range.",
    **{name: _surrogate_field(name) for name in SPECS},
)


class Tumour(BaseModel):
    """The tumour: site, radiobiology and optional overrides of the surrogate parameters."""

    model_config = _STRICT_MODEL

    site: SiteField = Field(description="Tumour site; selects the surrogate preset.")
    alpha_per_gy: AlphaPerGy = Field(description="LQ alpha of oxic tumour cells [1/Gy]."
                                                 + _ALPHA_WHY)
    alpha_beta_gy: AlphaBetaGy = Field(description="Tumour alpha/beta ratio rho [Gy]." + _AB_WHY)
    clonogens: Optional[Ranged(1, 1e13, lo_open=False)] = Field(  # type: ignore[valid-type]
        None, description="Clonogen number N0 before treatment; omit it to use the site's "
                          "outcome-calibrated value (lung), required for other sites. Range "
                          "[1, 1e13]: 1e13 cells is about 10 kg of tumour, beyond any treatable "
                          "tumour.")
    gtv_cc: Optional[Ranged(0, 2000, "cm3")] = Field(  # type: ignore[valid-type]
        None, description="Gross tumour volume [cm3]; with clonogens omitted, the clonogen number "
                          "is the site's outcome-calibrated number scaled by gtv_cc / the "
                          "reference volume of the fit (docs/model.md section 9). Range (0, 2000] "
                          "cm3: a 15 cm sphere; larger values are unit slips (mm3).")
    hypoxic_fraction: Annotated[Num, Field(ge=0, lt=1)] = Field(
        description="Hypoxic fraction h0 before treatment, in [0, 1).")
    survival_model: SurvivalModelField = Field(
        SurvivalModel.lq, description="Cell-survival model: lq (default), lq_l (Astrahan 2008) "
                                      "or usc (Park et al. 2008).")
    transition_dose_gy: Optional[DosePerFractionGy] = Field(
        None, description="Dose per fraction above which survival is log-linear [Gy]; required "
                          "for lq_l, optional for usc (then 2 Dq / (1 - alpha D0))." + _DOSE_WHY)
    usc_d0_gy: Optional[Ranged(0, 20, "Gy")] = Field(  # type: ignore[valid-type]
        None, description="USC final slope D0 [Gy]; required for usc. Range (0, 20] Gy: "
                          "measured D0 values lie in 0.5-5 Gy.")
    usc_dq_gy: Optional[Ranged(0, 20, "Gy")] = Field(  # type: ignore[valid-type]
        None, description="USC quasi-threshold dose Dq [Gy]; required for usc. Range (0, 20] "
                          "Gy: measured Dq values lie in 0.5-5 Gy.")
    repopulation_kickoff_days: Optional[Day] = Field(
        None, description="Day T_k after the first fraction when accelerated repopulation starts "
                          "(give with potential_doubling_days, or neither).")
    potential_doubling_days: Optional[Ranged(0, 365, "days")] = Field(  # type: ignore[valid-type]
        None, description="Potential doubling time T_pot [d] (give with "
                          "repopulation_kickoff_days, or neither). Range (0, 365] days: "
                          "measured T_pot of tumours lies in 1-30 days.")
    surrogate: SurrogateOverrides = Field(  # type: ignore[valid-type]
        default_factory=SurrogateOverrides,
        description="Overrides of TME-surrogate parameters by name.")

    @model_validator(mode="after")
    def _model_parameters(self) -> "Tumour":
        problems: list[tuple[str, str]] = []
        model = self.survival_model
        if model is SurvivalModel.lq_l and self.transition_dose_gy is None:
            problems.append(("transition_dose_gy", "required when survival_model = 'lq_l'"))
        if model is SurvivalModel.usc:
            for key in ("usc_d0_gy", "usc_dq_gy"):
                if getattr(self, key) is None:
                    problems.append((key, "required when survival_model = 'usc'"))
            if (self.transition_dose_gy is None and self.usc_d0_gy is not None
                    and self.alpha_per_gy * self.usc_d0_gy >= 1):
                problems.append(("usc_d0_gy", "alpha_per_gy * usc_d0_gy must be < 1 to derive the "
                                              "transition dose; give transition_dose_gy"))
        if self.clonogens is not None and self.gtv_cc is not None:
            problems.append(("gtv_cc", "give clonogens or gtv_cc, not both (gtv_cc scales the "
                                       "outcome-calibrated clonogen number)"))
        if self.clonogens is None:
            if self.site.value not in OUTCOME:
                why = (f"site {self.site.value!r} has no outcome-calibrated clonogen number"
                       f"{' to scale by gtv_cc' if self.gtv_cc is not None else ''}; only "
                       f"{', '.join(sorted(OUTCOME)) or 'none'} has")
                problems.append(("clonogens", f"missing required key ({why})"))
        kickoff, doubling = self.repopulation_kickoff_days, self.potential_doubling_days
        if (kickoff is None) != (doubling is None):
            missing = "potential_doubling_days" if doubling is None else "repopulation_kickoff_days"
            given = "repopulation_kickoff_days" if doubling is None else "potential_doubling_days"
            problems.append((missing, f"required with {given} (give both or neither)"))
        if problems:
            raise _problems(problems)
        return self

    @property
    def beta_per_gy2(self) -> float:
        """LQ beta = alpha / rho [1/Gy^2]."""
        return self.alpha_per_gy / self.alpha_beta_gy

    @property
    def has_repopulation(self) -> bool:
        """Whether accelerated repopulation is modelled."""
        return self.potential_doubling_days is not None


class Prescription(BaseModel):
    """Tumour prescription: minimum BED and/or EQD2 at the tumour's alpha/beta (no time factor),
    the prescription convention, and optional limits on local control."""

    model_config = _STRICT_MODEL

    min_bed_gy: Optional[BedGy] = Field(
        None, description="Minimum tumour BED, sum d (1 + d/rho) [Gy]." + _BED_WHY)
    min_eqd2_gy: Optional[Eqd2Gy] = Field(
        None, description="Minimum tumour EQD2, BED / (1 + 2/rho) [Gy]." + _EQD2_WHY)
    tumour_dose_ratio: Optional[Ranged(0.5, 2.5)] = Field(  # type: ignore[valid-type]
        None, description="Mean tumour dose / prescribed dose (default 1: an isocentre or ICRU "
                          "point prescription). The tumour is killed by its own dose; the "
                          "prescription and OAR limits stay on the prescribed dose. Range "
                          "(0.5, 2.5]: 1.8 is a prescription to the 50 % isodose line. Give "
                          "this or isodose_percent, not both.")
    isodose_percent: Optional[Ranged(30, 100, "%")] = Field(  # type: ignore[valid-type]
        None, description="The prescription covers the PTV at this isodose line (% of the "
                          "maximum; 80 as in RTOG 0236). Mean tumour dose = 1 + 0.8 (100 / p - 1) "
                          "times the prescription (rtopt.model.standards). Range (30, 100] %.")
    min_local_control: Optional[Ranged(0, 1, hi_open=True)] = Field(  # type: ignore[valid-type]
        None, description="Minimum local control (population tumour control, with NK cells "
                          "when the plan has them) at nominal parameters, in (0, 1).")
    local_control_vs: Optional[Text] = Field(
        None, description="Name of a standard schedule (rtopt/model/data/standard_schedules.toml, "
                          "e.g. '54/3'): the plan's local control must not fall below that "
                          "schedule's (radiotherapy alone, with the source's prescription "
                          "convention) by more than local_control_margin.")
    local_control_margin: Optional[Ranged(0, 1, lo_open=False, hi_open=True)] = Field(  # type: ignore[valid-type]
        None, description="Non-inferiority margin of local_control_vs, in [0, 1) (default 0).")

    @model_validator(mode="after")
    def _not_empty(self) -> "Prescription":
        problems: list[tuple[str, str]] = []
        if self.min_bed_gy is None and self.min_eqd2_gy is None:
            raise _problem("give min_bed_gy and/or min_eqd2_gy")
        if self.tumour_dose_ratio is not None and self.isodose_percent is not None:
            problems.append(("isodose_percent", "give tumour_dose_ratio or isodose_percent, not "
                                                "both (isodose_percent sets the ratio)"))
        if self.local_control_vs is not None:
            from rtopt.model.standards import unknown_standard

            msg = unknown_standard(self.local_control_vs)
            if msg:
                problems.append(("local_control_vs", msg))
        elif self.local_control_margin is not None:
            problems.append(("local_control_margin", "needs local_control_vs (the standard "
                                                     "schedule the margin is measured from)"))
        if problems:
            raise _problems(problems)
        return self

    @property
    def dose_ratio(self) -> float:
        """Mean tumour dose / prescribed dose of this prescription (1 by default)."""
        from rtopt.model.standards import tumour_dose_ratio

        return tumour_dose_ratio(self.isodose_percent, self.tumour_dose_ratio)


class DvhLimit(BaseModel):
    """A limit on one DVH metric of a structure (``[[organ_at_risk.dvh_limit]]``,
    ``[[dvh_plan.target_limit]]``).

    The bound's key carries the metric's unit: ``max_gy``/``min_gy`` for dose metrics (``Dmax``,
    ``D0.1cc``, ``D2cc``, ``Dmean``, ``D95%``), ``max_cc``/``min_cc`` for ``V<x>Gy`` and
    ``CV<x>Gy``, ``max_percent``/``min_percent`` for ``V<x>Gy%``.  A physical-dose metric needs
    ``fractions`` (the fraction count the limit is stated for, as in TG-101's tables); it is
    applied LQ-isoeffectively to schedules of other fraction counts (docs/dose.md).
    """

    model_config = _STRICT_MODEL

    metric: Annotated[Text, Field(min_length=1, max_length=40)] = Field(
        description="DVH metric (rtopt.dose.dvh syntax: Dmax, D0.1cc, D2cc, Dmean, D95%, V20Gy, "
                    "V20Gy%, CV13.5Gy, optionally prefixed EQD2_ or BED_).")
    fractions: Optional[Ranged(1, 100, lo_open=False, integer=True)] = Field(  # type: ignore[valid-type]
        None, description="For a physical-dose metric: the number of fractions the limit is "
                          "stated for (required then; not allowed with EQD2_/BED_). Range [1, 100].")
    max_gy: Optional[Ranged(0, 5000, "Gy")] = Field(None, description="Upper limit [Gy].")  # type: ignore[valid-type]
    min_gy: Optional[Ranged(0, 5000, "Gy")] = Field(None, description="Lower limit [Gy].")  # type: ignore[valid-type]
    max_cc: Optional[Ranged(0, 1e5, "cm^3", lo_open=False)] = Field(None, description="Upper limit [cm^3].")  # type: ignore[valid-type]
    min_cc: Optional[Ranged(0, 1e5, "cm^3", lo_open=False)] = Field(None, description="Lower limit [cm^3].")  # type: ignore[valid-type]
    max_percent: Optional[Ranged(0, 100, "%", lo_open=False)] = Field(None, description="Upper limit [%].")  # type: ignore[valid-type]
    min_percent: Optional[Ranged(0, 100, "%", lo_open=False)] = Field(None, description="Lower limit [%].")  # type: ignore[valid-type]
    source: Annotated[Text, Field(max_length=300)] = Field(
        "", description="Where the limit comes from (e.g. 'TG-101 table III, 3 fractions').")

    @model_validator(mode="after")
    def _consistent(self) -> "DvhLimit":
        from rtopt.dose import DoseError
        from rtopt.dose.dvh import parse_metric

        try:
            m = parse_metric(self.metric)
        except DoseError as exc:
            raise _problems([("metric", str(exc).replace("metric ", "", 1))])
        bounds = [k for k in ("max_gy", "min_gy", "max_cc", "min_cc", "max_percent", "min_percent")
                  if getattr(self, k) is not None]
        unit = {"Gy": "gy", "cc": "cc", "%": "percent"}[m.unit]
        problems: list[tuple[str, str]] = []
        if len(bounds) != 1:
            problems.append(("", f"give exactly one bound: max_{unit} or min_{unit} "
                                 f"(got {', '.join(bounds) or 'none'})"))
        elif not bounds[0].endswith("_" + unit):
            problems.append((bounds[0], f"metric {self.metric!r} is in {m.unit}; use "
                                        f"{bounds[0].split('_')[0]}_{unit}"))
        if m.quantity == "physical" and self.fractions is None:
            problems.append(("fractions", f"required for the physical-dose metric "
                                          f"{self.metric!r} (the fraction count the limit is "
                                          "stated for), or prefix the metric EQD2_ or BED_"))
        if m.quantity != "physical" and self.fractions is not None:
            problems.append(("fractions", f"not allowed with the {m.quantity.upper()} metric "
                                          f"{self.metric!r} (it holds for any fraction count)"))
        if problems:
            raise _problems(problems)
        return self

    @property
    def bound(self) -> tuple[str, float]:
        """``("<=", limit)`` or ``(">=", limit)``."""
        for k in ("max_gy", "max_cc", "max_percent"):
            if getattr(self, k) is not None:
                return "<=", float(getattr(self, k))
        for k in ("min_gy", "min_cc", "min_percent"):
            if getattr(self, k) is not None:
                return ">=", float(getattr(self, k))
        raise AssertionError("validated DvhLimit has a bound")


class NtcpSpec(BaseModel):
    """An NTCP model applied to the organ's fractionation-corrected DVH
    (``[[organ_at_risk.ntcp]]``); ``ntcp:NAME`` in objectives and reports."""

    model_config = _STRICT_MODEL

    name: Annotated[Text, Field(pattern=r"^[a-z0-9]+([-_][a-z0-9]+)*$", max_length=60)] = Field(
        description="Endpoint label (slug), e.g. 'pneumonitis': the metric ntcp.NAME and the "
                    "Pareto objective ntcp:NAME.")
    parameter_set: Annotated[Text, Field(min_length=1, max_length=100)] = Field(
        description="Shipped NTCP parameter set (`rtopt ntcp --list`).")
    max_percent: Optional[Ranged(0, 100, "%")] = Field(  # type: ignore[valid-type]
        None, description="Upper limit on the NTCP [%], optional.")

    @field_validator("parameter_set")
    @classmethod
    def _known_set(cls, value: str) -> str:
        from rtopt.dose.ntcp import parameter_sets

        sets = list(parameter_sets())
        if value not in sets:
            hint = closest_choice(value, sets)
            raise _problem(f"unknown NTCP parameter set {toml_repr(value)}"
                           + (f"; did you mean {hint!r}?" if hint else "")
                           + f" (one of {', '.join(sets)})")
        return value


class OrganAtRisk(BaseModel):
    """An organ at risk: either a ``sparing_factor`` (dose = sparing_factor x tumour dose per
    fraction) with hard limits, or a ``dvh_structure`` of the ``[dvh_plan]`` with DVH limits."""

    model_config = _STRICT_MODEL

    name: Annotated[Text, Field(min_length=1)] = Field(description="Unique OAR name.")
    alpha_beta_gy: AlphaBetaGy = Field(description="OAR alpha/beta ratio [Gy]." + _AB_WHY)
    sparing_factor: Optional[Ranged(0, 1.5)] = Field(  # type: ignore[valid-type]
        None, description="OAR dose per fraction / tumour dose per fraction, in (0, 1.5]: an OAR "
                          "hot spot above 150 % of the prescription is not a deliverable plan. "
                          "Give it or dvh_structure.")
    max_bed_gy: Optional[BedGy] = Field(None, description="Maximum OAR BED [Gy]." + _BED_WHY)
    max_eqd2_gy: Optional[Eqd2Gy] = Field(None, description="Maximum OAR EQD2 [Gy]."
                                                            + _EQD2_WHY)
    max_dose_per_fraction_gy: Optional[DosePerFractionGy] = Field(
        None, description="Maximum OAR dose in any fraction [Gy]." + _DOSE_WHY)
    dvh_structure: Optional[Annotated[Text, Field(min_length=1, max_length=200)]] = Field(
        None, description="Structure of the [dvh_plan] whose DVH this organ is (instead of a "
                          "sparing factor).")
    dvh_limit: list[DvhLimit] = Field(default_factory=list,
                                      description="Limits on DVH metrics (with dvh_structure).")
    ntcp: list[NtcpSpec] = Field(default_factory=list,
                                 description="NTCP models of this organ (with dvh_structure).")

    @model_validator(mode="after")
    def _some_limit(self) -> "OrganAtRisk":
        if self.dvh_structure is not None:
            problems = []
            if self.sparing_factor is not None:
                problems.append(("sparing_factor", "give sparing_factor or dvh_structure, not "
                                                   "both"))
            for k in ("max_bed_gy", "max_eqd2_gy", "max_dose_per_fraction_gy"):
                if getattr(self, k) is not None:
                    problems.append((k, "not used with dvh_structure; state it as a "
                                        "[[organ_at_risk.dvh_limit]] (e.g. metric = "
                                        "'BED_Dmax', max_gy = ...)"))
            if not self.dvh_limit and not self.ntcp:
                problems.append(("dvh_limit", "give at least one [[organ_at_risk.dvh_limit]] "
                                              "or [[organ_at_risk.ntcp]]"))
            names = [x.name for x in self.ntcp]
            for i, nm in enumerate(names):
                if nm in names[:i]:
                    problems.append((f"ntcp[{i}].name", f"duplicate NTCP name {nm!r}"))
            if problems:
                raise _problems(problems)
            return self
        if self.sparing_factor is None:
            raise _problems([("sparing_factor", "missing required key (or give dvh_structure "
                                                "with a [dvh_plan])")])
        for k in ("dvh_limit", "ntcp"):
            if getattr(self, k):
                raise _problems([(k, "needs dvh_structure (a structure of the [dvh_plan])")])
        if self.max_bed_gy is None and self.max_eqd2_gy is None \
                and self.max_dose_per_fraction_gy is None:
            raise _problem("give at least one of max_bed_gy, max_eqd2_gy, max_dose_per_fraction_gy")
        return self

    @property
    def uses_dvh(self) -> bool:
        """Whether this organ is a DVH of the ``[dvh_plan]`` (no sparing factor)."""
        return self.dvh_structure is not None


class BloodDose(BaseModel):
    """Dose to circulating blood from the plan (``[dvh_plan.blood]``; rtopt.dose.blood pass
    model): sets the model parameter ``nk_blood_dose_fraction``."""

    model_config = _STRICT_MODEL

    structure: Annotated[Text, Field(min_length=1, max_length=200)] = Field(
        description="Blood-containing region whose DVH is used (e.g. the body contour).")
    region_blood_volume_l: Ranged(0, 10, "L") = Field(  # type: ignore[valid-type]
        description="Blood in the region [L]. Range (0, 10] L: an adult has about 5 L.")
    flow_fraction_of_cardiac_output: Ranged(0, 1, "") = Field(  # type: ignore[valid-type]
        description="Fraction of the cardiac output crossing the region, in (0, 1].")
    beam_on_time_s: Ranged(0, 7200, "s") = Field(  # type: ignore[valid-type]
        description="Beam-on time of one fraction [s]. Range (0, 7200] s.")


class DvhPlan(BaseModel):
    """A treatment plan's dose distribution (``[dvh_plan]``): DICOM RT Dose + RT Structure Set
    or a DVH text export, paths relative to the instance file.  Candidate schedules keep the
    plan's shape: every voxel's dose per fraction scales with the tumour dose per fraction."""

    model_config = _STRICT_MODEL

    rtdose: Optional[Annotated[Text, Field(min_length=1, max_length=1000)]] = Field(
        None, description="DICOM RT Dose file (with rtstruct).")
    rtstruct: Optional[Annotated[Text, Field(min_length=1, max_length=1000)]] = Field(
        None, description="DICOM RT Structure Set file (with rtdose).")
    export: Optional[Annotated[Text, Field(min_length=1, max_length=1000)]] = Field(
        None, description="DVH text export (Eclipse, RayStation, CSV) instead of DICOM files.")
    prescription_dose_per_fraction_gy: DosePerFractionGy = Field(
        description="The plan's prescription (tumour) dose per fraction [Gy]: the dose the "
                    "plan's shape is scaled from." + _DOSE_WHY)
    fractions: Ranged(1, 100, lo_open=False, integer=True) = Field(  # type: ignore[valid-type]
        description="The plan's number of fractions (its dose is the total over them). "
                    "Range [1, 100].")
    target_structure: Optional[Annotated[Text, Field(min_length=1, max_length=200)]] = Field(
        None, description="The tumour's structure (e.g. 'PTV'): its metrics are reported at "
                          "the tumour's alpha/beta and target_limit applies to it.")
    target_limit: list[DvhLimit] = Field(default_factory=list,
                                         description="Limits on the target's DVH metrics.")
    sampling_mm: Ranged(0.25, 5, "mm", lo_open=False) = Field(  # type: ignore[valid-type]
        1.0, description="In-plane sampling of DICOM structures [mm] (default 1 mm: volumes "
                         "within about 0.5 % for structures of a few cm^3 and more). Range "
                         "[0.25, 5] mm: finer sampling only costs time (a plane is capped at "
                         "400 000 samples); coarser misses small structures.")
    bin_width_gy: Ranged(0.001, 1, "Gy", lo_open=False) = Field(  # type: ignore[valid-type]
        0.01, description="DVH bin width of DICOM plans [Gy]. Range [0.001, 1] Gy: finer bins "
                          "than 1 mGy only cost memory; coarser than 1 Gy blur the metrics.")
    blood: Optional[BloodDose] = Field(None, description="Blood dose from the plan (sets "
                                                         "nk_blood_dose_fraction).")

    @model_validator(mode="after")
    def _source(self) -> "DvhPlan":
        dicom = self.rtdose is not None or self.rtstruct is not None
        if dicom and self.export is not None:
            raise _problems([("export", "give rtdose + rtstruct or export, not both")])
        if not dicom and self.export is None:
            raise _problem("give rtdose and rtstruct (DICOM) or export (DVH text export)")
        if dicom and (self.rtdose is None or self.rtstruct is None):
            missing = "rtstruct" if self.rtstruct is None else "rtdose"
            raise _problems([(missing, "missing required key (DICOM needs rtdose and "
                                       "rtstruct)")])
        if self.target_limit and self.target_structure is None:
            raise _problems([("target_structure", "required with target_limit")])
        return self

    def structures(self, organs: list["OrganAtRisk"]) -> list[tuple[str, str]]:
        """``(field path, structure name)`` of every structure the instance names."""
        out = []
        if self.target_structure is not None:
            out.append(("dvh_plan.target_structure", self.target_structure))
        if self.blood is not None:
            out.append(("dvh_plan.blood.structure", self.blood.structure))
        for i, o in enumerate(organs):
            if o.dvh_structure is not None:
                out.append((f"organ_at_risk[{i}].dvh_structure", o.dvh_structure))
        return out


_Count1 = Ranged(1, MAX_DAYS, lo_open=False, integer=True)
_Count0 = Ranged(0, MAX_DAYS, lo_open=False, integer=True)
IntRange1 = Annotated[tuple[_Count1, _Count1], AfterValidator(_ordered)]
IntRange0 = Annotated[tuple[_Count0, _Count0], AfterValidator(_ordered)]
DoseRange = Annotated[tuple[DosePerFractionGy, DosePerFractionGy], AfterValidator(_ordered)]


def _unique_weekdays(days: list[Weekday]) -> list[Weekday]:
    seen: set[Weekday] = set()
    for day in days:
        if day in seen:
            raise _problem(f"duplicate weekday {day.value!r}")
        seen.add(day)
    return days


_ALL_WEEKDAYS = [Weekday(w) for w in calendar.WEEKDAYS]


class Fractionation(BaseModel):
    """Fraction number and size limits and the treatment calendar."""

    model_config = _STRICT_MODEL

    n_fractions: IntRange1 = Field(description="Number of fractions, " + _RANGE_DOC)
    dose_per_fraction_gy: DoseRange = Field(description="Tumour dose per fraction [Gy], "
                                                        + _RANGE_DOC + _DOSE_WHY)
    dose_step_gy: Ranged(0, 100, "Gy", lo_open=False) = Field(  # type: ignore[valid-type]
        0.0, description="Dose grid step [Gy]; doses are multiples of it; 0 = continuous. "
                         "0 or in [0.0001, 100] Gy: finer steps are far below delivery "
                         "precision (~0.01 Gy); 100 Gy is the largest dose per fraction.")
    prescription_step_gy: Ranged(0, 1, "Gy", lo_open=False) = Field(  # type: ignore[valid-type]
        0.01, description="With dose_step_gy = 0: the dose grid of the plans rtopt writes "
                          "[Gy]; solver doses are rounded to it and the rounded plan is "
                          "verified (0 = every digit kept, for analytic test instances).")
    uniform_dose: Bool = Field(True, description="All fractions get the same dose.")
    treatment_weekdays: Annotated[list[WeekdayField], Field(min_length=1),
                                  AfterValidator(_unique_weekdays)] = Field(
        default_factory=lambda: _ALL_WEEKDAYS[:5],
        description="Weekdays on which fractions may be given (default mon..fri).")
    start_weekday: WeekdayField = Field(Weekday.mon, description="Weekday of calendar day 0.")
    min_interval_days: Annotated[Int, Field(ge=1, le=MAX_DAYS)] = Field(
        1, description="Minimum days between consecutive fractions.")
    max_overall_days: Annotated[Int, Field(ge=0, le=MAX_DAYS)] = Field(
        description="Maximum elapsed days from the first to the last fraction.")
    horizon_days: Annotated[Int, Field(ge=1, le=MAX_DAYS)] = Field(
        description="Simulated horizon: days 0 .. horizon_days; fractions on days "
                    "0 .. horizon_days - 1.")

    @model_validator(mode="after")
    def _feasible_calendar(self) -> "Fractionation":
        problems: list[tuple[str, str]] = []
        lo, hi = self.dose_per_fraction_gy
        step = self.dose_step_gy
        if 0 < step < MIN_DOSE_STEP_GY:
            problems.append(("dose_step_gy", (
                f"must be 0 (continuous) or in [{MIN_DOSE_STEP_GY:g}, 100] Gy, got {toml_repr(step)}: "
                "finer steps are far below delivery precision (~0.01 Gy)")))
        elif step > 0 and not _grid_point_in(lo, hi, step):
            problems.append(("dose_step_gy", f"no multiple of {_num(step)} Gy lies in "
                                             f"dose_per_fraction_gy [{_num(lo)}, {_num(hi)}]"))
        n_min, n_max = self.n_fractions
        fit = calendar.max_fractions_that_fit(calendar.allowed_fraction_days(self),
                                              self.min_interval_days, self.max_overall_days)
        if self.max_overall_days > self.horizon_days and fit >= n_min:
            problems.append(("max_overall_days", (
                f"the treatment window of {self.max_overall_days} days is longer than "
                f"horizon_days {self.horizon_days} (fractions fall on days "
                f"0..{self.horizon_days - 1}); raise horizon_days to at least "
                f"{self.max_overall_days} or lower max_overall_days")))
        if n_min <= fit < n_max:
            days = ", ".join(d.value for d in self.treatment_weekdays)
            problems.append(("n_fractions", (
                f"at most {fit} fraction(s) fit in the calendar ({days}, at least "
                f"{self.min_interval_days} day(s) apart, within max_overall_days "
                f"{self.max_overall_days} and horizon_days {self.horizon_days}); the maximum "
                f"{n_max} cannot be reached")))
        if fit < n_min:
            days = ", ".join(d.value for d in self.treatment_weekdays)
            every = f"at least {self.min_interval_days} day(s) apart"
            # Would the schedule fit with an unlimited horizon?  The weekday pattern repeats
            # weekly, so a horizon of max_overall_days + 7 days is unlimited for this question.
            free = calendar.allowed_days(self.max_overall_days + 8, self.treatment_weekdays,
                                         self.start_weekday)
            fit_free = calendar.max_fractions_that_fit(free, self.min_interval_days,
                                                       self.max_overall_days)
            if fit_free < n_min:
                problems.append(("max_overall_days", (
                    f"only {fit_free} fraction(s) fit within {self.max_overall_days} overall "
                    f"days on {days}, {every}; n_fractions needs at least {n_min}")))
            else:
                problems.append(("horizon_days", (
                    f"horizon too short: only {fit} fraction(s) fit on days "
                    f"0..{self.horizon_days - 1} ({days}, day 0 a {self.start_weekday.value}, "
                    f"{every}); n_fractions needs at least {n_min}")))
        if problems:
            raise _problems(problems)
        return self


def _grid_point_in(lo: float, hi: float, step: float) -> bool:
    """Whether some k * step (k integer) lies in [lo, hi], with a tolerance for float steps."""
    ratio = lo / step
    if not math.isfinite(ratio) or ratio > 1e15:
        return True  # step negligibly small: effectively continuous
    k = math.ceil(ratio - 1e-9)
    return k * step <= hi * (1 + 1e-12) + 1e-12


class NKTherapy(BaseModel):
    """NK-cell product, cytokine support and infusion limits; absent = no NK cells modelled."""

    model_config = _STRICT_MODEL

    product: ProductField = Field(description="NK-cell product preset.")
    cytokine_support: CytokineField = Field(CytokineSupport.none,
                                            description="Post-infusion cytokine support.")
    n_infusions: IntRange0 = Field(description="Number of infusions, " + _RANGE_DOC)
    earliest_day: Day = Field(0, description="Earliest infusion day.")
    latest_day: Optional[Day] = Field(None, description="Latest infusion day (default "
                                                        "horizon_days - 1).")
    min_interval_days: Annotated[Int, Field(ge=1, le=MAX_DAYS)] = Field(
        1, description="Minimum days between infusions.")
    min_days_before_next_fraction: Annotated[Int, Field(ge=0, le=MAX_DAYS)] = Field(
        0, description="No infusion on day t when a fraction falls on day f with "
                       "t < f <= t + this many days.")

    @model_validator(mode="after")
    def _window(self) -> "NKTherapy":
        if self.latest_day is not None and self.earliest_day > self.latest_day:
            raise _problems([("earliest_day", f"day {self.earliest_day} is after latest_day "
                                              f"{self.latest_day}")])
        return self


class Objective(BaseModel):
    """What to maximise: one quantity (``maximise``) or a weighted sum (``weights``)."""

    model_config = _STRICT_MODEL

    maximise: Optional[ObjectiveTermField] = Field(None, description="The quantity to maximise.")
    weights: Optional[dict[ObjectiveTermField,  # type: ignore[valid-type]
                           Ranged(0, 1e6, lo_open=False)]] = Field(
        None, description="Weights of a weighted sum to maximise (non-negative, one > 0). "
                          "Range [0, 1e6]: only ratios matter; larger weights risk overflow.")
    tcp_model: Literal["population", "per_patient"] = Field(
        "population", description="What the 'tcp' term optimises: 'population' (local control, "
        "Poisson TCP averaged over the patients' spread of radiosensitivity; what clinical series "
        "report) or 'per_patient' (Poisson TCP at the nominal alpha).")
    cost_per_fraction: Ranged(0, 1e6, lo_open=False) = Field(  # type: ignore[valid-type]
        0.0, description="Subtracted from the objective for each fraction (one fraction per "
        "treatment day, so also the cost of a treatment day), in objective units; keeps the "
        "optimiser from taking the most fractions the rules allow for a small gain. Range "
        "[0, 1e6], like the weights.")
    cost_per_overall_day: Ranged(0, 1e6, lo_open=False) = Field(  # type: ignore[valid-type]
        0.0, description="Subtracted from the objective for each elapsed day from the first to "
        "the last fraction, in objective units. Range [0, 1e6], like the weights.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Objective":
        if (self.maximise is None) == (self.weights is None):
            raise _problem("give exactly one of maximise or weights")
        if self.weights is not None and not any(w > 0 for w in self.weights.values()):
            raise _problems([("weights", "at least one weight must be > 0")])
        return self

    @property
    def terms(self) -> dict[str, float]:
        """``{term: weight}``; ``maximise = X`` gives ``{X: 1.0}``."""
        if self.maximise is not None:
            return {self.maximise.value: 1.0}
        return {k.value: float(v) for k, v in (self.weights or {}).items()}


def _unique_oar_names(oars: list[OrganAtRisk]) -> list[OrganAtRisk]:
    first: dict[str, int] = {}
    problems = []
    for i, oar in enumerate(oars):
        if oar.name in first:
            problems.append((f"[{i}].name", f"duplicate name {oar.name!r} (also "
                                            f"organ_at_risk[{first[oar.name]}])"))
        else:
            first[oar.name] = i
    if problems:
        raise _problems(problems)
    return oars


_SLUG = r"^[a-z0-9]+([-_][a-z0-9]+)*$"


MAX_OARS = 100
"""Most organs at risk an instance may list: clinical plans constrain a few dozen at most; an
instance with 20,000 took 22 s to fail."""


class Instance(BaseModel):
    """A complete rtopt problem instance (``schema_version = 1``)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, title="rtopt instance",
        json_schema_extra={"description": "Radiotherapy schedule optimisation instance for "
                                          "rtopt (TOML, schema_version 1)."})

    schema_version: Literal[1] = Field(description="Instance format version; must be 1.")
    name: Annotated[Text, Field(pattern=_SLUG, max_length=100)] = Field(
        description="Slug: lower-case letters and digits joined by '-' or '_' (at most 100 "
                    "characters: it names result files).")
    description: Annotated[Text, Field(max_length=2000)] = Field(
        "", description="One-line human description (at most 2000 characters).")
    tumour: Tumour
    prescription: Prescription
    organ_at_risk: Annotated[list[OrganAtRisk], Field(max_length=MAX_OARS),
                             AfterValidator(_unique_oar_names)] = Field(
        default_factory=list, description=f"Organs at risk (names unique; at most {MAX_OARS}).")
    fractionation: Fractionation
    nk: Optional[NKTherapy] = Field(None, description="NK-cell therapy; absent = no NK cells.")
    objective: Objective
    dvh_plan: Optional[DvhPlan] = Field(
        None, description="A plan's dose distribution: organs at risk may name its structures "
                          "(dvh_structure) instead of a sparing factor (docs/dose.md).")
    uncertainty: Optional[dict[str, Any]] = Field(
        None, description="Distributions of uncertain parameters by name, overriding the "
                          "defaults (rtopt.model.uncertainty; `rtopt model params` lists them).")

    @field_validator("uncertainty")
    @classmethod
    def _uncertainty_table(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value

        problems = validate_table(value, info.data.get("tumour"))
        if problems:
            raise _problems(problems)
        return value

    @model_validator(mode="after")
    def _cross_sections(self) -> "Instance":
        problems = _cross_section_problems(self.fractionation, self.nk, self.objective,
                                           nk_given=self.nk is not None)
        problems += _dvh_cross_problems(self)
        if problems:
            raise _problems(problems)
        return self

    # ---- helpers for the optimiser -----------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths of the instance (``[dvh_plan]`` files) start from: the
        instance file's folder, or the working directory for instances built from dicts."""
        return _BASE_DIRS.get(id(self), (Path("."), "<dict>"))[0]

    @property
    def source(self) -> str:
        """The file the instance was read from (``"<dict>"`` otherwise), for messages."""
        return _BASE_DIRS.get(id(self), (Path("."), "<dict>"))[1]

    def with_base_dir(self, folder: str | Path, source: str | None = None) -> "Instance":
        """Resolve this instance's relative paths from ``folder`` (returns self); ``source``
        names the file in messages (default: the previous one).

        Kept outside the model's fields so that an instance equals its round trip through
        :meth:`to_dict` (the folder is where the file was read, not part of its content)."""
        if id(self) not in _BASE_DIRS:
            weakref.finalize(self, _BASE_DIRS.pop, id(self), None)
        _BASE_DIRS[id(self)] = (Path(folder), source or self.source)
        return self

    @property
    def uses_dvh(self) -> bool:
        """Whether some organ at risk is a DVH of the ``[dvh_plan]``."""
        return any(o.uses_dvh for o in self.organ_at_risk)

    @property
    def has_nk(self) -> bool:
        """Whether NK cells are modelled (an ``[nk]`` table is present)."""
        return self.nk is not None

    @property
    def objective_weights(self) -> dict[str, float]:
        """Objective as ``{term: weight}``; ``maximise = X`` gives ``{X: 1.0}``."""
        return self.objective.terms

    @property
    def nk_latest_day(self) -> int | None:
        """Latest infusion day (``nk.latest_day`` or ``horizon_days - 1``); None without NK."""
        if self.nk is None:
            return None
        if self.nk.latest_day is not None:
            return self.nk.latest_day
        return self.fractionation.horizon_days - 1

    def surrogate_overrides(self) -> dict[str, float]:
        """The ``[tumour.surrogate]`` values that the file sets."""
        return self.tumour.surrogate.model_dump(exclude_none=True)

    def surrogate_parameters(self):
        """Resolve the TME-surrogate parameters: site, NK product, cytokine support, overrides.

        Returns
        -------
        rtopt.model.parameters.SurrogateParameters
        """
        product = self.nk.product.value if self.nk is not None else None
        cytokine = self.nk.cytokine_support.value if self.nk is not None else "none"
        return resolve(self.tumour.site.value, product, cytokine, self.surrogate_overrides())

    # ---- round trips ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the file layout (no None values; enums as strings, ranges as lists)."""
        data = self.model_dump(mode="json", exclude_none=True)
        if not data["tumour"].get("surrogate"):
            data["tumour"].pop("surrogate", None)
        return data

    def to_toml(self) -> str:
        """TOML text that :func:`load_instance` reads back to an equal instance."""
        import tomli_w

        text = tomli_w.dumps(self.to_dict())
        # tomli_w writes one array item per line; ranges and weekday lists read better inline.
        return _INLINE_ARRAY.sub(
            lambda m: "[" + ", ".join(line.strip()[:-1] for line in m[1].splitlines()) + "]",
            text)


_INLINE_ARRAY = re.compile(r"\[\n((?:    [^\[\]{}\n]+,\n)+)\]")


_BASE_DIRS: dict[int, tuple[Path, str]] = {}
"""Folder and name of each loaded instance's file, by ``id`` (removed with the instance)."""


def _dvh_cross_problems(inst: "Instance") -> list[tuple[str, str]]:
    """Rules between ``[dvh_plan]``, the organs and ``[tumour.surrogate]`` (no file access)."""
    problems: list[tuple[str, str]] = []
    for i, o in enumerate(inst.organ_at_risk):
        if o.dvh_structure is not None and inst.dvh_plan is None:
            problems.append((f"organ_at_risk[{i}].dvh_structure",
                             "needs a [dvh_plan] table (the plan the structure belongs to)"))
    seen: dict[str, str] = {}
    for i, o in enumerate(inst.organ_at_risk):
        for j, x in enumerate(o.ntcp):
            if x.name in seen:
                problems.append((f"organ_at_risk[{i}].ntcp[{j}].name",
                                 f"duplicate NTCP name {x.name!r} (also {seen[x.name]})"))
            else:
                seen[x.name] = f"organ_at_risk[{i}].ntcp"
    plan = inst.dvh_plan
    if plan is not None and plan.blood is not None and \
            inst.tumour.surrogate.nk_blood_dose_fraction is not None:
        problems.append(("tumour.surrogate.nk_blood_dose_fraction",
                         "set by [dvh_plan.blood] from the plan's blood dose; remove one"))
    return problems


def _listed(names: list[str], limit: int = 200) -> str:
    """Names joined by commas, cut to about ``limit`` characters ("... and N more")."""
    out, used = [], 0
    for i, n in enumerate(names):
        if used + len(n) > limit and out:
            return ", ".join(out) + f" and {len(names) - i} more"
        out.append(n)
        used += len(n) + 2
    return ", ".join(out)


def check_dvh_files(inst: "Instance") -> list[tuple[str, str]]:
    """File-level checks of ``[dvh_plan]``: files exist (named with the path tried) and every
    named structure is in them (with "did you mean").  Reads the structure set or export."""
    plan = inst.dvh_plan
    if plan is None:
        return []
    base = inst.base_dir
    problems: list[tuple[str, str]] = []
    keys = ("rtdose", "rtstruct") if plan.export is None else ("export",)
    paths = {}
    for k in keys:
        p = base / getattr(plan, k)
        if not p.is_file():
            shown = str(p) if len(str(p)) <= 160 else f"...{str(p)[-150:]}"
            problems.append((f"dvh_plan.{k}", f"file not found: {shown}"))
        paths[k] = p
    if not paths[keys[-1]].is_file():  # the file with the structure names
        return problems
    from rtopt.dose import DoseError

    try:
        if plan.export is None:
            from rtopt.dose.dicom import read_rtstruct

            names = list(read_rtstruct(paths["rtstruct"]).structures)
            where = paths["rtstruct"]
        else:
            from rtopt.dose.exports import read_dvh_export

            names = [h.name for h in read_dvh_export(paths["export"])]
            where = paths["export"]
    except DoseError as exc:
        return problems + [(f"dvh_plan.{keys[-1]}", str(exc))]
    where = str(where) if len(str(where)) <= 160 else f"...{str(where)[-150:]}"
    for field, name in plan.structures(list(inst.organ_at_risk)):
        if name not in names:
            hint = difflib.get_close_matches(name, names, n=1, cutoff=0.5) or \
                [n for n in names if n.lower() == name.lower()]
            problems.append((field, f"structure {toml_repr(name)} is not in {where}"
                                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                                    + f" (it has {_listed(names)})"))
    return problems


def _cross_section_problems(fractionation: Fractionation | None, nk: NKTherapy | None,
                            objective: Objective | None, nk_given: bool) -> list[tuple[str, str]]:
    """Rules that span sections; a section is None when absent or invalid (rule skipped)."""
    problems: list[tuple[str, str]] = []
    if objective is not None and not nk_given:
        if objective.maximise in NK_OBJECTIVES:
            problems.append(("objective.maximise", f"{objective.maximise.value!r} needs an [nk] "
                                                   "table (no NK cells are modelled without it)"))
        for term, weight in (objective.weights or {}).items():
            if term in NK_OBJECTIVES and weight > 0:
                problems.append((f"objective.weights.{term.value}",
                                 f"{term.value!r} needs an [nk] table (no NK cells are modelled "
                                 "without it)"))
    if fractionation is not None and nk is not None:
        last = fractionation.horizon_days - 1
        latest = nk.latest_day if nk.latest_day is not None else last
        ok = True
        if nk.earliest_day > last:
            problems.append(("nk.earliest_day", f"day {nk.earliest_day} is beyond the horizon "
                                                f"(last day {last})"))
            ok = False
        if nk.latest_day is not None and nk.latest_day > last:
            problems.append(("nk.latest_day", f"day {nk.latest_day} is beyond the horizon "
                                              f"(last day {last})"))
            ok = False
        n_min, n_max = nk.n_infusions
        room = (latest - nk.earliest_day) // nk.min_interval_days + 1 \
            if latest >= nk.earliest_day else 0
        if ok and latest >= nk.earliest_day and n_min >= 2 \
                and (n_min - 1) * nk.min_interval_days > latest - nk.earliest_day:
            problems.append(("nk.n_infusions", (
                f"{n_min} infusions at least {nk.min_interval_days} day(s) apart do not fit "
                f"between day {nk.earliest_day} and day {latest}")))
        elif ok and latest >= nk.earliest_day and n_max > room:
            problems.append(("nk.n_infusions", (
                f"at most {room} infusion(s) at least {nk.min_interval_days} day(s) apart fit "
                f"between nk.earliest_day {nk.earliest_day} and day {latest} "
                f"({'nk.latest_day' if nk.latest_day is not None else 'the horizon'}); "
                f"the maximum {n_max} cannot be reached")))
    if nk is not None and objective is not None and nk.n_infusions[1] == 0:
        terms = objective.terms
        if any(t in {x.value for x in NK_OBJECTIVES} and w > 0 for t, w in terms.items()):
            problems.append(("nk.n_infusions", "the objective maximises NK favourability but "
                                               "n_infusions allows no infusion (maximum 0)"))
    return problems


# --------------------------------------------------------------------------------------------
# Loading and error reporting
# --------------------------------------------------------------------------------------------

def load_instance(path: str | Path) -> Instance:
    """Read and validate an instance file.

    Parameters
    ----------
    path : str or path-like
        TOML file.

    Returns
    -------
    Instance

    Raises
    ------
    rtopt.common.errors.InstanceError
        With every problem found (file problems have the field path ``""``).
    """
    source = str(path)
    data = load_toml(path, what="instance file")
    source = short(source, 200)
    if not data:
        raise InstanceError(source, [("", "empty file: no instance settings")])
    inst = instance_from_dict(data, source=source)
    inst.with_base_dir(Path(path).parent, source)
    problems = check_dvh_files(inst)
    if problems:
        raise InstanceError(source, problems)
    return inst


def instance_from_dict(data: Any, source: str = "<dict>") -> Instance:
    """Validate a dict (as read from TOML) into an :class:`Instance`.

    Parameters
    ----------
    data : dict
        Instance contents in the file layout.
    source : str
        Name used in error messages (a file path, or ``"<dict>"``).

    Returns
    -------
    Instance

    Raises
    ------
    rtopt.common.errors.InstanceError
        With every problem found, each as ``(field_path, message)``.
    """
    if not isinstance(data, dict):
        raise InstanceError(source, [("", f"expected a table of instance settings, got "
                                          f"{toml_repr(data)}")])
    problems: list[tuple[str, str]] = []
    if "schema_version" not in data:
        problems.append(("", f"schema_version missing; add 'schema_version = {SCHEMA_VERSION}' "
                             "at the top"))
        data = {"schema_version": SCHEMA_VERSION, **data}
    else:
        version = data["schema_version"]
        if not (type(version) is int and version == SCHEMA_VERSION):
            raise InstanceError(source, [("", f"unsupported schema_version {toml_repr(version)}; this "
                                              f"rtopt reads schema_version = {SCHEMA_VERSION}")])
    try:
        instance = Instance.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
        if not any(e["type"] == "rtopt_problems" and not e["loc"] for e in exc.errors()):
            # Field errors stopped the cross-section rules: run them on the sections that
            # validate on their own, so one pass reports everything.
            problems.extend(_partial_cross_problems(data))
    else:
        if not problems:
            return instance
    raise InstanceError(source, _dedupe(problems))


def _dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(problems))


_MISSING = object()


def _partial_cross_problems(data: dict) -> list[tuple[str, str]]:
    def section(model: type[BaseModel], key: str) -> Any:
        if key not in data:
            return _MISSING
        try:
            return model.model_validate(data[key])
        except ValidationError:
            return None
        except Exception:  # pragma: no cover - defensive: never let a rule hide the report
            return None

    fr, nk, obj = (section(Fractionation, "fractionation"), section(NKTherapy, "nk"),
                   section(Objective, "objective"))
    try:
        return _cross_section_problems(
            fr if isinstance(fr, Fractionation) else None,
            nk if isinstance(nk, NKTherapy) else None,
            obj if isinstance(obj, Objective) else None,
            nk_given=nk is not _MISSING)
    except Exception:  # pragma: no cover - defensive
        return []


def field_path(loc: tuple) -> str:
    """A pydantic error location as the field path of the file (``oars[1].max_bed_gy``)."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = str(part)
            if len(key) > 60:
                key = f"{key[:40]}...({len(key)} characters)"
            if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
                key = json.dumps(key, ensure_ascii=False)
            out += f".{key}" if out else key
    return out


def _join(base: str, rel: str) -> str:
    if not base:
        return rel
    if not rel:
        return base
    return base + rel if rel.startswith("[") else f"{base}.{rel}"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class validating the table at ``loc`` (None if not a model)."""
    cls: Any = Instance
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        cls = _find_model(field.annotation)
        if cls is None:
            return None
    return cls


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


_RANGE_KEYS = {"n_fractions", "dose_per_fraction_gy", "n_infusions"}


def _problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic errors into ``(path, message)`` pairs with short human messages."""
    errors = exc.errors(include_url=False)
    out: list[tuple[str, str]] = []
    suggested: set[tuple] = set()  # (parent loc..., key) that an unknown key probably meant
    for err in errors:
        if err["type"] == "extra_forbidden":
            model = _model_at(tuple(err["loc"][:-1]))
            if model is not None:
                hint = closest_choice(str(err["loc"][-1]), list(model.model_fields))
                if hint:
                    suggested.add((*err["loc"][:-1], hint))
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "missing" and loc in suggested:
            continue  # reported as "unknown key ...; did you mean ...?"
        try:
            out.extend(describe_error(err))
        except Exception:  # pragma: no cover - a message is better than a crash
            out.append((field_path(loc), str(err.get("msg", "invalid value"))))
    return out


def describe_error(err: dict) -> list[tuple[str, str]]:
    """One pydantic validation error as ``(field path, message)`` lines for people."""
    kind = err["type"]
    loc = tuple(err["loc"])
    path = field_path(loc)
    value = err.get("input")
    ctx = err.get("ctx") or {}
    got = f", got {toml_repr(value)}"
    if kind == "rtopt_problems":
        return [(_join(path, p), m) for p, m in ctx["problems"]]
    if kind == "rtopt":
        return [(path, ctx.get("message", err["msg"]))]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = field_path(loc[:-1])
        model = _model_at(loc[:-1])
        known = list(model.model_fields) if model is not None else []
        hint = closest_choice(key, known)
        shown = toml_repr(key)
        if hint:
            msg = f"unknown key {shown}; did you mean {hint!r}?"
        elif known:
            msg = f"unknown key {shown} (known keys: {', '.join(known)})"
        else:
            msg = f"unknown key {shown}"
        if model is not None and model.__name__ == "SurrogateOverrides":
            msg = msg.replace("unknown key", "unknown surrogate parameter", 1)
            if not hint:
                msg = f"unknown surrogate parameter {shown} (see rtopt.model.parameters.SPECS)"
        return [(_join(parent, field_path((key,))), msg)]
    if kind == "missing":
        if loc and isinstance(loc[-1], int) and len(loc) >= 2 and loc[-2] in _RANGE_KEYS:
            n = len(value) if isinstance(value, (list, tuple)) else "fewer"
            return [(field_path(loc[:-1]), f"expected a range [min, max] of 2 values, got {n} "
                                      "value(s)")]
        if _model_at(loc) is not None:
            return [(path, "missing required table")]
        return [(path, "missing required key")]
    if kind in ("float_type", "float_parsing"):
        return [(path, "expected a number" + got)]
    if kind == "finite_number":
        return [(path, "must be a finite number" + got)]
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return [(path, "expected an integer" + got)]
    if kind in ("bool_type", "bool_parsing"):
        return [(path, "expected true or false" + got)]
    if kind in ("string_type", "string_sub_type"):
        return [(path, "expected a string" + got)]
    if kind in ("model_type", "model_attributes_type", "dict_type", "mapping_type"):
        return [(path, "expected a table" + got)]
    if kind in ("list_type", "tuple_type", "iterable_type", "set_type"):
        if loc and loc[-1] in _RANGE_KEYS:
            return [(path, "expected a range [min, max]" + got)]
        return [(path, "expected an array" + got)]
    if kind in ("too_short", "too_long"):
        if ctx.get("field_type") == "Tuple" or (loc and loc[-1] in _RANGE_KEYS):
            n = ctx.get("actual_length")
            return [(path, f"expected a range [min, max] of 2 values, got {n} value(s)")]
        if kind == "too_short" and ctx.get("min_length") == 1:
            return [(path, "must not be empty")]
        return [(path, err["msg"].replace("List should have", "must have"))]
    if kind == "greater_than":
        return [(path, f"must be > {_num(ctx['gt'])}")]
    if kind == "greater_than_equal":
        return [(path, f"must be >= {_num(ctx['ge'])}")]
    if kind == "less_than":
        return [(path, f"must be < {_num(ctx['lt'])}")]
    if kind == "less_than_equal":
        return [(path, f"must be <= {_num(ctx['le'])}")]
    if kind == "string_pattern_mismatch":
        return [(path, "must be a slug: lower-case letters and digits joined by '-' or '_'"
                 + got)]
    if kind == "string_too_short":
        return [(path, "must not be empty")]
    if kind == "string_too_long":
        n = len(value) if isinstance(value, str) else "more"
        return [(path, f"must have at most {ctx.get('max_length')} characters, got {n}")]
    if kind == "literal_error":
        return [(path, f"must be {ctx.get('expected', 'one of the allowed values')}" + got)]
    if kind == "value_error":
        return [(path, str(err["msg"]).removeprefix("Value error, "))]
    msg = str(err["msg"]).replace("Input should be", "must be")
    return [(path, msg + got)]


# --------------------------------------------------------------------------------------------
# JSON Schema
# --------------------------------------------------------------------------------------------


class _TomlJsonSchema(GenerateJsonSchema):
    """JSON Schema of the file format: TOML has no null, so optional keys are simply omitted."""

    def nullable_schema(self, schema):  # noqa: D102 - pydantic hook
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema):  # noqa: D102 - pydantic hook
        if schema.get("default", object()) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)


def instance_json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of instance files, for editors and checkers.

    Cross-field rules (exactly one objective form, calendar feasibility, ...) are beyond JSON
    Schema; :func:`load_instance` checks them.
    """
    schema = Instance.model_json_schema(schema_generator=_TomlJsonSchema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "rtopt instance (schema_version 1)",
        "description": "Radiotherapy schedule optimisation instance for rtopt, written in TOML. "
                       "Cross-field rules are checked by `rtopt validate`.",
    }
