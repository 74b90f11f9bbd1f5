"""Benchmarks behind ``rtopt bench``: simulator throughput and solver times, measured in one run.

Speed is measured here, never asserted in tests: timings depend on the machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rtopt.common.errors import RtoptError
from rtopt.decisions.facade import solve
from rtopt.decisions.robust import RobustSpec
from rtopt.decisions.trial import STANDARD_ARMS, run_trial, standard_plan, write_outputs
from rtopt.model.simulator import STEPS_PER_DAY, Biology, simulate, simulate_reference
from rtopt.problem.instance import instance_from_dict
from rtopt.problem.problem import Problem

__all__ = ["random_schedules", "bench_simulator", "bench_solvers", "bench_scaling", "bench_workloads",
           "default_instances"]

_REPO = Path(__file__).resolve().parents[2]


def random_schedules(n: int, horizon_days: int = 42, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random clinical-looking schedules: 1-8 fractions of 6-20 Gy in the first three weeks,
    one or two NK infusions in the first five weeks."""
    rng = np.random.default_rng(seed)
    D = np.zeros((n, horizon_days))
    U = np.zeros((n, horizon_days))
    nf = rng.integers(1, 9, n)
    dose = rng.uniform(6.0, 20.0, n)
    for k in range(8):
        rows = np.flatnonzero(nf > k)
        D[rows, rng.integers(0, min(21, horizon_days), rows.size)] = dose[rows]
    ni = rng.integers(1, 3, n)
    for k in range(2):
        rows = np.flatnonzero(ni > k)
        U[rows, rng.integers(0, min(35, horizon_days), rows.size)] += 1
    return D, U


def bench_simulator(n_fast: int = 65536, n_ref: int = 20, seed: int = 0,
                    steps_per_day: int = STEPS_PER_DAY, repeats: int = 7,
                    progress: Any = None) -> dict[str, Any]:
    """Time the fast simulator and the ``solve_ivp`` reference on the same kind of schedules.

    Side by side in one run: the fast simulator with the TME and nominal tumour outcomes
    (``population=False``), the same with population local control and the NK counterfactual
    (everything ``Problem.verify`` reports), and the reference.  Compilation and a warm-up at
    the measured sizes come first and are not timed; each configuration is then timed
    ``repeats`` times and reported by its median, with the min-max spread.  ``progress`` is
    called with a short label before each timed step (a progress bar in the CLI).
    """
    bio = Biology.simple("lung", product="il15_expanded")
    D, U = random_schedules(max(n_fast, n_ref), seed=seed)
    step = progress or (lambda label: None)
    step("warm-up (compiling the kernels)")
    for population in (False, True):  # both kernel variants (serial, threaded) and paths
        simulate(bio, D[:256], U[:256], steps_per_day=steps_per_day, population=population)
        simulate(bio, D[:min(n_fast, 4096)], U[:min(n_fast, 4096)],
                 steps_per_day=steps_per_day, population=population)
    simulate_reference(bio, D[:1], U[:1])

    def timed(fn) -> tuple[list[float], Any]:
        times, out = [], None
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return times, out

    rows = []
    step("fast simulator: TME and nominal tumour outcomes")
    t_tme, fast = timed(lambda: simulate(bio, D[:n_fast], U[:n_fast],
                                         steps_per_day=steps_per_day, population=False,
                                         counterfactual=False))
    step("fast simulator: with local control and the NK counterfactual")
    t_full, _ = timed(lambda: simulate(bio, D[:n_fast], U[:n_fast],
                                       steps_per_day=steps_per_day))
    step("population local control from the fractions")
    t_pop = _time_population(bio, D[:n_fast], U[:n_fast], steps_per_day, timed)
    step("reference (solve_ivp)")
    t_ref, ref = timed(lambda: simulate_reference(bio, D[:n_ref], U[:n_ref]))
    for name, n, times in (("fast: TME + nominal outcomes", n_fast, t_tme),
                           ("fast: + local control, NK gains", n_fast, t_full),
                           ("reference (solve_ivp DOP853)", n_ref, t_ref),
                           ("fast: population local control (from fractions)", n_fast, t_pop)):
        med = float(np.median(times))
        rows.append({"name": name, "schedules": n, "seconds": med,
                     "seconds_min": min(times), "seconds_max": max(times),
                     "per_second": n / med, "per_second_min": n / max(times),
                     "per_second_max": n / min(times), "repeats": len(times)})
    k = min(n_fast, n_ref)
    rel = lambda a, b: float(np.max(np.abs(a[:k] - b[:k]) / np.maximum(np.abs(b[:k]), 1e-12)))
    return {"rows": rows, "ratio": rows[0]["per_second"] / rows[2]["per_second"],
            "ratio_full": rows[1]["per_second"] / rows[2]["per_second"],
            "horizon_days": D.shape[1], "steps_per_day": steps_per_day, "cpus": os.cpu_count(),
            "repeats": repeats,
            "max_rel_err_nk": rel(fast.nk_auc, ref.nk_auc), "peak_mib": _peak_rss_mib(),
            "chunk": min(n_fast, 65536),
            "max_rel_err_ln_s": rel(fast.ln_survival, ref.ln_survival)}


