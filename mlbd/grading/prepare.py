"""Prepare (trusted, reads the gradebook, writes nothing): submission → jobs for the sandbox.

The steps are nbgrader-style preprocessors (``PrepareSubmission.preprocessors``, each a
``PrepareStage``). For each notebook of the assignment (as the gradebook knows it) they run nbgrader's own
sanitize steps (clear outputs, de-duplicate ids, restore the kernelspec, restore every locked and
test cell and its points from the gradebook, check metadata), records what the student changed
that should not change, scans the student's cells for known hooks and inserts the integrity
checks. A notebook that is missing or cannot be read is replaced by the released blank version
(never executed, scored zero) with a precise message, so its feedback can say what happened.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor
from nbformat.validator import iter_validate
from nbgrader import utils as nbg_utils
from nbgrader.api import Gradebook
from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, DeduplicateIds, OverwriteCells, OverwriteKernelspec
from traitlets import Bool, List

from . import boxfs, integrity
from .assess import Stages, grader_output

MAX_NOTEBOOK_BYTES = 50 * 2**20


@dataclass
class NotebookJob:
    name: str
    notebook: nbformat.NotebookNode | None = None     # prepared, with integrity checks
    execute: bool = True                             # False: replacement for a missing/unreadable file
    errors: list[str] = field(default_factory=list)   # grading failures (also shown to the student)
    flags: list[str] = field(default_factory=list)    # integrity findings: need review
    strong: bool = False                              # a flag that zeroes the autograded tests


@dataclass
class Submission:
    student: str
    assignment: str
    path: Path
    digest: str
    notebooks: list[NotebookJob] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def submission_digest(path: Path) -> str:
    """Content hash of a submission folder (names and bytes of every file)."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            h.update(str(p.relative_to(path)).encode() + b"\0")
            if not p.is_file() or p.is_symlink():     # a FIFO would block the grader; links are not followed
                h.update(b"<not a regular file>")
                continue
            try:
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except OSError:
                h.update(b"<unreadable>")
    return h.hexdigest()


SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _read(path: Path) -> tuple[nbformat.NotebookNode | None, str]:
    # The grader reads as root or the course account: a link could fetch source/ or another student.
    if path.is_symlink():
        return None, "the file is a symbolic link, which the grader does not follow"
    if not path.is_file():
        return None, "the file is not a regular file"
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            return None, f"the file is {size / 2**20:.0f} MiB (limit {MAX_NOTEBOOK_BYTES // 2**20} MiB)"
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"the file cannot be read ({type(exc).__name__}: {exc})"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"the file is not valid JSON (truncated or corrupted): {exc.msg} at line {exc.lineno}, column {exc.colno}"
    except RecursionError:
        return None, "the file is not a notebook: its JSON is nested too deeply to read"
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        return None, "the file is JSON but not a notebook (no list of cells)"
    note = ""
    if SURROGATE_ESCAPE.search(text):
        # JSON may spell lone surrogates (\ud800) that no UTF-8 file can hold: writing the graded
        # notebook would fail after execution. Pairs (an escaped emoji) are fine.
        decoded = json.dumps(raw, ensure_ascii=False)
        try:
            decoded.encode("utf-8")
        except UnicodeEncodeError:
            text = decoded.encode("utf-8", "replace").decode("utf-8")
            note = "it held characters that are not valid Unicode (lone surrogates); each was replaced by '?'"
    try:
        nb = nbformat.reads(text, as_version=4)
        for cell in nb.cells:
            cell.setdefault("metadata", nbformat.NotebookNode())
            if not isinstance(cell.get("source", ""), str):
                raise ValueError("a cell's source is not text")
            if cell.get("cell_type") not in ("code", "markdown", "raw"):
                raise ValueError(f"unknown cell type {cell.get('cell_type')!r}")
    except Exception as exc:  # noqa: BLE001  (nbformat raises many kinds)
        return None, f"the notebook is malformed: {exc}"[:300]
    return nb, note


def _points(value) -> float | None:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return None


CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def repair_metadata(nb) -> tuple[list[str], list[str]]:
    """Make a submission's notebook schema-valid, cell by cell, and drop grader metadata it forged.

    Returns ``(notes, forged)``: ``notes`` say which cell lost what (an invalid id is replaced, an
    invalid tag or metadata key dropped: only that cell is affected, the notebook is graded);
    ``forged`` lists cells that carried the grader's own key (``mlbd``), which only the trusted side
    may write: removed, so those cells run and stay in ``autograded/`` as the student's."""
    notes: list[str] = []
    forged: list[str] = []
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells, 1):
        if integrity.MARK in cell.metadata:
            del cell.metadata[integrity.MARK]
            forged.append(f"cell {i} carried the grader's metadata key {integrity.MARK!r} (removed; graded as the student's cell)")
        if "id" in cell:
            cid = cell["id"]
            if not isinstance(cid, str) or not CELL_ID.match(cid) or cid in seen:
                cell["id"] = secrets.token_hex(8)
                notes.append(f"cell {i}: invalid cell id {str(cid)[:40]!r} replaced")
            seen.add(cell["id"])
        tags = cell.metadata.get("tags")
        if tags is not None:
            good = [t for t in tags if isinstance(t, str) and t and "," not in t] if isinstance(tags, list) else []
            if good != tags:
                notes.append(f"cell {i}: invalid tags dropped ({str(tags)[:60]})")
                cell.metadata["tags"] = good
    nb.metadata.pop(integrity.MARK, None)
    for _ in range(100):           # whatever else the schema rejects: drop that one metadata key
        err = next(iter_validate(nb), None)
        if err is None:
            break
        path = list(err.absolute_path)
        if len(path) >= 4 and path[0] == "cells" and path[2] == "metadata" and path[3] != "nbgrader":
            del nb.cells[path[1]].metadata[path[3]]
            notes.append(f"cell {path[1] + 1}: invalid metadata {path[3]!r} dropped")
        elif len(path) >= 2 and path[0] == "metadata" and path[1] not in ("kernelspec", "language_info"):
            del nb.metadata[path[1]]
            notes.append(f"notebook metadata {path[1]!r} was invalid and was dropped")
        else:
            break
    return notes, forged


def unanswered(nb, release: Path) -> bool:
    """Nothing the student wrote: every cell is empty or exactly as released."""
    try:
        given = {c.source.strip() for c in nbformat.read(str(release), as_version=4).cells}
    except Exception:  # noqa: BLE001  (no release to compare with: grade what is there)
        return False
    return not any(c.source.strip() and c.source.strip() not in given for c in nb.cells)


def metadata_changes(nb, gb_cells: dict[str, dict]) -> list[str]:
    """What the student changed in graded cells' metadata (restored by nbgrader, reported here)."""
    seen: dict[str, int] = {}
    out = []
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader")
        if not isinstance(md, dict):
            continue
        gid = md.get("grade_id")
        if not isinstance(gid, str):
            if md.get("grade") or md.get("solution") or md.get("locked"):
                out.append("a cell carries nbgrader metadata without a grade_id")
            continue
        seen[gid] = seen.get(gid, 0) + 1
        ref = gb_cells.get(gid)
        if ref is None:
            out.append(f"unknown cell id {gid!r} (renamed or added; its metadata was removed)")
            continue
        if ref["points"] is not None and md.get("grade") and _points(md.get("points")) != ref["points"]:
            out.append(f"points of {gid!r} changed to {md.get('points')!r} (restored to {ref['points']:g})")
        if ref["kind"] == "test" and not md.get("grade"):
            out.append(f"test cell {gid!r} was turned into an ungraded cell (restored)")
    for gid, n in seen.items():
        if n > 1:
            out.append(f"cell id {gid!r} appears {n} times (duplicates de-duplicated)")
    for gid, ref in gb_cells.items():
        if ref["kind"] == "test" and gid not in seen:
            out.append(f"test cell {gid!r} was deleted (restored from the gradebook)")
    return out


