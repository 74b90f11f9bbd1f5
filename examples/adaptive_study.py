"""The value of adapting: virtual patients re-planned from a week-1 FMISO observation vs. not.

Every virtual patient starts the nominal optimum of the lung instance.  Each patient's true
parameters are an independent draw from the instance's distributions (`rtopt model params`);
after two fractions, on the day of the third, the FMISO hypoxic fraction is observed with
Gaussian noise (sd 0.04).  The course is either continued as planned or re-planned
(`rtopt.update` on a pool of prior samples, then `rtopt.replan`).  Both whole courses are
verified against the instance with the patient's true parameters (`Problem.verify`) and scored
by the instance's objective at those parameters; the gain is adaptive minus nominal, with a
95 % bootstrap (BCa) interval over patients (`rtopt.decisions.adaptive.adaptive_study`).  A third arm
re-plans the remaining course without the observation: adaptive minus that is what the
observation itself is worth.

The re-plan can only change what the instance lets it change: with `uniform_dose = true` the
remaining fractions keep the delivered dose.  The default study therefore lets the dose of the
remaining fractions change (`uniform_dose = false`, 1 Gy grid) and scores tumour log10 kill,
the quantity residual hypoxia acts on; pass `--as-is` for the instance unchanged (there the
re-plan changes the plan of few patients, 8 % at the default seed, and gains almost nothing:
the FMISO observation informs the reoxygenation parameters, and the NK objective barely
depends on them).

Run (a few seconds to ~15 s for the default 50 patients on a 2-core machine):

    python examples/adaptive_study.py [--patients 50] [--seed 0] [--as-is]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtopt.decisions.adaptive import adaptive_study  # noqa: E402

STUDY_OVERRIDES = {"fractionation": {"uniform_dose": False, "dose_step_gy": 1.0},
                   "objective": {"maximise": "tumour_log_kill"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior-samples", type=int, default=500)
    ap.add_argument("--as-is", action="store_true", help="the instance unchanged")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()

    def progress(i: int, n: int) -> None:
        print(f"\rpatient {i}/{n}", end="", file=sys.stderr, flush=True)

    r = adaptive_study(ROOT / "instances" / "lung-sbrt-peripheral.toml", a.patients,
                       prior_samples=a.prior_samples, seed=a.seed, progress=progress,
                       overrides=None if a.as_is else STUDY_OVERRIDES)
    print(file=sys.stderr)
    d = r.to_dict()
    if a.json:
        print(json.dumps(d, indent=2))
        return
    lo, hi = d["gain_ci95"]
    print(f"{d['instance']} ({'as is' if a.as_is else 'per-fraction doses, 1 Gy grid'}), "
          f"objective {d['objective']}")
    print(f"nominal plan: {d['nominal_plan']}; observation: {d['observation']}")
    print(f"{d['patients']} virtual patients, seed {a.seed}, {a.prior_samples} prior samples")
    print(f"mean objective: adaptive {d['mean_objective_adaptive']:.4f}, "
          f"not adapted {d['mean_objective_nominal']:.4f}")
    print(f"gain of adapting: {d['mean_gain']:+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}); "
          f"re-planned differently {d['share_replanned_differently']:.0%}, better for "
          f"{d['share_improved']:.0%}, worse for {d['share_worse']:.0%} of patients")
    ilo, ihi = d["information_gain_ci95"]
    print(f"re-planned without the observation: {d['blind_replan']}, mean objective "
          f"{d['mean_objective_blind_replan']:.4f}")
    print(f"gain of the observation itself (adaptive minus that): "
          f"{d['mean_information_gain']:+.4f} (95 % CI {ilo:+.4f} to {ihi:+.4f})")
    print(f"every plan verified against the instance at the patient's true parameters; "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
