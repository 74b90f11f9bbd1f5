"""Dose to circulating blood during a course of radiotherapy.

Two models (docs/dose.md section 5):

Pass model (after Yovino et al. 2013, Int J Radiat Oncol Biol Phys 85:1397-1401)
    Blood (volume ``V_B``, default 5 L) is well mixed and flows through the irradiated region
    (blood content ``V_f``, flow ``Q`` = a fraction of the cardiac output, default 5 L/min).
    During a fraction's beam-on time ``T`` the region's mean dose rate is ``D_f / T`` (``D_f``
    its mean dose per fraction).  A blood element crossing the region stays ``t = V_f / Q``
    and receives ``d_pass = D_f min(1, t / T)``; the number of crossings during ``T`` is
    Poisson with mean ``lambda = V_f D_f / (V_B d_pass)`` (``= Q T / V_B`` when ``t < T``).
    The mean dose per fraction to the blood is then ``V_f D_f / V_B`` whatever ``T`` (the
    energy deposited in blood, shared by all of it), and the fraction of blood receiving at
    least ``x`` Gy is ``P(N >= ceil(x / d_pass))``.  Over ``n`` fractions the crossings add
    (Poisson with mean ``n lambda``); blood cell turnover between fractions is ignored.
    Yovino et al. track each blood element through the field by simulation; this closed form
    keeps their assumptions (well-mixed blood, constant flow, uniform dose rate during beam-on)
    and replaces the simulation by its Poisson limit.
EDIC (Jin et al.)
    Effective dose to immune cells for thoracic radiotherapy,
    ``EDIC = 0.12 MLD + 0.08 MHD + [0.45 + 0.35 x 0.85 x (n / 45)^0.5] MBD`` (Gy), with the
    mean lung, heart and body doses (Gy, whole course) and ``n`` fractions.  The form is the
    one published by Jin JY et al. (Radiother Oncol 2020 and the RTOG 0617 analysis, Cancers
    2021); rtopt could not check it against the paper text (docs/dose.md).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rtopt.dose import DoseError
from rtopt.dose.dvh import DVH

__all__ = ["BloodDoseResult", "blood_dose", "blood_dose_per_fraction", "edic_gy",
           "BLOOD_VOLUME_L", "CARDIAC_OUTPUT_L_PER_MIN"]

BLOOD_VOLUME_L = 5.0
"""Adult total blood volume (L), the value Yovino et al. 2013 use."""

CARDIAC_OUTPUT_L_PER_MIN = 5.0
"""Adult resting cardiac output (L/min); assumption (textbook value)."""


@dataclasses.dataclass(frozen=True)
class BloodDoseResult:
    """Dose to circulating blood.

    Attributes
    ----------
    mean_dose_per_fraction_gy : float
        Mean dose per fraction over all blood (Gy).
    mean_dose_course_gy : float
        Mean dose over the course (Gy).
    dose_per_pass_gy : float
        Dose received in one crossing of the region (Gy).
    passes_per_fraction : float
        Mean number of crossings per blood element per fraction.
    thresholds_gy : tuple of float
        Doses ``x`` of the fractions below.
    fraction_at_least_per_fraction : tuple of float
        Fraction of blood receiving ``>= x`` Gy in one fraction.
    fraction_at_least_course : tuple of float
        Fraction of blood receiving ``>= x`` Gy over the course.
    fraction_irradiated_per_fraction : float
        Fraction of blood crossing the region at least once per fraction.
    n_fractions : int
        Number of fractions.
    """

    mean_dose_per_fraction_gy: float
    mean_dose_course_gy: float
    dose_per_pass_gy: float
    passes_per_fraction: float
    thresholds_gy: tuple
    fraction_at_least_per_fraction: tuple
    fraction_at_least_course: tuple
    fraction_irradiated_per_fraction: float
    n_fractions: int

    def as_dict(self) -> dict:
        """The result as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _poisson_sf(k: int, lam: float) -> float:
    """P(N >= k) for N ~ Poisson(lam)."""
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    # 1 - sum_{j<k} e^-lam lam^j / j!, summed in logs for stability
    terms = [math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1)) for j in range(k)]
    return max(0.0, 1.0 - math.fsum(terms))


