"""Fuzzing the shipped instances: mutated files give one-line errors or a result, the
documented exit codes, never a traceback; accepted ones solve within the time limit and a
memory cap.

The default run keeps a fast variant (validation of 60 mutants, and a few solves with a 1 s
limit); the full solve run (60 mutants, 5 s limit) is marked ``slow``.
"""

from __future__ import annotations

import copy
import json
import math
import resource
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.cli._common import ExitCode

from _timing import GENEROUS_OVERSHOOT_S

ROOT = Path(__file__).resolve().parents[1]
INSTANCES = sorted(ROOT.glob("instances/*.toml"))
BASES = {p.name: tomllib.loads(p.read_text()) for p in INSTANCES}
runner = CliRunner()

MAX_LINE = 400
"""Longest acceptable error line: echoed values are cut to ~60-80 characters, paths are short."""
MEMORY_LIMIT_MB = 512
"""--memory-limit given to every fuzzed solve."""
RSS_MARGIN_MB = 300
"""Growth of this process's peak RSS allowed beyond the memory limit: the numerical libraries,
numba's compiled kernels and matplotlib loaded on first use (~200 MB)."""

SOLVE_CODES = {ExitCode.OK, ExitCode.ERROR, ExitCode.INFEASIBLE, ExitCode.VIOLATED}

_VALUES = st.one_of(
    st.sampled_from([0, -1, -1e300, 1e300, 10 ** 30, 1e-300, float("nan"), float("inf"), True,
                     "x", "", "y" * 100_000, [], {}, [1, 2, 3], 0.5, 3650, 1e-4])
)


def _paths(node, prefix=()):
    """Every key path (tables, arrays and leaves) of a parsed TOML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _mutate(data: dict, path: tuple, action: str, value) -> None:
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if action == "drop":
        if isinstance(parent, dict):
            parent.pop(key, None)
        else:
            parent.pop(key)
    elif action == "scale":
        old = parent[key]
        if isinstance(old, (int, float)) and not isinstance(old, bool):
            new = old * value
            parent[key] = int(new) if isinstance(old, int) else float(new)
    else:
        parent[key] = value


@st.composite
def mutants(draw, actions=("drop", "set", "set", "scale")) -> tuple[str, dict]:
    """A shipped instance with 1-3 mutations; ``actions`` weights drop / set / scale (scaling
    a number by 0.5, 2 or 10 often keeps an instance valid, so solves get exercised)."""
    name = draw(st.sampled_from(sorted(BASES)))
    data = copy.deepcopy(BASES[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(list(actions)))
        value = draw(st.sampled_from([0.5, 2, 10])) if action == "scale" else draw(_VALUES)
        _mutate(data, path, action, value)
    return name, data


def _write(tmp_path: Path, data: dict) -> Path | None:
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError):
        return None  # not representable in TOML (e.g. an array of mixed tables)
    f = tmp_path / "mutant.toml"
    f.write_text(text)
    return f


def _assert_clean(r, allowed: set[int]) -> None:
    assert r.exit_code in allowed, (r.exit_code, r.output[-2000:])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    for line in r.stderr.splitlines():
        assert len(line) <= MAX_LINE, line[:200]


def _validate(f: Path):
    r = runner.invoke(app, ["validate", str(f)])
    _assert_clean(r, {ExitCode.OK, ExitCode.ERROR})
    if r.exit_code == ExitCode.ERROR:
        assert r.stdout == ""
        assert all(line.startswith(f"{f}: ") for line in r.stderr.splitlines()), r.stderr
    return r


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(m=mutants())
def test_fuzz_validate(tmp_path, m):
    name, data = m
    f = _write(tmp_path, data)
    if f is not None:
        _validate(f)


SOLVED: list[str] = []
"""Instances the solve tests got to solve (checked below: the fuzzing must reach solves)."""


def _solve_checked(tmp_path: Path, m, limit_s: float) -> None:
    name, data = m
    f = _write(tmp_path, data)
    if f is None or _validate(f).exit_code != ExitCode.OK:
        return
    SOLVED.append(name)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r = runner.invoke(app, ["solve", str(f), "--time-limit", str(limit_s),
                            "--memory-limit", str(MEMORY_LIMIT_MB), "--json"])
    _assert_clean(r, SOLVE_CODES)
    res = json.loads(r.stdout)
    assert res["wall_time_s"] <= limit_s + GENEROUS_OVERSHOOT_S, (name, res["wall_time_s"])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert after - before <= MEMORY_LIMIT_MB + RSS_MARGIN_MB, (name, before, after)
    assert math.isfinite(res["wall_time_s"])


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(m=mutants(actions=("scale", "scale", "scale", "set")))
def test_fuzz_solve_fast(tmp_path, m):
    _solve_checked(tmp_path, m, 1.0)


def test_fuzz_reached_solves():
    """The solve fuzzing is not vacuous: some mutants were valid and solved (runs after
    test_fuzz_solve_fast in file order)."""
    assert len(SOLVED) >= 2, SOLVED


@pytest.mark.slow
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(m=mutants(actions=("scale", "scale", "drop", "set")))
def test_fuzz_solve(tmp_path, m):
    _solve_checked(tmp_path, m, 5.0)
