"""Plan files: every plan file rtopt writes, and a bare plan object, is read by every command
that takes a plan (one reader, rtopt.problem.problem.load_plan_file); a file that is not a
plan is one line naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.cli._common import ExitCode
from rtopt.problem.problem import Plan, Problem, load_plan_file

ROOT = Path(__file__).resolve().parents[1]
LUNG = str(ROOT / "instances" / "lung-sbrt-peripheral.toml")
COURSE = str(ROOT / "instances" / "courses" / "lung-sbrt-peripheral.toml")

# Every option that takes a plan file ({p}), each with the cheapest arguments that reach it.
PLAN_OPTIONS = [
    ["simulate", LUNG, "--plan", "{p}"],
    ["sensitivity", LUNG, "-n", "2", "--plan", "{p}"],
    ["sensitivity", LUNG, "-n", "2", "--plan", "{ok}", "--versus", "{p}"],
    ["trial", LUNG, "-n", "3", "--arm", "a={p}", "-o", "{out}"],
    ["trial", LUNG, "-n", "3", "--arm", "{p}", "-o", "{out}"],
    ["solve", LUNG, "--robust", "expected", "--reference", "{p}"],
    ["solve", LUNG, "--robust", "prob-better:{p}"],
    ["pareto", LUNG, "--objectives", "local_control,tumour_bed", "--reference", "{p}",
     "-o", "{out}"],
    ["replan", LUNG, COURSE, "--robust", "prob-better:{p}", "--prior-samples", "20",
     "--samples", "2"],
]


def _run(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output[-2000:]
    return r


def _args(cmd, p, tmp_path):
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(Plan.uniform((0, 2, 4), 18.0, (6,)).to_dict()))
    return [a.format(p=p, ok=ok, out=tmp_path / "out") for a in cmd]


@pytest.mark.parametrize("cmd", PLAN_OPTIONS, ids=lambda c: " ".join(c[:1] + c[-4:-2]))
@pytest.mark.parametrize("body, expect", [
    # a bare plan object: read (the day beyond the horizon shows that it was read and checked
    # before any work, and keeps the test quick)
    ({"fraction_days": [0, 2, 400], "doses_gy": [18, 18, 18], "nk_infusion_days": [6]},
     "fraction_days: fraction day 400 outside the horizon 0..41 of lung-sbrt-peripheral"),
    # a field missing: one line naming the file and the field
    ({"fraction_days": [0, 2, 4], "nk_infusion_days": [6]},
     "doses_gy: missing (one dose per fraction day, Gy)"),
], ids=["bare-plan", "missing-field"])
def test_every_plan_option_reads_a_bare_plan_and_names_a_missing_field(tmp_path, cmd, body,
                                                                        expect):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(body))
    r = _run(*_args(cmd, p, tmp_path))
    assert r.exit_code == ExitCode.ERROR, r.output
    lines = r.output.splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"{p}: {expect}"), r.output


def test_every_plan_file_rtopt_writes_reads_back(tmp_path):
    """The plan files of `rtopt solve -o`, `rtopt replan -o`, a trial's plans/ARM.json and
    `rtopt simulate --json`, and a bare plan, read back as the plan that was written (and
    replay with `rtopt simulate --plan`); a Pareto front is refused as not one plan."""
    problem = Problem.from_path(LUNG)
    files = {}
    r = _run("solve", LUNG, "-o", tmp_path / "solve.json")
    assert r.exit_code == ExitCode.OK, r.output
    files["solve"] = tmp_path / "solve.json"
    r = _run("replan", LUNG, COURSE, "-o", tmp_path / "replan.json")
    assert r.exit_code == ExitCode.OK, r.output
    files["replan"] = tmp_path / "replan.json"
    r = _run("trial", LUNG, "--arm", "54/3", "-n", "2", "-o", tmp_path / "trial")
    assert r.exit_code == ExitCode.OK, r.output
    files["trial"] = tmp_path / "trial" / "plans" / "54_3.json"
    r = _run("simulate", LUNG, "--dose", "18", "--days", "0,2,4", "--nk-days", "6", "--json")
    assert r.exit_code == ExitCode.OK, r.output
    (tmp_path / "sim.json").write_text(r.stdout)
    files["simulate"] = tmp_path / "sim.json"
    (tmp_path / "bare.json").write_text(json.dumps(
        {"fraction_days": [4, 0, 2], "doses_gy": [18, 18, 18], "nk_infusion_days": [6]}))
    files["bare"] = tmp_path / "bare.json"
    def same(a, b):   # the same fractions, infusions and dose reaching the tumour
        return (a.fraction_days, a.doses_gy, a.nk_days, problem.dose_ratio_of(a)) == \
            (b.fraction_days, b.doses_gy, b.nk_days, problem.dose_ratio_of(b))

    for name, f in files.items():
        plan = load_plan_file(f, problem)
        d = json.loads(f.read_text())
        if name == "bare":
            assert same(plan, Plan((0, 2, 4), (18.0,) * 3, (6,))), name
        else:   # the plan the file holds, as written
            assert same(plan, Plan.from_dict(d["schedule"])), name
        r = _run("simulate", LUNG, "--plan", f, "--json")
        assert r.exit_code in (ExitCode.OK, ExitCode.VIOLATED), (name, r.output)
        assert same(Plan.from_dict(json.loads(r.stdout)["schedule"]), plan), name
    front = tmp_path / "front.json"
    front.write_text(json.dumps({"instance": problem.name, "exact": {"points": [
        {"plan": Plan.uniform((0, 2, 4), 18.0).to_dict()}]}}))
    r = _run("simulate", LUNG, "--plan", front)
    assert r.exit_code == ExitCode.ERROR and r.output.splitlines() == [
        f"{front}: a Pareto front of 1 plans, not one plan (copy one point's 'plan' object "
        "into a file of its own)"], r.output


def test_plan_files_carry_the_tumour_dose_ratio(tmp_path):
    """`rtopt solve -o` writes the plan's tumour dose ratio (the instance's isodose
    convention: 1.2 x on the peripheral lung instance); `rtopt simulate --plan` reads it back
    and reports what the solve verified.  A file without it (written before) is read with the
    instance's ratio; a plan of another ratio is simulated with its own, and says so."""
    problem = Problem.from_path(LUNG)
    assert problem.tumour_dose_ratio == 1.2   # 80 % isodose (the test needs a ratio != 1)
    out = tmp_path / "solve.json"
    r = _run("solve", LUNG, "-o", out)
    assert r.exit_code == ExitCode.OK, r.output
    written = json.loads(out.read_text())
    assert written["schedule"]["tumour_dose_ratio"] == 1.2
    r = _run("simulate", LUNG, "--plan", out, "--json")
    assert r.exit_code == ExitCode.OK, r.output
    sim = json.loads(r.stdout)
    assert sim["schedule"] == written["schedule"]                     # round trip
    for k in ("local_control", "tumour_bed_gy", "nk_favourability"):  # the same simulator
        assert sim["metrics"][k] == written["metrics"][k], k          # on the same plan

    old = dict(written, schedule={k: v for k, v in written["schedule"].items()
                                  if k != "tumour_dose_ratio"})
    (tmp_path / "old.json").write_text(json.dumps(old))
    r = _run("simulate", LUNG, "--plan", tmp_path / "old.json", "--json")
    assert r.exit_code == ExitCode.OK, r.output
    assert json.loads(r.stdout)["metrics"] == sim["metrics"]          # the instance's ratio

    other = dict(written, schedule={**written["schedule"], "tumour_dose_ratio": 1.0})
    f = tmp_path / "iso.json"
    f.write_text(json.dumps(other))
    # another ratio is the plan's own prescription convention (a standard arm of an isocentre
    # source, say): used as written, and said beside the plan
    r = _run("simulate", LUNG, "--plan", f)
    assert r.exit_code in (ExitCode.OK, ExitCode.VIOLATED), r.output
    assert "(the plan's own prescription convention: tumour dose 1 x prescribed; " \
           "the instance's 1.2 x)" in " ".join(r.output.split())
    r = _run("trial", LUNG, "-n", "2", "--arm", f"a={f}", "-o", tmp_path / "t")
    assert r.exit_code == ExitCode.OK, r.output
    r = _run("simulate", LUNG, "--plan", f, "--json")
    assert r.exit_code in (ExitCode.OK, ExitCode.VIOLATED), r.output
    own = json.loads(r.stdout)
    assert own["schedule"]["tumour_dose_ratio"] == 1.0
    # the same prescription reaches the tumour as 1.0 x instead of 1.2 x: less control
    assert own["metrics"]["local_control"] < sim["metrics"]["local_control"]
    assert load_plan_file(f, problem).tumour_dose_ratio == 1.0
    assert load_plan_file(out, problem).tumour_dose_ratio is None      # the instance's


@pytest.mark.parametrize("name", ["lung-peripheral-12.5x4-nk", "lung-peripheral-18x3-nk"])
def test_shipped_headline_plans_have_their_best_nk_days(name):
    """The headline plan files (README sensitivity and robust examples) say "with its best
    rule-abiding NK days": their days are what the trial's best-infusion rule gives for their
    fractions under the current model (they were 3,10 and 8,15, stale after a model change)."""
    from rtopt.decisions.trial import best_infusions

    problem = Problem.from_path(LUNG)
    plan = load_plan_file(ROOT / "instances" / "plans" / f"{name}.json", problem)
    assert plan.nk_days == best_infusions(problem, plan)
    assert problem.verify(plan).feasible
