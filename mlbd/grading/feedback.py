"""Student-safe feedback: a preprocessor for ``nbgrader generate_feedback``.

Configured in ``nbgrader_config.py``::

    c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades",
        "mlbd.grading.feedback.StudentFeedback", "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]

The student's kernel sees every hidden test it runs, and code the student wrote can print it in
any encoding (``In``, ``_ih``, the history database, ``inspect.stack()``, rot13, base64 ...), so
no filter on output text can keep hidden tests out of feedback. What feedback shows is decided by
where an output came from, never by what it says:

- **test cells**: the source with the hidden part replaced by a placeholder, the points (nbgrader's
  ``GetGrades``) and a verdict the grader derives: nothing when the test passed; when it failed,
  ``<ExceptionName>: <message>`` only if the message is a string literal written in that test's
  own source and the name a built-in exception, otherwise a generic "the test failed". Whatever
  the test printed (a student function called by a hidden test included) is not shown, except
  for test cells that ran before the kernel received any hidden test.
- **every other code cell**: its outputs if it ran before the first cell holding hidden tests
  (the kernel could not have seen one then); after it, a one-line note instead.
- outputs the grader itself wrote (a blank or unrunnable notebook), marked in cell metadata by the
  trusted side, and the grading notes (their student version, from the same metadata).
- each text output and the notebook's outputs as a whole are bounded in bytes.
"""
from __future__ import annotations

import ast
import builtins
import re

import nbformat
from nbconvert.preprocessors import Preprocessor
from nbgrader import utils as nbg_utils
from traitlets import Bool, Integer, Unicode

from .integrity import MARK

PLACEHOLDER = "# (hidden tests: not shown; their failure messages are below)"
AFTER_HIDDEN = ("[output not shown in feedback: this cell ran after the hidden tests, which its output could "
                "reveal; run the notebook yourself to see it]\n")
GENERIC = "the test failed (its message is not shown: it is not one the test's author wrote)"
BUILTIN_ERRORS = frozenset(n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException))


def _literals(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.value.strip() for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_verdict(cell) -> list:
    """The outputs feedback shows for a test cell: none when it passed, one error when it failed."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return []
    ename, evalue = str(errors[0].get("ename", "")), str(errors[0].get("evalue", "")).strip()
    ename = ename if ename in BUILTIN_ERRORS else "Error"
    if not evalue or evalue not in _literals(cell.source):
        evalue = GENERIC
    return [nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])]


class StudentFeedback(Preprocessor):
    enabled = Bool(True).tag(config=True)       # registered by name, nbconvert would disable it
    begin = Unicode("BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("END HIDDEN TESTS").tag(config=True)
    max_output_chars = Integer(20_000, help="characters kept per text output").tag(config=True)
    max_notebook_bytes = Integer(3_000_000, help="output bytes kept in one feedback notebook").tag(config=True)

    def _hide(self, source: str) -> str:
        out, inside = [], False
        for line in source.splitlines():
            if self.begin in line:
                inside = True
                out.append(PLACEHOLDER)
                continue
            if self.end in line:
                inside = False
                continue
            if not inside:
                out.append(line)
        return "\n".join(out)

    def preprocess(self, nb, resources):
        seen_hidden = False           # has the kernel received a hidden test yet?
        for cell in nb.cells:
            trusted = cell.metadata.pop(MARK, None)
            if not isinstance(trusted, dict):
                trusted = {}
            if cell.cell_type == "markdown" and "notes" in trusted:
                cell.source = str(trusted["notes"])
            if cell.cell_type != "code":
                continue
            test = nbg_utils.is_grade(cell) and not nbg_utils.is_solution(cell)
            hidden = test and self.begin in cell.source
            seen_hidden = seen_hidden or hidden
            if trusted.get("grader_output"):
                pass
            elif test and seen_hidden:
                cell.outputs = test_verdict(cell)
            elif seen_hidden and cell.get("outputs"):
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=AFTER_HIDDEN)]
            elif test:
                for out in cell.outputs:
                    if out.get("output_type") == "error":   # the traceback quotes the test's source
                        out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
            if test:
                cell.source = self._hide(cell.source)
        budget = self.max_notebook_bytes
        for cell in nb.cells:
            if "outputs" not in cell:
                continue
            kept = []
            for out in cell.outputs:
                size = self._bound(out)
                if size > budget:
                    continue
                budget -= size
                kept.append(out)
            if len(kept) < len(cell.outputs):
                kept.append(nbformat.v4.new_output("stream", name="stdout", text="[output not shown: feedback size limit]\n"))
            cell.outputs = kept
        return nb, resources

    def _clip(self, text: str) -> str:
        if len(text) > self.max_output_chars:
            text = text[: self.max_output_chars] + "\n[… truncated]\n"
        return text

    def _bound(self, out) -> int:
        kind = out.get("output_type")
        if kind == "stream":
            out["text"] = self._clip(out.get("text", ""))
            return len(out["text"])
        if kind == "error":
            out["evalue"] = self._clip(str(out.get("evalue", "")))
            out["traceback"] = [self._clip(str(t)) for t in out.get("traceback", [])][:50]
            return len(out["evalue"]) + sum(len(t) for t in out["traceback"])
        size = 0
        for mime, value in list((out.get("data") or {}).items()):
            if isinstance(value, str) and (mime.startswith("text/") or mime == "application/json"):
                out["data"][mime] = value = self._clip(value)
            size += len(value) if isinstance(value, str) else len(str(value))
        return size
