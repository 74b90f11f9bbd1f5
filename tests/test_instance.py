"""Instance format: shipped files, JSON Schema, one exact message per bad input, and fuzzing."""

from __future__ import annotations

import copy
import itertools
import math
import re
import string
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtopt.problem import calendar
from rtopt.common.errors import InstanceError
from rtopt.problem.instance import (
    Instance,
    instance_from_dict,
    instance_json_schema,
    load_instance,
)
from rtopt.model.parameters import SPECS, out_of_range

INSTANCES = sorted((Path(__file__).resolve().parents[1] / "instances").glob("*.toml"))
REQUIRED_INSTANCES = {
    "lung-sbrt-peripheral", "lung-sbrt-central", "prostate-sbrt", "head-and-neck-conventional",
    "breast-hypofractionated", "pancreas-sbrt", "classic-mizuta-hypo", "classic-mizuta-hyper",
    "classic-mizuta-neutral", "classic-two-oar",
}

try:
    import jsonschema
except ImportError:  # pragma: no cover - depends on the environment
    jsonschema = None
needs_jsonschema = pytest.mark.skipif(jsonschema is None,
                                      reason="jsonschema is not installed")

with open(Path(__file__).resolve().parents[1] / "instances" / "lung-sbrt-peripheral.toml",
          "rb") as _fh:
    BASE = tomllib.load(_fh)
"""A valid instance dict with every section (NK, two OARs, surrogate-free)."""


def problems_of(data, source="bad.toml") -> list[str]:
    """The problem lines of ``data`` (empty if it is valid)."""
    try:
        instance_from_dict(data, source=source)
    except InstanceError as exc:
        assert exc.source == source
        return exc.lines()
    return []


def mutated(fn) -> dict:
    data = copy.deepcopy(BASE)
    fn(data)
    return data


# ---------------------------------------------------------------------------------------------
# Shipped instances
# ---------------------------------------------------------------------------------------------


def test_required_instances_are_shipped():
    assert REQUIRED_INSTANCES <= {p.stem for p in INSTANCES}


@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.stem)
def test_shipped_instance_loads(path):
    inst = load_instance(path)
    assert isinstance(inst, Instance)
    assert inst.name == path.stem  # file name and slug agree
    assert inst.description
    # every helper the optimiser uses works
    weights = inst.objective_weights
    assert weights and all(w >= 0 for w in weights.values()) and any(weights.values())
    params = inst.surrogate_parameters()
    assert set(params.as_dict()) == set(SPECS)
    for key, value in inst.surrogate_overrides().items():
        assert params.as_dict()[key] == value
    n_min = inst.fractionation.n_fractions[0]
    assert len(calendar.allowed_fraction_days(inst.fractionation)) >= n_min


@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.stem)
def test_shipped_instance_cites_sources(path):
    # Every value line of a clinical instance carries a comment, on the line or just above it
    # (docs/model.md: cite every value, or mark it as an assumption).
    if path.stem.startswith("classic-"):
        pytest.skip("classic oracles are synthetic; their header cites docs/model.md section 8")
    previous = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        above, previous = previous, line.strip()
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "[")):
            continue
        if stripped.startswith(("schema_version", "name", "description", "site", "start_weekday",
                                "uniform_dose", "earliest_day", "cytokine_support = \"none\"",
                                "weights", "maximise")):
            continue
        assert "#" in line or above.startswith("#"), \
            f"{path.name}:{number}: value without a source comment: {stripped}"


@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.stem)
def test_round_trip_through_toml(path):
    inst = load_instance(path)
    again = instance_from_dict(tomllib.loads(inst.to_toml()), source="round-trip")
    assert again == inst
    assert instance_from_dict(inst.to_dict()) == inst


def test_classic_instances_have_no_nk_and_maximise_tumour_bed(load):
    for name in ("classic-mizuta-hypo", "classic-mizuta-hyper", "classic-mizuta-neutral",
                 "classic-two-oar"):
        inst = load(name)
        assert not inst.has_nk and inst.nk_latest_day is None
        assert inst.objective_weights == {"tumour_bed": 1.0}
        assert inst.fractionation.dose_step_gy == 0.0


def _classic_optimum(inst: Instance) -> tuple[float, int]:
    """Largest uniform-dose tumour BED and its N (closed-form largest d per N).

    A deliberately plain re-derivation (docs/model.md s8) so the files are checked independently of
    the radiobiology module.
    """
    rho_t = inst.tumour.alpha_beta_gy
    lo, hi = inst.fractionation.dose_per_fraction_gy
    best = (-math.inf, 0)
    for n in range(inst.fractionation.n_fractions[0], inst.fractionation.n_fractions[1] + 1):
        d = hi
        for oar in inst.organ_at_risk:
            a, b = n * oar.sparing_factor ** 2 / oar.alpha_beta_gy, n * oar.sparing_factor
            d = min(d, (-b + math.sqrt(b * b + 4 * a * oar.max_bed_gy)) / (2 * a))
        assert d >= lo
        bed = n * d * (1 + d / rho_t)
        assert bed >= inst.prescription.min_bed_gy  # prescription never binds
        if bed > best[0] + 1e-9:
            best = (bed, n)
    return best


