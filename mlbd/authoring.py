"""Plain-text authoring format for nbgrader instructor notebooks.

Editing nbgrader metadata by hand in JSON is error-prone and review-hostile, so course authors write
(or export, edit and re-import) a notebook as text. The ``.ipynb`` under ``source/`` stays the one
canonical copy that nbgrader reads; the text form is a round-trippable view of it
(``mlbd nb export`` / ``mlbd nb import``), never a second copy to keep in sync.

Format: a header line ``%% notebook key=value ...`` (notebook-level ``mlbd`` metadata, e.g.
``budget_s=60``), then cells, each opened by a ``%%`` line:

========================  =====================================================================
``%% markdown``           read-only instructions (locked)
``%% code``               read-only code run for everyone (imports, data set-up; locked)
``%% scratch``            free code cell the student may use; not graded, not locked
``%% solution ID``        code the student writes, between ``### BEGIN/END SOLUTION``
``%% tests ID POINTS``    autograder tests (locked); hidden parts inside ``### BEGIN/END HIDDEN TESTS``
``%% answer ID POINTS``   manually graded Markdown answer; the rubric goes inside
                          ``### BEGIN SOLUTION`` / ``### END SOLUTION`` so it never reaches students
``%% task ID POINTS``     manually graded task (e.g. judge a plot); rubric inside
                          ``=== BEGIN MARK SCHEME ===`` / ``=== END MARK SCHEME ===``
========================  =====================================================================
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

KINDS = {"markdown", "code", "scratch", "solution", "tests", "answer", "task"}
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


class AuthoringError(ValueError):
    """A text notebook that cannot become a valid nbgrader notebook (line number in the message)."""


@dataclass
class Cell:
    kind: str
    source: str
    grade_id: str | None = None
    points: float | None = None
    line: int = 0


@dataclass
class TextNotebook:
    meta: dict = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse(text: str) -> TextNotebook:
    nb = TextNotebook()
    current: Cell | None = None
    body: list[str] = []

    def close():
        if current is not None:
            current.source = "\n".join(body).strip("\n")
            nb.cells.append(current)

    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("%% "):
            if current is None:
                if line.strip():
                    raise AuthoringError(f"line {lineno}: text before the first '%%' cell header")
                continue
            body.append(line)
            continue
        words = line[3:].split()
        kind, args = words[0], words[1:]
        if kind == "notebook":
            if current is not None or nb.cells:
                raise AuthoringError(f"line {lineno}: '%% notebook' must come first")
            for arg in args:
                key, _, value = arg.partition("=")
                nb.meta[key] = _parse_value(value)
            continue
        close()
        body = []
        if kind not in KINDS:
            raise AuthoringError(f"line {lineno}: unknown cell kind {kind!r} (use one of {sorted(KINDS)})")
        current = Cell(kind=kind, source="", line=lineno)
        needs_id = kind in {"solution", "tests", "answer", "task"}
        needs_points = kind in {"tests", "answer", "task"}
        expected = 1 + needs_points if needs_id else 0
        if len(args) != expected:
            raise AuthoringError(
                f"line {lineno}: '%% {kind}' takes {expected} argument(s), got {len(args)}: {line!r}")
        if needs_id:
            current.grade_id = args[0]
            if not _ID_RE.match(current.grade_id):
                raise AuthoringError(f"line {lineno}: bad id {current.grade_id!r} (letters, digits, - and _)")
        if needs_points:
            try:
                current.points = float(args[1])
            except ValueError:
                raise AuthoringError(f"line {lineno}: points must be a number, got {args[1]!r}") from None
    close()
    _validate(nb)
    return nb


def _validate(nb: TextNotebook) -> None:
    seen: set[str] = set()
    for cell in nb.cells:
        if cell.grade_id:
            if cell.grade_id in seen:
                raise AuthoringError(f"line {cell.line}: duplicate id {cell.grade_id!r}")
            seen.add(cell.grade_id)
        if cell.kind == "solution" and "### BEGIN SOLUTION" not in cell.source:
            raise AuthoringError(f"line {cell.line}: solution cell {cell.grade_id} has no ### BEGIN SOLUTION")
        if cell.kind == "answer" and "### BEGIN SOLUTION" not in cell.source:
            raise AuthoringError(f"line {cell.line}: answer cell {cell.grade_id} needs its rubric "
                                 "inside ### BEGIN SOLUTION / ### END SOLUTION")


def _meta(kind: str, grade_id: str, points: float | None) -> dict:
    flags = {
        "markdown": (False, False, False, True),
        "code": (False, False, False, True),
        "solution": (False, True, False, False),
        "tests": (True, False, False, True),
        "answer": (True, True, False, False),
        "task": (False, False, True, True),
    }[kind]
    grade, solution, task, locked = flags
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": task}
    if points is not None:
        meta["points"] = points if points != int(points) else int(points)
    return meta


def _auto_id(kind: str, source: str, taken: set[str]) -> str:
    digest = hashlib.sha1(f"{kind}\n{source}".encode()).hexdigest()[:8]
    base = f"cell-{digest}"
    cid, n = base, 1
    while cid in taken:
        n += 1
        cid = f"{base}-{n}"
    return cid


def to_notebook(nb: TextNotebook) -> nbformat.NotebookNode:
    out = nbformat.v4.new_notebook()
    out.metadata = {"kernelspec": dict(KERNELSPEC),
                    "language_info": {"name": "python"}}
    if nb.meta:
        out.metadata["mlbd"] = dict(nb.meta)
    taken = {c.grade_id for c in nb.cells if c.grade_id}
    for cell in nb.cells:
        cid = cell.grade_id or _auto_id(cell.kind, cell.source, taken)
        taken.add(cid)
        markdown = cell.kind in {"markdown", "answer", "task"}
        new = nbformat.v4.new_markdown_cell if markdown else nbformat.v4.new_code_cell
        node = new(cell.source)
        node.id = cid
        if cell.kind != "scratch":
            node.metadata["nbgrader"] = _meta(cell.kind, cid, cell.points)
        out.cells.append(node)
    nbformat.validate(out)
    return out


def kind_of(cell) -> str:
    """Classify an nbgrader cell the way the text format names it."""
    md = cell.get("metadata", {}).get("nbgrader")
    if not md:
        return "scratch" if cell.cell_type == "code" else "markdown"
    if md.get("task"):
        return "task"
    if md.get("grade") and md.get("solution"):
        return "answer"
    if md.get("grade"):
        return "tests"
    if md.get("solution"):
        return "solution"
    return "markdown" if cell.cell_type == "markdown" else "code"


def from_notebook(node: nbformat.NotebookNode) -> str:
    lines: list[str] = []
    meta = node.metadata.get("mlbd") or {}
    if meta:
        lines.append("%% notebook " + " ".join(f"{k}={json.dumps(v)}" for k, v in meta.items()))
    for cell in node.cells:
        kind = kind_of(cell)
        md = cell.metadata.get("nbgrader", {})
        header = f"%% {kind}"
        if kind in {"solution", "tests", "answer", "task"}:
            header += f" {md['grade_id']}"
        if kind in {"tests", "answer", "task"}:
            header += f" {md.get('points', 0)}"
        lines.append(header)
        lines.append(cell.source)
        lines.append("")
    return "\n".join(lines)


def import_text(text_path: Path, ipynb_path: Path) -> None:
    nb = to_notebook(parse(Path(text_path).read_text()))
    ipynb_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(ipynb_path))


def export_text(ipynb_path: Path) -> str:
    return from_notebook(nbformat.read(str(ipynb_path), as_version=4))
