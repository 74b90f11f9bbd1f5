"""``rtopt.planning.solve``: instance + solver profile -> verified :class:`Result`.

Every plan a back-end returns is re-simulated and re-checked against every constraint by
:meth:`rtopt.problem.problem.Problem.verify`; the result reports the verified objective beside the
back-end's claim.  A plan that violates a constraint is never reported as feasible.

Status (how good the reported plan is), kept apart from ``termination`` (why the back-end
stopped):

``optimal``      verified feasible, and the back-end proved optimality for this instance
``feasible``     verified feasible (optimal only over the back-end's own formulation, or not proved)
``infeasible``   no plan; the diagnosis names the conflicting limits (exit code 3)
``no_solution``  the back-end found no plan that passes verification (its claims are kept)
``unavailable``  the back-end cannot run on this machine (reason in ``message``)
``declined``     the back-end cannot handle this instance (reason in ``message``)
``error``        the back-end failed (message, no traceback)

Termination ``not_run`` goes with ``unavailable`` and ``declined``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from rtopt.backends import get_backend
from rtopt.backends.base import BackendOutput, Termination
from rtopt.common.errors import ProblemDeclined, RtoptError
from rtopt.problem.dvh import dvh_summary
from rtopt.problem.problem import ConstraintCheck, Diagnosis, Plan, Problem
from rtopt.planning.profiles import Profile, resolve_profile
from rtopt.model.simulator import compile_kernels

__all__ = ["Result", "solve", "FEASIBLE_STATUSES"]

FEASIBLE_STATUSES = ("optimal", "feasible")


@dataclass(frozen=True)
class Result:
    """The outcome of one solve (immutable; :meth:`to_json` for files and the CLI)."""

    instance: str
    solver: str
    backend: str
    status: str
    termination: str
    solution_status: str
    objective_name: str
    objective: float | None
    claimed_objective: float | None
    bound: float | None
    plan: Plan | None
    metrics: dict[str, float]
    constraints: tuple[ConstraintCheck, ...]
    verified: bool
    wall_time_s: float
    solver_name: str = ""
    solver_version: str = ""
    seed: int = 0
    time_limit_s: float | None = None
    message: str = ""
    diagnosis: Diagnosis | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    outcome_calibration: str = ""
    oar_names: tuple[str, ...] = ()

    @property
    def feasible(self) -> bool:
        """True for a verified feasible plan."""
        return self.status in FEASIBLE_STATUSES

    @property
    def gap(self) -> float | None:
        """Relative gap between the back-end's bound and the verified objective, if known.

        None when the bound belongs to the back-end's own approximate model (``extras
        ["bound_of"]``, e.g. the daily-grid MINLP): it does not bound the simulator's objective.
        """
        if self.bound is None or self.objective is None or self.extras.get("bound_of"):
            return None
        return abs(self.bound - self.objective) / max(abs(self.objective), 1e-9)

    @property
    def worst_slack(self) -> float | None:
        """Smallest scaled constraint slack of the plan (negative if violated)."""
        if not self.constraints:
            return None
        return min(c.slack / max(1.0, abs(c.limit)) for c in self.constraints)

    @property
    def exit_code(self) -> int:
        """CLI exit code (the one table of ``rtopt --help``): 0 verified feasible,
        3 infeasible instance, 4 a back-end plan that failed verification, 1 otherwise."""
        if self.feasible:
            return 0
        if self.status == "infeasible":
            return 3
        if self.status == "no_solution" and self.plan is not None:
            return 4
        return 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``rtopt solve --json`` format)."""
        m = self.metrics
        oar = []
        for name in self.oar_names:
            checks = {c.name: c for c in self.constraints if c.name.startswith(f"oar.{name}.")}
            bed_c = checks.get(f"oar.{name}.max_bed_gy")
            dpf_c = checks.get(f"oar.{name}.max_dose_per_fraction_gy")
            oar.append({"name": name, "bed_gy": _r(m.get(f"oar.{name}.bed_gy")),
                        "eqd2_gy": _r(m.get(f"oar.{name}.eqd2_gy")),
                        "max_bed_gy": None if bed_c is None else _r(bed_c.limit),
                        "max_dose_per_fraction_gy": _r(m.get(f"oar.{name}.max_dose_per_fraction_gy")),
                        "dose_per_fraction_limit_gy": None if dpf_c is None else _r(dpf_c.limit),
                        "ok": all(c.ok for c in checks.values())})
        return {
            "instance": self.instance,
            "status": self.status,
            "termination": self.termination,
            "solution_status": self.solution_status,
            "solver": {"profile": self.solver, "backend": self.backend, "name": self.solver_name,
                       "version": self.solver_version, "seed": self.seed,
                       "time_limit_s": self.time_limit_s},
            "objective": {"name": self.objective_name, "value": _r(self.objective),
                          "claimed": _r(self.claimed_objective), "bound": _r(self.bound),
                          "bound_of": self.extras.get("bound_of", "instance" if self.bound
                                                      is not None else None),
                          "gap": _r(self.gap)},
            "schedule": self.plan.to_dict() if self.plan else None,
            "metrics": {
                "tumour_bed_gy": _r(m.get("tumour_bed_gy")),
                "tumour_eqd2_gy": _r(m.get("tumour_eqd2_gy")),
                "oar": oar,
                "nk_favourability": _r(m.get("nk_favourability")),
                "tumour_log10_kill": _r(m.get("tumour_log10_kill")),
                "nk_log10_kill": _r(m.get("nk_log10_kill")),
                "tcp": _r(m.get("tcp")),
                "local_control": _r(m.get("local_control")),
                "log10_kill_without_nk": _r(m.get("log10_kill_without_nk")),
                "local_control_without_nk": _r(m.get("local_control_without_nk")),
                "nk_gain_log10_kill": _r(m.get("nk_gain_log10_kill")),
                "nk_gain_local_control": _r(m.get("nk_gain_local_control")),
                "hypoxic_fraction_end": _r(m.get("hypoxic_fraction_end")),
                "overall_days": _r(m.get("overall_days")),
            },
            "dvh": dvh_summary(m, self.constraints),
            "constraints": [c.to_dict() for c in self.constraints],
            "outcome_calibration": self.outcome_calibration,
            "verified": self.verified,
            "wall_time_s": round(self.wall_time_s, 4),
            "message": self.message,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "extras": _jsonable(self.extras),
        }

    @property
    def dvh(self) -> dict[str, Any] | None:
        """DVH organs' EQD2 metrics, NTCP and target metrics (None without ``[dvh_plan]``)."""
        return dvh_summary(self.metrics, self.constraints)

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)


