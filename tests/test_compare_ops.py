"""Operational safety of `rtopt compare` / `rtopt report`: interruption and resume, worker
processes that end with their parent, folder locking, stale reports, untrusted files
(profile options that write files, plan paths outside the folder, markup in names), solver
configuration errors and back-end availability.

Fast tests run in this process with small fake back-ends; the signal tests start the real CLI
in its own process group and always wait with a bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rtopt
from rtopt.backends import BACKENDS
from rtopt.backends.base import Backend, BackendOutput, Termination, module_import_error
from rtopt.cli import app
from rtopt.outputs.compare import CompareInterrupted, compare, read_manifest, read_table, results_digest
from rtopt.common.errors import FolderLocked, OutputFolderError
from rtopt.common.fileio import FolderLock, inside
from rtopt.problem.problem import Plan
from rtopt.planning.profiles import ProfileError, file_options, load_profile
from rtopt.outputs.report import render, stale_report

REPO_ROOT = Path(__file__).resolve().parents[1]
HYPO = REPO_ROOT / "instances" / "classic-mizuta-hypo.toml"
TWO_OAR = REPO_ROOT / "instances" / "classic-two-oar.toml"
LUNG = REPO_ROOT / "instances" / "lung-sbrt-central.toml"

runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# fake back-ends (in-process runs only)
# ---------------------------------------------------------------------------------------------
CALLS: list[str] = []
INTERRUPT_ON: set[str] = set()


class CountingBackend(Backend):
    """Instant; records each solve; raises KeyboardInterrupt (a Ctrl-C mid-run) on request."""

    name = "fake_counting"
    objectives = ("tumour_bed",)
    supports_continuous_dose = True

    def solve(self, problem, options):
        CALLS.append(problem.name)
        if problem.name in INTERRUPT_ON:
            raise KeyboardInterrupt
        return BackendOutput((Plan.uniform([0], problem.max_uniform_dose(1)),),
                             Termination.COMPLETED, solver_name="fake", solver_version="0")


class BrokenImportBackend(Backend):
    name = "fake_broken_import"
    requires = ("rtopt_test_broken_native_lib",)


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setitem(BACKENDS, "fake_counting", f"{__name__}:CountingBackend")
    monkeypatch.setitem(BACKENDS, "fake_broken_import", f"{__name__}:BrokenImportBackend")
    CALLS.clear()
    INTERRUPT_ON.clear()
    yield
    CALLS.clear()
    INTERRUPT_ON.clear()


def counting_profile(tmp_path: Path) -> Path:
    p = tmp_path / "counting.toml"
    p.write_text('backend = "fake_counting"\n')
    return p


# ---------------------------------------------------------------------------------------------
# 1. runs survive interruption; --resume; non-empty folders
# ---------------------------------------------------------------------------------------------
def test_interrupted_run_keeps_finished_runs_and_resume_skips_them(tmp_path, fakes):
    out = tmp_path / "out"
    prof = str(counting_profile(tmp_path))
    INTERRUPT_ON.add("classic-two-oar")  # Ctrl-C during the second instance's run
    with pytest.raises(CompareInterrupted) as e:
        compare([HYPO, TWO_OAR], [prof], out, repeat=2)
    assert (e.value.signum, e.value.done, e.value.total) == (signal.SIGINT, 2, 4)
    assert "2 of 4 run(s) finished" in e.value.note() and "--resume" in e.value.note()
    table = read_table(out / "results.csv")
    assert [(r["instance"], r["repeat"]) for r in table] == [("classic-mizuta-hypo", 0),
                                                             ("classic-mizuta-hypo", 1)]
    assert sorted(p.name for p in (out / "plans").iterdir()) == [
        "classic-mizuta-hypo__counting__r0.json", "classic-mizuta-hypo__counting__r1.json"]
    m = read_manifest(out)
    assert (m["complete"], m["finished_runs"], m["planned_runs"], m["interrupted"]) == (
        False, 2, 4, "SIGINT")
    assert (m["results_rows"], m["results_sha256"]) == results_digest(out / "results.csv")
    assert not (out / "report.html").exists()  # the report waits for the final table
    assert not list(out.rglob("*.tmp"))

    # a plain re-run refuses the folder; --resume solves only the two missing runs
    with pytest.raises(OutputFolderError):
        compare([HYPO, TWO_OAR], [prof], out, repeat=2)
    INTERRUPT_ON.clear()
    CALLS.clear()
    s = compare([HYPO, TWO_OAR], [prof], out, repeat=2, resume=True, report=False)
    assert CALLS == ["classic-two-oar", "classic-two-oar"]
    assert [(r["instance"], r["repeat"]) for r in s.rows] == [
        (i, r) for i in ("classic-mizuta-hypo", "classic-two-oar") for r in (0, 1)]
    assert read_table(out / "results.csv") == s.rows
    assert read_manifest(out)["complete"] is True
    # an instance file that changed since is solved again, not resumed
    changed = tmp_path / "hypo.toml"
    changed.write_text(HYPO.read_text())
    compare([changed], [prof], tmp_path / "o2", report=False)
    CALLS.clear()
    changed.write_text(HYPO.read_text() + "\n# edited\n")
    compare([changed], [prof], tmp_path / "o2", resume=True, report=False)
    assert CALLS == ["classic-mizuta-hypo"]


def test_non_empty_folder_needs_resume_or_overwrite(tmp_path, fakes):
    out = tmp_path / "out"
    prof = str(counting_profile(tmp_path))
    compare([HYPO, TWO_OAR], [prof], out, report=False)
    (out / "figures").mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "plans" / "old-instance__counting__r0.json").write_text("{}")
    (out / "figures" / "plans-old-instance.png").write_bytes(b"\x89PNG old")
    result = runner.invoke(app, ["compare", str(HYPO), "-s", prof, "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"{out}: folder is not empty; use --resume to continue the comparison in it or "
        f"--overwrite to replace rtopt's files in it"]
    result = runner.invoke(app, ["compare", str(HYPO), "-s", prof, "-o", str(out),
                                 "--resume", "--overwrite"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "--resume and --overwrite exclude each other"
    result = runner.invoke(app, ["compare", str(HYPO), "-s", prof, "-o", str(out),
                                 "--overwrite"])
    assert result.exit_code == 0, result.output
    # rtopt's stale files are gone, the user's file stays
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "plans").iterdir()) == [
        "classic-mizuta-hypo__counting__r0.json"]
    assert not (out / "figures" / "plans-old-instance.png").exists()
    assert [r["instance"] for r in read_table(out / "results.csv")] == ["classic-mizuta-hypo"]


def test_plans_folder_that_leads_elsewhere_is_refused(tmp_path, fakes):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "plans").symlink_to(elsewhere)
    with pytest.raises(OutputFolderError, match="is a symbolic link or not a folder"):
        compare([HYPO], [str(counting_profile(tmp_path))], out, overwrite=True)
    assert list(elsewhere.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 3. one writer per folder; stale reports
# ---------------------------------------------------------------------------------------------
def test_second_run_into_a_locked_folder_is_refused(tmp_path, fakes):
    out = tmp_path / "out"
    out.mkdir()
    prof = str(counting_profile(tmp_path))
    with FolderLock(out, "rtopt compare"):  # stands for another run (flock is per open file)
        with pytest.raises(FolderLocked) as e:
            compare([HYPO], [prof], out)
        assert str(e.value) == (f"{out}: in use by another rtopt compare run (pid {os.getpid()})"
                                f"; wait for it to finish or choose another folder")
        result = runner.invoke(app, ["compare", str(HYPO), "-s", prof, "-o", str(out)])
        assert result.exit_code == 1
        assert result.stderr.strip().splitlines() == [str(e.value)]
        result = runner.invoke(app, ["report", str(out)])
        assert result.exit_code == 1 and "in use by another rtopt compare run" in result.stderr
    compare([HYPO], [prof], out)  # released: the lock file alone does not block
    assert len(read_table(out / "results.csv")) == 1


def test_lock_is_released_when_its_process_is_killed(tmp_path):
    """The kernel drops a flock when the process dies, even by SIGKILL."""
    code = ("import sys, time; from rtopt.common.fileio import FolderLock; "
            "FolderLock(sys.argv[1], 'rtopt compare').acquire(); print('locked', flush=True); "
            "time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLocked, match=f"pid {p.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        p.kill()
        p.wait(10)
    FolderLock(tmp_path).acquire().release()


def test_report_records_its_source_and_stale_reports_are_detected(tmp_path, fakes):
    out = tmp_path / "out"
    compare([HYPO, TWO_OAR], [str(counting_profile(tmp_path))], out)
    rows, sha = results_digest(out / "results.csv")
    assert rows == 2
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert f"rtopt-results rows=2 sha256={sha}" in html
    assert f"rtopt-results rows=2 sha256={sha}" in md
    assert f"SHA-256 {sha[:12]}" in md
    m = read_manifest(out)
    assert (m["report_results_rows"], m["report_results_sha256"]) == (2, sha)
    result = runner.invoke(app, ["report", "--check", str(out)])
    assert result.exit_code == 0, result.output

    # the table changed after the report (e.g. a kill between results.csv and the report)
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:2]))
    problems = stale_report(out)
    assert len(problems) == 2 and all("stale: built from 2 row(s)" in p for p in problems)
    assert "now has 1 row(s)" in problems[0]
    result = runner.invoke(app, ["report", "--check", str(out)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == problems
    result = runner.invoke(app, ["report", str(out)])  # rebuilds
    assert result.exit_code == 0, result.output
    assert stale_report(out) == []
    assert "classic-two-oar" not in (out / "report.md").read_text()
    # figures of instances no longer in the table are removed with the rebuild
    assert not (out / "figures" / "plans-classic-two-oar.png").exists()


# ---------------------------------------------------------------------------------------------
# 4. untrusted files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("table, key", [
    ("[options.highs]\nlog_file = \"/tmp/x.log\"", "options.highs.log_file"),
    ("[options.highs]\nwrite_model_to_file = true", "options.highs.write_model_to_file"),
    ("[options.highs]\nsolution_file = \"s.sol\"", "options.highs.solution_file"),
    ("[options.scip]\n\"visual/vbcfilename\" = \"/tmp/t.vbc\"",
     'options.scip.visual/vbcfilename'),
    ("[options.solver_options]\nwrite_data_filename = \"d\"",
     "options.solver_options.write_data_filename"),
    ("[options.solver_options]\nlog = \"../out.txt\"", "options.solver_options.log"),
    ("[options]\noutput_dir = \"/tmp\"", "options.output_dir"),
])
def test_profile_options_that_write_files_are_refused(tmp_path, table, key):
    p = tmp_path / "evil.toml"
    p.write_text(f'backend = "pyomo_milp"\n{table}\n')
    with pytest.raises(ProfileError) as e:
        load_profile(p)
    assert e.value.lines() == [
        f"{p}: {key}: names a file or folder for the solver to write or read; refused "
        f"(set allow_file_options = true in the profile if you trust it)"]
    p.write_text(f'backend = "pyomo_milp"\nallow_file_options = true\n{table}\n')
    assert load_profile(p).backend == "pyomo_milp"  # the explicit opt-in


def test_harmless_options_and_shipped_profiles_pass_the_file_check(tmp_path):
    assert file_options({"highs": {"log_to_console": False, "output_flag": True,
                                   "mip_feasibility_tolerance": 1e-9},
                         "scip": {"branching/direction": "a", "limits/nodes": 10}}) == []
    for f in sorted((REPO_ROOT / "solvers").glob("*.toml")):
        load_profile(f)  # no false alarm on a shipped profile


def test_profile_file_is_recorded_and_shadowing_is_shown(tmp_path, fakes, monkeypatch):
    # a stranger's solvers/exhaustive.toml in the working folder does not replace the shipped
    # profile: the shipped file is used and recorded, and the local one is named as unused
    (tmp_path / "solvers").mkdir()
    mine = tmp_path / "solvers" / "exhaustive.toml"
    mine.write_text('backend = "fake_counting"\ndescription = "a stranger\'s profile"\n')
    monkeypatch.chdir(tmp_path)
    shipped = REPO_ROOT / "solvers" / "exhaustive.toml"
    s = compare([HYPO], ["exhaustive"], tmp_path / "out")
    assert s.rows[0]["profile_file"] == str(shipped)
    assert read_table(tmp_path / "out" / "results.csv")[0]["profile_file"] == str(shipped)
    d = json.loads((tmp_path / "out" / s.rows[0]["plan_file"]).read_text())
    assert d["extras"]["profile_file"] == str(shipped)
    assert s.notes == [f"note: profile 'exhaustive' is {shipped} (shipped); {mine.resolve()} of "
                       "the same name is not used (give its path to use it)"]
    assert f"{shipped} (shipped) |" in (tmp_path / "out" / "report.md").read_text()
    result = runner.invoke(app, ["solvers", "--json"])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.stdout) if r["profile"] == "exhaustive")
    assert (row["file"], row["origin"]) == (str(shipped), "shipped")
    assert row["shadows"] == [str(mine.resolve())]
    # the path still selects the local file, and says where it came from
    s2 = compare([HYPO], [str(mine)], tmp_path / "out2")
    assert s2.rows[0]["profile_file"] == str(mine)


def test_report_reads_no_plan_file_outside_its_folder(tmp_path, fakes):
    out = tmp_path / "out"
    compare([HYPO], [str(counting_profile(tmp_path))], out, report=False)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"schedule": None, "constraints": [],
                                  "compare": {"instance_path": "TOP-SECRET-PATH"}}))
    text = (out / "results.csv").read_text()
    good = "plans/classic-mizuta-hypo__counting__r0.json"
    for bad in ("../secret.json", str(secret), "plans/../../secret.json"):
        (out / "results.csv").write_text(text.replace(good, bad))
        problems = render(out)
        assert f"{out / 'results.csv'}: line 2: plan_file {bad!r} is outside {out}: not read " \
               f"(plan details of classic-mizuta-hypo / counting left out)" in problems
        for name in ("report.html", "report.md"):
            assert "TOP-SECRET" not in (out / name).read_text()
    assert inside(out, good) == (out / good).resolve()
    (out / "link.json").symlink_to(secret)
    assert inside(out, "link.json") is None  # a symbolic link out of the folder


def test_markdown_report_escapes_markup_from_files(tmp_path):
    evil = "<script>alert(1)</script>|`x`"
    inst = tmp_path / "evil.toml"
    inst.write_text(HYPO.read_text().replace('name = "oar"', f'name = "{evil}"', 1))
    out = tmp_path / "out"
    compare([inst], ["exhaustive"], out)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "<script" not in md.lower() and "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|\\`x\\`" in md
    # every table row still has the header's number of cells (no pipe broke out)
    for block in md.split("\n\n"):
        rows = [ln for ln in block.splitlines() if ln.startswith("|")]
        if rows:
            cells = [len(ln.replace("\\|", "").split("|")) for ln in rows]
            assert len(set(cells)) == 1, block


# ---------------------------------------------------------------------------------------------
# 5. solver configuration errors and availability
# ---------------------------------------------------------------------------------------------
def test_unknown_cvxpy_solver_is_a_configuration_error(tmp_path):
    cp = pytest.importorskip("cvxpy")
    installed = ", ".join(sorted(cp.installed_solvers()))
    for backend in ("cvxpy_convex", "cvxpy_ccp"):
        prof = tmp_path / f"{backend}.toml"
        prof.write_text(f'backend = "{backend}"\ntime_limit_s = 5\n[options]\nsolver = "NOSUCH"\n')
        r = rtopt.solve(TWO_OAR, str(prof))
        assert (r.status, r.termination) == ("error", "error"), r.message
        assert r.message == (f"configuration error: options.solver: 'NOSUCH' is not a solver "
                             f"installed for cvxpy (installed: {installed})")
        s = compare([TWO_OAR], [str(prof), "exhaustive"], tmp_path / f"o-{backend}",
                    report=False)
        assert s.errors == [f"{prof}: options.solver: 'NOSUCH' is not a solver installed for "
                            f"cvxpy (installed: {installed})"]
        assert [r["profile"] for r in s.rows] == ["exhaustive"]


def test_a_library_that_fails_on_import_is_unavailable(tmp_path, fakes, monkeypatch):
    lib = tmp_path / "rtopt_test_broken_native_lib.py"
    lib.write_text("import pathlib, sys\n"
                   f"pathlib.Path({str(tmp_path / 'imports')!r}).open('a').write('x')\n"
                   "raise OSError('libbroken.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module_import_error.cache_clear()
    try:
        for _ in range(2):
            ok, why = BrokenImportBackend.available()
            assert not ok
            assert why == ("Python package rtopt_test_broken_native_lib is installed but fails "
                           "to import: OSError: libbroken.so: cannot open shared object file")
        assert (tmp_path / "imports").read_text() == "x"  # tried once, then cached
        r = rtopt.solve(HYPO, "fake_broken_import")
        assert r.status == "unavailable" and "fails to import" in r.message
    finally:
        module_import_error.cache_clear()
        sys.modules.pop("rtopt_test_broken_native_lib", None)


def test_cli_start_imports_no_solver_library():
    code = ("import sys, rtopt.cli, rtopt.outputs.compare, rtopt.planning.profiles; "
            "print(sorted(m for m in ('cvxpy', 'pyomo', 'highspy', 'pyscipopt') "
            "if m in sys.modules))")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# 6. instance names
# ---------------------------------------------------------------------------------------------
def test_instances_are_named_by_their_name_field(tmp_path, fakes):
    f = tmp_path / "some-file-name.toml"
    f.write_text(HYPO.read_text())
    s = compare([f], [str(counting_profile(tmp_path))], tmp_path / "out")
    assert s.rows[0]["instance"] == "classic-mizuta-hypo"
    assert s.rows[0]["instance_path"] == str(f.resolve())
    assert s.rows[0]["plan_file"] == "plans/classic-mizuta-hypo__counting__r0.json"


# ---------------------------------------------------------------------------------------------
# 2. signals: the real CLI in its own process
# ---------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_slow_compare(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """`rtopt compare` with two workers: the exhaustive runs end in about a second, the
    scipy-de run on the lung instance takes its whole 30 s time limit.  Returns once at
    least one run is in results.csv and the worker processes are up."""
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "rtopt", "compare", str(HYPO), str(LUNG),
                          "-s", "exhaustive,scipy-de", "-o", str(out), "-j", "2",
                          "--time-limit", "30"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         start_new_session=True,  # its own process group, as in a terminal
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    deadline = time.monotonic() + 60  # generous: spawning workers on a loaded machine
    while time.monotonic() < deadline:
        if (out / "results.csv").is_file() and results_digest(out / "results.csv")[0] >= 1 \
                and len(_children(p.pid)) >= 2:
            return p, out
        if p.poll() is not None:
            break
        time.sleep(0.2)
    p.kill()
    pytest.fail(f"no run finished in 60 s: {p.communicate(timeout=10)}")


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    """The processes of ``pids`` still alive after up to ``seconds``; those are then killed
    (they are this test's own), so that a failing test leaves nothing running."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(_alive(k) for k in pids):
        time.sleep(0.1)
    left = [k for k in pids if _alive(k)]
    for k in left:
        with contextlib.suppress(OSError):
            os.kill(k, signal.SIGKILL)
    return left


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("sig, code, note", [
    (signal.SIGTERM, 143, "terminated (SIGTERM): "),  # `kill PID`: to the parent alone
    (signal.SIGINT, 130, "interrupted: "),  # Ctrl-C: to the whole process group
])
def test_signal_keeps_finished_runs_and_ends_the_workers(tmp_path, sig, code, note):
    p, out = _start_slow_compare(tmp_path)
    kids = _children(p.pid)  # the worker processes and multiprocessing's resource tracker
    if sig == signal.SIGINT:
        os.killpg(p.pid, sig)
    else:
        p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=30)  # the parent stops its workers at once
    finally:
        p.kill()
        _wait_gone(kids, 0.0)
    assert p.returncode == code
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(note), err
    assert "--resume" in lines[0]
    # 5 s: SIGTERM to the workers, then the resource tracker sees its pipe close
    assert _wait_gone(kids, 5.0) == []
    done = read_table(out / "results.csv")
    assert done and read_manifest(out)["interrupted"] == sig.name
    assert all((out / r["plan_file"]).is_file() for r in done)
    assert not (out / "report.html").exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_die_with_a_killed_parent(tmp_path):
    p, out = _start_slow_compare(tmp_path)
    kids = _children(p.pid)
    assert len(kids) >= 2
    p.kill()  # SIGKILL: nothing in the parent runs
    p.wait(10)
    # PR_SET_PDEATHSIG kills the workers at once; the watchdog fallback polls every 0.5 s;
    # the resource tracker exits when the last worker holding its pipe is gone
    assert _wait_gone(kids, 5.0) == []
    p.communicate(timeout=10)  # the workers held the pipes open: read only once they are gone
    assert read_table(out / "results.csv")  # the runs finished before the kill are kept
