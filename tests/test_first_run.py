"""The first run of a fresh installation: where compiled kernels are kept, which kernels a
command compiles, the notice while they compile, and the compile time reported apart."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from rtopt.model import jitcache
from rtopt.model.simulator import compile_kernels
from rtopt.model.simulator.batch import KERNEL_GROUPS
from rtopt.planning.solve import Result, kernel_groups
from rtopt.problem.problem import Problem

ROOT = Path(__file__).resolve().parents[1]

_COMPILE_SMALL = """
import json, numpy as np
from rtopt.model.simulator import kernels as K
K.fraction_index(np.array([[0.0, 8.0, 0.0, 8.0]]))   # compiles two small kernels
st = K._fraction_scan_serial.stats
print(json.dumps({"hits": sum(st.cache_hits.values()), "misses": sum(st.cache_misses.values()),
                  "path": st.cache_path, "module": K.__file__}))
"""


def _install_copy(dest: Path) -> None:
    """A second, independent installation of this source (setuptools' build step of
    ``pip install .``, as in test_cli_install)."""
    p = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                        "build_py", "--build-lib", str(dest)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


def test_a_second_installation_reuses_the_compiled_kernels(tmp_path):
    """Two installations in different folders share one per-user, per-version cache: the
    second loads what the first compiled (numba alone keyed its cache by the source's folder,
    so a second install compiled everything again: 112 s)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["RTOPT_CACHE_DIR"] = str(tmp_path / "cache")
    runs = []
    for name in ("site-a", "site-b"):
        _install_copy(tmp_path / name)
        p = subprocess.run([sys.executable, "-c", _COMPILE_SMALL], capture_output=True,
                           text=True, cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path / name)},
                           timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout))
    a, b = runs
    assert a["module"].startswith(str(tmp_path / "site-a"))
    assert b["module"].startswith(str(tmp_path / "site-b"))
    assert (a["hits"], a["misses"]) == (0, 1) and (b["hits"], b["misses"]) == (1, 0), runs
    from rtopt import __version__

    assert a["path"] == b["path"]
    assert Path(a["path"]).is_relative_to(tmp_path / "cache" / __version__)


