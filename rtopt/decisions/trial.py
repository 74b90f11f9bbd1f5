"""Virtual-cohort trials: every patient a parameter sample, every arm a plan.

A cohort of ``N`` virtual patients is drawn from the instance's parameter distributions
(:func:`rtopt.model.uncertainty.distributions_for`; independent draws from a seed, so the patients
are i.i.d. and the confidence intervals below are valid).  On top of the drawn population-mean
radiosensitivity, each patient has an own alpha, ``normal(alpha, alpha_sd_per_gy)`` truncated at
0 (the spread behind population local control, docs/model.md section 9), so a patient's
tumour control is the Poisson TCP at that alpha and the mean of the per-patient TCPs estimates
local control.  Each patient receives every arm (a paired, in-silico cross-over).

Per arm: local control = mean per-patient TCP with a 95 % bootstrap confidence interval
(``scipy.stats.bootstrap``, BCa; percentile above 2,000 patients), the NK-attributable gain (TCP with minus without NK cells,
same patient and plan), NK favourability, OAR BED (plan-determined, the same for every patient)
and, per pair of arms, the probability of superiority ``P(TCP_A > TCP_B) + P(tie) / 2`` over
patients.

Standard schedules are available by name (``54/3`` ...; the one table
``rtopt/model/data/standard_schedules.toml`` with the calendar and prescription convention of each
source, :meth:`Problem.standard_plan`).  With an NK instance every arm gets its infusions by the
same rule (:data:`INFUSION_RULES`): by default the best infusion days for that arm's own
fractions and doses (:func:`best_infusions`, the choice the optimiser makes), or the earliest
rule-abiding ones; the user may fix them per arm.  The rule each arm followed is recorded
(``meta["infusions"]``) and shown in the reports.
"""

from __future__ import annotations

import base64
import copy
import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtopt.backends.exhaustive import ExhaustiveBackend
from rtopt.common.errors import RtoptError
from rtopt.common.fileio import write_atomic
from rtopt.common.text import md_text, slug
from rtopt.decisions.distributed import map_chunks, settings_key
from rtopt.model import radiobiology as rb
from rtopt.model.simulator import simulate
from rtopt.model.uncertainty import biology_with, distributions_for, sample_values
from rtopt.problem.problem import Plan, Problem

# scipy.stats, jinja2 and matplotlib are imported inside the functions that use them (import
# time).

__all__ = ["STANDARD_ARMS", "standard_plan", "run_trial", "TrialResult", "write_outputs",
           "TrialError", "INFUSION_RULES", "best_infusions", "with_infusions", "check_arm_name"]

INFUSION_RULES = ("best", "earliest")
"""How arms get their NK infusion days: ``best`` for the arm's fractions (the optimiser's
choice, :func:`best_infusions`) or ``earliest`` (:meth:`Problem.first_valid_infusions`)."""

MAX_ARM_NAME = 60
"""Longest arm name (characters): names head table columns and file names."""

STANDARD_ARMS: tuple[str, ...] = ("54/3", "48/4", "50/5", "60/8", "34/1")
"""The standard lung SBRT arms of ``rtopt bench`` and the README; any name of
:func:`rtopt.model.standards.standard_schedules` is an arm too."""


class TrialError(RtoptError):
    """Invalid trial settings (the message says which)."""


def check_arm_name(name: str, taken: Sequence[str] = ()) -> str:
    """``name`` if it can name an arm: not empty, at most :data:`MAX_ARM_NAME` characters, no
    control characters (a newline would split table rows), not already in ``taken``."""
    shown = name if len(name) <= MAX_ARM_NAME else name[:MAX_ARM_NAME - 20] + "..."
    if not name.strip():
        raise TrialError("--arm: empty arm name (use NAME=PLAN.json)")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise TrialError(f"--arm {shown!r}: control characters (e.g. a newline) in the arm name")
    if len(name) > MAX_ARM_NAME:
        raise TrialError(f"--arm {shown!r}: arm name longer than {MAX_ARM_NAME} characters")
    if name in taken:
        raise TrialError(f"--arm {shown}: two arms named {shown!r}; give each arm its own name "
                         "(NAME=PLAN.json)")
    return name


