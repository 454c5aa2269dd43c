"""Proving a course sound: execute notebooks, score their test cells, inject known wrong answers.

This is the course maintainer's tool behind ``grader_tests``. It runs trusted instructor material,
so it executes notebooks directly with nbclient (no sandbox); student submissions go through
``mlbd grade`` instead.
"""
from __future__ import annotations

import copy
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from . import variant
from .authoring import kind_of
from .course import tool_env

SOLUTION_RE = re.compile(r"### BEGIN SOLUTION(.*?)### END SOLUTION", re.S)
HIDDEN_RE = re.compile(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", re.S)
MARK_SCHEME_RE = re.compile(r"=== BEGIN MARK SCHEME ===(.*?)=== END MARK SCHEME ===", re.S)
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS",
           "BEGIN MARK SCHEME", "END MARK SCHEME")

# Code that would reach the network or call a downloader (curriculum 0.3).
NETWORK_PATTERNS = [
    r"\bfetch_[a-z_]+\s*\(", r"keras\.datasets", r"\.load_data\s*\(", r"load_dataset\s*\(",
    r"https?://", r"\burllib\b", r"\brequests\b", r"\bsocket\b", r"\bhttp\.client\b",
]


# Per-student variants (mlbd.variant): the validation suite proves a variant assignment for these
# students, keyed with a public validation secret (never a course's).
VARIANT_IDS = ("v01", "v02", "v03", "v04", "v05")
VALIDATION_SECRET = b"mlbd validation: public, never a course secret"
VARIANT_CALL = re.compile(r"\bvariant\.(rng|seed)\s*\(")


def kernel_env(student: str | None = None) -> dict:
    """The environment of validation kernels; with ``student``, that student's variant key."""
    env = tool_env({"MLBD_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0",
                    "TF_CPP_MIN_LOG_LEVEL": "2", "MLBD_FULL_RUN": "0"})
    # one thread per kernel, as the grading sandbox runs them (Sandbox.threads): the same numbers
    # as grading, and no oversubscription while the test workers run kernels side by side
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env.setdefault(var, "1")
    for k in (variant.KEY_ENV, variant.STUDENT_ENV):
        env.pop(k, None)
    if student:
        env.update({variant.KEY_ENV: variant.student_key(VALIDATION_SECRET, "validation", student),
                    variant.STUDENT_ENV: student})
    return env


def uses_variants(path: Path) -> bool:
    """Does the notebook draw from per-student streams (``variant.rng``/``variant.seed``)?"""
    return any(VARIANT_CALL.search(c.source) for c in nbformat.read(str(path), as_version=4).cells
               if c.cell_type == "code")


def graded_cells(nb) -> dict[str, dict]:
    """grade_id → {kind, points, index} for every cell that carries points."""
    out = {}
    for i, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader", {})
        kind = kind_of(cell)
        if kind in {"tests", "answer", "task"}:
            out[md["grade_id"]] = {"kind": kind, "points": float(md.get("points", 0)), "index": i}
    return out


def cell_failed(cell) -> bool:
    return any(o.get("output_type") == "error" for o in cell.get("outputs", []))


def error_text(cell) -> str:
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            return f"{o.get('ename')}: {o.get('evalue')}"
    return ""


@dataclass
class Execution:
    nb: nbformat.NotebookNode
    seconds: float
    scores: dict[str, float] = field(default_factory=dict)   # autograded tests only
    max_scores: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return sum(self.scores.values())

    @property
    def max_score(self) -> float:
        return sum(self.max_scores.values())


def notebook_client(nb, workdir: Path, timeout: int) -> NotebookClient:
    return NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                          resources={"metadata": {"path": str(workdir)}})


