"""Assess (trusted): the steps between an executed notebook and nbgrader's scoring.

Like prepare's, they are nbgrader-style preprocessors (``AssessSubmission.preprocessors``, each an
``AssessStage``): a notebook and ``resources`` in, both out, settings as traits. What a stage
finds goes into the notebook's ``Verdict`` at ``resources["mlbd"]["verdict"]``: ``errors``
(grading problems, which the student reads too), ``flags`` (integrity findings, for review),
``strong`` (a finding that zeroes the autograded tests), ``tests`` and ``seconds`` (for
``mlbd report --items``). ``resources["mlbd"]["outcome"]`` is the ``NotebookOutcome`` the sandbox
sent back (None: the notebook was not run), ``["job"]`` the prepared ``NotebookJob`` and
``["submission"]`` the ``Submission``. Nothing here reads what the kernel says about itself except
through the grader's own marks (``protocol.grader_error``) and the integrity checks' reports.
"""
from __future__ import annotations

import re

import nbformat
from nbconvert.preprocessors import Preprocessor
from nbgrader import utils as nbg_utils
from traitlets import List
from traitlets.config import LoggingConfigurable
from traitlets.utils.importstring import import_item

from . import integrity, literals, outcomes
from .protocol import MARK, NotebookOutcome, Verdict, fail_cell, grader_error

NOTE_TAG = "mlbd-grading-notes"
FEEDBACK_TEXT_LIMIT = 20_000


def _is_test(cell) -> bool:
    return cell.cell_type == "code" and nbg_utils.is_grade(cell) and not nbg_utils.is_solution(cell)


def grader_output(cell, kind: str, message: str) -> None:
    """The grader's own verdict on a cell it did not run (``kind`` one of ``protocol.GRADER_ERRORS``):
    its only output, marked as the grader's, and ``grader_output`` for feedback to show as it is."""
    fail_cell(cell, kind, message, replace=True)
    cell.metadata[MARK]["grader_output"] = True


class AssessStage(Preprocessor):
    """One step of assessing an executed (or unrun) notebook; see the module's docstring."""

    @staticmethod
    def verdict(resources) -> Verdict:
        return resources["mlbd"]["verdict"]

    @staticmethod
    def outcome(resources) -> NotebookOutcome | None:
        return resources["mlbd"]["outcome"]

    @classmethod
    def executed(cls, resources) -> bool:
        """The sandbox sent back an executed notebook (not a crash, not a notebook left unrun)."""
        res = cls.outcome(resources)
        return res is not None and res.crash is None


class FailUnrun(AssessStage):
    """A notebook whose execution failed as a whole (a worker crash, the watchdog): every test cell
    gets the grader's own marked error, and the notebook an error for the TA and the student. The
    integrity checks of a notebook that never ran are removed unread."""

    def preprocess(self, nb, resources):
        res, job = self.outcome(resources), resources["mlbd"]["job"]
        if self.executed(resources) or not job.execute:
            return nb, resources
        integrity.strip_checks(nb)
        if res is not None:
            msg = f"{job.name}.ipynb could not be executed: {res.crash}"
            self.verdict(resources).errors.append(msg)
            for cell in nb.cells:
                if _is_test(cell):
                    grader_output(cell, res.crash_kind, msg)
        return nb, resources


class JudgeChecks(AssessStage):
    """The checks against a literal that test cells carried out of the kernel (``literals``): the
    trusted side evaluates each on the values the kernel recorded. A check that fails (or never ran
    in a cell that finished) fails the cell with the author's message, first among its errors, and
    ``metadata.mlbd.judged`` says so; a cell the grader could not run keeps its own error. Canaries
    are not judged: they tell whether the kernel makes failing checks pass, by how it ran them."""

    def preprocess(self, nb, resources):
        for cell in nb.cells:
            meta = cell.metadata.get(MARK)
            if not isinstance(meta, dict) or "sites" not in meta:
                continue
            sites, text, count = literals.sites_from(meta["sites"]), meta.get("records"), meta.get("exec_count")
            integrity.drop_cell_checks(cell)
            if not self.executed(resources) or grader_error(cell) is not None or integrity.is_check(cell):
                continue        # a canary is read as the kernel ran it (CheckIntegrity)
            failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
            if failed and text is None:
                continue        # failed in the kernel, and what its checks saw is unknown
            verdict = literals.judge(sites, None if text is None else literals.parse_records(text), not failed)
            if verdict.failed is None:
                continue
            site, message = verdict.failed, verdict.failed.message or ""
            cell.outputs = [nbformat.v4.new_output(
                "error", ename="AssertionError", evalue=message,
                traceback=[f"Cell In[{count if isinstance(count, int) else ''}], line {site.line}",
                           f"AssertionError: {message}"])] + list(cell.get("outputs", []))
            cell.metadata.setdefault(MARK, {})["judged"] = {"line": site.line, "why": verdict.why}
        return nb, resources