@pytest.mark.parametrize("name, bed, n", [
    ("classic-mizuta-hypo", 637.5, 1),
    ("classic-mizuta-hyper", 152.5, 30),
    ("classic-two-oar", 224.625, 4),
])
def test_classic_instances_encode_known_optima(load, name, bed, n):
    # docs/model.md s8: values quoted to 0.1 Gy (152.498 -> 152.5), hence abs=0.01.
    got_bed, got_n = _classic_optimum(load(name))
    assert got_bed == pytest.approx(bed, abs=0.01)
    assert got_n == n


def test_classic_neutral_gives_300_for_every_n(load):
    inst = load("classic-mizuta-neutral")
    (oar,) = inst.organ_at_risk
    for n in range(1, 31):
        a, b = n * oar.sparing_factor ** 2 / oar.alpha_beta_gy, n * oar.sparing_factor
        d = (-b + math.sqrt(b * b + 4 * a * oar.max_bed_gy)) / (2 * a)
        assert n * d * (1 + d / 10) == pytest.approx(300.0, rel=1e-12)


def test_helpers(load):
    inst = load("lung-sbrt-central")
    assert inst.has_nk
    assert inst.objective_weights == {"nk_favourability": 1.0, "tumour_log_kill": 0.2}
    assert inst.nk_latest_day == inst.fractionation.horizon_days - 1  # default
    assert inst.surrogate_parameters().nk_blood_dose_fraction == 0.05
    assert load("lung-sbrt-peripheral").nk_latest_day == 35
    # the surrogate follows the site and the NK product/cytokine presets
    pancreas = load("pancreas-sbrt").surrogate_parameters()
    assert pancreas.nk_treg_penalty > 0  # IL-2 support


def test_instance_is_frozen(load):
    inst = load("prostate-sbrt")
    with pytest.raises(Exception):
        inst.name = "other"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------------------------


def test_json_schema_metadata():
    schema = instance_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] and schema["description"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"schema_version", "name", "tumour", "prescription",
                                       "fractionation", "objective"}
    # surrogate overrides are listed by name with their plausible range
    surrogate = schema["$defs"]["SurrogateOverrides"]["properties"]
    assert set(surrogate) == set(SPECS)
    assert surrogate["oer"]["minimum"] == SPECS["oer"].low
    assert "null" not in str(schema)  # TOML has no null: optional keys are just omitted


@needs_jsonschema
def test_json_schema_is_valid_and_accepts_every_shipped_instance():
    schema = instance_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in INSTANCES:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        errors = list(validator.iter_errors(data))
        assert not errors, f"{path.name}: {errors[0].message}"


@needs_jsonschema
def test_json_schema_rejects_what_the_loader_rejects_field_by_field():
    validator = jsonschema.Draft202012Validator(instance_json_schema())
    for bad in (mutated(lambda d: d["tumour"].update(alpha_beta=1)),
                mutated(lambda d: d["tumour"].update(site="lungs")),
                mutated(lambda d: d["organ_at_risk"][0].update(sparing_factor=2.0)),
                mutated(lambda d: d["fractionation"].update(n_fractions=[1]))):
        assert list(validator.iter_errors(bad))
        assert problems_of(bad)


# ---------------------------------------------------------------------------------------------
# One exact line per bad input
# ---------------------------------------------------------------------------------------------

HORIZON = ("bad.toml: fractionation.horizon_days: horizon too short: only 8 fraction(s) fit on "
           "days 0..9 (mon, tue, wed, thu, fri, day 0 a mon, at least 1 day(s) apart); "
           "n_fractions needs at least 10")

