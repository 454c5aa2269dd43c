"""`mlbd demo`: the whole nbgrader cycle on a scratch copy of the course, without a browser.

build → release → three demo students fetch and submit (one correct, one with a known wrong
answer, one blank) → collect → autograde → feedback → score table. Everything happens in a scratch
copy with its own gradebook and exchange, so the real course is never touched.

The students are impersonated from the one Unix account running the demo (nbgrader names a
submitter by Unix user); the hub (`make hub`) uses one real account per student.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from rich.console import Console
from rich.table import Table

from .authoring import kind_of
from .course import CourseError, check_assignments, nbgrader, notebooks, tool_env
from .validate import parse_wrong_answers

STUDENTS = {"student1": "correct", "student2": "partly wrong", "student3": "blank"}
AS_STUDENT = ("import sys, nbgrader.utils as u; name = sys.argv.pop(1); u.get_osusername = lambda: name; "
              "from nbgrader.apps.nbgraderapp import main; sys.exit(main())")


def _student_nbgrader(student: str, home: Path, exchange: Path, course_id: str, *args: str) -> None:
    cmd = [sys.executable, "-c", AS_STUDENT, student, *args, "--Exchange.root=" + str(exchange),
           "--CourseDirectory.course_id=" + course_id]
    proc = subprocess.run(cmd, cwd=home, env=tool_env(), text=True, capture_output=True)
    if proc.returncode != 0:
        raise CourseError(f"{student}: nbgrader {args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")


def _answer(fetched: Path, source: Path, mode: str, wrong_file: Path) -> None:
    """Turn a fetched blank notebook into the demo student's answer."""
    if mode == "blank":
        return
    solutions = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(str(source), as_version=4).cells
                 if kind_of(c) in {"solution", "answer"}}
    if mode == "partly wrong" and wrong_file.exists():
        for w in parse_wrong_answers(wrong_file.read_text()):
            if w.solution_id in solutions:
                solutions[w.solution_id] = w.code
                break
    nb = nbformat.read(str(fetched), as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in solutions:
            cell.source = "\n".join(line for line in solutions[gid].splitlines()
                                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
    nbformat.write(nb, str(fetched))


def score_table(course: Path, assignment: str) -> list[tuple[str, float, float]]:
    from nbgrader.api import Gradebook

    url = f"sqlite:///{course / 'gradebook.db'}"
    rows = []
    with Gradebook(url) as gb:
        for student in sorted(s.id for s in gb.students):
            try:
                sub = gb.find_submission(assignment, student)
            except Exception:  # noqa: BLE001  (nbgrader raises MissingEntry)
                continue
            rows.append((student, sub.score, sub.max_score))
    return rows


def scratch_course(course_dir: Path, assignment: str, course: Path, exchange: Path) -> dict:
    """A copy of the course's config and one assignment's source in ``course``, with its own
    gradebook and exchange, generated; returns the environment nbgrader and mlbd need there."""
    course.mkdir(parents=True, exist_ok=True)
    shutil.copy(course_dir / "nbgrader_config.py", course)
    shutil.copytree(course_dir / "source" / assignment, course / "source" / assignment)
    env = {"MLBD_EXCHANGE": str(exchange), "MLBD_DB_URL": f"sqlite:///{course / 'gradebook.db'}"}
    nbgrader(course, "generate_assignment", assignment, "--force", env=env)
    return env


def run_demo(course_dir: Path, assignment: str, workdir: str | None = None, console: Console | None = None) -> int:
    console = console or Console()
    check_assignments(course_dir, [assignment])
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlbd-demo-"))
    course = root / "course"
    exchange = root / "exchange"
    if course.exists():
        shutil.rmtree(course)
    course.mkdir(parents=True)
    exchange.mkdir(exist_ok=True)
    os.chmod(exchange, 0o777)
    course_id = "mlbd"

    def step(msg):
        console.print(f"[bold cyan]▸[/] {msg}")

    step(f"generate and release {assignment}")
    env = scratch_course(course_dir, assignment, course, exchange)
    for student in STUDENTS:
        nbgrader(course, "db", "student", "add", student, env=env)
    nbgrader(course, "release_assignment", assignment, "--force", env=env)

    wrong_file = course_dir / "grader_tests" / "wrong_answers" / f"{assignment}.txt"
    for student, mode in STUDENTS.items():
        step(f"{student} fetches, answers ({mode}) and submits")
        home = root / "home" / student
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        _student_nbgrader(student, home, exchange, course_id, "fetch_assignment", assignment)
        for src in notebooks(course_dir, assignment):
            _answer(home / assignment / src.name, src, mode, wrong_file)
        _student_nbgrader(student, home, exchange, course_id, "submit", assignment)

    step("collect")
    nbgrader(course, "collect", assignment, "--update", env=env)
    step("autograde")
    nbgrader(course, "autograde", assignment, "--force", env=env)
    step("generate feedback")
    nbgrader(course, "generate_feedback", assignment, "--force", env=env)

    table = Table(title=f"{assignment}: autograded scores")
    for col in ("student", "answers", "score", "max", "feedback"):
        table.add_column(col)
    rows = score_table(course, assignment)
    for student, score, max_score in rows:
        fb = course / "feedback" / student / assignment
        table.add_row(student, STUDENTS.get(student, "?"), f"{score:g}", f"{max_score:g}",
                      str(fb.relative_to(root)) if fb.exists() else "missing")
    console.print(table)
    console.print(f"scratch course: {root}")
    if len(rows) != len(STUDENTS):
        raise CourseError(f"expected {len(STUDENTS)} graded submissions, found {len(rows)}")
    return 0
