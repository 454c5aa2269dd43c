"""Synthetic cohorts for `mlbd bench analytics`: graded submissions with known properties, fast.

``make(course, assignment, n)`` fills a generated scratch course (its gradebook, ``mlbd grade``'s
run records and ``submitted/``) with ``n`` submissions of ``assignment`` without running them:

- points per test cell from a one-parameter logistic model (ability ~ N(0, 1), a difficulty per
  cell); a ``*_hidden`` cell is only passed together with its ``*_visible`` cell, manual answers get
  partial marks; 2% of submissions carry an integrity flag, 3% a time-limit note; execution times
  are log-normal around 20 s;
- solution cells: the instructor's solution (from ``source/``; the same for everyone, so the
  similarity check must discount it as common code) plus code of the student's own (random helper
  functions: structure, operators and constants drawn per student), and one planted copy per 25
  students: another student's cells with the functions reordered and comments added.

Returns the planted pairs so the benchmark can check they rank first.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

OPS = ["+", "-", "*", "/", "%", "//"]


def _own_code(rng: random.Random) -> str:
    """A small function of the student's own making (differs in structure and constants)."""
    name = f"_helper_{rng.randrange(10**6)}"
    a, b, c = (rng.randint(2, 99) for _ in range(3))
    op1, op2 = rng.choice(OPS), rng.choice(OPS)
    bodies = [
        f"    total = x {op1} {a}\n    for i in range({b}):\n        total = total {op2} (i % {c} + 1)\n    return total",
        f"    vals = [v {op1} {a} for v in range({b}) if v % {c} == {a % c}]\n    return sum(vals) {op2} len(vals or [1])",
        f"    while x > {a}:\n        x = x {op2} {c}\n        if x % {b} == 0:\n            break\n    return x {op1} {b}",
        f"    try:\n        out = {{k: k {op1} x for k in range({a})}}\n    except ZeroDivisionError:\n        out = {{}}\n"
        f"    return len(out) {op2} {b} + {c}",
        f"    acc = []\n    for k in range({a} % 17 + 2):\n        acc.append((x {op1} k) if k % 2 else (k {op2} {b}))\n"
        f"    return max(acc) if acc else {c}",
    ]
    return f"def {name}(x):\n{rng.choice(bodies)}\n"


def _copy_of(code: str, rng: random.Random) -> str:
    """A disguised copy: functions reordered, comments and blank lines added."""
    blocks = code.split("\ndef ")
    head, funcs = blocks[0], ["def " + f for f in blocks[1:]]
    rng.shuffle(funcs)
    lines = []
    for line in "\n\n".join([head, *funcs]).splitlines():
        lines.append(line)
        if line.strip().startswith(("def ", "for ", "return ")) and rng.random() < 0.5:
            lines.append(" " * (len(line) - len(line.lstrip()) + 4 * line.strip().startswith(("def ", "for ")))
                         + f"# step {rng.randrange(100)}")
    return "\n".join(lines)


def _cells(nb_json: dict) -> list[dict]:
    return nb_json["cells"]


def _solutions(path: Path) -> dict[str, str]:
    nb = json.loads(path.read_text())
    return {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"]) for c in _cells(nb)
            if c["cell_type"] == "code" and c.get("metadata", {}).get("nbgrader", {}).get("solution")}


def make(course: Path, assignment: str, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Fill ``course`` (generated, with an empty gradebook) with ``n`` synthetic submissions."""
    from nbgrader.api import Grade, Gradebook, Student, SubmittedAssignment, SubmittedNotebook, new_uuid

    from .grading import score as scoring
    from .grading.pipeline import course_directory, load_config

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    cd = course_directory(course, load_config(course))
    students = [f"s{i:04d}" for i in range(n)]
    theta = nrng.normal(size=n)
    with Gradebook(cd.db_url, cd.course_id) as gb:
        a = gb.find_assignment(assignment)
        # visible parts first, so that a hidden part can depend on its visible part
        cells = sorted(((nb, c) for nb in a.notebooks for c in [*nb.grade_cells, *nb.task_cells]),
                       key=lambda nc: nc[1].name.endswith("_hidden"))
        difficulty = nrng.normal(0, 1, len(cells))
        rows: list = []
        for i, s in enumerate(students):       # plain inserts: nbgrader's add_submission takes ~1 s each
            rows.append(Student(id=s))
            sa = SubmittedAssignment(id=new_uuid(), assignment_id=a.id, student_id=s)
            rows.append(sa)
            snbs = {nb.id: SubmittedNotebook(id=new_uuid(), assignment_id=sa.id, notebook_id=nb.id) for nb in a.notebooks}
            rows += snbs.values()
            passed = {}
            for (nb, cell), b in zip(cells, difficulty):
                p = 1 / (1 + np.exp(-1.7 * (theta[i] - b)))
                ok = bool(nrng.random() < p)
                if cell.name.endswith("_hidden"):
                    ok = ok and passed.get(cell.name[: -len("_hidden")] + "_visible", True)
                passed[cell.name] = ok
                g = Grade(id=new_uuid(), notebook_id=snbs[nb.id].id, cell_id=cell.id, needs_manual_grade=False)
                if cell.cell_type == "markdown":
                    g.manual_score = float(np.round(cell.max_score * min(1.0, max(0.0, p + nrng.normal(0, 0.2))) * 2) / 2)
                else:
                    g.auto_score = float(cell.max_score) if ok else 0.0
                rows.append(g)
        gb.db.add_all(rows)
        gb.db.commit()
    results = Path(course) / scoring.RESULTS / assignment
    results.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(students):
        record = {"student": s, "assignment": assignment, "flags": [], "errors": [], "tests": {},
                  "execute_seconds": float(nrng.lognormal(np.log(20), 0.3))}
        if rng.random() < 0.02:
            record["flags"].append(f"{assignment}: a canary test passed: failures are swallowed or rewritten")
        if rng.random() < 0.03:
            record["errors"].append(f"{assignment}: cell test_ridge_cv_hidden: the cell ran longer than 60 s and was interrupted")
        (results / f"{s}.json").write_text(json.dumps(record))
    release = Path(course) / "release" / assignment
    planted, victims = [], set()
    sources = {p.stem: _solutions(Path(course) / "source" / assignment / p.name) for p in release.glob("*.ipynb")}
    code: dict[str, dict[str, dict[str, str]]] = {}
    for i, s in enumerate(students):
        if i % 25 == 24:                 # a disguised copy of an earlier student who wrote their own
            victim = rng.choice([v for j, v in enumerate(students[:i]) if j % 25 != 24 and v not in victims])
            victims.add(victim)          # each copied once, so every copy pair is a planted pair
            planted.append((victim, s))
            code[s] = {nb: {gid: _copy_of(src, rng) for gid, src in cells.items()} for nb, cells in code[victim].items()}
        else:
            code[s] = {nb: {gid: src + "\n\n" + _own_code(rng) for gid, src in sols.items()}
                       for nb, sols in sources.items()}
    for path in release.glob("*.ipynb"):
        template = json.loads(path.read_text())
        for s in students:
            nb = json.loads(json.dumps(template))
            for cell in _cells(nb):
                gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                if gid in code[s][path.stem]:
                    cell["source"] = code[s][path.stem][gid]
            folder = Path(course) / "submitted" / s / assignment
            folder.mkdir(parents=True, exist_ok=True)
            (folder / path.name).write_text(json.dumps(nb))
    return planted