CASES = [
    # unknown keys, with did-you-mean (the "missing alpha_beta_gy" line is folded into it)
    ("unknown-key-did-you-mean",
     lambda d: d["tumour"].update(alpha_beta=10.0) or d["tumour"].pop("alpha_beta_gy"),
     "bad.toml: tumour.alpha_beta: unknown key 'alpha_beta'; did you mean 'alpha_beta_gy'?"),
    ("unknown-key-extra",
     lambda d: d["organ_at_risk"][1].update(max_dose_gy=8.0),
     "bad.toml: organ_at_risk[1].max_dose_gy: unknown key 'max_dose_gy'; did you mean "
     "'max_bed_gy'?"),
    ("unknown-top-level-table",
     lambda d: d.update(fractionations=d.pop("fractionation")),
     "bad.toml: fractionations: unknown key 'fractionations'; did you mean 'fractionation'?"),
    ("unknown-key-no-suggestion",
     lambda d: d["prescription"].update(colour="red"),
     "bad.toml: prescription.colour: unknown key 'colour' (known keys: min_bed_gy, "
     "min_eqd2_gy, tumour_dose_ratio, isodose_percent, min_local_control, local_control_vs, "
     "local_control_margin)"),
    # wrong types
    ("string-for-number", lambda d: d["tumour"].update(alpha_beta_gy="ten"),
     "bad.toml: tumour.alpha_beta_gy: expected a number, got 'ten'"),
    ("bool-for-number", lambda d: d["tumour"].update(clonogens=True),
     "bad.toml: tumour.clonogens: expected a number, got true"),
    ("float-for-int", lambda d: d["fractionation"].update(n_fractions=[1.5, 8]),
     "bad.toml: fractionation.n_fractions[0]: expected an integer, got 1.5"),
    ("int-for-bool", lambda d: d["fractionation"].update(uniform_dose=1),
     "bad.toml: fractionation.uniform_dose: expected true or false, got 1"),
    ("number-for-table", lambda d: d.update(tumour=5),
     "bad.toml: tumour: expected a table, got 5"),
    ("table-for-array", lambda d: d.update(organ_at_risk=d["organ_at_risk"][0]),
     "bad.toml: organ_at_risk: expected an array, got a table"),
    ("number-for-range", lambda d: d["fractionation"].update(n_fractions=5),
     "bad.toml: fractionation.n_fractions: expected a range [min, max], got 5"),
    ("short-range", lambda d: d["fractionation"].update(dose_per_fraction_gy=[6.0]),
     "bad.toml: fractionation.dose_per_fraction_gy: expected a range [min, max] of 2 values, "
     "got 1 value(s)"),
    ("number-for-string", lambda d: d["tumour"].update(site=3),
     "bad.toml: tumour.site: expected a string (one of lung, prostate, head_and_neck, breast, "
     "pancreas, generic), got 3"),
    ("nan", lambda d: d["tumour"].update(clonogens=float("nan")),
     "bad.toml: tumour.clonogens: must be a finite number, got nan"),
    ("missing-key", lambda d: d["tumour"].pop("alpha_per_gy"),
     "bad.toml: tumour.alpha_per_gy: missing required key"),
    ("missing-table", lambda d: d.pop("prescription"),
     "bad.toml: prescription: missing required table"),
    # negative or zero doses and other bounds
    ("zero-dose", lambda d: d["fractionation"].update(dose_per_fraction_gy=[0, 25.0]),
     "bad.toml: fractionation.dose_per_fraction_gy[0]: must be in (0, 100] Gy, got 0"),
    ("negative-dose", lambda d: d["fractionation"].update(dose_per_fraction_gy=[6.0, -25.0]),
     "bad.toml: fractionation.dose_per_fraction_gy[1]: must be in (0, 100] Gy, got -25.0"),
    ("negative-prescription", lambda d: d["prescription"].update(min_bed_gy=-100.0),
     "bad.toml: prescription.min_bed_gy: must be in (0, 5000] Gy, got -100.0"),
    ("zero-oar-limit", lambda d: d["organ_at_risk"][0].update(max_bed_gy=0.0),
     "bad.toml: organ_at_risk[0].max_bed_gy: must be in (0, 5000] Gy, got 0.0"),
    ("negative-step", lambda d: d["fractionation"].update(dose_step_gy=-0.5),
     "bad.toml: fractionation.dose_step_gy: must be in [0, 100] Gy, got -0.5"),
    ("zero-fractions", lambda d: d["fractionation"].update(n_fractions=[0, 8]),
     "bad.toml: fractionation.n_fractions[0]: must be in [1, 3650], got 0"),
    ("hypoxic-fraction-one", lambda d: d["tumour"].update(hypoxic_fraction=1.0),
     "bad.toml: tumour.hypoxic_fraction: must be < 1"),
    ("zero-interval", lambda d: d["fractionation"].update(min_interval_days=0),
     "bad.toml: fractionation.min_interval_days: must be >= 1"),
    # ranges with min > max
    ("int-range-reversed", lambda d: d["fractionation"].update(n_fractions=[8, 1]),
     "bad.toml: fractionation.n_fractions: range [8, 1] has min > max"),
    ("dose-range-reversed", lambda d: d["fractionation"].update(dose_per_fraction_gy=[25.0, 6.0]),
     "bad.toml: fractionation.dose_per_fraction_gy: range [25.0, 6.0] has min > max"),
    ("infusion-range-reversed", lambda d: d["nk"].update(n_infusions=[2, 1]),
     "bad.toml: nk.n_infusions: range [2, 1] has min > max"),
    # sparing factor outside (0, 1.5]
    ("sparing-zero", lambda d: d["organ_at_risk"][0].update(sparing_factor=0.0),
     "bad.toml: organ_at_risk[0].sparing_factor: must be in (0, 1.5], got 0.0"),
    ("sparing-too-large", lambda d: d["organ_at_risk"][1].update(sparing_factor=1.6),
     "bad.toml: organ_at_risk[1].sparing_factor: must be in (0, 1.5], got 1.6"),
    # alpha/beta <= 0
    ("oar-alpha-beta-zero", lambda d: d["organ_at_risk"][1].update(alpha_beta_gy=0.0),
     "bad.toml: organ_at_risk[1].alpha_beta_gy: must be in (0, 100] Gy, got 0.0"),
    ("tumour-alpha-beta-negative", lambda d: d["tumour"].update(alpha_beta_gy=-10.0),
     "bad.toml: tumour.alpha_beta_gy: must be in (0, 100] Gy, got -10.0"),
    # unknown choices
    ("unknown-site", lambda d: d["tumour"].update(site="lungs"),
     "bad.toml: tumour.site: unknown site 'lungs'; did you mean 'lung'? (one of lung, prostate, "
     "head_and_neck, breast, pancreas, generic)"),
    ("unknown-product", lambda d: d["nk"].update(product="il15"),
     "bad.toml: nk.product: unknown NK product 'il15'; did you mean 'il15_expanded'? (one of "
     "il2_activated, il15_expanded, memory_like_il12_15_18, car_nk_il15)"),
    ("unknown-weekday", lambda d: d["fractionation"].update(
        treatment_weekdays=["mon", "tuesday", "wed"]),
     "bad.toml: fractionation.treatment_weekdays[1]: unknown weekday 'tuesday'; did you mean "
     "'tue'? (one of mon, tue, wed, thu, fri, sat, sun)"),
    ("unknown-start-weekday", lambda d: d["fractionation"].update(start_weekday="xyz"),
     "bad.toml: fractionation.start_weekday: unknown weekday 'xyz' (one of mon, tue, wed, thu, "
     "fri, sat, sun)"),
    ("unknown-survival-model", lambda d: d["tumour"].update(survival_model="LQ"),
     "bad.toml: tumour.survival_model: unknown survival model 'LQ'; did you mean 'lq'? (one of "
     "lq, lq_l, usc)"),
    ("unknown-cytokine", lambda d: d["nk"].update(cytokine_support="il-2"),
     "bad.toml: nk.cytokine_support: unknown cytokine support 'il-2'; did you mean 'il2'? (one "
     "of none, il2, il15)"),
    ("unknown-objective", lambda d: d["objective"].update(maximise="tcpp"),
     "bad.toml: objective.maximise: unknown objective 'tcpp'; did you mean 'tcp'? (one of "
     "nk_favourability, tumour_log_kill, tcp, local_control, "
     "nk_gain_local_control, nk_gain_log_kill, tumour_bed, reoxygenation_gain_local_control)"),
    ("unknown-weight-key", lambda d: d.update(objective={"weights": {"tcp": 1.0, "tcpp": 1.0}}),
     "bad.toml: objective.weights.tcpp: unknown objective 'tcpp'; did you mean 'tcp'? (one of "
     "nk_favourability, tumour_log_kill, tcp, local_control, "
     "nk_gain_local_control, nk_gain_log_kill, tumour_bed, reoxygenation_gain_local_control)"),
    # weekday lists
    ("empty-weekdays", lambda d: d["fractionation"].update(treatment_weekdays=[]),
     "bad.toml: fractionation.treatment_weekdays: must not be empty"),
    ("duplicate-weekday", lambda d: d["fractionation"].update(
        treatment_weekdays=["mon", "wed", "mon"]),
     "bad.toml: fractionation.treatment_weekdays: duplicate weekday 'mon'"),
    # horizon / overall time shorter than the schedule
    ("horizon-too-short", lambda d: (d["fractionation"].update(n_fractions=[10, 12],
                                                                horizon_days=10),
                                     d["nk"].pop("latest_day")),
     HORIZON),
    ("overall-time-too-short", lambda d: d["fractionation"].update(n_fractions=[6, 8],
                                                                   max_overall_days=3),
     "bad.toml: fractionation.max_overall_days: only 4 fraction(s) fit within 3 overall days "
     "on mon, tue, wed, thu, fri, at least 1 day(s) apart; n_fractions needs at least 6"),
    ("no-grid-point", lambda d: d["fractionation"].update(dose_step_gy=4.0,
                                                          dose_per_fraction_gy=[9.0, 11.0]),
     "bad.toml: fractionation.dose_step_gy: no multiple of 4 Gy lies in dose_per_fraction_gy "
     "[9, 11]"),
    ("nk-earliest-beyond-horizon", lambda d: (d["nk"].update(earliest_day=50),
                                              d["nk"].pop("latest_day")),
     "bad.toml: nk.earliest_day: day 50 is beyond the horizon (last day 41)"),
    ("nk-latest-beyond-horizon", lambda d: d["nk"].update(latest_day=42),
     "bad.toml: nk.latest_day: day 42 is beyond the horizon (last day 41)"),
    ("nk-window-reversed", lambda d: d["nk"].update(earliest_day=20, latest_day=10),
     "bad.toml: nk.earliest_day: day 20 is after latest_day 10"),
    ("nk-infusions-do-not-fit", lambda d: d["nk"].update(n_infusions=[3, 4], min_interval_days=20),
     "bad.toml: nk.n_infusions: 3 infusions at least 20 day(s) apart do not fit between day 0 "
     "and day 35"),
    # surrogate overrides
    ("surrogate-unknown-did-you-mean", lambda d: d["tumour"].update(
        surrogate={"vascular_d50": 16.0}),
     "bad.toml: tumour.surrogate.vascular_d50: unknown surrogate parameter 'vascular_d50'; did "
     "you mean 'vascular_d50_gy'?"),
    ("surrogate-unknown", lambda d: d["tumour"].update(surrogate={"zzz": 1.0}),
     "bad.toml: tumour.surrogate.zzz: unknown surrogate parameter 'zzz' (see "
     "rtopt.model.parameters.SPECS)"),
    ("surrogate-out-of-range", lambda d: d["tumour"].update(surrogate={"vascular_d50_gy": 40.0}),
     "bad.toml: tumour.surrogate.vascular_d50_gy: " + out_of_range("vascular_d50_gy", 40.0)),
    ("surrogate-wrong-type", lambda d: d["tumour"].update(surrogate={"oer": "high"}),
     "bad.toml: tumour.surrogate.oer: expected a number, got 'high'"),
    # cross-field rules
    ("prescription-empty", lambda d: d.update(prescription={}),
     "bad.toml: prescription: give min_bed_gy and/or min_eqd2_gy"),
    ("oar-without-limit", lambda d: d["organ_at_risk"][1].update(
        {"max_eqd2_gy": None, "max_dose_per_fraction_gy": None}) or [
        d["organ_at_risk"][1].pop(k) for k in ("max_eqd2_gy", "max_dose_per_fraction_gy")],
     "bad.toml: organ_at_risk[1]: give at least one of max_bed_gy, max_eqd2_gy, "
     "max_dose_per_fraction_gy"),
    ("oar-duplicate-name", lambda d: d["organ_at_risk"][1].update(name="chest_wall_rib"),
     "bad.toml: organ_at_risk[1].name: duplicate name 'chest_wall_rib' (also "
     "organ_at_risk[0])"),
    ("objective-both", lambda d: d["objective"].update(weights={"tcp": 1.0}),
     "bad.toml: objective: give exactly one of maximise or weights"),
    ("objective-neither", lambda d: d.update(objective={}),
     "bad.toml: objective: give exactly one of maximise or weights"),
    ("objective-zero-weights", lambda d: d.update(objective={"weights": {"tcp": 0.0}}),
     "bad.toml: objective.weights: at least one weight must be > 0"),
    ("objective-negative-weight", lambda d: d.update(objective={"weights": {"tcp": -1.0}}),
     "bad.toml: objective.weights.tcp: must be in [0, 1e+06], got -1.0"),
    ("nk-objective-without-nk", lambda d: d.pop("nk"),
     "bad.toml: objective.maximise: 'nk_favourability' needs an [nk] table (no NK cells are "
     "modelled without it)"),
    ("nk-weight-without-nk", lambda d: (d.pop("nk"), d.update(
        objective={"weights": {"nk_favourability": 1.0, "tcp": 1.0}})),
     "bad.toml: objective.weights.nk_favourability: 'nk_favourability' needs an [nk] table (no "
     "NK cells are modelled without it)"),
    ("lq-l-without-transition", lambda d: (d["tumour"].update(survival_model="lq_l"),
                                           d["tumour"].pop("transition_dose_gy")),
     "bad.toml: tumour.transition_dose_gy: required when survival_model = 'lq_l'"),
    ("usc-without-d0", lambda d: (d["tumour"].update(survival_model="usc"),
                                  d["tumour"].pop("usc_d0_gy")),
     "bad.toml: tumour.usc_d0_gy: required when survival_model = 'usc'"),
    ("usc-cannot-derive-transition", lambda d: (
        d["tumour"].update(survival_model="usc", usc_d0_gy=3.0),
        d["tumour"].pop("transition_dose_gy")),
     "bad.toml: tumour.usc_d0_gy: alpha_per_gy * usc_d0_gy must be < 1 to derive the transition "
     "dose; give transition_dose_gy"),
    ("repopulation-half", lambda d: d["tumour"].pop("potential_doubling_days"),
     "bad.toml: tumour.potential_doubling_days: required with repopulation_kickoff_days (give "
     "both or neither)"),
    ("name-not-slug", lambda d: d.update(name="Lung SBRT"),
     "bad.toml: name: must be a slug: lower-case letters and digits joined by '-' or '_', got "
     "'Lung SBRT'"),
    # file-level (path "") problems about the version
    ("schema-version-2", lambda d: d.update(schema_version=2),
     "bad.toml: unsupported schema_version 2; this rtopt reads schema_version = 1"),
    ("schema-version-string", lambda d: d.update(schema_version="1"),
     "bad.toml: unsupported schema_version '1'; this rtopt reads schema_version = 1"),
    ("schema-version-missing", lambda d: d.pop("schema_version"),
     "bad.toml: schema_version missing; add 'schema_version = 1' at the top"),
]