def _gradebook_cells(gb: Gradebook, notebook: str, assignment: str) -> dict[str, dict]:
    """grade_id → what the gradebook says the cell is (kind, points and its nbgrader metadata)."""
    nb = gb.find_notebook(notebook, assignment)
    solutions = {s.name for s in nb.solution_cells}
    grades = {c.name: float(c.max_score) for c in nb.grade_cells}
    tasks = {c.name: float(c.max_score) for c in nb.task_cells}
    cells: dict[str, dict] = {}
    for c in list(nb.source_cells) + [t for t in nb.task_cells if t.name not in {s.name for s in nb.source_cells}]:
        name, task = c.name, c.name in tasks
        points = tasks.get(name, grades.get(name))
        kind = ("task" if task else "test" if name in grades and name not in solutions and c.cell_type == "code"
                else "manual" if name in grades else "solution" if name in solutions else "source")
        meta = {"grade": name in grades, "grade_id": name, "locked": bool(getattr(c, "locked", False)),
                "schema_version": 3, "solution": name in solutions, "task": task}
        if getattr(c, "checksum", None):
            meta["checksum"] = c.checksum
        if points is not None and (name in grades or task):
            meta["points"] = points
        cells[name] = {"kind": kind, "points": points, "meta": meta}
    return cells


def _trusted_nbgrader(nb, gb_cells: dict[str, dict]) -> list[str]:
    """Every graded cell's nbgrader metadata exactly as the gradebook has it (nbgrader restores
    points, lock and checksum, not ``grade``/``solution``/``task``); returns what was forged."""
    out = []
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader")
        ref = gb_cells.get(md.get("grade_id")) if isinstance(md, dict) and isinstance(md.get("grade_id"), str) else None
        if ref is None:
            continue
        forged = sorted(k for k in ("grade", "solution", "task") if bool(md.get(k, False)) != ref["meta"][k])
        if forged:
            out.append(f"nbgrader metadata of {md['grade_id']!r} forged ({', '.join(forged)}; restored)")
        cell.metadata["nbgrader"] = nbformat.from_dict(dict(ref["meta"]))
    return out


def _drop_empty_nbgrader(nb) -> None:
    """Cells nbgrader stripped (a duplicate id, an unknown grade_id) are no longer graded."""
    for cell in nb.cells:
        md = cell.metadata.get("nbgrader")
        if isinstance(md, dict) and "grade_id" not in md:
            del cell.metadata["nbgrader"]


def _restore_missing(nb, resources, ow: OverwriteCells) -> None:
    """Put back the graded and task cells a submission lacks, from the gradebook.

    nbgrader's own ``add_missing_cells`` raises KeyError when the cell before a missing one is
    missing too (a notebook re-typed in another editor, which drops all metadata), and then the
    whole notebook would be graded blank. Here a missing cell goes after the nearest earlier cell
    that is present, or at the end when none is: after the student's code, which it tests."""
    info = resources["nbgrader"]
    with Gradebook(info["db_url"]) as gb:
        src = gb.find_notebook(info["notebook"], info["assignment"])
        order = [c.name for c in src.source_cells]
        sources = {c.name: c for c in src.source_cells}
        solutions = {c.name for c in src.solution_cells}
        wanted = {c.name: (float(c.max_score), False) for c in src.grade_cells}
        wanted.update({c.name: (float(c.max_score), True) for c in src.task_cells})
        def position() -> dict[str, int]:
            return {c["metadata"]["nbgrader"]["grade_id"]: i for i, c in enumerate(nb.cells)
                    if isinstance(c["metadata"].get("nbgrader"), dict) and "grade_id" in c["metadata"]["nbgrader"]}
        for k, name in enumerate(order):
            here = position()
            if name not in wanted or name in here:
                continue
            points, is_task = wanted[name]
            cell = nbformat.from_dict(ow.missing_cell_transform(sources[name], points, is_solution=name in solutions,
                                                                is_task=is_task))
            before = [here[n] for n in order[:k] if n in here]
            nb.cells.insert(max(before) + 1 if before else len(nb.cells), cell)