def test_cache_root_honours_the_users_numba_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(jitcache, "_USER_NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert jitcache.cache_root() == tmp_path / "numba"
    monkeypatch.setattr(jitcache, "_USER_NUMBA_CACHE_DIR", None)
    monkeypatch.setenv("RTOPT_CACHE_DIR", str(tmp_path / "rt"))
    assert jitcache.cache_root() == tmp_path / "rt"
    monkeypatch.delenv("RTOPT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert jitcache.cache_root() == tmp_path / "xdg" / "rtopt"


def test_compile_kernels_by_group():
    """Kernels compile per group, once per process (conftest compiled them all already, so
    numba's cache holds them)."""
    from rtopt.model.simulator.batch import kernels_cached

    assert all(kernels_cached(g) for g in KERNEL_GROUPS)
    assert compile_kernels(("horizon",), threaded=False) == 0.0
    assert compile_kernels() == 0.0
    with pytest.raises(ValueError, match="unknown kernel group"):
        compile_kernels(("trajectory",))


def test_a_solve_compiles_only_the_kernels_it_runs(load):
    lung = Problem(load("lung-sbrt-peripheral"))
    assert kernel_groups(lung, "exhaustive") == ("horizon", "population", "infusion")
    # differential evolution simulates whole schedules: no single-infusion responses
    assert kernel_groups(lung, "scipy_de") == ("horizon", "population")
    assert kernel_groups(lung, "scipy_de", robust=True) == KERNEL_GROUPS
    # a tumour-BED objective simulates only to verify the plan
    bed = Problem(load("lung-sbrt-classic-bed"))
    assert kernel_groups(bed, "exhaustive") == ("horizon", "population")


def test_the_result_reports_compile_time_apart():
    from rtopt.cli._common import compiled_note

    fields = {f for f in Result.__dataclass_fields__}
    assert "compile_time_s" in fields and "wall_time_s" in fields
    assert compiled_note(25.4) == " (+ 25 s compiling the simulator, once)"
    assert compiled_note(2.0) == ""  # loading from the cache is not worth a mention


def test_solve_json_carries_compile_time(load):
    from rtopt.planning.solve import solve

    r = solve(load("lung-sbrt-classic-bed"), "exhaustive")
    d = r.to_dict()
    assert d["compile_time_s"] == 0.0  # conftest compiled every kernel before
    assert d["wall_time_s"] > 0


def test_compile_notice_only_when_compiling_takes_time():
    """Loading kernels from the cache (well under a second) shows nothing; a compile shows a
    line naming the version and the cache folder, and the time it took.  The display is
    started by a timer; here it is started by hand, so nothing depends on the clock."""
    from rtopt.cli._common import CompileNotice

    buf = io.StringIO()
    quick = CompileNotice(Console(file=buf, width=200), delay_s=3600.0)
    quick("compiling the horizon kernel", 0, 2)
    quick("compiling the population kernel", 1, 2)
    quick(None, 2, 2)
    assert buf.getvalue() == ""
    cached = CompileNotice(Console(file=buf, width=200), delay_s=0.0)
    cached("loading the horizon kernel", 0, 1)  # from the cache: no timer, no notice
    assert cached._timer is None
    cached(None, 1, 1)
    assert buf.getvalue() == ""

    buf = io.StringIO()
    slow = CompileNotice(Console(file=buf, width=200), delay_s=3600.0)
    slow("compiling the horizon kernel", 0, 2)
    slow._show()  # what the timer does when the step is still running after delay_s
    slow("compiling the infusion kernel", 1, 2)
    slow(None, 2, 2)
    text = buf.getvalue()
    from rtopt import __version__

    assert f"compiling the simulator kernels (first run of rtopt {__version__}" in text
    assert str(jitcache.kernel_cache_dir()) in text
    assert "rtopt: compiled in " in text and "once per rtopt version" in text


def test_rtopt_solve_shows_the_compile_notice(monkeypatch):
    """`rtopt solve` hands a CompileNotice to the solve (a merge once dropped it, and a first
    run sat silent again while the kernels compiled)."""
    import rtopt.decisions.facade as facade
    from typer.testing import CliRunner

    from rtopt.cli import app
    from rtopt.cli._common import CompileNotice

    seen = []
    real = facade.solve

    def spy(*args, **kwargs):
        seen.append(kwargs.get("compile_progress"))
        return real(*args, **kwargs)

    monkeypatch.setattr(facade, "solve", spy)
    r = CliRunner().invoke(app, ["solve", str(ROOT / "instances" / "lung-sbrt-classic-bed.toml")])
    assert r.exit_code == 0, r.output
    assert len(seen) == 1 and isinstance(seen[0], CompileNotice)


@pytest.mark.parametrize("command", ["pareto", "replan"])
def test_pareto_and_replan_show_the_compile_notice(monkeypatch, tmp_path, command):
    """`rtopt pareto` and `rtopt replan` compile before their clock, and say so on a first run
    as `rtopt solve` does: they hand a CompileNotice to the library call."""
    import rtopt.decisions.adaptive as adaptive
    import rtopt.decisions.pareto as pareto_mod
    from typer.testing import CliRunner

    from rtopt.cli import app
    from rtopt.cli._common import CompileNotice

    seen = []

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        seen.append(kwargs.get("compile_progress"))
        raise Stop  # the call itself is not under test here

    mod, name = (pareto_mod, "pareto") if command == "pareto" else (adaptive, "replan")
    monkeypatch.setattr(mod, name, spy)
    lung = str(ROOT / "instances" / "lung-sbrt-peripheral.toml")
    args = ([command, lung, "--objectives", "local_control,tumour_bed", "-o", str(tmp_path / "f")]
            if command == "pareto"
            else [command, lung, str(ROOT / "instances" / "courses" / "lung-sbrt-peripheral.toml")])
    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, Stop) or seen, r.output
    assert len(seen) == 1 and isinstance(seen[0], CompileNotice)


@pytest.mark.parametrize("command", ["bench", "trial", "sensitivity"])
def test_bench_trial_and_sensitivity_show_the_compile_notice(monkeypatch, tmp_path, command):
    """`rtopt bench`, `rtopt trial` and `rtopt sensitivity` run the simulator without a solve;
    they compile the kernels before their work with a CompileNotice (a first run compiled
    silently inside the work before).  The spy stops the command there: the work itself is
    not under test."""
    import rtopt.model.simulator as simulator
    from typer.testing import CliRunner

    from rtopt.cli import app
    from rtopt.cli._common import CompileNotice

    seen = []

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        seen.append(kwargs.get("progress"))
        raise Stop

    monkeypatch.setattr(simulator, "compile_kernels", spy)
    lung = str(ROOT / "instances" / "lung-sbrt-peripheral.toml")
    plan = str(ROOT / "instances" / "plans" / "lung-sbrt-54-3.json")
    args = {"bench": ["bench", "-n", "100", "--no-workloads"],
            "trial": ["trial", lung, "--arm", f"a={plan}", "-n", "2", "-o", str(tmp_path / "t")],
            "sensitivity": ["sensitivity", lung, "--plan", plan, "-n", "2"]}[command]
    r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, Stop), r.output
    assert len(seen) == 1 and isinstance(seen[0], CompileNotice)


def test_bench_counts_the_compile_apart(monkeypatch):
    """`rtopt bench` says what a first compile cost beside its times (which never include it),
    as `rtopt solve` does; nothing when the kernels were loaded from the cache."""
    import rtopt.model.simulator as simulator
    import rtopt.outputs.bench as bench
    from typer.testing import CliRunner

    from rtopt.cli import app

    row = {"name": "x", "schedules": 100, "seconds": 1.0, "per_second": 100.0,
           "per_second_min": 90.0, "per_second_max": 110.0}
    fake = {"rows": [dict(row) for _ in range(4)], "ratio": 1.0, "ratio_full": 1.0,
            "horizon_days": 21, "steps_per_day": 8, "cpus": 2, "repeats": 1,
            "max_rel_err_nk": 0.0, "max_rel_err_ln_s": 0.0, "peak_mib": 1.0, "chunk": 100}
    monkeypatch.setattr(bench, "bench_simulator", lambda **kw: fake)
    for seconds, expected in ((25.4, "(+ 25 s compiling the simulator, once)"), (0.4, None)):
        monkeypatch.setattr(simulator, "compile_kernels", lambda *a, s=seconds, **kw: s)
        r = CliRunner().invoke(app, ["bench", "-n", "100", "--no-workloads"])
        assert r.exit_code == 0, r.output
        if expected:
            assert expected in r.output
        else:
            assert "compiling the simulator" not in r.output
