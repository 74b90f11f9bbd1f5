"""Solver comparisons (`rtopt compare`, `rtopt report`): table, plan files, report, errors.

Fast tests use the classic tumour-BED instances (closed-form oracles, solved in about a second
by the exhaustive back-end) and small fake back-ends registered for the test, so that declined,
unavailable, missing and crashing back-ends are exercised whatever the real back-ends' state.
One comparison is run per module and shared by the tests that only read its output.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import rtopt
from rtopt.backends import BACKENDS
from rtopt.backends.base import Backend, BackendOutput, Termination
from rtopt.cli import app
from rtopt.outputs.compare import COLUMNS, compare, read_table
from rtopt.common.errors import RtoptError
from rtopt.problem.problem import Plan
from rtopt.outputs.report import (PerformanceProfile, performance_profile, plot_performance_profiles,
                          render, traffic_light)

REPO_ROOT = Path(__file__).resolve().parents[1]
HYPO = REPO_ROOT / "instances" / "classic-mizuta-hypo.toml"
TWO_OAR = REPO_ROOT / "instances" / "classic-two-oar.toml"
TIME_LIMIT_S = 20.0

runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# fake back-ends (registered in BACKENDS for the duration of a test or of the module fixture)
# ---------------------------------------------------------------------------------------------
class DecliningBackend(Backend):
    name = "fake_declines"
    objectives = ("tumour_bed",)

    def check(self, problem):
        return False, "fake_declines handles no instance at all"


class UnavailableBackend(Backend):
    name = "fake_unavailable"
    requires = ("a_package_that_is_not_installed_anywhere",)


class CrashingBackend(Backend):
    name = "fake_crash"
    objectives = ("tumour_bed", "nk_favourability")
    supports_nk = True
    supports_continuous_dose = True

    def solve(self, problem, options):
        raise RuntimeError("the fake solver library fell over\nsecond line never shown")


class ViolatingBackend(Backend):
    """Returns a plan that breaks the OAR limit: verification must not call it feasible."""

    name = "fake_violates"
    objectives = ("tumour_bed",)
    supports_continuous_dose = True

    def solve(self, problem, options):
        return BackendOutput((Plan.uniform([0], 99.0),), Termination.OPTIMAL,
                             claimed_objective=1e4, solver_name="fake", solver_version="0")


class SeededBackend(Backend):
    """Instant and seed-dependent: the day of its single fraction is the seed mod 5."""

    name = "fake_seeded"
    objectives = ("tumour_bed",)
    supports_continuous_dose = True

    def solve(self, problem, options):
        dose = problem.max_uniform_dose(1)
        return BackendOutput((Plan.uniform([options.seed % 5], dose),), Termination.COMPLETED,
                             solver_name="fake", solver_version="0")


FAKES = {
    "fake_declines": f"{__name__}:DecliningBackend",
    "fake_unavailable": f"{__name__}:UnavailableBackend",
    "fake_missing": "rtopt.backends._no_such_module_:Nothing",
    "fake_crash": f"{__name__}:CrashingBackend",
    "fake_violates": f"{__name__}:ViolatingBackend",
    "fake_seeded": f"{__name__}:SeededBackend",
}


@pytest.fixture
def fakes(monkeypatch):
    for k, v in FAKES.items():
        monkeypatch.setitem(BACKENDS, k, v)


def broken_instance(tmp_path: Path) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(HYPO.read_text().replace("alpha_beta_gy = 10.0", "alpha_beta_gy = -10.0", 1))
    return path


def bogus_profile(tmp_path: Path) -> Path:
    path = tmp_path / "bogus.toml"
    path.write_text('backend = "no_such_backend"\ntime_limit_s = 5\n')
    return path


def plan_json(outdir: Path, row: dict) -> dict:
    return json.loads((outdir / row["plan_file"]).read_text())


# ---------------------------------------------------------------------------------------------
# one shared comparison
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two classic instances + one broken; exhaustive, the fakes, and two broken profiles."""
    tmp = tmp_path_factory.mktemp("compare")
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in FAKES.items():
            mp.setitem(BACKENDS, k, v)
        summary = compare([HYPO, TWO_OAR, broken_instance(tmp)],
                          ["exhaustive", *FAKES, str(bogus_profile(tmp)), "nosuch"],
                          out, time_limit_s=TIME_LIMIT_S)
    return summary, out, tmp