def blood_dose(region: DVH | float, *, n_fractions: int, beam_on_time_s: float,
               region_blood_volume_l: float, flow_fraction_of_cardiac_output: float,
               blood_volume_l: float = BLOOD_VOLUME_L,
               cardiac_output_l_per_min: float = CARDIAC_OUTPUT_L_PER_MIN,
               thresholds_gy=(0.05, 0.1, 0.5, 1.0)) -> BloodDoseResult:
    """Dose to circulating blood by the pass model (module docstring).

    Parameters
    ----------
    region : DVH or float
        DVH of the irradiated blood-containing region (total plan dose; its mean is used) or
        its mean dose over the course (Gy).
    n_fractions : int
        Number of fractions.
    beam_on_time_s : float
        Beam-on time of one fraction (s), ``> 0``.
    region_blood_volume_l : float
        Blood in the region (L), e.g. lung 0.5 L, heart chambers 0.6 L, or tissue volume
        times its blood fraction.
    flow_fraction_of_cardiac_output : float
        Fraction (0-1] of the cardiac output crossing the region (lungs 1.0).
    blood_volume_l, cardiac_output_l_per_min : float
        Total blood volume (L) and cardiac output (L/min).
    thresholds_gy : sequence of float
        Doses (Gy) for the "fraction of blood receiving at least x" outputs.
    """
    n = int(n_fractions)
    if n < 1:
        raise DoseError(f"n_fractions must be >= 1, got {n_fractions}")
    for label, val in (("beam_on_time_s", beam_on_time_s),
                       ("region_blood_volume_l", region_blood_volume_l),
                       ("blood_volume_l", blood_volume_l),
                       ("cardiac_output_l_per_min", cardiac_output_l_per_min)):
        if not val > 0:
            raise DoseError(f"{label} must be > 0, got {val}")
    if not 0 < flow_fraction_of_cardiac_output <= 1:
        raise DoseError("flow_fraction_of_cardiac_output must be in (0, 1], got "
                        f"{flow_fraction_of_cardiac_output}")
    if region_blood_volume_l > blood_volume_l:
        raise DoseError("region_blood_volume_l cannot exceed blood_volume_l")
    mean_course = region.d_mean() if isinstance(region, DVH) else float(region)
    if not mean_course >= 0:
        raise DoseError(f"mean dose must be >= 0 Gy, got {mean_course}")
    d_f = mean_course / n
    q_l_per_s = flow_fraction_of_cardiac_output * cardiac_output_l_per_min / 60.0
    transit_s = region_blood_volume_l / q_l_per_s
    d_pass = d_f * min(1.0, transit_s / beam_on_time_s)
    mean_pf = region_blood_volume_l * d_f / blood_volume_l
    lam = mean_pf / d_pass if d_pass > 0 else 0.0
    thr = tuple(float(x) for x in thresholds_gy)
    per_fx, course = [], []
    for x in thr:
        k = 0 if x <= 0 else (math.inf if d_pass <= 0 else math.ceil(x / d_pass - 1e-12))
        per_fx.append(0.0 if k == math.inf else _poisson_sf(int(k), lam))
        course.append(0.0 if k == math.inf else _poisson_sf(int(k), n * lam))
    return BloodDoseResult(mean_pf, mean_pf * n, d_pass, lam, thr, tuple(per_fx),
                           tuple(course), 1.0 - math.exp(-lam), n)


def blood_dose_per_fraction(region: DVH | float, **kw) -> float:
    """Mean dose per fraction to circulating blood (Gy): :func:`blood_dose`'s headline value.

    Takes the arguments of :func:`blood_dose`; this is the interface the NK-kinetics model
    consumes."""
    return blood_dose(region, **kw).mean_dose_per_fraction_gy


def edic_gy(mean_lung_dose_gy: float, mean_heart_dose_gy: float, mean_body_dose_gy: float,
            n_fractions: int) -> float:
    """Effective dose to immune cells (Gy) of Jin et al. for thoracic radiotherapy.

    ``0.12 MLD + 0.08 MHD + [0.45 + 0.35 x 0.85 x (n / 45)^0.5] MBD`` with course doses (Gy).
    """
    vals = np.array([mean_lung_dose_gy, mean_heart_dose_gy, mean_body_dose_gy], dtype=float)
    if np.any(~(vals >= 0)):
        raise DoseError("mean doses must be >= 0 Gy")
    if int(n_fractions) < 1:
        raise DoseError(f"n_fractions must be >= 1, got {n_fractions}")
    mld, mhd, mbd = vals
    return float(0.12 * mld + 0.08 * mhd
                 + (0.45 + 0.35 * 0.85 * math.sqrt(int(n_fractions) / 45.0)) * mbd)