def execute(path: Path, workdir: Path, timeout: int = 300, student: str | None = None) -> Execution:
    """Run a notebook top to bottom in a fresh kernel (errors recorded, not raised) and score it.

    ``workdir`` becomes the kernel's working directory, so files a notebook writes stay there;
    ``student``: draw that student's variant (``VARIANT_IDS``), not the default one.
    """
    nb = nbformat.read(str(path), as_version=4)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    client = notebook_client(nb, workdir, timeout)
    client.execute(env=kernel_env(student), cwd=str(workdir))
    return scored(nb, time.perf_counter() - start)


def scored(nb, seconds: float) -> Execution:
    """The autograded test cells of an executed notebook, scored all-or-nothing."""
    run = Execution(nb=nb, seconds=seconds)
    for gid, info in graded_cells(nb).items():
        if info["kind"] != "tests":
            continue
        cell = nb.cells[info["index"]]
        failed = cell_failed(cell)
        run.max_scores[gid] = info["points"]
        run.scores[gid] = 0.0 if failed else info["points"]
        if failed:
            run.errors[gid] = error_text(cell)
    return run


def run_with_every_canary(path: Path, workdir: Path, timeout: int = 300) -> tuple[list[str], list[str]]:
    """Run the instructor notebook with every canary ``mlbd grade`` could give each autograded test
    cell (``integrity.reversed_copies`` and ``integrity.twin_copies``), where ``mlbd grade`` may put it: before the test when
    running the test twice is harmless (``integrity.runs_twice_safely``), after it otherwise.

    Returns ``(held, broken)``: canaries that did not fail, and test cells that failed with the
    canaries around them. Both must be empty: a canary that holds flags an honest submission as
    tampered, and one that changes what its test sees costs an honest submission its points.
    """
    canaried = CanaryRun(path)
    workdir.mkdir(parents=True, exist_ok=True)
    notebook_client(canaried.nb, workdir, timeout).execute(env=kernel_env(), cwd=str(workdir))
    return canaried.findings()


class CanaryRun:
    """The instructor notebook with every canary around its test cells (``run_with_every_canary``),
    and what its execution shows."""

    def __init__(self, path: Path):
        from .grading import integrity, literals

        self.nb = nbformat.read(str(path), as_version=4)
        bind = integrity.binding_checks(self.nb)["bind"]
        recorder = "_mlbd_validate_chk"
        cells, self.where, self.tests, self.judged = [nbformat.v4.new_code_cell(
            literals.recorder_source("validate", recorder))], {}, [], {}
        for cell in self.nb.cells:
            md = cell.metadata.get("nbgrader", {})
            canaries, sites = [], []
            before = integrity.runs_twice_safely(cell.source)
            if cell.cell_type == "code" and md.get("grade") and not md.get("solution"):
                sources = integrity.reversed_copies(cell.source) + integrity.twin_copies(cell.source, random.Random(0))
                canaries = [nbformat.v4.new_code_cell(source) for source in sources]
                # the test as the kernel runs it under `mlbd grade`: its checks against a literal
                # judged by the grader (every one of them, as where the cell has no twin)
                kernel, sites = literals.rewrite(cell.source, recorder, bind, 1000 * len(self.tests))
                if sites:
                    self.judged[len(cells) + (len(canaries) if before else 0)] = sites
                    cell = nbformat.from_dict(cell)
                    cell.source = kernel
            for n, canary in enumerate(canaries if before else []):
                self.where[len(cells)] = f"{md.get('grade_id')} (canary {n + 1}, before the test)"
                cells.append(canary)
            if canaries or sites:
                self.tests.append((len(cells), md.get("grade_id")))
            cells.append(cell)
            for n, canary in enumerate([] if before else canaries):
                self.where[len(cells)] = f"{md.get('grade_id')} (canary {n + 1}, after the test)"
                cells.append(canary)
        cells.append(nbformat.v4.new_code_cell(f"print({recorder}.take(everything=True))"))
        self.nb.cells = cells

    def findings(self) -> tuple[list[str], list[str]]:
        """``(held, broken)`` of the executed notebook, as ``run_with_every_canary`` returns them
        (``broken`` includes test cells whose judged checks fail on what the solution computed)."""
        from .grading import literals

        held = [name for i, name in self.where.items() if not cell_failed(self.nb.cells[i])]
        broken = [f"{gid}: {error_text(self.nb.cells[i])}" for i, gid in self.tests if cell_failed(self.nb.cells[i])]
        text = "".join(o.get("text", "") for o in self.nb.cells[-1].get("outputs", []) if o.get("name") == "stdout")
        records = literals.parse_records(repr(text.strip()))
        for i, gid in self.tests:
            if i in self.judged and not cell_failed(self.nb.cells[i]):
                verdict = literals.judge(self.judged[i], records, True)
                if verdict.failed is not None:
                    broken.append(f"{gid}: the grader's judged check at line {verdict.failed.line} "
                                  f"({verdict.failed.literal}) {verdict.why}")
        return held, broken


