"""Model commands: ``rtopt calibrate`` and ``rtopt bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rtopt.cli import app
from rtopt.cli._common import (cli_errors, cli_profiles, compile_with_notice, compiled_note,
                               err_console, fail, out_console, resolve_solver)

# rtopt's layers and the heavy libraries are imported inside the commands: `rtopt --help` loads
# none of them (tests/test_cli_install.py).


def _calibrated_target(write: Path, name: str = "calibrated.py") -> Path:
    """Where ``--write PATH`` writes, or a one-line refusal.

    A folder gets ``calibrated.py`` inside it.  Writing into the rtopt package itself is allowed
    only in a source checkout (the package folder's parent holds ``pyproject.toml``): an
    installed package is not the user's to edit, and pip would overwrite it.
    """
    target = write / name if write.is_dir() else write
    package = Path(__file__).resolve().parents[1]
    try:
        inside = target.resolve().is_relative_to(package)
    except OSError:
        inside = False
    if inside and not (package.parent / "pyproject.toml").is_file():
        fail([f"rtopt: calibrate: refusing to write {target}: it is inside the installed rtopt "
              f"package ({package}); give a path outside it, e.g. --write calibrated.py"])
    if not target.parent.is_dir():
        fail([f"{target}: directory {target.parent} does not exist"])
    return target


@app.command("calibrate")
@cli_errors()
def calibrate_cmd(
    write: Annotated[Optional[Path], typer.Option(
        "--write", metavar="PATH", show_default=False,
        help="Write the fitted values as a Python module to PATH (a folder gets calibrated.py). "
             "In a source checkout, --write rtopt/model/data/calibrated.py updates the presets; an "
             "installed package is never written.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the fit as JSON.")] = False,
    outcomes: Annotated[bool, typer.Option(
        "--outcomes", help="Also fit tumour control to the training rows of the clinical outcome "
        "tables (rtopt/model/data/outcomes.toml: lung T1-T7) and print the residuals of the "
        "training and the validation rows (V1-V12, never fitted).")] = False,
    nk: Annotated[bool, typer.Option(
        "--nk", help="Fit the NK kinetics to the NK observation table instead "
        "(rtopt/model/data/nk_observations.toml: persistence, homing, endogenous NK, "
        "radiosensitivity, blood dose, circulating NK during RT) and print every row with its "
        "residual; --write then writes nk_calibrated.py.")] = False,
) -> None:
    """Fit the hypoxia presets to the observation table and report fit and residuals.

    With --outcomes, also fit each site's clonogen number, spread of radiosensitivity and
    clonogen hypoxia to the local control of standard schedules (what is fixed and what is
    fitted is printed)."""
    import json

    if nk:
        if outcomes:
            fail(["rtopt: calibrate: --nk and --outcomes are separate fits; give one"])
        _calibrate_nk(write, json_out)
        return
    from rtopt.model.calibrate import FIT_PLAN, calibrate, calibrate_outcomes, write_calibrated

    target = _calibrated_target(write) if write is not None else None
    with err_console.status("fitting the hypoxia presets to the imaging observations"):
        res = calibrate()
    ofit = None
    if outcomes:
        with err_console.status("fitting tumour control to the clinical outcomes"):
            ofit = calibrate_outcomes()
    if json_out:
        doc = {"values": res.values, "cost": res.cost, "observations": [
            {**r, "band": list(r["band"])} for r in res.rows]}
        if ofit is not None:
            doc["outcomes"] = {"values": ofit.values, "cost": ofit.cost,
                               "fixed": {k: v.fixed() for k, v in ofit.sites.items()},
                               "observations": [{**r, "band": list(r["band"])}
                                                for r in ofit.rows]}
        typer.echo(json.dumps(doc, indent=2))
    else:
        t = Table(title="fitted hypoxia parameters (free parameters per site)")
        t.add_column("site")
        t.add_column("parameter")
        t.add_column("value", justify="right")
        for site, start, free in FIT_PLAN:
            for k in free:
                t.add_row(site, k, f"{res.values[site][k]:.4g}")
        out_console.print(t)
        t = Table(title="observations: model vs data")
        for col in ("id", "site", "quantity", "target", "band", "model", "residual", "in band"):
            t.add_column(col, justify="right" if col in ("target", "model", "residual") else "left")
        for r in res.rows:
            t.add_row(r["id"], r["site"], r["quantity"],
                      "-" if r["target"] is None else f"{r['target']:.3g}",
                      f"[{r['band'][0]:g}, {'inf' if r['band'][1] >= 1e8 else format(r['band'][1], 'g')}]",
                      f"{r['model']:.3f}",
                      "-" if r["residual"] is None else f"{r['residual']:+.3f}",
                      "yes" if r["within_band"] else "NO")
        out_console.print(t)
        out_console.print("least-squares cost per site: " + ", ".join(
            f"{k} {v:.3g}" for k, v in res.cost.items()))
        if ofit is not None:
            _print_outcomes(ofit)
    if target is not None:
        path = write_calibrated(res, target, outcomes=ofit)
        err_console.print(f"wrote {path}")
    if not res.all_within_band() or (ofit is not None and not ofit.all_within_band("training")):
        raise typer.Exit(1)


def _calibrate_nk(write: Optional[Path], json_out: bool) -> None:
    """``rtopt calibrate --nk``: the NK fit, its table with residuals, optional ``--write``."""
    import json

    from rtopt.model.calibrate_nk import calibrate_nk, write_nk_calibrated
    from rtopt.model.parameters import SPECS

    target = _calibrated_target(write, "nk_calibrated.py") if write is not None else None
    with err_console.status("fitting the NK kinetics to the NK observation table"):
        fit = calibrate_nk()
    if json_out:
        typer.echo(json.dumps({"values": fit.values, "cost": fit.cost, "rows": [
            {**r, "band": list(r["band"])} for r in fit.rows]}, indent=2))
    else:
        t = Table(title="fitted NK parameters (product values without cytokine support)")
        for col in ("product", "parameter", "value", "unit"):
            t.add_column(col, justify="right" if col == "value" else "left")
        for k, v in fit.values.items():
            prod, _, name = k.rpartition(".")
            t.add_row(prod or "all", name, f"{v:.4g}", SPECS[name].unit)
        out_console.print(t)
        t = Table(title="NK observations: model vs human data (log: residual in log10)")
        for col in ("id", "category", "product", "quantity", "day", "target", "band", "model",
                    "residual", "in band", "role"):
            t.add_column(col, justify="right" if col in ("day", "target", "model", "residual")
                         else "left")
        for r in fit.rows:
            quantity = r["parameter"] if r["quantity"] == "parameter" else r["quantity"]
            res = r["residual"]
            t.add_row(r["id"], r["category"], f"{r['product']} + {r['support']}"
                      if r["support"] != "none" else r["product"], quantity,
                      "-" if r["time_days"] is None else f"{r['time_days']:g}",
                      "-" if r["target"] is None else f"{r['target']:.3g}",
                      f"[{r['band'][0]:.3g}, {r['band'][1]:.3g}]", f"{r['model']:.4g}",
                      "-" if res is None else f"{res:+.3f}" + (" log" if r["scale"] == "log"
                                                                else ""),
                      "yes" if r["within_band"] else "NO",
                      r["role"])
        out_console.print(t)
        out_console.print(f"least-squares cost {fit.cost:.3g}; sources: rtopt calibrate --nk "
                          "--json or docs/model.md section 13.  Not identified by these rows "
                          "(assumptions): trafficking, chemokine gain and saturation, tumour NK "
                          "loss, kill rate (rtopt model params shows each basis).")
    if target is not None:
        path = write_nk_calibrated(fit, target)
        err_console.print(f"wrote {path}")
    if not fit.all_within_band():
        raise typer.Exit(1)


def _print_outcomes(ofit) -> None:
    """Tables of the outcome fit: fixed values, fitted values, local control vs clinic."""
    for site, os_ in ofit.sites.items():
        fixed = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                          for k, v in os_.fixed().items() if v is not None)
        out_console.print(f"outcome fit, {site}: fixed {fixed}; OER and hypoxia presets as above")
    t = Table(title="fitted outcome parameters")
    for col in ("site", "parameter", "value"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for site, vals in ofit.values.items():
        for k, v in vals.items():
            t.add_row(site, k, f"{v:.4g}")
    out_console.print(t)
    for role in ("training", "validation"):
        rows = [r for r in ofit.rows if r["role"] == role]
        if not rows:
            continue
        title = ("training rows (fitted)" if role == "training" else
                 "validation rows (never seen by the fit)")
        t = Table(title=f"local control, {title}: model vs clinic (radiotherapy alone)")
        for col in ("id", "schedule", "x Rx", "target", "band", "model", "resid.", "in band",
                    "reox."):
            t.add_column(col, justify="left" if col in ("id", "schedule", "band", "in band")
                         else "right")
        for r in rows:
            sched = r.get("standard") or r["schedule"].replace(" Gy / ", "/")
            if r.get("gtv_cc") is not None:
                sched += f" {r['gtv_cc']:g}cc"
            t.add_row(r["id"], sched, f"{r['tumour_dose_ratio']:.2g}", f"{r['target']:.3g}",
                      f"{r['band'][0]:g}-{r['band'][1]:g}", f"{r['model']:.3f}",
                      f"{r['residual']:+.3f}", "yes" if r["within_band"] else "NO",
                      f"{r['reoxygenation_gain']:+.4f}")
        out_console.print(t)
        n_in = sum(r["within_band"] for r in rows)
        out_console.print(f"{role}: {n_in} of {len(rows)} rows in band "
                          f"({100 * n_in / len(rows):.0f} %)")
    out_console.print("x Rx: mean tumour dose / prescribed dose of the source's prescription "
                      "convention; reox.: local control with minus without reoxygenation "
                      "between fractions (hypoxic fraction held at baseline); sources: "
                      "rtopt/model/data/outcomes.toml, docs/model.md section 9")


@app.command("bench")
@cli_errors()
def bench_cmd(
    schedules: Annotated[int, typer.Option(
        "--schedules", "-n", min=100, help="Schedules for the fast simulator.")] = 65536,
    reference: Annotated[int, typer.Option(
        "--reference", min=1, help="Schedules for the solve_ivp reference.")] = 20,
    solvers: Annotated[Optional[list[str]], typer.Option(
        "--solver", "-s",
        help="Also time these solver profiles on the instances (repeatable; 'all' = every "
             "profile).")] = None,
    instances: Annotated[Optional[list[str]], typer.Option(
        "--instance", "-i", help="Instances for solver timings (default: instances/*.toml).")] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", help="Per-solve time limit (s).")] = 60.0,
    scaling: Annotated[bool, typer.Option(
        "--scaling/--no-scaling", help="Time exhaustive vs horizon and fraction count.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    repeats: Annotated[int, typer.Option(
        "--repeats", min=1, help="Timed repetitions of each simulator configuration (median "
        "and min-max spread are printed; compilation and warm-up are never timed).")] = 7,
    workloads: Annotated[bool, typer.Option(
        "--workloads/--no-workloads", help="Also time the robust exhaustive lung solve and the "
        "virtual trial against their targets (about a minute).")] = True,
    samples: Annotated[int, typer.Option(
        "--samples", min=1, help="Parameter samples of the robust solve.")] = 256,
    patients: Annotated[int, typer.Option(
        "--patients", min=1, help="Virtual patients of the 6-arm trial.")] = 1000,
) -> None:
    """Measure simulator throughput (fast vs reference, side by side) and solver times."""
    from rtopt.outputs.bench import (bench_scaling, bench_simulator, bench_solvers, bench_workloads,
                             default_instances)
    from rtopt.planning.profiles import Profile

    # Check the solver profiles and instances before any timing: a typo is an error, not an
    # empty table.
    profiles: list = []
    if solvers:
        if "all" in solvers:
            profiles = [p for p in cli_profiles() if isinstance(p, Profile)]
        else:
            profiles = [resolve_solver(name) for name in solvers]
        instances = list(instances or default_instances())
        if not instances:
            fail(["rtopt: bench: no instances to solve: give --instance FILE (the instances/ "
                  "folder is in the source checkout, not in the installed package)"])
        for inst in instances:
            if not Path(inst).is_file():
                fail([f"{inst}: file not found"])
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # a first run compiles here, with the notice, not silently inside the warm-up
    compile_s = compile_with_notice()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("simulator", total=None)
        r = bench_simulator(n_fast=schedules, n_ref=reference, seed=seed, repeats=repeats,
                            progress=lambda label: bar.update(task, description=label))
    t = Table(title=f"simulator throughput, {r['horizon_days']}-day horizon, "
                    f"{r['steps_per_day']} sub-steps/day, {r['cpus']} CPU(s), median of "
                    f"{r['repeats']} after warm-up")
    for col in ("simulator", "schedules", "seconds", "evaluations/s", "range (min-max)",
                "target", "met"):
        t.add_column(col, justify="left" if col == "simulator" else "right")
    for k, row in enumerate(r["rows"]):
        targeted = k in (0, 3)  # the TME kernel and the population TCP
        target = "1,000,000/s" if targeted else "-"
        met = ("yes" if row["per_second"] >= 1e6 else "NO") if targeted else "-"
        t.add_row(row["name"], str(row["schedules"]), f"{row['seconds']:.3f}",
                  f"{row['per_second']:,.0f}",
                  f"{row['per_second_min']:,.0f}-{row['per_second_max']:,.0f}", target, met)
    out_console.print(t)
    out_console.print(f"speed-up fast / reference: {r['ratio']:,.0f}x (TME + nominal outcomes; "
                      f"target 50,000x: {'met' if r['ratio'] >= 5e4 else 'NOT met'}), "
                      f"{r['ratio_full']:,.0f}x (with local control);  max relative difference "
                      f"on the shared schedules: NK favourability {r['max_rel_err_nk']:.1e}, "
                      f"ln survival {r['max_rel_err_ln_s']:.1e};  peak memory "
                      f"{r['peak_mib']:,.0f} MiB (chunks of {r['chunk']:,} schedules)")
    if compiled_note(compile_s):
        out_console.print(f"compilation is not in these times{compiled_note(compile_s)}")
    if workloads:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task("workloads", total=None)
            rows = bench_workloads(samples, patients,
                                   progress=lambda label: bar.update(task, description=label))
        t = Table(title="workloads (same run; peak memory of the process after each)")
        for col in ("workload", "seconds", "target", "met", "peak memory"):
            t.add_column(col, justify="left" if col == "workload" else "right")
        for row in rows:
            name = row["name"] + (f" ({row['detail']})" if row.get("detail") else "")
            t.add_row(name, f"{row['seconds']:.1f}", f"< {row['target_s']:g} s",
                      "yes" if row["seconds"] < row["target_s"] else "NO",
                      f"{row['peak_mib']:,.0f} MiB")
        out_console.print(t)
    if profiles:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task("solving", total=None)
            rows = bench_solvers(instances, profiles, time_limit,
                                 progress=lambda label: bar.update(task, description=label))
        t = Table(title=f"solve times (time limit {time_limit:g} s)")
        for col in ("instance", "profile", "status", "verified objective", "seconds"):
            t.add_column(col)
        for row in rows:
            t.add_row(row["instance"], row["profile"], row["status"],
                      "-" if row["objective"] is None else f"{row['objective']:.5g}",
                      f"{row['seconds']:.2f}")
        out_console.print(t)
    if scaling:
        rows = bench_scaling(time_limit)
        t = Table(title="exhaustive: time vs horizon and maximum fraction count (lung preset)")
        for col in ("horizon_days", "max fractions", "schedules", "evaluations", "seconds"):
            t.add_column(col, justify="right")
        for row in rows:
            t.add_row(str(row["horizon_days"]), str(row["n_max"]), str(row["schedules"]),
                      str(row["evaluations"]), f"{row['seconds']:.2f}")
        out_console.print(t)
