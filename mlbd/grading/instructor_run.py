"""The instructor's runs that give the tests' references their values (``references``).

``mlbd grade`` runs the source notebooks twice in the sandbox, as a submission's notebooks, before
it grades anyone (and again only when source/ changes: ``digest``). The first run records every
clean reference as the notebook computes it. The second grades the solution as a submission would
be graded: its test cells in the form the kernel gets (judged checks recording the solution's
values, references no longer needed pruned), another student's variant, every global random
generator reseeded before each cell a student writes. A reference is used only where the solution's
values in the second run satisfy the check against the first run's values, every time it ran: a
reference that depends on the variant, on randomness a student's code can shift, or on something
the pruning removed is left in the kernel, as before.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import literals, prune
from .protocol import MARK, grader_error
from .references import notebook_sites, position


FORMAT = 1
RECORDER = "_mlbd_reference_chk"
MAX_EXPECTED = 200_000          # characters of one reference's values kept (more: left in the kernel)
RESEED = """def _mlbd_reseed(seed):
    import random, sys
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(seed % 2**31)
_mlbd_reseed({seed}); del _mlbd_reseed"""


def recording_notebook(nb: nbformat.NotebookNode, perturb: int | None = None, analysis: tuple | None = None
                       ) -> tuple[nbformat.NotebookNode, dict, dict]:
    """The source notebook as one of the instructor's runs executes it.

    The first (``perturb`` None): every test cell's references recorded as they are computed
    (``RECORDER.v(K, (reference))``; the checks stay as written). The second (``perturb``: a seed):
    every global random generator reseeded before each cell a student writes, and every test cell
    as ``mlbd grade`` gives it to a kernel (its judged checks recording the solution's values, the
    references it then no longer needs pruned, ``prune``), so that the grader can check that the
    solution passes each check in that form, against the first run's reference.

    ``analysis``: ``analyse(nb)`` when already done (it is copied, never changed).
    Returns the notebook, key → (grade_id, ``position``), and (grade_id, position) → Site."""
    from .integrity import _trusted_code
    bind, found = copy.deepcopy(analysis) if analysis is not None else analyse(nb)
    rng, where, sites = random.Random(perturb), {}, {}
    cells = [nbformat.v4.new_code_cell(literals.recorder_source("reference", RECORDER))]
    for i, cell in enumerate(nb.cells):
        if perturb is not None and cell.cell_type == "code" and not _trusted_code(cell):
            cells.append(nbformat.v4.new_code_cell(RESEED.format(seed=rng.randrange(2**62))))
        if i in found:
            cell = copy.deepcopy(cell)
            gid = cell.metadata["nbgrader"].get("grade_id")
            entries, before = found[i]
            for entry in entries:
                sites[(gid, position(entry))] = entry[3]
            if perturb is None:
                kernel = _wrap_references(cell.source, entries, where, gid)
            else:
                kernel, _ = literals.rewrite(cell.source, RECORDER, bind, 1000 * i, frozenset(), entries)
                for entry in entries:
                    where[entry[3].key] = (gid, position(entry))
                kernel = prune.prune([(cell.source, kernel)], before,
                                     [(c.source, bool(_trusted_code(c))) for c in nb.cells[i + 1:] if c.cell_type == "code"])[0]
            cell.metadata[MARK] = {"kernel_source": kernel, "take": literals.take_expression(RECORDER)}
        cells.append(cell)
    out = copy.deepcopy(nb)
    out.cells = cells
    return out, where, sites


def _wrap_references(source: str, entries: list, where: dict, gid: str) -> str:
    raw, starts = source.encode(), literals.line_offsets(source)
    at = lambda line, col: starts[line - 1] + col          # noqa: E731
    pieces, pos = [], 0
    for entry in sorted(entries, key=lambda e: (e[1].lineno, e[1].col_offset)):
        ref = entry[1]
        a, b = at(ref.lineno, ref.col_offset), at(ref.end_lineno, ref.end_col_offset)
        key = len(where)
        where[key] = (gid, position(entry))
        pieces += [raw[pos:a], f"{RECORDER}.v({key}, ({raw[a:b].decode()}))".encode()]
        pos = b
    pieces.append(raw[pos:])
    return b"".join(pieces).decode()


def analyse(nb: nbformat.NotebookNode) -> tuple[dict, dict]:
    """The notebook's names bound to modules and its reference sites (``notebook_sites``)."""
    from .integrity import binding_checks
    bind = binding_checks(nb)["bind"]
    return bind, notebook_sites(nb, bind)


def _encoded(text) -> list | None:
    """The recorder's records as it encoded them: [(execution count, key, encoded value)]."""
    if not isinstance(text, str) or len(text) > literals.MAX_RECORDS_TEXT:
        return None
    try:
        inner = ast.literal_eval(text)
        raw = ast.literal_eval(inner) if isinstance(inner, str) else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return raw if isinstance(raw, list) else None


def _carried(e) -> bool:
    """A value the recorder carried whole (nothing it could not encode) and the grader can read."""
    try:
        literals.decode(e)
    except Exception:  # noqa: BLE001
        return False
    todo = [e]
    while todo:
        x = todo.pop()
        if isinstance(x, tuple) and x and x[0] == "?":
            return False
        if isinstance(x, (tuple, list)):
            todo.extend(x)
    return True


