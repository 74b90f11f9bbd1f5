"""Global sensitivity analysis of plans with SALib: Morris screening and Sobol indices.

The uncertain parameters are those of :func:`rtopt.model.uncertainty.distributions_for` that are not
fixed.  SALib samples the unit hypercube (uniform margins); each margin is mapped through the
parameter's quantile function (:meth:`rtopt.model.uncertainty.Distribution.ppf`), so the analysis is
under the documented distributions.  Sobol indices do not change under such per-parameter
monotone maps (inputs stay independent); Morris elementary effects are then effects per
quantile step (the same scale for every parameter, which is what a ranking needs).

Outputs analysed:

``objective``     the plan's objective (the instance's, with its costs)
``difference``    with ``versus``: objective(plan) - objective(versus)
``plan_wins``     with ``versus``: 1 where the plan beats ``versus``, 0 otherwise (which
                  parameters decide the winner; its mean is the probability of winning)

Model evaluations run in chunks through :func:`rtopt.decisions.distributed.map_chunks` (Dask).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rtopt.decisions.distributed import map_chunks, settings_key
from rtopt.common.errors import RtoptError
from rtopt.common.fileio import write_atomic
from rtopt.model.uncertainty import Distribution, biology_with, distributions_for, values_from_unit
from rtopt.model.parameters import basis

# SALib and matplotlib are imported inside the functions that use them (import time).

__all__ = ["SensitivityResult", "analyse", "plan_sensitivity", "plan_objectives", "METHODS"]

METHODS = ("morris", "sobol")


class SensitivityError(RtoptError):
    """Invalid sensitivity settings."""


@dataclass
class SensitivityResult:
    """Indices per output, ranked.

    ``indices[output]`` is a list of rows ``{name, mu_star, mu_star_conf, sigma}`` (Morris) or
    ``{name, S1, S1_conf, ST, ST_conf}`` (Sobol), most influential first (by ``mu_star`` or
    ``ST``); ``summary[output]`` holds the mean, sd and 5/50/95 % of the output over the model
    runs.  Every Sobol (Saltelli) run is a point of the joint distribution, so for Sobol these are
    estimates under the distributions (``plan_wins`` mean: the probability that the plan wins);
    Morris runs lie on a 4-level grid of quantiles (0, 1/3, 2/3, 1) and are a screening design,
    not a sample (``summary_is_sample`` False).
    """

    method: str
    samples: int
    seed: int
    evaluations: int
    names: list[str]
    indices: dict[str, list[dict[str, float]]]
    summary: dict[str, dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)

    def ranking(self, output: str = "objective") -> list[str]:
        """Parameter names, most influential first."""
        return [r["name"] for r in self.indices[output]]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "samples": self.samples, "seed": self.seed,
                "evaluations": self.evaluations, "parameters": self.names,
                "summary": self.summary, "indices": self.indices, **self.meta}


def _salib_problem(names: Sequence[str]) -> dict[str, Any]:
    return {"num_vars": len(names), "names": list(names), "bounds": [[0.0, 1.0]] * len(names)}


def analyse(dists: Mapping[str, Distribution], model: Callable[[dict[str, np.ndarray]],
                                                             dict[str, np.ndarray]],
            method: str = "sobol", samples: int = 64, seed: int = 0, *,
            scheduler: Any = None, chunk: int = 512, cache_dir: Any = None,
            progress: str | None = None, key: str = "") -> SensitivityResult:
    """Run SALib on a model of the parameters (the code path every analysis uses).

    Parameters
    ----------
    dists : mapping
        ``{name: Distribution}``; fixed ones are held at their value.
    model : callable
        ``model({name: (m,) array}) -> {output: (m,) array}``; applied to chunks of ``chunk``
        rows through Dask.
    method : ``morris`` or ``sobol``
    samples : int
        Base sample size N: Sobol evaluates ``N (d + 2)`` points (N is rounded up to a power of
        2, which Sobol sequences need), Morris ``N (d + 1)`` (N trajectories).
    seed : int

    Returns
    -------
    SensitivityResult
    """
    if method not in METHODS:
        raise SensitivityError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    if samples < 2:
        raise SensitivityError(f"--samples must be >= 2, got {samples}")
    names = [k for k, d in dists.items() if not d.fixed]
    if not names:
        raise SensitivityError("every parameter is fixed: nothing to analyse")
    prob = _salib_problem(names)
    if method == "sobol":
        from SALib.sample import sobol as sobol_sample

        samples = 1 << max(1, int(np.ceil(np.log2(samples))))
        U = sobol_sample.sample(prob, samples, calc_second_order=False, seed=seed)
    else:
        from SALib.sample import morris as morris_sample

        U = morris_sample.sample(prob, samples, num_levels=4, seed=seed)
    items = [U[a:a + chunk] for a in range(0, len(U), chunk)]

    def run(u: np.ndarray) -> dict[str, np.ndarray]:
        return model(values_from_unit(dists, names, u))

    parts = map_chunks(run, items, scheduler=scheduler, cache_dir=cache_dir,
                       key=key or settings_key(method=method, samples=samples, seed=seed,
                                               names=names),
                       progress=progress)
    Y = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    indices, summary = {}, {}
    # SALib seeds its bootstrap only for a truthy seed (0 falls back to the global numpy
    # state): seed + 1 keeps the confidence intervals reproducible for --seed 0 too
    for out, y in Y.items():
        y = np.asarray(y, dtype=float)
        summary[out] = {"mean": float(np.mean(y)), "sd": float(np.std(y)),
                        **{f"p{q}": float(np.percentile(y, q)) for q in (5, 50, 95)}}
        if np.ptp(y) == 0:
            indices[out] = [dict(name=n, **({"S1": 0.0, "S1_conf": 0.0, "ST": 0.0, "ST_conf": 0.0}
                                            if method == "sobol" else
                                            {"mu_star": 0.0, "mu_star_conf": 0.0, "sigma": 0.0}))
                            for n in names]
            continue
        if method == "sobol":
            from SALib.analyze import sobol

            r = sobol.analyze(prob, y, calc_second_order=False, seed=seed + 1)
            rows = [{"name": n, "S1": float(r["S1"][i]), "S1_conf": float(r["S1_conf"][i]),
                     "ST": float(r["ST"][i]), "ST_conf": float(r["ST_conf"][i])}
                    for i, n in enumerate(names)]
            rows.sort(key=lambda x: -x["ST"])
        else:
            from SALib.analyze import morris

            r = morris.analyze(prob, U, y, num_levels=4, seed=seed + 1)
            rows = [{"name": n, "mu_star": float(r["mu_star"][i]),
                     "mu_star_conf": float(r["mu_star_conf"][i]), "sigma": float(r["sigma"][i])}
                    for i, n in enumerate(names)]
            rows.sort(key=lambda x: -x["mu_star"])
        indices[out] = rows
    return SensitivityResult(method, samples, seed, len(U), names, indices, summary,
                             {"summary_is_sample": method == "sobol"})


def plan_objectives(problem: Any, plans: Sequence[Any], values: Mapping[str, np.ndarray],
                    metric: str | None = None) -> np.ndarray:
    """Objective of each plan under each parameter sample: ``(m, len(plans))``.

    ``values`` maps parameter names to ``(m,)`` arrays (one sample per row); the objective is
    the instance's (weighted terms minus costs), from :meth:`rtopt.problem.problem.Problem.evaluate`;
    ``metric`` (a key of its metrics, e.g. ``local_control``) replaces it.
    """
    m = len(next(iter(values.values())))
    k = len(plans)
    rows = [p.daily(problem.horizon_days) for p in plans]
    D = np.repeat(np.array([r[0] for r in rows]), m, axis=0)      # plan-major
    U = np.repeat(np.array([r[1] for r in rows]), m, axis=0)
    tiled = {n: np.tile(np.asarray(v, dtype=float), k) for n, v in values.items()}
    p = copy.copy(problem)
    p.biology = biology_with(problem.biology, tiled)
    ratio = np.repeat([problem.dose_ratio_of(pl) for pl in plans], m)  # each plan's convention
    ev = p.evaluate(D, U, simulate_tme=True, all_metrics=metric is not None, dose_ratio=ratio)
    if metric is None:
        return ev.objective.reshape(k, m).T
    if metric not in ev.metrics:
        raise SensitivityError(f"unknown metric {metric!r} (one of "
                               f"{', '.join(sorted(ev.metrics))})")
    return np.asarray(ev.metrics[metric], dtype=float).reshape(k, m).T


def _plan_model(problem: Any, plan: Any, versus: Any | None, metric: str | None = None):
    plans = [plan] if versus is None else [plan, versus]

    def model(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obj = plan_objectives(problem, plans, values, metric)
        out = {"objective": obj[:, 0]}
        if versus is not None:
            out["difference"] = obj[:, 0] - obj[:, 1]
            out["plan_wins"] = (obj[:, 0] > obj[:, 1]).astype(float)
        return out

    return model


def plan_sensitivity(problem: Any, plan: Any, versus: Any | None = None, *,
                     method: str = "sobol", samples: int = 64, seed: int = 0,
                     scheduler: Any = None, cache_dir: Any = None,
                     progress: str | None = None, metric: str | None = None
                     ) -> SensitivityResult:
    """Which parameters drive a plan's objective and, with ``versus``, which decide the winner.

    Parameters
    ----------
    problem : rtopt.problem.problem.Problem
    plan, versus : rtopt.problem.problem.Plan
    method, samples, seed : see :func:`analyse`.
    scheduler, cache_dir, progress : see :func:`rtopt.decisions.distributed.map_chunks`.
    metric : str, optional
        Analyse this metric of :meth:`Problem.evaluate` (e.g. ``local_control``,
        ``nk_gain_local_control``) instead of the objective (``objective`` outputs then hold it).
    """
    dists = distributions_for(problem)
    if metric is not None:  # fail before any run
        plan_objectives(problem, [plan], {k: np.array([d.value]) for k, d in dists.items()},
                        metric)
    key = settings_key(instance=problem.instance.to_dict(), plan=plan.to_dict(),
                       versus=None if versus is None else versus.to_dict(), method=method,
                       samples=samples, seed=seed, metric=metric,
                       distributions={k: d.to_dict() for k, d in dists.items()})
    res = analyse(dists, _plan_model(problem, plan, versus, metric), method, samples, seed,
                  scheduler=scheduler, cache_dir=cache_dir, progress=progress, key=key)
    nominal = plan_objectives(problem, [plan] if versus is None else [plan, versus],
                              {k: np.array([d.value]) for k, d in dists.items()}, metric)[0]
    res.meta = {**res.meta, "instance": problem.name,
                "objective_name": metric or problem.objective_name,
                "plan": plan.describe(), "versus": None if versus is None else versus.describe(),
                "nominal": {"objective": float(nominal[0]),
                            **({} if versus is None else
                               {"difference": float(nominal[0] - nominal[1])})},
                "distributions": {k: d.describe() for k, d in dists.items()}}
    if res.method == "sobol":
        res.meta["total_index_share_by_basis"] = basis_shares(
            res, dict(problem.biology.params.provenance))
    return res


OTHER_BASIS = "tumour/hypoxia"
"""The basis group of parameters outside the NK and chemokine groups (:func:`basis_shares`):
their values come from the tumour and hypoxia literature and the outcome fit (docs/model.md
sections 3 and 9), not from the NK basis table."""
UNSOURCED_BASES = ("direction", "assumption")
"""Bases of values whose size no source gives (a sign or bound at most)."""


def basis_shares(result: SensitivityResult, provenance: Mapping[str, str]
                 ) -> dict[str, dict[str, float]]:
    """Per Sobol output, the share of the summed total indices (negative estimates counted as 0)
    that falls on parameters of each basis (:func:`rtopt.model.parameters.basis` with the
    resolved ``provenance``; :data:`OTHER_BASIS` for the rest), and ``unsourced``: the share of
    :data:`UNSOURCED_BASES`.  What a conclusion rests on, and how much of it has no source."""
    out: dict[str, dict[str, float]] = {}
    for name, rows in result.indices.items():
        if not rows or "ST" not in rows[0]:
            continue
        tot: dict[str, float] = {}
        for r in rows:
            b = basis(r["name"], provenance.get(r["name"])) or OTHER_BASIS
            tot[b] = tot.get(b, 0.0) + max(0.0, float(r["ST"]))
        z = sum(tot.values())
        if z <= 0:
            continue
        share = {b: v / z for b, v in sorted(tot.items(), key=lambda kv: -kv[1])}
        share["unsourced"] = sum(share.get(b, 0.0) for b in UNSOURCED_BASES)
        out[name] = share
    return out


def plot(result: SensitivityResult, path: Any, output: str = "objective", top: int = 15) -> None:
    """Tornado (Morris mu*) or Sobol bar plot (S1 and ST with confidence bars) as PNG.

    The PNG is rendered in memory and written atomically
    (:func:`rtopt.common.fileio.write_atomic`: a temporary file in the same folder, then a
    rename), so a full disk or a crash never leaves a partial image at ``path``.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.indices[output][:top][::-1]
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.4))
    if result.method == "sobol":
        ax.barh(y + 0.2, [r["ST"] for r in rows], 0.4, xerr=[r["ST_conf"] for r in rows],
                label="total (ST)", color="#4477aa")
        ax.barh(y - 0.2, [r["S1"] for r in rows], 0.4, xerr=[r["S1_conf"] for r in rows],
                label="first order (S1)", color="#ee6677")
        ax.set_xlabel("Sobol index (share of the output variance)")
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.barh(y, [r["mu_star"] for r in rows], xerr=[r["mu_star_conf"] for r in rows],
                color="#4477aa")
        ax.set_xlabel("Morris mu* (mean |elementary effect| per quantile step)")
    ax.set_yticks(y, names, fontsize=8)
    title = {"objective": "objective", "difference": "objective difference (plan - versus)",
             "plan_wins": "which plan wins"}.get(output, output)
    plan, versus = result.meta.get("plan"), result.meta.get("versus")
    which = (f"\nplan: {plan}" if plan else "") + (f"\nversus: {versus}" if versus else "")
    ax.set_title(f"{result.method.capitalize()}: {title}{which}", fontsize=9, loc="left")
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())
