"""Time allowances for time-limit tests, calibrated on the machine while the test runs.

A back-end checks its deadline between blocks of work, so it may overrun its limit by the block
in progress, and the verification of its plans comes on top.  Both are simulator calls whose
cost depends on the machine and its current load (the simulator's per-day overhead is 0.4 ms on
an idle 2-core VM and ~14 ms under a load average of 5), so the allowance is measured, not fixed.
"""

from __future__ import annotations

import time

import numpy as np

MARGIN = 1.5
"""Factor on the measured times: the load changes between the measurement and the solve."""
FIXED_S = 0.5
"""Set-up outside the simulator after the deadline (building the result, Python overhead)."""


def _simulate_s(problem, rows: int) -> float:
    from rtopt.model.simulator import simulate

    # a fraction and an infusion on day 0: the simulator skips NK work while there are no NK
    # cells, so empty schedules would measure less than a search block costs
    D = np.zeros((rows, problem.horizon_days))
    D[:, 0] = 2.0
    U = np.zeros_like(D)
    U[:, 0] = 1.0
    simulate(problem.biology, D[:1], U[:1], steps_per_day=problem.steps_per_day)  # compiled
    t = time.perf_counter()
    simulate(problem.biology, D, U, steps_per_day=problem.steps_per_day)
    return time.perf_counter() - t


def overshoot_allowance(problem) -> float:
    """Seconds a solve may run past its time limit on this machine now: one search block of
    the exhaustive back-end (the largest block any back-end runs between deadline checks) plus
    the verification (one whole-horizon call for the returned plans)."""
    from rtopt.backends.exhaustive import _BLOCK_SIM_DAYS

    block = _simulate_s(problem, max(1, _BLOCK_SIM_DAYS // problem.horizon_days))
    verify = _simulate_s(problem, 5)
    return FIXED_S + MARGIN * (block + verify)