class GradeAsBlank(Exception):
    """Raised by a stage: this notebook is not executed; the released blank version is scored
    instead, with the exception's message."""


class PrepareStage(Preprocessor):
    """One stage of preparing a submitted notebook, as nbgrader's preprocessors are: a notebook
    and ``resources`` in, both out, settings as traits. What a stage finds goes into the
    ``NotebookJob`` at ``resources["mlbd"]["job"]``: ``errors`` (grading problems, which the
    student reads too) and ``flags`` (integrity findings, for review)."""

    @staticmethod
    def job(resources) -> NotebookJob:
        return resources["mlbd"]["job"]


class RepairMetadata(PrepareStage):
    """Take the grader's own ``mlbd`` key off every submitted cell (flagged) and repair the cell
    metadata a student's editor broke (a bad tag or id costs only its cell).

    One class for both graders: in ``mlbd grade``'s prepare step what it finds goes to the job
    (errors the student reads, flags for review); first in plain ``nbgrader autograde``'s
    ``Autograde.autograde_preprocessors`` (the formgrader's button too), where there is no job, it
    goes to the log, so a submitted cell cannot carry the grader's key into ``autograded/``."""
    enabled = Bool(True, help="repair submitted cell metadata (turning it off trusts the submission's)").tag(config=True)

    def preprocess(self, nb, resources):
        if not self.enabled:
            return nb, resources
        repaired, forged = repair_metadata(nb)
        job = (resources.get("mlbd") or {}).get("job")
        if job is None:
            for line in repaired + forged:
                self.log.warning("%s", line)
            return nb, resources
        name = resources["nbgrader"]["notebook"]
        job.errors.extend(f"{name}: {r}" for r in repaired)
        job.flags.extend(f"{name}: {f}" for f in forged)
        return nb, resources


class RejectUnanswered(PrepareStage):
    """A notebook in which every cell is empty or as released is graded 0 without running, with
    one note and no integrity flags."""
    enabled = Bool(True, help="grade unanswered notebooks 0 without executing them").tag(config=True)

    def preprocess(self, nb, resources):
        name = resources["nbgrader"]["notebook"]
        if self.enabled and unanswered(nb, resources["mlbd"]["release"] / f"{name}.ipynb"):
            raise GradeAsBlank(f"{name}.ipynb has no answers (every cell is empty or as released): graded 0")
        return nb, resources


class TrustTheGradebook(PrepareStage):
    """Graded cells' nbgrader metadata as the gradebook has it; every difference the student made
    (points, kinds, ids, deleted tests) is flagged."""

    def preprocess(self, nb, resources):
        name, gb_cells = resources["nbgrader"]["notebook"], resources["mlbd"]["gradebook_cells"]
        self.job(resources).flags.extend(f"{name}: cell metadata edited: {c}" for c in metadata_changes(nb, gb_cells))
        self.job(resources).flags.extend(f"{name}: {f}" for f in _trusted_nbgrader(nb, gb_cells))
        return nb, resources


class Sanitize(PrepareStage):
    """nbgrader's own steps: clear outputs, de-duplicate ids, restore the kernelspec, overwrite
    locked and test cells from the gradebook, put back deleted graded cells (after the nearest
    earlier cell present), check the metadata. A notebook these steps reject is graded blank."""
    restore_missing = Bool(True, help="put back graded and task cells a submission deleted (nbgrader's "
                                      "OverwriteCells.add_missing_cells, which this follows when set)").tag(config=True)

    def preprocess(self, nb, resources):
        try:
            return sanitize(nb, resources, self.config, self._restore()), resources
        except Exception as exc:  # noqa: BLE001
            raise GradeAsBlank(f"{resources['nbgrader']['notebook']}.ipynb could not be checked against the "
                               f"assignment: {type(exc).__name__}: {exc}"[:300]) from exc

    def _restore(self) -> bool:
        nbg = self.config.get("OverwriteCells", {})
        return bool(nbg["add_missing_cells"]) if "add_missing_cells" in nbg else self.restore_missing


