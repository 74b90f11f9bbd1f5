"""Adaptive re-planning mid-course: condition the parameters on what is observed, re-plan the rest.

Update (:func:`update`)
-----------------------
**Importance weighting over the virtual cohort's prior samples.**  ``S`` samples of every
uncertain parameter are drawn from the instance's distributions
(:func:`rtopt.model.uncertainty.sample_values`, Latin hypercube from a seed); the delivered course is
simulated once for all of them (:func:`rtopt.model.simulator.simulate`, one sample per row) and each
sample is weighted by the likelihood of the observations,
``w_i ∝ prod_k N(y_k; m_k(theta_i), sd_k)``: a Gaussian on the scale the observation is stated,
with the ``sd`` the course file gives (imaging and assay errors are quoted that way).  Why
importance weighting and not MCMC: the forward model is cheap and vectorised over samples (a
few thousand courses in well under a second), the observations are few and low-dimensional, so
the prior pool covers the posterior unless an observation is far out; the result is exactly
reproducible from the seed, needs no tuning or convergence diagnosis, and the weighted pool is
directly usable by the robust optimiser.  Its limit is stated with every result: the effective
sample size ``ESS = (sum w)^2 / sum w^2``; below :data:`LOW_ESS` the posterior rests on a few
samples and a warning says so (raise ``--samples``, or question the observation).

A parameter *moved* when its posterior mean shifted by at least :data:`MOVED_SHIFT` prior
standard deviations or its standard deviation shrank below :data:`MOVED_SD_RATIO` of the prior
one.

Model predictions of an observation on day ``d``: the state at the start of day ``d`` before
its fraction and infusion, of the course delivered so far (the calibration table's
convention).  ``hypoxic_volume_ratio`` is the FMISO fraction over its baseline (shrinkage
ignored, as in the calibration); ``tumour_volume_ratio`` is viable plus not yet cleared dead
clonogens over the baseline, ``S(t) + sum_k dS_k 2^(-(t - t_k) / T_c)`` from the simulated
survival trajectory, with the clearance half-life ``T_c`` the observation states (an
assumption about the tumour; the model has no stroma).

Re-plan (:func:`replan`)
------------------------
Planning parameters: the nominal values shifted by what the observations moved the cohort,
``g^-1(g(theta_nominal) + E_post[g(theta)] - E_prior[g(theta)])`` with ``g = log`` for
log-uniform and log-normal parameters and the identity otherwise, clipped to the parameter's
support.  With no observations (or uninformative ones) this is exactly the nominal set, so a
re-plan then continues the nominal optimum; the raw posterior mean would not be (the prior mean
of a triangular or log-uniform parameter is not its nominal value).  ``--robust STAT`` instead
maximises the statistic over ``samples`` draws resampled from the weighted pool.

Only the remaining course is searched (the exhaustive back-end's structured space restricted to
it: a uniform dose for the remaining fractions, on the instance's grid, equal to the delivered
dose when the instance has ``uniform_dose = true``; regular calendars starting on an allowed
day from ``today`` and at least ``min_interval_days`` after the last delivered fraction, within
``start_window_days``; every set of further infusion days).  Every candidate row is the whole
course from day 0, delivered fractions and infusions included, so the prescription and OAR
limits count the dose already given (the instance's own :meth:`Problem.evaluate`), and the
simulator runs the whole course.  Infusion sets are scored by the exhaustive back-end's exact
superposition, with the delivered infusions in every set.  The returned full plan is verified
by :meth:`rtopt.problem.problem.Problem.verify` of the instance (:func:`rtopt.planning.solve.finish`);
``delivered`` and ``remaining`` are reported beside it.
"""

from __future__ import annotations

import copy
import io
import math
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rtopt.backends.base import BackendOutput, Termination, package_version
from rtopt.backends.exhaustive import ExhaustiveBackend, memory_budget_bytes
from rtopt.common.errors import RtoptError
from rtopt.common.fileio import write_atomic
from rtopt.decisions.robust import (parse_robust, robust_search, sample_objectives, statistic,
                                    summary_stats)
from rtopt.decisions.trial import bootstrap_ci
from rtopt.model.simulator import compile_kernels, simulate
from rtopt.model.uncertainty import biology_rows, biology_with, distributions_for, sample_values
from rtopt.planning.profiles import Profile, resolve_profile
from rtopt.planning.solve import Result, finish, solve
from rtopt.problem.course import (Course, CourseError, Observation, course_from_dict, load_course,
                                  violations)
from rtopt.problem.instance import instance_from_dict
from rtopt.problem.problem import Plan, Problem

# matplotlib is imported inside the figure functions (import time).

__all__ = ["Posterior", "update", "replan", "ReplanResult", "predict_observations",
           "plot_update", "LOW_ESS", "MOVED_SHIFT", "MOVED_SD_RATIO", "PRIOR_SAMPLES",
           "REPLAN_BACKENDS", "adaptive_study", "StudyResult"]

PRIOR_SAMPLES = 2000
"""Default prior samples of an update (a few thousand courses simulate in well under 1 s)."""
LOW_ESS = 50
"""Below this effective sample size the posterior rests on few samples: a warning is given
(with 50 equally weighted samples a posterior mean carries ~1/7 prior sd of Monte Carlo error)."""
MOVED_SHIFT = 0.2
"""A parameter moved when its mean shifted by at least this many prior sds (well above the
Monte Carlo error ~1/sqrt(ESS) of a mean for an ESS of a few hundred)."""
MOVED_SD_RATIO = 0.8
"""... or when its posterior sd is below this share of the prior sd."""
REPLAN_BACKENDS = ("exhaustive",)