# ---------------------------------------------------------------------------------------------
# Known wrong answers
# ---------------------------------------------------------------------------------------------

@dataclass
class WrongAnswer:
    solution_id: str
    must_fail: list[str]
    description: str
    code: str
    line: int


def _blocks(text: str, tag: str, origin: str) -> list[tuple[int, str, str]]:
    """Split ``%% TAG header`` blocks: (line of the header, header text after the tag, code)."""
    blocks: list[tuple[int, str, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith(f"%% {tag} "):
            blocks.append((lineno, line[len(tag) + 4:], []))
        elif not blocks:
            if line.strip() and not line.startswith("#"):
                raise ValueError(f"{origin}:{lineno}: text before the first '%% {tag}' header")
        else:
            blocks[-1][2].append(line)
    return [(n, head, "\n".join(body).strip("\n")) for n, head, body in blocks]


def parse_wrong_answers(text: str, origin: str = "<wrong answers>") -> list[WrongAnswer]:
    """Parse ``%% wrong SOLUTION_ID -> TEST_ID[,TEST_ID] : description`` blocks."""
    items: list[WrongAnswer] = []
    for lineno, head, code in _blocks(text, "wrong", origin):
        m = re.match(r"\s*(\S+)\s*->\s*([\w,\s-]+?)\s*:\s*(.+)$", head)
        if not m:
            raise ValueError(f"{origin}:{lineno}: expected '%% wrong SOLUTION_ID -> TEST_ID[,TEST_ID] : description'")
        items.append(WrongAnswer(solution_id=m.group(1), must_fail=[t.strip() for t in m.group(2).split(",") if t.strip()],
                                 description=m.group(3).strip(), code=code, line=lineno))
    return items


def run_wrong_answers(path: Path, wrong: list[WrongAnswer], workdir: Path, timeout: int = 300) -> dict[int, dict]:
    """``execute_with_answers``'s outcome per wrong answer."""
    return execute_with_answers(path, wrong, [], workdir, timeout).wrong


@dataclass
class AnswerRun:
    """One warm kernel's work on an instructor notebook: a whole scored run, then every known
    wrong answer and every known right answer tried in place of its solution cell."""
    first: Execution
    wrong: dict[int, dict]   # index in the wrong answers -> {"failed": [...], "passed": [...], "setup_error"}
    right: dict[int, dict]   # index in the right answers -> {"tests": [...], "failed": {id: error}, "setup_error"}
    canaries: tuple[list[str], list[str]] | None = None   # run_with_every_canary's (held, broken), when asked


def execute_with_answers(path: Path, wrong: list[WrongAnswer], right: list["RightAnswer"], workdir: Path,
                         timeout: int = 300, student: str | None = None, canaries: bool = False) -> AnswerRun:
    """Run the instructor notebook top to bottom, then try each known wrong and right answer in the
    same warm kernel (one execution serves the determinism, wrong-answer and right-answer checks;
    for TensorFlow notebooks that execution is most of the cost).

    The first pass is a whole execution, scored as ``execute`` scores it. Each wrong answer then
    runs in place of its solution cell, the test cells it names run, and the reference solution
    cell runs again so that the next one starts from a correct state. Each right answer goes
    through the mutation runner's replace-and-test step (``try_in_place``): the reference's names
    are unbound, the alternative runs, the later cells that use its names are recomputed, every
    test cell that uses them runs, and the reference is restored.

    With ``canaries``, the same kernel is then cleared (``start_afresh``) and runs the notebook
    with every canary (``run_with_every_canary``, in ``workdir/canaries``): ``AnswerRun.canaries``.
    """
    nb, cells = _answer_cells(path, wrong, right)
    workdir.mkdir(parents=True, exist_ok=True)
    client = notebook_client(nb, workdir, timeout)
    with client.setup_kernel(env=kernel_env(student), cwd=str(workdir)):
        run = _answers_in_kernel(client, nb, cells, wrong, right)
        if canaries:
            canaried = CanaryRun(path)
            start_afresh(client, canaried.nb, workdir / "canaries")
            _run_all(client, canaried.nb)
            run.canaries = canaried.findings()
    return run


def _answer_cells(path: Path, wrong: list[WrongAnswer], right: list["RightAnswer"]):
    """The instructor notebook and its cells by grade_id, every answer's cells checked to exist."""
    nb = nbformat.read(str(path), as_version=4)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): (i, c) for i, c in enumerate(nb.cells)}
    for w in wrong:
        for gid in [w.solution_id, *w.must_fail]:
            if gid not in cells:
                raise KeyError(f"wrong answer at line {w.line}: no cell with grade_id {gid!r} in {path.name}")
    for r in right:
        if r.solution_id not in cells:
            raise KeyError(f"right answer at line {r.line}: no cell with grade_id {r.solution_id!r} in {path.name}")
    return nb, cells