class ScanForHooks(PrepareStage):
    """Flag the student's code that reaches for the grading machinery (known hooks)."""

    def preprocess(self, nb, resources):
        name = resources["nbgrader"]["notebook"]
        self.job(resources).flags.extend(f"{name}: {f}" for f in integrity.static_scan(nb))
        return nb, resources


class InsertIntegrityChecks(PrepareStage):
    """Probes first and last and a canary beside every autograded test cell
    (``integrity.add_checks``); the seed is mixed with a secret."""
    judge_literals = Bool(True, help="test cells reach the kernel with their checks against a literal "
                                     "replaced by a recorder, and the grader judges those checks itself "
                                     "(mlbd.grading.literals): the kernel never sees their expected values").tag(config=True)

    judge_references = Bool(True, help="checks of a test cell against a reference it computes from the "
                                       "author's own data are judged by the grader too, against the reference's "
                                       "value in a run of the instructor's notebook (mlbd.grading.references; "
                                       "mlbd grade runs it once per change of source/, in the sandbox)").tag(config=True)

    def preprocess(self, nb, resources):
        expected = resources["mlbd"].get("expected") if self.judge_references else None
        notes: list[str] = []
        nb = integrity.add_checks(nb, resources["mlbd"]["seed"], self.judge_literals, expected, notes)
        self.job(resources).flags.extend(f"{resources['nbgrader']['notebook']}: {n}" for n in notes)
        return nb, resources


class PrepareSubmission(Stages):
    """The trusted steps between a submitted notebook and the sandbox (``mlbd grade``)."""
    preprocessors = List([RepairMetadata, RejectUnanswered, TrustTheGradebook, Sanitize, ScanForHooks,
                          InsertIntegrityChecks],
                         help="the stages, in order (nbgrader Preprocessor classes or their import names)").tag(config=True)


def sanitize(nb, resources, cfg, restore: bool = True) -> nbformat.NotebookNode:
    for cls in (ClearOutput, DeduplicateIds, OverwriteKernelspec):
        nb, resources = cls(config=cfg).preprocess(nb, resources)
    _drop_empty_nbgrader(nb)              # nbgrader's own later steps trip over an empty {} (KeyError)
    ow = OverwriteCells(config=cfg)
    # deleted test cells come back instead of silently scoring nothing, unless a course says otherwise
    ow.add_missing_cells = False
    nb, resources = ow.preprocess(nb, resources)
    if restore:
        _restore_missing(nb, resources, ow)
    _drop_empty_nbgrader(nb)
    nb, resources = CheckCellMetadata(config=cfg).preprocess(nb, resources)
    return nb


def _blank(release: Path, resources, cfg, message: str) -> nbformat.NotebookNode | None:
    """The released notebook, sanitized, every test failing with ``message``; None without a release."""
    if not release.is_file():
        return None
    nb = sanitize(nbformat.read(str(release), as_version=4), resources, cfg)
    for cell in nb.cells:
        if cell.cell_type == "code" and nbg_utils.is_grade(cell) and not nbg_utils.is_solution(cell):
            grader_output(cell, "submission", message)
    return nb


