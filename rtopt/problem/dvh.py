"""Organs at risk and targets given as DVHs of a plan (``[dvh_plan]``): metrics, limits, NTCP.

:class:`DvhModel` is built from a validated instance: it reads the plan's DVHs once (DICOM RT
Dose + RT Structure Set, or a text export; cached per process), wraps each named structure in a
:class:`rtopt.dose.schedule.ScheduleDVH` (the plan's shape kept, every bin converted with the
organ's alpha/beta) and evaluates, for ``N`` schedules at once from ``sum d`` and ``sum d^2``:

* reported metrics ``oar.NAME.eqd2_dmax_gy``, ``oar.NAME.eqd2_d2cc_gy``, ``oar.NAME.eqd2_dmean_gy``,
  ``oar.NAME.dvh.METRIC`` (each limited metric, in its own unit), ``ntcp.ORGAN.LABEL`` (0-1),
  ``target.eqd2_d95%_gy``, ``target.eqd2_dmean_gy``, and, with ``[dvh_plan.blood]``,
  ``blood_dose_per_fraction_gy`` (the mean over the course's fractions);
* constraints ``oar.NAME.dvh.METRIC[@Nfx]``, ``oar.NAME.ntcp.LABEL`` (percent) and
  ``target.dvh.METRIC[@Nfx]``.

:meth:`rtopt.problem.problem.Problem.evaluate` calls it, so verification re-checks every DVH
limit by the same code.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rtopt.dose import DoseError
from rtopt.dose.dvh import DVH, parse_metric
from rtopt.dose.schedule import ScheduleDVH, dose_sums

__all__ = ["DvhModel", "DvhLimitSpec", "NtcpTerm", "load_plan_dvhs", "REPORTED"]

REPORTED = ("EQD2_Dmax", "EQD2_D2cc", "EQD2_Dmean")
"""Metrics reported for every DVH organ (in EQD2 at the organ's alpha/beta)."""
TARGET_REPORTED = ("EQD2_D95%", "EQD2_Dmean")
"""Metrics reported for the target structure (at the tumour's alpha/beta)."""


def _key(metric: str) -> str:
    """Metric name as used in metric keys: ``EQD2_D2cc`` -> ``eqd2_d2cc_gy``."""
    return metric.lower() + "_gy"


@lru_cache(maxsize=8)
def _cached_dvhs(files: tuple[str, ...], stamps: tuple[float, ...], structures: tuple[str, ...],
                 n_fractions: int, sampling_mm: float, bin_width_gy: float) -> tuple[DVH, ...]:
    if len(files) == 2:
        from rtopt.dose.dicom import compute_dvhs

        res = compute_dvhs(files[0], files[1], list(structures), n_fractions=n_fractions,
                           sampling_mm=sampling_mm, bin_width_gy=bin_width_gy)
        found = {h.name: h for h in res.dvhs}
    else:
        from rtopt.dose.exports import read_dvh_export

        found = {h.name: h for h in read_dvh_export(files[0], n_fractions=n_fractions)}
    out = []
    for s in structures:
        h = found[s]
        if h.n_fractions is None:
            h = h.with_fractions(n_fractions)
        out.append(h)
    return tuple(out)


def load_plan_dvhs(instance: Any, structures: list[str]) -> dict[str, DVH]:
    """DVHs (total plan dose, the plan's fractions) of ``structures`` of the instance's
    ``[dvh_plan]``, read once per process for the same files, settings and modification times.

    Raises
    ------
    rtopt.dose.DoseError
        Unreadable files or structures (the instance loader checks names and files first).
    """
    plan = instance.dvh_plan
    base = Path(instance.base_dir)
    names = ([plan.rtdose, plan.rtstruct] if plan.export is None else [plan.export])
    files = tuple(str((base / n).resolve()) for n in names)
    stamps = tuple(Path(f).stat().st_mtime if Path(f).exists() else 0.0 for f in files)
    uniq = tuple(dict.fromkeys(structures))
    dvhs = _cached_dvhs(files, stamps, uniq, int(plan.fractions), float(plan.sampling_mm),
                        float(plan.bin_width_gy))
    return dict(zip(uniq, dvhs))


def _dicom_field(message: str, instance: Any) -> str:
    """Which ``[dvh_plan]`` key a DICOM reading error concerns (``rtdose`` or ``rtstruct``)."""
    if "(the RT Dose)" in message:
        return "rtdose"
    if "(the RT Structure Set)" in message:
        return "rtstruct"
    plan = instance.dvh_plan
    rtstruct = str((Path(instance.base_dir) / plan.rtstruct).resolve())
    rtdose = str((Path(instance.base_dir) / plan.rtdose).resolve())
    if message.startswith(rtstruct) and not message.startswith(rtdose):
        return "rtstruct"
    return "rtdose"


@dataclasses.dataclass(frozen=True)
class DvhLimitSpec:
    """One DVH limit ready to evaluate."""

    name: str            # constraint name, e.g. "oar.lung.dvh.V20Gy%@3fx"
    metric_key: str      # metric name, e.g. "oar.lung.dvh.V20Gy%@3fx"
    structure: int       # index into DvhModel.structures
    metric: str
    alpha_beta_gy: float
    fractions: int | None
    sense: str
    limit: float
    source: str = ""

    def value(self, sd: ScheduleDVH, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
        """The metric for each schedule (the limit's unit)."""
        return sd.metric(self.metric, s1, s2, self.alpha_beta_gy, self.fractions)

    @property
    def bounds_dose_above(self) -> bool:
        """True when the limit caps the dose (it tightens as the dose grows)."""
        m = parse_metric(self.metric)
        return (self.sense == "<=") != (m.kind == "cv_gy")


@dataclasses.dataclass(frozen=True)
class NtcpTerm:
    """One NTCP model applied to an organ's DVH."""

    label: str
    organ: str
    structure: int
    parameter_set: str
    max_percent: float | None

    @property
    def metric_key(self) -> str:
        """Metric name ``ntcp.ORGAN.LABEL`` (probability 0-1)."""
        return f"ntcp.{self.organ}.{self.label}"


class DvhModel:
    """The instance's DVH organs, target and NTCP terms (module docstring).

    Parameters
    ----------
    instance : rtopt.problem.instance.Instance
        Validated instance with a ``[dvh_plan]``.
    tumour_alpha_beta_gy : float
        The tumour's alpha/beta (Gy), for target metrics.
    """

    def __init__(self, instance: Any, tumour_alpha_beta_gy: float):
        plan = instance.dvh_plan
        self.plan = plan
        self.prescription = float(plan.prescription_dose_per_fraction_gy)
        self.plan_fractions = int(plan.fractions)
        wanted: list[str] = []
        if plan.target_structure is not None:
            wanted.append(plan.target_structure)
        if plan.blood is not None:
            wanted.append(plan.blood.structure)
        organs = [o for o in instance.organ_at_risk if o.uses_dvh]
        wanted += [o.dvh_structure for o in organs]
        try:
            dvhs = load_plan_dvhs(instance, wanted)
        except DoseError as exc:  # a file that exists but is not what [dvh_plan] says
            from rtopt.common.errors import InstanceError

            field = "export" if plan.export is not None else _dicom_field(str(exc), instance)
            raise InstanceError(getattr(instance, "source", "<dict>"),
                                [(f"dvh_plan.{field}", str(exc))]) from None
        self.structures: list[str] = list(dict.fromkeys(wanted))
        self.shapes: list[ScheduleDVH] = [ScheduleDVH(dvhs[s], self.prescription)
                                          for s in self.structures]
        idx = {s: i for i, s in enumerate(self.structures)}
        self.organs: list[tuple[str, int, float]] = [
            (o.name, idx[o.dvh_structure], float(o.alpha_beta_gy)) for o in organs]
        self.limits: list[DvhLimitSpec] = []
        self.ntcps: list[NtcpTerm] = []
        for o in organs:
            for lim in o.dvh_limit:
                sense, value = lim.bound
                name = f"oar.{o.name}.dvh.{lim.metric}" + (f"@{lim.fractions}fx"
                                                          if lim.fractions else "")
                self.limits.append(DvhLimitSpec(name, name, idx[o.dvh_structure], lim.metric,
                                                float(o.alpha_beta_gy), lim.fractions, sense,
                                                value, lim.source))
            for x in o.ntcp:
                self.ntcps.append(NtcpTerm(x.name, o.name, idx[o.dvh_structure],
                                           x.parameter_set, x.max_percent))
        self.tumour_alpha_beta = float(tumour_alpha_beta_gy)
        self.target: int | None = None
        if plan.target_structure is not None:
            self.target = idx[plan.target_structure]
            for lim in plan.target_limit:
                sense, value = lim.bound
                name = f"target.dvh.{lim.metric}" + (f"@{lim.fractions}fx"
                                                    if lim.fractions else "")
                self.limits.append(DvhLimitSpec(name, name, self.target, lim.metric,
                                                self.tumour_alpha_beta, lim.fractions, sense,
                                                value, lim.source))
        self.blood_fraction: float | None = None
        if plan.blood is not None:
            from rtopt.dose.blood import blood_dose_per_fraction

            b = plan.blood
            per_fx = blood_dose_per_fraction(
                dvhs[b.structure], n_fractions=self.plan_fractions,
                beam_on_time_s=b.beam_on_time_s, region_blood_volume_l=b.region_blood_volume_l,
                flow_fraction_of_cardiac_output=b.flow_fraction_of_cardiac_output)
            # the mean blood dose per fraction is linear in the region's mean dose per fraction,
            # hence in the tumour dose per fraction: one ratio for every schedule
            self.blood_fraction = per_fx / self.prescription
        self._max_dose: dict[int, float] = {}

    # ------------------------------------------------------------------ evaluation
    @property
    def ntcp_labels(self) -> list[str]:
        """Labels of the NTCP terms (``ntcp:LABEL`` objectives)."""
        return [t.label for t in self.ntcps]

    def metrics(self, D: np.ndarray) -> dict[str, np.ndarray]:
        """Reported metrics of each schedule row of ``D`` (tumour dose per day, Gy)."""
        D = np.atleast_2d(np.asarray(D, dtype=float))
        s1, s2 = dose_sums(D)
        m = self.metrics_from_sums(s1, s2)
        if self.blood_fraction is not None:
            n = np.maximum((D > 0).sum(axis=1), 1)
            m["blood_dose_per_fraction_gy"] = self.blood_fraction * s1 / n
        return m

    def metrics_from_sums(self, s1: np.ndarray, s2: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`metrics` from ``sum d`` (Gy) and ``sum d^2`` (Gy^2)."""
        m: dict[str, np.ndarray] = {}
        for name, i, ab in self.organs:
            for spec in REPORTED:
                m[f"oar.{name}.{_key(spec)}"] = self.shapes[i].metric(spec, s1, s2, ab)
        if self.target is not None:
            for spec in TARGET_REPORTED:
                m[f"target.{_key(spec)}"] = self.shapes[self.target].metric(
                    spec, s1, s2, self.tumour_alpha_beta)
        for lim in self.limits:
            m[lim.metric_key] = lim.value(self.shapes[lim.structure], s1, s2)
        for t in self.ntcps:
            m[t.metric_key] = self.shapes[t.structure].ntcp(t.parameter_set, s1, s2)
        return m

    def slacks(self, m: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, float, str, str]]:
        """Constraint entries (value, limit, sense, "limit") from :meth:`metrics`."""
        s: dict[str, tuple[np.ndarray, float, str, str]] = {}
        for lim in self.limits:
            s[lim.name] = (m[lim.metric_key], lim.limit, lim.sense, "limit")
        for t in self.ntcps:
            if t.max_percent is not None:
                s[f"oar.{t.organ}.ntcp.{t.label}"] = (100.0 * m[t.metric_key],
                                                       float(t.max_percent), "<=", "limit")
        return s

    # ------------------------------------------------------------------ closed forms
    def _ok_uniform(self, n: int, d: float) -> bool:
        s1, s2 = np.array([n * d]), np.array([n * d * d])
        for lim in self.limits:
            if not lim.bounds_dose_above:
                continue
            v = float(lim.value(self.shapes[lim.structure], s1, s2)[0])
            sl = (v - lim.limit) if lim.sense == ">=" else (lim.limit - v)
            if sl < -1e-9 * max(1.0, abs(lim.limit)):
                return False
        for t in self.ntcps:
            if t.max_percent is not None:
                v = 100.0 * float(self.shapes[t.structure].ntcp(t.parameter_set, s1, s2)[0])
                if v > t.max_percent * (1 + 1e-9):
                    return False
        return True

    def max_uniform_dose(self, n: int, d_hi: float) -> float:
        """Largest uniform tumour dose per fraction (Gy, at most ``d_hi``) for ``n`` fractions
        that keeps every dose-capping DVH and NTCP limit (bisection to 1e-9 Gy; every such
        metric is monotone in the dose); 0 if even tiny doses break one."""
        key = (int(n), float(d_hi))
        if key in self._max_dose:
            return self._max_dose[key]
        if self._ok_uniform(n, d_hi):
            out = d_hi
        else:
            lo, hi = 0.0, d_hi
            for _ in range(int(math.ceil(math.log2(max(d_hi, 1e-9) / 1e-9)))):
                mid = 0.5 * (lo + hi)
                if self._ok_uniform(n, mid):
                    lo = mid
                else:
                    hi = mid
            out = lo
        self._max_dose[key] = out
        return out

    def binding_limit(self, n: int, d: float) -> str | None:
        """Name of a dose-capping limit that a uniform ``n`` x ``d`` slightly above ``d``
        breaks (the one that sets :meth:`max_uniform_dose`)."""
        d2 = d * (1 + 1e-6) + 1e-9
        s1, s2 = np.array([n * d2]), np.array([n * d2 * d2])
        for lim in self.limits:
            if lim.bounds_dose_above:
                v = float(lim.value(self.shapes[lim.structure], s1, s2)[0])
                if (v < lim.limit) if lim.sense == ">=" else (v > lim.limit):
                    return lim.name
        for t in self.ntcps:
            if t.max_percent is not None and \
                    100 * float(self.shapes[t.structure].ntcp(t.parameter_set, s1, s2)[0]) \
                    > t.max_percent:
                return f"oar.{t.organ}.ntcp.{t.label}"
        return None


def dvh_summary(metrics: Any, checks: Any = ()) -> dict[str, Any] | None:
    """Per-organ DVH metrics, NTCP and target metrics of one verified plan, for reports.

    Parameters
    ----------
    metrics : mapping
        Flat metrics of one plan (``Verification.metrics``).
    checks : sequence of ConstraintCheck
        The plan's checks (DVH and NTCP limits are picked by name).

    Returns
    -------
    dict or None
        ``{"organs": [{name, eqd2_dmax_gy, eqd2_d2cc_gy, eqd2_dmean_gy, ntcp: {label: p},
        limits: [...]}], "target": {...} or None, "blood_dose_per_fraction_gy": x or None}``;
        None when the instance has no ``[dvh_plan]``.
    """
    tail = ".eqd2_dmax_gy"
    organs = [k[4:-len(tail)] for k in metrics if k.startswith("oar.") and k.endswith(tail)]
    ntcp = {k[5:]: metrics[k] for k in metrics if k.startswith("ntcp.")}  # "organ.label"
    has_target = "target.eqd2_dmean_gy" in metrics
    if not organs and not has_target and not ntcp:
        return None
    by_organ = {}
    for c in checks:
        name = getattr(c, "name", "")
        for o in organs:
            if name.startswith(f"oar.{o}.dvh.") or name.startswith(f"oar.{o}.ntcp."):
                by_organ.setdefault(o, []).append(c.to_dict())
    out_organs = []
    for o in organs:
        row = {"name": o}
        for spec in REPORTED:
            row[_key(spec)] = _round(metrics.get(f"oar.{o}.{_key(spec)}"))
        row["limits"] = by_organ.get(o, [])
        row["ok"] = all(c["ok"] for c in row["limits"])
        out_organs.append(row)
    target = None
    if has_target:
        target = {_key(s): _round(metrics.get(f"target.{_key(s)}")) for s in TARGET_REPORTED}
        target["limits"] = [c.to_dict() for c in checks
                            if getattr(c, "name", "").startswith("target.dvh.")]
    return {"organs": out_organs,
            "ntcp": [{"name": k.rsplit(".", 1)[1], "organ": k.rsplit(".", 1)[0],
                      "probability": _round(v)} for k, v in ntcp.items()],
            "target": target,
            "blood_dose_per_fraction_gy": _round(metrics.get("blood_dose_per_fraction_gy"))}


def _round(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, 9) if math.isfinite(x) else None
