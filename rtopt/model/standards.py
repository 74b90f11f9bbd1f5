"""Named standard schedules and the prescription convention (docs/model.md section 9).

The one table of standard schedules (``rtopt/model/data/standard_schedules.toml``): dose per
fraction, calendar, where the source prescribed the dose, and the source.  Trial arms, pareto
reference marks, outcome-table rows and ``[prescription] local_control_vs`` all read it here.

The *prescription convention* turns a prescribed dose into the dose the tumour receives:
``tumour dose = tumour_dose_ratio x prescribed dose``.  An isocentre (ICRU point) prescription
has ratio 1; a prescription to the isodose line ``p`` % covering the PTV (the maximum is
``100 / p`` times the prescription) has ``1 + GTV_HOT_SHARE (100 / p - 1)``: the mean GTV dose
lies that share of the way from the prescription to the maximum.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["StandardSchedule", "standard_schedules", "standard_schedule", "unknown_standard",
           "tumour_dose_ratio", "GTV_HOT_SHARE"]

GTV_HOT_SHARE = 0.8
"""Share of the way from the prescription (PTV edge) to the maximum at which the mean GTV dose
lies: 80 % isodose -> mean GTV dose 1.2 x prescription.  Assumption inside the published spread:
the mean *target* (PTV) dose is 1.10 x at the 80 % line and 1.40 x at the 50 % line (share 0.4;
Verellen / Paddick teaching example), and the GTV, inside the PTV, is hotter; series report mean
GTV doses of 1.15-1.3 x an 80 % prescription."""


def tumour_dose_ratio(isodose_percent: float | None = None,
                      ratio: float | None = None) -> float:
    """Mean tumour dose / prescribed dose of a prescription convention.

    Parameters
    ----------
    isodose_percent : float, optional
        Isodose line (% of the maximum) the prescription covers the PTV with, in (0, 100].
    ratio : float, optional
        The ratio itself (wins over ``isodose_percent``); neither means an isocentre or ICRU
        point prescription, ratio 1.

    Returns
    -------
    float
        Dimensionless ratio >= 1 for an isodose prescription.
    """
    if ratio is not None:
        return float(ratio)
    if isodose_percent is None:
        return 1.0
    return 1.0 + GTV_HOT_SHARE * (100.0 / float(isodose_percent) - 1.0)


@dataclass(frozen=True)
class StandardSchedule:
    """One named standard schedule (uniform dose per fraction on fixed calendar days)."""

    name: str
    dose_per_fraction_gy: float
    days: tuple[int, ...]
    prescription: str
    isodose_percent: float | None
    calendar: str
    source: str

    @property
    def doses_gy(self) -> tuple[float, ...]:
        """Dose of each fraction (Gy, prescribed)."""
        return (self.dose_per_fraction_gy,) * len(self.days)

    @property
    def tumour_dose_ratio(self) -> float:
        """Mean tumour dose / prescribed dose of the source's prescription convention."""
        return tumour_dose_ratio(self.isodose_percent)

    @property
    def convention(self) -> str:
        """``isocentre`` or ``PTV edge, 80 % isodose``."""
        if self.prescription == "isocentre":
            return "isocentre"
        return f"PTV edge, {self.isodose_percent:g} % isodose"

    def describe(self) -> str:
        """``18 Gy x 3 on days 0,4,8 (PTV edge, 80 % isodose)``."""
        return (f"{self.dose_per_fraction_gy:g} Gy x {len(self.days)} on days "
                f"{','.join(map(str, self.days))} ({self.convention})")


@lru_cache(maxsize=1)
def standard_schedules() -> dict[str, StandardSchedule]:
    """Every named standard schedule, by name, in table order."""
    text = resources.files("rtopt.model.data").joinpath("standard_schedules.toml").read_text()
    out: dict[str, StandardSchedule] = {}
    for s in tomllib.loads(text)["schedule"]:
        out[s["name"]] = StandardSchedule(
            name=s["name"], dose_per_fraction_gy=float(s["dose_per_fraction_gy"]),
            days=tuple(int(d) for d in s["days"]), prescription=s["prescription"],
            isodose_percent=s.get("isodose_percent"), calendar=s["calendar"],
            source=s["source"])
    return out


def unknown_standard(name: str) -> str | None:
    """None if ``name`` is a standard schedule, else a one-line message with did-you-mean."""
    table = standard_schedules()
    if name in table:
        return None
    names = list(table)
    hint = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
    msg = f"unknown standard schedule {name!r}"
    if hint:
        msg += f"; did you mean {hint[0]!r}?"
    return f"{msg} (one of {', '.join(names)})"


def standard_schedule(name: str) -> StandardSchedule:
    """The standard schedule called ``name``.

    Raises
    ------
    KeyError
        With the message of :func:`unknown_standard`.
    """
    msg = unknown_standard(name)
    if msg:
        raise KeyError(msg)
    return standard_schedules()[name]
