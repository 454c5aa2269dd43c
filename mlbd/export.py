"""Grade exports that are safe to open in a spreadsheet: nbgrader ``ExportPlugin`` classes.

``nbgrader export --exporter=mlbd.export.CanvasExportPlugin --to grades.csv`` (and ``mlbd report
--format canvas``) writes a CSV that Canvas' gradebook import accepts; ``mlbd.export.SafeCsvExportPlugin``
writes the columns of nbgrader's own ``CsvExportPlugin`` (``nbgrader export``'s default, made the
course's default in ``nbgrader_config.py``; ``mlbd report --format csv``).

nbgrader's CSV exporter joins fields with commas unquoted: a name holding a comma shifts the
columns, and a name starting with ``=`` is a formula an instructor's spreadsheet evaluates. Here
every field goes through the csv module and every text field through ``neutralise`` (OWASP's CSV
injection advice: a cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a
leading single quote).
"""
from __future__ import annotations

import csv
import io
import sys

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins.export import ExportPlugin

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
NBGRADER_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
                    "raw_score", "late_submission_penalty", "score", "max_score"]
CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def neutralise(value) -> str:
    """A text cell a spreadsheet shows as text, never evaluates (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def number(value: float) -> str:
    return f"{value:g}"


def plain(value) -> str:
    """A value as nbgrader's own CSV exporter writes it (``str``, empty for None), neutralised."""
    return neutralise("" if value is None else str(value))


def _selected(plugin: ExportPlugin, gradebook: Gradebook):
    wanted_a = {str(a) for a in plugin.assignment}
    wanted_s = {str(s) for s in plugin.student}
    assignments = [a for a in gradebook.assignments if not wanted_a or a.name in wanted_a]
    students = [s for s in gradebook.students if not wanted_s or s.id in wanted_s]
    return assignments, students


def _submission(gradebook: Gradebook, assignment: str, student: str):
    try:
        return gradebook.find_submission(assignment, student)
    except MissingEntry:
        return None


class _CsvPlugin(ExportPlugin):
    default_name = "grades.csv"

    def rows(self, gradebook: Gradebook) -> list[list[str]]:
        raise NotImplementedError

    def write(self, gradebook: Gradebook, out) -> None:
        csv.writer(out, lineterminator="\n").writerows(self.rows(gradebook))

    def export(self, gradebook: Gradebook) -> None:
        dest = self.to or self.default_name
        self.log.info("Exporting grades to %s", dest)
        if dest == "-":
            self.write(gradebook, sys.stdout)
            return
        with open(dest, "w", newline="") as fh:
            self.write(gradebook, fh)

    def text(self, gradebook: Gradebook) -> str:
        buf = io.StringIO()
        self.write(gradebook, buf)
        return buf.getvalue()


class SafeCsvExportPlugin(_CsvPlugin):
    """nbgrader's CSV columns, one row per (assignment, student); quoted and neutralised."""

    def rows(self, gradebook: Gradebook) -> list[list[str]]:
        assignments, students = _selected(self, gradebook)
        rows = [list(NBGRADER_COLUMNS)]
        for a in assignments:
            for st in students:
                sub = _submission(gradebook, a.name, st.id)
                raw = float(sub.score) if sub else 0.0
                penalty = float(sub.late_submission_penalty or 0.0) if sub else 0.0
                rows.append([plain(x) for x in (a.name, a.duedate, sub.timestamp if sub else None, st.id, st.last_name,
                                                 st.first_name, st.email, raw, penalty, max(0.0, raw - penalty), a.max_score)])
        return rows


class CanvasExportPlugin(_CsvPlugin):
    """Canvas gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, then one column per
    assignment; the second row holds 'Points Possible'. Students are matched on SIS Login ID (the
    nbgrader student id); one without a submission gets an empty cell (Canvas leaves it as it is)."""

    default_name = "canvas.csv"

    def rows(self, gradebook: Gradebook) -> list[list[str]]:
        assignments, students = _selected(self, gradebook)
        rows = [CANVAS_COLUMNS + [neutralise(a.name) for a in assignments],
                ["    Points Possible", "", "", "", ""] + [number(float(a.max_score)) for a in assignments]]
        for st in students:
            name = ", ".join(x for x in (st.last_name, st.first_name) if x) or st.id
            row = [neutralise(name), "", neutralise(st.id), neutralise(st.id), ""]
            for a in assignments:
                sub = _submission(gradebook, a.name, st.id)
                row.append(number(max(0.0, float(sub.score) - float(sub.late_submission_penalty or 0.0))) if sub else "")
            rows.append(row)
        return rows
