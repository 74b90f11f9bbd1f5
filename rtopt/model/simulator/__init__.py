"""Simulators of the TME surrogate: a fast vectorised one and a plain reference (``solve_ivp``).

State (docs/model.md), all relative to pre-treatment or to one standard NK infusion:

======  ==========================================================================
``w``   oxygen demand (1 at baseline); each fraction ``w <- w (1 - m(d))``, relaxes to 1
``v``   vascular function (1 at baseline); ``v <- v (1 - V(d))``, relaxes to 1
``P``   chemokine precursor; a fraction adds ``A(d) norm``; ``dP/dt = -k_rise P``
``C``   chemokine signal; ``dC/dt = k_rise P - k_decay C``
``B``   NK cells in blood; an infusion adds 1; ``dB/dt = -(k_cl + k_in) B``
``T``   NK cells in the tumour; ``dT/dt = k_in B - k_out T``,
        ``k_in = k0 v (1 + g C / (C50 + C))`` (perfusion and saturating recruitment)
``G``   the patient's own circulating NK cells (1 at baseline); ``dG/dt = k_e (1 - G)``
``Te``  the patient's own NK cells in the tumour (standard-infusion units);
        ``dTe/dt = k_in n_e G - k_e Te``, at steady state before treatment
======  ==========================================================================

NK favourability integrates the activity of both ``T`` and ``Te``; tumour outcomes use the
infused cells' (docs/model.md section 13).

FMISO hypoxic fraction ``h = min(h_max, h0 (w/v)^gamma)``; NK activity
``E = kappa (1 - treg) T (1 - eta h)`` (hypoxia suppresses NK killing).  At a fraction of ``d``
Gy on day ``j`` (time ``t = j``, before any infusion that day) in-field NK cells die,
``T <- T exp(-d / D0)``, and blood NK receive ``f_blood d``.

Tumour control (:func:`tumour_outcomes`, shared by every simulator and by :class:`InfusionKernels`):
each fraction kills clonogens in three compartments, oxic, intermediately hypoxic (OER
``oer_intermediate``) and anoxic (OER ``oer``), whose shares follow from the FMISO fraction
(:func:`rtopt.model.surrogate.clonogen_hypoxic_shares`); survivors redistribute between fractions.
Alpha is raised by the NK activity present over the day before the fraction,
``alpha (1 + s E_prev / (E50 + E_prev))``.  NK cells kill clonogens by mass action
(``dN/dt = -c E N``, so ``ln S -= c * integral(E dt)``); repopulation adds
``ln 2 / T_pot * max(0, T - T_k)``.  Per-patient Poisson TCP uses the nominal alpha; local
control averages it over a normal spread of alpha (:func:`rtopt.model.radiobiology.population_tcp`).
The same plan without NK cells (no radiosensitisation, no NK kill; hypoxia does not depend on
NK cells) gives the NK-attributable gains.

:func:`simulate` evaluates many schedules at once (rows of a ``(N, days)`` dose matrix) and
broadcasts array-valued parameters (parameter samples) along the same rows.  The jumps of every
state at every fraction are computed first, for the whole dose matrix, by the numpy functions of
:mod:`rtopt.model.surrogate` (through :func:`apply_fraction`); one compiled kernel (numba, parallel
over schedules) then runs the whole horizon of each schedule: the jumps on fraction days,
infusions, and between them sub-steps exact for ``w, v, P, C``, with ``B, T`` exact for the
trafficking rate frozen at the chemokine and perfusion of each sub-step's midpoint (second
order); the activity and hypoxia integrals use the trapezoid rule; ``steps_per_day`` sets the
sub-step.  :func:`simulate_reference` integrates the same equations
with ``scipy.integrate.solve_ivp`` one schedule at a time; the tests hold the two together.

Where things live (one role per file; imports run down this list, never up):

==================  =========================================================================
``biology.py``      :class:`Biology` (the inputs) and :class:`Simulation` (the outputs)
``kernels.py``      the numba-compiled kernels and their pure-Python twins
``outcomes.py``     tumour outcomes from the fractions (ln S, NK kill, repopulation, TCP)
``reference.py``    the plain statement of the equations (jumps, activity, right-hand side)
                    and :func:`simulate_reference`
``batch.py``        the fast batch API: :func:`simulate`, :func:`infusion_kernels`,
                    :func:`compile_kernels`
==================  =========================================================================
"""

from rtopt.model.simulator.batch import (
    InfusionKernels, compile_kernels, infusion_kernels, simulate)
from rtopt.model.simulator.biology import (
    STATE_NAMES, STEPS_PER_DAY, TRAJECTORY_STEPS_PER_DAY, Biology, Simulation)
from rtopt.model.simulator.outcomes import (
    compact_fractions, fraction_log_survival, population_tcp, tumour_outcomes)
from rtopt.model.simulator.reference import (  # noqa: E402
    apply_fraction, endogenous_active, endogenous_activity, endogenous_start, nk_activity,
    simulate_reference)

__all__ = ["Biology", "Simulation", "simulate", "simulate_reference", "STATE_NAMES",
           "fraction_log_survival",
           "InfusionKernels", "infusion_kernels",
           "STEPS_PER_DAY", "TRAJECTORY_STEPS_PER_DAY", "compile_kernels", "population_tcp",
           "tumour_outcomes", "compact_fractions", "apply_fraction", "nk_activity",
           "endogenous_active", "endogenous_activity", "endogenous_start"]