def _run_all(client: NotebookClient, nb) -> float:
    """Execute every code cell of ``nb`` in ``client``'s kernel, in order; returns the seconds."""
    start = time.perf_counter()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            client.execute_cell(cell, i)
    return time.perf_counter() - start


def _answers_in_kernel(client: NotebookClient, nb, cells: dict, wrong: list[WrongAnswer],
                       right: list["RightAnswer"]) -> AnswerRun:
    """``execute_with_answers``'s work in a kernel already started (``client``'s)."""
    from .mutants.runner import try_in_place   # the mutation runner's replace-and-test step

    reference = copy.deepcopy(nb)   # nbclient writes outputs into the notebook it runs
    wrong_results: dict[int, dict] = {}
    right_results: dict[int, dict] = {}
    seconds = _run_all(client, nb)
    first = scored(copy.deepcopy(nb), seconds)
    for n, w in enumerate(wrong):
        sol_index, sol_cell = cells[w.solution_id]
        probe = nbformat.v4.new_code_cell(w.code)
        client.execute_cell(probe, sol_index)
        outcome = {"failed": [], "passed": [], "setup_error": error_text(probe) if cell_failed(probe) else ""}
        for gid in w.must_fail:
            idx, test_cell = cells[gid]
            probe_test = nbformat.v4.new_code_cell(test_cell.source)
            client.execute_cell(probe_test, idx)
            (outcome["failed"] if cell_failed(probe_test) else outcome["passed"]).append(gid)
        wrong_results[n] = outcome
        restore = nbformat.v4.new_code_cell(sol_cell.source)
        client.execute_cell(restore, sol_index)
    for n, r in enumerate(right):
        trial = try_in_place(client, reference, cells[r.solution_id][0], r.code)
        right_results[n] = {"tests": trial.tests, "failed": trial.failed, "setup_error": trial.cell_error}
    return AnswerRun(first=first, wrong=wrong_results, right=right_results)


def restore_tests(source_nb: Path, student_nb: Path) -> None:
    """Put the instructor version's test cells (hidden parts included) back into a student
    notebook, as the autograder does, so that a blank release is judged by every test."""
    src = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nbformat.read(str(source_nb), as_version=4).cells}
    student = nbformat.read(str(student_nb), as_version=4)
    for cell in student.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in src and kind_of(cell) == "tests":
            cell.source = src[gid].source
    nbformat.write(student, str(student_nb))