def best_infusions(problem: Problem, plan: Plan, block: int = 2048) -> tuple[int, ...] | None:
    """The infusion days the optimiser would give ``plan``'s fractions: of every infusion set
    the instance's rules allow (count, window, spacing, no fraction just after), the one with
    the best objective for this plan (ties: the earliest).  ``()`` without NK; None if no set
    obeys the rules.  Evaluated in blocks of ``block`` plans (memory)."""
    if problem.nk is None:
        return ()
    days = plan.fraction_days
    sets = [s for s in ExhaustiveBackend.infusion_sets(problem, 1)
            if all(problem.infusion_day_ok(days, d) for d in s)]
    if not sets:
        return None
    best, best_val = None, -np.inf
    for a in range(0, len(sets), block):
        cand = [dataclasses.replace(plan, nk_days=tuple(s)) for s in sets[a:a + block]]
        obj = problem.evaluate_plans(cand, simulate_tme=True).objective
        k = int(np.argmax(obj))
        if obj[k] > best_val + 1e-12 * max(1.0, abs(best_val) if np.isfinite(best_val) else 1):
            best, best_val = sets[a + k], float(obj[k])
    return tuple(best) if best is not None else None


def with_infusions(problem: Problem, plan: Plan, rule: str) -> Plan:
    """``plan`` with its infusion days set by ``rule`` (:data:`INFUSION_RULES`); unchanged
    without NK; without infusions when no set obeys the rules (the trial flags the arm)."""
    if rule not in INFUSION_RULES:
        raise TrialError(f"--infusions {rule!r}: expected one of {', '.join(INFUSION_RULES)}")
    if problem.nk is None:
        return plan
    nk = (best_infusions(problem, plan) if rule == "best"
          else problem.first_valid_infusions(plan.fraction_days))
    return dataclasses.replace(plan, nk_days=tuple(nk or ()))


def standard_plan(problem: Problem, name: str, infusions: str = "best") -> Plan:
    """A standard schedule by name (rtopt/model/data/standard_schedules.toml: calendar and
    prescription convention of its source, :meth:`Problem.standard_plan`), with NK infusions by
    ``infusions`` (:data:`INFUSION_RULES`)."""
    try:
        plan = problem.standard_plan(name)
    except KeyError as e:
        raise TrialError(f"--arm {name}: {e.args[0]}") from None
    except ValueError as e:
        raise TrialError(f"arm {name}: {e}") from None
    return with_infusions(problem, plan, infusions)


@dataclass
class TrialResult:
    """Per-patient outcomes (``patients[arm][metric]`` arrays) and the summaries."""

    instance: str
    seed: int
    n_patients: int
    arms: dict[str, Plan]
    patients: dict[str, dict[str, np.ndarray]]
    summary: dict[str, dict[str, Any]]
    superiority: dict[str, dict[str, float]]
    checks: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "seed": self.seed, "patients": self.n_patients,
                "arms": {k: {"plan": p.describe(), "schedule": p.to_dict(),
                             "violations": self.checks.get(k, []), **self.summary[k]}
                         for k, p in self.arms.items()},
                "probability_of_superiority": self.superiority, **self.meta}


def _patient_chunk(problem: Problem, plans: Sequence[Plan], values: dict[str, np.ndarray],
                   z: np.ndarray) -> dict[str, np.ndarray]:
    """Outcomes of every arm for a block of patients: arrays ``(arms, m)``."""
    m = len(z)
    k = len(plans)
    vals = dict(values)
    alpha = np.maximum(values["alpha_per_gy"] + values["alpha_sd_per_gy"] * z, 1e-6)
    vals["alpha_per_gy"] = alpha
    rows = [p.daily(problem.horizon_days) for p in plans]
    D = np.repeat(np.array([problem.tumour_doses(r[0], problem.dose_ratio_of(pl))
                            for r, pl in zip(rows, plans)]), m, axis=0)
    U = np.repeat(np.array([r[1] for r in rows]), m, axis=0)
    p = copy.copy(problem)
    p.biology = biology_with(problem.biology, {n: np.tile(v, k) for n, v in vals.items()})

    sim = simulate(p.biology, D, U, steps_per_day=problem.steps_per_day, population=False)
    n0 = np.asarray(p.biology.clonogens, dtype=float)
    # both from log10 kill by the same formula, so a plan without infusions gains exactly 0
    tcp = rb.poisson_tcp(n0, -np.log(10.0) * sim.log10_kill)
    tcp0 = rb.poisson_tcp(n0, -np.log(10.0) * sim.log10_kill_without_nk)
    return {"tcp": tcp.reshape(k, m), "tcp_without_nk": tcp0.reshape(k, m),
            "nk_gain_tcp": (tcp - tcp0).reshape(k, m),
            "nk_favourability": sim.nk_auc.reshape(k, m),
            "log10_kill": sim.log10_kill.reshape(k, m),
            "alpha_per_gy": np.tile(alpha, (k, 1))}


