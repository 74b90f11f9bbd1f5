"""From a plan's DICOM files to a verified fractionation schedule with NTCP.

The whole path of issue 19 on the synthetic lung phantom (instances/patients/lung-phantom):

1. read the RT Dose and RT Structure Set and compute the DVHs (`rtopt.dose.dicom`);
2. look at the plan as delivered (54 Gy in 3 fractions): DVH metrics in EQD2 and NTCP;
3. load the instance `instances/lung-phantom-dvh.toml`, which names those structures as its
   organs at risk with TG-101-style DVH limits and a pneumonitis NTCP limit;
4. solve it (exhaustive back-end), every plan re-verified by `Problem.verify`;
5. print the schedule, the binding limits, each organ's EQD2 metrics and NTCP, and how the
   plan's blood dose set the model's `nk_blood_dose_fraction`.

Run (10-40 s on a 2-core machine; reading the DICOM DVHs is most of it):

    python examples/dicom_to_schedule.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtopt.dose.dicom import compute_dvhs  # noqa: E402
from rtopt.dose.dvh import evaluate_metric  # noqa: E402
from rtopt.dose.ntcp import ntcp  # noqa: E402
from rtopt.planning.solve import solve  # noqa: E402
from rtopt.problem.problem import Problem  # noqa: E402

PHANTOM = ROOT / "instances" / "patients" / "lung-phantom"
INSTANCE = ROOT / "instances" / "lung-phantom-dvh.toml"


def main() -> int:
    # 1-2. the plan as delivered: 54 Gy in 3 fractions
    plan = compute_dvhs(PHANTOM / "RTDOSE.dcm", PHANTOM / "RTSTRUCT.dcm",
                        ["PTV", "LUNG_R", "CHESTWALL_R"], n_fractions=3, sampling_mm=1.0)
    dvh = {h.name: h for h in plan.dvhs}
    print("The phantom plan as delivered (54 Gy / 3 fx):")
    print(f"  PTV     D95% {evaluate_metric(dvh['PTV'], 'D95%'):.2f} Gy, "
          f"BED10 D95% {evaluate_metric(dvh['PTV'], 'BED_D95%', 10.0):.1f} Gy")
    print(f"  LUNG_R  V20Gy {evaluate_metric(dvh['LUNG_R'], 'V20Gy%'):.1f} %, "
          f"EQD2(3) Dmean {evaluate_metric(dvh['LUNG_R'], 'EQD2_Dmean', 3.0):.2f} Gy, "
          f"NTCP pneumonitis (LKB) {100 * ntcp(dvh['LUNG_R'], 'pneumonitis_lkb_seppenwoolde'):.1f} %")
    print(f"  CHESTWALL_R  Dmax {evaluate_metric(dvh['CHESTWALL_R'], 'Dmax'):.2f} Gy")

    # 3-4. the instance with DVH organs, solved and verified
    problem = Problem.from_path(INSTANCE)
    print(f"\nInstance {problem.name}: {len(problem.dvh.limits)} DVH limits, NTCP terms "
          f"{', '.join('ntcp:' + t.label for t in problem.dvh.ntcps)}; plan prescription "
          f"{problem.dvh.prescription:g} Gy x {problem.dvh.plan_fractions} (the shape is kept)")
    for n in (1, 3, 5, 8):
        d = problem.max_uniform_dose(n)
        print(f"  {n} fraction(s): at most {d:.2f} Gy per fraction, set by "
              f"{problem.binding_oar(n) or 'the dose range'}")
    result = solve(problem, "exhaustive", time_limit_s=120)
    print(f"\nsolve: {result.status}, verified {result.verified}; plan {result.plan.describe()}")
    print(f"  objective {result.objective_name} = {result.objective:.4f}")

    # 5. per-organ metrics, NTCP, binding limits, blood dose
    summary = result.dvh
    print("  organ            EQD2 Dmax   EQD2 D2cc  EQD2 Dmean (Gy)")
    for o in summary["organs"]:
        print(f"  {o['name']:<16} {o['eqd2_dmax_gy']:>9.3f} {o['eqd2_d2cc_gy']:>11.3f} "
              f"{o['eqd2_dmean_gy']:>11.3f}")
    for x in summary["ntcp"]:
        print(f"  NTCP {x['name']} ({x['organ']}): {100 * x['probability']:.3g} %")
    tightest = sorted((c for c in result.constraints if c.kind == "limit"),
                      key=lambda c: c.slack / max(1.0, abs(c.limit)))[:3]
    print("  tightest limits: " + "; ".join(f"{c.name} {c.value:.4g} {c.sense} {c.limit:g}"
                                           for c in tightest))
    print(f"  circulating blood: {summary['blood_dose_per_fraction_gy']:.4f} Gy per fraction; "
          f"nk_blood_dose_fraction = {problem.biology.params.nk_blood_dose_fraction:.5f} "
          "(model default 0.02)")
    return 0 if result.feasible and result.verified else 1


if __name__ == "__main__":
    raise SystemExit(main())
