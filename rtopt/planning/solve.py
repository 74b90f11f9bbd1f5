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
from rtopt.model.simulator import compile_kernels
from rtopt.planning.profiles import Profile, resolve_profile
from rtopt.problem.problem import ConstraintCheck, Diagnosis, Plan, Problem

__all__ = ["Result", "solve", "start_solve", "SolveStart", "finish", "FEASIBLE_STATUSES"]

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
    compile_time_s: float = 0.0
    """Seconds spent before the clock compiling the simulator kernels (a first run only; the
    compiled code is cached per user and rtopt version), not part of ``wall_time_s``."""
    tumour_dose_ratio: float | None = None
    """Tumour dose / prescribed dose of the instance (its prescription convention), written
    into ``schedule`` when the plan has no ratio of its own (:meth:`Plan.to_file_dict`)."""

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
            "schedule": (None if not self.plan else self.plan.to_dict()
                         if self.tumour_dose_ratio is None
                         else self.plan.to_file_dict(self.tumour_dose_ratio)),
            "metrics": {
                "tumour_bed_gy": _r(m.get("tumour_bed_gy")),
                "tumour_eqd2_gy": _r(m.get("tumour_eqd2_gy")),
                "oar": oar,
                "nk_favourability": _r(m.get("nk_favourability")),
                "nk_favourability_infused": _r(m.get("nk_favourability_infused")),
                "nk_favourability_endogenous": _r(m.get("nk_favourability_endogenous")),
                "tumour_log10_kill": _r(m.get("tumour_log10_kill")),
                "nk_log10_kill": _r(m.get("nk_log10_kill")),
                "tcp": _r(m.get("tcp")),
                "local_control": _r(m.get("local_control")),
                "log10_kill_without_nk": _r(m.get("log10_kill_without_nk")),
                "local_control_without_nk": _r(m.get("local_control_without_nk")),
                "nk_gain_log10_kill": _r(m.get("nk_gain_log10_kill")),
                "nk_gain_local_control": _r(m.get("nk_gain_local_control")),
                "local_control_without_reoxygenation":
                    _r(m.get("local_control_without_reoxygenation")),
                "reoxygenation_gain_local_control": _r(m.get("reoxygenation_gain_local_control")),
                "hypoxic_fraction_end": _r(m.get("hypoxic_fraction_end")),
                "circulating_nk_nadir": _r(m.get("circulating_nk_nadir")),
                "circulating_nk_auc": _r(m.get("circulating_nk_auc")),
                "overall_days": _r(m.get("overall_days")),
            },
            "dvh": dvh_summary(m, self.constraints),
            "constraints": [c.to_dict() for c in self.constraints],
            "outcome_calibration": self.outcome_calibration,
            "verified": self.verified,
            "wall_time_s": round(self.wall_time_s, 4),
            "compile_time_s": round(self.compile_time_s, 4),
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


@dataclass(frozen=True)
class SolveStart:
    """What every solve (nominal or robust) starts from: the built problem, the resolved profile,
    the start time ``t0`` (:func:`time.perf_counter`, after the kernels are compiled) and the
    :class:`Result` fields known before solving (``base``)."""

    problem: Problem
    profile: Profile
    t0: float
    base: dict[str, Any]


def start_solve(instance_or_path: Any, solver: str | Profile = "exhaustive", *,
                time_limit_s: float | None = None, seed: int | None = None,
                options: dict[str, Any] | None = None, robust: bool = False,
                compile_progress: Any = None) -> SolveStart:
    """Build the problem and profile of a solve, compile the kernels, then start its clock.

    Shared by :func:`solve` and the robust solve (:func:`rtopt.decisions.robust.solve_robust`,
    dispatched by :func:`rtopt.decisions.facade.solve`).  ``robust``: compile the kernels a
    robust solve needs too; ``compile_progress`` is told of each step of a first compile of the
    simulator kernels (:func:`rtopt.model.simulator.compile_kernels`' ``progress``).

    Raises
    ------
    rtopt.common.errors.InstanceError
        The instance or profile file is invalid.
    """
    problem = Problem.coerce(instance_or_path)
    profile = solver if isinstance(solver, Profile) else resolve_profile(solver)
    profile = profile.with_overrides(time_limit_s, seed, options)
    # before the clock: a first compile is not search time (reported apart)
    compile_s = compile_kernels(kernel_groups(problem, profile.backend, robust),
                                threaded=problem.needs_simulation or robust,
                                progress=compile_progress)
    t0 = time.perf_counter()
    base = dict(instance=problem.name, solver=profile.name, backend=profile.backend,
                objective_name=problem.objective_name, seed=profile.options.seed,
                time_limit_s=profile.options.time_limit_s,
                oar_names=tuple(o.name for o in problem.oars),
                outcome_calibration=problem.outcome_calibration()[1], compile_time_s=compile_s,
                tumour_dose_ratio=problem.tumour_dose_ratio)
    return SolveStart(problem, profile, t0, base)