def _time_population(bio: Biology, D: np.ndarray, U: np.ndarray, steps_per_day: int,
                     timed: Any) -> list[float]:
    """Times of the population local control alone (ln S at the 41 radiosensitivity nodes and
    the population TCP) from each schedule's fractions, as robust and exhaustive searches
    score infusion sets (:class:`rtopt.model.simulator.InfusionKernels`); the simulation that
    gives the fractions is not timed."""
    from rtopt.model.simulator import compact_fractions, tumour_outcomes

    sim = simulate(bio, D, U, steps_per_day=steps_per_day, record_fractions=True,
                   population=False, counterfactual=False)
    fd, fh, fa = compact_fractions(D, sim.fraction_hypoxia, sim.fraction_activity)

    def run():
        return tumour_outcomes(bio, bio.params, D, fd, fh, fa, sim.nk_auc, True,
                               counterfactual=False)

    run()  # warm-up
    return timed(run)[0]


def default_instances() -> list[str]:
    """The shipped instances of a source checkout (``instances/*.toml``); empty when installed."""
    return sorted(str(p) for p in (_REPO / "instances").glob("*.toml"))


def bench_solvers(instances: Sequence[str] | None, profiles: Sequence[Any],
                  time_limit_s: float, progress: Any = None) -> list[dict[str, Any]]:
    """Solve every instance with every profile and record status, objective and time.

    Raises :class:`rtopt.common.errors.RtoptError` when there is nothing to run (no instances or no
    profiles), so a caller never shows an empty table as a result.
    """
    instances = list(instances or default_instances())
    if not instances:
        raise RtoptError("bench: no instances to solve (give instance files; instances/ is in "
                         "the source checkout only)")
    if not profiles:
        raise RtoptError("bench: no solver profiles to time")
    rows = []
    for inst in instances:
        for prof in profiles:
            if progress is not None:
                progress(f"{Path(inst).stem} x {getattr(prof, 'name', prof)}")
            t0 = time.perf_counter()
            r = solve(inst, prof, time_limit_s=time_limit_s)
            rows.append({"instance": r.instance, "profile": getattr(prof, "name", prof),
                         "status": r.status, "objective": r.objective,
                         "seconds": time.perf_counter() - t0})
    return rows


