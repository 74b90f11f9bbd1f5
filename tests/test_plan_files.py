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
    for name, f in files.items():
        plan = load_plan_file(f, problem)
        d = json.loads(f.read_text())
        if name == "bare":
            assert plan == Plan((0, 2, 4), (18.0,) * 3, (6,)), name
        else:   # the plan the file holds, as written
            assert plan == Plan.from_dict(d["schedule"]), name
        r = _run("simulate", LUNG, "--plan", f, "--json")
        assert r.exit_code in (ExitCode.OK, ExitCode.VIOLATED), (name, r.output)
        assert Plan.from_dict(json.loads(r.stdout)["schedule"]) == plan, name
    front = tmp_path / "front.json"
    front.write_text(json.dumps({"instance": problem.name, "exact": {"points": [
        {"plan": Plan.uniform((0, 2, 4), 18.0).to_dict()}]}}))
    r = _run("simulate", LUNG, "--plan", front)
    assert r.exit_code == ExitCode.ERROR and r.output.splitlines() == [
        f"{front}: a Pareto front of 1 plans, not one plan (copy one point's 'plan' object "
        "into a file of its own)"], r.output
