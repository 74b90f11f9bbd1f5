"""Course records: what has happened so far in a treatment (``rtopt update``, ``rtopt replan``).

A course file (TOML, ``schema_version = 1``) sits beside its instance and states the instance it
belongs to, ``today`` (the first day not yet decided; day 0 is the instance's day 0, its
``start_weekday``), the fractions delivered (day, dose), the NK infusions given (day, product)
and the observations made, each with its uncertainty::

    schema_version = 1
    instance = "lung-sbrt-peripheral"
    today = 3

    [[fraction]]
    day = 0
    dose_gy = 10.0

    [[infusion]]
    day = 1
    product = "il15_expanded"

    [[observation]]
    day = 3
    quantity = "hypoxic_fraction"     # FMISO PET
    value = 0.30
    sd = 0.04

Conventions:

* Delivered fractions and infusions lie on days before ``today``; the re-plan decides the days
  from ``today`` on.
* An observation on day ``d`` is the state at the start of that day, before its fraction and
  infusion (as in the calibration table, ``rtopt/model/data/observations.toml``); ``d <= today``.
* Quantities (:data:`QUANTITIES`): ``hypoxic_fraction`` (FMISO hypoxic fraction, in [0, 1]),
  ``hypoxic_volume_ratio`` (FMISO hypoxic volume over its baseline; tumour shrinkage ignored,
  as in the calibration), ``tumour_volume_ratio`` (volume over baseline; needs
  ``clearance_half_life_days``, see :mod:`rtopt.decisions.adaptive`), ``nk_blood`` (NK cells in blood per
  standard infusion, the model's unit) and ``chemokine`` (CXCL10 signal in the model's unit).

:func:`load_course` validates a file against its instance and raises one
:class:`CourseError` (an :class:`rtopt.common.errors.InstanceError`) listing every problem, one line
each: ``FILE: field.path: message``.  A delivered course that breaks the instance's rules
(dose range or grid, weekdays, intervals, OAR dose per fraction or BED already over its limit,
NK rules) is an error; rules a course can still meet later (fraction and infusion minimum
counts, the prescription) are not checked on the delivered part.  The checks are the
instance's own constraint slacks (:meth:`rtopt.problem.problem.Problem.evaluate`), not a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr,
                      ValidationError)

from rtopt.common.errors import InstanceError
from rtopt.common.fileio import InputFileError, load_toml
from rtopt.problem.instance import (closest_choice, describe_error, field_path,
                                    toml_repr)
from rtopt.problem.problem import FEAS_TOL, Plan

__all__ = ["Course", "CourseError", "Observation", "QUANTITIES", "load_course",
           "course_from_dict", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
QUANTITIES = ("hypoxic_fraction", "hypoxic_volume_ratio", "tumour_volume_ratio", "nk_blood",
              "chemokine")
"""Observable quantities (see the module docstring for their units)."""

_UNITS = {"hypoxic_fraction": "fraction of the tumour, 0-1",
          "hypoxic_volume_ratio": "over the baseline hypoxic volume",
          "tumour_volume_ratio": "over the baseline tumour volume",
          "nk_blood": "NK cells in blood per standard infusion",
          "chemokine": "CXCL10 signal, model unit"}

# checks of the instance a delivered course may still satisfy later
_LATER = ("n_fractions.min", "prescription.min_bed_gy", "nk.n_infusions.min")


class CourseError(InstanceError):
    """A course file is invalid or does not fit its instance (one line per problem)."""


_Num = Annotated[float, Field(allow_inf_nan=False)]
_STRICT = ConfigDict(extra="forbid", frozen=True)


class _Fraction(BaseModel):
    model_config = _STRICT
    day: Annotated[StrictInt, Field(ge=0)]
    dose_gy: Annotated[StrictFloat | StrictInt, Field(gt=0, allow_inf_nan=False)]


class _Infusion(BaseModel):
    model_config = _STRICT
    day: Annotated[StrictInt, Field(ge=0)]
    product: StrictStr


class _Observation(BaseModel):
    model_config = _STRICT
    day: Annotated[StrictInt, Field(ge=0)]
    quantity: StrictStr
    value: Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]
    sd: Annotated[StrictFloat | StrictInt, Field(gt=0, allow_inf_nan=False)]
    method: StrictStr = ""
    clearance_half_life_days: Optional[Annotated[StrictFloat | StrictInt,
                                                 Field(gt=0, allow_inf_nan=False)]] = None


class _Course(BaseModel):
    model_config = _STRICT
    schema_version: Literal[1]
    instance: StrictStr
    today: Annotated[StrictInt, Field(ge=0)]
    description: StrictStr = ""
    fraction: list[_Fraction] = Field(default_factory=list)
    infusion: list[_Infusion] = Field(default_factory=list)
    observation: list[_Observation] = Field(default_factory=list)


_MODELS = {"": _Course, "fraction": _Fraction, "infusion": _Infusion,
           "observation": _Observation}


@dataclass(frozen=True)
class Observation:
    """One observation: ``value`` +- ``sd`` of ``quantity`` at the start of ``day``."""

    day: int
    quantity: str
    value: float
    sd: float
    method: str = ""
    clearance_half_life_days: float | None = None

    @property
    def label(self) -> str:
        return f"{self.quantity} day {self.day}"

    def to_dict(self) -> dict[str, Any]:
        d = {"day": self.day, "quantity": self.quantity, "value": self.value, "sd": self.sd}
        if self.method:
            d["method"] = self.method
        if self.clearance_half_life_days is not None:
            d["clearance_half_life_days"] = self.clearance_half_life_days
        return d


@dataclass(frozen=True)
class Course:
    """A validated course: the delivered plan (a :class:`rtopt.problem.problem.Plan`), ``today`` and
    the observations."""

    instance: str
    today: int
    delivered: Any
    observations: tuple[Observation, ...]
    source: str = "<dict>"
    description: str = ""

    def with_observations(self, observations: Any) -> "Course":
        """The same course with other observations (for studies and tests)."""
        return replace(self, observations=tuple(observations))

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "today": self.today,
                **self.delivered.to_dict(),
                "observations": [o.to_dict() for o in self.observations]}


def _fmt(x: Any) -> str:
    return toml_repr(x)


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            table = next((p for p in reversed(loc[:-1]) if isinstance(p, str)), "")
            model = _MODELS.get(table, _Course)
            hint = closest_choice(str(loc[-1]), list(model.model_fields))
            out.append((field_path(loc), f"unknown key {_fmt(loc[-1])}" + (
                f"; did you mean {hint!r}?" if hint else
                f" (known keys: {', '.join(model.model_fields)})")))
            continue
        if err["type"] == "literal_error" and loc == ("schema_version",):
            out.append(("schema_version", f"unsupported schema_version {_fmt(err.get('input'))}; "
                                          f"this rtopt reads schema_version = {SCHEMA_VERSION}"))
            continue
        out.extend(describe_error(err))
    return out


def load_course(path: str | Path, problem: Any) -> Course:
    """Read a course file and validate it against ``problem`` (its instance).

    Raises
    ------
    CourseError
        Every problem found, one ``(field.path, message)`` each.
    """
    source = str(path)
    try:
        data = load_toml(path, what="course file")
    except InputFileError as exc:
        raise CourseError(exc.source, exc.problems) from None
    if not data:
        raise CourseError(source, [("", "empty file: no course record")])
    return course_from_dict(data, problem, source)


def course_from_dict(data: Any, problem: Any, source: str = "<dict>") -> Course:
    """Validate a course dict (the file layout) against ``problem``; see :func:`load_course`."""
    if not isinstance(data, dict):
        raise CourseError(source, [("", f"expected a table, got {_fmt(data)}")])
    try:
        c = _Course.model_validate(data)
    except ValidationError as exc:
        raise CourseError(source, _pydantic_problems(exc)) from None
    probs: list[tuple[str, str]] = []
    if c.instance != problem.name:
        probs.append(("instance", f"the course is for instance {c.instance!r}, not "
                                  f"{problem.name!r}"))
        raise CourseError(source, probs)  # nothing else is meaningful against another instance
    H = problem.horizon_days
    if c.today >= H:
        probs.append(("today", f"day {c.today} is beyond the horizon (days 0-{H - 1})"))
    seen: dict[int, int] = {}
    for i, f in enumerate(c.fraction):
        if f.day >= c.today:
            probs.append((f"fraction[{i}].day", f"day {f.day} is not before today ({c.today}): "
                                                "a delivered fraction cannot lie in the future"))
        elif f.day in seen:
            probs.append((f"fraction[{i}].day", f"day {f.day} already has a fraction "
                                                f"(fraction[{seen[f.day]}])"))
        seen.setdefault(f.day, i)
    nk = problem.nk
    product = None if problem.instance.nk is None else str(
        getattr(problem.instance.nk.product, "value", problem.instance.nk.product))
    for i, u in enumerate(c.infusion):
        if nk is None:
            probs.append((f"infusion[{i}]", "the instance has no [nk] table: no infusion can "
                                            "have been given"))
            continue
        if u.day >= c.today:
            probs.append((f"infusion[{i}].day", f"day {u.day} is not before today ({c.today}): "
                                                "a given infusion cannot lie in the future"))
        if u.product != product:
            probs.append((f"infusion[{i}].product", f"{u.product!r} is not the instance's "
                                                    f"product {product!r}"))
    for i, o in enumerate(c.observation):
        at = f"observation[{i}]"
        if o.day > c.today:
            probs.append((f"{at}.day", f"day {o.day} is after today ({c.today}): an observation "
                                       "cannot lie in the future"))
        if o.quantity not in QUANTITIES:
            hint = closest_choice(o.quantity, list(QUANTITIES))
            probs.append((f"{at}.quantity", f"unknown quantity {o.quantity!r}" + (
                f"; did you mean {hint!r}?" if hint else f" (one of {', '.join(QUANTITIES)})")))
            continue
        if o.quantity == "hypoxic_fraction" and not 0 <= o.value <= 1:
            probs.append((f"{at}.value", f"a hypoxic fraction must be in [0, 1], got "
                                         f"{_fmt(o.value)}"))
        elif o.value < 0:
            probs.append((f"{at}.value", f"{o.quantity} must be >= 0, got {_fmt(o.value)}"))
        if o.quantity == "tumour_volume_ratio" and o.clearance_half_life_days is None:
            probs.append((f"{at}.clearance_half_life_days",
                          "required for tumour_volume_ratio: the half-life (days) of the "
                          "clearance of dead cells, which sets how fast killed tumour shrinks "
                          "(no default: it is an assumption about this tumour)"))
        if o.quantity != "tumour_volume_ratio" and o.clearance_half_life_days is not None:
            probs.append((f"{at}.clearance_half_life_days",
                          "only used by quantity = 'tumour_volume_ratio'"))
        if o.quantity == "nk_blood" and nk is None:
            probs.append((f"{at}.quantity", "the instance has no [nk] table: nk_blood is "
                                            "not modelled"))
        if o.quantity == "hypoxic_volume_ratio" and problem.biology.hypoxic_fraction <= 0:
            probs.append((f"{at}.quantity", "the instance's baseline hypoxic fraction is 0: "
                                            "a ratio to it is undefined"))
    if probs:
        raise CourseError(source, probs)
    fr = sorted(c.fraction, key=lambda f: f.day)
    plan = Plan(tuple(f.day for f in fr), tuple(float(f.dose_gy) for f in fr),
                tuple(sorted(u.day for u in c.infusion)))
    probs.extend(_rule_problems(problem, plan, c))
    if probs:
        raise CourseError(source, probs)
    obs = tuple(Observation(o.day, o.quantity, float(o.value), float(o.sd), o.method,
                            None if o.clearance_half_life_days is None
                            else float(o.clearance_half_life_days)) for o in c.observation)
    return Course(c.instance, c.today, plan, obs, source, c.description)


def violations(problem: Any, plan: Any, skip: tuple[str, ...] = _LATER) -> list[Any]:
    """Constraint checks of ``plan`` that fail (the instance's own slacks, no simulation)."""
    ev = problem.evaluate_plans([plan], simulate_tme=False)
    out = []
    for name, (val, lim, sense, _) in ev.slacks.items():
        if name in skip:
            continue
        v = float(val[0])
        sl = (v - lim) if sense == ">=" else (lim - v)
        if not sl >= -FEAS_TOL * max(1.0, abs(lim)):
            out.append((name, v, float(lim), sense))
    return out


def _rule_problems(problem: Any, plan: Any, c: _Course) -> list[tuple[str, str]]:
    """The delivered course against the instance's rules, one problem per broken rule:
    per fraction first (dose range and grid, weekday, OAR dose per fraction), then the
    course as a whole (intervals, overall time, counts, OAR BED so far, NK rules)."""
    probs: list[tuple[str, str]] = []
    per_fraction = set()
    index = {f.day: i for i, f in enumerate(c.fraction)}
    for day, dose in zip(plan.fraction_days, plan.doses_gy):
        i = index[day]
        for name, v, lim, sense in violations(problem, Plan((day,), (dose,)),
                                               _LATER + ("nk.n_infusions.min",)):
            if name.startswith("nk.") or name in ("min_interval_days", "max_overall_days",
                                                  "uniform_dose") or name.endswith(".max_bed_gy"):
                continue
            per_fraction.add(name)
            field = "day" if name == "treatment_weekdays" else "dose_gy"
            if name == "treatment_weekdays":
                what = f"day {day} ({problem.weekday(day)}) is not a treatment weekday"
            elif name == "dose_grid":
                what = f"{dose:g} Gy is not on the instance's {problem.dose_step:g} Gy dose grid"
            else:
                what = f"{dose:g} Gy breaks the instance's {name} ({v:.4g} vs {sense} {lim:.4g})"
            probs.append((f"fraction[{i}].{field}", what))
    for name, v, lim, sense in violations(problem, plan):
        if name in per_fraction:
            continue
        where = "infusion" if name.startswith("nk.") else "fraction"
        kind = "delivered" if where == "fraction" else "given"
        if name == "uniform_dose":   # the check's value is the dose spread: say it plainly
            doses = ", ".join(f"{d:g}" for d in sorted(set(plan.doses_gy)))
            probs.append((where, f"the delivered doses differ ({doses} Gy) but the instance has "
                                 "uniform_dose = true"))
            continue
        probs.append((where, f"the {kind} course breaks the instance's {name} "
                             f"({v:.4g} vs {sense} {lim:.4g})"))
    return probs
