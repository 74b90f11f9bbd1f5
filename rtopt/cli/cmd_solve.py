"""Optimiser commands: ``rtopt solve FILE`` and ``rtopt solvers``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from rtopt.cli import app
from rtopt.cli._common import (CompileNotice, ExitCode, cli_errors, compiled_note, err_console,
                               out_console, resolve_solver, write_atomic)

# rtopt's layers and the heavy libraries are imported inside the commands: `rtopt --help` loads
# none of them (tests/test_cli_install.py).


@app.command("solve")
@cli_errors()
def solve_cmd(
    file: Annotated[str, typer.Argument(metavar="FILE", help="Instance file (TOML).")],
    solver: Annotated[str, typer.Option(
        "--solver", "-s", metavar="PROFILE",
        help="Solver profile (solvers/NAME.toml), profile file, or back-end name.")] = "exhaustive",
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", metavar="S", min=0.01, help="Override the profile's time limit (s).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", min=0, help="Override the profile's random seed.")] = None,
    memory_limit: Annotated[Optional[int], typer.Option(
        "--memory-limit", metavar="MB", min=64,
        help="Memory budget of the search (MiB; default the profile's memory_limit_mb, else "
             "4096). A back-end whose search would need more declines or stops early.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="PLAN.json",
        help="Write the result JSON (replayable with `rtopt simulate --plan`).")] = None,
    robust: Annotated[Optional[str], typer.Option(
        "--robust", metavar="STAT",
        help="Robust plan over parameter samples: expected, cvar:ALPHA, worst or "
             "prob-better:PLAN.json (exhaustive and scipy-de).")] = None,
    samples: Annotated[int, typer.Option(
        "--samples", help="Parameter samples of --robust (seeded by --seed).")] = 32,
    scheduler: Annotated[Optional[str], typer.Option(
        "--scheduler", help="Dask scheduler of --robust: sync, threads, local:N or "
                            "tcp://HOST:PORT.")] = None,
    reference: Annotated[Optional[str], typer.Option(
        "--reference", metavar="PLAN.json",
        help="With --robust: also report the probability of beating this plan.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Use plan files written for another instance.")] = False,
    maximise: Annotated[Optional[str], typer.Option(
        "--maximise", metavar="OBJECTIVE",
        help="Maximise this objective instead of the instance's (nk_favourability, "
             "local_control, tcp, tumour_log_kill, nk_gain_local_control, nk_gain_log_kill, "
             "reoxygenation_gain_local_control, tumour_bed); costs and limits are kept.")] = None,
) -> None:
    """Optimise an instance and print the verified plan.

    Exit code 0 for a verified feasible plan, 3 for an infeasible instance, 4 when the solver's
    plan fails verification, 1 otherwise (see `rtopt --help`).
    """
    from rtopt.decisions.facade import solve

    profile = resolve_solver(solver)
    if robust is not None:
        from rtopt.decisions.distributed import resolve_scheduler

        resolve_scheduler(scheduler)      # a bad --scheduler fails before the search
    options = {"memory_limit_mb": memory_limit} if memory_limit is not None else None
    ref = None
    problem = file
    if maximise is not None:
        from rtopt.common.errors import RtoptError
        from rtopt.problem.problem import OBJECTIVES, Problem

        if maximise not in OBJECTIVES:
            raise RtoptError(f"--maximise {maximise!r}: unknown objective (one of "
                             f"{', '.join(OBJECTIVES)})")
        problem = Problem.from_path(file).with_objective(maximise)
    if reference is not None or (robust or "").startswith("prob-better:"):
        from rtopt.decisions.robust import load_plan, parse_robust
        from rtopt.problem.problem import Problem

        if not isinstance(problem, Problem):
            problem = Problem.from_path(file)
        if reference is not None:
            ref = load_plan(reference, problem, force=force, option="--reference")
        if robust is not None:
            robust = parse_robust(robust, ref, problem, force=force)
    result = solve(problem, profile, time_limit_s=time_limit, seed=seed, options=options,
                   robust=robust, samples=samples, scheduler=scheduler, reference=ref,
                   compile_progress=CompileNotice())
    if output is not None and result.plan is not None and result.feasible:
        write_atomic(output, result.to_json() + "\n")
    if json_out:
        typer.echo(result.to_json())
    else:
        print_result(result)
    if output is not None and not result.feasible:
        err_console.print(f"{output}: not written (no verified feasible plan)")
    raise typer.Exit(exit_code(result))


def exit_code(result) -> ExitCode:
    """The :class:`ExitCode` of a solve result (:attr:`rtopt.planning.solve.Result.exit_code`)."""
    return ExitCode(result.exit_code)


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def print_result(r) -> None:
    """Print a :class:`rtopt.planning.solve.Result` for people (plan, metrics, constraints)."""
    c = out_console
    c.print(f"{r.instance}  [{r.solver} -> {r.backend}: {r.solver_name} {r.solver_version}]")
    c.print(f"status: {r.status}   termination: {r.termination}   verified: {r.verified}   "
            f"wall time: {r.wall_time_s:.2f} s{compiled_note(r.compile_time_s)}")
    if r.message:
        c.print(f"message: {r.message}")
    if r.plan is not None:
        c.print(f"plan: {r.plan.describe()}")
    if r.objective is not None or r.claimed_objective is not None:
        c.print(f"objective {r.objective_name}: verified {_fmt(r.objective)}   "
                f"claimed {_fmt(r.claimed_objective)}   bound {_fmt(r.bound)}   "
                f"gap {_fmt(r.gap, '.2%') if r.gap is not None else '-'}")
    if r.metrics:
        t = Table(title="metrics (re-simulated by rtopt)", show_lines=False)
        t.add_column("metric")
        t.add_column("value", justify="right")
        m = r.metrics
        for key, label in (("tumour_bed_gy", "tumour BED (Gy)"), ("tumour_eqd2_gy", "tumour EQD2 (Gy)"),
                           ("nk_favourability", "NK favourability (activity-days)"),
                           ("nk_favourability_infused", "  of which infused NK cells"),
                           ("nk_favourability_endogenous", "  of which the patient's own NK"),
                           ("tumour_log10_kill", "tumour log10 kill"),
                           ("nk_log10_kill", "  of which NK killing"),
                           ("nk_gain_log10_kill", "  NK-attributable gain (vs same plan, no infusions)"),
                           ("local_control", "local control (population)"),
                           ("nk_gain_local_control", "  NK-attributable gain"),
                           ("reoxygenation_gain_local_control",
                            "  reoxygenation gain (RT alone)"),
                           ("tcp", "TCP (per patient, nominal alpha)"),
                           ("hypoxic_fraction_end", "hypoxic fraction at end (%)"),
                           ("circulating_nk_nadir", "circulating NK nadir (of baseline)"),
                           ("circulating_nk_auc", "  circulating NK area (baseline-days)"),
                           ("overall_days", "overall time (days)")):
            if key in m:
                scale = 100.0 if key == "hypoxic_fraction_end" else 1.0
                t.add_row(label, _fmt(None if m[key] is None else scale * m[key],
                                      ".3g" if scale != 1.0 else ".4g"))
        c.print(t)
        if "local_control" in m and r.outcome_calibration:
            c.print(f"tumour control: {r.outcome_calibration}")
        print_dvh(r.dvh)
    if r.constraints:
        t = Table(title="constraints")
        for col in ("constraint", "achieved", "limit", "slack", "ok"):
            t.add_column(col, justify="left" if col == "constraint" else "right", no_wrap=True)
        for ch in r.constraints:
            if ch.kind != "limit" and ch.ok:
                continue  # calendar and count rules are listed only when broken
            t.add_row(ch.name, _fmt(ch.value), f"{ch.sense} {_fmt(ch.limit)}", _fmt(ch.slack),
                      "ok" if ch.ok else "VIOLATED")
        c.print(t)
    if "robust" in r.extras:
        from rtopt.cli.cmd_uncertainty import print_robust

        print_robust(r.extras["robust"])
    if r.diagnosis is not None and r.diagnosis.conflicts:
        c.print("diagnosis:")
        for line in r.diagnosis.conflicts:
            c.print(f"  - {line}")


def print_dvh(summary) -> None:
    """Print per-organ EQD2 metrics and NTCP of a [dvh_plan] instance's plan
    (:func:`rtopt.problem.dvh.dvh_summary`; nothing when it is None)."""
    if not summary:
        return
    ntcp_of: dict[str, list[str]] = {}
    for x in summary["ntcp"]:
        ntcp_of.setdefault(x["organ"], []).append(
            f"{x['name']} {_fmt(None if x['probability'] is None else 100 * x['probability'], '.3g')} %")
    t = Table(title="organs at risk from the plan's DVHs (EQD2 at each organ's alpha/beta, Gy)")
    for col in ("organ", "Dmax", "D2cc", "Dmean", "NTCP", "DVH limits"):
        t.add_column(col, justify="left" if col in ("organ", "NTCP", "DVH limits") else "right")
    for o in summary["organs"]:
        t.add_row(o["name"], _fmt(o["eqd2_dmax_gy"]), _fmt(o["eqd2_d2cc_gy"]),
                  _fmt(o["eqd2_dmean_gy"]), "; ".join(ntcp_of.get(o["name"], [])) or "-",
                  "ok" if o["ok"] else "VIOLATED")
    tg = summary["target"]
    if tg is not None:
        t.add_row("target (tumour alpha/beta)", "-", "-", _fmt(tg["eqd2_dmean_gy"]),
                  f"D95% {_fmt(tg['eqd2_d95%_gy'])}", "ok" if all(c["ok"] for c in tg["limits"])
                  else "VIOLATED")
    out_console.print(t)
    if summary["blood_dose_per_fraction_gy"] is not None:
        out_console.print(f"circulating blood: {summary['blood_dose_per_fraction_gy']:.3g} Gy per "
                          "fraction (pass model, rtopt.dose.blood; sets nk_blood_dose_fraction)")


@app.command("solvers")
@cli_errors()
def solvers_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List solver profiles and back-ends with their availability."""
    import json

    from rtopt.backends import BACKENDS, get_backend
    from rtopt.backends.base import check_imports
    from rtopt.planning.profiles import Profile, list_profiles, profile_origin, shadowed

    profiles = list_profiles()
    names = set()  # try every back-end's imports at once (each in a child process)
    for b in {p.backend for p in profiles if isinstance(p, Profile)} | set(BACKENDS):
        try:
            names.update(get_backend(b).requires)
        except (ImportError, AttributeError):
            pass  # reported by _describe
    check_imports(names)
    rows = []
    for p in profiles:
        if not isinstance(p, Profile):
            for line in p.lines():
                err_console.print(line)
            continue
        rows.append({**_describe(p.name, p.backend, p.description, p.options.time_limit_s),
                     "file": p.path, "origin": profile_origin(p.path), "shadows": shadowed(p)})
    profiled = {r["backend"] for r in rows}
    for name in BACKENDS:  # back-ends without a profile of their own, with default options
        if name not in profiled:
            rows.append({**_describe(f"({name})", name, "back-end defaults", None),
                         "file": None, "origin": profile_origin(None), "shadows": []})
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    # identifiers and yes/no in the table (fits 80 columns); the long text below it, per profile
    t = Table(title="solver profiles and back-ends")
    for col in ("profile", "backend", "available", "NK", "per-fx", "continuous"):
        t.add_column(col, no_wrap=True)
    t.caption = ("NK: NK objectives; per-fx: per-fraction doses; continuous: continuous "
                 "doses")
    for r in rows:
        t.add_row(r["profile"], r["backend"], "yes" if r["available"] else "no",
                  _yn(r["nk"]), _yn(r["per_fraction_doses"]), _yn(r["continuous_dose"]))
    out_console.print(t)
    for r in rows:
        out_console.print(f"{r['profile']}: "
                          + (f"{r['file']} ({r['origin']})" if r["file"] else r["origin"]))
        if not r["available"]:
            out_console.print(f"  unavailable: {r['reason']}")
        out_console.print(f"  objectives: {', '.join(r['objectives']) or '-'}")
        if r["guarantee"]:
            out_console.print(f"  guarantee: {r['guarantee']}")
    for r in rows:
        for other in r["shadows"]:
            out_console.print(f"note: profile '{r['profile']}' is {r['file']} ({r['origin']}); "
                              f"{other} of the same name is not used (give its path to use it)")
    out_console.print("A bare back-end name (" + ", ".join(BACKENDS) + ") runs that back-end "
                      "with its default options.")


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def _describe(profile: str, backend: str, description: str, time_limit: float | None) -> dict:
    from rtopt.backends import get_backend

    try:
        cls = get_backend(backend)
    except (ImportError, AttributeError) as e:  # a back-end module that fails to import
        return {"profile": profile, "backend": backend, "available": False,
                "reason": f"cannot load: {e}", "objectives": [], "nk": False,
                "per_fraction_doses": False, "continuous_dose": False,
                "dvh_limits": False, "global_optimality": False, "guarantee": "",
                "description": description}
    ok, why = cls.available()
    return {"profile": profile, "backend": backend, "available": ok, "reason": why,
            **cls.capabilities(), "guarantee": cls.guarantee, "description": description,
            "time_limit_s": time_limit}