def test_files_written(run):
    summary, out, _ = run
    for name in ("results.csv", "system.json", "report.html", "report.md"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "plans").glob("*.json")) == sorted(
        Path(r["plan_file"]).name for r in summary.rows)
    assert (out / "plans" / "classic-mizuta-hypo__exhaustive__r0.json").is_file()
    # nothing half-written: every temporary file was renamed or removed
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_one_row_per_pair_in_a_fixed_order(run):
    summary, out, _ = run
    table = read_table(out / "results.csv")
    assert [(r["instance"], r["profile"], r["repeat"]) for r in table] == [
        (i, p, 0) for i in ("classic-mizuta-hypo", "classic-two-oar")
        for p in ("exhaustive", *FAKES)]
    with open(out / "results.csv", newline="") as fh:
        assert tuple(next(csv.reader(fh))) == COLUMNS


def test_table_matches_plan_files(run):
    _, out, _ = run
    for r in read_table(out / "results.csv"):
        d = plan_json(out, r)
        assert d["status"] == r["status"]
        assert d["objective"]["value"] == r["objective"]  # exact: the csv keeps every digit
        assert d["objective"]["claimed"] == r["claimed_objective"]
        assert d["objective"]["bound"] == r["bound"]
        assert d["solver"]["seed"] == r["seed"]
        assert d["compare"]["instance_path"] == r["instance_path"]
        assert Path(r["instance_path"]).is_file()
        if d["schedule"]:
            assert Plan.from_dict(d).describe() == r["plan"]


def test_classic_oracles_and_best_gap(run):
    _, out, _ = run
    table = read_table(out / "results.csv")
    by = {(r["instance"], r["profile"]): r for r in table}
    hypo = by["classic-mizuta-hypo", "exhaustive"]
    # Mizuta et al. 2012, closed form (instance file): 1 x 75 Gy, tumour BED 637.5 Gy; the
    # exhaustive back-end adds the OAR-limited dose to its grid, so the match is to rounding.
    assert hypo["objective"] == pytest.approx(637.5, rel=1e-9)
    assert hypo["status"] == "optimal"
    for inst in ("classic-mizuta-hypo", "classic-two-oar"):
        rows = [r for r in table if r["instance"] == inst]
        best = [r for r in rows if r["best"]]
        assert best and all(r["gap_to_best"] == 0.0 for r in best)
        top = max(r["objective"] for r in rows if r["status"] in ("optimal", "feasible"))
        assert all(r["objective"] == top for r in best)
        for r in rows:
            if r["status"] in ("optimal", "feasible"):
                assert r["gap_to_best"] == pytest.approx((top - r["objective"]) / abs(top))
            else:
                assert r["gap_to_best"] is None and not r["best"]


def test_unavailable_declined_and_errors_are_rows(run):
    summary, out, _ = run
    by = {(r["instance"], r["profile"]): r for r in read_table(out / "results.csv")}
    for inst in ("classic-mizuta-hypo", "classic-two-oar"):
        r = by[inst, "fake_declines"]
        assert (r["status"], r["message"]) == ("declined", "fake_declines handles no instance at all")
        r = by[inst, "fake_unavailable"]
        assert r["status"] == "unavailable"
        assert "a_package_that_is_not_installed_anywhere" in r["message"]
        r = by[inst, "fake_missing"]
        assert r["status"] == "unavailable" and "_no_such_module_" in r["message"]
        r = by[inst, "fake_crash"]
        assert r["status"] == "error"
        assert r["message"] == "RuntimeError: the fake solver library fell over"
        r = by[inst, "fake_violates"]  # a plan breaking a limit is never reported feasible
        assert r["status"] in ("no_solution", "infeasible") and r["objective"] is None
        assert r["message"].startswith("the back-end's plan fails verification: oar.")
        assert r["worst_slack"] < 0


