"""`mlbd report`: an assignment's grades from the gradebook, with the grader's flags and errors.

Every student is listed: graded, failed (``mlbd grade`` could not grade the submission: its
reason from the run record), not graded yet (a submission ``mlbd grade`` has not seen) and
missing (a student of the gradebook without a submission).

Formats: ``table`` (rich; long flags and errors wrap, nothing is cut), ``csv`` (``nbgrader
export``'s columns, this assignment's rows), ``json`` (the schema of issue 5 plus ``status``),
``canvas`` (a CSV that Canvas' gradebook import accepts) and ``--plots DIR`` (a PNG histogram per
question and one of the totals). Both CSVs come from nbgrader export plugins in ``mlbd.export``
(quoted, spreadsheet formulas neutralised).
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .course import CourseError

GRADED, FAILED, NOT_GRADED, MISSING = "graded", "failed", "not graded", "missing"


@dataclass
class Row:
    student: str
    status: str                       # graded | failed | not graded | missing
    score: float = 0.0
    max_score: float = 0.0
    flags: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)    # for failed / not graded / missing: the reason
    late_penalty: float = 0.0
    needs_review: list[str] = field(default_factory=list)
    cells: dict[str, float] = field(default_factory=dict)
    first_name: str = ""
    last_name: str = ""


@contextmanager
def open_assignment(course_dir: Path, assignment: str):
    """``(course_directory, gradebook, assignment)`` of the course's gradebook, with one-line errors."""
    from nbgrader.api import Gradebook, MissingEntry

    from .grading.pipeline import course_directory, load_config

    cd = course_directory(course_dir, load_config(course_dir))
    try:
        gb = Gradebook(cd.db_url, cd.course_id)
    except Exception as exc:  # noqa: BLE001
        raise CourseError(f"cannot open the gradebook {cd.db_url}: {exc}") from exc
    with gb:
        try:
            a = gb.find_assignment(assignment)
        except MissingEntry:
            raise CourseError(f"assignment {assignment!r} is not in the gradebook") from None
        yield cd, gb, a


def collect(course_dir: Path, assignment: str) -> dict:
    """``{"assignment", "submissions": [Row, ...], "questions": {qid: max}}`` from gradebook, run
    records and the submitted folder: one row per student of the gradebook or with a submission."""
    from .grading import score as scoring
    from .grading.pipeline import _submitted_students

    with open_assignment(course_dir, assignment) as (cd, gb, a):
        root = Path(cd.root)
        questions = {}
        for nb in a.notebooks:
            for gc in nb.grade_cells:
                questions[f"{nb.name}/{gc.name}"] = float(gc.max_score)
        max_score = float(a.max_score)
        submitted = set(_submitted_students(cd, assignment))
        rows: dict[str, Row] = {}
        for sub in a.submissions:
            rec = scoring.read_record(root, assignment, sub.student.id) or {}
            cells, review = {}, []
            for snb in sub.notebooks:
                for g in snb.grades:
                    cells[f"{snb.name}/{g.name}"] = float(g.score or 0.0)
                    if g.needs_manual_grade:
                        review.append(f"{snb.name}/{g.name}")
            status = FAILED if rec.get("status") == FAILED else GRADED
            rows[sub.student.id] = Row(sub.student.id, status, float(sub.score), float(sub.max_score),
                                       list(rec.get("flags", [])), list(rec.get("errors", [])),
                                       float(sub.late_submission_penalty or 0.0), sorted(review), cells,
                                       sub.student.first_name or "", sub.student.last_name or "")
        names = {st.id: st for st in gb.students}
        for student in sorted(set(names) | submitted):
            if student in rows:
                continue
            st = names.get(student)
            first, last = (st.first_name or "", st.last_name or "") if st else ("", "")
            rec = scoring.read_record(root, assignment, student) or {}
            if student not in submitted:
                rows[student] = Row(student, MISSING, 0.0, max_score, errors=["no submission"], first_name=first, last_name=last)
            elif rec.get("status") == FAILED:
                rows[student] = Row(student, FAILED, 0.0, max_score, errors=list(rec.get("errors", [])) or ["grading failed"],
                                    first_name=first, last_name=last)
            else:
                rows[student] = Row(student, NOT_GRADED, 0.0, max_score, errors=[f"submitted, not graded yet: run mlbd grade {assignment}"],
                                    first_name=first, last_name=last)
    return {"assignment": assignment, "submissions": [rows[k] for k in sorted(rows)], "questions": questions,
            "db_url": cd.db_url, "course_id": cd.course_id}