class AdaptiveError(RtoptError):
    """Invalid update or re-plan settings (the message says which)."""


def _as_course(course: Any, problem: Problem) -> Course:
    if isinstance(course, Course):
        if course.instance != problem.name:
            raise CourseError(course.source, [("instance", f"the course is for instance "
                                                           f"{course.instance!r}, not "
                                                           f"{problem.name!r}")])
        return course
    return load_course(course, problem)


# ----------------------------------------------------------------------------- predictions
def _volume_ratio(log10_s: np.ndarray, dt: float, half_life: float) -> np.ndarray:
    """Viable plus uncleared dead clonogens over baseline, on the trajectory grid."""
    s = 10.0 ** log10_s
    decay = 2.0 ** (-dt / half_life)
    dead = np.zeros(s.shape[0])
    prev = np.ones(s.shape[0])               # before treatment (grid point 0 is after day 0's fraction)
    out = np.empty_like(s)
    for k in range(s.shape[1]):
        dead = dead * (decay if k else 1.0) + np.maximum(prev - s[:, k], 0.0)
        out[:, k] = s[:, k] + dead
        prev = s[:, k]
    return out


def _trajectories(problem: Problem, bio: Any, n: int, course: Course, days: int) -> tuple:
    """Simulate the delivered course for ``n`` parameter rows over ``days + 1`` days with day
    ``days`` left empty, so the last grid point is the state at the start of day ``days``
    before its events.  Returns (t, trajectory dict)."""
    H = problem.horizon_days
    D0, U0 = course.delivered.daily(H)
    width = days + 1
    D = np.zeros(width)
    U = np.zeros(width)
    m = min(width - 1, H)
    D[:m], U[:m] = D0[:m], U0[:m]

    sim = simulate(bio, np.broadcast_to(problem.tumour_doses(D), (n, width)),
                   np.broadcast_to(U, (n, width)),
                   steps_per_day=problem.steps_per_day, trajectory=True, population=False,
                   counterfactual=False)
    return sim.t_days, sim.trajectory


def _quantity(name: str, t: np.ndarray, traj: Mapping[str, np.ndarray],
              half_life: float | None, baseline: np.ndarray | None = None) -> np.ndarray:
    """An observable quantity on the trajectory grid, ``(n, K)``; ``baseline`` is the
    hypoxic fraction before any treatment (for ``hypoxic_volume_ratio``)."""
    if name == "hypoxic_fraction":
        return traj["hypoxic_fraction"]
    if name == "hypoxic_volume_ratio":
        return traj["hypoxic_fraction"] / np.maximum(baseline, 1e-300)[:, None]
    if name == "tumour_volume_ratio":
        return _volume_ratio(traj["log10_survival"], float(t[1] - t[0]), float(half_life))
    if name == "nk_blood":
        return traj["nk_blood"]
    if name == "chemokine":
        return traj["chemokine"]
    raise AdaptiveError(f"unknown quantity {name!r}")  # pragma: no cover - validated


def _baseline(problem: Problem, bio: Any, n: int, course: Course) -> np.ndarray:
    """FMISO hypoxic fraction at the start of day 0, before any event."""
    return _trajectories(problem, bio, n, course, 0)[1]["hypoxic_fraction"][:, -1]


def predict_observations(problem: Problem, bio: Any, n: int, course: Course,
                         observations: tuple[Observation, ...] | None = None) -> np.ndarray:
    """Model value of each observation for each of ``n`` parameter rows: ``(n_obs, n)``."""
    obs = course.observations if observations is None else observations
    out = np.zeros((len(obs), n))
    spd = problem.steps_per_day
    base = (_baseline(problem, bio, n, course)
            if any(o.quantity == "hypoxic_volume_ratio" for o in obs) else None)
    for day in sorted({o.day for o in obs}):
        t, traj = _trajectories(problem, bio, n, course, day)
        for i, o in enumerate(obs):
            if o.day == day:
                out[i] = _quantity(o.quantity, t, traj, o.clearance_half_life_days,
                                   base)[:, day * spd]
    return out


# ----------------------------------------------------------------------------- posterior
def _wstats(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    m = float(np.sum(w * x))
    return m, float(math.sqrt(max(np.sum(w * (x - m) ** 2), 0.0)))


def weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: Any) -> np.ndarray:
    """Quantiles ``qs`` (in [0, 1]) of each column of ``x`` (``(n,)`` or ``(n, T)``) under
    sample weights ``w`` (the inverse of the weighted empirical distribution)."""
    x = np.asarray(x, dtype=float)
    one = x.ndim == 1
    if one:
        x = x[:, None]
    idx = np.argsort(x, axis=0, kind="stable")
    xs = np.take_along_axis(x, idx, axis=0)
    cw = np.cumsum(np.asarray(w)[idx], axis=0)
    cw = cw / cw[-1]
    out = np.array([xs[np.minimum((cw < q - 1e-12).sum(axis=0), len(xs) - 1),
                       np.arange(x.shape[1])] for q in np.atleast_1d(qs)])
    return out[:, 0] if one else out