BCA_MAX_PATIENTS = 2000
"""Above this cohort size the bootstrap interval is the percentile one: BCa's jackknife costs
``n^2`` (memory and time), and with thousands of patients the mean is close to normal anyway."""


def bootstrap_ci(x: np.ndarray, seed: int) -> tuple[float, float]:
    """95 % bootstrap interval of the mean (scipy; BCa up to :data:`BCA_MAX_PATIENTS` patients,
    percentile above); a point when every value is equal."""
    from scipy import stats

    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    method = "BCa" if len(x) <= BCA_MAX_PATIENTS else "percentile"
    r = stats.bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=2000,
                        method=method, rng=np.random.default_rng(seed))
    lo, hi = r.confidence_interval
    return float(lo), float(hi)


def run_trial(problem: Problem, arms: Mapping[str, Plan], patients: int, seed: int = 0, *,
              scheduler: Any = None, cache_dir: Any = None, progress: str | None = None,
              chunk: int = 256, infusions: Mapping[str, str] | None = None) -> TrialResult:
    """Run a virtual-cohort trial (see the module docstring).

    ``infusions`` maps arm names to where their infusion days came from (shown in the reports).

    Raises
    ------
    TrialError
        Fewer than 1 patient or no arm.
    """
    if patients < 1:
        raise TrialError(f"--patients must be >= 1, got {patients}")
    if not arms:
        raise TrialError("no arm: give at least one --arm")
    names = list(arms)
    # every arm carries its tumour dose ratio (its own, or the instance's): the written
    # plans/ARM.json say how their doses reach the tumour
    plans = [arms[n] if arms[n].tumour_dose_ratio is not None
             else dataclasses.replace(arms[n], tumour_dose_ratio=problem.tumour_dose_ratio)
             for n in names]
    for n, pl in zip(names, plans):
        try:
            pl.daily(problem.horizon_days)
        except ValueError as e:
            raise TrialError(f"arm {n}: {e}") from None
    dists = distributions_for(problem)
    values = sample_values(dists, patients, seed, method="random")
    z = np.random.default_rng([seed, 2]).standard_normal(patients)
    items = [np.arange(a, min(a + chunk, patients)) for a in range(0, patients, chunk)]

    def run(idx: np.ndarray) -> dict[str, np.ndarray]:
        return _patient_chunk(problem, plans, {k: v[idx] for k, v in values.items()}, z[idx])

    key = settings_key(instance=problem.instance.to_dict(), arms=[p.to_dict() for p in plans],
                       patients=patients, seed=seed, chunk=chunk,
                       distributions={k: d.to_dict() for k, d in dists.items()})
    parts = map_chunks(run, items, scheduler=scheduler, cache_dir=cache_dir, key=key,
                       progress=progress)
    per = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
    ver = problem.verify_all(plans)
    patients_out, summary, checks = {}, {}, {}
    for a, (n, v) in enumerate(zip(names, ver)):
        patients_out[n] = {k: per[k][a] for k in per}
        tcp = per["tcp"][a]
        lo, hi = bootstrap_ci(tcp, seed)
        gain = per["nk_gain_tcp"][a]
        glo, ghi = bootstrap_ci(gain, seed)
        summary[n] = {
            "local_control": float(tcp.mean()), "local_control_ci95": [lo, hi],
            "nk_gain": float(gain.mean()), "nk_gain_ci95": [glo, ghi],
            "nk_favourability_mean": float(per["nk_favourability"][a].mean()),
            "tcp_quantiles": {f"p{q}": float(np.percentile(tcp, q)) for q in (5, 25, 50, 75, 95)},
            "oar_bed_gy": {o.name: float(v.metrics[f"oar.{o.name}.bed_gy"]) for o in problem.oars},
            "tumour_bed_gy": float(v.metrics["tumour_bed_gy"]),
            "nominal_local_control": float(v.metrics["local_control"]),
            "nominal_reoxygenation_gain": float(v.metrics["reoxygenation_gain_local_control"]),
            # NTCP of [dvh_plan] organs ("organ.label": probability); the shipped NTCP sets carry
            # no parameter uncertainty, so every patient has the plan's nominal NTCP
            "ntcp_nominal": {k[5:]: float(x) for k, x in v.metrics.items()
                             if k.startswith("ntcp.")},
        }
        checks[n] = [f"{c.name} ({c.value:.4g} vs {c.sense} {c.limit:.4g})" for c in v.violated]
    sup: dict[str, dict[str, float]] = {}
    for i, a in enumerate(names):
        sup[a] = {}
        for j, b in enumerate(names):
            if i != j:
                x, y = per["tcp"][i], per["tcp"][j]
                sup[a][b] = float(np.mean(x > y) + 0.5 * np.mean(x == y))
    return TrialResult(problem.name, seed, patients, dict(zip(names, plans)), patients_out,
                       summary, sup, checks,
                       meta={"objective_name": problem.objective_name,
                             "infusions": {n: (infusions or {}).get(n, "as given")
                                           for n in names} if problem.nk is not None else {},
                             "sampling": "independent draws (numpy default_rng)",
                             "distributions": {k: d.describe() for k, d in dists.items()}})


