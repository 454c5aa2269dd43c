"""`mlbd report ASSIGNMENT --items`: read the cohort, compute :mod:`mlbd.items`, write HTML/CSV/JSON.

The cohort comes from the gradebook (points per test cell, totals; nbgrader's own models, one
query) and from ``mlbd grade``'s run records (``.mlbd/results/``: flags, errors, the visible/hidden
outcome of each test cell, execution seconds). The HTML page embeds its plots as PNG (base64) and
escapes every text it shows (flags quote student code).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import asdict
from pathlib import Path

from . import items as it


def load(course_dir: Path, assignment: str) -> tuple[list[it.Item], list[it.Response], float]:
    """Test cells, one response per submission in the gradebook, and the assignment's maximum."""
    from nbgrader.api import GradeCell, Grade, Notebook, SubmittedAssignment, SubmittedNotebook

    from .grading import score as scoring
    from .report import open_assignment

    with open_assignment(course_dir, assignment) as (cd, gb, a):
        solutions = {(c.notebook.name, c.name) for nb in a.notebooks for c in nb.solution_cells}
        items = [it.Item(f"{nb.name}/{gc.name}", float(gc.max_score))
                 for nb in a.notebooks for gc in nb.grade_cells
                 if gc.cell_type == "code" and (nb.name, gc.name) not in solutions]
        wanted = {i.id for i in items}
        max_score = float(a.max_score)
        rows = (gb.db.query(SubmittedAssignment.student_id, Notebook.name, GradeCell.name, Grade.score)
                .join(SubmittedNotebook, SubmittedNotebook.assignment_id == SubmittedAssignment.id)
                .join(Notebook, Notebook.id == SubmittedNotebook.notebook_id)
                .join(Grade, Grade.notebook_id == SubmittedNotebook.id)
                .join(GradeCell, GradeCell.id == Grade.cell_id)
                .filter(SubmittedAssignment.assignment_id == a.id).all())
        totals = dict(gb.db.query(SubmittedAssignment.student_id, SubmittedAssignment.score)
                      .filter(SubmittedAssignment.assignment_id == a.id).all())
    cells: dict[str, dict[str, float]] = {s: {} for s in totals}
    for student, nb, cell, points in rows:
        if f"{nb}/{cell}" in wanted:
            cells[student][f"{nb}/{cell}"] = float(points or 0.0)
    records = Path(cd.root) / scoring.RESULTS / assignment
    students = sorted(set(totals) | {p.stem for p in records.glob("*.json")})
    responses = []
    for student in students:
        rec = scoring.read_record(Path(cd.root), assignment, student) or {}
        failed = rec.get("status") == "failed"      # mlbd grade could not grade it: the reason is in errors
        if student not in totals and not failed:
            continue
        responses.append(it.Response(
            student, {} if failed else cells[student], dict(rec.get("tests", {})), list(rec.get("flags", [])),
            list(rec.get("errors", [])), rec.get("execute_seconds"), None if failed else float(totals[student] or 0.0),
            failed=failed))
    return items, responses, max_score


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def _fmt(x, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def items_csv(stats: list[it.ItemStats]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    fields = list(asdict(stats[0])) if stats else [f.name for f in it.ItemStats.__dataclass_fields__.values()]
    w.writerow(fields)
    for s in stats:
        w.writerow(["" if v is None else (round(v, 6) if isinstance(v, float) else v) for v in asdict(s).values()])
    return buf.getvalue()


def as_json(assignment: str, stats: list[it.ItemStats], summary: it.AssignmentStats) -> str:
    return json.dumps({"assignment": assignment, "items": [asdict(s) for s in stats],
                       "assignment_stats": asdict(summary)}, indent=1)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode()


def plots(stats: list[it.ItemStats], summary: it.AssignmentStats) -> dict[str, str]:
    """Base64 PNGs: total score histogram, difficulty vs discrimination, execution seconds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def hist(values, xlabel, title, color, span=None) -> str:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        ax.hist(values, bins=20, range=span, color=color)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("submissions")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        png = _png(fig)
        plt.close(fig)
        return png

    out = {"totals": hist(summary.totals, "total points", f"score distribution (n={summary.n})", "#4878a8",
                          (0, max(summary.max_score, 1e-9)))}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    xs = [s.mean / s.max_score if s.max_score else 0 for s in stats]
    ys = [s.discrimination if s.discrimination is not None else 0.0 for s in stats]
    colors = ["#999999" if s.discrimination is None else ("#c03030" if s.discrimination < 0 else "#4878a8")
              for s in stats]
    ax.scatter(xs, ys, c=colors, s=22)
    ax.axhline(0, color="#666666", lw=0.6)
    ax.axhline(0.2, color="#cccccc", lw=0.6, ls="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("mean / max (easy →)")
    ax.set_ylabel("discrimination")
    ax.set_title("test cells (grey: undefined, red: negative)", fontsize=10)
    fig.tight_layout()
    out["items"] = _png(fig)
    plt.close(fig)

    if summary.seconds:
        out["seconds"] = hist(summary.seconds, "execution seconds per submission", "grading time", "#d08040")
    return out


def _table(head: list[str], rows: list[list]) -> str:
    esc = html.escape
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def page(assignment: str, stats: list[it.ItemStats], summary: it.AssignmentStats, pngs: dict[str, str]) -> str:
    esc = html.escape
    pct = lambda x: "n/a" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    item_rows = [[s.item, f"{s.max_score:g}", s.n, _fmt(s.mean), pct(s.full), pct(s.partial), pct(s.zero),
                  _fmt(s.discrimination), pct(s.visible_only) + (f" of {s.visible_only_n}" if s.visible_only_n else "")]
                 for s in stats]
    warn = [s.item for s in stats if s.discrimination is not None and s.discrimination < 0]
    weak = [s.item for s in stats if s.visible_only is not None and s.visible_only >= 0.1]
    summary_rows = [
        ["graded submissions", summary.n], ["failed outright", summary.failed],
        ["mean / median / sd", f"{summary.mean:.2f} / {summary.median:.2f} / {_fmt(summary.sd)} of {summary.max_score:g}"],
        ["Cronbach's alpha (test cells)", _fmt(summary.alpha)],
        ["execution seconds per submission: mean / median / p95",
         f"{_fmt(summary.seconds_mean)} / {_fmt(summary.seconds_median)} / {_fmt(summary.seconds_p95)}"],
    ]
    imgs = "".join(f'<img alt="{esc(k)}" src="data:image/png;base64,{v}">' for k, v in pngs.items())
    notes = ""
    if warn:
        notes += f"<p class=warn>Negative discrimination (stronger students lose these points): {esc(', '.join(warn))}</p>"
    if weak:
        notes += f"<p class=warn>Weak visible tests (≥10% pass the visible test, fail the hidden one): {esc(', '.join(weak))}</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(assignment)}: question statistics</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:70em}}table{{border-collapse:collapse;margin:.6em 0}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:right;font-size:90%}}td:first-child,th:first-child{{text-align:left}}
.warn{{color:#a02020}}img{{margin:.3em}}</style></head><body>
<h1>{esc(assignment)}: question statistics</h1>
{_table(["", ""], summary_rows)}
{notes}
<div>{imgs}</div>
<h2>Test cells</h2>
<p>full/partial/zero: shares of submissions; discrimination: corrected item-total correlation (n/a: the item or
the rest of the score does not vary); visible-only: passed the visible test but failed the hidden one.</p>
{_table(["test cell", "max", "n", "mean", "full", "partial", "zero", "discrimination", "visible-only"], item_rows)}
<h2>Integrity flags by cause</h2><p>submissions with at least one flag of that cause</p>
{_table(["cause", "submissions"], [[k, v] for k, v in summary.flags_by_cause.items()]) if summary.flags_by_cause else "<p>none</p>"}
<h2>Failures and grading notes by cause</h2>
{_table(["cause", "submissions"], [[k, v] for k, v in summary.errors_by_cause.items()]) if summary.errors_by_cause else "<p>none</p>"}
</body></html>
"""


def write(course_dir: Path, assignment: str, out_dir: Path | None = None) -> dict[str, Path]:
    """Compute and write ``items.html``, ``items.csv`` and ``items.json``; returns their paths."""
    items, responses, max_score = load(course_dir, assignment)
    stats = it.item_stats(items, responses)
    summary = it.assignment_stats(items, responses, max_score)
    out_dir = Path(out_dir) if out_dir else course_dir / ".mlbd" / "reports" / assignment
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "items.html", "csv": out_dir / "items.csv", "json": out_dir / "items.json"}
    paths["html"].write_text(page(assignment, stats, summary, plots(stats, summary)))
    paths["csv"].write_text(items_csv(stats))
    paths["json"].write_text(as_json(assignment, stats, summary))
    return paths