def blank_notebook(source_nb: Path, release_nb: Path, workdir: Path) -> Path:
    """A copy of the released (blank) notebook in ``workdir`` with the instructor's tests put
    back (``restore_tests``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    blank = workdir / source_nb.name
    shutil.copy(release_nb, blank)
    restore_tests(source_nb, blank)
    return blank


def execute_blank(source_nb: Path, release_nb: Path, workdir: Path, timeout: int = 300,
                  student: str | None = None) -> Execution:
    """Run the released (blank) notebook with the instructor's tests put back (``restore_tests``),
    in ``workdir``, as ``student``'s variant when given."""
    return execute(blank_notebook(source_nb, release_nb, workdir), workdir, timeout, student)


# Between two notebooks in one kernel: the namespace, figures and working directory of a new
# kernel; imported modules stay loaded (what makes the second notebook cheaper).
_AFRESH = """\
get_ipython().run_line_magic("reset", "-f")
import gc, os, sys
if "matplotlib.pyplot" in sys.modules:
    sys.modules["matplotlib.pyplot"].close("all")
os.chdir({workdir!r})
del gc, os, sys
"""


def start_afresh(client: NotebookClient, nb, workdir: Path) -> None:
    """Clear a warm kernel (``_AFRESH``) for the next notebook, ``nb``, which then runs in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cell = nbformat.v4.new_code_cell(_AFRESH.format(workdir=str(workdir)))
    # nbclient stores each executed cell in its notebook at the index given: not in either notebook
    client.nb = nbformat.v4.new_notebook(cells=[cell])
    client.execute_cell(cell, 0)
    if cell_failed(cell):
        raise RuntimeError(f"could not clear the kernel: {error_text(cell)}")
    client.nb = nb


def execute_then_blank(source_nb: Path, release_nb: Path, workdir: Path, blank_workdir: Path,
                       timeout: int = 300) -> tuple[Execution, Execution]:
    """``execute(source_nb, workdir)`` then ``execute_blank(source_nb, release_nb, blank_workdir)``
    in one kernel, cleared in between (``start_afresh``): the instructor run is a new kernel's, timed
    from the kernel's start as ``execute`` times it; the blank one saves a start-up and the imports."""
    nb = nbformat.read(str(source_nb), as_version=4)
    blank_nb = nbformat.read(str(blank_notebook(source_nb, release_nb, blank_workdir)), as_version=4)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    client = notebook_client(nb, workdir, timeout)
    with client.setup_kernel(env=kernel_env(), cwd=str(workdir)):
        _run_all(client, nb)
        instructor = scored(nb, time.perf_counter() - start)
        start_afresh(client, blank_nb, blank_workdir)
        seconds = _run_all(client, blank_nb)
    return instructor, scored(blank_nb, seconds)


def prove_variants(source_nb: Path, release_nb: Path, wrong: list[WrongAnswer], workdir: Path,
                   students: tuple[str, ...] = VARIANT_IDS, timeout: int = 300) -> list[str]:
    """For each student's variant: the solution keeps full marks, every known wrong answer loses
    marks, and the blank release scores zero. Returns what does not hold.

    One kernel per student (their variant key in its environment, never shared with another
    student): the blank release runs first, in the new kernel; then the kernel is cleared
    (``start_afresh``) and the solution and the wrong answers run as ``execute_with_answers``
    runs them.
    """
    reference, cells = _answer_cells(source_nb, wrong, [])
    problems = []
    for student in students:
        blank_nb = nbformat.read(str(blank_notebook(source_nb, release_nb, workdir / student / "blank")), as_version=4)
        nb = copy.deepcopy(reference)
        client = notebook_client(blank_nb, workdir / student / "blank", timeout)
        with client.setup_kernel(env=kernel_env(student), cwd=str(workdir / student / "blank")):
            seconds = _run_all(client, blank_nb)
            blank = scored(blank_nb, seconds)
            start_afresh(client, nb, workdir / student / "solution")
            run = _answers_in_kernel(client, nb, cells, wrong, [])
        if run.first.score != run.first.max_score:
            problems.append(f"{student}: the solution loses marks: {run.first.errors}")
        problems += [f"{student}: wrong answer at line {w.line} ({w.description}) keeps {run.wrong[n]['passed']}"
                     for n, w in enumerate(wrong) if run.wrong[n]["passed"]]
        vacuous = [gid for gid, pts in blank.scores.items() if pts > 0]
        if vacuous:
            problems.append(f"{student}: tests that pass on the blank release: {vacuous}")
    return problems


