"""The headline re-measured per objective: 12.5 Gy x 4 against 18 Gy x 3, and the optimiser's
proposal against 18 Gy x 3, on the peripheral lung instance.

For each plan (each fixed schedule with its best rule-abiding NK days for NK favourability;
the proposal is ``rtopt solve``'s plan) it prints, at nominal parameters, NK favourability,
local control, the NK-attributable gain and the reoxygenation gain in local control, and,
over ``--draws`` Latin-hypercube draws of every uncertain parameter
(:func:`rtopt.model.uncertainty.distributions_for`), the probability that the plan beats
18 Gy x 3 on each metric (ties count half).

    python examples/headline_by_objective.py [--draws 512] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

import rtopt
from rtopt.backends.exhaustive import ExhaustiveBackend
from rtopt.model.uncertainty import biology_with, distributions_for, sample_values

INSTANCE = Path(__file__).resolve().parents[1] / "instances" / "lung-sbrt-peripheral.toml"
METRICS = (("nk_favourability", "NK favourability (activity-days)"),
           ("local_control", "local control"),
           ("nk_gain_local_control", "NK gain in local control"),
           ("reoxygenation_gain_local_control", "reoxygenation gain in local control"))


def best_nk(problem: rtopt.Problem, days: tuple[int, ...], dose: float) -> rtopt.Plan:
    """The uniform schedule with the rule-abiding infusion set of highest NK favourability."""
    sets = [s for s in ExhaustiveBackend.infusion_sets(problem, 1)
            if s and all(problem.infusion_day_ok(days, t) for t in s)]
    plans = [rtopt.Plan.uniform(days, dose, s) for s in sets]
    ev = problem.evaluate_plans(plans, simulate_tme=True)
    return plans[int(np.argmax(ev.metrics["nk_favourability"]))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    problem = rtopt.Problem.from_path(INSTANCE)
    res = rtopt.solve(problem, solver="exhaustive")
    plans = {"12.5 x 4": best_nk(problem, (0, 1, 2, 3), 12.5),
             "18 x 3": best_nk(problem, (0, 2, 4), 18.0),
             "optimiser": res.plan}
    names = list(plans)
    nominal = problem.verify_all(list(plans.values()))
    values = sample_values(distributions_for(problem), a.draws, a.seed)
    k, m = len(plans), a.draws
    rows = [p.daily(problem.horizon_days) for p in plans.values()]
    D = np.repeat(np.array([r[0] for r in rows]), m, axis=0)
    U = np.repeat(np.array([r[1] for r in rows]), m, axis=0)
    p = copy.copy(problem)
    p.biology = biology_with(problem.biology, {n: np.tile(v, k) for n, v in values.items()})
    ev = p.evaluate(D, U, simulate_tme=True, all_metrics=True)
    print(f"instance {problem.name} (tumour dose {problem.tumour_dose_ratio:g} x prescription); "
          f"objective {problem.objective_name}")
    for n, v in zip(names, nominal):
        print(f"  {n:10s} {v.plan.describe()}")
    print(f"{'metric':38s}" + "".join(f"{n:>12s}" for n in names)
          + f"{'P(12.5x4 > 18x3)':>19s}{'P(opt > 18x3)':>15s}")
    for key, label in METRICS:
        x = np.asarray(ev.metrics[key], dtype=float).reshape(k, m)
        win = [np.mean(x[i] > x[1]) + 0.5 * np.mean(x[i] == x[1]) for i in (0, 2)]
        print(f"{label:38s}" + "".join(f"{v.metrics[key]:12.4g}" for v in nominal)
              + f"{win[0]:19.2f}{win[1]:15.2f}")
    print(f"{a.draws} Latin-hypercube draws (seed {a.seed}) of "
          f"{sum(not d.fixed for d in distributions_for(problem).values())} uncertain parameters")


if __name__ == "__main__":
    main()