def solve(instance_or_path: Any, solver: str | Profile = "exhaustive", *,
          time_limit_s: float | None = None, seed: int | None = None,
          options: dict[str, Any] | None = None, compile_progress: Any = None) -> Result:
    """Solve an instance (nominal objective) with a solver profile; a verified :class:`Result`.

    The public :func:`rtopt.solve` is :func:`rtopt.decisions.facade.solve`, which adds the
    robust solve (``robust=...``) on top of this one.

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
    compile_progress : callable, optional
        Told of each step of a first compile of the simulator kernels, e.g. for a notice.

    Raises
    ------
    rtopt.common.errors.InstanceError
        The instance or profile file is invalid.
    """
    st = start_solve(instance_or_path, solver, time_limit_s=time_limit_s, seed=seed,
                     options=options, compile_progress=compile_progress)
    problem, profile, t0, base = st.problem, st.profile, st.t0, st.base

    def early(status: str, message: str, termination: str = Termination.NOT_RUN, **kw) -> Result:
        return Result(status=status, termination=termination, solution_status="none",
                      objective=None, claimed_objective=None, bound=None, plan=None, metrics={},
                      constraints=(), verified=False, wall_time_s=time.perf_counter() - t0,
                      message=message, **base, **kw)

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


def kernel_groups(problem: Problem, backend: str, robust: bool = False) -> tuple[str, ...]:
    """The simulator kernels a solve of ``problem`` by ``backend`` runs
    (:data:`rtopt.model.simulator.batch.KERNEL_GROUPS`): the horizon and population kernels
    always (verification reports local control), the single-infusion kernels when the search
    scores infusion sets by superposition (exhaustive and robust solves of an instance with NK
    therapy whose objective is simulated)."""
    groups = ["horizon", "population"]
    if problem.nk is not None and problem.needs_simulation and (robust or backend == "exhaustive"):
        groups.append("infusion")
    return tuple(groups)


def finish(problem: Problem, profile: Profile, out: BackendOutput, t0: float,
           base: dict[str, Any]) -> Result:
    """Verify a back-end's plans and build the :class:`Result` (also used by tests)."""
    best = None
    first_bad = None
    wellformed, verifications = [], []
    first_ok = None          # the back-end's first well-formed plan, as verified
    for plan in out.plans:
        try:
            plan.daily(problem.horizon_days)
            wellformed.append(plan)
        except ValueError as e:  # e.g. a day outside the horizon
            first_bad = first_bad or (plan, None, str(e))
    # on the prescription grid (0.01 Gy unless the instance has a dose grid), verified as they
    # will be written: a file written from the result replays with `rtopt simulate --plan`
    verifications = problem.verify_prescribable(wellformed)
    if wellformed and wellformed[0] == out.plans[0]:
        first_ok = verifications[0].plan
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
        # optimal only if the back-end's own best plan is the one that verified; if putting it
        # on the prescription grid changed it, only while the bound still proves it within the
        # profile's rel_gap (the meaning of "optimal" for a MIP solver)
        proved = (out.termination == Termination.OPTIMAL and extras.get("exact_for_instance", False)
                  and best.plan == first_ok)
        if best.plan != out.plans[0] and out.plans and best.plan.fraction_days == \
                out.plans[0].fraction_days and best.plan.nk_days == out.plans[0].nk_days:
            extras["prescription_step_gy"] = problem.prescription_step
            if proved and out.bound is not None:
                rel_gap = getattr(getattr(profile, "options", None), "rel_gap", 0.0)
                proved = (abs(out.bound - best.objective)
                          <= rel_gap * max(abs(best.objective), 1e-9) + 1e-12)
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
