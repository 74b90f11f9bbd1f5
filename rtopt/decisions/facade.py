"""The public solve, :func:`rtopt.solve`: the nominal solve or, with ``robust=``, the robust one.

The nominal solve (:func:`rtopt.planning.solve.solve`) sits in the planning layer and knows
nothing of uncertainty; the robust solve (:func:`rtopt.decisions.robust.solve_robust`) builds on
it.  This module is the one place that chooses between them, so neither imports upwards.
"""

from __future__ import annotations

from typing import Any

from rtopt.decisions.robust import solve_robust
from rtopt.planning import solve as nominal
from rtopt.planning.profiles import Profile
from rtopt.planning.solve import Result, start_solve
from rtopt.problem.problem import Plan

__all__ = ["solve", "Result"]


def solve(instance_or_path: Any, solver: str | Profile = "exhaustive", *,
          time_limit_s: float | None = None, seed: int | None = None,
          options: dict[str, Any] | None = None, robust: Any = None, samples: int = 32,
          scheduler: Any = None, reference: Plan | None = None,
          compile_progress: Any = None) -> Result:
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
    compile_progress : callable, optional
        Told of each step of a first compile of the simulator kernels
        (:func:`rtopt.model.simulator.compile_kernels`' ``progress``), e.g. for a notice.

    Raises
    ------
    rtopt.common.errors.InstanceError
        The instance or profile file is invalid.
    """
    if robust is None:
        # looked up on the module at call time, so a test can stand in for the nominal solve
        return nominal.solve(instance_or_path, solver, time_limit_s=time_limit_s, seed=seed,
                             options=options, compile_progress=compile_progress)
    st = start_solve(instance_or_path, solver, time_limit_s=time_limit_s, seed=seed,
                     options=options, robust=True, compile_progress=compile_progress)
    return solve_robust(st.problem, st.profile, robust, samples, st.profile.options.seed, st.t0,
                        st.base, scheduler=scheduler, reference=reference)
