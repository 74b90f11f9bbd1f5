"""What the simulators take (:class:`Biology`) and return (:class:`Simulation`), and the
row bookkeeping they share (schedules as rows, parameter samples along the same rows)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from rtopt.model.data.calibrated import OUTCOME
from rtopt.model.parameters import SurrogateParameters, reference_gtv_cc, resolve

__all__ = ["Biology", "Simulation", "STATE_NAMES", "STEPS_PER_DAY", "TRAJECTORY_STEPS_PER_DAY",
           "ROW_FIELDS", "as_matrix", "param_rows", "tumour_rows"]


STEPS_PER_DAY = 2
"""Default sub-steps per day of :func:`simulate` and :func:`infusion_kernels` (fourth-order
scheme: at 2 a day the NK favourability is within 2e-4 of :func:`simulate_reference` on the
benchmark schedules)."""

TRAJECTORY_STEPS_PER_DAY = 8
"""Sub-steps per day of trajectories shown to people (plots, ``rtopt simulate --json``): a
finer grid than the accuracy needs, for smooth curves."""

STATE_NAMES = ("demand", "vascular", "chemokine_precursor", "chemokine", "nk_blood", "nk_tumour")


@dataclass(frozen=True)
class Biology:
    """Everything the simulators need about one tumour and its NK product.

    Built from an instance with :meth:`from_instance`; the fields mirror ``[tumour]`` and the
    resolved surrogate parameters.  ``nk`` False means no NK cells are modelled (infusions are
    ignored and activity is 0).
    """

    alpha_per_gy: float
    alpha_beta_gy: float
    clonogens: float
    hypoxic_fraction: float
    params: SurrogateParameters
    survival_model: str = "lq"
    transition_dose_gy: float | None = None
    usc_d0_gy: float | None = None
    usc_dq_gy: float | None = None
    repopulation_kickoff_days: float | None = None
    potential_doubling_days: float | None = None
    nk: bool = True

    @property
    def beta_per_gy2(self) -> float:
        """Quadratic LQ coefficient beta = alpha / (alpha/beta) in 1/Gy^2."""
        return self.alpha_per_gy / self.alpha_beta_gy

    @property
    def survival_kw(self) -> dict[str, Any]:
        """Keyword arguments of :func:`rtopt.model.radiobiology.neg_log_survival` for this tumour."""
        return dict(model=self.survival_model, transition_dose_gy=self.transition_dose_gy,
                    d0_gy=self.usc_d0_gy, dq_gy=self.usc_dq_gy)

    @classmethod
    def from_instance(cls, inst: Any, **param_overrides: Any) -> "Biology":
        """Build from a validated :class:`rtopt.problem.instance.Instance` (optional parameter
        overrides).

        The clonogen number is ``[tumour] clonogens``, or else the site's outcome-calibrated
        number, scaled by ``[tumour] gtv_cc`` over the reference GTV volume of the outcome fit
        (``reference_gtv_cc`` of rtopt/model/data/outcomes.toml, 10 cm3; docs/model.md
        section 9) when the instance gives ``gtv_cc``.  Every Biology of an instance is built
        here (the problem's, parameter samples, trials), so all of them scale alike.
        """
        t = inst.tumour
        params = inst.surrogate_parameters()
        if param_overrides:
            params = params.with_values(**param_overrides)
        clonogens = t.clonogens
        if clonogens is None:                       # the site's outcome-calibrated value
            site = str(getattr(t.site, "value", t.site))
            clonogens = OUTCOME[site]["clonogens"]
            gtv_cc = getattr(t, "gtv_cc", None)
            if gtv_cc is not None:                  # scaled by the tumour's volume
                clonogens = float(clonogens) * float(gtv_cc) / reference_gtv_cc(site)
        return cls(alpha_per_gy=t.alpha_per_gy, alpha_beta_gy=t.alpha_beta_gy,
                   clonogens=clonogens, hypoxic_fraction=t.hypoxic_fraction, params=params,
                   survival_model=str(getattr(t.survival_model, "value", t.survival_model)),
                   transition_dose_gy=t.transition_dose_gy, usc_d0_gy=t.usc_d0_gy,
                   usc_dq_gy=t.usc_dq_gy,
                   repopulation_kickoff_days=t.repopulation_kickoff_days,
                   potential_doubling_days=t.potential_doubling_days,
                   nk=inst.nk is not None)

    @classmethod
    def simple(cls, site: str = "lung", alpha_per_gy: float = 0.35, alpha_beta_gy: float = 10.0,
               clonogens: float = 1e8, hypoxic_fraction: float = 0.21,
               product: str | None = "il15_expanded", cytokine_support: str = "none",
               overrides: Mapping[str, float] | None = None, **kw: Any) -> "Biology":
        """Build from a site preset without an instance file (scripts, calibration, tests)."""
        params = resolve(site, product, cytokine_support, overrides)
        return cls(alpha_per_gy=alpha_per_gy, alpha_beta_gy=alpha_beta_gy, clonogens=clonogens,
                   hypoxic_fraction=hypoxic_fraction, params=params, nk=product is not None, **kw)


@dataclass(frozen=True)
class Simulation:
    """Outputs of a simulation of ``N`` schedules (arrays of shape ``(N,)`` unless stated).

    Attributes
    ----------
    nk_auc : ndarray
        NK favourability: integral of NK activity over the horizon (activity-days), the infused
        and the patient's own (endogenous) NK cells together.  It measures how much NK activity
        the tumour sees, not an outcome: activity counts whether or not clonogens remain.
    nk_auc_endogenous : ndarray
        The part of ``nk_auc`` of the endogenous NK cells (the same plan without infusions has
        this favourability); ``nk_auc - nk_auc_endogenous`` is the infused cells'.
    ln_survival : ndarray
        Natural log of the clonogen surviving fraction at the nominal alpha (RT over the three
        clonogen compartments with NK radiosensitisation, NK killing, repopulation).
    log10_kill : ndarray
        ``-ln_survival / ln 10``.
    tcp : ndarray
        Per-patient Poisson tumour control probability ``exp(-N0 S)`` at the nominal alpha.
    local_control : ndarray
        Population tumour control: ``tcp`` averaged over the spread of alpha
        (``alpha_sd_per_gy``); what clinical series report.
    nk_log10_kill : ndarray
        The part of ``log10_kill`` due to direct NK killing.
    log10_kill_without_nk, local_control_without_nk : ndarray
        The same plan without NK cells.
    nk_gain_log10_kill, nk_gain_local_control : ndarray
        NK-attributable gains: the outcome with NK cells minus the same plan without them.
    hypoxic_fraction_end : ndarray
        FMISO hypoxic fraction at the end of the horizon.
    mean_hypoxic_fraction : ndarray
        Time-averaged FMISO hypoxic fraction over the horizon.
    t_days : ndarray or None
        Trajectory times, shape ``(K,)`` (only with ``trajectory=True``).
    trajectory : dict or None
        ``{name: (N, K) array}`` for ``hypoxic_fraction``, ``demand``, ``vascular``,
        ``chemokine``, ``nk_blood``, ``nk_tumour``, ``nk_activity`` and ``log10_survival``
        (cumulative log10 surviving fraction of clonogens at the nominal alpha).
    fraction_activity, fraction_hypoxia : ndarray or None
        ``(N, days)``: NK activity over the day before each fraction (its mean, the
        radiosensitising activity) and the FMISO hypoxic fraction at each fraction (0 on days
        without one); only with ``record_fractions=True``.
    """

    nk_auc: np.ndarray
    ln_survival: np.ndarray
    log10_kill: np.ndarray
    tcp: np.ndarray
    local_control: np.ndarray
    nk_log10_kill: np.ndarray
    log10_kill_without_nk: np.ndarray
    local_control_without_nk: np.ndarray
    nk_gain_log10_kill: np.ndarray
    nk_gain_local_control: np.ndarray
    hypoxic_fraction_end: np.ndarray
    mean_hypoxic_fraction: np.ndarray
    nk_auc_endogenous: np.ndarray | None = None
    t_days: np.ndarray | None = None
    trajectory: dict[str, np.ndarray] | None = field(default=None, repr=False)
    fraction_activity: np.ndarray | None = field(default=None, repr=False)
    fraction_hypoxia: np.ndarray | None = field(default=None, repr=False)


ROW_FIELDS = ("nk_auc", "ln_survival", "log10_kill", "tcp", "local_control", "nk_log10_kill",
               "log10_kill_without_nk", "local_control_without_nk", "nk_gain_log10_kill",
               "nk_gain_local_control", "hypoxic_fraction_end", "mean_hypoxic_fraction",
               "nk_auc_endogenous")
"""The per-schedule fields of :class:`Simulation`."""


def as_matrix(a: Any, name: str) -> np.ndarray:
    """Schedules ``a`` as a float ``(N, days)`` matrix (one schedule ``(days,)`` becomes one row);
    ``ValueError`` naming ``name`` for any other shape."""
    m = np.asarray(a, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2:
        raise ValueError(f"{name} must be a (N, days) or (days,) array, got shape {m.shape}")
    return m


def param_rows(bio: Biology, rows: slice, n: int) -> SurrogateParameters:
    """Slice array-valued parameters (samples) to the rows of one chunk."""
    vals = {}
    for k, v in bio.params.values.items():
        a = np.asarray(v, dtype=float)
        vals[k] = a[rows] if a.ndim == 1 and a.shape[0] == n else v
    return SurrogateParameters(vals, bio.params.provenance)


def tumour_rows(bio: Biology, rows: slice, n: int) -> Biology:
    """Slice array-valued tumour values (per-sample alpha, alpha/beta, N0) to a chunk."""
    kw = {}
    for k in ("alpha_per_gy", "alpha_beta_gy", "clonogens"):
        a = np.asarray(getattr(bio, k), dtype=float)
        if a.ndim == 1 and a.shape[0] == n:
            kw[k] = a[rows]
    return replace(bio, **kw) if kw else bio
