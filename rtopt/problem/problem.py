"""The optimisation problem: decisions, constraints, objectives, verification and diagnosis.

A :class:`Problem` is built from a validated instance.  Schedules are represented two ways:

* a :class:`Plan` (fraction days, doses, NK infusion days): what back-ends return and users read;
* daily matrices ``D`` (tumour dose per day, ``(N, horizon_days)``) and ``U`` (infusions per
  day): what :meth:`Problem.evaluate` takes to score many schedules at once.

:meth:`Problem.evaluate` computes every metric and every constraint's slack for ``N`` schedules
in one vectorised pass (radiobiology from :mod:`rtopt.model.radiobiology`, the TME from
:func:`rtopt.model.simulator.simulate`).  :meth:`Problem.verify` is the same code on one plan; every
plan any back-end returns goes through it before it is reported.

Calendar conventions: day 0 is the instance's ``start_weekday``; a fraction on day ``j`` is
given at the start of the day, an infusion on day ``j`` after that day's fraction.  The rule
``min_days_before_next_fraction = m`` forbids a fraction on the ``m`` days after an infusion.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, NoReturn, Sequence

import numpy as np

from rtopt.common.errors import InstanceError
from rtopt.model import radiobiology as rb
from rtopt.model.circulation import circulating_metrics
from rtopt.model.calibrate import load_outcomes
from rtopt.model.data.calibrated import OUTCOME
from rtopt.model.simulator import STEPS_PER_DAY, Biology, simulate
from rtopt.problem.calendar import allowed_fraction_days, max_fractions_that_fit, weekday_of
from rtopt.problem.instance import load_instance

__all__ = ["Plan", "PlanFileError", "load_plan_file", "check_plan_fits", "Problem", "Evaluation", "ConstraintCheck", "Verification", "Diagnosis",
           "OBJECTIVES", "SIMULATION_METRICS", "NK_NONDECREASING", "INFUSION_INDEPENDENT"]

OBJECTIVES = ("nk_favourability", "tumour_log_kill", "tcp", "local_control",
              "nk_gain_local_control", "nk_gain_log_kill", "tumour_bed",
              "reoxygenation_gain_local_control")
_METRIC_OF = {"nk_favourability": "nk_favourability", "tumour_log_kill": "tumour_log10_kill",
              "tcp": "local_control", "local_control": "local_control",
              "nk_gain_local_control": "nk_gain_local_control",
              "nk_gain_log_kill": "nk_gain_log10_kill", "tumour_bed": "tumour_bed_gy",
              "reoxygenation_gain_local_control": "reoxygenation_gain_local_control"}
SIMULATION_METRICS = {
    "nk_favourability": "nk_auc", "nk_favourability_endogenous": "nk_auc_endogenous",
    "tumour_log10_kill": "log10_kill",
    "nk_log10_kill": "nk_log10_kill", "tcp": "tcp", "local_control": "local_control",
    "log10_kill_without_nk": "log10_kill_without_nk",
    "local_control_without_nk": "local_control_without_nk",
    "nk_gain_log10_kill": "nk_gain_log10_kill", "nk_gain_local_control": "nk_gain_local_control",
    "hypoxic_fraction_end": "hypoxic_fraction_end",
    "mean_hypoxic_fraction": "mean_hypoxic_fraction"}
"""Metric name -> :class:`rtopt.model.simulator.Simulation` field, for every simulated metric."""
NK_NONDECREASING = frozenset({
    "nk_favourability", "nk_favourability_infused", "tumour_log10_kill", "nk_log10_kill", "tcp",
    "local_control", "nk_gain_log10_kill", "nk_gain_local_control"})
"""Metrics that never decrease when an infusion is added to a plan (schedule fixed), while the
radiosensitisation and NK-kill parameters are non-negative: an infusion only adds NK activity
(the NK states are linear in the infusions, docs/model.md section 13), more activity before a
fraction raises alpha, and a larger activity integral kills more tumour cells.  The robust search
bounds an objective built from them (:func:`rtopt.decisions.robust.robust_search`); a test holds
each of them to it."""
INFUSION_INDEPENDENT = frozenset({
    "tumour_bed_gy", "nk_favourability_endogenous", "log10_kill_without_nk",
    "local_control_without_nk", "hypoxic_fraction_end", "mean_hypoxic_fraction",
    "reoxygenation_gain_local_control", "n_fractions", "overall_days"})
"""Metrics that the infusions do not change (radiotherapy alone, the TME, the patient's own NK
cells)."""
FEAS_TOL = 1e-6
"""Constraint tolerance, relative to max(1, |limit|): doses on a 0.5 Gy grid and BEDs of
hundreds of Gy are computed to ~1e-12, so 1e-6 separates rounding from real violations."""
_BIG = 10 ** 6

PRESCRIPTION_STEP_GY = 0.01
"""Dose grid of written plans for continuous-dose instances (Gy): doses are prescribed to
0.01 Gy ("7 x 5.35 Gy", not "7 x 5.35218 Gy"); an instance's ``prescription_step_gy`` sets
another grid (0: none)."""


@dataclass(frozen=True)
class Plan:
    """A treatment plan: fraction days with their doses, and NK infusion days.

    Attributes
    ----------
    fraction_days : tuple of int
        Calendar days of the fractions (strictly increasing).
    doses_gy : tuple of float
        Tumour dose of each fraction (Gy), same length as ``fraction_days``.
    nk_days : tuple of int
        Calendar days of the NK infusions (non-decreasing).
    tumour_dose_ratio : float or None
        Tumour dose / prescribed dose when the plan is delivered with another prescription
        convention than the instance's (a named standard schedule, :meth:`Problem.standard_plan`);
        None: the instance's.
    """

    fraction_days: tuple[int, ...]
    doses_gy: tuple[float, ...]
    nk_days: tuple[int, ...] = ()
    tumour_dose_ratio: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "fraction_days", tuple(int(x) for x in self.fraction_days))
        object.__setattr__(self, "doses_gy", tuple(float(x) for x in self.doses_gy))
        object.__setattr__(self, "nk_days", tuple(int(x) for x in self.nk_days))
        if len(self.fraction_days) != len(self.doses_gy):
            raise ValueError("fraction_days and doses_gy differ in length")

    @classmethod
    def uniform(cls, days: Iterable[int], dose_gy: float, nk_days: Iterable[int] = ()) -> "Plan":
        """Plan with the same dose on every fraction day."""
        days = tuple(days)
        return cls(days, (dose_gy,) * len(days), tuple(nk_days))

    @classmethod
    def from_daily(cls, doses: Sequence[float], infusions: Sequence[float] | None = None) -> "Plan":
        """Plan from daily dose and infusion arrays (inverse of :meth:`daily`)."""
        d = np.asarray(doses, dtype=float)
        days = np.flatnonzero(d > 0)
        nk: list[int] = []
        if infusions is not None:
            for j, c in enumerate(np.asarray(infusions)):
                nk.extend([j] * int(round(c)))
        return cls(tuple(days), tuple(d[days]), tuple(nk))

    def daily(self, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
        """Daily dose and infusion arrays of length ``horizon_days``."""
        d = np.zeros(horizon_days)
        u = np.zeros(horizon_days)
        for day, dose in zip(self.fraction_days, self.doses_gy):
            if not 0 <= day < horizon_days:
                raise ValueError(f"fraction day {day} outside the horizon 0..{horizon_days - 1}")
            d[day] += dose
        for day in self.nk_days:
            if not 0 <= day < horizon_days:
                raise ValueError(f"NK infusion day {day} outside the horizon 0..{horizon_days - 1}")
            u[day] += 1
        return d, u

    @property
    def n_fractions(self) -> int:
        """Number of fractions."""
        return len(self.fraction_days)

    @property
    def total_dose_gy(self) -> float:
        """Sum of the fraction doses (Gy)."""
        return float(sum(self.doses_gy))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``fractions`` [{day, dose_gy}] and ``nk_infusions`` [{day}].

        Doses are written as they are (JSON floats round-trip exactly), so
        ``Plan.from_dict(p.to_dict()) == p``: the plan a file holds is the plan that was
        verified.  Plans from solvers are on the prescription grid already
        (:meth:`Problem.verify_prescribable`), e.g. ``5.35``.
        """
        d: dict[str, Any] = {"fractions": [{"day": d, "dose_gy": float(x)}
                                           for d, x in zip(self.fraction_days, self.doses_gy)],
                             "nk_infusions": [{"day": d} for d in self.nk_days]}
        if self.tumour_dose_ratio is not None:
            d["tumour_dose_ratio"] = float(self.tumour_dose_ratio)
        return d

    def to_file_dict(self, instance_ratio: float) -> dict[str, Any]:
        """:meth:`to_dict` with ``tumour_dose_ratio`` always written: the plan's own, or
        ``instance_ratio`` (the ratio of the instance it was made for) when it has none.  What
        plan files hold, so that a file says how its doses reach the tumour."""
        d = self.to_dict()
        d.setdefault("tumour_dose_ratio", float(instance_ratio))
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        """Inverse of :meth:`to_dict` (accepts a whole result JSON with a ``schedule`` key);
        ``tumour_dose_ratio`` None when the dict has none."""
        if "schedule" in data:
            data = data["schedule"]
        fr = sorted(data.get("fractions", []), key=lambda f: f["day"])
        ratio = data.get("tumour_dose_ratio")
        return cls(tuple(int(f["day"]) for f in fr), tuple(float(f["dose_gy"]) for f in fr),
                   tuple(sorted(int(i["day"]) for i in data.get("nk_infusions", []))),
                   tumour_dose_ratio=None if ratio is None else float(ratio))

    def rounded(self, step_gy: float, mode: str = "nearest", low: float = 0.0,
                high: float = float("inf")) -> "Plan":
        """The plan with every dose on the grid of ``step_gy`` (Gy), clipped to the grid points
        in ``[low, high]``; ``mode`` ``nearest``, ``down`` or ``up``.  Doses come out as the
        shortest decimals (``5.35``, not ``5.3500000000000005``)."""
        f = {"nearest": np.round, "down": np.floor, "up": np.ceil}[mode]
        k_lo = np.ceil(low / step_gy - 1e-9)
        k_hi = np.floor(high / step_gy + 1e-9) if math.isfinite(high) else np.inf
        out = []
        for x in self.doses_gy:
            k = float(np.clip(f(x / step_gy + (0.0 if mode == "nearest" else
                                               (1e-9 if mode == "down" else -1e-9))),
                              k_lo, k_hi))
            out.append(round(k * step_gy, 10))
        return Plan(self.fraction_days, tuple(out), self.nk_days, self.tumour_dose_ratio)

    def describe(self) -> str:
        """Short human description, e.g. ``4 x 12.5 Gy on days 0,1,2,3; NK day 5``."""
        if self.doses_gy and max(self.doses_gy) - min(self.doses_gy) < 1e-9:
            dose = f"{self.n_fractions} x {self.doses_gy[0]:g} Gy"
        else:
            dose = " + ".join(f"{x:g}" for x in self.doses_gy) + " Gy"
        s = f"{dose} on days {','.join(map(str, self.fraction_days))}"
        if self.nk_days:
            s += f"; NK day{'s' if len(self.nk_days) > 1 else ''} {','.join(map(str, self.nk_days))}"
        return s


