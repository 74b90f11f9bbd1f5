"""Dose commands: ``rtopt dvh``, ``rtopt ntcp`` and ``rtopt phantom`` (docs/dose.md).

numpy and pydicom are imported inside the commands, so ``rtopt --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from rtopt.cli import app
from rtopt.cli._common import cli_errors, err_console, fail, write_atomic


def _load_dvhs(plan: str, rtstruct: Optional[str], structures: Optional[list[str]],
               fractions: Optional[int], rtplan: Optional[str], bin_width_gy: float,
               sampling_mm: float):
    """DVHs from DICOM (RTDOSE + RTSTRUCT) or from one text export; warnings printed."""
    if rtstruct is None:
        from rtopt.dose import DoseError
        from rtopt.dose.exports import read_dvh_export

        dvhs = read_dvh_export(plan, n_fractions=fractions)
        if structures:
            by_name = {h.name: h for h in dvhs}
            missing = [s for s in structures if s not in by_name]
            if missing:
                raise DoseError(f"{plan}: no structure named {missing[0]!r} (structures: "
                                f"{', '.join(by_name)})")
            dvhs = [by_name[s] for s in structures]
        return dvhs
    from rtopt.dose.dicom import compute_dvhs

    result = compute_dvhs(plan, rtstruct, structures or None, bin_width_gy=bin_width_gy,
                          sampling_mm=sampling_mm, n_fractions=fractions, rtplan=rtplan)
    for w in result.warnings:
        err_console.print(f"warning: {w}")
    return result.dvhs


_PLAN_HELP = "RT Dose file, or a DVH text export (Eclipse, RayStation or CSV) when RTSTRUCT is left out."


@app.command("dvh")
@cli_errors()
def dvh(
    plan: Annotated[str, typer.Argument(metavar="RTDOSE", help=_PLAN_HELP)],
    rtstruct: Annotated[Optional[str], typer.Argument(
        metavar="[RTSTRUCT]", help="RT Structure Set matching RTDOSE.")] = None,
    structure: Annotated[Optional[list[str]], typer.Option(
        "--structure", "-s", metavar="NAME", help="Structure to report (repeatable; "
        "default all).")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(
        "--metric", "-m", metavar="SPEC", help="Extra metric, e.g. V20Gy, CV13.5Gy, "
        "EQD2_D2cc (repeatable; EQD2/BED need --alpha-beta and the fractions).")] = None,
    alpha_beta: Annotated[Optional[float], typer.Option(
        "--alpha-beta", metavar="GY", help="alpha/beta (Gy) for EQD2_/BED_ metrics.")] = None,
    fractions: Annotated[Optional[int], typer.Option(
        "--fractions", "-n", metavar="N", min=1, help="Number of fractions (multiplies a "
        "FRACTION dose; needed for EQD2/BED).")] = None,
    rtplan: Annotated[Optional[str], typer.Option(
        "--plan", metavar="RTPLAN", help="RT Plan to read the number of fractions from.")] = None,
    bin_width_gy: Annotated[float, typer.Option(
        "--bin-width-gy", metavar="GY", help="DVH bin width (Gy).")] = 0.01,
    sampling_mm: Annotated[float, typer.Option(
        "--sampling-mm", metavar="MM", help="In-plane sample spacing (mm).")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="FILE", help="Write the cumulative DVHs as CSV "
        "(structure,dose_gy,volume_cc,volume_percent).")] = None,
) -> None:
    """Cumulative DVHs and dose metrics per structure (total plan dose, Gy; volumes cm^3)."""
    from rtopt.dose.dvh import evaluate_metric

    if not bin_width_gy > 0 or not sampling_mm > 0:
        fail(["--bin-width-gy and --sampling-mm must be > 0"])
    dvhs = _load_dvhs(plan, rtstruct, structure, fractions, rtplan, bin_width_gy, sampling_mm)
    rows = []
    for h in dvhs:
        row = h.summary()
        for spec in metric or []:
            row[spec] = evaluate_metric(h, spec, alpha_beta)
        rows.append(row)
    if output is not None:
        lines = ["structure,dose_gy,volume_cc,volume_percent"]
        for h in dvhs:
            cum = h.cumulative_cc()
            tot = h.volume_total_cc or 1.0
            for d, c in zip(h.edges_gy, cum):
                lines.append(f"{_csv_name(h.name)},{d:.6g},{c:.6g},{100.0 * c / tot:.6g}")
        write_atomic(output, "\n".join(lines) + "\n")
        err_console.print(f"wrote {output}")
    if as_json:
        typer.echo(json.dumps({"structures": rows}, indent=2))
        return
    _print_table(rows, metric or [])


def _csv_name(name: str) -> str:
    return f'"{name}"' if ("," in name or '"' in name) else name


def _print_table(rows: list[dict], extra: list[str]) -> None:
    """One block per structure: volume, then the dose metrics (stays readable at 80 columns)."""
    doses = ["Dmin", "Dmean", "Dmax", "D0.1cc", "D1cc", "D2cc", "D95%", "D2%"]
    for r in rows:
        outside = r["volume_outside_grid_cc"]
        note = f" (+{outside:.4g} cc outside the dose grid)" if outside > 0 else ""
        typer.echo(f"{r['structure']}: volume {r['volume_cc']:.4g} cc{note}")
        typer.echo("  " + "  ".join(f"{d} {r[d + '_gy']:.4g}" for d in doses) + "  (Gy)")
        if extra:
            typer.echo("  " + "  ".join(f"{m} {r[m]:.4g}" for m in extra))


@app.command("ntcp")
@cli_errors()
def ntcp_cmd(
    plan: Annotated[Optional[str], typer.Argument(
        metavar="[RTDOSE]", help=_PLAN_HELP + " Not needed with --list.")] = None,
    rtstruct: Annotated[Optional[str], typer.Argument(
        metavar="[RTSTRUCT]", help="RT Structure Set matching RTDOSE.")] = None,
    pairs: Annotated[Optional[list[str]], typer.Option(
        "--model", "-m", metavar="STRUCTURE=SET", help="Structure and shipped parameter set, "
        "e.g. LUNG_R=pneumonitis_lkb_seppenwoolde (repeatable).")] = None,
    fractions: Annotated[Optional[int], typer.Option(
        "--fractions", "-n", metavar="N", min=1, help="Number of fractions of the plan.")] = None,
    rtplan: Annotated[Optional[str], typer.Option(
        "--plan", metavar="RTPLAN", help="RT Plan to read the number of fractions from.")] = None,
    list_sets: Annotated[bool, typer.Option(
        "--list", help="List the shipped parameter sets and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """NTCP of structures under shipped parameter sets (LKB, logistic EUD, relative seriality)."""
    from rtopt.dose import DoseError
    from rtopt.dose.ntcp import get_parameter_set, ntcp, parameter_sets

    if list_sets:
        for name, ps in parameter_sets().items():
            mark = "" if ps.verified else "  [not verified]"
            typer.echo(f"{name}: {ps.model}, {ps.organ}: {ps.endpoint}{mark}")
            typer.echo(f"  source: {ps.reference}")
            if ps.note:
                typer.echo(f"  note: {ps.note}")
        return
    if plan is None:
        fail(["give the RT Dose file or DVH export (RTDOSE), or --list"])
    if not pairs:
        fail(["give at least one --model STRUCTURE=SET (see --list)"])
    wanted = []
    for p in pairs:
        if "=" not in p:
            raise DoseError(f"--model {p!r}: expected STRUCTURE=SET")
        s, _, name = p.partition("=")
        wanted.append((s, get_parameter_set(name)))
    dvhs = {h.name: h for h in _load_dvhs(plan, rtstruct, sorted({s for s, _ in wanted}),
                                          fractions, rtplan, 0.01, 0.5)}
    out = []
    for s, ps in wanted:
        h = dvhs[s]
        if h.n_fractions is None:
            raise DoseError("NTCP needs the number of fractions: --fractions N or --plan RTPLAN")
        out.append({"structure": s, "set": ps.name, "model": ps.model,
                    "ntcp": ntcp(h, ps), "verified": ps.verified})
    if as_json:
        typer.echo(json.dumps({"ntcp": out}, indent=2))
        return
    for r in out:
        mark = "" if r["verified"] else "  (parameters not verified)"
        typer.echo(f"{r['structure']}: {r['set']} ({r['model']}): NTCP {r['ntcp']:.4f}{mark}")


@app.command("phantom")
@cli_errors()
def phantom(
    out_dir: Annotated[Path, typer.Argument(metavar="FOLDER", help="Folder to write "
                                            "RTDOSE.dcm and RTSTRUCT.dcm into.")],
    dose_model: Annotated[str, typer.Option(
        "--dose-model", help="sbrt (Gaussian fall-off around the PTV) or linear.")] = "sbrt",
    prescription: Annotated[float, typer.Option(
        "--prescription-gy", metavar="GY", help="Plan dose to the PTV (Gy).")] = 54.0,
    fractions: Annotated[int, typer.Option(
        "--fractions", "-n", metavar="N", min=1, help="Number of fractions.")] = 3,
    summation: Annotated[str, typer.Option(
        "--summation", help="DoseSummationType: PLAN or FRACTION.")] = "PLAN",
) -> None:
    """Write the synthetic lung SBRT phantom (instances/patients/lung-phantom)."""
    from rtopt.dose.phantom import PhantomSpec, write_phantom

    if dose_model not in ("sbrt", "linear") or summation.upper() not in ("PLAN", "FRACTION"):
        fail(["--dose-model must be sbrt or linear and --summation PLAN or FRACTION"])
    paths = write_phantom(out_dir, PhantomSpec(dose_model=dose_model,
                                               prescription_gy=prescription,
                                               n_fractions=fractions,
                                               summation=summation.upper()))
    for p in paths.values():
        err_console.print(f"wrote {p}")
