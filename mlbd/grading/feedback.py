"""Student-safe feedback: a preprocessor for ``nbgrader generate_feedback``.

Configured in ``nbgrader_config.py``::

    c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades",
        "mlbd.grading.feedback.StudentFeedback", "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]

- hidden tests are replaced by a one-line placeholder in the test cells' source;
- a failed test shows its failure message (``AssertionError: <message>``), not its traceback,
  whose source lines would reveal the hidden assertion;
- any line of a hidden test that turns up in an output (printed by a hook) is blanked;
- each text output and the notebook's outputs as a whole are bounded in bytes.
"""
from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from nbgrader import utils as nbg_utils
from traitlets import Bool, Integer, Unicode

PLACEHOLDER = "# (hidden tests: not shown; their failure messages are below)"


class StudentFeedback(Preprocessor):
    enabled = Bool(True).tag(config=True)       # registered by name, nbconvert would disable it
    begin = Unicode("BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("END HIDDEN TESTS").tag(config=True)
    max_output_chars = Integer(20_000, help="characters kept per text output").tag(config=True)
    max_notebook_bytes = Integer(3_000_000, help="output bytes kept in one feedback notebook").tag(config=True)

    def _hide(self, source: str) -> tuple[str, list[str]]:
        out, hidden, inside = [], [], False
        for line in source.splitlines():
            if self.begin in line:
                inside = True
                out.append(PLACEHOLDER)
                continue
            if self.end in line:
                inside = False
                continue
            (hidden if inside else out).append(line)
        return "\n".join(out), hidden

    def preprocess(self, nb, resources):
        secret_lines: set[str] = set()
        for cell in nb.cells:
            if cell.cell_type == "code" and nbg_utils.is_grade(cell) and not nbg_utils.is_solution(cell):
                cell.source, hidden = self._hide(cell.source)
                secret_lines.update(s.strip() for s in hidden if len(s.strip()) >= 12 and not s.strip().startswith("#"))
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error":
                        out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
        pattern = re.compile("|".join(re.escape(s) for s in sorted(secret_lines, key=len, reverse=True))) if secret_lines else None
        budget = self.max_notebook_bytes
        for cell in nb.cells:
            kept = []
            for out in cell.get("outputs", []):
                size = self._bound(out, pattern)
                if size > budget:
                    continue
                budget -= size
                kept.append(out)
            if "outputs" in cell and len(kept) < len(cell.outputs):
                kept.append({"output_type": "stream", "name": "stdout",
                             "text": "[output not shown: feedback size limit]\n"})
            if "outputs" in cell:
                cell.outputs = kept
        return nb, resources

    def _clip(self, text: str, pattern) -> str:
        if pattern is not None:
            text = pattern.sub("[hidden test line removed]", text)
        if len(text) > self.max_output_chars:
            text = text[: self.max_output_chars] + "\n[… truncated]\n"
        return text

    def _bound(self, out, pattern) -> int:
        kind = out.get("output_type")
        if kind == "stream":
            out["text"] = self._clip(out.get("text", ""), pattern)
            return len(out["text"])
        if kind == "error":
            out["evalue"] = self._clip(str(out.get("evalue", "")), pattern)
            out["traceback"] = [self._clip(str(t), pattern) for t in out.get("traceback", [])][:50]
            return len(out["evalue"]) + sum(len(t) for t in out["traceback"])
        size = 0
        for mime, value in list((out.get("data") or {}).items()):
            if isinstance(value, str) and (mime.startswith("text/") or mime == "application/json"):
                out["data"][mime] = value = self._clip(value, pattern)
            size += len(value) if isinstance(value, str) else len(str(value))
        return size
