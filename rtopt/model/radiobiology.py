"""Classical radiobiology: cell survival, BED, EQD2, repopulation and Poisson TCP.

This module is the one place in rtopt where survival, biologically effective dose (BED) and
equivalent dose in 2 Gy fractions (EQD2) are computed; back-ends, the simulator and reports all
call it (docs/model.md section 2).  Every function is pure and vectorised: arguments are numpy
array-likes that broadcast against each other, and scalars in give numpy scalars out.

Survival models (``model=``), for one fraction of dose ``d``:

``"lq"``
    Linear-quadratic, ``-ln S = alpha d + beta d^2``.  Validated to about 10 Gy per fraction
    and reasonable to about 18 Gy (Brenner 2008, Semin Radiat Oncol).  The default.
``"lq_l"``
    Linear-quadratic-linear (Astrahan 2008, Med Phys): LQ up to a transition dose ``d_T``,
    then linear with the LQ slope at ``d_T``, so the curve and its slope are continuous.
``"usc"``
    Universal survival curve (Park et al. 2008, IJROBP): LQ below
    ``D_T = 2 Dq / (1 - alpha D0)``, multi-target asymptote ``-ln S = (d - Dq) / D0`` above.

Notation: ``rho`` is the alpha/beta ratio (``alpha_beta_gy``, Gy); doses are in Gy, times in days.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SURVIVAL_MODELS",
    "POPULATION_Z",
    "population_alphas",
    "population_tcp",
    "usc_transition_dose",
    "bed_scaled_course",
    "scale_for_bed",
    "neg_log_survival",
    "bed_per_fraction",
    "bed",
    "bed_uniform",
    "eqd2_from_bed",
    "bed_from_eqd2",
    "eqd2",
    "dose_per_fraction_for_bed",
    "repopulation_bed_loss",
    "repopulation_log_gain",
    "overall_days",
    "oar_doses",
    "max_oar_dose_for_bed",
    "poisson_tcp",
]

SURVIVAL_MODELS = ("lq", "lq_l", "usc")

# exp(700) ~ 1e304 is still finite, and exp(-1e304) is already exactly 0.0, so clipping the
# exponent here changes no result and avoids overflow warnings.
_MAX_EXPONENT = 700.0

# Park et al. 2008 join the branches smoothly only when beta = (1 - alpha D0)^2 / (4 D0 Dq);
# parameters published to two significant figures miss that by up to ~3 % at D_T (H460: 0.4 %).
# A larger jump means the parameters do not describe one USC, and a downward jump would make
# survival rise with dose, which an optimiser could exploit.

# --------------------------------------------------------------------------- validation helpers


def _as_float(value) -> np.ndarray:
    return np.asarray(value, dtype=float)


def _describe(arr: np.ndarray) -> str:
    if arr.size == 1:
        return f"got {arr.reshape(-1)[0]!r}"
    return f"smallest value {np.min(arr)!r}"


def _require_positive(name: str, value) -> np.ndarray:
    arr = _as_float(value)
    # `not > 0` also rejects NaN, which would otherwise propagate silently.
    if np.any(~(arr > 0)):
        raise ValueError(f"{name}: must be > 0 ({_describe(arr)})")
    return arr


def _require_non_negative(name: str, value) -> np.ndarray:
    arr = _as_float(value)
    if np.any(~(arr >= 0)):
        raise ValueError(f"{name}: must be >= 0 ({_describe(arr)})")
    return arr


def _require_doses(name: str, value) -> np.ndarray:
    arr = _as_float(value)
    # NaN doses pass through (they mark missing values for some callers); negative ones cannot
    # be delivered and would flip the sign of the quadratic term's effect.
    if np.any(arr < 0):
        raise ValueError(f"{name}: doses must be >= 0 Gy ({_describe(arr[arr < 0])})")
    return arr


def _check_model(model) -> None:
    if model not in SURVIVAL_MODELS:
        raise ValueError(
            f"model: unknown survival model {model!r}; expected one of {SURVIVAL_MODELS}"
        )


# --------------------------------------------------------------------------- survival


def usc_transition_dose(alpha, d0_gy, dq_gy):
    """Transition dose (Gy) of the universal survival curve, ``D_T = 2 Dq / (1 - alpha D0)``.

    Park et al. 2008 (IJROBP) join the LQ curve to the multi-target asymptote at ``D_T``; the
    join is smooth (equal value and slope) when ``beta = (1 - alpha D0)^2 / (4 D0 Dq)``.

    Parameters
    ----------
    alpha : array_like
        LQ alpha (1/Gy), ``>= 0``.
    d0_gy : array_like
        D0 of the multi-target asymptote (Gy), ``> 0``; ``alpha * d0_gy`` must be ``< 1``.
    dq_gy : array_like
        Quasi-threshold dose Dq (Gy), ``>= 0``.

    Returns
    -------
    numpy.ndarray or numpy.float64
        ``D_T`` in Gy, broadcast over the arguments.

    Raises
    ------
    ValueError
        If an argument is out of range or ``alpha * d0_gy >= 1`` (no positive transition dose).
    """
    alpha = _require_non_negative("alpha", alpha)
    d0 = _require_positive("d0_gy", d0_gy)
    dq = _require_non_negative("dq_gy", dq_gy)
    if np.any(alpha * d0 >= 1.0):
        raise ValueError("usc: alpha * d0_gy must be < 1 for a positive transition dose")
    return 2.0 * dq / (1.0 - alpha * d0)


def neg_log_survival(d, alpha, beta, model="lq", transition_dose_gy=None, d0_gy=None, dq_gy=None):
    """Negative natural log of the surviving fraction (dimensionless) after one ``d`` Gy fraction.

    ``"lq"``: ``alpha d + beta d^2``.
    ``"lq_l"`` (Astrahan 2008): LQ for ``d <= d_T``, above it
    ``alpha d_T + beta d_T^2 + (alpha + 2 beta d_T)(d - d_T)``.
    ``"usc"`` (Park et al. 2008): LQ for ``d < D_T``, above it ``LQ(D_T) + (d - D_T) / D0``,
    which equals Park's ``d / D0 - Dq / D0`` when beta satisfies the smooth join
    ``beta = (1 - alpha D0)^2 / (4 D0 Dq)`` and stays continuous and increasing otherwise (an
    NK-radiosensitised alpha, or an alpha/beta that does not match D0 and Dq).
    A dose of 0 gives exactly 0 in every model.

    Parameters
    ----------
    d : array_like
        Dose of the fraction (Gy), ``>= 0``.
    alpha : array_like
        LQ alpha (1/Gy), ``>= 0``; may vary per fraction or schedule (e.g. NK-radiosensitised).
    beta : array_like
        LQ beta (1/Gy^2), ``>= 0``.
    model : {"lq", "lq_l", "usc"}
        Survival model.
    transition_dose_gy : array_like, optional
        ``d_T`` (Gy, ``> 0``).  Required for ``"lq_l"``; for ``"usc"`` it overrides
        :func:`usc_transition_dose`.  Ignored for ``"lq"``.
    d0_gy, dq_gy : array_like, optional
        D0 (Gy, ``> 0``) and Dq (Gy, ``>= 0``) of the USC asymptote; required for ``"usc"``,
        ignored otherwise.

    Returns
    -------
    numpy.ndarray or numpy.float64
        ``-ln S``, broadcast over all array arguments.

    Raises
    ------
    ValueError
        Unknown model, a negative dose or parameter, a parameter missing for the model, or USC
        parameters that do not join continuously (see above).
    """
    _check_model(model)
    d = _require_doses("d", d)
    alpha = _require_non_negative("alpha", alpha)
    beta = _require_non_negative("beta", beta)
    lq = d * (alpha + beta * d)
    if model == "lq":
        return lq
    if model == "lq_l":
        if transition_dose_gy is None:
            raise ValueError("model 'lq_l' needs transition_dose_gy (the LQ-to-linear dose d_T)")
        dt = _require_positive("transition_dose_gy", transition_dose_gy)
        linear = dt * (alpha + beta * dt) + (alpha + 2.0 * beta * dt) * (d - dt)
        return np.where(d <= dt, lq, linear)
    # usc
    if d0_gy is None or dq_gy is None:
        raise ValueError("model 'usc' needs d0_gy and dq_gy (Park et al. 2008 asymptote)")
    d0 = _require_positive("d0_gy", d0_gy)
    dq = _require_non_negative("dq_gy", dq_gy)
    if transition_dose_gy is None:
        dt = usc_transition_dose(alpha, d0, dq)
    else:
        dt = _require_positive("transition_dose_gy", transition_dose_gy)
    # Joined by construction: LQ(D_T) + (d - D_T)/D0.  With Park's consistent parameters this is
    # exactly d/D0 - Dq/D0; with any others (e.g. an NK-radiosensitised alpha, or alpha/beta not
    # matching D0 and Dq) it stays continuous and increasing instead of jumping at D_T.
    linear = dt * (alpha + beta * dt) + (d - dt) / d0
    return np.where(d < dt, lq, linear)


def bed_per_fraction(d, alpha_beta_gy, model="lq", transition_dose_gy=None, alpha=None,
                     d0_gy=None, dq_gy=None):
    """Biologically effective dose (Gy) of one fraction of ``d`` Gy, ``-ln S / alpha``.

    ``"lq"``: ``d (1 + d / rho)``.
    ``"lq_l"``: ``d_T (1 + d_T / rho) + (d - d_T)(1 + 2 d_T / rho)`` above ``d_T`` (docs/model.md s2).
    ``"usc"``: :func:`neg_log_survival` with ``beta = alpha / rho``, divided by ``alpha``; ``rho``
    must then be close to the USC's implied ``alpha / beta`` (H460: about 8.6 Gy, not 10).

    Parameters
    ----------
    d : array_like
        Dose of the fraction (Gy), ``>= 0``.
    alpha_beta_gy : array_like
        alpha/beta ratio ``rho`` (Gy), ``> 0``.
    model : {"lq", "lq_l", "usc"}
        Survival model.
    transition_dose_gy : array_like, optional
        ``d_T`` (Gy); required for ``"lq_l"``, optional override for ``"usc"``.
    alpha : array_like, optional
        LQ alpha (1/Gy), ``> 0``; required for ``"usc"`` (the asymptote does not scale with
        alpha), ignored otherwise because alpha cancels.
    d0_gy, dq_gy : array_like, optional
        USC asymptote D0 and Dq (Gy); required for ``"usc"``.

    Returns
    -------
    numpy.ndarray or numpy.float64
        BED in Gy, broadcast over all array arguments.

    Raises
    ------
    ValueError
        ``alpha_beta_gy <= 0``, unknown model, or a parameter missing for the model.
    """
    _check_model(model)
    rho = _require_positive("alpha_beta_gy", alpha_beta_gy)
    d = _require_doses("d", d)
    if model == "lq":
        return d * (1.0 + d / rho)
    if model == "lq_l":
        # Dividing neg_log_survival by alpha gives this form, which needs no alpha.
        if transition_dose_gy is None:
            raise ValueError("model 'lq_l' needs transition_dose_gy (the LQ-to-linear dose d_T)")
        dt = _require_positive("transition_dose_gy", transition_dose_gy)
        linear = dt * (1.0 + dt / rho) + (d - dt) * (1.0 + 2.0 * dt / rho)
        return np.where(d <= dt, d * (1.0 + d / rho), linear)
    if alpha is None:
        raise ValueError("model 'usc' needs alpha to express the survival curve as BED")
    a = _require_positive("alpha", alpha)
    return neg_log_survival(d, a, a / rho, model="usc", transition_dose_gy=transition_dose_gy,
                            d0_gy=d0_gy, dq_gy=dq_gy) / a


def bed(doses, alpha_beta_gy, axis=-1, model="lq", transition_dose_gy=None, alpha=None,
        d0_gy=None, dq_gy=None):
    """Total biologically effective dose (Gy) of a schedule given its per-fraction doses.

    Parameters
    ----------
    doses : array_like
        Dose of each fraction (Gy) along ``axis``; zeros mean no fraction (e.g. a daily grid).
        Leading axes index independent schedules.
    alpha_beta_gy : array_like
        ``rho`` (Gy), ``> 0``.  This and the other model parameters broadcast against
        ``doses`` before the sum, so they may vary per fraction.
    axis : int
        Axis of ``doses`` that runs over fractions.
    model, transition_dose_gy, alpha, d0_gy, dq_gy
        As in :func:`bed_per_fraction`.

    Returns
    -------
    numpy.ndarray or numpy.float64
        BED in Gy, with ``axis`` removed.
    """
    per_fraction = bed_per_fraction(doses, alpha_beta_gy, model=model,
                                    transition_dose_gy=transition_dose_gy, alpha=alpha,
                                    d0_gy=d0_gy, dq_gy=dq_gy)
    return np.sum(per_fraction, axis=axis)


def bed_uniform(n, d, alpha_beta_gy):
    """Biologically effective dose (Gy) of ``n`` LQ fractions of ``d`` Gy, ``n d (1 + d / rho)``.

    Parameters
    ----------
    n : array_like
        Number of fractions, ``>= 0``.
    d : array_like
        Dose per fraction (Gy), ``>= 0``.
    alpha_beta_gy : array_like
        ``rho`` (Gy), ``> 0``.

    Returns
    -------
    numpy.ndarray or numpy.float64
        BED in Gy.
    """
    rho = _require_positive("alpha_beta_gy", alpha_beta_gy)
    n = _require_non_negative("n", n)
    d = _require_doses("d", d)
    return n * d * (1.0 + d / rho)


def bed_scaled_course(scale, sum_d, sum_d2, alpha_beta_gy):
    """LQ BED (Gy) of a course whose fraction doses are ``scale`` times ``d_j``, from the dose
    sums alone: ``scale * sum_d + scale^2 * sum_d2 / rho``.

    A dose-volume bin that receives ``scale`` Gy per Gy prescribed has this BED for any
    schedule with ``sum_d = sum_j d_j`` and ``sum_d2 = sum_j d_j^2`` (the plan's shape kept);
    ``scale = 1`` is :func:`bed` of the schedule itself (the Saberian ``(x, y)`` reduction).

    Parameters
    ----------
    scale : array_like
        Dose per prescribed Gy (dimensionless, ``>= 0``).
    sum_d, sum_d2 : array_like
        Sum of the prescribed fraction doses (Gy) and of their squares (Gy^2).
    alpha_beta_gy : float
        ``rho`` (Gy), ``> 0``.

    Returns
    -------
    numpy.ndarray
        BED in Gy (broadcast over the arguments).
    """
    rho = _require_positive("alpha_beta_gy", alpha_beta_gy)
    r = _as_float(scale)
    return r * _as_float(sum_d) + r * r * _as_float(sum_d2) / rho


def scale_for_bed(bed_gy, sum_d, sum_d2, alpha_beta_gy):
    """The ``scale >= 0`` at which :func:`bed_scaled_course` reaches ``bed_gy`` (Gy): the root of
    ``(sum_d2 / rho) r^2 + sum_d r - BED = 0``, written to stay exact as ``sum_d2 -> 0``;
    ``inf`` for an empty course."""
    rho = _require_positive("alpha_beta_gy", alpha_beta_gy)
    b, s1 = _as_float(bed_gy), _as_float(sum_d)
    a = _as_float(sum_d2) / rho
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s1 > 0, 2.0 * b / (s1 + np.sqrt(s1 * s1 + 4.0 * a * b)),
                        np.where(a > 0, np.sqrt(b / np.where(a > 0, a, 1.0)), np.inf))


def eqd2_from_bed(bed, alpha_beta_gy):
    """Equivalent dose in 2 Gy fractions (Gy) of a BED (Gy), ``BED / (1 + 2 / rho)``.

    Parameters
    ----------
    bed : array_like
        Biologically effective dose (Gy).
    alpha_beta_gy : array_like
        ``rho`` (Gy), ``> 0``.

    Returns
    -------
    numpy.ndarray or numpy.float64
        EQD2 in Gy.
    """
    rho = _require_positive("alpha_beta_gy", alpha_beta_gy)
    return _as_float(bed) / (1.0 + 2.0 / rho)


def bed_from_eqd2(eqd2, alpha_beta_gy):
    """Biologically effective dose (Gy) of an EQD2 (Gy), ``EQD2 (1 + 2 / rho)``.

    Parameters
    ----------
    eqd2 : array_like
        Equivalent dose in 2 Gy fractions (Gy).
    alpha_beta_gy : array_like
        ``rho`` (Gy), ``> 0``.

    Returns
    -------
    numpy.ndarray or numpy.float64
        BED in Gy.
    """
    rho = _require_positive("alpha_beta_gy", alpha_beta_gy)
    return _as_float(eqd2) * (1.0 + 2.0 / rho)


def eqd2(doses, alpha_beta_gy, axis=-1, **model_kw):
    """Total equivalent dose in 2 Gy fractions (Gy) of a schedule given its per-fraction doses.

    Each fraction's BED is converted with its own ``rho`` and the results are summed, which
    equals ``eqd2_from_bed(bed(...))`` when ``rho`` is constant and stays well defined when
    ``alpha_beta_gy`` varies along ``axis``.

    Parameters
    ----------
    doses : array_like
        Dose of each fraction (Gy) along ``axis``; zeros mean no fraction.
    alpha_beta_gy : array_like
        ``rho`` (Gy), ``> 0``, broadcast against ``doses``.
    axis : int
        Axis of ``doses`` that runs over fractions.
    **model_kw
        ``model``, ``transition_dose_gy``, ``alpha``, ``d0_gy``, ``dq_gy`` as in
        :func:`bed_per_fraction`.

    Returns
    -------
    numpy.ndarray or numpy.float64
        EQD2 in Gy, with ``axis`` removed.
    """
    per_fraction = bed_per_fraction(doses, alpha_beta_gy, **model_kw)
    return np.sum(eqd2_from_bed(per_fraction, alpha_beta_gy), axis=axis)


def dose_per_fraction_for_bed(bed, n, alpha_beta_gy):
    """Uniform dose per fraction (Gy) that gives a BED (Gy) in ``n`` LQ fractions.

    Solves ``n d (1 + d / rho) = BED`` for ``d >= 0``:
    ``d = rho / 2 (sqrt(1 + 4 BED / (n rho)) - 1)``, evaluated as the algebraically equal
    ``2 BED / n / (1 + sqrt(1 + 4 BED / (n rho)))``, which has no cancellation when
    ``BED / (n rho)`` is small (large ``rho``).

    Parameters
    ----------
    bed : array_like
        Target BED (Gy), ``>= 0``.
    n : array_like
        Number of fractions, ``> 0``.
    alpha_beta_gy : array_like
        ``rho`` (Gy), ``> 0``.

    Returns
    -------
    numpy.ndarray or numpy.float64
        Dose per fraction in Gy.
    """
    rho = _require_positive("alpha_beta_gy", alpha_beta_gy)
    n = _require_positive("n", n)
    b = _require_non_negative("bed", bed)
    per_fraction = b / n
    return 2.0 * per_fraction / (1.0 + np.sqrt(1.0 + 4.0 * per_fraction / rho))


def max_oar_dose_for_bed(bed_limit, n, alpha_beta_gy):
    """Largest uniform organ-at-risk dose per fraction (Gy) that keeps its BED within a limit (Gy).

    The same closed-form LQ inverse as :func:`dose_per_fraction_for_bed`, named for the
    constraint side: ``n d (1 + d / rho_OAR) <= bed_limit``.

    Parameters
    ----------
    bed_limit : array_like
        OAR BED limit (Gy), ``>= 0``.
    n : array_like
        Number of fractions, ``> 0``.
    alpha_beta_gy : array_like
        ``rho`` of the OAR (Gy), ``> 0``.

    Returns
    -------
    numpy.ndarray or numpy.float64
        OAR dose per fraction in Gy.
    """
    return dose_per_fraction_for_bed(bed_limit, n, alpha_beta_gy)


def oar_doses(doses, sparing_factor):
    """Organ-at-risk dose per fraction (Gy), ``sparing_factor`` times the tumour dose (Gy).

    Parameters
    ----------
    doses : array_like
        Tumour dose per fraction (Gy), ``>= 0``.
    sparing_factor : array_like
        OAR-to-tumour dose ratio (max point of a serial organ), ``>= 0``.

    Returns
    -------
    numpy.ndarray or numpy.float64
        OAR dose per fraction in Gy.
    """
    d = _require_doses("doses", doses)
    delta = _require_non_negative("sparing_factor", sparing_factor)
    return delta * d


# --------------------------------------------------------------------------- time and control


def repopulation_bed_loss(overall_days, alpha, potential_doubling_days, kickoff_days):
    """BED (Gy) lost to tumour repopulation, ``ln 2 / (alpha T_pot) * max(0, T - T_k)``.

    Withers 1988 and Thames 1990: no loss until the kick-off time ``T_k``, then a constant
    loss per day (head and neck about 0.6-1 Gy/day).

    Parameters
    ----------
    overall_days : array_like
        Overall treatment time ``T`` (days), ``>= 0``.
    alpha : array_like
        LQ alpha (1/Gy), ``> 0``.
    potential_doubling_days : array_like or None
        Potential doubling time ``T_pot`` (days), ``> 0``; ``None`` means no repopulation.
    kickoff_days : array_like or None
        Kick-off time ``T_k`` (days), ``>= 0``; ``None`` means no repopulation.

    Returns
    -------
    numpy.ndarray or numpy.float64
        BED loss in Gy (``>= 0``).
    """
    gain = repopulation_log_gain(overall_days, potential_doubling_days, kickoff_days)
    if potential_doubling_days is None or kickoff_days is None:
        # Keep the broadcast shape of the computed case, so callers see one shape either way.
        return gain * np.ones(np.shape(alpha))
    return gain / _require_positive("alpha", alpha)


def repopulation_log_gain(overall_days, potential_doubling_days, kickoff_days):
    """Natural-log gain in clonogen number (dimensionless) from repopulation over ``T`` days.

    ``ln 2 / T_pot * max(0, T - T_k)``; multiply the surviving fraction by its exponential.

    Parameters
    ----------
    overall_days : array_like
        Overall treatment time ``T`` (days), ``>= 0``.
    potential_doubling_days : array_like or None
        ``T_pot`` (days), ``> 0``; ``None`` means no repopulation (gain 0).
    kickoff_days : array_like or None
        ``T_k`` (days), ``>= 0``; ``None`` means no repopulation (gain 0).

    Returns
    -------
    numpy.ndarray or numpy.float64
        ``ln`` of the clonogen gain factor (``>= 0``).
    """
    t = _require_non_negative("overall_days", overall_days)
    if potential_doubling_days is None or kickoff_days is None:
        return np.zeros_like(t)
    t_pot = _require_positive("potential_doubling_days", potential_doubling_days)
    t_k = _require_non_negative("kickoff_days", kickoff_days)
    return np.log(2.0) / t_pot * np.maximum(0.0, t - t_k)


def overall_days(doses, axis=-1):
    """Overall treatment time (days) from the first to the last fraction of a daily dose array.

    Parameters
    ----------
    doses : array_like
        Dose on each day (Gy) along ``axis``, index = day; nonzero entries are fractions.
        Leading axes index independent schedules.
    axis : int
        Axis of ``doses`` that runs over days.

    Returns
    -------
    numpy.ndarray or numpy.int64
        Days between the first and last nonzero entry; 0 for one fraction or none.
    """
    given = np.moveaxis(np.asarray(doses) != 0, axis, -1)
    n_days = given.shape[-1]
    if n_days == 0:
        return np.zeros(given.shape[:-1], dtype=np.int64)[()]
    first = np.argmax(given, axis=-1)
    last = n_days - 1 - np.argmax(given[..., ::-1], axis=-1)
    # argmax of an all-False row is 0 and would give n_days - 1; such rows have no fractions.
    return np.where(np.any(given, axis=-1), last - first, 0).astype(np.int64)[()]


def poisson_tcp(clonogens, log_survival):
    """Poisson tumour control probability (dimensionless), ``exp(-N0 exp(ln S))``.

    Evaluated as ``exp(-exp(ln N0 + ln S))`` so that very negative ``ln S`` (heavy kill) and
    large ``N0`` neither underflow ``S`` to 0 first nor overflow with a warning.

    Parameters
    ----------
    clonogens : array_like
        Initial clonogen number ``N0``, ``>= 0`` (typically 1e7-1e9).
    log_survival : array_like
        Natural log of the overall surviving fraction, including any NK and repopulation
        factors (may exceed 0 when repopulation outweighs kill).

    Returns
    -------
    numpy.ndarray or numpy.float64
        TCP in [0, 1].
    """
    n0 = _require_non_negative("clonogens", clonogens)
    log_s = _as_float(log_survival)
    with np.errstate(divide="ignore"):
        # ln 0 = -inf is intended: no clonogens means certain control.
        exponent = np.log(n0) + log_s
    # below -40, exp(-exp(x)) is 1.0 in double precision; clipping there also keeps exp()
    # out of denormal numbers, which are very slow on common processors
    return np.exp(-np.exp(np.clip(exponent, -40.0, _MAX_EXPONENT)))


POPULATION_Z = np.linspace(-5.0, 5.0, 41)
"""Standard-normal nodes at which survival is evaluated for population tumour control."""
_FINE_Z = np.linspace(-5.0, 5.0, 401)
_FINE_W = np.exp(-0.5 * _FINE_Z ** 2)
_FINE_W[[0, -1]] *= 0.5
_FINE_W /= _FINE_W.sum()


def _interp_matrix() -> np.ndarray:
    # linear interpolation from the nodes to the fine grid, as one (41, 401) matrix
    nz = POPULATION_Z.size
    pos = (_FINE_Z - POPULATION_Z[0]) / (POPULATION_Z[1] - POPULATION_Z[0])
    lo = np.minimum(np.floor(pos).astype(int), nz - 2)
    frac = pos - lo
    m = np.zeros((nz, _FINE_Z.size))
    m[lo, np.arange(_FINE_Z.size)] = 1.0 - frac
    m[lo + 1, np.arange(_FINE_Z.size)] += frac
    return m


_INTERP = _interp_matrix()
FINE_WEIGHTS = _FINE_W
"""Normal trapezoid weights of the fine grid of :func:`population_tcp` (sum 1)."""


def fine_grid_interpolation() -> tuple[np.ndarray, np.ndarray]:
    """``(lo, frac)``: each fine-grid point of :func:`population_tcp` lies between nodes
    ``lo`` and ``lo + 1`` at fraction ``frac`` (for compiled versions of the same rule)."""
    nz = POPULATION_Z.size
    pos = (_FINE_Z - POPULATION_Z[0]) / (POPULATION_Z[1] - POPULATION_Z[0])
    lo = np.minimum(np.floor(pos).astype(np.int64), nz - 2)
    return lo, pos - lo


def population_alphas(alpha_mean, alpha_sd):
    """Alpha values (1/Gy) of the population nodes :data:`POPULATION_Z`, truncated at 0.

    ``alpha_mean`` and ``alpha_sd`` broadcast; the node axis is appended last.
    """
    a = np.asarray(alpha_mean, dtype=float)[..., None]
    s = np.asarray(alpha_sd, dtype=float)[..., None]
    return np.maximum(a + s * POPULATION_Z, 0.0)


def population_tcp(clonogens, log_survival_nodes):
    """Population tumour control: Poisson TCP averaged over a normal spread of alpha.

    ``LC = E_alpha[exp(-N0 S(alpha))]`` with alpha ~ normal (Webb & Nahum 1993, Phys Med Biol),
    truncated at 0.  ``ln S`` is given at the nodes :data:`POPULATION_Z` (last axis, from
    :func:`population_alphas`); it is smooth in alpha (a log-sum of terms affine in alpha), so
    it is interpolated linearly onto a fine grid of 401 points on [-5, 5] sd (spacing 0.025 sd;
    the per-patient TCP falls from 0.9 to 0.1 over >= 0.15 sd for clinical spreads), where the
    steep per-patient TCP is averaged by the trapezoid rule with normal weights.  The mass beyond
    5 sd (6e-7) is ignored.

    Parameters
    ----------
    clonogens : array_like
        ``N0`` (broadcast against the leading axes).
    log_survival_nodes : array_like, shape (..., 41)
        Natural log of the surviving fraction at each node.

    Returns
    -------
    numpy.ndarray
        Local control in [0, 1], shape ``(...)``.
    """
    ln_s = _as_float(log_survival_nodes)
    nz = POPULATION_Z.size
    if ln_s.shape[-1] != nz:
        raise ValueError(f"log_survival_nodes needs {nz} nodes on its last axis")
    n0 = _require_non_negative("clonogens", clonogens)
    with np.errstate(divide="ignore"):
        x = ln_s @ _INTERP + np.log(n0)[..., None]
    # poisson_tcp in place (these arrays are large): exp(-exp(x)), x clipped as there
    np.clip(x, -40.0, _MAX_EXPONENT, out=x)
    np.exp(x, out=x)
    np.negative(x, out=x)
    np.exp(x, out=x)
    return np.minimum(x @ _FINE_W, 1.0)  # the weights sum to 1 only to round-off
