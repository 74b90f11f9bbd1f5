"""DVHs from DICOM RT Dose + RT Structure Set, on the synthetic lung phantom (closed forms),
and the one-line CLI errors of bad DICOM."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtopt.cli import app
from rtopt.dose.dicom import compute_dvhs
from rtopt.dose.phantom import CONTOUR_SPACING_MM, PTV_RADIUS_MM, PhantomSpec, write_phantom

SHIPPED = Path(__file__).resolve().parents[1] / "instances" / "patients" / "lung-phantom"


def sphere_slab_volume_cc(radius_mm: float) -> float:
    """Volume of a sphere contoured every CONTOUR_SPACING_MM, each plane a slab (the DVH
    convention): the exact answer for the contours, apart from the polygon approximation."""
    t = CONTOUR_SPACING_MM
    k = int(radius_mm // t)
    return sum(math.pi * (radius_mm ** 2 - (j * t) ** 2) * t for j in range(-k, k + 1)) / 1000


@pytest.fixture(scope="module")
def linear_plan(tmp_path_factory):
    d = tmp_path_factory.mktemp("linear")
    spec = PhantomSpec(dose_model="linear", prescription_gy=30.0, absolute_frame_offsets=True)
    return write_phantom(d, spec), spec


def test_shipped_phantom_is_regenerated_identically(tmp_path):
    paths = write_phantom(tmp_path)
    for key, p in paths.items():
        assert p.read_bytes() == (SHIPPED / f"{key}.dcm").read_bytes()


def test_sphere_volume_and_mean_dose_in_a_linear_gradient(linear_plan):
    paths, spec = linear_plan
    res = compute_dvhs(paths["RTDOSE"], paths["RTSTRUCT"], ["PTV", "GTV"], n_fractions=3)
    ptv, gtv = res.dvhs
    exact = 4 / 3 * math.pi * PTV_RADIUS_MM ** 3 / 1000
    # 1 %: the sphere is cut into 2 mm slabs (0.25 % for r = 15 mm) and a 128-gon (0.04 %);
    # sub-voxel sampling at 0.5 mm adds < 0.2 %
    assert ptv.volume_total_cc == pytest.approx(exact, rel=0.01)
    assert gtv.volume_total_cc == pytest.approx(sphere_slab_volume_cc(10.0), rel=0.005)
    # a linear field's mean over a centred sphere is the centre dose; interpolation of a
    # linear field is exact, the 0.01 Gy bins shift the mean by 0.005 Gy: 1 % is generous
    assert ptv.d_mean() == pytest.approx(spec.prescription_gy, rel=0.01)
    assert gtv.d_mean() == pytest.approx(spec.prescription_gy, rel=0.01)
    assert res.warnings == []


def test_ring_structure_with_hole(linear_plan):
    paths, _ = linear_plan
    ring = compute_dvhs(paths["RTDOSE"], paths["RTSTRUCT"], ["CHESTWALL_R"]).dvhs[0]
    planes = len(range(-20, 21))
    exact = math.pi / 2 * (150 * 100 - 136 * 88) * planes * CONTOUR_SPACING_MM / 1000
    assert ring.volume_total_cc == pytest.approx(exact, rel=0.01)


def test_contour_partly_outside_the_dose_grid(tmp_path):
    # dose grid ends at x = 0: half of the (symmetric) body is outside
    paths = write_phantom(tmp_path, PhantomSpec(grid_x_mm=(-159.0, -1.5)))
    res = compute_dvhs(paths["RTDOSE"], paths["RTSTRUCT"], ["BODY"])
    body = res.dvhs[0]
    assert body.fraction_outside == pytest.approx(0.5, abs=0.01)
    assert any("outside the dose grid" in w and "BODY" in w for w in res.warnings)


def test_fraction_dose_times_fractions_equals_plan_dose(tmp_path):
    plan = write_phantom(tmp_path / "plan", PhantomSpec(summation="PLAN", n_fractions=3))
    frac = write_phantom(tmp_path / "frac", PhantomSpec(summation="FRACTION", n_fractions=3))
    a = compute_dvhs(plan["RTDOSE"], plan["RTSTRUCT"], ["PTV", "LUNG_R"]).dvhs
    b = compute_dvhs(frac["RTDOSE"], frac["RTSTRUCT"], ["PTV", "LUNG_R"], n_fractions=3).dvhs
    for x, y in zip(a, b):
        assert y.d_mean() == pytest.approx(x.d_mean(), rel=1e-3)
    assert a[0].d_mean() == pytest.approx(54.0, rel=0.005)


# ----------------------------------------------------------------------------- CLI errors
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    for f in fragments:
        assert f in lines[0], lines[0]


def test_cli_reports_dvh_and_json():
    r = run("dvh", SHIPPED / "RTDOSE.dcm", SHIPPED / "RTSTRUCT.dcm", "-s", "PTV", "--json")
    assert r.exit_code == 0, r.output
    assert '"Dmean_gy"' in r.output


def test_cli_wrong_modality():
    one_line_error(run("dvh", SHIPPED / "RTSTRUCT.dcm", SHIPPED / "RTSTRUCT.dcm"),
                   "Modality is RTSTRUCT, expected RTDOSE")


def test_cli_missing_structure_did_you_mean():
    one_line_error(run("dvh", SHIPPED / "RTDOSE.dcm", SHIPPED / "RTSTRUCT.dcm", "-s", "PVT"),
                   "no structure named 'PVT'", "did you mean 'PTV'")


def test_cli_frame_of_reference_mismatch(tmp_path):
    p = write_phantom(tmp_path, PhantomSpec(frame_of_reference_uid="1.2.3.4"))
    one_line_error(run("dvh", p["RTDOSE"], p["RTSTRUCT"]), "FrameOfReferenceUID", "differs")


def test_cli_grid_misses_structure(tmp_path):
    p = write_phantom(tmp_path, PhantomSpec(grid_x_mm=(-159.0, -60.0)))
    one_line_error(run("dvh", p["RTDOSE"], p["RTSTRUCT"], "-s", "HEART"),
                   "misses structure 'HEART' entirely")


def test_cli_not_dicom_and_corrupt(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_text("not a dicom file\n")
    one_line_error(run("dvh", junk, SHIPPED / "RTSTRUCT.dcm"), "junk.dcm", "not a DICOM file")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes((SHIPPED / "RTDOSE.dcm").read_bytes()[:2000])
    one_line_error(run("dvh", cut, SHIPPED / "RTSTRUCT.dcm"), "cut.dcm")


def test_cli_fraction_dose_needs_fractions(tmp_path):
    p = write_phantom(tmp_path, PhantomSpec(summation="FRACTION"))
    one_line_error(run("dvh", p["RTDOSE"], p["RTSTRUCT"]), "FRACTION", "--fractions")
    assert run("dvh", p["RTDOSE"], p["RTSTRUCT"], "-s", "PTV", "-n", "3").exit_code == 0