# ----------------------------------------------------------------------------- outputs
def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


FIGURE_SCALES = {"tcp": "logit", "nk_gain_tcp": "symlog", "nk_favourability": "linear"}
"""y scale per figure: per-patient TCPs pile up within 1e-3 of 0 or 1 (a linear violin is a
line there), so TCP is drawn on a logit axis (values clipped to [1e-6, 1 - 1e-6]); NK gains
span decades from ~1e-6 upwards (symlog, linear below 1e-4); NK favourability is linear."""


def _figures(res: TrialResult) -> dict[str, bytes]:
    """Strip plots (every patient a jittered point) with 5-95 % boxes and the mean, one figure
    per metric; arms that violate a limit are drawn in red and marked ``(!)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res.arms)
    bad = [bool(res.checks.get(n)) for n in names]
    labels = [n + (" (!)" if f else "") for n, f in zip(names, bad)]
    out = {}
    for key, label, fname in (("tcp", "per-patient tumour control probability", "tcp.png"),
                              ("nk_gain_tcp", "NK-attributable gain in TCP", "nk_gain.png"),
                              ("nk_favourability", "NK favourability (activity-days)",
                               "nk_favourability.png")):
        scale = FIGURE_SCALES[key]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names) + 2.5), 4.2))
        rng = np.random.default_rng(0)       # the same jitter every time: identical files
        data = []
        for i, n in enumerate(names):
            y = np.asarray(res.patients[n][key], dtype=float)
            if scale == "logit":
                y = np.clip(y, 1e-6, 1 - 1e-6)
            data.append(y)
            ax.scatter(i + 1 + rng.uniform(-0.2, 0.2, len(y)), y, s=7, lw=0, alpha=0.35,
                       color="#c0392b" if bad[i] else "#264f80", zorder=2)
            ax.plot([i + 0.7, i + 1.3], [y.mean()] * 2, color="#e69f00", lw=2, zorder=4)
        ax.boxplot(data, widths=0.55, whis=(5, 95), showfliers=False, zorder=3,
                   medianprops={"color": "k"}, boxprops={"color": "#333"})
        if scale == "logit":
            ax.set_yscale("logit")
        elif scale == "symlog":
            ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_xticks(range(1, len(names) + 1), labels, fontsize=8)
        for t, f in zip(ax.get_xticklabels(), bad):
            if f:
                t.set_color("#c0392b")
        ax.set_ylabel(label + {"logit": " (logit scale)", "symlog": " (symlog scale)"}.get(
            scale, ""), fontsize=9)
        ax.set_title(f"{label}: {res.n_patients} virtual patients", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        note = "points: patients; box: quartiles, whiskers 5-95 %; orange: mean"
        if any(bad):
            note += "; (!) red: the arm violates a limit"
        fig.text(0.01, 0.01, note, fontsize=7, color="#555")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        out[fname] = _png(fig)
        plt.close(fig)
    return out


_HTML = """<!DOCTYPE html>
<html lang="en-GB"><head><meta charset="utf-8">
<title>Virtual-cohort trial: {{ r.instance }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color: #1d232b;
       margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 2px solid #d6dbe1; }
p.sub { color: #5d6875; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.88em; }
th, td { border: 1px solid #d6dbe1; padding: 4px 8px; text-align: left; }
th { background: #f4f6f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.warn { background: #fff0c2; }
.note { background: #f4f6f8; border-left: 4px solid #8aa1b8; padding: 10px 16px; font-size: 0.93em; }
figure img { max-width: 100%; border: 1px solid #d6dbe1; }
figcaption { color: #5d6875; font-size: 0.88em; }
</style></head><body><main>
<h1>Virtual-cohort trial: {{ r.instance }}</h1>
<p class="sub">{{ r.n_patients }} virtual patients, {{ arms|length }} arms, seed {{ r.seed }};
each patient receives every arm (paired in-silico comparison).</p>
<div class="note">Each patient is one draw of every uncertain parameter (<code>rtopt model params</code>)
plus an own radiosensitivity, normal(alpha, alpha_sd_per_gy). Local control is the mean per-patient
tumour control probability with a 95&nbsp;% bootstrap (BCa) interval; the NK-attributable gain is the
same patient and plan with minus without NK cells; P(superior) counts ties as half.{% if ntcps %} NTCP is
nominal: the shipped NTCP parameter sets carry no parameter uncertainty, so it is the same for every
patient of an arm.{% endif %}
{% if inf %}<br>NK infusions: every arm's infusion days and the rule that chose them are in the
<em>NK infusions</em> column (the same rule for every standard arm; the optimised arm's are the
optimiser's own).{% endif %}</div>
<h2>Arms</h2>
<table><tr><th>arm</th><th>plan</th>{% if inf %}<th>NK infusions</th>{% endif %}<th>local control</th><th>95 % CI</th><th>NK gain</th>
<th>NK favourability</th><th>tumour BED (Gy)</th>{% for o in oars %}<th>{{ o }} BED (Gy)</th>{% endfor %}{% for k in ntcps %}<th>NTCP {{ k }} (nominal)</th>{% endfor %}<th>limits</th></tr>
{% for a in arms %}{% set s = r.summary[a] %}<tr><td>{{ a }}</td><td>{{ r.arms[a].describe() }}</td>
{% if inf %}<td>{{ inf[a] }}</td>{% endif %}<td class="num">{{ "%.3f"|format(s.local_control) }}</td>
<td class="num">{{ "%.3f"|format(s.local_control_ci95[0]) }}&ndash;{{ "%.3f"|format(s.local_control_ci95[1]) }}</td>
<td class="num">{{ "%.4f"|format(s.nk_gain) }}</td><td class="num">{{ "%.3g"|format(s.nk_favourability_mean) }}</td>
<td class="num">{{ "%.1f"|format(s.tumour_bed_gy) }}</td>
{% for o in oars %}<td class="num">{{ "%.1f"|format(s.oar_bed_gy[o]) }}</td>{% endfor %}
{% for k in ntcps %}<td class="num">{{ "%.3f"|format(s.ntcp_nominal[k]) }}</td>{% endfor %}
{% if r.checks[a] %}<td class="warn">violates {{ r.checks[a]|join("; ") }}</td>{% else %}<td>all met</td>{% endif %}</tr>
{% endfor %}</table>
<h2>Probability of superiority</h2>
<p class="sub">Row arm beats column arm: P(TCP<sub>row</sub> &gt; TCP<sub>column</sub>) + P(tie)/2 over patients.</p>
<table><tr><th></th>{% for b in arms %}<th>{{ b }}</th>{% endfor %}</tr>
{% for a in arms %}<tr><th>{{ a }}</th>{% for b in arms %}<td class="num">{% if a != b %}{{ "%.3f"|format(r.superiority[a][b]) }}{% else %}&ndash;{% endif %}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Distributions per arm</h2>
{% for f, cap in figs %}<figure><img alt="{{ cap }}" src="{{ img(f) }}"><figcaption>{{ cap }}</figcaption></figure>{% endfor %}
</main></body></html>
"""

_MD = """# Virtual-cohort trial: {{ r.instance }}

{{ r.n_patients }} virtual patients, {{ arms|length }} arms, seed {{ r.seed }}; each patient receives every arm.
Local control = mean per-patient TCP (95 % bootstrap BCa interval); NK gain = with minus without NK cells.
{% if inf %}NK infusions: the rule that chose each arm's infusion days is in the NK infusions column.
{% endif %}
| arm | plan |{% if inf %} NK infusions |{% endif %} local control | 95 % CI | NK gain | NK favourability | tumour BED (Gy) |{% for o in oars %} {{ o }} BED (Gy) |{% endfor %}{% for k in ntcps %} NTCP {{ k }} (nominal) |{% endfor %} limits |
|---|---|{% if inf %}---|{% endif %}---|---|---|---|---|{% for o in oars %}---|{% endfor %}{% for k in ntcps %}---|{% endfor %}---|
{% for a in arms %}{% set s = r.summary[a] %}| {{ a }} | {{ r.arms[a].describe() }} |{% if inf %} {{ inf[a] }} |{% endif %} {{ "%.3f"|format(s.local_control) }} | {{ "%.3f"|format(s.local_control_ci95[0]) }}-{{ "%.3f"|format(s.local_control_ci95[1]) }} | {{ "%.4f"|format(s.nk_gain) }} | {{ "%.3g"|format(s.nk_favourability_mean) }} | {{ "%.1f"|format(s.tumour_bed_gy) }} |{% for o in oars %} {{ "%.1f"|format(s.oar_bed_gy[o]) }} |{% endfor %}{% for k in ntcps %} {{ "%.3f"|format(s.ntcp_nominal[k]) }} |{% endfor %} {{ ("violates " ~ r.checks[a]|join("; ")) if r.checks[a] else "all met" }} |
{% endfor %}
## Probability of superiority (row beats column)

| |{% for b in arms %} {{ b }} |{% endfor %}
|---|{% for b in arms %}---|{% endfor %}
{% for a in arms %}| {{ a }} |{% for b in arms %} {{ ("%.3f"|format(r.superiority[a][b])) if a != b else "-" }} |{% endfor %}
{% endfor %}
## Distributions per arm
{% for f, cap in figs %}
![{{ cap }}](figures/{{ f }})
{% endfor %}"""


def write_outputs(res: TrialResult, outdir: str | Path) -> list[Path]:
    """Write ``results.csv``, ``summary.json``, ``figures/*.png``, ``report.html`` (self-contained,
    images inlined) and ``report.md``."""
    import jinja2

    out = Path(outdir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "plans").mkdir(exist_ok=True)
    names = list(res.arms)
    cols = ["tcp", "tcp_without_nk", "nk_gain_tcp", "nk_favourability", "log10_kill",
            "alpha_per_gy"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")   # quotes arm names with commas or quotes
    w.writerow(["patient", "arm", *cols])
    for i in range(res.n_patients):
        for n in names:
            w.writerow([i, n, *(f"{res.patients[n][c][i]:.8g}" for c in cols)])
    write_atomic(out / "results.csv", buf.getvalue())
    write_atomic(out / "summary.json", json.dumps(res.to_dict(), indent=2) + "\n")
    # one replayable plan file per arm (`rtopt simulate INSTANCE --plan plans/ARM.json`)
    used: set[str] = set()
    for n in names:
        base = stem = slug(n)
        k = 2
        while stem.lower() in used:
            stem, k = f"{base}-{k}", k + 1
        used.add(stem.lower())
        write_atomic(out / "plans" / f"{stem}.json", json.dumps(
            {"instance": res.instance, "arm": n, "schedule": res.arms[n].to_dict(),
             "infusions": res.meta.get("infusions", {}).get(n)}, indent=2) + "\n")
    figs = _figures(res)
    for f, data in figs.items():
        write_atomic(out / "figures" / f, data)
    caps = [("tcp.png", "Per-patient tumour control probability by arm, logit scale (points: "
                        "patients; box: quartiles; whiskers: 5-95 %; orange: mean; (!) red: "
                        "the arm violates a limit)."),
            ("nk_gain.png", "NK-attributable gain in per-patient TCP by arm, symlog scale (linear "
                            "below 1e-4)."),
            ("nk_favourability.png", "NK favourability by arm.")]
    uris = {k: "data:image/png;base64," + base64.b64encode(v).decode("ascii")
            for k, v in figs.items()}
    first = next(iter(res.summary.values()))
    ctx = dict(r=res, arms=names, inf=res.meta.get("infusions") or {},
               oars=list(first["oar_bed_gy"]), ntcps=list(first.get("ntcp_nominal", {})),
               figs=caps)
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    md_env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined,
                                keep_trailing_newline=True,
                                # every value from the user (arm names, plans) made inert
                                finalize=lambda x: md_text(x) if isinstance(x, str) else x)
    write_atomic(out / "report.html", html_env.from_string(_HTML).render(
        **ctx, img=lambda f: uris[f]))
    write_atomic(out / "report.md", md_env.from_string(_MD).render(**ctx) + "\n")
    return [out / "results.csv", out / "summary.json", out / "report.html", out / "report.md"]