@pytest.mark.parametrize("mutate, line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_exactly_one_line(mutate, line):
    assert problems_of(mutated(mutate)) == [line]


def test_interval_too_long_names_the_binding_limit():
    # 4 fractions 7 days apart need 21 elapsed days: fits max_overall_days = 21 exactly...
    assert problems_of(mutated(lambda d: d["fractionation"].update(
        n_fractions=[4, 4], min_interval_days=7))) == []
    # ...but not 20 (overall time binds even with an unlimited horizon)...
    lines = problems_of(mutated(lambda d: d["fractionation"].update(
        n_fractions=[4, 8], min_interval_days=7, max_overall_days=20)))
    assert lines == ["bad.toml: fractionation.max_overall_days: only 3 fraction(s) fit within 20 "
                     "overall days on mon, tue, wed, thu, fri, at least 7 day(s) apart; "
                     "n_fractions needs at least 4"]
    # ...and a 21-day horizon (days 0..20) is what binds when overall time allows it.
    lines = problems_of(mutated(lambda d: (d["fractionation"].update(
        n_fractions=[4, 8], min_interval_days=7, horizon_days=21), d["nk"].pop("latest_day"))))
    assert len(lines) == 1 and lines[0].startswith("bad.toml: fractionation.horizon_days: ")


def test_not_a_table():
    with pytest.raises(InstanceError) as info:
        instance_from_dict([1, 2], source="x")
    assert info.value.lines() == ["x: expected a table of instance settings, got an array"]


def test_all_problems_are_collected_in_one_error():
    data = mutated(lambda d: (
        d["tumour"].update(alpha_beta_gy=-1.0, site="lungs"),
        d["organ_at_risk"][1].update(sparing_factor=2.0),
        d["fractionation"].update(n_fractions=[8, 1]),
        d.pop("nk"),  # the objective needs [nk]: reported although other sections are broken
        d.update(extra=1),
    ))
    lines = problems_of(data)
    assert sorted(lines) == sorted([
        "bad.toml: tumour.site: unknown site 'lungs'; did you mean 'lung'? (one of lung, "
        "prostate, head_and_neck, breast, pancreas, generic)",
        "bad.toml: tumour.alpha_beta_gy: must be in (0, 100] Gy, got -1.0",
        "bad.toml: organ_at_risk[1].sparing_factor: must be in (0, 1.5], got 2.0",
        "bad.toml: fractionation.n_fractions: range [8, 1] has min > max",
        "bad.toml: extra: unknown key 'extra' (known keys: schema_version, name, description, "
        "tumour, prescription, organ_at_risk, fractionation, nk, objective, dvh_plan, uncertainty)",
        "bad.toml: objective.maximise: 'nk_favourability' needs an [nk] table (no NK cells are "
        "modelled without it)",
    ])


def test_nk_horizon_rules_run_when_other_sections_are_broken():
    data = mutated(lambda d: (d["tumour"].update(clonogens=0), d["nk"].update(latest_day=99)))
    assert problems_of(data) == ["bad.toml: tumour.clonogens: must be in [1, 1e+13], got 0",
                                 "bad.toml: nk.latest_day: day 99 is beyond the horizon "
                                 "(last day 41)"]


def test_messages_never_leak_pydantic_jargon():
    data = mutated(lambda d: (d["tumour"].update(alpha_per_gy="x", surrogate=[1]),
                              d["fractionation"].update(treatment_weekdays="mon"),
                              d["objective"].update(weights=[1])))
    lines = problems_of(data)
    assert lines
    for line in lines:
        assert "pydantic" not in line and "Input should" not in line and "\n" not in line


def test_valid_variants_load():
    # survival models with their parameters, no OARs, no NK with a non-NK objective, defaults
    for fn in (
        lambda d: d["tumour"].update(survival_model="usc"),
        lambda d: (d["tumour"].update(survival_model="usc"), d["tumour"].pop("transition_dose_gy")),
        lambda d: d["tumour"].update(survival_model="lq_l"),
        lambda d: (d["tumour"].pop("repopulation_kickoff_days"),
                   d["tumour"].pop("potential_doubling_days")),
        lambda d: d.pop("organ_at_risk"),
        lambda d: (d.pop("nk"), d["objective"].update(maximise="tcp")),
        lambda d: (d.pop("nk"), d.update(objective={"weights": {"nk_favourability": 0.0,
                                                                "tcp": 1.0}})),
        lambda d: [d["fractionation"].pop(k) for k in ("dose_step_gy", "uniform_dose",
                                                       "treatment_weekdays", "start_weekday",
                                                       "min_interval_days")],
        lambda d: (d["nk"].update(n_infusions=[0, 0]), d["objective"].update(maximise="tcp")),
        lambda d: d["tumour"].update(surrogate={name: spec.low for name, spec in SPECS.items()}),
    ):
        data = mutated(fn)
        assert problems_of(data) == [], data
    inst = instance_from_dict(mutated(lambda d: [d["fractionation"].pop(k) for k in (
        "dose_step_gy", "treatment_weekdays", "start_weekday")]))
    assert inst.fractionation.dose_step_gy == 0.0
    assert [w.value for w in inst.fractionation.treatment_weekdays] == list(calendar.WEEKDAYS[:5])


# ---------------------------------------------------------------------------------------------
# File-level problems
# ---------------------------------------------------------------------------------------------


def _one_line(path) -> str:
    with pytest.raises(InstanceError) as info:
        load_instance(path)
    lines = info.value.lines()
    assert len(lines) == 1, lines
    assert info.value.problems[0][0] == ""
    return lines[0]


def test_toml_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('schema_version = 1\nname = "x"\n[tumour\nsite = "lung"\n')
    assert re.fullmatch(rf"{re.escape(str(path))}: TOML syntax error at line 3, column \d+: .+",
                        _one_line(path))
    path.write_text('schema_version = 1\nname = = "x"\n')
    assert _one_line(path).startswith(f"{path}: TOML syntax error at line 2, column 8: ")
    path.write_text('schema_version = 1\nname = "x')
    assert _one_line(path).startswith(f"{path}: TOML syntax error")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert _one_line(path) == f"{path}: file not found"


def test_directory(tmp_path):
    assert _one_line(tmp_path) == f"{tmp_path}: is a directory, not an instance file"


def test_binary_file(tmp_path):
    path = tmp_path / "image.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert _one_line(path) == f"{path}: binary file, not TOML text"


def test_undecodable_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('schema_version = 1\nname = "café"\n'.encode("latin-1"))
    assert _one_line(path).startswith(f"{path}: binary or non-UTF-8 file (invalid byte at offset")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("# nothing here\n")
    assert _one_line(path) == f"{path}: empty file: no instance settings"


def test_load_accepts_str_and_path(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(INSTANCES[0].read_text())
    assert load_instance(str(path)) == load_instance(path)


# ---------------------------------------------------------------------------------------------
# Calendar
# ---------------------------------------------------------------------------------------------


def test_weekday_of():
    assert calendar.weekday_of(0, "mon") == "mon"
    assert calendar.weekday_of(5, "mon") == "sat"
    assert calendar.weekday_of(7, "thu") == "thu"
    assert calendar.weekday_of(3, "fri") == "mon"


def test_allowed_fraction_days(load):
    fr = load("lung-sbrt-peripheral").fractionation  # mon..fri, day 0 a Monday, 42 days
    days = calendar.allowed_fraction_days(fr)
    assert days.dtype.kind == "i"
    assert list(days[:7]) == [0, 1, 2, 3, 4, 7, 8]
    assert days[-1] == 39 and len(days) == 30
    wed = fr.model_copy(update={"start_weekday": "wed", "horizon_days": 7})
    assert list(calendar.allowed_fraction_days(wed)) == [0, 1, 2, 5, 6]


def _brute_force_fit(days, interval, overall):
    days = sorted(days)
    best = 0
    for k in range(len(days), 0, -1):
        for combo in itertools.combinations(days, k):
            if combo[-1] - combo[0] <= overall and all(
                    b - a >= interval for a, b in zip(combo, combo[1:])):
                return k
    return best


@settings(max_examples=200, deadline=None)
@given(days=st.sets(st.integers(0, 16), max_size=9), interval=st.integers(1, 5),
       overall=st.integers(0, 18))
def test_max_fractions_that_fit_is_exact(days, interval, overall):
    arr = np.array(sorted(days), dtype=int)
    assert calendar.max_fractions_that_fit(arr, interval, overall) == \
        _brute_force_fit(days, interval, overall)


def test_max_fractions_that_fit_examples():
    weekdays = calendar.allowed_days(42, calendar.WEEKDAYS[:5], "mon")
    assert calendar.max_fractions_that_fit(weekdays, 1, 21) == 16  # days 0..21, Mon-Fri
    assert calendar.max_fractions_that_fit(weekdays, 2, 21) == 10
    assert calendar.max_fractions_that_fit(weekdays, 1, 0) == 1
    assert calendar.max_fractions_that_fit(weekdays, 1, 10 ** 30) == 30  # no overflow
    assert calendar.max_fractions_that_fit(np.array([], dtype=int), 1, 5) == 0


# ---------------------------------------------------------------------------------------------
# Property tests: random mutations never escape as anything but InstanceError
# ---------------------------------------------------------------------------------------------

PATH_RE = re.compile(r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
                     r'(?:\.(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")|\[\d+\])*')

KEYS = st.one_of(
    st.sampled_from(["name", "site", "alpha_beta_gy", "max_bed_gy", "n_fractions", "weights",
                     "tcp", "oer", "nk", "product", "surrogate", "latest_day", "x"]),
    st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12),
    st.text(min_size=1, max_size=6),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 60), st.integers(), st.floats(),
    st.floats(-1e3, 1e3), st.text(max_size=8),
    st.sampled_from(["lung", "mon", "lq_l", "usc", "tcp", "il2", "nk_favourability", ""]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)), max_leaves=6)


