"""`mlbd report`: an assignment's grades from the gradebook, with the grader's flags and errors.

Formats: ``table`` (rich), ``csv`` (exactly ``nbgrader export``'s CSV, this assignment's rows),
``json`` (the schema of issue 5), ``canvas`` (a CSV that Canvas' gradebook import accepts) and
``--plots DIR`` (a PNG histogram per question and one of the totals).
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .course import CourseError


def collect(course_dir: Path, assignment: str) -> dict:
    """``{"assignment", "submissions": [...], "questions": {qid: max}}`` from gradebook + records."""
    from nbgrader.api import Gradebook, MissingEntry

    from .grading import score as scoring
    from .grading.pipeline import course_directory, load_config

    cfg = load_config(course_dir)
    cd = course_directory(course_dir, cfg)
    root = Path(cd.root)
    try:
        gb = Gradebook(cd.db_url, cd.course_id)
    except Exception as exc:  # noqa: BLE001
        raise CourseError(f"cannot open the gradebook {cd.db_url}: {exc}") from exc
    with gb:
        try:
            a = gb.find_assignment(assignment)
        except MissingEntry:
            raise CourseError(f"assignment {assignment!r} is not in the gradebook")
        questions = {}
        for nb in a.notebooks:
            for gc in nb.grade_cells:
                questions[f"{nb.name}/{gc.name}"] = float(gc.max_score)
        subs = []
        for sub in sorted(a.submissions, key=lambda s: s.student.id):
            rec = scoring.read_record(root, assignment, sub.student.id) or {}
            cells = {}
            review = []
            for snb in sub.notebooks:
                for g in snb.grades:
                    cells[f"{snb.name}/{g.name}"] = float(g.score or 0.0)
                    if g.needs_manual_grade:
                        review.append(f"{snb.name}/{g.name}")
            flags = list(rec.get("flags", []))
            subs.append({
                "student": sub.student.id,
                "score": float(sub.score),
                "max_score": float(sub.max_score),
                "flags": flags,
                "errors": list(rec.get("errors", [])),
                "late_penalty": float(sub.late_submission_penalty or 0.0),
                "needs_review": sorted(review),
                "cells": cells,
                "first_name": sub.student.first_name or "",
                "last_name": sub.student.last_name or "",
            })
    return {"assignment": assignment, "submissions": subs, "questions": questions, "db_url": cd.db_url,
            "course_id": cd.course_id}


def nbgrader_csv(course_dir: Path, assignment: str, data: dict) -> str:
    """``nbgrader export``'s CSV restricted to this assignment (its own exporter, not a copy)."""
    from nbgrader.api import Gradebook
    from nbgrader.plugins.export import CsvExportPlugin

    fd, tmp = tempfile.mkstemp(suffix=".csv")
    os.close(fd)
    try:
        plugin = CsvExportPlugin(to=tmp, assignment=[assignment])
        with Gradebook(data["db_url"], data["course_id"]) as gb:
            plugin.export(gb)
        return Path(tmp).read_text()
    finally:
        os.unlink(tmp)


def canvas_csv(data: dict) -> str:
    """Canvas gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, then the assignment
    column; the second row holds 'Points Possible'. Students are matched on SIS Login ID."""
    max_score = max((s["max_score"] for s in data["submissions"]), default=sum(data["questions"].values()))
    col = data["assignment"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", col])
    w.writerow(["    Points Possible", "", "", "", "", f"{max_score:g}"])
    for s in data["submissions"]:
        name = ", ".join(x for x in (s["last_name"], s["first_name"]) if x) or s["student"]
        w.writerow([name, "", s["student"], s["student"], "", f"{s['score']:g}"])
    return buf.getvalue()


def as_json(data: dict) -> str:
    out = {"assignment": data["assignment"],
           "submissions": [{k: s[k] for k in ("student", "score", "max_score", "flags", "errors")}
                           for s in data["submissions"]]}
    return json.dumps(out, indent=2)


def plots(data: dict, folder: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for qid, max_pts in data["questions"].items():
        values = [s["cells"].get(qid, 0.0) for s in data["submissions"]]
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.hist(values, bins=min(20, max(2, int(max_pts * 2) + 1)), range=(0, max(max_pts, 1e-9)), color="#4878a8")
        ax.set_title(f"{data['assignment']} · {qid} (max {max_pts:g})", fontsize=9)
        ax.set_xlabel("points")
        ax.set_ylabel("submissions")
        fig.tight_layout()
        path = folder / f"{data['assignment']}_{qid.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    totals = [s["score"] for s in data["submissions"]]
    top = max([s["max_score"] for s in data["submissions"]] + [sum(data["questions"].values()), 1e-9])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(totals, bins=20, range=(0, top), color="#d08040")
    ax.set_title(f"{data['assignment']}: total score (n={len(totals)})", fontsize=10)
    ax.set_xlabel("points")
    ax.set_ylabel("submissions")
    fig.tight_layout()
    path = folder / f"{data['assignment']}_total.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


def table(data: dict, console: Console) -> None:
    t = Table(title=f"{data['assignment']}: grades")
    for col in ("student", "score", "max", "needs review", "flags", "errors"):
        t.add_column(col)
    for s in data["submissions"]:
        t.add_row(s["student"], f"{s['score']:g}", f"{s['max_score']:g}", str(len(s["needs_review"])) if s["needs_review"] else "",
                  "\n".join(f[:90] for f in s["flags"][:3]), "\n".join(e[:90] for e in s["errors"][:3]))
    console.print(t)
    scores = [s["score"] for s in data["submissions"]]
    if scores:
        mean = sum(scores) / len(scores)
        console.print(f"{len(scores)} submissions, mean {mean:.2f}, min {min(scores):g}, max {max(scores):g}; "
                      f"{sum(bool(s['flags']) for s in data['submissions'])} flagged, "
                      f"{sum(bool(s['errors']) for s in data['submissions'])} with errors")
    qt = Table(title="per question")
    for col in ("question", "max", "mean", "full marks"):
        qt.add_column(col)
    n = max(1, len(data["submissions"]))
    for qid, mx in data["questions"].items():
        vals = [s["cells"].get(qid, 0.0) for s in data["submissions"]]
        qt.add_row(qid, f"{mx:g}", f"{sum(vals) / n:.2f}", f"{sum(v >= mx for v in vals)}/{len(vals)}")
    console.print(qt)


def report(course_dir: Path, assignment: str, fmt: str = "table", plots_dir: str | None = None,
           plots: str | None = None, out=None) -> int:
    out = out or sys.stdout
    plots_dir = plots_dir or plots
    data = collect(course_dir, assignment)
    if fmt == "json":
        out.write(as_json(data) + "\n")
    elif fmt == "csv":
        out.write(nbgrader_csv(course_dir, assignment, data))
    elif fmt == "canvas":
        out.write(canvas_csv(data))
    else:
        table(data, Console(file=out) if out is not sys.stdout else Console())
    if plots_dir:
        written = _plots(data, Path(plots_dir))
        print(f"wrote {len(written)} plots to {plots_dir}", file=sys.stderr)
    return 0


_plots = plots