def _r(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else round(x, 9)


def _jsonable(x: Any) -> Any:
    try:
        return json.loads(json.dumps(x, default=str))
    except (TypeError, ValueError):
        return str(x)


def solve(instance_or_path: Any, solver: str | Profile = "exhaustive", *,
          time_limit_s: float | None = None, seed: int | None = None,
          options: dict[str, Any] | None = None, robust: Any = None, samples: int = 32,
          scheduler: Any = None, reference: Plan | None = None) -> Result:
    """Solve an instance with a solver profile and return a verified :class:`Result`.

    Parameters
    ----------
    instance_or_path : str, Path, Instance or Problem
        An instance file, a validated instance, or a built problem.
    solver : str or Profile
        Profile name (``solvers/NAME.toml``), profile file path, or back-end name.
    time_limit_s, seed : optional
        Override the profile's values.
    options : dict, optional
        Extra back-end options merged over the profile's ``[options]``.
    robust : str or rtopt.decisions.robust.RobustSpec, optional
        ``expected``, ``cvar:ALPHA``, ``worst`` or ``prob-better:PLAN.json``: maximise that
        statistic over ``samples`` parameter samples (seeded by the profile's seed) instead of
        the nominal objective (:mod:`rtopt.decisions.robust`; exhaustive and scipy_de back-ends).
    samples : int
        Parameter samples of a robust solve.
    scheduler : optional
        Dask scheduler of a robust solve (:mod:`rtopt.decisions.distributed`).
    reference : Plan, optional
        A robust solve reports the probability of beating this plan.

    Raises
    ------
    rtopt.common.errors.InstanceError
        The instance or profile file is invalid.
    """
    problem = Problem.coerce(instance_or_path)
    profile = solver if isinstance(solver, Profile) else resolve_profile(solver)
    profile = profile.with_overrides(time_limit_s, seed, options)
    compile_kernels()          # before the clock: a first compile is not search time
    t0 = time.perf_counter()
    base = dict(instance=problem.name, solver=profile.name, backend=profile.backend,
                objective_name=problem.objective_name, seed=profile.options.seed,
                time_limit_s=profile.options.time_limit_s,
                oar_names=tuple(o.name for o in problem.oars),
                outcome_calibration=problem.outcome_calibration()[1])

    def early(status: str, message: str, termination: str = Termination.NOT_RUN, **kw) -> Result:
        return Result(status=status, termination=termination, solution_status="none",
                      objective=None, claimed_objective=None, bound=None, plan=None, metrics={},
                      constraints=(), verified=False, wall_time_s=time.perf_counter() - t0,
                      message=message, **base, **kw)

    if robust is not None:
        from rtopt.decisions.robust import solve_robust

        return solve_robust(problem, profile, robust, samples, profile.options.seed, t0, base,
                            scheduler=scheduler, reference=reference)
    try:
        cls = get_backend(profile.backend)
    except ImportError as e:  # the back-end's own module cannot be imported here
        return early("unavailable", f"cannot import back-end {profile.backend!r}: {e}")
    ok, why = cls.available()
    if not ok:
        return early("unavailable", why)
    backend = cls()
    ok, why = backend.check(problem)
    if not ok:
        return early("declined", why)
    try:
        out: BackendOutput = backend.solve(problem, profile.options)
    except ProblemDeclined as e:  # e.g. the search would exceed the memory limit
        return early("declined", str(e))
    except MemoryError:
        return early("error", "out of memory (lower the instance's size or memory_limit_mb)",
                     termination=Termination.ERROR)
    except RtoptError as e:
        return early("error", str(e), termination=Termination.ERROR)
    except Exception as e:  # a solver library failed: report it, never a traceback
        return early("error", f"{type(e).__name__}: {e}".splitlines()[0][:500],
                     termination=Termination.NUMERICAL if isinstance(e, (FloatingPointError,
                                                                        ArithmeticError))
                     else Termination.ERROR)
    return finish(problem, profile, out, t0, base)


def finish(problem: Problem, profile: Profile, out: BackendOutput, t0: float,
           base: dict[str, Any]) -> Result:
    """Verify a back-end's plans and build the :class:`Result` (also used by tests)."""
    best = None
    first_bad = None
    wellformed, verifications = [], []
    for plan in out.plans:
        try:
            plan.daily(problem.horizon_days)
            wellformed.append(plan)
        except ValueError as e:  # e.g. a day outside the horizon
            first_bad = first_bad or (plan, None, str(e))
    verifications = problem.verify_all(wellformed)
    feasible = [v for v in verifications if v.feasible]
    if feasible:
        # the back-end's order decides between plans equal to round-off
        top = max(v.objective for v in feasible)
        best = next(v for v in feasible if v.objective >= top - 1e-9 * max(1.0, abs(top)))
    for v in verifications:
        if not v.feasible and first_bad is None:
            first_bad = (v.plan, v, "")
    extras = dict(out.extras)
    if getattr(profile, "path", None):
        extras.setdefault("profile_file", str(profile.path))  # which profile file was used
    common = dict(termination=out.termination, claimed_objective=out.claimed_objective,
                  bound=out.bound, solver_name=out.solver_name,
                  solver_version=out.solver_version, extras=extras, **base)
    if best is not None:
        # optimal only if the back-end's own best plan is the one that verified
        proved = (out.termination == Termination.OPTIMAL and extras.get("exact_for_instance", False)
                  and best.plan == out.plans[0])
        return Result(status="optimal" if proved else "feasible",
                      solution_status="optimal" if proved else "feasible",
                      objective=best.objective, plan=best.plan, metrics=best.metrics,
                      constraints=best.checks, verified=True,
                      wall_time_s=time.perf_counter() - t0, message=out.message, **common)
    diag = problem.diagnose()
    if first_bad is not None:
        plan, v, err = first_bad
        if v is not None:
            viol = ", ".join(f"{c.name} ({c.value:.4g} vs {c.sense} {c.limit:.4g})"
                             for c in v.violated)
            msg = f"the back-end's plan fails verification: {viol}"
        else:
            msg = f"the back-end's plan is malformed: {err}"
        status = "infeasible" if diag.conflicts else "no_solution"
        return Result(status=status, solution_status="infeasible", objective=None, plan=plan,
                      metrics=v.metrics if v else {}, constraints=v.checks if v else (),
                      verified=False, wall_time_s=time.perf_counter() - t0, message=msg,
                      diagnosis=diag, **common)
    # A back-end's "infeasible" proves infeasibility of the instance only if its formulation is
    # exact for it (a restricted search space proves nothing); the closed-form diagnosis does.
    proved_infeasible = (out.termination == Termination.INFEASIBLE
                         and extras.get("exact_for_instance", False))
    status = "infeasible" if (diag.conflicts or proved_infeasible) else "no_solution"
    if status == "no_solution" and out.termination in (Termination.ERROR, Termination.NUMERICAL):
        status = "error"
    msg = out.message or ("no plan returned" if status == "no_solution" else "")
    if status == "infeasible" and diag.conflicts:
        msg = "; ".join(diag.conflicts)
    elif status == "infeasible":
        msg = (msg + "; " if msg else "") + ("no limit conflict found in closed form: the "
                                            "back-end's formulation found no feasible plan")
    return Result(status=status, solution_status="none", objective=None, plan=None, metrics={},
                  constraints=(), verified=False, wall_time_s=time.perf_counter() - t0,
                  message=msg, diagnosis=diag, **common)
