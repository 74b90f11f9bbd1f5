"""CLI: `rtopt validate`, `rtopt schema`, and the shared one-line error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.cli._common import cli_errors, fail, write_atomic
from rtopt.common.errors import InstanceError, SolverUnavailable

REPO_ROOT = Path(__file__).resolve().parents[1]
GOOD = REPO_ROOT / "instances" / "lung-sbrt-peripheral.toml"

runner = CliRunner()


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def bad_file(tmp_path: Path, name: str = "bad.toml") -> Path:
    """An instance with exactly three problems."""
    text = GOOD.read_text()
    text = text.replace("alpha_beta_gy = 10.0", "alpha_beta_gy = -10.0", 1)
    text = text.replace('site = "lung"', 'site = "lungs"', 1)
    text = text.replace("n_fractions = [1, 8]", "n_fractions = [8, 1]", 1)
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# rtopt validate
# ---------------------------------------------------------------------------------------------


def test_validate_good_files(instances_dir):
    files = sorted(str(p) for p in instances_dir.glob("*.toml"))
    result = runner.invoke(app, ["validate", *files])
    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == [f"{f}: OK" for f in files]
    assert result.stderr == ""


def test_validate_bad_file_one_line_per_problem(tmp_path):
    path = bad_file(tmp_path)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert lines(result.stderr) == [
        f"{path}: tumour.site: unknown site 'lungs'; did you mean 'lung'? (one of lung, "
        "prostate, head_and_neck, breast, pancreas, generic)",
        f"{path}: tumour.alpha_beta_gy: must be in (0, 100] Gy, got -10.0",
        f"{path}: fractionation.n_fractions: range [8, 1] has min > max",
    ]
    assert "Traceback" not in result.output


def test_validate_mixed_files(tmp_path):
    bad = bad_file(tmp_path)
    missing = tmp_path / "nope.toml"
    result = runner.invoke(app, ["validate", str(GOOD), str(bad), str(missing)])
    assert result.exit_code == 1
    assert lines(result.stdout) == [f"{GOOD}: OK"]
    err = lines(result.stderr)
    assert len(err) == 4
    assert err[-1] == f"{missing}: file not found"
    assert all(line.startswith(f"{bad}: ") for line in err[:3])


def test_validate_missing_file_is_rtopts_own_message(tmp_path):
    # Not Typer's boxed usage error (exit 2): rtopt's one-line format, exit 1.
    result = runner.invoke(app, ["validate", "does-not-exist.toml"])
    assert result.exit_code == 1
    assert lines(result.stderr) == ["does-not-exist.toml: file not found"]
    assert "Usage" not in result.output and "╭" not in result.output


@pytest.mark.parametrize("content, message", [
    (None, "is a directory, not an instance file"),
    (b"\x00\x01\x02binary", "binary file, not TOML text"),
    (b"schema_version = 1\nname = = 1\n", "TOML syntax error at line 2, column 8: "),
    (b"schema_version = 2\n", "unsupported schema_version 2; this rtopt reads schema_version = 1"),
])
def test_validate_file_level_problems(tmp_path, content, message):
    if content is None:
        target = tmp_path
    else:
        target = tmp_path / "f.toml"
        target.write_bytes(content)
    result = runner.invoke(app, ["validate", str(target)])
    assert result.exit_code == 1
    err = lines(result.stderr)
    assert len(err) == 1 and err[0].startswith(f"{target}: {message}")
    assert "Traceback" not in result.output


def test_long_problem_lines_are_not_wrapped(tmp_path):
    deep = tmp_path / ("a-very-long-directory-name-" * 4)
    deep.mkdir()
    path = bad_file(deep)
    result = runner.invoke(app, ["validate", str(path)], terminal_width=40)
    err = lines(result.stderr)
    assert len(err) == 3 and all(line.startswith(str(path)) for line in err)


def test_validate_needs_a_file():
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 2  # Typer usage error: no FILE given at all


# ---------------------------------------------------------------------------------------------
# rtopt schema
# ---------------------------------------------------------------------------------------------


def test_schema_to_stdout():
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "tumour" in schema["properties"]


def test_schema_output_file(tmp_path):
    target = tmp_path / "instance.schema.json"
    target.write_text("old")  # replaced, not appended to
    result = runner.invoke(app, ["schema", "-o", str(target)])
    assert result.exit_code == 0, result.output
    schema = json.loads(target.read_text())
    assert schema["title"].startswith("rtopt instance")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instance.schema.json"]  # no temp left
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_output_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["schema", "--output", str(tmp_path / "missing-dir" / "s.json")])
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"{tmp_path / 'missing-dir' / 's.json'}: No such file or "
                                    "directory"]
    result = runner.invoke(app, ["schema", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"{tmp_path}: is a directory"]
    assert "Traceback" not in result.output


def test_write_atomic_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")

    def broken_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError) as info:
        write_atomic(target, "new")
    assert info.value.filename == str(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


# ---------------------------------------------------------------------------------------------
# Shared error handling (other commands use it)
# ---------------------------------------------------------------------------------------------

demo = typer.Typer()


@demo.command()
@cli_errors()
def boom(kind: str) -> None:
    if kind == "instance":
        raise InstanceError("x.toml", [("a.b", "must be > 0"), ("", "file-level problem")])
    if kind == "solver":
        raise SolverUnavailable("highs is not installed\npip install highspy")
    if kind == "os":
        raise FileNotFoundError(2, "No such file or directory", "data.csv")
    if kind == "fail":
        fail(["first", "second"], code=3)
    if kind == "bug":
        raise ValueError("a real bug")
    typer.echo("fine")


@pytest.mark.parametrize("kind, code, expected", [
    ("instance", 1, ["x.toml: a.b: must be > 0", "x.toml: file-level problem"]),
    ("solver", 1, ["highs is not installed", "pip install highspy"]),
    ("os", 1, ["data.csv: No such file or directory"]),
    ("fail", 3, ["first", "second"]),
])
def test_cli_errors_turn_library_errors_into_lines(kind, code, expected):
    result = runner.invoke(demo, [kind])
    assert result.exit_code == code
    assert lines(result.stderr) == expected
    assert "Traceback" not in result.output


def test_cli_errors_passes_success_and_real_bugs_through():
    assert runner.invoke(demo, ["ok"]).stdout == "fine\n"
    result = runner.invoke(demo, ["bug"])
    assert isinstance(result.exception, ValueError)  # bugs are not disguised as user errors


# ---------------------------------------------------------------------------------------------
# A real process: exit codes and streams as a shell sees them
# ---------------------------------------------------------------------------------------------


def _rtopt(*args: str) -> subprocess.CompletedProcess:
    path = str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, "-c", "from rtopt.cli import app; app()", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)


def test_subprocess_validate(tmp_path):
    ok = _rtopt("validate", "instances/prostate-sbrt.toml")
    assert ok.returncode == 0 and ok.stdout == "instances/prostate-sbrt.toml: OK\n"
    bad = _rtopt("validate", str(bad_file(tmp_path)), "missing.toml")
    assert bad.returncode == 1
    assert len(lines(bad.stderr)) == 4
    assert "Traceback" not in bad.stderr + bad.stdout
    assert "\x1b[" not in bad.stderr  # no colour codes when not a terminal


def test_subprocess_schema_output(tmp_path):
    target = tmp_path / "schema.json"
    done = _rtopt("schema", "-o", str(target))
    assert done.returncode == 0, done.stderr
    assert json.loads(target.read_text())["$schema"]
