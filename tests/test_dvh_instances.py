"""Organs at risk as DVHs of a plan (issue 19, phase 2): the schedule engine, instances, limits,
NTCP objectives, blood dose, back-end declines and one-line errors.

Fast tests use DVH text exports written to tmp_path; the DICOM phantom instance is @slow
(reading its DVHs takes 10-30 s on this machine).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from rtopt.common.errors import InstanceError, RtoptError
from rtopt.dose.dvh import DVH, evaluate_metric
from rtopt.dose.ntcp import ntcp, parameter_sets
from rtopt.dose.schedule import ScheduleDVH
from rtopt.model import radiobiology as rb
from rtopt.problem.instance import load_instance
from rtopt.problem.problem import Plan, Problem

ROOT = Path(__file__).resolve().parents[1]
PRESCRIPTION = 18.0
PLAN_FX = 3


def _lungish(seed: int = 1) -> DVH:
    rng = np.random.default_rng(seed)
    doses = rng.gamma(1.2, 8.0, 20000) * (rng.random(20000) < 0.7)
    return DVH.from_samples("lung", doses, 0.05, n_fractions=PLAN_FX)


# ---------------------------------------------------------------------- the schedule engine
@pytest.mark.parametrize("n,d", [(3, 18.0), (5, 11.0), (8, 7.5), (1, 30.0)])
def test_schedule_metrics_equal_rescaled_dvh(n, d):
    # Uniform schedules: ScheduleDVH (from sum d, sum d^2) equals DVH.rescaled + evaluate_metric.
    # Tolerance 1e-9 relative: the two paths differ only in the order of float operations.
    h = _lungish()
    sd = ScheduleDVH(h, PRESCRIPTION)
    s1, s2 = np.array([n * d]), np.array([n * d * d])
    hr = h.rescaled(d, PRESCRIPTION, n)
    for m in ("EQD2_Dmax", "EQD2_D2cc", "BED_D95%", "EQD2_Dmean", "EQD2_V20Gy", "CV13.5Gy",
              "V20Gy%", "D0.1cc", "Dmean"):
        frac = None if m.startswith(("EQD2", "BED")) else n
        got = float(sd.metric(m, s1, s2, 3.0, fractions=frac)[0])
        want = evaluate_metric(hr, m, 3.0)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), m
    for name in parameter_sets():
        assert float(sd.ntcp(name, s1, s2)[0]) == pytest.approx(ntcp(hr, name), rel=1e-9,
                                                                abs=1e-12), name


def test_schedule_metrics_depend_on_sums_only():
    # Two schedules with equal sum d and sum d^2 (a permutation) give identical metrics.
    sd = ScheduleDVH(_lungish(), PRESCRIPTION)
    a, b = np.array([10.0, 12.0, 14.0]), np.array([14.0, 10.0, 12.0])
    for m in ("EQD2_D2cc", "EQD2_V20Gy", "EQD2_Dmean"):
        va = sd.metric(m, [a.sum()], [(a * a).sum()], 3.0)
        vb = sd.metric(m, [b.sum()], [(b * b).sum()], 3.0)
        assert va[0] == vb[0]


def test_ntcp_monotone_in_dose():
    # Every shipped NTCP set increases with the dose per fraction (strictly where it is not
    # saturated at 0 or 1 in floating point).
    sd = ScheduleDVH(_lungish(), PRESCRIPTION)
    d = np.linspace(2.0, 30.0, 29)
    for n in (1, 3, 8):
        for name in parameter_sets():
            p = sd.ntcp(name, n * d, n * d * d)
            assert np.all(np.diff(p) >= 0), (name, n)
            inner = (p[:-1] > 1e-12) & (p[:-1] < 1 - 1e-12)
            assert np.all(np.diff(p)[inner] > 0), (name, n)


# ---------------------------------------------------------------------- instances
def _write_export(folder: Path, structures: dict[str, tuple[list[float], list[float]]]) -> Path:
    lines = ["structure,dose_gy,volume_cc,type"]
    for name, (doses, cum) in structures.items():
        lines += [f"{name},{float(d)!r},{float(v)!r},cumulative" for d, v in zip(doses, cum)]
    path = folder / "plan_dvh.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _base_instance() -> dict:
    data = tomllib.loads((ROOT / "instances" / "classic-two-oar.toml").read_text())
    data["name"] = "dvh-test"
    return data


def _uniform_export(folder: Path, sparing_factor: float, width_gy: float = 1e-6) -> Path:
    # All 50 cm^3 in one bin whose upper edge is exactly sparing_factor x the plan dose, so
    # Dmax (the upper edge of the highest non-empty bin) is the sparing-factor dose.
    top = sparing_factor * PRESCRIPTION * PLAN_FX
    return _write_export(folder, {"Organ": ([0.0, top - width_gy, top], [50.0, 50.0, 0.0]),
                                  "PTV": ([0.0, 53.9, 54.0], [10.0, 10.0, 0.0])})


def _dvh_plan(export: str = "plan_dvh.csv", **kw) -> dict:
    return {"export": export, "prescription_dose_per_fraction_gy": PRESCRIPTION,
            "fractions": PLAN_FX, **kw}


def _save(folder: Path, data: dict) -> Path:
    path = folder / "instance.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_uniform_dvh_reproduces_sparing_factor(tmp_path):
    # Known answer: an organ whose DVH is one narrow bin at sf x the prescription behaves like
    # the sparing-factor organ: same BED for any (non-uniform) schedule, same largest uniform
    # dose, same optimum.
    base = _base_instance()
    oar = base["organ_at_risk"][0]
    sf, ab, limit = oar["sparing_factor"], oar["alpha_beta_gy"], oar.get("max_bed_gy")
    assert limit is not None
    _uniform_export(tmp_path, sf)
    dvh = _base_instance()
    dvh["organ_at_risk"][0] = {"name": oar["name"], "alpha_beta_gy": ab,
                               "dvh_structure": "Organ",
                               "dvh_limit": [{"metric": "BED_Dmax", "max_gy": limit}]}
    dvh["dvh_plan"] = _dvh_plan()
    p_sf = Problem(load_instance(_save_sf(tmp_path, base)))
    p_dvh = Problem(load_instance(_save(tmp_path, dvh)))
    rng = np.random.default_rng(0)
    D = np.zeros((200, p_sf.horizon_days))
    for row in D:
        days = rng.choice(p_sf.allowed_days, size=rng.integers(1, 6), replace=False)
        row[days] = rng.uniform(1.0, 20.0, size=days.size)
    bed_sf = p_sf.evaluate(D, simulate_tme=False).metrics[f"oar.{oar['name']}.bed_gy"]
    bed_dvh = p_dvh.evaluate(D, simulate_tme=False).metrics[
        f"oar.{oar['name']}.dvh.BED_Dmax"]
    # 1e-9 relative: the same LQ sum in a different order of operations
    np.testing.assert_allclose(bed_dvh, bed_sf, rtol=1e-9)
    for n in range(p_sf.n_min, min(p_sf.n_max, 10) + 1):
        # bisection to 1e-9 Gy on limits accepted within 1e-9 relative (a BED of 50 Gy may be
        # exceeded by 5e-8 Gy, about 1e-8 Gy of dose): 1e-7 Gy covers both
        assert p_dvh.max_uniform_dose(n) == pytest.approx(p_sf.max_uniform_dose(n), abs=1e-7)
    from rtopt.planning.solve import solve

    a, b = solve(p_sf, "exhaustive", time_limit_s=60), solve(p_dvh, "exhaustive",
                                                              time_limit_s=60)
    assert a.feasible and b.feasible and b.verified
    assert b.objective == pytest.approx(a.objective, rel=1e-9)


def _save_sf(folder: Path, data: dict) -> Path:
    path = folder / "sf.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _lung_instance(tmp_path: Path, limit: dict, min_bed_gy: float | None = None) -> Problem:
    h = _lungish()
    cum = h.cumulative_cc()
    _write_export(tmp_path, {"Lung": (list(h.edges_gy), list(cum)),
                             "PTV": ([0.0, 53.9, 54.0], [10.0, 10.0, 0.0])})
    data = _base_instance()
    data["organ_at_risk"] = [{"name": "lung", "alpha_beta_gy": 3.0, "dvh_structure": "Lung",
                              "dvh_limit": [limit]}]
    data["dvh_plan"] = _dvh_plan(target_structure="PTV")
    if min_bed_gy is not None:
        data["prescription"] = {"min_bed_gy": min_bed_gy}
    return Problem(load_instance(_save(tmp_path, data)))


def test_dvh_limit_at_the_boundary(tmp_path):
    # A V20Gy limit equal to the value of 3 x 18 Gy: that plan meets it exactly (slack 0 within
    # FEAS_TOL), 0.1 % less volume breaks it, and the largest uniform 3-fraction dose is 18 Gy.
    probe = _lung_instance(tmp_path, {"metric": "V20Gy", "fractions": 3, "max_cc": 1e4})
    plan = Plan.uniform((0, 2, 4), 18.0)
    v = probe.verify(plan).metrics["oar.lung.dvh.V20Gy@3fx"]
    at = _lung_instance(tmp_path, {"metric": "V20Gy", "fractions": 3, "max_cc": v})
    check = {c.name: c for c in at.verify(plan).checks}["oar.lung.dvh.V20Gy@3fx"]
    assert check.ok and abs(check.slack) < 1e-9
    assert at.max_uniform_dose(3) == pytest.approx(18.0, abs=1e-6)
    below = _lung_instance(tmp_path, {"metric": "V20Gy", "fractions": 3, "max_cc": v * 0.999})
    check = {c.name: c for c in below.verify(plan).checks}["oar.lung.dvh.V20Gy@3fx"]
    assert not check.ok
    assert below.binding_oar(3) == "oar.lung.dvh.V20Gy@3fx"


def test_physical_limit_in_other_fraction_counts_is_isoeffective(tmp_path):
    # "Dmax <= L Gy in 3 fx" allows, in 5 fractions, the Dmax whose BED equals that of L in 3.
    p = _lung_instance(tmp_path, {"metric": "Dmax", "fractions": 3, "max_gy": 30.0})
    r_max = p.dvh.shapes[p.dvh.structures.index("Lung")].equivalent_sparing_factor("Dmax")
    bed_limit = float(rb.bed_uniform(3, 10.0, 3.0))
    d5 = float(rb.max_oar_dose_for_bed(bed_limit, 5, 3.0)) / r_max
    assert p.max_uniform_dose(5) == pytest.approx(d5, rel=1e-8)


def test_ntcp_limit_and_pareto_objective(tmp_path):
    from rtopt.decisions.pareto import parse_objectives

    h = _lungish()
    _write_export(tmp_path, {"Lung": (list(h.edges_gy), list(h.cumulative_cc()))})
    data = _base_instance()
    data["organ_at_risk"] = [{"name": "lung", "alpha_beta_gy": 3.0, "dvh_structure": "Lung",
                              "ntcp": [{"name": "pneumonitis",
                                        "parameter_set": "pneumonitis_lkb_seppenwoolde",
                                        "max_percent": 10.0}]}]
    data["dvh_plan"] = _dvh_plan()
    p = Problem(load_instance(_save(tmp_path, data)))
    for n in (1, 3, 5):
        d = p.max_uniform_dose(n)
        ev = p.evaluate_plans([Plan.uniform(range(0, 2 * n, 2), d)], simulate_tme=False)
        # at the largest allowed dose the NTCP limit is active (bisection to 1e-9 Gy)
        assert 100 * ev.metrics["ntcp.lung.pneumonitis"][0] == pytest.approx(10.0, abs=1e-5)
    obj = parse_objectives("tumour_bed,ntcp:pneumonitis", p)
    assert obj[1].metric == "ntcp.lung.pneumonitis" and not obj[1].maximise
    with pytest.raises(RtoptError, match="did you mean 'ntcp:pneumonitis'"):
        parse_objectives("tumour_bed,ntcp:pneumonitsi", p)


def test_backends_decline_dvh_limits_with_a_reason(tmp_path):
    from rtopt.backends import get_backend

    p = _lung_instance(tmp_path, {"metric": "EQD2_Dmean", "max_gy": 20.0})
    accepted = {"exhaustive", "scipy_de"}
    for name in ("exhaustive", "scipy_de", "scipy_milp", "pyomo_milp", "cvxpy_convex",
                 "cvxpy_ccp"):
        ok, why = get_backend(name)().check(p)
        if name in accepted:
            assert ok, (name, why)
        else:
            assert not ok and why, name
    ok, why = get_backend("scipy_milp")().check(p)
    assert "DVH limits are not in the algebraic model" in why


def test_blood_dose_sets_the_model_parameter(tmp_path):
    from rtopt.dose.blood import blood_dose_per_fraction

    h = _lungish()
    _write_export(tmp_path, {"Lung": (list(h.edges_gy), list(h.cumulative_cc())),
                             "BODY": ([0.0, 1.0, 6.0], [5000.0, 400.0, 0.0])})
    data = _base_instance()
    data["organ_at_risk"] = [{"name": "lung", "alpha_beta_gy": 3.0, "dvh_structure": "Lung",
                              "dvh_limit": [{"metric": "EQD2_Dmean", "max_gy": 30.0}]}]
    blood = {"structure": "BODY", "region_blood_volume_l": 0.4,
             "flow_fraction_of_cardiac_output": 1.0, "beam_on_time_s": 180.0}
    data["dvh_plan"] = _dvh_plan(blood=blood)
    p = Problem(load_instance(_save(tmp_path, data)))
    body = p.dvh.shapes[p.dvh.structures.index("BODY")].dvh
    want = blood_dose_per_fraction(body, n_fractions=PLAN_FX, beam_on_time_s=180.0,
                                   region_blood_volume_l=0.4,
                                   flow_fraction_of_cardiac_output=1.0) / PRESCRIPTION
    assert p.biology.params.nk_blood_dose_fraction == pytest.approx(want, rel=1e-12)
    from rtopt.model.uncertainty import distributions_for

    dist = distributions_for(p)["nk_blood_dose_fraction"]  # draws centre on the plan's value
    assert dist.value == pytest.approx(want, rel=1e-12) and dist.low < want < dist.high
    m = p.verify(Plan.uniform((0, 1, 2), 9.0)).metrics
    # the mean dose to blood per fraction scales with the dose per fraction (energy balance)
    assert m["blood_dose_per_fraction_gy"] == pytest.approx(want * 9.0, rel=1e-12)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("mutate,path,message", [
    (lambda d: d["organ_at_risk"][0].update(dvh_structure="lung"),
     "organ_at_risk[0].dvh_structure", "structure 'lung' is not in"),
    (lambda d: d["dvh_plan"].update(export="missing.csv"), "dvh_plan.export",
     "file not found"),
    (lambda d: d["organ_at_risk"][0]["dvh_limit"][0].update(metric="V20Gy"),
     "organ_at_risk[0].dvh_limit[0].max_gy", "metric 'V20Gy' is in cc; use max_cc"),
    (lambda d: d["organ_at_risk"][0]["dvh_limit"][0].pop("fractions"),
     "organ_at_risk[0].dvh_limit[0].fractions", "required for the physical-dose metric"),
    (lambda d: d["organ_at_risk"][0]["dvh_limit"][0].update(metric="D2ccc"),
     "organ_at_risk[0].dvh_limit[0].metric", "not understood"),
    (lambda d: d["organ_at_risk"][0].update(ntcp=[{"name": "p", "parameter_set": "pneumonitis"}]),
     "organ_at_risk[0].ntcp[0].parameter_set", "unknown NTCP parameter set"),
    (lambda d: d.pop("dvh_plan"), "organ_at_risk[0].dvh_structure", "needs a [dvh_plan]"),
    (lambda d: d["organ_at_risk"][0].update(sparing_factor=0.5), "organ_at_risk[0].sparing_factor",
     "not both"),
])
def test_bad_input_one_problem_named(tmp_path, mutate, path, message):
    h = _lungish()
    _write_export(tmp_path, {"Lung": (list(h.edges_gy), list(h.cumulative_cc()))})
    data = _base_instance()
    data["organ_at_risk"] = [{"name": "lung", "alpha_beta_gy": 3.0, "dvh_structure": "Lung",
                              "dvh_limit": [{"metric": "Dmax", "fractions": 3, "max_gy": 30.0}]}]
    data["dvh_plan"] = _dvh_plan()
    mutate(data)
    with pytest.raises(InstanceError) as exc:
        load_instance(_save(tmp_path, data))
    problems = exc.value.problems
    assert any(p == path and message in m for p, m in problems), problems


def test_unknown_structure_did_you_mean(tmp_path):
    h = _lungish()
    _write_export(tmp_path, {"LUNG_R": (list(h.edges_gy), list(h.cumulative_cc()))})
    data = _base_instance()
    data["organ_at_risk"] = [{"name": "lung", "alpha_beta_gy": 3.0, "dvh_structure": "LUNG-R",
                              "dvh_limit": [{"metric": "EQD2_Dmean", "max_gy": 20.0}]}]
    data["dvh_plan"] = _dvh_plan()
    with pytest.raises(InstanceError) as exc:
        load_instance(_save(tmp_path, data))
    assert "did you mean 'LUNG_R'?" in exc.value.problems[0][1]


def test_cli_bad_dvh_instance_one_line_exit_1(tmp_path):
    from typer.testing import CliRunner

    from rtopt.cli import app

    data = _base_instance()
    data["organ_at_risk"] = [{"name": "lung", "alpha_beta_gy": 3.0, "dvh_structure": "Lung",
                              "dvh_limit": [{"metric": "EQD2_Dmean", "max_gy": 20.0}]}]
    data["dvh_plan"] = _dvh_plan(export="nowhere.csv")
    path = _save(tmp_path, data)
    res = CliRunner().invoke(app, ["solve", str(path)])
    assert res.exit_code == 1
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "dvh_plan.export: file not found" in lines[0] \
        and "nowhere.csv" in lines[0] and "Traceback" not in res.output


# ---------------------------------------------------------------------- the DICOM example
@pytest.mark.slow
def test_lung_phantom_instance_solves_and_verifies():
    from rtopt.planning.solve import solve

    r = solve(ROOT / "instances" / "lung-phantom-dvh.toml", "exhaustive", time_limit_s=120)
    assert r.feasible and r.verified
    names = {c.name for c in r.constraints}
    assert {"oar.lung.dvh.CV13.5Gy@5fx", "oar.lung.ntcp.pneumonitis",
            "oar.spinal_cord.dvh.Dmax@3fx", "target.dvh.BED_D95%"} <= names
    summary = r.to_dict()["dvh"]
    assert [o["name"] for o in summary["organs"]] == ["lung", "chest_wall_rib", "spinal_cord",
                                                      "oesophagus"]
    pn = [x for x in summary["ntcp"] if x["name"] == "pneumonitis"][0]
    assert 0 < pn["probability"] <= 0.2 + 1e-9 and pn["organ"] == "lung"
    assert math.isfinite(summary["blood_dose_per_fraction_gy"])


def test_infeasible_dvh_instance_names_the_dvh_limit(tmp_path):
    # A lung V20Gy limit so tight that no schedule reaches BED10 100 Gy: the diagnosis names
    # the DVH limit (uniform doses: a proved conflict).
    p = _lung_instance(tmp_path, {"metric": "V20Gy", "fractions": 3, "max_cc": 1.0},
                       min_bed_gy=100.0)
    diag = p.diagnose()
    assert diag.conflicts and any("oar.lung.dvh.V20Gy@3fx" in c for c in diag.conflicts), \
        diag.conflicts


def test_wrong_dicom_file_is_one_problem_naming_the_key(tmp_path):
    # rtdose pointing at a structure set: found when the DVHs are read (Problem), reported as
    # an instance problem at dvh_plan.rtdose with the file's own message.
    import shutil

    shutil.copy(ROOT / "instances" / "patients" / "lung-phantom" / "RTSTRUCT.dcm", tmp_path)
    data = _base_instance()
    data["organ_at_risk"] = [{"name": "lung", "alpha_beta_gy": 3.0, "dvh_structure": "LUNG_R",
                              "dvh_limit": [{"metric": "EQD2_Dmean", "max_gy": 20.0}]}]
    data["dvh_plan"] = {"rtdose": "RTSTRUCT.dcm", "rtstruct": "RTSTRUCT.dcm",
                        "prescription_dose_per_fraction_gy": 18.0, "fractions": 3}
    path = _save(tmp_path, data)
    with pytest.raises(InstanceError) as exc:
        Problem(load_instance(path))
    assert exc.value.source == str(path)
    [(field, message)] = exc.value.problems
    assert field == "dvh_plan.rtdose" and "Modality is RTSTRUCT, expected RTDOSE" in message


def test_pareto_front_on_ntcp(tmp_path):
    # The exact front of tumour BED against pneumonitis NTCP: every point verified, and along
    # the front more tumour BED costs more NTCP (a trade-off, not a single point).
    from rtopt.decisions.pareto import pareto

    h = _lungish()
    _write_export(tmp_path, {"Lung": (list(h.edges_gy), list(h.cumulative_cc()))})
    data = _base_instance()
    data["organ_at_risk"] = [{"name": "lung", "alpha_beta_gy": 3.0, "dvh_structure": "Lung",
                              "ntcp": [{"name": "pneumonitis",
                                        "parameter_set": "pneumonitis_lkb_seppenwoolde",
                                        "max_percent": 30.0}]}]
    data["fractionation"].update(n_fractions=[1, 5], dose_step_gy=1.0,
                                 dose_per_fraction_gy=[1.0, 30.0])
    data["dvh_plan"] = _dvh_plan()
    res = pareto(load_instance(_save(tmp_path, data)), "tumour_bed,ntcp:pneumonitis",
                 heuristic=False)
    pts = sorted(res.exact, key=lambda p: p.values["tumour_bed"])
    assert len(pts) >= 5 and all(p.feasible for p in pts)
    bed = [p.values["tumour_bed"] for p in pts]
    risk = [p.values["ntcp:pneumonitis"] for p in pts]
    assert all(np.diff(bed) > 0) and all(np.diff(risk) > 0)
    assert max(risk) <= 0.30 + 1e-9