def test_broken_inputs_are_one_line_errors(run):
    summary, _, tmp = run
    assert not summary.ok
    broken, bogus = tmp / "broken.toml", tmp / "bogus.toml"
    assert any(e.startswith(f"{broken}: tumour.alpha_beta_gy: ") for e in summary.errors)
    assert any(e.startswith(f"{bogus}: backend: unknown backend 'no_such_backend'")
               for e in summary.errors)
    assert any(e.startswith("nosuch: unknown solver profile or backend") for e in summary.errors)
    assert all("\n" not in e and "Traceback" not in e for e in summary.errors)
    assert len(summary.errors) == 3


def test_system_json(run):
    _, out, _ = run
    info = json.loads((out / "system.json").read_text())
    for dist in ("rtopt", "python", "numpy", "scipy", "pyomo", "cvxpy", "highspy", "pyscipopt",
                 "matplotlib"):
        assert dist in info["versions"]
    assert info["versions"]["rtopt"] == rtopt.__version__
    for key in ("platform", "cpu_model", "cpu_count", "git_revision", "date"):
        assert key in info
    assert info["run"]["time_limit_s"] == TIME_LIMIT_S
    assert len(info["run"]["input_errors"]) == 3


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
EXTERNAL = ('src="http', "src='http", 'href="http', "href='http", "url(http", "url('http",
            'url("http', "<link", "<script src", "@import", "//fonts.")


def test_html_is_self_contained(run):
    _, out, _ = run
    html = (out / "report.html").read_text()
    low = html.lower()
    for bad in EXTERNAL:
        assert bad not in low, bad
    assert "<script" not in low
    # every image is an embedded PNG that decodes
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(srcs) >= 3  # performance profiles + one plan figure per instance
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_html_content(run):
    _, out, _ = run
    html = (out / "report.html").read_text()
    assert "How to read this" in html and "performance profile" in html.lower()
    for inst in ("classic-mizuta-hypo", "classic-two-oar"):
        assert f'id="inst-{inst}"' in html
    assert "&#9733;" in html  # best plan marked
    assert "fake_declines handles no instance at all" in html
    assert "l-amber" in html and "l-green" in html  # traffic lights
    assert "l-red" in html  # the fake_violates plan, drawn and checked like the others
    # the OAR BED limit binds at the classic optimum: amber, never red for a verified plan
    assert "oar.oar.max_bed_gy" in html
    assert "bogus.toml: backend: unknown backend" in html  # inputs skipped are listed
    # autoescape: text from files is escaped
    assert "<script" not in html.lower()


def test_markdown_report_links_figures(run):
    _, out, _ = run
    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "figures/performance-profiles.png" in links
    assert len(links) >= 3
    for link in links:
        assert not link.startswith(("http", "/"))
        data = (out / link).read_bytes()
        assert data.startswith(b"\x89PNG")
    assert "| classic-mizuta-hypo" in md or "[classic-mizuta-hypo]" in md
    assert "★" in md


