"""Treatment calendar: weekdays of simulated days and how many fractions fit on them.

Day 0 is the first simulated day; its weekday is the instance's ``start_weekday``.  Fractions
may fall only on days ``0 .. horizon_days - 1`` whose weekday is allowed.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names as instance files spell them, Monday first."""


def _name(weekday: Any) -> str:
    # Accept plain strings and str-valued enums (rtopt.problem.instance.Weekday) alike.
    return str(getattr(weekday, "value", weekday))


def weekday_of(day: int, start_weekday: str) -> str:
    """Return the weekday name of calendar ``day`` when day 0 falls on ``start_weekday``.

    Parameters
    ----------
    day : int
        Calendar day (days since day 0; negative days count backwards).
    start_weekday : str
        Weekday of day 0, one of :data:`WEEKDAYS`.

    Returns
    -------
    str
        One of :data:`WEEKDAYS`.
    """
    return WEEKDAYS[(WEEKDAYS.index(_name(start_weekday)) + int(day)) % 7]


def allowed_days(horizon_days: int, weekdays: Iterable[Any], start_weekday: Any) -> np.ndarray:
    """Return the days in ``0 .. horizon_days - 1`` whose weekday is in ``weekdays``.

    Parameters
    ----------
    horizon_days : int
        Number of calendar days considered (days ``0 .. horizon_days - 1``).
    weekdays : iterable of str
        Allowed weekday names (:data:`WEEKDAYS`).
    start_weekday : str
        Weekday of day 0.

    Returns
    -------
    numpy.ndarray of int
        Sorted allowed days.
    """
    allowed = {WEEKDAYS.index(_name(w)) for w in weekdays}
    days = np.arange(max(int(horizon_days), 0))
    offsets = (days + WEEKDAYS.index(_name(start_weekday))) % 7
    return days[np.isin(offsets, sorted(allowed))]


def allowed_fraction_days(fractionation: Any) -> np.ndarray:
    """Return the days (``0 .. horizon_days - 1``) on which a fraction may be delivered.

    Parameters
    ----------
    fractionation : rtopt.problem.instance.Fractionation
        Any object with ``horizon_days``, ``treatment_weekdays`` and ``start_weekday``.

    Returns
    -------
    numpy.ndarray of int
        Sorted allowed days.
    """
    return allowed_days(fractionation.horizon_days, fractionation.treatment_weekdays,
                        fractionation.start_weekday)


def max_fractions_that_fit(allowed_days: np.ndarray, min_interval_days: int,
                           max_overall_days: int) -> int:
    """Return the largest number of fractions that fit on ``allowed_days``.

    Fractions must be at least ``min_interval_days`` apart and the first and last may be at
    most ``max_overall_days`` apart.  For a fixed first day, taking each next fraction on the
    earliest allowed day is optimal (exchange argument), so a greedy packing from every possible
    first day gives the exact maximum.

    Parameters
    ----------
    allowed_days : array_like of int
        Sorted, distinct days on which a fraction may fall.
    min_interval_days : int
        Minimum spacing of consecutive fractions in days (>= 1).
    max_overall_days : int
        Maximum elapsed days from the first to the last fraction (>= 0).

    Returns
    -------
    int
        0 when no day is allowed.
    """
    days = np.unique(np.asarray(allowed_days, dtype=np.int64))
    n = days.size
    if n == 0 or max_overall_days < 0:
        return 0
    # A chain never spans more than the allowed days do; clipping also avoids int64 overflow.
    span = min(int(max_overall_days), int(days[-1] - days[0]))
    interval = min(max(int(min_interval_days), 1), int(days[-1] - days[0]) + 1)
    # nxt[i]: index of the earliest allowed day at least `interval` after days[i] (n if none).
    nxt = np.append(np.searchsorted(days, days + interval, side="left"), n)  # n maps to itself
    days_ext = np.append(days, np.iinfo(np.int64).max)
    limit = days + span  # latest day of the last fraction, per first day
    # Greedy chains from every first day at once, by pointer doubling: jumps[k][i] is the index
    # reached from i after 2**k greedy steps.  Chain days increase, so "2**k more steps stay
    # within the limit" is monotone in k and the counts add up exactly: O(n log n).
    jumps = [nxt]
    while (1 << len(jumps)) <= n:
        jumps.append(jumps[-1][jumps[-1]])
    current = np.arange(n)
    count = np.ones(n, dtype=np.int64)
    for k in range(len(jumps) - 1, -1, -1):
        cand = jumps[k][current]
        ok = (cand < n) & (days_ext[cand] <= limit)
        current = np.where(ok, cand, current)
        count += ok.astype(np.int64) << k
    return int(count.max())