def _locations(node, prefix=()):
    """Every (path to a value) in a nested dict/list."""
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from _locations(child, prefix + (key,))


def _containers(node, prefix=()):
    if isinstance(node, (dict, list)):
        yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, child in items:
        yield from _containers(child, prefix + (key,))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _check_outcome(data, source="fuzz.toml"):
    try:
        inst = instance_from_dict(data, source=source)
    except InstanceError as exc:
        assert exc.problems
        for (path, message), line in zip(exc.problems, exc.lines(), strict=True):
            assert path == "" or PATH_RE.fullmatch(path), path
            assert message and "\n" not in message
            assert "pydantic" not in message and "Input should be" not in message
            assert line == (f"{source}: {path}: {message}" if path else f"{source}: {message}")
    else:
        assert isinstance(inst, Instance)
        assert instance_from_dict(inst.to_dict()) == inst


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_mutations_load_or_raise_instance_error(data):
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        op = data.draw(st.sampled_from(["delete", "replace", "add", "number"]), label="op")
        locations = list(_locations(doc))
        if op in ("delete", "replace", "number") and locations:
            path = data.draw(st.sampled_from(locations), label="path")
            parent = _get(doc, path[:-1])
            if op == "delete":
                del parent[path[-1]]
            elif op == "replace":
                parent[path[-1]] = data.draw(VALUES, label="value")
            else:
                parent[path[-1]] = data.draw(st.one_of(st.integers(-10 ** 6, 10 ** 6),
                                                       st.floats(allow_nan=True)), label="number")
        else:
            container = _get(doc, data.draw(st.sampled_from(list(_containers(doc))),
                                            label="container"))
            value = data.draw(VALUES, label="value")
            if isinstance(container, dict):
                container[data.draw(KEYS, label="key")] = value
            else:
                container.append(value)
    _check_outcome(doc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_numbers_in_every_numeric_field(data):
    doc = copy.deepcopy(BASE)
    for path in _locations(BASE):
        value = _get(BASE, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if data.draw(st.booleans(), label=f"touch {path}"):
                _get(doc, path[:-1])[path[-1]] = data.draw(
                    st.one_of(st.integers(-5, 100), st.integers(), st.floats(-1e3, 1e3),
                              st.floats()), label=str(path))
    _check_outcome(doc)


TEXT = INSTANCES[0].read_bytes() if INSTANCES else b""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(TEXT)), length=st.integers(0, 40),
       insert=st.binary(max_size=12))
def test_corrupted_files_raise_instance_error(tmp_path_factory, cut, length, insert):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.toml"
    path.write_bytes(TEXT[:cut] + insert + TEXT[cut + length:])
    try:
        load_instance(path)
    except InstanceError as exc:
        assert exc.lines() and all(line.startswith(f"{path}: ") for line in exc.lines())
