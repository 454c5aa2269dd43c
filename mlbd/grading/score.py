"""Score (trusted; the only gradebook writer): executed notebooks → autograded/ + gradebook.

Executed notebooks are checked (canaries, probe) and stripped of the grader's own cells, then go
through nbgrader's own autograde steps minus execution (``IgnorePattern``, ``LimitOutput``,
``SaveAutoGrades``, ``AssignLatePenalties``, ``CheckCellMetadata``) via ``ScoreConverter``, an
``Autograde`` converter whose input is the staging folder of executed notebooks. So grades,
comments, late penalties, student and submission records are exactly what ``nbgrader autograde``
writes. Then integrity flags mark the affected test cells "needs manual grade" (with the reason
in the notebook and the result record), and a result record per student makes the run resumable.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
from nbgrader import utils as nbg_utils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde
from nbgrader.preprocessors import Execute
from traitlets.utils.importstring import import_item

from ..course import ACTIVE_CONTENT
from . import integrity, outcomes
from .protocol import MARK, NotebookOutcome, ResultStore, Verdict, fail_cell
from .protocol import RESULTS  # noqa: F401  (score.RESULTS: where report, cohort and items_report look)

STAGING = ".mlbd/executed"     # relative to the course root; nbgrader's directory structure below it
NOTE_TAG = "mlbd-grading-notes"
FEEDBACK_TEXT_LIMIT = 20_000


class ScoreConverter(Autograde):
    """nbgrader's Autograde without its sanitize pass and without execution."""

    @property
    def _input_directory(self) -> str:
        return STAGING

    def _init_preprocessors(self) -> None:
        from .prepare import UntrustedMetadata
        self.exporter._preprocessors = []
        for pp in self.autograde_preprocessors:
            cls = import_item(pp) if isinstance(pp, str) else pp
            if isinstance(cls, type) and issubclass(cls, (Execute, UntrustedMetadata)):
                continue          # executed already; metadata repaired by prepare (and now trusted)
            self.exporter.register_preprocessor(cls)

    def convert_single_notebook(self, notebook_filename: str) -> None:
        self._sanitizing = False
        self._init_preprocessors()
        try:
            with nbg_utils.setenv(NBGRADER_EXECUTION="autograde"):
                super(Autograde, self).convert_single_notebook(notebook_filename)
        finally:
            self._sanitizing = True


def _stderr_to_display(nb) -> int:
    """A library warning on stderr in a test cell must not cost points: keep it visible, not fatal."""
    moved = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or not nbg_utils.is_grade(cell) or nbg_utils.is_solution(cell):
            continue
        if any(o.get("output_type") == "error" for o in cell.outputs):
            continue
        new = []
        for out in cell.outputs:
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                out = nbformat.v4.new_output("display_data", data={"text/plain": out.get("text", "")},
                                             metadata={"mlbd": {"stderr": True}})
                moved += 1
            new.append(out)
        cell.outputs = new
    return moved


def _for_student(line: str) -> str:
    """A note as the student reads it: no text that the kernel could have chosen."""
    if "cannot read (" in line:
        return re.sub(r"cannot read \(.*\)", "cannot read", line, flags=re.S)
    if "could not be executed:" in line:
        return line.split("could not be executed:")[0] + "could not be executed (a grader error; a grader will look at it)"
    return line


def _notes_cell(errors: list[str], flags: list[str]) -> nbformat.NotebookNode:
    """The grading notes: in full for the TA; ``metadata.mlbd.student`` is what feedback shows."""
    lines = ["**Grading notes**", ""]
    lines += [f"- {e}" for e in errors]
    student = ["**Grading notes**", ""] + [f"- {_for_student(e)}" for e in errors]
    if flags:
        lines += ["- This notebook needs review by a grader: " + "; ".join(flags)]
        student += ["- The grader's integrity checks flagged this notebook for review by a TA: "
                    "its test scores may change."]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines)[:FEEDBACK_TEXT_LIMIT])
    cell.metadata["tags"] = [NOTE_TAG]
    cell.metadata[MARK] = {"notes": "\n".join(student)[:FEEDBACK_TEXT_LIMIT]}
    return cell


def grader_output(cell, kind: str, message: str) -> None:
    """The grader's own verdict on a cell it did not run (``kind`` one of ``protocol.GRADER_ERRORS``):
    its only output, marked as the grader's, and ``grader_output`` for feedback to show as it is."""
    fail_cell(cell, kind, message, replace=True)
    cell.metadata[MARK]["grader_output"] = True


