"""`rtopt solve`, `rtopt solvers`, `rtopt calibrate`, `rtopt bench` and solver-fault handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtopt import solve
from rtopt.backends import BACKENDS
from rtopt.cli import app

ROOT = Path(__file__).resolve().parents[1]
HYPO = str(ROOT / "instances" / "classic-mizuta-hypo.toml")
LUNG = str(ROOT / "instances" / "lung-sbrt-peripheral.toml")
runner = CliRunner()


def test_solve_json_has_the_documented_fields(tmp_path):
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["solve", HYPO, "--json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    for k in ("status", "solver", "objective", "schedule", "metrics", "verified", "wall_time_s"):
        assert k in d
    assert d["objective"]["name"] == "tumour_bed"
    assert d["objective"]["value"] == pytest.approx(637.5, rel=1e-9)
    assert d["schedule"]["fractions"] == [{"day": 0, "dose_gy": 75.0}]
    assert {"tumour_bed_gy", "tumour_eqd2_gy", "oar", "nk_favourability", "tumour_log10_kill",
            "tcp"} <= set(d["metrics"])
    oar = d["metrics"]["oar"][0]
    assert {"name", "bed_gy", "max_bed_gy", "ok"} <= set(oar) and oar["ok"] is True
    assert d["verified"] is True
    assert json.loads(out.read_text())["schedule"] == d["schedule"]


def test_solve_table_output():
    r = runner.invoke(app, ["solve", HYPO])
    assert r.exit_code == 0
    assert "status: optimal" in r.stdout and "1 x 75 Gy" in r.stdout


def test_infeasible_exit_code_3_and_diagnosis(tmp_path):
    bad = tmp_path / "infeasible.toml"
    bad.write_text(Path(HYPO).read_text().replace("min_bed_gy = ", "min_bed_gy = 700 #"))
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["solve", str(bad), "-o", str(out)])
    assert r.exit_code == 3, r.output  # ExitCode.INFEASIBLE; 2 is Click's usage error
    assert "diagnosis" in r.stdout and "637.5" in r.stdout
    assert not out.exists()                      # nothing written for an infeasible instance


def test_bad_inputs_are_one_line_errors(tmp_path):
    r = runner.invoke(app, ["solve", str(tmp_path / "missing.toml")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "missing.toml" in r.output
    r = runner.invoke(app, ["solve", HYPO, "-s", "no_such_solver"])
    assert r.exit_code == 1 and "unknown solver profile" in r.output
    prof = tmp_path / "p.toml"
    prof.write_text('backend = "gurobi_magic"\n')
    r = runner.invoke(app, ["solve", HYPO, "-s", str(prof)])
    assert r.exit_code == 1 and "p.toml: backend: unknown backend 'gurobi_magic'" in r.output


def test_solvers_lists_every_backend():
    r = runner.invoke(app, ["solvers", "--json"])
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert {row["backend"] for row in rows} >= set(BACKENDS)
    assert any(row["profile"] == "exhaustive" for row in rows)


def test_unavailable_backend_is_a_status_not_a_crash(monkeypatch):
    from rtopt.backends.exhaustive import ExhaustiveBackend
    monkeypatch.setattr(ExhaustiveBackend, "available",
                        classmethod(lambda cls: (False, "missing Python package(s): magic")))
    r = solve(HYPO, "exhaustive")
    assert r.status == "unavailable" and "magic" in r.message and r.exit_code == 1


def test_backend_crash_is_a_status_not_a_traceback(monkeypatch):
    from rtopt.backends.exhaustive import ExhaustiveBackend

    def boom(self, problem, options):
        raise FloatingPointError("overflow in the solver\nsecond line")
    monkeypatch.setattr(ExhaustiveBackend, "solve", boom)
    r = solve(HYPO, "exhaustive")
    assert r.status == "error" and r.termination == "numerical_error"
    assert "\n" not in r.message and "overflow" in r.message
    res = runner.invoke(app, ["solve", HYPO])
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_time_limit_is_reported():
    # a tiny time limit still returns the best plan found so far, flagged as time_limit
    r = solve(LUNG, "exhaustive", time_limit_s=1e-3)
    assert r.termination == "time_limit"
    assert r.status == "feasible" and r.verified


def test_calibrate_cli_reports_every_observation():
    r = runner.invoke(app, ["calibrate", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert {o["id"] for o in d["observations"]} >= {"O1a", "O1b", "O2", "O3", "O4", "O5a", "O5b"}
    assert all(o["within_band"] for o in d["observations"])


def test_bench_prints_throughput_and_ratio():
    r = runner.invoke(app, ["bench", "-n", "512", "--reference", "2", "--no-workloads"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())          # the console wraps long lines at its width
    assert "evaluations/s" in text and "speed-up fast / reference" in text
    assert "target 50,000x" in text and "peak memory" in text


@pytest.mark.slow
def test_bench_workloads_print_their_targets():
    r = runner.invoke(app, ["bench", "-n", "512", "--reference", "1", "--samples", "8",
                            "--patients", "50"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert "robust" in text and "trial" in text and "< 60 s" in text and "< 30 s" in text


def test_maximise_overrides_the_instance_objective_and_bad_names_are_one_line():
    r = runner.invoke(app, ["solve", "instances/lung-sbrt-peripheral.toml", "--maximise",
                            "local_control", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["objective"]["name"] == "local_control" and d["verified"]
    # rounded to 9 digits in the JSON, as every figure there
    assert d["objective"]["value"] == pytest.approx(d["metrics"]["local_control"], abs=1e-9)
    r = runner.invoke(app, ["solve", "instances/lung-sbrt-peripheral.toml", "--maximise", "lc"])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        "--maximise 'lc': unknown objective (one of nk_favourability, tumour_log_kill, tcp, "
        "local_control, nk_gain_local_control, nk_gain_log_kill, tumour_bed, "
        "reoxygenation_gain_local_control)"]
