"""Hostile and concurrent use (issue 20, item 8): every case is one line per problem, exit 1,
within seconds, never a traceback.  These are regression tests of a fuzzing and crafted-file
run; each names the case it stands for."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.cli._common import MAX_ERROR_LINES, ExitCode

ROOT = Path(__file__).resolve().parents[1]
PROSTATE = str(ROOT / "instances" / "prostate-sbrt.toml")
LUNG = str(ROOT / "instances" / "lung-sbrt-peripheral.toml")
runner = CliRunner()


def _run(*args: str):
    r = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output[-2000:]
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), \
        repr(r.exception)
    return r


def _deep_toml(path: Path) -> Path:
    path.write_text("a = " + "[" * 1000 + "]" * 1000 + "\n")
    return path


def _deep_json(path: Path) -> Path:
    path.write_text("[" * 1000 + "]" * 1000)
    return path


# ------------------------------------------------------------------ safe reads
def test_deeply_nested_instance_is_one_line(tmp_path):
    r = _run("validate", _deep_toml(tmp_path / "deep.toml"))
    assert r.exit_code == ExitCode.ERROR
    assert r.output.strip() == f"{tmp_path / 'deep.toml'}: nested more than 64 levels deep"


@pytest.mark.parametrize("cmd", [["simulate", PROSTATE, "--plan"],
                                 ["sensitivity", PROSTATE, "-n", "2", "--plan"],
                                 ["trial", PROSTATE, "-n", "2", "--arm"]])
def test_deeply_nested_plan_is_one_line(tmp_path, cmd):
    plan = _deep_json(tmp_path / "deep.json")
    arg = f"a={plan}" if cmd[0] == "trial" else str(plan)
    r = _run(*cmd, arg, *(["-o", tmp_path / "out"] if cmd[0] == "trial" else []))
    assert r.exit_code == ExitCode.ERROR
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "nested more than 64 levels deep" in lines[0], r.output


def test_deeply_nested_profile_in_the_working_folder_does_not_break_solvers(tmp_path,
                                                                             monkeypatch):
    (tmp_path / "solvers").mkdir()
    _deep_toml(tmp_path / "solvers" / "deep.toml")
    monkeypatch.chdir(tmp_path)
    r = _run("solvers")
    assert "nested more than 64 levels deep" in r.output
    assert "RecursionError" not in r.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_fifo_and_device_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    r = _run("validate", fifo, "/dev/zero")  # a blocking open / an endless read before
    assert r.exit_code == ExitCode.ERROR
    assert r.output.splitlines() == [
        f"{fifo}: not a regular file (a FIFO, device or socket), not an instance file",
        "/dev/zero: not a regular file (a FIFO, device or socket), not an instance file"]
    r = _run("simulate", PROSTATE, "--plan", "/dev/zero")
    assert r.exit_code == ExitCode.ERROR and "not a regular file" in r.output


def test_oversized_instance_fails_at_once(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text(Path(PROSTATE).read_text() + "# " + "x" * (3 * 1024 * 1024) + "\n")
    r = _run("validate", big)
    assert r.exit_code == ExitCode.ERROR
    assert "too large for an instance file" in r.output and len(r.output.splitlines()) == 1


def test_many_problems_print_a_bounded_number_of_lines(tmp_path):
    # 20,000 fractions on days past the horizon: one problem each, but a bounded output
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"fractions": [{"day": 10_000 + i, "dose_gy": 1.0}
                                              for i in range(20_000)]}))
    r = _run("simulate", PROSTATE, "--plan", plan)
    assert r.exit_code == ExitCode.ERROR
    lines = r.output.splitlines()
    assert len(lines) <= MAX_ERROR_LINES + 1, len(lines)
    assert "more" in lines[-1]   # the plan reader says "(and N more)", the CLI "... more problems"


# ------------------------------------------------------------------ folder lock, resume keys
@pytest.mark.parametrize("cmd", [
    ["trial", PROSTATE, "-n", "4", "--arm", "54/3"],
    ["sensitivity", PROSTATE, "-n", "2", "--plan", str(ROOT / "instances/plans/lung-sbrt-54-3.json"),
     "--force"],
])
def test_second_run_into_a_folder_in_use_is_refused(tmp_path, cmd):
    from rtopt.common.fileio import FolderLock

    out = tmp_path / "out"
    out.mkdir()
    with FolderLock(out, f"rtopt {cmd[0]}"):  # stands for the first run (flock is per open file)
        r = _run(*cmd, "-o", out)
    assert r.exit_code == ExitCode.ERROR
    assert r.output.splitlines() == [
        f"{out}: in use by another rtopt {cmd[0]} run (pid {os.getpid()}); wait for it to "
        "finish or choose another folder"]


def test_resumed_run_never_loads_chunks_of_another_configuration(tmp_path):
    import numpy as np

    from rtopt.decisions.distributed import map_chunks

    calls = []

    def fn(x):
        calls.append(x)
        return {"y": np.array([x * 10.0])}

    cache = tmp_path / "chunks"
    map_chunks(fn, [1, 2, 3], cache_dir=cache, key="seed-1")
    # a concurrent run with other settings stamped the folder after our chunks were written
    (cache / "key.txt").write_text("seed-2\n")
    calls.clear()
    out = map_chunks(lambda x: {"y": np.array([x * 20.0])}, [1, 2, 3], cache_dir=cache,
                     key="seed-2")
    assert [float(o["y"][0]) for o in out] == [20.0, 40.0, 60.0]   # nothing of seed-1 reused
    # and a run of the first settings again recomputes the chunks seed-2 overwrote
    out = map_chunks(fn, [1, 2, 3], cache_dir=cache, key="seed-1")
    assert [float(o["y"][0]) for o in out] == [10.0, 20.0, 30.0] and calls == [1, 2, 3]
    # the same settings resume: nothing recomputed
    calls.clear()
    map_chunks(fn, [1, 2, 3], cache_dir=cache, key="seed-1")
    assert calls == []
    assert not list(cache.glob("*.tmp*"))


# ------------------------------------------------------------------ plans of another instance
def _plan_json(tmp_path: Path, instance: str, days=(0, 2, 4), dose=7.0, nk=(6,)) -> Path:
    from rtopt.problem.problem import Plan

    path = tmp_path / f"plan-{instance}-{days[-1]}.json"
    path.write_text(json.dumps({"instance": instance,
                                "schedule": Plan.uniform(days, dose, nk).to_dict()}))
    return path


@pytest.mark.parametrize("cmd", [
    ["simulate", LUNG, "--plan", "{p}"],
    ["sensitivity", LUNG, "-n", "2", "--plan", "{p}"],
    ["trial", LUNG, "-n", "3", "--arm", "a={p}", "-o", "{out}"],
    ["solve", LUNG, "--robust", "expected", "--reference", "{p}"],
    ["pareto", LUNG, "--objectives", "local_control,tumour_bed", "--reference", "{p}",
     "-o", "{out}"],
])
def test_plan_of_another_instance_is_refused_in_one_line(tmp_path, cmd):
    p = _plan_json(tmp_path, "prostate-sbrt")
    args = [a.format(p=p, out=tmp_path / "out") for a in cmd]
    r = _run(*args)
    assert r.exit_code == ExitCode.ERROR
    lines = r.output.splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"{p}: plan written for instance 'prostate-sbrt', not 'lung-sbrt-peripheral' "
        "(--force to use it anyway)"), r.output


def test_force_uses_a_plan_of_another_instance(tmp_path):
    p = _plan_json(tmp_path, "prostate-sbrt", dose=18.0)
    r = _run("simulate", LUNG, "--plan", p, "--force")
    assert r.exit_code in (ExitCode.OK, ExitCode.VIOLATED) and "plan written for" not in r.output


@pytest.mark.parametrize("cmd", [
    ["sensitivity", PROSTATE, "-n", "2", "--plan", "{p}"],
    ["solve", PROSTATE, "--robust", "expected", "--reference", "{p}"],
    ["solve", PROSTATE, "--robust", "prob-better:{p}"],
    ["pareto", PROSTATE, "--objectives", "local_control,tumour_bed", "--reference", "{p}",
     "-o", "{out}"],
    ["replan", LUNG, str(ROOT / "instances/courses/lung-sbrt-peripheral.toml"),
     "--robust", "prob-better:{p}", "--prior-samples", "20", "--samples", "2"],
])
def test_plan_day_outside_the_horizon_is_one_line(tmp_path, cmd):
    instance = "lung-sbrt-peripheral" if cmd[0] == "replan" else "prostate-sbrt"
    p = _plan_json(tmp_path, instance, days=(0, 2, 400))
    r = _run(*[a.format(p=p, out=tmp_path / "out") for a in cmd])
    assert r.exit_code == ExitCode.ERROR
    lines = r.output.splitlines()
    assert len(lines) == 1 and "fraction day 400 outside the horizon 0.." in lines[0], r.output


# ------------------------------------------------------------------ trial arms
PLAN_50_5 = str(ROOT / "instances" / "plans" / "lung-sbrt-50-5.json")


def test_trial_arm_names_are_quoted_escaped_and_unique(tmp_path):
    import csv

    out = tmp_path / "t"
    r = _run("trial", LUNG, "-n", "3", "-o", out, "--arm", f"x,y={PLAN_50_5}",
             "--arm", f"<script>alert(1)</script>={PLAN_50_5}",
             "--arm", f"[click](javascript:alert(1))={PLAN_50_5}")
    assert r.exit_code == ExitCode.OK, r.output
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {row["arm"] for row in rows} == {"x,y", "<script>alert(1)</script>",
                                            "[click](javascript:alert(1))"}
    assert all(len(row) == 8 for row in rows)
    md = (out / "report.md").read_text()
    assert "<script>" not in md
    assert not re.search(r"(?<!\\)\]\(javascript:", md)   # only escaped brackets: no link
    assert "<script>" not in (out / "report.html").read_text()
    assert len(list((out / "plans").glob("*.json"))) == 3


@pytest.mark.parametrize("arms,message", [
    (["54/3", "54/3"], "two arms named '54/3'"),
    ([f"a={PLAN_50_5}", f"a={PLAN_50_5}"], "two arms named 'a'"),
    ([f"a\nb={PLAN_50_5}"], "control characters"),
    ([f"={PLAN_50_5}"], "empty arm name"),
])
def test_bad_arm_names_are_one_line_errors(tmp_path, arms, message):
    args = [x for a in arms for x in ("--arm", a)]
    r = _run("trial", LUNG, "-n", "3", "-o", tmp_path / "t", *args)
    assert r.exit_code == ExitCode.ERROR
    assert len(r.output.splitlines()) == 1 and message in r.output, r.output


def test_standard_arms_get_the_same_infusion_rule_and_it_is_reported(tmp_path, load):
    from rtopt.decisions.trial import best_infusions, standard_plan
    from rtopt.problem.problem import Plan, Problem

    problem = Problem(load("lung-sbrt-peripheral"))
    std = problem.standard_plan("54/3")                        # the one table's 54/3
    arm = standard_plan(problem, "54/3")                       # default rule: best
    assert arm.nk_days == best_infusions(problem, std)
    early = standard_plan(problem, "54/3", "earliest")
    assert early.nk_days == problem.first_valid_infusions(std.fraction_days)
    # the best set is at least as good as the earliest one for the instance's objective
    ev = problem.evaluate_plans([arm, early], simulate_tme=True).objective
    assert ev[0] >= ev[1]
    out = tmp_path / "t"
    r = _run("trial", LUNG, "-n", "3", "-o", out, "--arm", "54/3", "--arm", "48/4",
             "--nk-days", "48/4=5")
    assert r.exit_code == ExitCode.OK, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["infusions"] == {"54/3": "best for this arm (the optimiser's choice)",
                                    "48/4": "fixed by --nk-days"}
    assert summary["arms"]["48/4"]["schedule"]["nk_infusions"] == [{"day": 5}]
    assert "NK infusions" in (out / "report.md").read_text()


# ------------------------------------------------------------------ piped output
def test_piped_tables_keep_identifiers_whole():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "rtopt", "solvers"], capture_output=True,
                         text=True, env=env, timeout=120).stdout
    assert "\u2026" not in out  # Rich's ellipsis: a cut cell
    for p in (ROOT / "solvers").glob("*.toml"):
        assert f"\u2502 {p.stem} " in out, p.stem  # a whole cell of the table


# ------------------------------------------------------------------ schedulers that hung
@pytest.mark.parametrize("scheduler", ["local:0", "local:-1", "local:abc", "bogus"])
@pytest.mark.parametrize("cmd", [["trial", PROSTATE, "--arm", "54/3", "-n", "3", "-o", "{out}"],
                                 ["solve", PROSTATE, "--robust", "expected"]])
def test_bad_scheduler_is_one_line_at_once(tmp_path, cmd, scheduler):
    r = _run(*[a.format(out=tmp_path / "o") for a in cmd], "--scheduler", scheduler)
    assert r.exit_code == ExitCode.ERROR
    assert r.output.splitlines() == [f"--scheduler {scheduler}: " + (
        "expected sync, threads, local:N or an address such as tcp://HOST:PORT"
        if scheduler == "bogus" else "local:N needs a whole number of workers N from 1 to 256")]


def test_an_address_that_is_not_a_dask_scheduler_fails_within_seconds():
    import http.server
    import threading
    import time

    from rtopt.decisions.distributed import CONNECT_TIMEOUT_S, SchedulerUnavailable, map_chunks

    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        t = time.monotonic()
        with pytest.raises(SchedulerUnavailable, match="answers but is not a Dask scheduler"):
            map_chunks(lambda x: {}, [1], scheduler=f"tcp://127.0.0.1:{srv.server_port}")
        # the probe waits CONNECT_TIMEOUT_S for a handshake; the rest is set-up (a loaded
        # machine can add seconds, not the > 300 s of the hang)
        assert time.monotonic() - t < CONNECT_TIMEOUT_S + 30
    finally:
        srv.shutdown()


# ------------------------------------------------------------------ solver profiles
@pytest.mark.parametrize("table,key", [
    ('[options.scip]\n"concurrent/paramsetprefix" = "x"', "options.scip.concurrent/paramsetprefix"),
    ('[options.scip]\n"misc/anything" = "/etc/passwd"', "options.scip.misc/anything"),
    ('[options]\nsettings = ["~/x"]', "options.settings"),
])
def test_path_valued_options_are_refused(tmp_path, table, key):
    from rtopt.planning.profiles import ProfileError, load_profile

    p = tmp_path / "p.toml"
    p.write_text(f'backend = "pyomo_minlp"\n{table}\n')
    with pytest.raises(ProfileError) as e:
        load_profile(p)
    assert e.value.lines()[0].startswith(f"{p}: {key}: names a file or folder")


def test_a_profile_found_by_name_cannot_allow_file_options_itself(tmp_path, monkeypatch):
    (tmp_path / "solvers").mkdir()
    p = tmp_path / "solvers" / "evil.toml"
    p.write_text('backend = "pyomo_milp"\nallow_file_options = true\n'
                 '[options.highs]\nlog_file = "/tmp/x.log"\n')
    monkeypatch.chdir(tmp_path)
    r = _run("solve", PROSTATE, "-s", "evil")
    assert r.exit_code == ExitCode.ERROR
    assert "allow_file_options: honoured only for shipped profiles" in r.output
    assert len(r.output.splitlines()) == 1
    from rtopt.planning.profiles import load_profile

    assert load_profile(p).backend == "pyomo_milp"   # named by its path: the user trusts it


# ------------------------------------------------------------------ sizes and full disks
def test_many_organs_fail_in_one_line_at_once(tmp_path):
    src = Path(PROSTATE).read_text()
    organs = "".join(f'\n[[organ_at_risk]]\nname = "o{i}"\nalpha_beta_gy = 3.0\n'
                     f'sparing_factor = 0.5\nmax_bed_gy = 134.2\n' for i in range(20_000))
    i = src.index("[fractionation]")
    f = tmp_path / "many.toml"
    f.write_text(src[:i] + organs + "\n" + src[i:])
    r = _run("validate", f)
    assert r.exit_code == ExitCode.ERROR
    assert r.output.splitlines() == [f"{f}: organ_at_risk: must have at most 100 items after "
                                     "validation, not 20003"]


def test_a_full_disk_names_the_file_and_leaves_no_partial_chunk(tmp_path, monkeypatch):
    import errno

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)   # every atomic write fails as on a full disk
    out = tmp_path / "t"
    r = _run("trial", PROSTATE, "--arm", "54/3", "-n", "3", "-o", out)
    assert r.exit_code == ExitCode.ERROR
    lines = r.output.splitlines()
    assert len(lines) == 1 and lines[0].endswith(": No space left on device"), r.output
    assert str(out / "chunks") in lines[0]
    left = [p.name for p in out.rglob("*") if p.is_file() and p.name != ".rtopt.lock"]
    assert left == [], left    # no 0-byte key.txt or *.tmp.npz


# ------------------------------------------------------------------ report on crafted folders
def _results_folder(tmp_path: Path, instance_path: str, message: str = "") -> Path:
    import csv

    from rtopt.outputs.compare import COLUMNS

    out = tmp_path / "cmp"
    out.mkdir()
    row = {c: "" for c in COLUMNS}
    row.update(instance="x", profile="exhaustive", backend="exhaustive", repeat="0", seed="0",
               status="feasible", objective="1.0", objective_name="nk_favourability",
               instance_path=instance_path, message=message)
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerow(row)
    return out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_report_does_not_hang_or_read_for_ever_on_a_crafted_instance_path(tmp_path, kind):
    target = "/dev/zero"
    if kind == "fifo":
        target = str(tmp_path / "inst.toml")
        os.mkfifo(target)
    out = _results_folder(tmp_path, target)
    r = _run("report", out)     # before: hung on the FIFO, read /dev/zero until ~3.5 GB
    assert r.exit_code in (ExitCode.OK, ExitCode.ERROR), r.output
    assert (out / "report.html").exists() or "not a regular file" in r.output


def test_results_field_beyond_the_csv_limit_is_one_line(tmp_path):
    out = _results_folder(tmp_path, "", message="m" * 200_000)
    r = _run("report", out)
    assert r.exit_code == ExitCode.ERROR
    lines = r.output.splitlines()
    assert len(lines) == 1 and "results.csv" in lines[0] and "field larger than" in lines[0], \
        r.output


def test_trial_arm_from_a_device_is_refused(tmp_path):
    r = _run("trial", PROSTATE, "-n", "3", "-o", tmp_path / "t", "--arm", "a=/dev/zero")
    assert r.exit_code == ExitCode.ERROR
    assert r.output.splitlines() == ["--arm a: /dev/zero: not a regular file (a FIFO, device or "
                                     "socket), not a plan file"]


def test_a_run_refused_at_once_leaves_no_output_folder(tmp_path):
    out = tmp_path / "new" / "t"
    r = _run("trial", PROSTATE, "-n", "3", "-o", out, "--arm", "nonsense")
    assert r.exit_code == ExitCode.ERROR
    assert not (tmp_path / "new").exists()
