"""Install-anywhere items: shipped profiles, start-up time, --version, completion, licence,
typing marker, the example script, calibrate --write, bench errors, and the exit-code table."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rtopt
from rtopt.cli import app
from rtopt.cli import _common
from rtopt.cli._common import EXIT_CODES_HELP, ExitCode

ROOT = Path(__file__).resolve().parents[1]
HYPO = str(ROOT / "instances" / "classic-mizuta-hypo.toml")
LUNG = str(ROOT / "instances" / "lung-sbrt-peripheral.toml")
runner = CliRunner()
HEAVY = ("numpy", "numba", "scipy", "cvxpy", "pyomo", "matplotlib", "pydantic")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# ---------------------------------------------------------------------------- start-up
def test_help_imports_no_heavy_library(tmp_path):
    """`rtopt --help` must not load the numerical stack (it took ~1.5 s when it did)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "rtopt", "--help"],
                       capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in p.stderr.splitlines()
                if line.startswith("import time:")}
    loaded = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert loaded == [], loaded
    assert "Exit codes:" in p.stdout


def test_import_rtopt_is_lazy_but_complete():
    code = ("import sys, rtopt; assert 'numpy' not in sys.modules; "
            "assert callable(rtopt.solve) and rtopt.Plan and rtopt.InstanceError; "
            "assert set(rtopt.__all__) <= set(dir(rtopt)); "
            # importing the submodule rtopt.planning.solve must not hide the function rtopt.solve
            "import rtopt.planning.solve; from rtopt.planning.solve import Result; from rtopt import solve; "
            "assert callable(rtopt.solve) and callable(solve); print('ok')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert p.stdout.strip() == "ok", p.stderr[-2000:]
    with pytest.raises(AttributeError):
        rtopt.no_such_name  # noqa: B018


def test_version_and_completion():
    r = runner.invoke(app, ["--version"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert r.exit_code == 0 and r.stdout.strip() == f"rtopt {version}" == f"rtopt {rtopt.__version__}"
    h = runner.invoke(app, ["--help"])
    assert "--install-completion" in h.stdout and "--version" in h.stdout


# ---------------------------------------------------------------------------- packaging
def test_packaging_metadata():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(d.startswith("jsonschema") for d in py["project"]["optional-dependencies"]["test"])
    assert py["project"]["license"] == {"text": "MIT"}
    lic = (ROOT / "LICENSE").read_text()
    assert lic.startswith("MIT License") and "2026 rtopt developers" in lic
    assert (ROOT / "rtopt" / "py.typed").is_file()


def test_build_ships_profiles_and_typing_marker(tmp_path):
    """setuptools' build step of `pip install .` (build_py) puts solvers/*.toml into
    rtopt/_solvers and ships py.typed; every sub-package folder is listed in pyproject."""
    p = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                        "build_py", "--build-lib", str(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    shipped = {f.name for f in (ROOT / "solvers").glob("*.toml")}
    assert shipped and shipped == {f.name for f in (tmp_path / "rtopt" / "_solvers").glob("*.toml")}
    assert (tmp_path / "rtopt" / "py.typed").is_file()
    assert (tmp_path / "rtopt" / "outputs" / "templates").is_dir()
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    folders = {".".join(d.relative_to(ROOT).parts) for d in (ROOT / "rtopt").rglob("*")
               if d.is_dir() and d.name != "__pycache__"
               and any(d.glob("*.py")) or d.name == "templates"}
    assert folders <= listed, folders - listed


def test_shipped_profiles_come_before_a_local_solvers_folder(tmp_path, monkeypatch):
    """Installed layout: profiles in rtopt/_solvers; ./solvers must not override them."""
    shipped = tmp_path / "pkg" / "_solvers"
    shipped.mkdir(parents=True)
    (shipped / "scipy-de.toml").write_text((ROOT / "solvers" / "scipy-de.toml").read_text())
    local = tmp_path / "work" / "solvers"
    local.mkdir(parents=True)
    (local / "scipy-de.toml").write_text('backend = "exhaustive"\n')
    monkeypatch.chdir(tmp_path / "work")
    from rtopt.planning import profiles

    monkeypatch.setattr(profiles, "shipped_dir", lambda: shipped)
    prof = _common.resolve_solver("scipy-de")
    assert prof.backend == "scipy_de" and Path(prof.path).parent == shipped
    assert _common.resolve_solver(str(local / "scipy-de.toml")).backend == "exhaustive"
    names = [p.name for p in _common.cli_profiles() if hasattr(p, "backend")]
    assert names.count("scipy-de") == 1
    with pytest.raises(rtopt.RtoptError, match="unknown solver profile.*did you mean 'scipy-de'"):
        _common.resolve_solver("scipy-dee")
    for huge in ("z" * 1_000_000, "z" * 1_000_000 + ".toml"):
        with pytest.raises(rtopt.RtoptError) as info:
            _common.resolve_solver(huge)
        assert len(str(info.value)) < 300


# ---------------------------------------------------------------------------- calibrate, bench
def test_calibrate_refuses_to_write_into_an_installed_package(tmp_path, monkeypatch):
    from rtopt.cli import cmd_model

    pkg = tmp_path / "site-packages" / "rtopt"
    (pkg / "data").mkdir(parents=True)
    (pkg / "cli").mkdir()
    monkeypatch.setattr(cmd_model, "__file__", str(pkg / "cli" / "cmd_model.py"))
    r = runner.invoke(app, ["calibrate", "--write", str(pkg / "data" / "calibrated.py")])
    assert r.exit_code == 1 and "refusing to write" in r.stderr and "Traceback" not in r.output
    assert not (pkg / "data" / "calibrated.py").exists()
    r = runner.invoke(app, ["calibrate", "--write", str(tmp_path / "nowhere" / "c.py")])
    assert r.exit_code == 1 and "does not exist" in r.stderr


def test_calibrate_writes_where_asked(tmp_path, monkeypatch):
    """The CLI side of --write PATH (the fit itself is tested elsewhere: stubbed here with the
    shipped presets, which saves ~15 s)."""
    from types import SimpleNamespace

    import rtopt.model.calibrate as cal
    from rtopt.model.parameters import resolve

    fake = SimpleNamespace(values={site: dict(resolve(site).values) for site, _, _ in cal.FIT_PLAN},
                           cost={}, rows=[], all_within_band=lambda: True)
    monkeypatch.setattr(cal, "calibrate", lambda: fake)
    r = runner.invoke(app, ["calibrate", "--write", str(tmp_path)])
    out = tmp_path / "calibrated.py"
    assert f"wrote {out}" in r.stderr, r.output
    ns: dict = {}
    exec(out.read_text(), ns)  # noqa: S102 - our own generated module
    assert set(ns["CALIBRATED"]) and set(ns["FITTED"])


def test_bench_unknown_profile_or_no_instances_is_an_error(monkeypatch):
    r = runner.invoke(app, ["bench", "-n", "128", "--reference", "1", "-s", "exhaustve"])
    assert r.exit_code == 1 and "unknown solver profile" in r.stderr
    assert "did you mean 'exhaustive'" in r.stderr and r.stdout == ""
    import rtopt.outputs.bench

    monkeypatch.setattr(rtopt.outputs.bench, "default_instances", lambda: [])
    r = runner.invoke(app, ["bench", "-n", "128", "--reference", "1", "-s", "exhaustive"])
    assert r.exit_code == 1 and "no instances" in r.stderr and r.stdout == ""


# ---------------------------------------------------------------------------- examples
def test_example_script_runs_from_another_folder(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "plan_lung.py"),
                        "--time-limit", "2"], capture_output=True, text=True, cwd=tmp_path,
                       env=_env(), timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith("lung-sbrt-peripheral")
    assert any(ln.startswith("exhaustive") and " feasible" in ln for ln in lines)
    assert any(ln.startswith("clinician") for ln in lines)
    assert "examples/plan_lung.py" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------------------- exit codes
def test_exit_code_table_has_no_collisions_and_is_documented():
    codes = [int(c) for c in ExitCode]
    assert len(set(codes)) == len(codes)
    readme = (ROOT / "README.md").read_text()
    for c in ExitCode:
        assert f"{int(c)} " in EXIT_CODES_HELP
        assert f"| {int(c)} |" in readme, c
    assert "Exit codes:" in runner.invoke(app, ["--help"]).stdout


def test_each_exit_code(tmp_path, monkeypatch):
    import rtopt.planning.solve  # noqa: F401 - loaded, so that it can be patched below
    assert runner.invoke(app, ["validate", HYPO]).exit_code == ExitCode.OK
    assert runner.invoke(app, ["validate", str(tmp_path / "none.toml")]).exit_code == ExitCode.ERROR
    assert runner.invoke(app, ["solve", HYPO, "--no-such-option"]).exit_code == ExitCode.USAGE
    bad = tmp_path / "infeasible.toml"
    bad.write_text(Path(HYPO).read_text().replace("min_bed_gy = ", "min_bed_gy = 700 #"))
    assert runner.invoke(app, ["solve", str(bad)]).exit_code == ExitCode.INFEASIBLE
    r = runner.invoke(app, ["simulate", LUNG, "--dose", "25", "--days", "0,1,2,3,4,7,8,9"])
    assert r.exit_code == ExitCode.VIOLATED, r.output

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    # the module rtopt.planning.solve, where the CLI looks the function up
    monkeypatch.setattr(sys.modules["rtopt.planning.solve"], "solve", interrupted)
    r = runner.invoke(app, ["solve", HYPO])
    assert r.exit_code == ExitCode.INTERRUPTED and "interrupted" in r.stderr


def test_unverified_solver_plan_exits_4():
    from rtopt.problem.problem import Plan
    from rtopt.planning.solve import Result

    class R:  # the fields exit_code reads, as a failed-verification result carries them
        feasible, status, plan = False, "no_solution", Plan.uniform((0,), 1.0, ())

    code = Result.exit_code.fget  # the library's property, which the CLI uses
    assert code(R()) == ExitCode.VIOLATED
    R.plan = None
    assert code(R()) == ExitCode.ERROR
    R.status = "infeasible"
    assert code(R()) == ExitCode.INFEASIBLE


def test_solve_stays_the_function_whatever_is_imported_first():
    # importing the module rtopt.planning.solve after `import rtopt` must not turn rtopt.solve into it
    code = ("import rtopt; from rtopt.planning.solve import Result; import rtopt.problem.problem; "
            "assert callable(rtopt.solve), rtopt.solve; print('ok')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert p.stdout.strip() == "ok", p.stderr[-2000:]


def test_every_command_is_listed_under_a_task_panel():
    from rtopt.cli import _PANELS, app

    names = [c.name for c in app.registered_commands]
    assert sorted(names) == sorted(n for n, _ in _PANELS), "place new commands in _PANELS"
    assert all(c.rich_help_panel != "Other" for c in app.registered_commands)