@dataclass
class Posterior:
    """An importance-weighted parameter pool (see the module docstring).

    ``values[name]`` are the ``n`` prior samples, ``weights`` their normalised weights,
    ``predictions`` the model value of each observation for each sample ``(n_obs, n)``.
    """

    problem_name: str
    observations: tuple[Observation, ...]
    distributions: dict[str, Any]
    values: dict[str, np.ndarray]
    weights: np.ndarray
    predictions: np.ndarray
    seed: int
    log_likelihood: np.ndarray = field(repr=False, default=None)

    @property
    def n(self) -> int:
        return len(self.weights)

    @property
    def ess(self) -> float:
        """Effective sample size ``1 / sum w^2`` of the normalised weights."""
        return float(1.0 / np.sum(self.weights ** 2))

    @property
    def free(self) -> list[str]:
        return [k for k, d in self.distributions.items() if not d.fixed]

    @property
    def low_ess(self) -> bool:
        return self.ess < LOW_ESS

    def warning(self) -> str:
        if not self.low_ess:
            return ""
        return (f"effective sample size {self.ess:.1f} of {self.n} is below {LOW_ESS}: the "
                f"posterior rests on few samples (an observation far from what the prior "
                f"predicts, or too small an sd); raise --samples or check the observation")

    def _scale(self, name: str) -> bool:
        return self.distributions[name].kind in ("loguniform", "lognormal")

    def parameters(self) -> list[dict[str, Any]]:
        """Prior and posterior summary of every sampled parameter, most moved first."""
        rows = []
        u = np.full(self.n, 1.0 / self.n)
        for k in self.free:
            x = self.values[k]
            pm, ps = _wstats(x, u)
            qm, qs = _wstats(x, self.weights)
            q = weighted_quantiles(x, self.weights, (0.05, 0.5, 0.95))
            shift = (qm - pm) / ps if ps > 0 else 0.0
            ratio = qs / ps if ps > 0 else 1.0
            rows.append({"name": k, "nominal": self.distributions[k].value,
                         "prior_mean": pm, "prior_sd": ps, "posterior_mean": qm,
                         "posterior_sd": qs, "posterior_p5": float(q[0]),
                         "posterior_p50": float(q[1]), "posterior_p95": float(q[2]),
                         "shift_sd": shift, "sd_ratio": ratio,
                         "moved": bool(abs(shift) >= MOVED_SHIFT or ratio <= MOVED_SD_RATIO),
                         "adapted": self.adapted_values()[k]})
        rows.sort(key=lambda r: -max(abs(r["shift_sd"]), (1 - r["sd_ratio"]) / (
            1 - MOVED_SD_RATIO) * MOVED_SHIFT))
        return rows

    def moved(self) -> list[dict[str, Any]]:
        """The rows of :meth:`parameters` whose posterior moved."""
        return [r for r in self.parameters() if r["moved"]]

    def adapted_values(self) -> dict[str, float]:
        """Planning values: the nominal shifted by the posterior-minus-prior mean (module
        docstring); exactly the nominal values without observations."""
        out = {}
        for k, d in self.distributions.items():
            if d.fixed:
                out[k] = float(d.value)
                continue
            x = self.values[k]
            if self._scale(k) and d.value > 0 and np.all(x > 0):
                g = np.log(x)
                v = float(np.exp(math.log(d.value) + np.sum(self.weights * g) - g.mean()))
            else:
                v = float(d.value + np.sum(self.weights * x) - x.mean())
            out[k] = float(min(max(v, d.low), d.high))
        return out

    def adapted_biology(self, problem: Problem) -> Any:
        """``problem.biology`` with the :meth:`adapted_values`."""
        return biology_with(problem.biology, self.adapted_values())

    def resample(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """``n`` draws from the weighted pool (systematic resampling from ``seed``)."""
        if n < 1:
            raise AdaptiveError(f"--samples must be >= 1, got {n}")
        u = (np.random.default_rng([seed, 7]).random() + np.arange(n)) / n
        idx = np.minimum(np.searchsorted(np.cumsum(self.weights), u), self.n - 1)
        return {k: np.asarray(v)[idx] for k, v in self.values.items()}

    def predicted(self) -> list[dict[str, Any]]:
        """Prior and posterior prediction of each observation against its value."""
        u = np.full(self.n, 1.0 / self.n)
        rows = []
        for o, p in zip(self.observations, self.predictions):
            pm, ps = _wstats(p, u)
            qm, qs = _wstats(p, self.weights)
            rows.append({**o.to_dict(), "prior_mean": pm, "prior_sd": ps,
                         "posterior_mean": qm, "posterior_sd": qs})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.problem_name, "method": "importance weighting of prior samples",
                "samples": self.n, "seed": self.seed, "ess": self.ess,
                "warning": self.warning() or None, "observations": self.predicted(),
                "parameters": self.parameters(),
                "moved": [r["name"] for r in self.moved()]}