def stage(coursedir, sub, results: dict[str, NotebookOutcome]) -> dict[str, Verdict]:
    """Write the executed notebooks of one submission to the staging folder; returns a ``Verdict``
    per notebook after the integrity checks."""
    dest = Path(coursedir.format_path(STAGING, sub.student, sub.assignment))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ts = sub.path / "timestamp.txt"
    if ts.is_file():
        shutil.copy(ts, dest / "timestamp.txt")
    for rel in nbg_utils.find_all_files(str(sub.path), list(coursedir.ignore) + ["*.ipynb", "timestamp.txt"]):
        if os.path.islink(rel) or not os.path.isfile(rel):
            continue
        if Path(rel).suffix.lower() in ACTIVE_CONTENT:
            sub.errors.append(f"{os.path.relpath(rel, sub.path)} was not copied for grading: the formgrader would "
                              "serve it from the course's web address, where a page or script acts as the grader")
            continue
        target = dest / os.path.relpath(rel, sub.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rel, target)
    verdicts: dict[str, Verdict] = {}
    for job in sub.notebooks:
        v = verdicts[job.name] = Verdict(list(job.errors), list(job.flags), job.strong)
        res = results.get(job.name)
        if job.notebook is None:
            continue
        if res is None:
            nb = job.notebook
            if job.execute:
                integrity.strip_checks(nb)
        elif res.crash is not None:
            nb = job.notebook
            integrity.strip_checks(nb)
            msg = f"{job.name}.ipynb could not be executed: {res.crash}"
            v.errors.append(msg)
            for cell in nb.cells:
                if cell.cell_type == "code" and nbg_utils.is_grade(cell) and not nbg_utils.is_solution(cell):
                    grader_output(cell, res.crash_kind, msg)
        else:
            nb = nbformat.reads(res.notebook, as_version=4)
            found, _ = integrity.check_and_strip(nb)
            if found:
                v.strong = True
                v.flags += [f"{job.name}: {f}" for f in found]
            v.errors += [f"{job.name}: {n}" for n in res.notes]
            if res.truncated:
                v.errors.append(f"{job.name}: output of {len(res.truncated)} cell(s) truncated (size limit)")
            _stderr_to_display(nb)
            v.tests, v.seconds = outcomes.cell_outcomes(nb), res.seconds     # for report --items
        if v.errors or v.flags or sub.errors:
            nb.cells.insert(0, _notes_cell(sub.errors + v.errors, v.flags))
        nbformat.write(nb, str(dest / f"{job.name}.ipynb"))
    return verdicts


def score(course_root: Path, coursedir, cfg, sub, verdicts: dict[str, Verdict]) -> None:
    """Run nbgrader's scoring on the staged notebooks and apply integrity flags to the gradebook."""
    from traitlets.config import Config

    conv_cfg = Config(cfg)
    conv_cfg.merge(Config({"CourseDirectory": {"assignment_id": sub.assignment, "student_id": sub.student,
                                                "notebook_id": "*", "root": str(course_root)}}))
    coursedir_local = type(coursedir)(config=conv_cfg)
    staged = Path(coursedir_local.format_path(STAGING, sub.student, sub.assignment))
    if any(staged.glob("*.ipynb")):
        conv = ScoreConverter(coursedir=coursedir_local, config=conv_cfg)
        conv.force = True
        cwd = os.getcwd()
        try:
            conv.start()
        finally:
            os.chdir(cwd)
    else:   # nothing gradable at all: record the submission with zero, as nbgrader does for missing files
        with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
            gb.update_or_create_student(sub.student)
            gb.update_or_create_submission(sub.assignment, sub.student)
            for snb in gb.find_submission(sub.assignment, sub.student).notebooks:
                for grade in snb.grades:
                    grade.auto_score = 0
                    grade.needs_manual_grade = False
            gb.db.commit()
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
        for name, v in verdicts.items():
            if not v.flags:
                continue
            try:
                snb = gb.find_submission_notebook(name, sub.assignment, sub.student)
            except MissingEntry:
                continue
            solutions = {c.name for c in snb.notebook.solution_cells}
            for grade in snb.grades:
                cell = grade.cell
                if grade.manual_score is not None:
                    continue
                if cell.cell_type == "code" and cell.name not in solutions:
                    grade.needs_manual_grade = True
                    if v.strong:
                        grade.auto_score = 0.0
        gb.db.commit()


def read_record(course_root: Path, assignment: str, student: str) -> dict | None:
    return ResultStore(course_root, assignment).read(student)


def gradebook_scores(coursedir, assignment: str, student: str) -> dict:
    with Gradebook(coursedir.db_url, coursedir.course_id) as gb:
        sub = gb.find_submission(assignment, student)
        cells = {}
        for nb in sub.notebooks:
            for g in nb.grades:
                cells[f"{nb.name}/{g.name}"] = g.score
        return {"score": float(sub.score), "max_score": float(sub.max_score), "cells": cells,
                "needs_manual_grade": bool(sub.needs_manual_grade)}