class PlanFileError(InstanceError):
    """A plan file cannot be used with an instance (one line per problem, naming the file)."""


PLAN_FILE_FORMS = ("a plan (`fractions` [{day, dose_gy}], `nk_infusions` [{day}]; or "
                   "`fraction_days`, `doses_gy`, `nk_infusion_days`), or a file rtopt wrote "
                   "with one: `schedule` (solve -o, replan -o, trial plans/, simulate --json) "
                   "or `plan` (one point of a Pareto front)")
"""What :func:`load_plan_file` reads, for messages and help texts."""


def _is_day(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_dose(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v > 0)


def plan_from_json(data: Any, source: str = "<plan>") -> tuple[Plan, tuple[str, str]]:
    """A plan from the JSON of a plan file (see :func:`load_plan_file`), every field checked.

    Returns the plan and the field paths of its fraction and infusion days in the file (e.g.
    ``("schedule.fractions", "schedule.nk_infusions")``) for later messages.

    Raises
    ------
    PlanFileError
        One line per problem, ``SOURCE: field.path: message`` (e.g.
        ``plan.json: schedule.fractions[0].dose_gy: must be a number > 0, got -3``).
    """
    def bad(problems: list[tuple[str, str]]) -> NoReturn:
        raise PlanFileError(source, problems[:10] + ([("", f"... and {len(problems) - 10} "
                                                          "more problems")]
                                                     if len(problems) > 10 else []))

    if not isinstance(data, dict):
        bad([("", f"expected a JSON object: {PLAN_FILE_FORMS}")])
    base, body = "", data
    for key in ("schedule", "plan"):
        if key in data and "fractions" not in data and "fraction_days" not in data:
            base, body = f"{key}.", data[key]
            if body is None:
                status = data.get("status", "unknown")
                bad([(key, f"the result has no plan (status {_shown(status)})")])
            if not isinstance(body, dict):
                bad([(key, "expected an object with 'fractions'")])
            break
    else:
        front = data.get("points") if isinstance(data.get("points"), list) else (
            data["exact"].get("points") if isinstance(data.get("exact"), dict) else None)
        if isinstance(front, list):
            bad([("", f"a Pareto front of {len(front)} plans, not one plan (copy one point's "
                      "'plan' object into a file of its own)")])
    problems: list[tuple[str, str]] = []
    if "fractions" in body:
        fields = (f"{base}fractions", f"{base}nk_infusions")
        days, doses = _fraction_list(body["fractions"], fields[0], problems)
        nk = _day_list(body.get("nk_infusions", []), fields[1], problems, key="day")
    elif "fraction_days" in body or "doses_gy" in body:
        days = _day_list(body.get("fraction_days"), f"{base}fraction_days", problems)
        doses = []
        raw = body.get("doses_gy")
        if "doses_gy" not in body:
            problems.append((f"{base}doses_gy", "missing (one dose per fraction day, Gy)"))
        elif not isinstance(raw, list):
            problems.append((f"{base}doses_gy", "expected a list of doses (Gy)"))
        else:
            for i, x in enumerate(raw):
                if _is_dose(x):
                    doses.append(float(x))
                else:
                    problems.append((f"{base}doses_gy[{i}]", f"must be a number > 0, got "
                                                            f"{_shown(x)}"))
            if "fraction_days" in body and isinstance(body["fraction_days"], list) \
                    and len(raw) != len(body["fraction_days"]):
                problems.append((f"{base}doses_gy", f"{len(raw)} doses for "
                                                    f"{len(body['fraction_days'])} fraction days"))
        key = "nk_infusion_days" if "nk_infusion_days" in body else "nk_days"
        fields = (f"{base}fraction_days", f"{base}{key}")
        nk = _day_list(body.get(key, []), fields[1], problems)
        seen: set[int] = set()
        for i, d in enumerate(days):
            if d in seen:
                problems.append((f"{base}fraction_days[{i}]", f"day {d} appears twice"))
            seen.add(d)
    else:
        bad([(f"{base}fractions", f"missing: expected {PLAN_FILE_FORMS}")])
    ratio = body.get("tumour_dose_ratio")
    if ratio is not None and not _is_dose(ratio):
        problems.append((f"{base}tumour_dose_ratio", f"must be a number > 0, got "
                                                     f"{_shown(ratio)}"))
    if problems:
        bad(problems)
    pairs = sorted(zip(days, doses))
    return Plan(tuple(d for d, _ in pairs), tuple(x for _, x in pairs), tuple(sorted(nk)),
                tumour_dose_ratio=None if ratio is None else float(ratio)), fields


def _fraction_list(fr: Any, where: str, problems: list[tuple[str, str]]
                   ) -> tuple[list[int], list[float]]:
    if not isinstance(fr, list):
        problems.append((where, 'expected a list of {"day", "dose_gy"} objects'))
        return [], []
    days, doses, seen = [], [], set()
    for i, f in enumerate(fr):
        at = f"{where}[{i}]"
        if not isinstance(f, dict):
            problems.append((at, "expected an object with 'day' and 'dose_gy'"))
            continue
        for key in ("day", "dose_gy"):
            if key not in f:
                problems.append((f"{at}.{key}", "missing"))
        ok = True
        if "day" in f:
            if not _is_day(f["day"]):
                problems.append((f"{at}.day", f"must be a whole day >= 0, got "
                                              f"{_shown(f['day'])}"))
                ok = False
            elif f["day"] in seen:
                problems.append((f"{at}.day", f"day {f['day']} appears twice"))
                ok = False
            else:
                seen.add(f["day"])
        if "dose_gy" in f and not _is_dose(f["dose_gy"]):
            problems.append((f"{at}.dose_gy", f"must be a number > 0, got "
                                              f"{_shown(f['dose_gy'])}"))
            ok = False
        if ok and "day" in f and "dose_gy" in f:
            days.append(int(f["day"]))
            doses.append(float(f["dose_gy"]))
    return days, doses


def _day_list(v: Any, where: str, problems: list[tuple[str, str]], key: str | None = None
              ) -> list[int]:
    """Whole days >= 0 from a list of numbers (``key`` None) or of ``{key: day}`` objects."""
    if v is None:
        problems.append((where, "missing (a list of whole days)"))
        return []
    if not isinstance(v, list):
        problems.append((where, "expected a list of " + (f'{{"{key}"}} objects' if key
                                                         else "whole days")))
        return []
    out = []
    for i, u in enumerate(v):
        at = f"{where}[{i}]"
        if key is not None:
            if not isinstance(u, dict) or key not in u:
                problems.append((at, f"expected an object with '{key}'"))
                continue
            u, at = u[key], f"{at}.{key}"
        if _is_day(u):
            out.append(int(u))
        else:
            problems.append((at, f"must be a whole day >= 0, got {_shown(u)}"))
    return out


def _shown(v: Any) -> str:
    """``repr(v)`` for a message, cut when long (a file's value echoed back)."""
    from rtopt.common.fileio import short

    return short(repr(v), 60)


def load_plan_file(path: Any, problem: "Problem | None" = None, *, force: bool = False,
                   option: str = "") -> Plan:
    """A plan from a JSON file: every plan file rtopt writes, or a bare plan.

    Read: a :meth:`Plan.to_dict` (``fractions``, ``nk_infusions``); a bare plan object
    (``fraction_days``, ``doses_gy``, ``nk_infusion_days``); a result of ``rtopt solve -o``,
    ``rtopt replan -o`` (the whole course), a trial's ``plans/ARM.json`` or ``rtopt simulate
    --json`` (``schedule``); one point of a Pareto front (``plan``).  Every command that takes
    a plan file reads it here (``--plan``, ``--versus``, ``--arm NAME=FILE``,
    ``--reference``, ``prob-better:FILE``).

    The file is read by :func:`rtopt.common.fileio.load_json` (regular files only, size and
    nesting capped).  With ``problem``, the plan must fit its horizon, and a file that names
    another instance (its ``instance`` field) is refused unless ``force``.

    Parameters
    ----------
    path : path-like
    problem : Problem, optional
    force : bool
        Accept a plan written for another instance.
    option : str
        Command-line option the file came from, for messages (e.g. ``"--reference"``).

    Raises
    ------
    PlanFileError
        One line per problem, ``[OPTION: ]FILE: field.path: message``.
    """
    from rtopt.common.fileio import InputFileError, load_json, short

    src = (f"{option}: " if option else "") + short(path, 200)
    try:
        data = load_json(path, what="plan file")
    except InputFileError as e:
        raise PlanFileError(src, [("", m) for _, m in e.problems]) from None
    if problem is not None:
        named = data.get("instance") if isinstance(data, dict) else None
        if isinstance(named, str) and named != problem.name and not force:
            raise PlanFileError(src, [("", f"plan written for instance {short(named, 60)!r}, "
                                           f"not {problem.name!r} (--force to use it anyway)")])
    plan, fields = plan_from_json(data, src)
    if problem is not None:
        check_plan_fits(plan, problem, src, fields)
        plan = _with_instance_ratio(plan, problem)
    return plan


RATIO_TOLERANCE = 1e-9
"""Relative difference below which a plan file's ``tumour_dose_ratio`` is the instance's (the
ratios are written as floats and read back exactly; this only absorbs a hand-typed ``1.2``
against ``1 + 0.5 (100 / 80 - 1)``)."""


def _with_instance_ratio(plan: Plan, problem: "Problem") -> Plan:
    """A plan read from a file, against ``problem``'s tumour dose ratio: a file without one
    (written before rtopt wrote it) or with the instance's gets the instance's (None); another
    ratio is the plan's own prescription convention (a standard arm from an isocentre source,
    say) and is kept: the plan is simulated with it (``rtopt simulate`` says so)."""
    r = plan.tumour_dose_ratio
    if r is None or abs(r - problem.tumour_dose_ratio) <= RATIO_TOLERANCE * max(1.0, abs(r)):
        return replace(plan, tumour_dose_ratio=None)
    return plan


def check_plan_fits(plan: Plan, problem: "Problem", source: str,
                    fields: tuple[str, str] | None = None) -> None:
    """Raise :class:`PlanFileError` (one line per day, at most a few) if a fraction or an
    infusion of ``plan`` lies outside ``problem``'s horizon.  ``fields``: the field paths of
    the fraction and infusion days of a plan read from a file (:func:`plan_from_json`), to
    name them in the messages."""
    h = problem.horizon_days
    bad = [("fraction", 0, d) for d in plan.fraction_days if not 0 <= d < h]
    bad += [("NK infusion", 1, d) for d in plan.nk_days if not 0 <= d < h]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise PlanFileError(source, [("" if fields is None else fields[j],
                                      f"{what} day {d} outside the horizon 0..{h - 1} of "
                                      f"{problem.name}" + (more if k == 2 else ""))
                                     for k, (what, j, d) in enumerate(bad[:3])])


@dataclass(frozen=True)
class OarLimits:
    """Limits of one organ at risk (BED limit combines ``max_bed_gy`` and ``max_eqd2_gy``)."""

    name: str
    alpha_beta_gy: float
    sparing_factor: float
    max_bed_gy: float | None
    max_dose_per_fraction_gy: float | None


@dataclass(frozen=True)
class NkRules:
    """Infusion rules of the instance's ``[nk]`` table."""

    n_min: int
    n_max: int
    earliest_day: int
    latest_day: int
    min_interval_days: int
    min_days_before_next_fraction: int


@dataclass(frozen=True)
class ConstraintCheck:
    """One constraint of one plan: achieved value, limit, slack (>= 0 when satisfied)."""

    name: str
    value: float
    limit: float
    sense: str  # ">=" or "<="
    slack: float
    ok: bool
    kind: str = "limit"  # "limit" (clinical) or "rule" (calendar, counts, grid)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _num(self.value), "limit": _num(self.limit),
                "sense": self.sense, "slack": _num(self.slack), "ok": self.ok, "kind": self.kind}


