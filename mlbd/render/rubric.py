"""The rubric next to each manually graded answer in the formgrader's grading page (TAs only).

The rubric lives in the instructor's notebook in ``source/``: between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` in a markdown answer cell, between ``=== BEGIN MARK SCHEME ===`` and
``=== END MARK SCHEME ===`` in a task cell; nbgrader strips both from the release. This nbconvert
preprocessor, configured on the ``HTMLExporter`` in ``nbgrader_config.py``, adds a markdown cell
"Rubric (TAs only)" after each such cell of the submission being graded, only when the exporter
renders nbgrader's ``formgrade`` template (the formgrader's submission page); the cell it adds is
markdown, so ``mlbd.render.sanitize.markdown2html`` sanitizes it too.

Everywhere (feedback included) it also cuts the marked regions out of the rendered cells: nbgrader's
autograde restores a task cell's whole source from the gradebook, mark scheme included, so without
this a task's mark scheme reached the student's feedback.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor
from nbgrader.coursedir import CourseDirectory
from traitlets import Bool, Unicode

MARKERS = (("### BEGIN SOLUTION", "### END SOLUTION"), ("=== BEGIN MARK SCHEME ===", "=== END MARK SCHEME ==="))
TAG = "mlbd-rubric"


def between(source: str, begin: str, end: str) -> str:
    """The lines between ``begin`` and ``end`` (all blocks, joined), without the markers."""
    out, inside = [], False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            out.append(line)
    return "\n".join(out).strip()


def rubric_of(cell) -> str:
    """The rubric of an instructor's manually graded markdown cell, or ''."""
    nbg = cell.get("metadata", {}).get("nbgrader", {})
    if cell.get("cell_type") != "markdown" or not (nbg.get("task") or (nbg.get("solution") and nbg.get("grade"))):
        return ""
    begin, end = MARKERS[1] if nbg.get("task") else MARKERS[0]
    return between(cell.get("source", ""), begin, end)


def rubrics(source_notebook: Path) -> dict[str, str]:
    """grade_id → rubric text for every manually graded markdown cell of an instructor notebook."""
    nb = nbformat.read(str(source_notebook), as_version=4)
    found = {}
    for cell in nb.cells:
        text = rubric_of(cell)
        if text:
            found[cell.metadata["nbgrader"]["grade_id"]] = text
    return found


def without_rubric(source: str) -> str:
    """``source`` with every marked rubric region (markers included) removed."""
    out, inside = [], False
    for line in source.splitlines():
        if any(begin in line for begin, _ in MARKERS):
            inside = True
        elif any(end in line for _, end in MARKERS):
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


class Rubrics(Preprocessor):
    enabled = Bool(True).tag(config=True)   # registered by name, nbconvert would disable it
    template = Unicode("formgrade", help="the only template (the formgrader's page) that gets rubrics").tag(config=True)

    def preprocess(self, nb, resources):
        for cell in nb.cells:
            if cell.get("cell_type") == "markdown" and any(b in cell.get("source", "") for b, _ in MARKERS):
                cell.source = without_rubric(cell.source)
        if getattr(self.parent, "template_name", None) != self.template:
            return nb, resources
        assignment, notebook = resources.get("assignment_id"), resources.get("notebook_id")
        if not assignment or not notebook:
            return nb, resources
        cd = CourseDirectory(config=self.config)
        path = Path(cd.format_path(cd.source_directory, ".", assignment)) / f"{notebook}.ipynb"
        try:
            found = rubrics(path)
        except (OSError, ValueError) as exc:
            self.log.warning("no rubrics for %s/%s: %s", assignment, notebook, exc)
            return nb, resources
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if gid in found and cell.get("cell_type") == "markdown":
                quoted = "\n".join("> " + line for line in found[gid].splitlines())
                note = nbformat.v4.new_markdown_cell(f"> **Rubric (TAs only)**\n>\n{quoted}")
                note.metadata["tags"] = [TAG]
                cells.append(note)
        nb.cells = cells
        return nb, resources
