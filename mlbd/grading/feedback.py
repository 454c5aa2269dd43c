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
import os
import re
from pathlib import Path

import nbformat
from nbconvert.preprocessors import Preprocessor
from nbgrader import utils as nbg_utils
from nbgrader.coursedir import CourseDirectory
from traitlets import Bool, Integer, Unicode

from . import boxfs, literals
from .integrity import MARK

PLACEHOLDER = "# (hidden tests: not shown; their failure messages are below)"
AFTER_HIDDEN = ("[output not shown in feedback: this cell ran after the hidden tests, which its output could "
                "reveal; run the notebook yourself to see it]\n")
GENERIC = "the test failed (its message is not shown: it is not one the test's author wrote)"
BUILTIN_ERRORS = frozenset(n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException))


def _parse(source: str):
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def _literals(source: str) -> set[str]:
    tree = _parse(source)
    if tree is None:
        return set()
    return {n.value.strip() for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _messages(source: str) -> set[str]:
    """The messages the author wrote: string literals of ``assert ..., "msg"``, ``raise E("msg")``
    and a check's ``err_msg="msg"`` (``np.testing``; the grader reports it for a check it judged);
    an f-string as its template, each formatted part ``literals.PLACEHOLDER``."""
    tree = _parse(source)
    out = set()
    for node in ast.walk(tree) if tree is not None else []:
        msgs = [node.msg] if isinstance(node, ast.Assert) else []
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            msgs = [node.exc.args[0]]
        if isinstance(node, ast.Call):
            msgs = [k.value for k in node.keywords if k.arg in ("err_msg", "msg")]
        out.update(text.strip() for text in map(literals.message_text, msgs) if text)
    return out


def _template(evalue: str, messages: set[str]) -> str | None:
    """The author's f-string message (formatted parts as ``literals.PLACEHOLDER``) that ``evalue``
    is a rendering of: feedback shows the template, never what the kernel filled in."""
    for text in messages:
        if literals.PLACEHOLDER in text:
            parts = [re.escape(p) for p in text.split(literals.PLACEHOLDER)]
            if re.fullmatch("(?s)" + ".*?".join(parts), evalue):
                return text
    return None


def shown_messages(source: str, visible: str) -> set[str]:
    """Failure messages feedback may show for a test cell: any string literal of its visible part
    (the student reads that source anyway) and the author's assert / raise messages of the whole
    cell. Not any other literal of the hidden part: an expected value written as a string there
    would otherwise reach the student through an exception the student's code raises with it."""
    return _literals(visible) | _messages(source)


def test_verdict(cell, visible: str | None = None) -> list:
    """The outputs feedback shows for a test cell: none when it passed, one error when it failed.
    ``visible``: the cell's source as the student sees it (hidden tests replaced)."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return []
    ename, evalue = str(errors[0].get("ename", "")), str(errors[0].get("evalue", "")).strip()
    ename = ename if ename in BUILTIN_ERRORS else "Error"
    shown = shown_messages(cell.source, cell.source if visible is None else visible)
    if not evalue or evalue not in shown:
        evalue = _template(evalue, shown) or GENERIC
    return [nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])]


def _same(path: Path, data: bytes) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


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
        # has the kernel received a hidden test yet? A submission's notebooks run one after another
        # in one work dir, so a file written after an earlier notebook's hidden tests is there for this one
        seen_hidden = self._earlier_hidden(resources)
        self._drop_written_files(resources)
        count = 0
        for cell in nb.cells:
            if cell.cell_type == "code" and cell.get("execution_count") is not None:
                count += 1            # the kernel chooses its execution counts: any integer, any size
                cell.execution_count = count
                for out in cell.get("outputs", []):
                    if "execution_count" in out:
                        out["execution_count"] = count
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
                cell.outputs = test_verdict(cell, self._hide(cell.source))
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

    def _notebook_dir(self, resources) -> Path | None:
        path = (resources.get("metadata") or {}).get("path")
        return Path(path) if path else None

    def _earlier_hidden(self, resources) -> bool:
        """Whether a notebook of this submission that ran before this one (nbgrader's order: by name)
        holds hidden tests. Read from the graded notebooks next to this one, whose test cells the
        grader restored; only regular files are read, never through a link or a FIFO."""
        folder, name = self._notebook_dir(resources), (resources.get("nbgrader") or {}).get("notebook")
        if folder is None or name is None:
            return False
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        # before this one by name (mlbd grade) or by path (nbgrader autograde): either order counts
        earlier = lambda n: n.endswith(".ipynb") and (n[:-6] < name or n < name + ".ipynb")   # noqa: E731
        try:
            for other in sorted(filter(earlier, os.listdir(fd))):
                data = boxfs.read_regular(other, fd, 60 * 2**20)
                try:
                    cells = nbformat.reads(data.decode("utf-8", "replace"), as_version=4).cells if data else []
                except Exception:  # noqa: BLE001  (unreadable: it is not evidence either way; be careful)
                    return True
                if any(c.cell_type == "code" and nbg_utils.is_grade(c) and not nbg_utils.is_solution(c)
                       and self.begin in c.source for c in cells):
                    return True
        finally:
            os.close(fd)
        return False

    def _drop_written_files(self, resources) -> None:
        """nbgrader copies every file of autograded/ into the student's feedback folder: files the
        kernel wrote while grading are among them, written after it saw the hidden tests. Only the
        student's own submitted files and the assignment's released ones stay there."""
        nbg = resources.get("nbgrader") or {}
        student, assignment, folder = nbg.get("student"), nbg.get("assignment"), self._notebook_dir(resources)
        if not (student and assignment and folder):
            return
        cd = CourseDirectory(config=self.config)
        dest = Path(cd.format_path(cd.feedback_directory, student, assignment))
        sources = [Path(cd.format_path(cd.submitted_directory, student, assignment)),
                   Path(cd.format_path(cd.release_directory, ".", assignment))]
        if dest.resolve() == folder.resolve() or not dest.is_dir():
            return
        for path in sorted(Path(root) / n for root, _, names in os.walk(folder) for n in names):
            rel = path.relative_to(folder)
            if path.suffix == ".ipynb" or path.is_symlink() or not path.is_file():
                continue
            if rel.as_posix() in boxfs.EXCHANGE_FILES:    # the exchange's (trusted) files: no kernel's is kept
                continue
            try:
                data = path.read_bytes()
            except OSError:
                data = None
            if data is not None and any(_same(base / rel, data) for base in sources):
                continue
            target = dest / rel
            if not target.is_symlink() and target.is_file():
                target.unlink()
                self.log.warning("%s: left out of feedback (written while the notebook was graded)", rel)

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
