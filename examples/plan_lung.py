"""Plan a peripheral lung SBRT course with NK cells: two solvers and a clinician's alternative.

Run from anywhere (the instance path defaults to the checkout's ``instances/`` folder)::

    python examples/plan_lung.py [INSTANCE.toml] [--time-limit S]

It loads the instance, solves it with the exhaustive reference back-end and with differential
evolution, checks a clinician's alternative plan (5 x 11 Gy on alternate days, one NK infusion
on day 14) against every limit, and prints the three side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import rtopt
from rtopt.problem.problem import Plan, Problem

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent / "instances" / "lung-sbrt-peripheral.toml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("instance", nargs="?", default=str(DEFAULT))
    ap.add_argument("--time-limit", type=float, default=5.0, help="per solver (s)")
    args = ap.parse_args(argv)

    try:
        problem = Problem.from_path(args.instance)
    except rtopt.InstanceError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 1

    rows = []
    for solver in ("exhaustive", "scipy_de"):
        r = rtopt.solve(problem, solver, time_limit_s=args.time_limit, seed=0)
        status = r.status + ("*" if r.termination == "time_limit" else "")
        rows.append((solver, status, r.plan.describe() if r.plan else "-", r.objective,
                     r.metrics.get("tumour_bed_gy"), r.wall_time_s))

    # A clinician's alternative: 5 x 11 Gy on alternate weekdays, one NK infusion on day 14.
    alternative = Plan.uniform((0, 2, 4, 7, 9), 11.0, (14,))
    v = problem.verify(alternative)
    status = "feasible" if v.feasible else "VIOLATES " + ", ".join(c.name for c in v.violated)
    rows.append(("clinician", status, alternative.describe(), v.objective,
                 v.metrics.get("tumour_bed_gy"), 0.0))

    print(f"{problem.name}: maximise {problem.objective_name}")
    print(f"{'plan':<11} {'status':<10} {'objective':>9} {'BED10 Gy':>9} {'time s':>7}  schedule")
    for who, st, desc, obj, bed, secs in rows:
        fo = "-" if obj is None else f"{obj:.4g}"
        fb = "-" if bed is None else f"{bed:.4g}"
        print(f"{who:<11} {st:<10} {fo:>9} {fb:>9} {secs:>7.2f}  {desc}")
    if any(r[1].endswith("*") for r in rows):
        print("* stopped at the time limit: best plan found so far (raise --time-limit)")
    best = max((r for r in rows[:2] if r[3] is not None), key=lambda r: r[3], default=None)
    if best is not None and v.objective is not None:
        print(f"the clinician's plan reaches {v.objective / best[3]:.0%} of the best "
              f"optimised objective ({best[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