def _num(x: float) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(x, 9)


@dataclass(frozen=True)
class Evaluation:
    """Metrics, objective and constraint slacks of ``N`` schedules (arrays of shape ``(N,)``).

    ``slacks`` maps constraint name to ``(value, limit, sense, kind)``; ``violation`` is the sum
    of violations, each scaled by ``max(1, |limit|)`` (what penalty methods use).
    """

    objective: np.ndarray
    metrics: dict[str, np.ndarray]
    slacks: dict[str, tuple[np.ndarray, float, str, str]]
    violation: np.ndarray

    @property
    def feasible(self) -> np.ndarray:
        """Boolean mask of schedules that satisfy every constraint within :data:`FEAS_TOL`."""
        return self.violation <= FEAS_TOL


@dataclass(frozen=True)
class Verification:
    """A plan re-simulated and re-checked: metrics, objective and every constraint."""

    plan: Plan
    objective: float
    metrics: dict[str, Any]
    checks: tuple[ConstraintCheck, ...]

    @property
    def feasible(self) -> bool:
        """True if every constraint holds."""
        return all(c.ok for c in self.checks)

    @property
    def violated(self) -> list[ConstraintCheck]:
        """The checks that fail."""
        return [c for c in self.checks if not c.ok]

    @property
    def worst_slack(self) -> float:
        """Smallest scaled slack over all constraints (negative if any is violated)."""
        if not self.checks:
            return float("inf")
        return min(c.slack / max(1.0, abs(c.limit)) if np.isfinite(c.limit) else c.slack
                   for c in self.checks)


