"""Files of ``rtopt pareto``: ``front.csv``, ``front.json``, ``front.png`` and an offline report
(``report.html``, self-contained with the figure inlined, and ``report.md``) in the style of
``rtopt compare``'s.  :func:`render` rebuilds the figure and both reports from ``front.json``
alone (``rtopt report DIR``); matplotlib is imported lazily."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any

from rtopt.common.fileio import write_atomic

# matplotlib is imported inside the figure functions (import time).

__all__ = ["write", "render", "is_pareto_folder"]


def is_pareto_folder(outdir: str | os.PathLike) -> bool:
    return (Path(outdir) / "front.json").is_file()


def write(res: Any, outdir: str | os.PathLike) -> list[Path]:
    """Write every file of a :class:`rtopt.decisions.pareto.ParetoResult` to ``outdir``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    data = res.to_dict()
    write_atomic(out / "front.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    write_atomic(out / "front.csv", _csv(data))
    render(out)
    return [out / n for n in ("front.csv", "front.json", "front.png", "report.html", "report.md")]


def _rows(data: dict) -> list[tuple[str, int | None, dict]]:
    rows = [("exact", i, p) for i, p in enumerate(data["exact"]["points"])]
    rows += [("heuristic", i, p) for i, p in enumerate(data["heuristic"]["points"])]
    if data["reference"]:
        rows.append(("reference", None, data["reference"]))
    rows += [("standard", None, p) for p in data["standards"]]
    return rows


def _csv(data: dict) -> str:
    objs = [o["name"] for o in data["objectives"]]
    metric_keys = sorted({k for _, _, p in _rows(data) for k in p["metrics"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["front", "index", "role", *objs, "plan", "fraction_days", "doses_gy", "nk_days",
                "feasible", *metric_keys])
    knee, better = data["knee"], data["reference_better"]
    for front, i, p in _rows(data):
        role = []
        if front == "exact" and i == knee:
            role.append("knee")
        if front == "exact" and i == better:
            role.append("dominates_reference")
        if front == "standard":
            role.append(p["name"])
        pl = p["plan"]
        w.writerow([front, "" if i is None else i, ";".join(role),
                    *[repr(p["objectives"][o]) for o in objs], p["describe"],
                    " ".join(str(f["day"]) for f in pl["fractions"]),
                    " ".join(f"{f['dose_gy']:g}" for f in pl["fractions"]),
                    " ".join(str(i["day"]) for i in pl["nk_infusions"]), p["feasible"],
                    *[repr(p["metrics"].get(k, "")) for k in metric_keys]])
    return buf.getvalue()


# ---------------------------------------------------------------------- figure
INTEGER_OBJECTIVES = ("n_fractions", "overall_days")
"""Objectives counted in whole numbers (fractions, days): their axes get whole-number ticks."""


def _figure(data: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    objs = data["objectives"]
    pairs = [(0, 1)] if len(objs) == 2 else [(0, 1), (0, 2), (1, 2)]
    # one panel per row at 8 x 5.2 in and 110 dpi (880 px wide): the HTML page shows it at its
    # own size; three panels side by side were shrunk to ~80 % and their labels to ~6 pt
    fig, axes = plt.subplots(len(pairs), 1, figsize=(8.0, 5.2 * len(pairs)), squeeze=False)
    axes = axes.T

    def xy(points, a, b):
        return ([p["objectives"][objs[a]["name"]] for p in points],
                [p["objectives"][objs[b]["name"]] for p in points])

    ex = data["exact"]["points"]
    he = data["heuristic"]["points"]
    for ax, (a, b) in zip(axes[0], pairs):
        if ex:
            x, y = xy(ex, a, b)
            order = sorted(range(len(x)), key=lambda i: x[i])
            ax.plot([x[i] for i in order] if len(objs) == 2 else x,
                    [y[i] for i in order] if len(objs) == 2 else y,
                    "o-" if len(objs) == 2 else "o", ms=4, lw=1, color="#264f80",
                    label="exact (exhaustive space)", alpha=0.8)
        if he:
            x, y = xy(he, a, b)
            ax.plot(x, y, "x", ms=6, color="#c0392b", label="heuristic (pymoo)")
        if data["knee"] is not None and ex:
            x, y = xy([ex[data["knee"]]], a, b)
            ax.plot(x, y, "*", ms=16, color="#e69f00", mec="k", label="knee", zorder=5)
        if data["reference"]:
            x, y = xy([data["reference"]], a, b)
            ax.plot(x, y, "D", ms=8, color="k", label="reference", zorder=5)
        if data["reference_better"] is not None and ex:
            x, y = xy([ex[data["reference_better"]]], a, b)
            ax.plot(x, y, "o", ms=13, mfc="none", mec="#17622d", mew=2,
                    label="dominates the reference", zorder=5)
        for s in data["standards"]:
            x, y = xy([s], a, b)
            ax.plot(x, y, "s" if s["feasible"] else "s", ms=6,
                    color="#7f7f7f" if s["feasible"] else "#f4b6b0", mec="k", zorder=4)
            ax.annotate(s["name"], (x[0], y[0]), textcoords="offset points", xytext=(4, 3),
                        fontsize=9, color="#444")
        ax.set_xlabel(objs[a]["label"] + (" (max)" if objs[a]["sense"] == "max" else " (min)"))
        ax.set_ylabel(objs[b]["label"] + (" (max)" if objs[b]["sense"] == "max" else " (min)"))
        ax.grid(alpha=0.3)
        for axis, k in ((ax.xaxis, a), (ax.yaxis, b)):   # counts and days: whole-number ticks
            if objs[k]["name"] in INTEGER_OBJECTIVES:
                axis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].plot([], [], "s", color="#7f7f7f", mec="k", label="standard schedules")
    axes[0][0].legend(fontsize=9, loc="best")
    fig.suptitle(f"{data['instance']}: Pareto front", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))   # room for the title
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------------- reports
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(data: dict) -> tuple[list[str], list[list[str]]]:
    objs = data["objectives"]
    head = ["#", "plan", *[o["label"] + (" ↑" if o["sense"] == "max" else " ↓") for o in objs],
            "note"]
    rows = []
    for i, p in enumerate(data["exact"]["points"]):
        note = []
        if i == data["knee"]:
            note.append("knee")
        if i == data["reference_better"]:
            note.append("dominates the reference")
        rows.append([str(i), p["describe"], *[_fmt(p["objectives"][o["name"]]) for o in objs],
                     ", ".join(note)])
    return head, rows


def summary_lines(data: dict) -> list[str]:
    """The few lines ``rtopt pareto`` prints about a front (objectives, sizes, knee, reference)."""
    ex = data["exact"]["points"]
    lines = ["Objectives: " + ", ".join(f"{o['name']} ({o['sense']})" for o in data["objectives"]),
             f"Exact front: {len(ex)} verified plans, {data['exact']['label']}; "
             f"{data['counts'].get('schedules', 0):,} schedules, "
             f"{data['counts'].get('pairs_scored', 0):,} schedule x infusion-set pairs scored "
             f"in {data['timings_s'].get('exact_s', 0):.1f} s."]
    if data["knee"] is not None and ex:
        k = ex[data["knee"]]
        lines.append("Knee: " + k["describe"] + " (" + ", ".join(
            f"{o['name']} {_fmt(k['objectives'][o['name']])}" for o in data["objectives"]) + ").")
    if data["reference"]:
        lines.append("Reference: " + data["reference_sentence"] + ".")
    if data["heuristic"]["points"]:
        ind = data["indicators"]
        lines.append(f"Heuristic front: {len(data['heuristic']['points'])} verified plans "
                     f"({data['heuristic']['label']}) in "
                     f"{data['timings_s'].get('heuristic_s', 0):.1f} s; hypervolume "
                     f"{ind.get('hv_heuristic', float('nan')):.4f} vs exact "
                     f"{ind.get('hv_exact', float('nan')):.4f}; GD {ind.get('gd', 0):.3g}, "
                     f"IGD {ind.get('igd', 0):.3g} ({ind.get('normalisation', '')}).")
    lines.append("Every plan (fronts, reference, standard schedules) is re-verified by "
                 "Problem.verify; every front point meets every constraint.")
    return lines


def _standards(data: dict) -> tuple[list[str], list[list[str]]]:
    objs = data["objectives"]
    head = ["schedule", "plan", *[o["label"] for o in objs], "feasible"]
    rows = []
    for s in ([{"name": "reference", **data["reference"]}] if data["reference"] else []) \
            + data["standards"]:
        rows.append([s["name"], s["describe"], *[_fmt(s["objectives"][o["name"]]) for o in objs],
                     "yes" if s["feasible"] else "no"])
    return head, rows


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<div class="wide"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


_CSS = """body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
 color: #1d232b; margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 1.7em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 2px solid #d6dbe1; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.88em; }
th, td { border: 1px solid #d6dbe1; padding: 4px 8px; text-align: left; }
th { background: #f4f6f8; } .wide { overflow-x: auto; } img { max-width: 100%; }
p.sub { color: #5d6875; }"""


def render(outdir: str | os.PathLike) -> list[str]:
    """(Re)build ``front.png``, ``report.md`` and ``report.html`` from ``front.json``."""
    out = Path(outdir)
    from rtopt.common.fileio import load_json

    data = load_json(out / "front.json", limit=256 * 1024 * 1024)
    problems: list[str] = []
    png = b""
    try:
        png = _figure(data)
        write_atomic(out / "front.png", png)
    except Exception as exc:  # pragma: no cover - a missing/broken matplotlib
        problems.append(f"figure not drawn: {exc}")
    title = f"Pareto front: {data['instance']}"
    summary = summary_lines(data)
    th, tr = _table(data)
    sh, sr = _standards(data)
    md = [f"# {title}", "", *[f"- {s}" for s in summary], ""]
    if png:
        md += ["![Pareto front](front.png)", ""]
    md += ["## Exact front", "", _md_table(th, tr), "", "## Reference and standard schedules", "",
           _md_table(sh, sr), ""]
    if data["heuristic"]["points"]:
        hh, hr = _table({**data, "exact": data["heuristic"], "knee": None,
                         "reference_better": None})
        md += ["## Heuristic front", "", _md_table(hh, hr), ""]
    write_atomic(out / "report.md", "\n".join(md))
    img = (f'<img alt="Pareto front" src="data:image/png;base64,'
           f'{base64.b64encode(png).decode()}">' if png else "<p>(figure not drawn)</p>")
    parts = [f"<!DOCTYPE html>\n<html lang=\"en-GB\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{html.escape(title)}</h1>",
             "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in summary) + "</ul>", img,
             "<h2>Exact front</h2>", _html_table(th, tr),
             "<h2>Reference and standard schedules</h2>", _html_table(sh, sr)]
    if data["heuristic"]["points"]:
        parts += ["<h2>Heuristic front</h2>", _html_table(hh, hr)]
    parts.append("</main></body></html>\n")
    write_atomic(out / "report.html", "\n".join(parts))
    return problems