def prepare(coursedir, cfg, gradebook_url: str, assignment: str, student: str, seed: int,
            expected: dict | None = None) -> Submission:
    """Each notebook of ``student``'s submission through ``PrepareSubmission``'s stages.
    ``expected``: notebook → the references' values in the instructor's run (``references``)."""
    path = Path(coursedir.format_path(coursedir.submitted_directory, student, assignment))
    sub = Submission(student, assignment, path, submission_digest(path))
    release_dir = Path(coursedir.format_path(coursedir.release_directory, ".", assignment))
    with Gradebook(gradebook_url, coursedir.course_id) as gb:
        names = [n.name for n in gb.find_assignment(assignment).notebooks]
        gb_cells = {n: _gradebook_cells(gb, n, assignment) for n in names}
    present = sorted(p.stem for p in path.glob("*.ipynb"))
    for extra in sorted(set(present) - set(names)):
        sub.errors.append(f"extra notebook {extra}.ipynb is not part of {assignment}: ignored")
    for rel in undeclared_files(coursedir, assignment, student):
        sub.errors.append(f"{rel} is not part of {assignment}'s release: kept for the grader, not available "
                          "to the notebook while it was graded")
    stages = PrepareSubmission(config=cfg).stages()
    for name in sorted(names):
        job = NotebookJob(name)
        resources = {"nbgrader": {"notebook": name, "assignment": assignment, "student": student,
                                  "db_url": gradebook_url},
                     "mlbd": {"job": job, "release": release_dir, "gradebook_cells": gb_cells[name], "seed": seed,
                              "expected": (expected or {}).get(name)}}
        nb_path = path / f"{name}.ipynb"
        try:
            nb, why = (None, f"{name}.ipynb is missing from the submission") if not (nb_path.exists() or nb_path.is_symlink()) \
                else _read(nb_path)
        except Exception as exc:  # noqa: BLE001  (whatever else a hostile file finds: blank, never a lost run)
            nb, why = None, f"the file cannot be read: {type(exc).__name__}: {exc}"[:300]
        if nb is not None and why:
            job.errors.append(f"{name}.ipynb: {why}")
        try:
            for stage in stages if nb is not None else []:
                nb, resources = stage.preprocess(nb, resources)
        except GradeAsBlank as exc:
            nb, why = None, str(exc)
        if nb is None:
            message = why if why.startswith(name) else f"{name}.ipynb: {why}"
            job.errors.append(message if why.endswith("graded 0") else message + "; graded as blank")
            job.notebook = _blank(release_dir / f"{name}.ipynb", resources, cfg, message)
            job.execute = False
        else:
            job.notebook = nb
        sub.notebooks.append(job)
    return sub


def _declared(coursedir, assignment: str) -> dict[str, str]:
    """Files the assignment itself ships (relative name → path in source/), notebooks aside."""
    folder = coursedir.format_path(coursedir.source_directory, ".", assignment)
    if not os.path.isdir(folder):
        return {}
    return {os.path.relpath(p, folder): p for p in nbg_utils.find_all_files(folder, list(coursedir.ignore) + ["*.ipynb"])
            if not os.path.islink(p)}


def undeclared_files(coursedir, assignment: str, student: str) -> list[str]:
    """Files of a submission the assignment does not ship: kept for the TA, never given to the kernel."""
    folder = coursedir.format_path(coursedir.submitted_directory, student, assignment)
    if not os.path.isdir(folder):
        return []
    declared = _declared(coursedir, assignment)
    return sorted(rel for rel in (os.path.relpath(p, folder) for p in
                                  nbg_utils.find_all_files(folder, list(coursedir.ignore) + ["*.ipynb"]))
                  if rel not in declared and rel not in boxfs.EXCHANGE_FILES)


# Written by nbgrader's exchange (and mlbd's, for a due date) into every submission: not the student's.


def input_files(coursedir, assignment: str, student: str, exclude: list[str], max_bytes: int) -> dict[str, bytes]:
    """Data files for the kernel: only those the assignment ships (its own copy; the student's where
    ``Autograde.exclude_overwriting`` lists the file). A module, ``.pth``, ``sitecustomize.py`` or
    data file that only the submission has never reaches the kernel's work dir or import path."""
    files: dict[str, bytes] = {}
    total = 0
    submitted = coursedir.format_path(coursedir.submitted_directory, student, assignment)
    for rel, path in sorted(_declared(coursedir, assignment).items()):
        own = os.path.join(submitted, rel)
        if rel in exclude and os.path.isfile(own) and not os.path.islink(own):
            path = own
        size = os.path.getsize(path)
        if total + size > max_bytes:
            continue
        total += size
        with open(path, "rb") as fh:
            files[rel] = fh.read()
    return files


# The name earlier course configs give the same stage in ``Autograde.autograde_preprocessors``.
UntrustedMetadata = RepairMetadata