@dataclass(frozen=True)
class Diagnosis:
    """Why an instance is infeasible: conflicting limits and best achievable values."""

    conflicts: tuple[str, ...]
    best_achievable: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"conflicts": list(self.conflicts),
                "best_achievable": {k: _num(v) for k, v in self.best_achievable.items()}}


class Problem:
    """An instance turned into decisions, constraints and an objective.

    Parameters
    ----------
    instance : rtopt.problem.instance.Instance
        A validated instance.
    steps_per_day : int
        Simulator sub-steps per day (see :func:`rtopt.model.simulator.simulate`).
    """

    def __init__(self, instance: Any, steps_per_day: int = STEPS_PER_DAY,
                 biology: Biology | None = None):
        self.instance = instance
        self.name = instance.name
        fr = instance.fractionation
        self.horizon_days = int(fr.horizon_days)
        self.allowed_days = np.asarray(allowed_fraction_days(fr), dtype=int)
        self.day_allowed = np.zeros(self.horizon_days, dtype=bool)
        self.day_allowed[self.allowed_days] = True
        self.start_weekday = str(getattr(fr.start_weekday, "value", fr.start_weekday))
        self.n_min, self.n_max = (int(x) for x in fr.n_fractions)
        self.d_min, self.d_max = (float(x) for x in fr.dose_per_fraction_gy)
        self.dose_step = float(fr.dose_step_gy)
        self._prescription_step = float(getattr(fr, "prescription_step_gy", PRESCRIPTION_STEP_GY))
        self.uniform = bool(fr.uniform_dose)
        self.min_interval = int(fr.min_interval_days)
        self.max_overall = int(fr.max_overall_days)
        t = instance.tumour
        self.dvh = self._dvh_model(instance)
        self.biology = biology or self._biology(instance)
        self.alpha_beta = float(t.alpha_beta_gy)
        rx = instance.prescription
        self.tumour_dose_ratio = float(rx.dose_ratio)
        self.min_local_control = (None if rx.min_local_control is None
                                  else float(rx.min_local_control))
        self.local_control_vs = rx.local_control_vs
        self.local_control_margin = float(rx.local_control_margin or 0.0)
        self._standard_lc: dict[tuple, float] = {}
        self._nominal_biology = self.biology  # comparators stay at nominal parameters
        lims = []
        if rx.min_bed_gy is not None:
            lims.append(float(rx.min_bed_gy))
        if rx.min_eqd2_gy is not None:
            lims.append(float(rb.bed_from_eqd2(rx.min_eqd2_gy, self.alpha_beta)))
        self.min_bed = max(lims) if lims else 0.0
        oars = []
        for o in instance.organ_at_risk:
            if getattr(o, "dvh_structure", None) is not None:
                continue  # a DVH organ: its limits live in self.dvh
            b = []
            if o.max_bed_gy is not None:
                b.append(float(o.max_bed_gy))
            if o.max_eqd2_gy is not None:
                b.append(float(rb.bed_from_eqd2(o.max_eqd2_gy, o.alpha_beta_gy)))
            oars.append(OarLimits(o.name, float(o.alpha_beta_gy), float(o.sparing_factor),
                                  min(b) if b else None,
                                  None if o.max_dose_per_fraction_gy is None
                                  else float(o.max_dose_per_fraction_gy)))
        self.oars: tuple[OarLimits, ...] = tuple(oars)
        nk = instance.nk
        self.nk: NkRules | None = None
        if nk is not None:
            latest = nk.latest_day if nk.latest_day is not None else self.horizon_days - 1
            self.nk = NkRules(int(nk.n_infusions[0]), int(nk.n_infusions[1]),
                              int(nk.earliest_day), int(min(latest, self.horizon_days - 1)),
                              int(nk.min_interval_days), int(nk.min_days_before_next_fraction))
        self.weights: dict[str, float] = {k: float(v) for k, v in
                                          instance.objective_weights.items() if v}
        ob = instance.objective
        self.tcp_model = str(getattr(ob, "tcp_model", "population"))
        self.cost_per_fraction = float(getattr(ob, "cost_per_fraction", 0.0) or 0.0)
        self.cost_per_overall_day = float(getattr(ob, "cost_per_overall_day", 0.0) or 0.0)
        self.steps_per_day = steps_per_day

    @staticmethod
    def _dvh_model(instance: Any) -> Any:
        """The instance's :class:`rtopt.problem.dvh.DvhModel`, or None without ``[dvh_plan]``."""
        if getattr(instance, "dvh_plan", None) is None:
            return None
        from rtopt.problem.dvh import DvhModel

        return DvhModel(instance, float(instance.tumour.alpha_beta_gy))

    def _blood_dose_fraction(self, instance: Any) -> float | None:
        """``nk_blood_dose_fraction`` from ``[dvh_plan.blood]``: the plan's blood dose per
        fraction per Gy of tumour dose (the model's convention: the simulator and the
        circulating pool multiply it by the tumour dose), i.e. over the prescription dose per
        fraction times the tumour dose ratio; None without a blood model."""
        if self.dvh is None or self.dvh.blood_fraction is None:
            return None
        return float(self.dvh.blood_fraction) / float(instance.prescription.dose_ratio)

    def _biology(self, instance: Any) -> Biology:
        """Biology of the instance; with ``[dvh_plan.blood]``, ``nk_blood_dose_fraction`` is
        the plan's (:meth:`_blood_dose_fraction`)."""
        f = self._blood_dose_fraction(instance)
        if f is not None:
            return Biology.from_instance(instance, nk_blood_dose_fraction=f)
        return Biology.from_instance(instance)

    @property
    def patient_parameters(self) -> dict[str, float]:
        """Model parameters this problem sets from the patient's own data (the plan's blood
        dose sets ``nk_blood_dose_fraction``); uncertainty draws centre on them
        (:func:`rtopt.model.uncertainty.distributions_for`)."""
        f = self._blood_dose_fraction(self.instance)
        return {} if f is None else {"nk_blood_dose_fraction": f}

    @property
    def has_dvh_limits(self) -> bool:
        """True when DVH or NTCP limits constrain the plan (``[dvh_plan]`` organs)."""
        return self.dvh is not None and bool(self.dvh.limits or any(
            t.max_percent is not None for t in self.dvh.ntcps))

    # ------------------------------------------------------------------ descriptions
    @classmethod
    def from_path(cls, path: Any, **kw: Any) -> "Problem":
        """Load and validate an instance file, then build the problem."""
        return cls(load_instance(path), **kw)

    def with_objective(self, term: str) -> "Problem":
        """A copy that maximises ``term`` (one of :data:`OBJECTIVES`) alone instead of the
        instance's ``[objective]`` terms; its costs per fraction and per overall day, its
        ``tcp_model`` and every limit are kept.

        Raises
        ------
        InstanceError
            ``term`` is not an objective (the message lists them).
        """
        if term not in OBJECTIVES:
            raise InstanceError(self.instance.source if hasattr(self.instance, "source")
                                else self.name,
                                [("objective.maximise", f"unknown objective {term!r} (one of "
                                  f"{', '.join(OBJECTIVES)})")])
        import copy

        p = copy.copy(self)
        p.weights = {term: 1.0}
        return p

    @classmethod
    def coerce(cls, x: Any, **kw: Any) -> "Problem":
        """``x`` itself if it is a Problem, else the problem of an instance or instance file
        (``kw`` as for the constructor)."""
        if isinstance(x, Problem):
            return x
        if isinstance(x, (str, os.PathLike)):
            return cls.from_path(x, **kw)
        return cls(x, **kw)

    @property
    def objective_name(self) -> str:
        """``maximise`` name, or ``weighted(a*x + b*y)`` for weights."""
        if len(self.weights) == 1:
            name = next(iter(self.weights))
        else:
            name = "weighted(" + " + ".join(f"{w:g}*{k}" for k, w in self.weights.items()) + ")"
        if self.cost_per_fraction:
            name += f" - {self.cost_per_fraction:g}/fraction"
        if self.cost_per_overall_day:
            name += f" - {self.cost_per_overall_day:g}/overall day"
        return name

    @property
    def has_costs(self) -> bool:
        """True when the objective charges for fractions or overall days."""
        return self.cost_per_fraction > 0 or self.cost_per_overall_day > 0

    def metric_of(self, term: str) -> str:
        """The metric an objective term maximises (``tcp`` follows ``tcp_model``)."""
        if term == "tcp" and self.tcp_model == "per_patient":
            return "tcp"
        return _METRIC_OF[term]

    def objective_from_metrics(self, m: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """Objective of ``n`` schedules from their metrics: the weighted terms minus the costs.

        The one place the objective is assembled (:meth:`evaluate` and the back-ends that
        score schedules themselves call it).  Without the TME simulation, TME terms are unknown
        (NaN), never zero.
        """
        obj = np.zeros(n)
        for k, w in self.weights.items():
            obj = obj + w * np.asarray(m.get(self.metric_of(k), np.full(n, np.nan)))
        if self.cost_per_fraction:
            obj = obj - self.cost_per_fraction * np.asarray(m["n_fractions"])
        if self.cost_per_overall_day:
            obj = obj - self.cost_per_overall_day * np.asarray(m["overall_days"])
        return obj

    def outcome_calibration(self) -> tuple[bool, str]:
        """Whether this instance's tumour control is calibrated against clinical outcomes.

        True only when the site has an outcome fit (``rtopt calibrate --outcomes``) and the
        instance keeps every value that fit held fixed or fitted (tumour values, clonogens,
        and no ``[tumour.surrogate]`` override of an outcome parameter).  The message says
        why not otherwise; the CLI prints it beside local control and TCP objectives.
        """
        t = self.instance.tumour
        site = str(getattr(t.site, "value", t.site))
        sites, obs = load_outcomes()
        if site not in OUTCOME or site not in sites:
            return False, (f"site {site!r} has no clinical outcome data: local control and TCP "
                           "are model predictions, not calibrated")
        ids = [o.id for o in obs if o.site == site and o.role == "training"]
        label = f"{ids[0]}-{ids[-1]}" if ids else "none"
        fixed = sites[site].fixed()
        differ = []
        for key, val in fixed.items():
            mine = getattr(t, key)
            mine = getattr(mine, "value", mine)
            if (mine is None) != (val is None) or (
                    val is not None and (mine != val if isinstance(val, str)
                                         else abs(float(mine) - float(val)) > 1e-9 * abs(val))):
                differ.append(f"{key} {mine!r} (fit: {val!r})")
        if t.clonogens is not None and abs(t.clonogens / OUTCOME[site]["clonogens"] - 1) > 1e-9:
            differ.append(f"clonogens {t.clonogens:g} (fit: {OUTCOME[site]['clonogens']:g})")
        over = set(getattr(t.surrogate, "model_fields_set", set()) or set()) & set(OUTCOME[site])
        differ += [f"[tumour.surrogate] {k}" for k in sorted(over)]
        if differ:
            return False, (f"not the {site} outcome calibration ({label}): "
                           + ", ".join(differ))
        return True, f"calibrated to the {site} clinical outcomes {label}"

    @property
    def has_outcome_limits(self) -> bool:
        """True when the prescription limits local control (``min_local_control`` or
        ``local_control_vs``)."""
        return self.min_local_control is not None or self.local_control_vs is not None

    @property
    def needs_population(self) -> bool:
        """True when the objective or a limit needs local control (the population average)."""
        return self.has_outcome_limits or any(
            self.metric_of(k) in ("local_control", "nk_gain_local_control") for k in self.weights)

    @property
    def needs_reoxygenation(self) -> bool:
        """True when the objective needs the plan without reoxygenation."""
        return "reoxygenation_gain_local_control" in self.weights

    @property
    def needs_counterfactual(self) -> bool:
        """True when the objective needs the plan without NK cells (an NK-attributable gain)."""
        return any(self.metric_of(k) in ("nk_gain_local_control", "nk_gain_log10_kill")
                   for k in self.weights)

    @property
    def objective_nondecreasing_in_infusions(self) -> bool:
        """True when adding an infusion can never lower the objective (fixed schedule): every
        weighted metric is in :data:`NK_NONDECREASING` with a non-negative weight or in
        :data:`INFUSION_INDEPENDENT` (the costs count fractions and days only)."""
        return all((self.metric_of(k) in NK_NONDECREASING and w >= 0)
                   or self.metric_of(k) in INFUSION_INDEPENDENT for k, w in self.weights.items())

    @property
    def needs_simulation(self) -> bool:
        """False when the objective is tumour BED only and no limit needs local control (no
        TME simulation is needed)."""
        return self.has_outcome_limits or any(k != "tumour_bed" for k in self.weights)

    # ------------------------------------------------------------------ tumour dose
    def tumour_doses(self, D: Any, ratio: Any = None) -> np.ndarray:
        """The dose the tumour receives: prescribed daily doses ``D`` (Gy) times the
        prescription's ``tumour_dose_ratio`` (or ``ratio``, a number or one per row of ``D``).
        Every simulation of this problem's tumour takes these; prescription and OAR limits stay
        on ``D``."""
        D = np.asarray(D, dtype=float)
        if ratio is None:
            r = self.tumour_dose_ratio
            return D if r == 1.0 else D * r
        r = np.asarray(ratio, dtype=float)
        return D * (r[:, None] if r.ndim == 1 and D.ndim == 2 else r)

    def reoxygenation_metrics(self, D: Any, dose_ratio: Any = None) -> dict[str, np.ndarray]:
        """Local control of radiotherapy alone with and without reoxygenation between
        fractions, and the gain, for prescribed daily dose rows ``D``.

        "Without reoxygenation" holds the FMISO hypoxic fraction at its pre-treatment value
        (:data:`rtopt.model.calibrate.NO_REOXYGENATION`); both sides have no NK cells, so the
        gain is the radiotherapy's own, whatever the infusions.
        """
        from dataclasses import replace

        from rtopt.model.calibrate import NO_REOXYGENATION

        Dt = self.tumour_doses(np.atleast_2d(D), dose_ratio)
        rt = replace(self.biology, nk=False)
        frozen = replace(rt, params=rt.params.with_values(**NO_REOXYGENATION))
        with_r = simulate(rt, Dt, steps_per_day=self.steps_per_day).local_control
        without = simulate(frozen, Dt, steps_per_day=self.steps_per_day).local_control
        return {"local_control_rt_alone": with_r, "local_control_without_reoxygenation": without,
                "reoxygenation_gain_local_control": with_r - without}

    def standard_local_control(self, name: str, nk_days: Sequence[int] = ()) -> float:
        """Local control (nominal parameters) of the standard schedule ``name`` on this
        instance's tumour, with the source's prescription convention; radiotherapy alone
        unless ``nk_days`` are given.

        Raises
        ------
        KeyError
            Unknown name (the message has did-you-mean).
        """
        from dataclasses import replace

        from rtopt.model.standards import standard_schedule

        key = (name, tuple(nk_days))
        if key not in self._standard_lc:
            st = standard_schedule(name)
            H = max(self.horizon_days, st.days[-1] + 1)
            d = np.zeros((1, H))
            d[0, list(st.days)] = st.dose_per_fraction_gy
            u = np.zeros((1, H))
            for t in nk_days:
                u[0, t] += 1
            nominal = self._nominal_biology
            bio = nominal if nk_days else replace(nominal, nk=False)
            sim = simulate(bio, self.tumour_doses(d, st.tumour_dose_ratio), u,
                           steps_per_day=self.steps_per_day)
            self._standard_lc[key] = float(sim.local_control[0])
        return self._standard_lc[key]

    def outcome_limits(self) -> dict[str, float]:
        """The local-control limits of the prescription: ``{constraint name: minimum}``."""
        out: dict[str, float] = {}
        if self.min_local_control is not None:
            out["prescription.min_local_control"] = self.min_local_control
        if self.local_control_vs is not None:
            out["prescription.local_control_vs"] = (
                self.standard_local_control(self.local_control_vs) - self.local_control_margin)
        return out

    def outcome_limits_ok(self, metrics: Mapping[str, Any]) -> np.ndarray | bool:
        """Mask of schedules whose ``metrics["local_control"]`` meets every local-control limit
        (True when the prescription has none); for back-ends that score schedules themselves."""
        lims = self.outcome_limits()
        if not lims:
            return True
        lc = np.asarray(metrics["local_control"], dtype=float)
        lo = max(lims.values())
        return lc >= lo - FEAS_TOL

    @property
    def continuous_dose(self) -> bool:
        """True when ``dose_step_gy = 0``."""
        return self.dose_step <= 0

    def dose_grid(self) -> np.ndarray:
        """Allowed doses per fraction: the multiples of ``dose_step_gy`` in the dose range
        (empty if continuous)."""
        if self.continuous_dose:
            return np.array([])
        k0 = int(np.ceil(self.d_min / self.dose_step - 1e-9))
        k1 = int(np.floor(self.d_max / self.dose_step + 1e-9))
        return np.round(self.dose_step * np.arange(k0, k1 + 1), 10)

    def weekday(self, day: int) -> str:
        """Weekday name of calendar ``day``."""
        return weekday_of(day, self.start_weekday)

    # ------------------------------------------------------------------ radiobiology
    def tumour_bed(self, D: np.ndarray) -> np.ndarray:
        """Tumour BED (Gy) of daily dose rows: classical LQ ``sum d (1 + d/rho)``, no time factor.

        Clinical prescriptions (e.g. BED10 >= 100 Gy, Onishi 2007) are stated this way; the
        instance's survival model (LQ-L, USC) and repopulation change the simulated cell kill
        (log kill, TCP), not the prescription arithmetic.
        """
        return rb.bed(np.atleast_2d(D), self.alpha_beta)

    def oar_bed(self, D: np.ndarray) -> np.ndarray:
        """BED (Gy, LQ at the organ's alpha/beta) of every OAR, shape ``(N, n_oar)``."""
        D = np.atleast_2d(D)
        if not self.oars:
            return np.zeros((D.shape[0], 0))
        return np.stack([rb.bed(rb.oar_doses(D, o.sparing_factor), o.alpha_beta_gy)
                         for o in self.oars], axis=1)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, D: Any, U: Any = None, *, simulate_tme: bool | None = None,
                 all_metrics: bool = False, dose_ratio: Any = None) -> Evaluation:
        """Metrics, objective and constraint slacks of many schedules at once.

        Parameters
        ----------
        D : array_like, shape (N, horizon_days)
            Tumour dose per day (Gy).
        U : array_like, shape (N, horizon_days), optional
            NK infusions per day.
        simulate_tme : bool, optional
            Run the TME simulator (default: when the objective needs it).
        all_metrics : bool
            Compute local control even when the objective does not need it (verification).
        dose_ratio : float or array_like, optional
            Tumour dose / prescribed dose per row (default the prescription's; named standard
            schedules carry their source's, :meth:`standard_plan`).
        """
        D = np.atleast_2d(np.asarray(D, dtype=float))
        n, H = D.shape
        if H != self.horizon_days:
            raise ValueError(f"dose rows have {H} days, the horizon is {self.horizon_days}")
        U = np.zeros_like(D) if U is None else np.broadcast_to(
            np.atleast_2d(np.asarray(U, dtype=float)), D.shape)
        frac = D > 0
        nfr = frac.sum(axis=1)
        days = np.arange(H)
        m: dict[str, np.ndarray] = {}
        m["n_fractions"] = nfr.astype(float)
        m["tumour_bed_gy"] = self.tumour_bed(D)
        m["tumour_eqd2_gy"] = rb.eqd2_from_bed(m["tumour_bed_gy"], self.alpha_beta)
        oar_bed = self.oar_bed(D)
        dmax = D.max(axis=1)
        dmin = np.where(frac, D, np.inf).min(axis=1)
        dmin = np.where(nfr > 0, dmin, 0.0)
        m["max_dose_per_fraction_gy"] = dmax
        m["overall_days"] = rb.overall_days(D).astype(float)
        for i, o in enumerate(self.oars):
            m[f"oar.{o.name}.bed_gy"] = oar_bed[:, i]
            m[f"oar.{o.name}.eqd2_gy"] = rb.eqd2_from_bed(oar_bed[:, i], o.alpha_beta_gy)
            m[f"oar.{o.name}.max_dose_per_fraction_gy"] = dmax * o.sparing_factor
        # the immune cost of the fractions: endogenous circulating NK (closed form, no TME),
        # under the tumour dose, as the simulator's pool (nk_blood_dose_fraction is per Gy of it)
        m.update(circulating_metrics(self.tumour_doses(D, dose_ratio), self.biology.params))
        if self.dvh is not None:
            m.update(self.dvh.metrics(D))
        run = self.needs_simulation if simulate_tme is None else simulate_tme
        if run:
            sim = simulate(self.biology, self.tumour_doses(D, dose_ratio), U,
                           steps_per_day=self.steps_per_day,
                           population=all_metrics or self.needs_population,
                           counterfactual=all_metrics or self.needs_counterfactual)
            for name, attr in SIMULATION_METRICS.items():
                m[name] = getattr(sim, attr)
            if all_metrics or self.needs_reoxygenation:
                m.update(self.reoxygenation_metrics(D, dose_ratio))
            # NK favourability counts the patient's own NK cells too; the infused cells' part
            m["nk_favourability_infused"] = m["nk_favourability"] - m["nk_favourability_endogenous"]
        obj = self.objective_from_metrics(m, n)

        s: dict[str, tuple[np.ndarray, float, str, str]] = {}
        s["n_fractions.min"] = (m["n_fractions"], float(self.n_min), ">=", "rule")
        s["n_fractions.max"] = (m["n_fractions"], float(self.n_max), "<=", "rule")
        s["dose_per_fraction.min"] = (np.where(nfr > 0, dmin, self.d_min), self.d_min, ">=", "rule")
        s["dose_per_fraction.max"] = (dmax, self.d_max, "<=", "rule")
        if not self.continuous_dose:
            k = D / self.dose_step
            off = np.where(frac, np.abs(k - np.round(k)) * self.dose_step, 0.0).max(axis=1)
            s["dose_grid"] = (off, 0.0, "<=", "rule")
        if self.uniform:
            s["uniform_dose"] = (dmax - dmin, 0.0, "<=", "rule")
        s["treatment_weekdays"] = ((frac & ~self.day_allowed).sum(axis=1).astype(float), 0.0,
                                   "<=", "rule")
        prev = np.maximum.accumulate(np.where(frac, days, -_BIG), axis=1)
        prev = np.concatenate([np.full((n, 1), -_BIG), prev[:, :-1]], axis=1)
        # no earlier fraction (or a single one): no interval to check, +inf
        gaps = np.where(frac & (prev > -_BIG), days - prev, np.inf).min(axis=1)
        s["min_interval_days"] = (gaps, float(self.min_interval), ">=", "rule")
        s["max_overall_days"] = (m["overall_days"], float(self.max_overall), "<=", "rule")
        s["prescription.min_bed_gy"] = (m["tumour_bed_gy"], self.min_bed, ">=", "limit")
        if "local_control" in m and not np.isnan(np.asarray(m["local_control"])).all():
            for key, lim in self.outcome_limits().items():
                s[key] = (m["local_control"], lim, ">=", "limit")
        for i, o in enumerate(self.oars):
            if o.max_bed_gy is not None:
                s[f"oar.{o.name}.max_bed_gy"] = (oar_bed[:, i], o.max_bed_gy, "<=", "limit")
            if o.max_dose_per_fraction_gy is not None:
                s[f"oar.{o.name}.max_dose_per_fraction_gy"] = (
                    m[f"oar.{o.name}.max_dose_per_fraction_gy"], o.max_dose_per_fraction_gy, "<=",
                    "limit")
        if self.dvh is not None:
            s.update(self.dvh.slacks(m))
        if self.nk is not None:
            r = self.nk
            inf = U > 0
            cnt = U.sum(axis=1)
            m["n_infusions"] = cnt
            s["nk.n_infusions.min"] = (cnt, float(r.n_min), ">=", "rule")
            s["nk.n_infusions.max"] = (cnt, float(r.n_max), "<=", "rule")
            first = np.where(inf, days, _BIG).min(axis=1)
            last = np.where(inf, days, -_BIG).max(axis=1)
            s["nk.earliest_day"] = (np.where(cnt > 0, first, r.earliest_day).astype(float),
                                    float(r.earliest_day), ">=", "rule")
            s["nk.latest_day"] = (np.where(cnt > 0, last, r.latest_day).astype(float),
                                  float(r.latest_day), "<=", "rule")
            iprev = np.maximum.accumulate(np.where(inf, days, -_BIG), axis=1)
            iprev = np.concatenate([np.full((n, 1), -_BIG), iprev[:, :-1]], axis=1)
            igap = np.where(inf & (iprev > -_BIG), days - iprev, np.inf).min(axis=1)
            igap = np.where((U > 1).any(axis=1), 0.0, igap)  # two infusions on one day
            s["nk.min_interval_days"] = (igap, float(r.min_interval_days), ">=", "rule")
            # next fraction strictly after each infusion day
            nxt = np.minimum.accumulate(np.where(frac, days, _BIG)[:, ::-1], axis=1)[:, ::-1]
            nxt = np.concatenate([nxt[:, 1:], np.full((n, 1), _BIG)], axis=1)
            gap_f = np.where(inf & (nxt < _BIG), nxt - days, np.inf).min(axis=1)
            s["nk.min_days_before_next_fraction"] = (
                gap_f - 1.0, float(r.min_days_before_next_fraction), ">=", "rule")
        viol = np.zeros(n)
        for val, lim, sense, _ in s.values():
            sl = (val - lim) if sense == ">=" else (lim - val)
            viol = viol + np.maximum(-sl, 0.0) / max(1.0, abs(lim))
        return Evaluation(obj, m, s, viol)

    def evaluate_plans(self, plans: Sequence[Plan], **kw: Any) -> Evaluation:
        """:meth:`evaluate` on a list of plans (each with its :meth:`dose_ratio_of`)."""
        rows = [p.daily(self.horizon_days) for p in plans]
        if "dose_ratio" not in kw and any(self.dose_ratio_of(p) != self.tumour_dose_ratio
                                          for p in plans):
            kw["dose_ratio"] = np.array([self.dose_ratio_of(p) for p in plans])
        return self.evaluate(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), **kw)

    def dose_ratio_of(self, plan: Plan) -> float:
        """Tumour dose / prescribed dose of ``plan``: the source's for a plan made by
        :meth:`standard_plan`, else the prescription's."""
        r = getattr(plan, "tumour_dose_ratio", None)
        return self.tumour_dose_ratio if r is None else float(r)

    def standard_plan(self, name: str, nk_days: Sequence[int] | None = None) -> Plan:
        """The named standard schedule as a plan (rtopt/model/data/standard_schedules.toml),
        delivered with its source's prescription convention (the plan carries it as
        ``tumour_dose_ratio``); ``nk_days`` default: the earliest rule-abiding infusions.

        Raises
        ------
        KeyError
            Unknown name (the message has did-you-mean).
        ValueError
            A fraction day beyond the horizon.
        """
        from rtopt.model.standards import standard_schedule

        st = standard_schedule(name)
        if st.days[-1] >= self.horizon_days:
            raise ValueError(f"standard schedule {name}: day {st.days[-1]} is beyond the horizon "
                             f"of {self.name} (last day {self.horizon_days - 1})")
        if nk_days is None:
            nk_days = (self.first_valid_infusions(st.days) or ()) if self.nk is not None else ()
        return Plan(st.days, st.doses_gy, tuple(nk_days), tumour_dose_ratio=st.tumour_dose_ratio)

    def verify(self, plan: Plan) -> Verification:
        """Re-simulate one plan and re-check every constraint (the gate before any report)."""
        return self.verify_all([plan])[0]

    @property
    def prescription_step(self) -> float:
        """Dose grid of written plans (Gy): ``dose_step_gy``, or the instance's
        ``prescription_step_gy`` (default :data:`PRESCRIPTION_STEP_GY`) for a continuous-dose
        instance; 0 means no rounding."""
        return self.dose_step if self.dose_step > 0 else self._prescription_step

    def verify_prescribable(self, plans: Sequence[Plan]) -> list[Verification]:
        """:meth:`verify_all` of ``plans`` put on the prescription grid (:attr:`prescription_step`).

        Each plan is rounded to the nearest grid doses; if that violates a limit, the doses
        rounded down, then up, are tried; if none verifies, the plan is kept unrounded when it
        verifies as it is (written with every digit), else the nearest rounding is returned
        with its violations.  The returned verification is of the plan to write, so a file
        written from it passes ``rtopt simulate --plan`` unchanged.
        """
        if not plans:
            return []
        step = self.prescription_step
        if step <= 0:
            return self.verify_all(plans)
        lo, hi = self.d_min, self.d_max
        out = self.verify_all([p.rounded(step, "nearest", lo, hi) for p in plans])
        retry = [i for i, v in enumerate(out) if not v.feasible]
        if retry:
            alts = [(i, c) for i in retry for c in (plans[i].rounded(step, "down", lo, hi),
                                                    plans[i].rounded(step, "up", lo, hi),
                                                    plans[i])]
            ver = self.verify_all([c for _, c in alts])
            for (i, _), v in zip(alts, ver):
                if v.feasible and not out[i].feasible:
                    out[i] = v
        return out

    def verify_all(self, plans: Sequence[Plan]) -> list[Verification]:
        """:meth:`verify` for several plans in one vectorised simulation."""
        if not plans:
            return []
        ev = self.evaluate_plans(plans, simulate_tme=True, all_metrics=True)
        out = []
        for i, plan in enumerate(plans):
            checks = []
            for name, (val, lim, sense, kind) in ev.slacks.items():
                v = float(val[i])
                sl = (v - lim) if sense == ">=" else (lim - v)
                ok = sl >= -FEAS_TOL * max(1.0, abs(lim))
                checks.append(ConstraintCheck(name, v, float(lim), sense, float(sl), bool(ok),
                                              kind))
            metrics = {k: float(v[i]) for k, v in ev.metrics.items()}
            out.append(Verification(plan, float(ev.objective[i]), metrics, tuple(checks)))
        return out

    # ------------------------------------------------------------------ placement helpers
    def compact_calendar(self, n: int, start: int | None = None) -> tuple[int, ...] | None:
        """Compact calendar of ``n`` fractions: each on the first allowed day at least
        ``min_interval_days`` after the previous.  From ``start`` (its first allowed day on or
        after it), or, without ``start``, the shortest such calendar over all start days
        (earliest on ties).  None if none fits the horizon and ``max_overall_days``."""
        if n <= 0:
            return ()
        if start is None:
            cals = self.compact_calendars(n)
            return cals[0] if cals else None
        allowed = self.allowed_days[self.allowed_days >= start]
        if allowed.size == 0:
            return None
        days = [int(allowed[0])]
        while len(days) < n:
            nxt = allowed[allowed >= days[-1] + self.min_interval]
            if nxt.size == 0:
                return None
            days.append(int(nxt[0]))
        return tuple(days) if days[-1] - days[0] <= self.max_overall else None

    def compact_calendars(self, n: int, starts: Iterable[int] | None = None) -> list[tuple[int, ...]]:
        """Distinct compact calendars of ``n`` fractions from each start day (default: every
        allowed day), shortest overall time first, then earliest."""
        seen: dict[tuple[int, ...], None] = {}
        for s in (self.allowed_days if starts is None else starts):
            cal = self.compact_calendar(n, start=int(s))
            if cal is not None:  # a later start can still fit: weekends change the span
                seen.setdefault(cal, None)
        return sorted(seen, key=lambda c: (c[-1] - c[0] if c else 0, c))

    def infusion_day_ok(self, fraction_days: Iterable[int], day: int) -> bool:
        """True if an infusion on ``day`` obeys the window and the no-fraction-after rule."""
        r = self.nk
        if r is None:
            return False
        if not r.earliest_day <= day <= r.latest_day:
            return False
        m = r.min_days_before_next_fraction
        return not any(day < f <= day + m for f in fraction_days)

    def first_valid_infusions(self, fraction_days: Iterable[int]) -> tuple[int, ...] | None:
        """Earliest rule-abiding set of the minimum number of infusions (``()`` without NK or
        with ``n_infusions`` min 0); None if none exists.  For objectives that ignore NK."""
        r = self.nk
        if r is None or r.n_min == 0:
            return ()
        fd = tuple(fraction_days)
        days: list[int] = []
        for t in range(r.earliest_day, r.latest_day + 1):
            if len(days) == r.n_min:
                break
            if (not days or t - days[-1] >= r.min_interval_days) and self.infusion_day_ok(fd, t):
                days.append(t)
        return tuple(days) if len(days) == r.n_min else None

    # ------------------------------------------------------------------ diagnosis
    def _diagnose_local_control(self, n_lo: int, n_hi: int, conflicts: list[str],
                                best: dict[str, float]) -> None:
        """Best local control over uniform plans at the highest dose the limits allow for
        each fraction count (compact calendars, earliest rule-abiding infusions); a conflict
        when it stays below a local-control limit.  Local control rises with dose, so this is
        the uniform-dose bound on the calendars tried."""
        rows, plans = [], []
        for n in range(n_lo, n_hi + 1):
            d = self.max_uniform_grid_dose(n)
            if d < self.d_min - 1e-9:
                continue
            for cal in self.compact_calendars(n)[:3]:
                nk = self.first_valid_infusions(cal)
                plans.append(Plan.uniform(cal, d, nk or ()))
        if not plans:
            return
        ev = self.evaluate_plans(plans, simulate_tme=True, all_metrics=True)
        lc = np.asarray(ev.metrics["local_control"])
        ok = np.asarray(ev.metrics["tumour_bed_gy"]) >= self.min_bed - FEAS_TOL * max(1.0, self.min_bed)
        if not ok.any():
            return
        i = int(np.argmax(np.where(ok, lc, -np.inf)))
        best["local_control"] = float(lc[i])
        for key, lim in self.outcome_limits().items():
            if lc[i] < lim - FEAS_TOL:
                what = (f"{key}={lim:.4g}" if key.endswith("min_local_control") else
                        f"{key}='{self.local_control_vs}' (local control {lim + self.local_control_margin:.4g}"
                        f" - margin {self.local_control_margin:g} = {lim:.4g})")
                conflicts.append(
                    f"{what} conflicts with the dose limits: the highest local control the "
                    f"limits allow is {lc[i]:.4g} ({plans[i].describe()}; uniform doses at the "
                    "largest dose the OAR and dose limits allow)")
    def max_uniform_grid_dose(self, n: int) -> float:
        """:meth:`max_uniform_dose` on the dose grid (the largest grid dose at or below it;
        ``-inf`` when none), or itself for continuous doses."""
        d = self.max_uniform_dose(n)
        if self.continuous_dose:
            return d
        g = self.dose_grid()
        g = g[g <= d + 1e-9]
        return float(g.max()) if g.size else -np.inf

    def max_uniform_dose(self, n: int) -> float:
        """Largest uniform dose per fraction (Gy) that every OAR limit and ``d_max`` allow for
        ``n`` fractions (ignoring the grid); may fall below ``d_min``."""
        d = self.d_max
        for o in self.oars:
            if o.max_dose_per_fraction_gy is not None:
                d = min(d, o.max_dose_per_fraction_gy / o.sparing_factor)
            if o.max_bed_gy is not None:
                d = min(d, float(rb.max_oar_dose_for_bed(o.max_bed_gy, n, o.alpha_beta_gy))
                        / o.sparing_factor)
        if self.dvh is not None and d > 0:
            d = min(d, self.dvh.max_uniform_dose(n, d))
        return d

    def binding_oar(self, n: int) -> str | None:
        """Name of the limit that sets :meth:`max_uniform_dose` for ``n`` fractions."""
        best, name = self.d_max, None
        for o in self.oars:
            cands = []
            if o.max_dose_per_fraction_gy is not None:
                cands.append((o.max_dose_per_fraction_gy / o.sparing_factor,
                              f"oar.{o.name}.max_dose_per_fraction_gy"))
            if o.max_bed_gy is not None:
                cands.append((float(rb.max_oar_dose_for_bed(o.max_bed_gy, n, o.alpha_beta_gy))
                              / o.sparing_factor, f"oar.{o.name}.max_bed_gy"))
            for d, nm in cands:
                if d < best:
                    best, name = d, nm
        if self.dvh is not None and best > 0:
            d = self.dvh.max_uniform_dose(n, best)
            if d < best:
                name = self.dvh.binding_limit(n, d) or name
        return name

    def fraction_count_range(self) -> tuple[int, int]:
        """Fraction counts allowed by both the instance range and the calendar."""
        fit = max_fractions_that_fit(self.allowed_days, self.min_interval, self.max_overall)
        return self.n_min, min(self.n_max, fit)

    def diagnose(self) -> Diagnosis:
        """Explain infeasibility from closed forms: calendar, prescription vs OAR, NK rules.

        The prescription check maximises tumour BED over uniform doses for each fraction count
        (for one OAR this is the classic result; with per-fraction doses allowed it is the
        uniform-dose bound and says so).  Returns an empty diagnosis if no conflict is found.
        """
        conflicts: list[str] = []
        best: dict[str, float] = {}
        n_lo, n_hi = self.fraction_count_range()
        if n_hi < n_lo:
            conflicts.append(
                f"calendar: at most {n_hi} fraction(s) fit on the allowed weekdays with "
                f"min_interval_days={self.min_interval} within max_overall_days="
                f"{self.max_overall}, but n_fractions needs at least {n_lo}")
            best["n_fractions"] = float(n_hi)
            return Diagnosis(tuple(conflicts), best)
        best_bed, best_n, best_d = -np.inf, None, None
        for n in range(n_lo, n_hi + 1):
            d = self.max_uniform_grid_dose(n)
            if d < self.d_min - 1e-9:
                continue
            cal = self.compact_calendar(n)
            if cal is None:
                continue
            row = np.zeros((1, self.horizon_days))
            row[0, list(cal)] = d
            bed = float(self.tumour_bed(row)[0])
            if bed > best_bed:
                best_bed, best_n, best_d = bed, n, d
        if best_n is None:
            n = n_lo
            conflicts.append(
                f"dose_per_fraction_gy: even the smallest dose {self.d_min:g} Gy breaks "
                f"{self.binding_oar(n)} (largest allowed uniform dose "
                f"{self.max_uniform_dose(n):.3g} Gy at {n} fraction(s))")
            best["max_uniform_dose_gy"] = self.max_uniform_dose(n)
        elif best_bed < self.min_bed - FEAS_TOL * max(1.0, self.min_bed):
            best["tumour_bed_gy"] = best_bed
            # With per-fraction doses a non-uniform plan can exceed the uniform bound
            # (Saberian et al. 2015), so only uniform-dose instances get a proved conflict.
            if self.uniform:
                lim = self.binding_oar(best_n) or "fractionation.dose_per_fraction_gy"
                conflicts.append(
                    f"prescription.min_bed_gy={self.min_bed:g} Gy conflicts with {lim}: the "
                    f"highest tumour BED the limits allow is {best_bed:.4g} Gy ({best_n} x "
                    f"{best_d:.4g} Gy)")
        if self.has_outcome_limits and not conflicts and best_n is not None:
            self._diagnose_local_control(n_lo, n_hi, conflicts, best)
        if self.nk is not None:
            r = self.nk
            window = max(0, r.latest_day - r.earliest_day)
            fit = (window // max(1, r.min_interval_days) + 1) if r.latest_day >= r.earliest_day else 0
            if fit < r.n_min:
                conflicts.append(
                    f"nk: only {fit} infusion(s) fit between day {r.earliest_day} and day "
                    f"{r.latest_day} at min_interval_days={r.min_interval_days}, but "
                    f"n_infusions needs {r.n_min}")
                best["n_infusions"] = float(fit)
            elif not conflicts:
                # infusion window vs fraction days: try compact calendars from every start day
                ok = False
                for start in self.allowed_days:
                    for n in range(n_lo, n_hi + 1):
                        cal = self.compact_calendar(n, start=int(start))
                        if cal is not None and self.first_valid_infusions(cal) is not None:
                            ok = True
                            break
                    if ok:
                        break
                if not ok:
                    conflicts.append(
                        f"nk: no {r.n_min} infusion(s) fit in days {r.earliest_day}-{r.latest_day} "
                        f"with min_days_before_next_fraction={r.min_days_before_next_fraction} "
                        f"around any calendar of {n_lo}-{n_hi} fractions")
        return Diagnosis(tuple(conflicts), best)