def recorded(executed: nbformat.NotebookNode, where: dict) -> dict[tuple[str, str], list]:
    """(grade_id, position) → the encoded values a reference took, in order, from an executed
    ``recording_notebook``; only test cells that passed, only values carried whole."""
    out: dict = {}
    for cell in executed.cells:
        meta = cell.metadata.get(MARK)
        if not isinstance(meta, dict) or "take" not in meta:
            continue
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])) or grader_error(cell):
            continue
        for item in _encoded(meta.get("records")) or []:
            if isinstance(item, tuple) and len(item) == 3 and item[1] in where:
                out.setdefault(where[item[1]], []).append(item[2])
    return {k: v for k, v in out.items() if all(map(_carried, v))}


def agreed(references: dict, solution: dict, sites: dict) -> dict[str, dict[str, str]]:
    """grade_id → position → expected values (``Site.expected``): each reference the first run
    recorded (``references``) that the solution's values in the second (``solution``: the graded
    form, another variant, reseeded generators) satisfy, every time the check ran."""
    out: dict = {}
    for (gid, pos), values in references.items():
        got, site = solution.get((gid, pos)), sites.get((gid, pos))
        if site is None or got is None or len(got) != len(values):
            continue
        try:
            ok = all(literals.holds(site, literals.decode(g), literals.decode(v)) for g, v in zip(got, values))
        except Exception:  # noqa: BLE001
            ok = False
        text = repr(values)
        if ok and len(text) <= MAX_EXPECTED:
            out.setdefault(gid, {})[pos] = text
    return out


def digest(notebooks: dict[str, bytes], files: dict[str, bytes]) -> str:
    """What the instructor's values depend on: the source notebooks, the files they read, Python,
    and the code that finds, records and prunes references (a new mlbd computes them again)."""
    h = hashlib.sha256(f"{FORMAT}\0{sys.version}\0".encode())
    here = Path(__file__).parent
    for module in ("references.py", "prune.py", "literals.py", "instructor_run.py"):
        h.update((here / module).read_bytes())
    for kind, items in (("nb", notebooks), ("file", files)):
        for name, data in sorted(items.items()):
            h.update(f"{kind}\0{name}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


@dataclass
class InstructorRun:
    """The two runs of the instructor's notebooks that give the references' values: ``jobs()`` to
    execute (in the sandbox, as a submission's notebooks), ``expected(outcomes)`` from what they gave."""
    assignment: str
    notebooks: dict[str, bytes]        # name → the source notebook (with solutions)
    where: dict = field(default_factory=dict)        # (name, run) → key → (grade_id, position)
    sites: dict = field(default_factory=dict)        # name → (grade_id, position) → Site
    _analysed: dict = field(default_factory=dict, repr=False)   # name → (notebook, ``analyse``'s)

    def _analysis(self, name: str) -> tuple[nbformat.NotebookNode, tuple[dict, dict]]:
        if name not in self._analysed:
            nb = nbformat.reads(self.notebooks[name].decode(), as_version=4)
            self._analysed[name] = (nb, analyse(nb))
        return self._analysed[name]

    def has_references(self) -> bool:
        """Whether any test cell of the notebooks has a check against a clean reference."""
        return any(self._analysis(name)[1][1] for name in self.notebooks)

    def notebooks_to_run(self, perturb: int | None) -> list[tuple[str, str, str]]:
        out = []
        for name in sorted(self.notebooks, key=lambda n: f"{n}.ipynb"):
            nb, analysis = self._analysis(name)
            recording, where, sites = recording_notebook(nb, perturb, analysis)
            self.where[(name, perturb is not None)], self.sites[name] = where, sites
            out.append((name, nbformat.writes(recording), nb.metadata.get("kernelspec", {}).get("name", "python3")))
        return out

    def expected(self, first: dict[str, str | None], second: dict[str, str | None]) -> dict[str, dict]:
        """notebook → grade_id → position → values, from the two runs' executed notebooks (JSON)."""
        out = {}
        for name, sites in self.sites.items():
            a, b = first.get(name), second.get(name)
            if a and b:
                out[name] = agreed(recorded(nbformat.reads(a, as_version=4), self.where[(name, False)]),
                                   recorded(nbformat.reads(b, as_version=4), self.where[(name, True)]), sites)
        return out


@dataclass
class Cache:
    """The instructor's values of an assignment, kept until source/ changes
    (``.mlbd/references/<assignment>.json``, readable by the grader only: they are hidden tests'
    expected values)."""
    root: Path
    assignment: str

    @property
    def path(self) -> Path:
        return self.root / ".mlbd" / "references" / f"{self.assignment}.json"

    def load(self, key: str) -> dict | None:
        try:
            saved = json.loads(self.path.read_text())
            return saved["expected"] if saved.get("digest") == key else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, key: str, expected: dict) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            json.dump({"digest": key, "expected": expected}, fh)
        os.replace(tmp, self.path)
