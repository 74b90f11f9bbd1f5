"""Instances that make no sense are errors: physical ranges, relations between fields, and
echoed values cut to a readable length."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.common.errors import InstanceError
from rtopt.problem.instance import instance_from_dict, instance_json_schema

ROOT = Path(__file__).resolve().parents[1]
LUNG = tomllib.loads((ROOT / "instances" / "lung-sbrt-peripheral.toml").read_text())
MAX_LINE = 400
"""Longest acceptable error line (characters): a terminal screen width or two, whatever the input."""


def problems(fn) -> list[str]:
    data = copy.deepcopy(LUNG)
    fn(data)
    try:
        instance_from_dict(data, source="bad.toml")
    except InstanceError as e:
        return e.lines()
    return []


@pytest.mark.parametrize("fn, line", [
    (lambda d: d["tumour"].update(alpha_per_gy=1e300),
     "bad.toml: tumour.alpha_per_gy: must be in (0, 2] 1/Gy, got 1e+300"),
    (lambda d: d["tumour"].update(alpha_beta_gy=1000.0),
     "bad.toml: tumour.alpha_beta_gy: must be in (0, 100] Gy, got 1000.0"),
    (lambda d: d["tumour"].update(clonogens=0.5),
     "bad.toml: tumour.clonogens: must be in [1, 1e+13], got 0.5"),
    (lambda d: d["tumour"].update(clonogens=10 ** 400),
     "bad.toml: tumour.clonogens: must be in [1, 1e+13], got 100000000000...(401 digits)"),
    (lambda d: d["fractionation"].update(dose_per_fraction_gy=[6.0, 250.0]),
     "bad.toml: fractionation.dose_per_fraction_gy[1]: must be in (0, 100] Gy, got 250.0"),
    (lambda d: d["organ_at_risk"][0].update(max_bed_gy=1e9),
     "bad.toml: organ_at_risk[0].max_bed_gy: must be in (0, 5000] Gy, got 1000000000.0"),
    (lambda d: d["fractionation"].update(dose_step_gy=1e-9),
     "bad.toml: fractionation.dose_step_gy: must be 0 (continuous) or in [0.0001, 100] Gy, got "
     "1e-09: finer steps are far below delivery precision (~0.01 Gy)"),
    (lambda d: d["tumour"].update(potential_doubling_days=1e6),
     "bad.toml: tumour.potential_doubling_days: must be in (0, 365] days, got 1000000.0"),
    (lambda d: d["objective"].update(maximise=None) or d.update(
        objective={"weights": {"tcp": 1e300}}),
     "bad.toml: objective.weights.tcp: must be in [0, 1e+06], got 1e+300"),
])
def test_physical_ranges(fn, line):
    assert problems(fn) == [line]


def test_every_numeric_field_has_both_bounds_in_the_schema():
    """The JSON Schema (what editors check) carries a physical range for every number."""
    missing = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") in ("number", "integer") and "const" not in node:
                lo = {"minimum", "exclusiveMinimum"} & set(node)
                hi = {"maximum", "exclusiveMaximum"} & set(node)
                if not (lo and hi):
                    missing.append(path)
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(instance_json_schema(), "")
    assert missing == []


@pytest.mark.parametrize("fn, field, words", [
    (lambda d: d["fractionation"].update(horizon_days=20) or d["nk"].update(latest_day=19),
     "fractionation.max_overall_days", "window of 21 days is longer than horizon_days 20"),
    (lambda d: d["fractionation"].update(min_interval_days=7),
     "fractionation.n_fractions", "the maximum 8 cannot be reached"),
    (lambda d: d["nk"].update(n_infusions=[1, 7]),  # days 0, 7, ..., 35: six fit
     "nk.n_infusions", "at most 6 infusion(s) at least 7 day(s) apart fit"),
    (lambda d: d["nk"].update(n_infusions=[0, 0]),
     "nk.n_infusions", "allows no infusion"),
    (lambda d: d["nk"].update(earliest_day=30, latest_day=20),
     "nk.earliest_day", "is after latest_day 20"),
    (lambda d: d["nk"].update(latest_day=50),
     "nk.latest_day", "beyond the horizon"),
])
def test_impossible_combinations_are_one_line_errors(fn, field, words):
    lines = problems(fn)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"bad.toml: {field}: ") and words in lines[0], lines[0]


def test_echoed_values_are_cut():
    huge = "x" * 2_000_000
    for fn in (lambda d: d["nk"].update(cytokine_support=huge),
               lambda d: d["nk"].update(cytokine_support="il" + huge),
               lambda d: d["tumour"].update(site=huge),
               lambda d: d["tumour"].update(alpha_per_gy=huge),
               lambda d: d["tumour"].update(**{huge: 1}),
               lambda d: d.update(name=huge),
               lambda d: d["fractionation"].update(treatment_weekdays=[huge])):
        lines = problems(fn)
        assert lines and all(len(ln) <= MAX_LINE for ln in lines), [ln[:200] for ln in lines]


def test_validate_cli_long_value_one_short_line(tmp_path):
    text = (ROOT / "instances" / "lung-sbrt-peripheral.toml").read_text().replace(
        'cytokine_support = "none"', 'cytokine_support = "' + "y" * 2_000_000 + '"')
    f = tmp_path / "big.toml"
    f.write_text(text)
    r = CliRunner().invoke(app, ["validate", str(f)])
    assert r.exit_code == 1
    err = r.stderr.splitlines()
    assert len(err) == 1 and len(err[0]) <= MAX_LINE and "nk.cytokine_support" in err[0]


def test_huge_file_name_is_one_short_line():
    r = CliRunner().invoke(app, ["validate", "q" * 100_000 + ".toml"])
    assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1
    assert len(r.stderr) <= MAX_LINE and "cannot open" in r.stderr