def update(instance: Any, course: Any, *, samples: int = PRIOR_SAMPLES, seed: int = 0) -> Posterior:
    """Condition the patient's parameters on the course's observations (module docstring).

    Parameters
    ----------
    instance : path, Instance or Problem
    course : path or :class:`rtopt.problem.course.Course`
    samples : int
        Prior samples (Latin hypercube from ``seed``).

    Returns
    -------
    Posterior
        With no observations: the prior (equal weights, ESS = ``samples``).
    """
    problem = Problem.coerce(instance)
    course = _as_course(course, problem)
    if int(samples) < 2:
        raise AdaptiveError(f"--samples must be >= 2, got {samples}")
    n = int(samples)
    dists = distributions_for(problem)
    values = sample_values(dists, n, seed)
    obs = course.observations
    if not obs:
        w = np.full(n, 1.0 / n)
        return Posterior(problem.name, obs, dists, values, w, np.zeros((0, n)), seed,
                         np.zeros(n))
    bio = biology_with(problem.biology, values)
    pred = predict_observations(problem, bio, n, course)
    y = np.array([o.value for o in obs])[:, None]
    sd = np.array([o.sd for o in obs])[:, None]
    ll = -0.5 * np.sum(((pred - y) / sd) ** 2, axis=0)
    ll = np.where(np.isfinite(ll), ll, -np.inf)
    if not np.isfinite(ll).any():
        raise AdaptiveError("no prior sample gives a finite likelihood of the observations")
    w = np.exp(ll - ll.max())
    w = w / w.sum()
    return Posterior(problem.name, obs, dists, values, w, pred, seed, ll)