def export_csv(data: dict, plugin_class) -> str:
    """This assignment's rows through one of ``mlbd.export``'s nbgrader export plugins."""
    from nbgrader.api import Gradebook

    with Gradebook(data["db_url"], data["course_id"]) as gb:
        return plugin_class(assignment=[data["assignment"]]).text(gb)


def as_json(data: dict) -> str:
    out = {"assignment": data["assignment"],
           "submissions": [{k: asdict(s)[k] for k in ("student", "status", "score", "max_score", "flags", "errors")}
                           for s in data["submissions"]]}
    return json.dumps(out, indent=2)


def graded(data: dict) -> list[Row]:
    """The rows with a grade (statistics and plots leave out failed, ungraded and missing ones)."""
    return [s for s in data["submissions"] if s.status == GRADED]


def plots(data: dict, folder: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for qid, max_pts in data["questions"].items():
        values = [s.cells.get(qid, 0.0) for s in graded(data)]
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
    totals = [s.score for s in graded(data)]
    top = max([s.max_score for s in graded(data)] + [sum(data["questions"].values()), 1e-9])
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
    """Every row in full: long flags and reasons wrap (``overflow="fold"``) at any width, never cut."""
    t = Table(title=f"{data['assignment']}: grades")
    for col in ("student", "status", "score", "max", "needs review"):
        t.add_column(col, overflow="fold")
    t.add_column("flags", overflow="fold", ratio=1)
    t.add_column("errors / reason", overflow="fold", ratio=1)
    for s in data["submissions"]:
        t.add_row(s.student, s.status, f"{s.score:g}", f"{s.max_score:g}", str(len(s.needs_review)) if s.needs_review else "",
                  "\n".join(s.flags), "\n".join(s.errors))
    console.print(t)
    done = graded(data)
    scores = [s.score for s in done]
    counts = {st: sum(s.status == st for s in data["submissions"]) for st in (FAILED, NOT_GRADED, MISSING)}
    if scores:
        mean = sum(scores) / len(scores)
        console.print(f"{len(scores)} graded, mean {mean:.2f}, min {min(scores):g}, max {max(scores):g}; "
                      f"{sum(bool(s.flags) for s in done)} flagged, {sum(bool(s.errors) for s in done)} with errors")
    if any(counts.values()):
        console.print(", ".join(f"{n} {st}" for st, n in counts.items() if n))
    qt = Table(title="per question")
    for col in ("question", "max", "mean", "full marks"):
        qt.add_column(col)
    n = max(1, len(done))
    for qid, mx in data["questions"].items():
        vals = [s.cells.get(qid, 0.0) for s in done]
        qt.add_row(qid, f"{mx:g}", f"{sum(vals) / n:.2f}", f"{sum(v >= mx for v in vals)}/{len(vals)}")
    console.print(qt)


def report(course_dir: Path, assignment: str, fmt: str = "table", plots_dir: str | None = None,
           plots: str | None = None, out=None) -> int:
    out = out or sys.stdout
    plots_dir = plots_dir or plots
    data = collect(course_dir, assignment)
    if fmt == "json":
        out.write(as_json(data) + "\n")
    elif fmt in ("csv", "canvas"):
        from .export import CanvasExportPlugin, SafeCsvExportPlugin

        out.write(export_csv(data, CanvasExportPlugin if fmt == "canvas" else SafeCsvExportPlugin))
    else:
        table(data, Console(file=out) if out is not sys.stdout else Console())
    if plots_dir:
        written = _plots(data, Path(plots_dir))
        print(f"wrote {len(written)} plots to {plots_dir}", file=sys.stderr)
    return 0


_plots = plots
