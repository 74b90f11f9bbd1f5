"""Hostile and concurrent use (issue 20, item 8): every case is one line per problem, exit 1,
within seconds, never a traceback.  These are regression tests of a fuzzing and crafted-file
run; each names the case it stands for."""

from __future__ import annotations

import json
import os
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
    assert "more problems" in lines[-1]