def bench_scaling(time_limit_s: float = 60.0) -> list[dict[str, Any]]:
    """Exhaustive solve time on the lung instance as horizon and fraction range grow."""
    lung = _REPO / "instances" / "lung-sbrt-peripheral.toml"
    if not lung.is_file():
        raise RtoptError("bench --scaling needs instances/lung-sbrt-peripheral.toml of the source "
                         "checkout")
    base = tomllib.loads(lung.read_text())
    rows = []
    for horizon, n_max in ((28, 5), (42, 5), (56, 5), (42, 3), (42, 8), (42, 10)):
        data = {**base, "fractionation": {**base["fractionation"], "horizon_days": horizon,
                                          "n_fractions": [1, n_max]}}
        if "nk" in data:
            data["nk"] = {k: v for k, v in data["nk"].items() if k != "latest_day"}
        inst = instance_from_dict(data, source=f"lung(horizon={horizon}, n_max={n_max})")
        t0 = time.perf_counter()
        r = solve(inst, "exhaustive", time_limit_s=time_limit_s)
        rows.append({"horizon_days": horizon, "n_max": n_max,
                     "schedules": r.extras.get("schedules"),
                     "evaluations": r.extras.get("evaluations"),
                     "seconds": time.perf_counter() - t0, "status": r.status})
    return rows


def _peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB; ``ru_maxrss`` is KiB on Linux)."""
    import resource  # POSIX only

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def bench_workloads(samples: int = 256, patients: int = 1000,
                    progress: Any = None) -> list[dict[str, Any]]:
    """Time the robust exhaustive solve of the lung instance over ``samples`` parameter samples
    (its own objective, and local control against 54/3 by ``prob-better``) and a
    ``patients``-patient, 6-arm virtual trial (the five standard lung arms and the
    exhaustively optimised plan; solve, cohort and outputs), each with the peak memory of the
    process after it.  Compilation is warmed up first (not timed)."""
    lung = _REPO / "instances" / "lung-sbrt-peripheral.toml"
    if not lung.is_file():
        raise RtoptError("bench workloads need instances/lung-sbrt-peripheral.toml of the "
                         "source checkout")
    step = progress or (lambda label: None)
    step("warm-up (robust and trial paths)")
    solve(str(lung), "exhaustive", robust="expected", samples=2)
    # the same instance maximising local control, robust against 54/3 (tumour outcomes on
    # every sample: the costly case, which the bounds prune)
    lc = Problem.from_path(lung).with_objective("local_control")
    ref = standard_plan(lc, "54/3")
    solve(lc, "exhaustive", robust=RobustSpec("prob-better", reference=ref,
                                              reference_name="54/3"), samples=2)
    rows = []
    step(f"robust exhaustive solve, {samples} samples")
    t0 = time.perf_counter()
    r = solve(str(lung), "exhaustive", robust="expected", samples=samples)
    rows.append({"name": f"robust exhaustive solve, lung, {samples} samples",
                 "seconds": time.perf_counter() - t0, "target_s": 60.0,
                 "status": r.status, "peak_mib": _peak_rss_mib()})
    step(f"robust local control vs 54/3, {samples} samples")
    t0 = time.perf_counter()
    r = solve(lc, "exhaustive", robust=RobustSpec("prob-better", reference=ref,
                                                  reference_name="54/3"), samples=samples)
    rows.append({"name": f"robust local control (prob-better vs 54/3), lung, {samples} samples",
                 "seconds": time.perf_counter() - t0, "target_s": 60.0,
                 "status": r.status, "peak_mib": _peak_rss_mib(),
                 "detail": f"{r.extras.get('schedules_scored')} of "
                           f"{r.extras.get('schedules')} schedules scored in full"})
    step(f"virtual trial, {patients} patients x 6 arms")
    t0 = time.perf_counter()
    problem = Problem.from_path(str(lung))
    arms = {a: standard_plan(problem, a) for a in STANDARD_ARMS}
    opt = solve(problem, "exhaustive")
    arms["optimised"] = opt.plan
    res = run_trial(problem, arms, patients, 0)
    with tempfile.TemporaryDirectory() as tmp:
        write_outputs(res, tmp)
    rows.append({"name": f"virtual trial, {patients} patients x {len(arms)} arms",
                 "seconds": time.perf_counter() - t0, "target_s": 30.0,
                 "status": "done", "peak_mib": _peak_rss_mib()})
    return rows