# ---------------------------------------------------------------------------------------------
# Known right answers: correct solutions in another style must keep full marks
# ---------------------------------------------------------------------------------------------

@dataclass
class RightAnswer:
    solution_id: str
    description: str
    code: str
    line: int


def parse_right_answers(text: str, origin: str = "<right answers>") -> list[RightAnswer]:
    """Parse ``%% right SOLUTION_ID : what style it is`` blocks."""
    items: list[RightAnswer] = []
    for lineno, head, code in _blocks(text, "right", origin):
        m = re.match(r"\s*(\S+)\s*:\s*(.+)$", head)
        if not m:
            raise ValueError(f"{origin}:{lineno}: expected '%% right SOLUTION_ID : description'")
        items.append(RightAnswer(solution_id=m.group(1), description=m.group(2).strip(), code=code, line=lineno))
    return items


def run_right_answers(path: Path, right: list[RightAnswer], workdir: Path, timeout: int = 300) -> dict[int, dict]:
    """``execute_with_answers``'s outcome per right answer."""
    return execute_with_answers(path, [], right, workdir, timeout).right


# ---------------------------------------------------------------------------------------------
# Static checks on released notebooks
# ---------------------------------------------------------------------------------------------

def _distinctive_lines(region: str, elsewhere: str) -> list[str]:
    """Lines of a secret region worth searching for: long enough and not also public text."""
    lines = []
    for line in region.splitlines():
        s = line.strip()
        if len(s) >= 12 and not s.startswith("#") and s not in elsewhere:
            lines.append(s)
    return lines


def leaks(source_path: Path, release_path: Path) -> list[str]:
    """Everything secret in the instructor notebook that can be found in the student version."""
    src = nbformat.read(str(source_path), as_version=4)
    rel_text = "\n".join(c.source for c in nbformat.read(str(release_path), as_version=4).cells)
    secret_regions, public = [], []
    for cell in src.cells:
        regions = SOLUTION_RE.findall(cell.source) + HIDDEN_RE.findall(cell.source) + MARK_SCHEME_RE.findall(cell.source)
        secret_regions.extend(regions)
        public.append(MARK_SCHEME_RE.sub("", HIDDEN_RE.sub("", SOLUTION_RE.sub("", cell.source))))
    public_text = "\n".join(public)
    found = [f"marker {m!r} left in the release" for m in MARKERS if m in rel_text]
    for region in secret_regions:
        for line in _distinctive_lines(region, public_text):
            if line in rel_text:
                found.append(f"secret line in the release: {line[:80]!r}")
    return found


def network_uses(path: Path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    hits = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for pat in NETWORK_PATTERNS:
            for m in re.finditer(pat, cell.source):
                hits.append(f"cell {i}: {m.group(0)!r}")
    return hits


def points_summary(path: Path) -> dict[str, float]:
    nb = nbformat.read(str(path), as_version=4)
    totals = {"auto": 0.0, "manual": 0.0}
    for info in graded_cells(nb).values():
        totals["auto" if info["kind"] == "tests" else "manual"] += info["points"]
    totals["total"] = totals["auto"] + totals["manual"]
    return totals