# ----------------------------------------------------------------------------- plot
def plot_update(post: Posterior, instance: Any, course: Any, path: str | Path,
                days_after: int = 14) -> None:
    """Predicted trajectories (5-95 % bands and medians, prior and posterior) of each observed
    quantity under the course delivered so far, with the observations (+- 1 sd); PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problem = Problem.coerce(instance)
    course = _as_course(course, problem)
    last = min(problem.horizon_days - 1, course.today + days_after)
    t, traj = _trajectories(problem, biology_with(problem.biology, post.values), post.n,
                            course, last)
    quantities = list(dict.fromkeys(o.quantity for o in post.observations)) or [
        "hypoxic_fraction"]
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(quantities), 1, figsize=(7.5, 3.0 * len(quantities) + 0.6),
                             squeeze=False)
    u = np.full(post.n, 1.0 / post.n)
    labels = {"hypoxic_fraction": "FMISO hypoxic fraction",
              "hypoxic_volume_ratio": "hypoxic volume / baseline",
              "tumour_volume_ratio": "tumour volume / baseline",
              "nk_blood": "NK cells in blood (per infusion)", "chemokine": "chemokine signal"}
    for ax, q in zip(axes[:, 0], quantities):
        hl = next((o.clearance_half_life_days for o in post.observations if o.quantity == q),
                  None)
        bio = biology_with(problem.biology, post.values)
        h0 = _baseline(problem, bio, post.n, course) if q == "hypoxic_volume_ratio" else None
        x = _quantity(q, t, traj, hl, h0)
        # the grid records each day after its events: put the untreated state first
        t0, tr0 = _trajectories(problem, bio, post.n, course, 0)
        x = np.concatenate([_quantity(q, t0, tr0, hl, h0)[:, -1:], x], axis=1)
        tt = np.concatenate([[0.0], t])
        for w, colour, name in ((u, "0.55", "prior"), (post.weights, "C0", "posterior")):
            lo, med, hi = weighted_quantiles(x, w, (0.05, 0.5, 0.95))
            ax.fill_between(tt, lo, hi, color=colour, alpha=0.25, lw=0,
                            label=f"{name} 5-95 %")
            ax.plot(tt, med, color=colour, lw=1.6, label=f"{name} median")
        for o in post.observations:
            if o.quantity == q:
                ax.errorbar([o.day], [o.value], yerr=[o.sd], fmt="o", color="C3", capsize=4,
                            label="observed +- 1 sd")
        for d in course.delivered.fraction_days:
            ax.axvline(d, color="0.3", lw=0.6, ls=":")
        ax.axvline(course.today, color="C2", lw=1.0, ls="--", label="today")
        ax.set_ylabel(labels.get(q, q), fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # whole days
        handles, names = ax.get_legend_handles_labels()
        keep = dict(zip(names, handles))
        ax.legend(keep.values(), keep.keys(), fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("day (dotted: delivered fractions; no further treatment assumed)",
                           fontsize=9)
    fig.suptitle(f"{problem.name}: update from {len(post.observations)} observation(s), "
                 f"ESS {post.ess:.0f} of {post.n}", fontsize=10)
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    write_atomic(path, buf.getvalue())


# ----------------------------------------------------------------------------- re-plan
@dataclass(frozen=True)
class ReplanResult(Result):
    """A :class:`rtopt.planning.solve.Result` of a re-plan: ``plan`` is the whole course (delivered +
    remaining), verified; ``delivered`` and ``remaining`` split it at ``today``."""

    delivered: Plan | None = None
    remaining: Plan | None = None
    today: int = 0
    course: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["delivered"] = self.delivered.to_dict() if self.delivered is not None else None
        d["remaining"] = self.remaining.to_dict() if self.remaining is not None else None
        d["course"] = self.course
        return d


def _remaining_rules(problem: Problem, course: Course) -> tuple[int, int, int]:
    """(earliest start of the remaining fractions, remaining count range)."""
    dv = course.delivered
    k = dv.n_fractions
    start = course.today
    if k:
        start = max(start, max(dv.fraction_days) + problem.min_interval)
    return start, max(0, problem.n_min - k), problem.n_max - k


def _space(problem: Problem, course: Course, opts: dict[str, Any]):
    """Whole-course dose rows of the remaining space that meet every dose, calendar,
    prescription and OAR rule (delivered dose counted); ``(D, plans_rt, bed)``."""
    H = problem.horizon_days
    dv = course.delivered
    D0, _ = dv.daily(H)
    start, m_lo, m_hi = _remaining_rules(problem, course)
    allowed = problem.allowed_days[problem.allowed_days >= start]
    if problem.uniform and dv.n_fractions:
        doses = np.array([dv.doses_gy[0]])
    elif problem.continuous_dose:
        doses = np.arange(problem.d_min, problem.d_max + 1e-9, opts["cont_step"])
    else:
        doses = problem.dose_grid()
    cals: set[tuple[int, ...]] = set()
    if m_lo == 0:
        cals.add(())
    for s in allowed[allowed < start + opts["start_window"]]:
        for k in range(problem.min_interval, problem.min_interval + opts["extra_spacing"] + 1):
            days = [int(s)]
            while len(days) < m_hi:
                j = int(np.searchsorted(allowed, days[-1] + k))
                if j >= allowed.size:
                    break
                days.append(int(allowed[j]))
            for m in range(max(1, m_lo), min(m_hi, len(days)) + 1):
                cals.add(tuple(days[:m]))
    rows, plans_rt = [], []
    for cal in sorted(cals, key=lambda c: (len(c), c)):
        for d in (doses if cal else [0.0]):
            row = D0.copy()
            row[list(cal)] = d
            rows.append(row)
            plans_rt.append((dv.fraction_days + cal, float(d)))
    if not rows:
        return np.zeros((0, H)), [], np.zeros(0)
    D = np.array(rows)
    ok, bed = ExhaustiveBackend.limits_ok(problem, D)
    return D[ok], [p for p, k in zip(plans_rt, ok) if k], bed[ok]


def _infusion_space(problem: Problem, course: Course, day_step: int):
    """(candidate days, incidence matrix): the given infusions in every set, then every set of
    further days from today that obeys count, window and spacing."""
    r = problem.nk
    given = list(course.delivered.nk_days)
    j = len(given)
    earliest = max(course.today, r.earliest_day)
    if given:
        earliest = max(earliest, given[-1] + r.min_interval_days)
    rest = copy.copy(problem)
    rest.nk = replace(r, n_min=max(0, r.n_min - j), n_max=max(0, r.n_max - j),
                      earliest_day=earliest)
    if earliest > r.latest_day or r.n_max - j <= 0:
        cand, M = np.zeros(0, dtype=int), np.zeros((1 if r.n_min <= j else 0, 0), dtype=bool)
    else:
        cand, M = ExhaustiveBackend.infusion_matrix(rest, day_step)
    cand = np.concatenate([np.asarray(given, dtype=int), cand])
    M = np.hstack([np.ones((len(M), j), dtype=bool), M])
    return cand, M


def _split(plan: Plan, today: int) -> tuple[Plan, Plan]:
    fd = [(d, x) for d, x in zip(plan.fraction_days, plan.doses_gy)]
    past = [p for p in fd if p[0] < today]
    fut = [p for p in fd if p[0] >= today]
    return (Plan(tuple(d for d, _ in past), tuple(x for _, x in past),
                 tuple(t for t in plan.nk_days if t < today)),
            Plan(tuple(d for d, _ in fut), tuple(x for _, x in fut),
                 tuple(t for t in plan.nk_days if t >= today)))


def _full_plan(course: Course, days: tuple[int, ...], dose: float, nk: tuple[int, ...]) -> Plan:
    dv = course.delivered
    rem = days[dv.n_fractions:]
    return Plan(dv.fraction_days + tuple(rem), dv.doses_gy + (float(dose),) * len(rem),
                tuple(sorted(nk)))


def _search(problem: Problem, course: Course, options: Any, robust: Any, values: Any,
            ref: Any):
    """The remaining-course search on ``problem`` (planning biology); a BackendOutput."""
    t0 = time.perf_counter()
    opts = ExhaustiveBackend.options_of(options)
    D, plans_rt, bed = _space(problem, course, opts)
    name, version = "rtopt remaining-course enumeration + numpy", package_version("numpy")
    space = {"start_window_days": opts["start_window"],
             "extra_spacing_days": opts["extra_spacing"], "nk_day_step": opts["day_step"],
             "from_day": _remaining_rules(problem, course)[0],
             "dose": ("delivered dose (uniform_dose = true)"
                      if problem.uniform and course.delivered.n_fractions else "grid")}
    extras: dict[str, Any] = {"space": space, "schedules": len(D), "exact_for_instance": False}
    if len(D) == 0:
        return BackendOutput((), Termination.INFEASIBLE, message="no remaining schedule in the "
                             "space meets the dose, calendar, prescription and OAR limits with "
                             "the delivered dose counted", solver_name=name,
                             solver_version=version, extras=extras)
    nk_sim = problem.nk is not None and problem.needs_simulation
    if robust is not None:
        if problem.nk is not None:
            cand, M = _infusion_space(problem, course, opts["day_step"])
            sets = [tuple(int(x) for x in cand[row]) for row in M]
        else:
            sets = [()]
        if not sets:
            return BackendOutput((), Termination.INFEASIBLE, message="no infusion set obeys "
                                 "the NK rules after the given infusions", solver_name=name,
                                 solver_version=version, extras=extras)
        found = robust_search(problem, robust, values, ref, D, plans_rt, bed, sets)
        fit, stat, st = found["fitness"], found["stat"], found["set"]
        extras.update(schedules_scored=found["scored"], schedules_pruned=found["pruned"])
        if not np.isfinite(fit).any():
            return BackendOutput((), Termination.INFEASIBLE, message="no infusion set obeys "
                                 "the NK rules with any remaining schedule", solver_name=name,
                                 solver_version=version, extras=extras)
        i = int(np.argmax(np.where(np.isfinite(fit), fit, -np.inf)))
        days, d = plans_rt[i]
        plan = _full_plan(course, days, d, sets[int(st[i])])
        return BackendOutput((plan,), Termination.OPTIMAL, None, None, solver_name=name + " + SAA",
                             solver_version=version,
                             extras={**extras, "robust_fitness": float(stat[i]),
                                     "infusion_sets": len(sets)})
    if nk_sim:
        cand, M = _infusion_space(problem, course, opts["day_step"])
        extras["infusion_sets"] = len(M)
        if len(M) == 0:
            return BackendOutput((), Termination.INFEASIBLE, message="no infusion set obeys "
                                 "the NK rules after the given infusions", solver_name=name,
                                 solver_version=version, extras=extras)
        deadline = t0 + options.time_limit_s
        out = ExhaustiveBackend().superposition(problem, D, plans_rt, bed, cand, M, deadline, name,
                                                version, extras, memory_budget_bytes(options))
        if not out.plans:
            return out
        p = out.plans[0]
        # the back-end builds a uniform plan over the whole course: restore the delivered doses
        plan = _full_plan(course, p.fraction_days, p.doses_gy[-1] if p.doses_gy else 0.0,
                          p.nk_days)
        return replace(out, plans=(plan,), extras={**out.extras, "exact_for_instance": False})
    _, U0 = course.delivered.daily(problem.horizon_days)
    obj = problem.evaluate(D, np.broadcast_to(U0, D.shape)).objective
    sets = None
    if problem.nk is not None:
        cand, M = _infusion_space(problem, course, opts["day_step"])
        sets = [tuple(int(x) for x in cand[row]) for row in M]

    for i in np.argsort(-obj, kind="stable"):
        if not np.isfinite(obj[i]):
            break
        days, d = plans_rt[i]
        for s in (sets if sets is not None else [course.delivered.nk_days]):
            plan = _full_plan(course, days, d, s)
            if not violations(problem, plan, ()):
                return BackendOutput((plan,), Termination.OPTIMAL, float(obj[i]), None,
                                     solver_name=name, solver_version=version, extras=extras)
    return BackendOutput((), Termination.INFEASIBLE, message="no infusion set obeys the NK "
                         "rules with any remaining schedule", solver_name=name,
                         solver_version=version, extras=extras)


def replan(instance: Any, course: Any, solver: Any = "exhaustive", *, robust: Any = None,
           samples: int = 32, prior_samples: int = PRIOR_SAMPLES, seed: int = 0,
           time_limit_s: float | None = None, options: dict[str, Any] | None = None,
           posterior: Posterior | None = None, compile_progress: Any = None) -> ReplanResult:
    """Re-optimise the rest of a course from what has been delivered and observed.

    Parameters
    ----------
    instance : path, Instance or Problem
        The course's instance (its rules and limits apply to the whole course).
    course : path or :class:`rtopt.problem.course.Course`
    solver : str or Profile
        A profile on the exhaustive back-end (others decline: their formulations have no fixed
        delivered prefix).
    robust : str or RobustSpec, optional
        ``expected``, ``cvar:ALPHA``, ``worst`` or ``prob-better:PLAN.json`` over ``samples``
        draws from the posterior (weighted pool resampled from ``seed``).
    prior_samples, seed : int
        Of the update (:func:`update`), unless ``posterior`` is given.

    Returns
    -------
    ReplanResult
        The verified whole course, with ``delivered`` and ``remaining``.
    """
    # before the clock: a first compile is not search time (``compile_progress``: e.g. a notice)
    compile_kernels(progress=compile_progress)
    t0 = time.perf_counter()
    base_problem = Problem.coerce(instance)
    course = _as_course(course, base_problem)
    profile = solver if isinstance(solver, Profile) else resolve_profile(str(solver))
    profile = profile.with_overrides(time_limit_s, None, options)
    post = posterior if posterior is not None else update(base_problem, course,
                                                          samples=prior_samples, seed=seed)
    problem = copy.copy(base_problem)
    problem.biology = post.adapted_biology(base_problem)
    base = dict(instance=problem.name, solver=profile.name, backend=profile.backend,
                objective_name=problem.objective_name, seed=seed,
                time_limit_s=profile.options.time_limit_s,
                oar_names=tuple(o.name for o in problem.oars),
                outcome_calibration=problem.outcome_calibration()[1],
                tumour_dose_ratio=problem.tumour_dose_ratio)
    course_info = {"source": course.source, "today": course.today,
                   "observations": [o.to_dict() for o in course.observations],
                   "update": {"method": "importance weighting of prior samples",
                              "samples": post.n, "seed": post.seed, "ess": post.ess,
                              "warning": post.warning() or None,
                              "moved": {r["name"]: {"prior_mean": r["prior_mean"],
                                                    "posterior_mean": r["posterior_mean"],
                                                    "planning_value": r["adapted"]}
                                        for r in post.moved()}},
                   "planning_parameters": "robust over posterior samples" if robust is not None
                   else "nominal shifted by the posterior (rtopt.decisions.adaptive)"}

    def wrap(res: Result) -> ReplanResult:
        d, r = _split(res.plan, course.today) if res.plan is not None else (course.delivered,
                                                                           None)
        return ReplanResult(**{f.name: getattr(res, f.name) for f in fields(Result)},
                            delivered=course.delivered, remaining=r, today=course.today,
                            course=course_info)

    if profile.backend not in REPLAN_BACKENDS:
        return wrap(Result(status="declined", termination="not_run", solution_status="none",
                           objective=None, claimed_objective=None, bound=None, plan=None,
                           metrics={}, constraints=(), verified=False,
                           wall_time_s=time.perf_counter() - t0,
                           message=f"re-planning runs on the {', '.join(REPLAN_BACKENDS)} "
                                   f"back-end; {profile.backend} (profile {profile.name}) "
                                   "formulates the whole course and cannot hold the delivered "
                                   "fractions fixed", **base))
    spec = values = ref = None
    if robust is not None:
        spec = parse_robust(robust, problem=problem) if isinstance(robust, str) else robust
        if int(samples) < 1:
            raise AdaptiveError(f"--samples must be >= 1 for a robust re-plan, got {samples}")
        if not problem.needs_simulation:
            raise AdaptiveError("the objective (tumour BED) does not depend on any uncertain "
                                "parameter: a robust re-plan equals the nominal one")
        values = post.resample(int(samples), seed)
        if spec.reference is not None:
            ref = sample_objectives(problem, *(a[None] for a in spec.reference.daily(
                problem.horizon_days)), values)[0]
    out = _search(problem, course, profile.options, spec, values, ref)
    res = finish(problem, profile, out, t0, base)
    if res.plan is not None and res.feasible:
        nominal = base_problem.verify(res.plan)
        extras = {**res.extras, "objective_at_nominal_parameters": nominal.objective}
        if spec is not None:
            ins = sample_objectives(problem, *(a[None] for a in res.plan.daily(
                problem.horizon_days)), values)[0]
            extras["robust"] = {"statistic": spec.label, "samples": int(samples),
                                "seed": seed, "sampling": "systematic resampling of the "
                                "importance-weighted pool",
                                "in_sample": {"statistic": float(statistic(spec, ins, ref)),
                                              **summary_stats(ins)}}
        res = replace(res, extras=extras, wall_time_s=time.perf_counter() - t0)
    return wrap(res)


# ----------------------------------------------------------------------------- study
@dataclass
class StudyResult:
    """Adaptive vs. non-adaptive over virtual patients (see :func:`adaptive_study`)."""

    nominal_plan: Plan
    gains: np.ndarray
    adaptive_objective: np.ndarray
    nominal_objective: np.ndarray
    changed: np.ndarray
    ci95: tuple[float, float]
    meta: dict[str, Any]
    blind_plan: Plan | None = None
    blind_objective: np.ndarray | None = None
    information_gains: np.ndarray | None = None
    information_ci95: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"nominal_plan": self.nominal_plan.describe(), "patients": len(self.gains),
                "mean_gain": float(self.gains.mean()), "gain_ci95": list(self.ci95),
                "share_improved": float((self.gains > 1e-9).mean()),
                "share_worse": float((self.gains < -1e-9).mean()),
                "share_replanned_differently": float(self.changed.mean()),
                "mean_objective_adaptive": float(self.adaptive_objective.mean()),
                "mean_objective_nominal": float(self.nominal_objective.mean()),
                "blind_replan": None if self.blind_plan is None else self.blind_plan.describe(),
                "mean_objective_blind_replan": None if self.blind_objective is None
                else float(self.blind_objective.mean()),
                "mean_information_gain": None if self.information_gains is None
                else float(self.information_gains.mean()),
                "information_gain_ci95": None if self.information_ci95 is None
                else list(self.information_ci95), **self.meta}


def adaptive_study(instance: Any, patients: int = 20, *, delivered_fractions: int = 2,
                   quantity: str = "hypoxic_fraction", sd: float = 0.04,
                   prior_samples: int = 1000, seed: int = 0, progress: Any = None,
                   overrides: Mapping[str, Mapping[str, Any]] | None = None) -> StudyResult:
    """Simulated study of the value of adapting (the issue's point 4).

    The nominal optimum (:func:`rtopt.planning.solve.solve`, exhaustive) is started for every virtual
    patient; each patient's true parameters are an independent draw from the instance's
    distributions.  After ``delivered_fractions`` fractions, on the day of the next one,
    ``quantity`` is observed with Gaussian noise ``sd``; the course is then either continued as
    planned or re-planned (:func:`update` on a pool of ``prior_samples``, :func:`replan`).
    Both whole courses are verified against the instance (:meth:`Problem.verify`, with the
    patient's true parameters) and scored by the instance's objective at those parameters;
    the gain is adaptive minus nominal, its 95 % interval a bootstrap (BCa,
    :func:`rtopt.decisions.trial._ci`) over patients.  The *information gain* is adaptive minus the
    re-plan without the observation (the same remaining-course search at the nominal
    parameters): what the observation itself is worth, apart from re-optimising in the
    remaining-course space.

    ``overrides``: instance tables to change for the study, e.g. ``{"fractionation":
    {"uniform_dose": False}}`` so that the re-plan may change the dose of the remaining
    fractions, or ``{"objective": {"maximise": "local_control"}}``.

    Raises
    ------
    AdaptiveError
        When a plan fails verification (never expected: both are verified plans).
    """
    t0 = time.perf_counter()
    problem = Problem.coerce(instance)
    if overrides:
        data = problem.instance.to_dict()
        for table, vals in overrides.items():
            if table == "objective":
                data[table] = dict(vals)
            else:
                data[table] = {**data.get(table, {}), **vals}
        base = problem.instance.base_dir  # relative [dvh_plan] paths stay the file's
        problem = Problem(instance_from_dict(data, f"{problem.name} (study overrides)")
                          .with_base_dir(base, problem.instance.source))
    nominal = solve(problem, "exhaustive")
    if not nominal.feasible:
        raise AdaptiveError(f"the nominal solve found no plan ({nominal.status})")
    P = nominal.plan
    k = int(delivered_fractions)
    if not 1 <= k < P.n_fractions:
        raise AdaptiveError(f"delivered_fractions must be in 1..{P.n_fractions - 1} for the "
                            f"nominal plan {P.describe()}")
    today = P.fraction_days[k]
    product = (None if problem.instance.nk is None else
               str(getattr(problem.instance.nk.product, "value", problem.instance.nk.product)))
    data = {"schema_version": 1, "instance": problem.name, "today": today,
            "fraction": [{"day": d, "dose_gy": x} for d, x in zip(P.fraction_days[:k],
                                                                   P.doses_gy[:k])],
            "infusion": [{"day": t, "product": product} for t in P.nk_days if t < today],
            "observation": [{"day": today, "quantity": quantity, "value": 0.0, "sd": sd}]}
    course = course_from_dict(data, problem, "<study>")
    obs0 = course.observations[0]
    # one prior pool for every patient: the delivered course is the same
    pool = update(problem, course, samples=prior_samples, seed=seed)
    dists = distributions_for(problem)
    truth = sample_values(dists, patients, int(np.random.SeedSequence([seed, 11]).generate_state(1)[0]),
                          method="random")
    bio_true = biology_with(problem.biology, truth)
    y_true = predict_observations(problem, bio_true, patients, course)[0]
    y = y_true + sd * np.random.default_rng([seed, 12]).standard_normal(patients)
    if quantity == "hypoxic_fraction":
        y = np.clip(y, 0.0, 1.0)
    y = np.maximum(y, 0.0)
    # the re-plan without the observation: what re-optimising the remaining course alone gives
    # (its space may hold plans the whole-course search did not, e.g. a new dose)
    blind = replan(problem, course.with_observations(()), seed=seed,
                   posterior=replace(pool, observations=(), weights=np.full(pool.n, 1 / pool.n),
                                     predictions=pool.predictions[:0]))
    if not blind.feasible:
        raise AdaptiveError(f"the re-plan without observation found no plan ({blind.status})")
    gains, adapt, nom, changed, info, blind_obj = [], [], [], [], [], []
    for i in range(patients):
        o = replace(obs0, value=float(y[i]))
        ll = -0.5 * ((pool.predictions[0] - o.value) / sd) ** 2
        w = np.exp(ll - ll.max())
        post = replace(pool, observations=(o,), weights=w / w.sum(), log_likelihood=ll)
        res = replan(problem, course.with_observations((o,)), posterior=post, seed=seed)
        if not res.feasible:
            raise AdaptiveError(f"patient {i}: the re-plan found no verified plan ({res.status}: "
                                f"{res.message})")
        true_problem = copy.copy(problem)
        true_problem.biology = biology_rows(bio_true, np.array([i]), patients)
        va, vn, vb = true_problem.verify_all([res.plan, P, blind.plan])
        if not (va.feasible and vn.feasible and vb.feasible):
            raise AdaptiveError(f"patient {i}: a plan fails verification")
        adapt.append(va.objective)
        nom.append(vn.objective)
        blind_obj.append(vb.objective)
        gains.append(va.objective - vn.objective)
        info.append(va.objective - vb.objective)
        changed.append(res.plan != P)
        if progress is not None:
            progress(i + 1, patients)
    g = np.array(gains)
    ci = bootstrap_ci(g, seed)
    meta = {"instance": problem.name, "objective": problem.objective_name,
            "observation": f"{quantity} on day {today} (+- {sd:g}), after {k} fraction(s)",
            "prior_samples": prior_samples, "seed": seed,
            "wall_time_s": time.perf_counter() - t0}
    gi = np.array(info)
    return StudyResult(P, g, np.array(adapt), np.array(nom), np.array(changed, dtype=bool),
                       ci, meta, blind.plan, np.array(blind_obj), gi, bootstrap_ci(gi, seed))
