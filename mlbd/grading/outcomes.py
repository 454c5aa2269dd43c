"""Which part of a test cell failed: the visible asserts or the hidden tests (trusted, read-only).

A test cell in this course holds visible asserts first and then, between nbgrader's
``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``, the hidden ones. nbgrader scores the cell
as a whole, so the gradebook cannot tell "failed the visible test" from "passed the visible test
but failed the hidden one" (a visible test too weak to warn the student). The executed notebook
can: the outermost frame of the traceback (IPython's ``Cell In[n], line L``) is the top-level
statement of the test cell that raised, and its line is before or after the hidden marker.

Used by the scoring step, which stores the result in the run record (``tests``), and read by
``mlbd report --items``. Nothing here changes a grade.
"""
from __future__ import annotations

import re

from nbgrader import utils as nbg_utils

HIDDEN_MARKER = "BEGIN HIDDEN TESTS"      # nbgrader's ClearHiddenTests.begin_test_delimeter default

PASSED = "passed"        # no error
VISIBLE = "visible"      # failed in the visible part (or before the tests ran)
HIDDEN = "hidden"        # the visible part passed, a hidden test failed
FAILED = "failed"        # failed, but where is unknown (no marker, no cell frame, a grader error)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FRAME = re.compile(r"Cell In\[\d*\], line (\d+)")


def hidden_line(source: str) -> int | None:
    """1-based line of the hidden-tests marker, or None when the cell has no hidden part."""
    for i, line in enumerate(source.splitlines(), 1):
        if HIDDEN_MARKER in line:
            return i
    return None


def failing_line(outputs) -> int | None:
    """Line of the test cell's top-level statement that raised, from its error output."""
    for out in outputs:
        if out.get("output_type") != "error":
            continue
        for chunk in out.get("traceback", []):
            m = _FRAME.search(_ANSI.sub("", chunk))
            if m:
                return int(m.group(1))
    return None


def classify(cell) -> str:
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return PASSED
    marker = hidden_line(cell.get("source", ""))
    line = failing_line(errors)
    if marker is None or line is None:
        return FAILED
    return VISIBLE if line < marker else HIDDEN


def cell_outcomes(nb) -> dict[str, str]:
    """``{grade_id: outcome}`` for every autograded test cell of an executed notebook."""
    out = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and nbg_utils.is_grade(cell) and not nbg_utils.is_solution(cell):
            out[cell.metadata["nbgrader"]["grade_id"]] = classify(cell)
    return out
