"""Score (trusted; the only gradebook writer): executed notebooks → autograded/ + gradebook.

Executed notebooks go through the assess stages (``assess.AssessSubmission``: canaries and probes
read and removed, the sandbox's notes, test outcomes, grading notes), then through nbgrader's own autograde steps minus execution (``IgnorePattern``, ``LimitOutput``,
``SaveAutoGrades``, ``AssignLatePenalties``, ``CheckCellMetadata``) via ``ScoreConverter``, an
``Autograde`` converter whose input is the staging folder of executed notebooks. So grades,
comments, late penalties, student and submission records are exactly what ``nbgrader autograde``
writes. Then integrity flags mark the affected test cells "needs manual grade" (with the reason
in the notebook and the result record), and a result record per student makes the run resumable.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
from nbgrader import utils as nbg_utils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.converters import Autograde
from nbgrader.preprocessors import Execute
from traitlets.utils.importstring import import_item

from ..course import ACTIVE_CONTENT
from .assess import AssessSubmission, JudgeChecks
from .protocol import NotebookOutcome, ResultStore, Verdict
from .protocol import RESULTS  # noqa: F401  (score.RESULTS: where report, cohort and items_report look)

STAGING = ".mlbd/executed"     # relative to the course root; nbgrader's directory structure below it


class ScoreConverter(Autograde):
    """nbgrader's Autograde without its sanitize pass and without execution."""

    @property
    def _input_directory(self) -> str:
        return STAGING

    def _init_preprocessors(self) -> None:
        from .prepare import RepairMetadata
        self.exporter._preprocessors = []
        for pp in self.autograde_preprocessors:
            cls = import_item(pp) if isinstance(pp, str) else pp
            if isinstance(cls, type) and issubclass(cls, (Execute, RepairMetadata)):
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


def stage(coursedir, cfg, sub, results: dict[str, NotebookOutcome]) -> dict[str, Verdict]:
    """Write the executed notebooks of one submission, each through ``AssessSubmission``'s stages, to
    the staging folder; returns a ``Verdict`` per notebook."""
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
    stages = AssessSubmission(config=cfg).stages()
    for job in sub.notebooks:
        v = verdicts[job.name] = Verdict(list(job.errors), list(job.flags), job.strong)
        res = results.get(job.name)
        if job.notebook is None:
            continue
        nb = nbformat.reads(res.notebook, as_version=4) if res is not None and res.crash is None else job.notebook
        resources = {"nbgrader": {"notebook": job.name, "assignment": sub.assignment, "student": sub.student},
                     "mlbd": {"verdict": v, "outcome": res, "job": job, "submission": sub}}
        for step in stages:
            nb, resources = step.preprocess(nb, resources)
        # fail closed: a check taken out of the kernel is judged even when the configured stages
        # leave JudgeChecks out (in the kernel it always held)
        nb, resources = JudgeChecks(config=cfg).preprocess(nb, resources)
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
