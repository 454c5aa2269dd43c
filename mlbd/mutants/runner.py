"""Run mutants of an assignment's solution cells against its tests, in warm kernels, in parallel.

Each worker process starts one kernel per notebook and runs the instructor notebook once (set-up,
reference solutions, tests). For each mutant it then runs the mutated solution cell, the later
solution cells that use its names (so values computed from it are recomputed), and the test cells
that use any of those names; a mutant is *killed* when one of those tests fails (an assertion, an
error, or the per-cell timeout), and *survives* when all pass. The reference cells are run again
afterwards, so the next mutant starts from a correct state. This is the course maintainer's tool:
the notebooks are trusted instructor material, so kernels are not sandboxed.
"""
from __future__ import annotations

import ast
import copy
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from ..authoring import kind_of
from .. import validate
from .operators import Mutant, mutants_of


@dataclass
class MutantResult:
    mutant: Mutant
    notebook: str
    killed_by: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def killed(self) -> bool:
        return bool(self.killed_by)

    def as_dict(self) -> dict:
        return {"key": self.mutant.key, "notebook": self.notebook, "killed": self.killed,
                "killed_by": self.killed_by, "seconds": round(self.seconds, 3),
                **{k: v for k, v in asdict(self.mutant).items() if k != "source"}}


def defined_names(source: str) -> set[str]:
    """Top-level names a cell binds (functions, classes, assignment targets, imports)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def used_names(source: str) -> set[str]:
    """Names a cell reads, including those it looks up by string (``globals()["Q1"]``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
        {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isidentifier()}


@dataclass
class Plan:
    """For one solution cell: the later solution cells to recompute and the tests to run."""
    solution_index: int
    dependents: list[int]
    tests: list[int]


def plan_for(nb, solution_index: int) -> Plan:
    names = defined_names(nb.cells[solution_index].source)
    dependents, tests = [], []
    for i in range(solution_index + 1, len(nb.cells)):
        cell = nb.cells[i]
        if cell.cell_type != "code":
            continue
        kind = kind_of(cell)
        if not used_names(cell.source) & names:
            continue
        if kind == "tests":
            tests.append(i)
        elif kind in {"solution", "code"}:
            dependents.append(i)
            names |= defined_names(cell.source)
    return Plan(solution_index, dependents, tests)


def notebook_mutants(path: Path, function: str | None = None) -> list[Mutant]:
    nb = nbformat.read(str(path), as_version=4)
    out: list[Mutant] = []
    for cell in nb.cells:
        if kind_of(cell) != "solution":
            continue
        gid = cell.metadata["nbgrader"]["grade_id"]
        for m in mutants_of(gid, cell.source):
            if function and function not in (gid, *defined_names(cell.source)):
                continue
            out.append(m)
    return out


def sample(mutants: list[Mutant], size: int | None, seed: int = 0) -> list[Mutant]:
    """A fixed sample: the same mutants for the same notebook text, seed and size."""
    ordered = sorted(mutants, key=lambda m: m.key)
    if size is None or size >= len(ordered):
        return ordered
    return sorted(random.Random(seed).sample(ordered, size), key=lambda m: m.key)


@dataclass
class Trial:
    """What happened when other code stood in for a solution cell."""
    tests: list[str]                                       # grade ids of the tests that ran
    cell_error: str = ""                                   # the replacement itself raised
    failed: dict[str, str] = field(default_factory=dict)   # grade id -> error of each failed test


def try_in_place(client, nb, solution_index: int, code: str) -> Trial:
    """Run ``code`` in place of a solution cell in a kernel that has run the notebook, then the
    later cells that use its names and the tests that use any of them; restore the reference.

    The reference run bound the cell's names: they are unbound first, or code that leaves out
    an assignment would still see the reference value.
    """
    plan = plan_for(nb, solution_index)
    gid = lambda i: nb.cells[i].metadata["nbgrader"]["grade_id"]  # noqa: E731
    trial = Trial(tests=[gid(i) for i in plan.tests])
    names = sorted(defined_names(nb.cells[solution_index].source))
    client.execute_cell(nbformat.v4.new_code_cell(
        f"for _mlbd_name in {names!r}:\n    globals().pop(_mlbd_name, None)"), solution_index)
    replacement = nbformat.v4.new_code_cell(code)
    client.execute_cell(replacement, solution_index)
    if validate.cell_failed(replacement):
        trial.cell_error = validate.error_text(replacement)
    for i in plan.dependents:
        client.execute_cell(nbformat.v4.new_code_cell(nb.cells[i].source), i)
    for i in plan.tests:
        probe = nbformat.v4.new_code_cell(nb.cells[i].source)
        client.execute_cell(probe, i)
        if validate.cell_failed(probe):
            trial.failed[gid(i)] = validate.error_text(probe)
    for i in [solution_index, *plan.dependents]:
        client.execute_cell(nbformat.v4.new_code_cell(nb.cells[i].source), i)
    return trial


def _run_chunk(path: str, mutants: list[Mutant], workdir: str, timeout: int) -> list[MutantResult]:
    nb = nbformat.read(path, as_version=4)
    index = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(nb.cells)}
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    # nbclient stores each executed cell back into the notebook it runs: give it a copy.
    client = validate.notebook_client(copy.deepcopy(nb), work, timeout)
    client.interrupt_on_timeout = True   # an infinite loop is a failure of that cell, not of the run
    results: list[MutantResult] = []
    with client.setup_kernel(env=validate.kernel_env(), cwd=str(work)):
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(copy.deepcopy(cell), i)
        for m in mutants:
            start = time.perf_counter()
            trial = try_in_place(client, nb, index[m.solution_id], m.source)
            result = MutantResult(m, Path(path).name, seconds=0.0)
            if trial.cell_error:
                result.killed_by.append(f"{m.solution_id} (the mutated cell raised)")
            result.killed_by.extend(trial.failed)
            result.seconds = time.perf_counter() - start
            results.append(result)
    return results


def run(notebooks: dict[Path, list[Mutant]], workdir: Path, jobs: int = 2, timeout: int = 60,
        progress=None) -> list[MutantResult]:
    """Run every notebook's mutants, split into ``jobs`` chunks per notebook, one warm kernel each."""
    tasks = []
    for path, mutants in notebooks.items():
        if not mutants:
            continue
        n = max(1, min(jobs, len(mutants)))
        for k in range(n):
            chunk = mutants[k::n]
            tasks.append((str(path), chunk, str(workdir / f"{path.stem}-{k}"), timeout))
    results: list[MutantResult] = []
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run_chunk, *t) for t in tasks]
        for f in futures:
            chunk = f.result()
            results.extend(chunk)
            if progress:
                progress(len(results))
    return sorted(results, key=lambda r: r.mutant.key)