class CheckIntegrity(AssessStage):
    """Read the canaries and probes prepare inserted and remove them (``integrity.check_and_strip``):
    a strong finding flags the notebook and zeroes its autograded tests until a TA reviews it; a
    weaker one (a twin that held where its test failed) flags it for review and keeps the scores."""

    def preprocess(self, nb, resources):
        if self.executed(resources):
            found, weaker = integrity.check_and_strip(nb)
            v, name = self.verdict(resources), resources["mlbd"]["job"].name
            if found:
                v.strong = True
            v.flags += [f"{name}: {f}" for f in found + weaker]
        return nb, resources


class ReportLimits(AssessStage):
    """What the sandbox noted while running the notebook (limits hit, kernel deaths, files not
    kept, outputs cut) becomes part of the notebook's grading notes."""

    def preprocess(self, nb, resources):
        if self.executed(resources):
            res, v, name = self.outcome(resources), self.verdict(resources), resources["mlbd"]["job"].name
            v.errors += [f"{name}: {n}" for n in res.notes]
            if res.truncated:
                v.errors.append(f"{name}: output of {len(res.truncated)} cell(s) truncated (size limit)")
        return nb, resources


class KeepStderrVisible(AssessStage):
    """A library warning on stderr in a test cell must not cost points: it is kept visible as
    display data (marked), not as the stderr stream nbgrader would count as a failure."""

    def preprocess(self, nb, resources):
        if not self.executed(resources):
            return nb, resources
        for cell in nb.cells:
            if not _is_test(cell) or any(o.get("output_type") == "error" for o in cell.outputs):
                continue
            cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": out.get("text", "")},
                                                   metadata={MARK: {"stderr": True}})
                            if out.get("output_type") == "stream" and out.get("name") == "stderr" else out
                            for out in cell.outputs]
        return nb, resources


class ClassifyTests(AssessStage):
    """Where each test cell failed, visible part or hidden (``outcomes.cell_outcomes``), and the
    execution time, for ``mlbd report --items``. Changes no grade."""

    def preprocess(self, nb, resources):
        if self.executed(resources):
            v = self.verdict(resources)
            v.tests, v.seconds = outcomes.cell_outcomes(nb), self.outcome(resources).seconds
        return nb, resources


def for_student(line: str) -> str:
    """A note as the student reads it: no text that the kernel could have chosen."""
    if "cannot read (" in line:
        return re.sub(r"cannot read \(.*\)", "cannot read", line, flags=re.S)
    if "could not be executed:" in line:
        return line.split("could not be executed:")[0] + "could not be executed (a grader error; a grader will look at it)"
    return line


def notes_cell(errors: list[str], flags: list[str]) -> nbformat.NotebookNode:
    """The grading notes: in full for the TA; ``metadata.mlbd.notes`` is what feedback shows."""
    lines = ["**Grading notes**", ""]
    lines += [f"- {e}" for e in errors]
    student = ["**Grading notes**", ""] + [f"- {for_student(e)}" for e in errors]
    if flags:
        lines += ["- This notebook needs review by a grader: " + "; ".join(flags)]
        student += ["- The grader's integrity checks flagged this notebook for review by a TA: "
                    "its test scores may change."]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines)[:FEEDBACK_TEXT_LIMIT])
    cell.metadata["tags"] = [NOTE_TAG]
    cell.metadata[MARK] = {"notes": "\n".join(student)[:FEEDBACK_TEXT_LIMIT]}
    return cell


class AddGradingNotes(AssessStage):
    """A first cell with the submission's and this notebook's errors and flags, when there are any:
    the TA reads them in full, the student a version without text the kernel chose."""

    def preprocess(self, nb, resources):
        v, sub = self.verdict(resources), resources["mlbd"]["submission"]
        if v.errors or v.flags or sub.errors:
            nb.cells.insert(0, notes_cell(sub.errors + v.errors, v.flags))
        return nb, resources


class Stages(LoggingConfigurable):
    """A configurable list of nbgrader-style preprocessors (``preprocessors``: classes or import
    names), made with this object's config: prepare's and assess's stage lists."""
    preprocessors = List(help="the stages, in order (nbgrader Preprocessor classes or their import names)").tag(config=True)

    def stages(self) -> list[Preprocessor]:
        return [(import_item(c) if isinstance(c, str) else c)(parent=self, config=self.config)
                for c in self.preprocessors]


class AssessSubmission(Stages):
    """The trusted steps between an executed notebook and nbgrader's scoring (``mlbd grade``)."""
    preprocessors = List([FailUnrun, JudgeChecks, CheckIntegrity, ReportLimits, KeepStderrVisible, ClassifyTests, AddGradingNotes],
                         help="the stages, in order (nbgrader Preprocessor classes or their import names)").tag(config=True)