def test_report_rerenders_identically_without_solving(run, monkeypatch, tmp_path):
    _, out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {n: (copy / n).read_bytes() for n in ("report.html", "report.md")}
    (copy / "report.html").unlink()
    (copy / "report.md").unlink()

    def no_solving(*a, **k):
        raise AssertionError("rtopt report must not solve")

    monkeypatch.setattr(rtopt, "solve", no_solving)
    monkeypatch.setattr(sys.modules["rtopt.planning.solve"], "solve", no_solving)
    result = runner.invoke(app, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    for n, data in before.items():
        assert (copy / n).read_bytes() == data, n


def test_report_survives_a_missing_instance_file(run, tmp_path):
    _, out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    text = (copy / "results.csv").read_text().replace(str(TWO_OAR), str(tmp_path / "gone.toml"))
    (copy / "results.csv").write_text(text)
    problems = render(copy)
    assert any("gone.toml" in p and "file not found" in p for p in problems)
    html = (copy / "report.html").read_text()
    assert "plans not drawn" in html and 'id="inst-classic-mizuta-hypo"' in html


def test_report_cli_errors(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"{tmp_path / 'results.csv'}: file not found (not a comparison output folder?)"]
    result = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# reproducibility and seeds
# ---------------------------------------------------------------------------------------------
def _without_timings(rows):
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


def _seeded_profile() -> str:
    """A stochastic back-end if one runs here (seeds matter), else the exhaustive one."""
    from rtopt.backends import get_backend

    try:
        ok, _ = get_backend("scipy_de").available()
    except Exception:  # the back-end is being written: the exhaustive one still checks order
        ok = False
    return "scipy_de" if ok else "exhaustive"


def test_same_seeds_same_table(tmp_path):
    prof = _seeded_profile()
    a = compare([TWO_OAR], [prof], tmp_path / "a", repeat=2, time_limit_s=TIME_LIMIT_S,
                report=False)
    compare([TWO_OAR], [prof], tmp_path / "b", repeat=2, time_limit_s=TIME_LIMIT_S,
            report=False)
    assert [r["seed"] for r in a.rows] == [0, 1]  # repeat r uses the profile's seed + r
    ta = _without_timings(read_table(tmp_path / "a" / "results.csv"))
    tb = _without_timings(read_table(tmp_path / "b" / "results.csv"))
    for r in ta + tb:
        r.pop("plan_file")
    assert ta == tb
    assert not (tmp_path / "a" / "report.html").exists()  # report=False


def test_profile_seed_offsets_repeats(tmp_path, fakes):
    prof = tmp_path / "seeded.toml"
    prof.write_text('backend = "fake_seeded"\nseed = 40\n')
    s = compare([HYPO], [str(prof)], tmp_path / "o", repeat=3, report=False)
    assert [(r["profile"], r["repeat"], r["seed"]) for r in s.rows] == [
        ("seeded", 0, 40), ("seeded", 1, 41), ("seeded", 2, 42)]
    # the seed reached the back-end: fraction on day seed % 5
    assert [r["plan"] for r in s.rows] == [f"1 x 75 Gy on days {d}" for d in (0, 1, 2)]
    assert all(r["best"] for r in s.rows)  # ties are all best


def test_nothing_valid_to_run(tmp_path):
    with pytest.raises(RtoptError) as e:
        compare([broken_instance(tmp_path)], ["exhaustive"], tmp_path / "o")
    assert "nothing to compare" in str(e.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_worker_pool_runs_the_same_table(tmp_path):
    """Two spawned worker processes give the serial table (order, statuses, objectives)."""
    serial = compare([HYPO, TWO_OAR], ["exhaustive"], tmp_path / "s", report=False)
    parallel = compare([HYPO, TWO_OAR], ["exhaustive"], tmp_path / "p", workers=2,
                       report=False)
    assert _without_timings(serial.rows) == _without_timings(parallel.rows)


# ---------------------------------------------------------------------------------------------
# the CLI, as a user runs it (own process: exit code, stderr, no traceback)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_compare_broken_inputs(tmp_path):
    bad = broken_instance(tmp_path)
    bogus = bogus_profile(tmp_path)
    out = tmp_path / "out"
    # two spawned worker processes started from `python -m rtopt` (spawn-safety)
    cp = subprocess.run([sys.executable, "-m", "rtopt", "compare", str(HYPO), str(bad),
                         "-s", "exhaustive", "-s", str(bogus), "-o", str(out),
                         "--time-limit", str(TIME_LIMIT_S), "--repeat", "2", "--workers", "2"],
                        capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert cp.returncode == 1
    err = [line for line in cp.stderr.splitlines() if line.strip()]
    assert "Traceback" not in cp.stderr
    assert err[0].startswith(f"{bad}: tumour.alpha_beta_gy: ")
    assert err[-1].startswith(f"{bogus}: backend: unknown backend 'no_such_backend'")
    assert len(err) == 2, err
    table = read_table(out / "results.csv")
    assert [(r["instance"], r["profile"], r["repeat"], r["status"]) for r in table] == [
        ("classic-mizuta-hypo", "exhaustive", 0, "optimal"),
        ("classic-mizuta-hypo", "exhaustive", 1, "optimal")]
    assert (out / "report.html").is_file()


@pytest.mark.slow
def test_cli_compare_all_good_exits_0(tmp_path):
    """Valid inputs: exit 0 whatever the runs' statuses (a back-end being written may be
    unavailable, decline, or fail: each is a row)."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(HYPO), "-s", "exhaustive,cvxpy_convex",
                                 "-o", str(out), "--time-limit", str(TIME_LIMIT_S)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    table = read_table(out / "results.csv")
    assert [(r["profile"], r["status"]) for r in table][0] == ("exhaustive", "optimal")
    assert [r["profile"] for r in table] == ["exhaustive", "cvxpy_convex"]
    assert table[1]["status"] in {"optimal", "feasible", "unavailable", "declined", "error",
                                  "no_solution"}


def test_cli_compare_nothing_to_run(tmp_path):
    result = runner.invoke(app, ["compare", str(tmp_path / "missing.toml"), "-s", "exhaustive",
                                 "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"{tmp_path / 'missing.toml'}: file not found", "nothing to compare: no valid instance"]


# ---------------------------------------------------------------------------------------------
# worker processes: a crashing or hanging back-end costs only its own row
# ---------------------------------------------------------------------------------------------
def fake_run(task):
    """Stands in for rtopt.outputs.compare.run_task in spawned workers (imported there by name)."""
    import os
    import time

    from rtopt.outputs.compare import _early_result

    if task.profile_key == "crash":
        os._exit(3)
    if task.profile_key == "hang":
        time.sleep(600)
    return {"result": _early_result(task, "declined", f"ran {task.instance}"), "worst_slack": None}


@pytest.mark.slow
def test_worker_crash_and_hang_cost_one_row_each(monkeypatch):
    from rtopt.outputs import compare as cmp
    from rtopt.planning.profiles import Profile

    monkeypatch.setattr(cmp, "HARD_LIMIT_GRACE_S", 2.0)
    monkeypatch.setattr(cmp, "HARD_LIMIT_FACTOR", 1.0)
    tasks = [cmp.Task(f"i{k}", str(HYPO), Profile(name, "exhaustive"), name, 0, 0, 0.5)
             for k in range(2) for name in ("ok", "crash", "hang")]
    seen = []
    outs = cmp.run_all(tasks, 2, True, lambda done, total, label: seen.append(done), fake_run)
    got = [(t.instance, t.profile_key, o["result"]["status"], o["result"]["message"])
           for t, o in zip(tasks, outs)]
    for inst in ("i0", "i1"):
        ok, crash, hang = [g for g in got if g[0] == inst]
        assert ok[2:] == ("declined", f"ran {inst}")
        assert crash[2] == "error" and "process died (exit code 3" in crash[3]
        assert hang[2] == "error" and hang[3].startswith("stopped: no result 2 s after")
    assert sorted(seen) == list(range(1, 7))


# ---------------------------------------------------------------------------------------------
# performance profiles and traffic lights (pure functions of the table)
# ---------------------------------------------------------------------------------------------
def _row(inst, prof, status="optimal", obj=1.0, t=1.0, gap=0.0, rep=0):
    return {"instance": inst, "profile": prof, "repeat": rep, "status": status,
            "objective": obj if status in ("optimal", "feasible") else None,
            "wall_time_s": t, "gap_to_best": gap if status in ("optimal", "feasible") else None}


def test_performance_profile_known_answer():
    table = [_row("i1", "A", t=1.0), _row("i1", "B", t=4.0, gap=0.5, obj=0.5),
             _row("i2", "A", t=3.0), _row("i2", "B", status="declined", t=0.001)]
    pt = performance_profile(table, "wall_time")
    assert isinstance(pt, PerformanceProfile)
    assert pt.instances == ("i1", "i2") and pt.profiles == ("A", "B")
    np.testing.assert_allclose(pt.ratios, [[1.0, 4.0], [1.0, np.inf]])
    np.testing.assert_allclose(pt.fraction_within(1.0), [1.0, 0.0])
    np.testing.assert_allclose(pt.fraction_within(4.0), [1.0, 0.5])
    np.testing.assert_allclose(pt.solved(), [1.0, 0.5])  # unsolved = infinite ratio
    po = performance_profile(table, "objective_gap")
    np.testing.assert_allclose(po.ratios, [[1.0, 1.5], [1.0, np.inf]])
    taus, frac = po.curve("B")
    np.testing.assert_allclose(taus, [1.0, 1.5])
    np.testing.assert_allclose(frac, [0.0, 0.5])


def test_performance_profile_repeats_use_the_median_and_nobody_solved():
    table = [_row("i1", "A", t=1.0, rep=0), _row("i1", "A", t=3.0, rep=1),
             _row("i1", "A", status="error", rep=2),
             _row("i1", "B", t=2.0, rep=0), _row("i1", "B", t=2.0, rep=1),
             _row("i1", "B", t=2.0, rep=2),
             _row("i2", "A", status="infeasible"), _row("i2", "B", status="infeasible")]
    pt = performance_profile(table, "wall_time")
    np.testing.assert_allclose(pt.ratios[0], [1.5, 1.0])  # median of (1, 3, inf) = 3
    assert np.isinf(pt.ratios[1]).all()
    with pytest.raises(ValueError):
        performance_profile(table, "colour")


def test_plot_performance_profiles_returns_fig_axes(tmp_path):
    table = [_row("i1", "A", t=1.0), _row("i1", "B", t=2.0, gap=0.1, obj=0.9),
             _row("i2", "A", status="declined"), _row("i2", "B", t=1.0)]
    fig, axes = plot_performance_profiles(table, path=tmp_path / "pp.png")
    assert len(axes) == 2
    assert (tmp_path / "pp.png").read_bytes().startswith(b"\x89PNG")
    fig, axes = plot_performance_profiles(table, ["wall_time"])
    assert len(axes) == 1


def test_traffic_light():
    lim = {"kind": "limit", "ok": True, "limit": 90.0}
    assert traffic_light({**lim, "slack": 0.0}) == "amber"
    assert traffic_light({**lim, "slack": 4.4}) == "amber"  # 4.9 % of the limit
    assert traffic_light({**lim, "slack": 4.5}) == "green"  # 5 %
    assert traffic_light({**lim, "ok": False, "slack": -1.0}) == "red"
    assert traffic_light({"kind": "rule", "ok": True, "limit": 0.0, "slack": 0.0}) == "green"
    assert traffic_light({"kind": "rule", "ok": False, "limit": 0.0, "slack": -1.0}) == "red"


# ---------------------------------------------------------------------------------------------
# every registered back-end on a classic instance (slow: real solvers, real time limits)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_backend_gives_a_row(tmp_path):
    names = sorted(k for k in BACKENDS if not k.startswith("fake_"))
    s = compare([TWO_OAR, HYPO], names, tmp_path / "o", time_limit_s=10.0, workers=2)
    assert s.ok
    valid = {"optimal", "feasible", "infeasible", "no_solution", "unavailable", "declined",
             "error"}
    assert [(r["instance"], r["profile"]) for r in s.rows] == [
        (i, p) for i in ("classic-two-oar", "classic-mizuta-hypo") for p in names]
    for r in read_table(tmp_path / "o" / "results.csv"):
        assert r["status"] in valid
        if r["status"] in ("optimal", "feasible"):
            d = plan_json(tmp_path / "o", r)
            assert d["verified"] and d["objective"]["value"] == r["objective"]
        else:
            assert r["message"], r
