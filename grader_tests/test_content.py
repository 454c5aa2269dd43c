"""Every assignment in source/: solutions pass, blanks fail, known wrong answers lose marks,
releases leak nothing, no network, deterministic, within budget."""
from __future__ import annotations

import json
import re

import nbformat
import pytest

from mlbd import validate
from mlbd.course import notebook_meta

from conftest import WRONG_DIR, release_path, source_notebooks


def test_assignment_has_notebooks_and_release(assignment):
    nbs = source_notebooks(assignment)
    assert nbs, f"source/{assignment} has no notebook"
    for nb in nbs:
        assert release_path(nb).exists(), f"release/{assignment}/{nb.name} missing: run `mlbd build {assignment}`"


def test_points_match_declared_total(assignment):
    for nb in source_notebooks(assignment):
        meta = notebook_meta(nb)
        totals = validate.points_summary(nb)
        assert "points" in meta, f"{nb.name}: declare the curriculum's total as notebook metadata 'points'"
        assert totals["total"] == pytest.approx(meta["points"]), f"{nb.name}: cells carry {totals} points, curriculum says {meta['points']}"
        assert totals["manual"] <= 0.25 * totals["total"], f"{nb.name}: too many manual points {totals}"


def test_solution_passes_every_test(assignment, instructor_runs):
    for run in instructor_runs:
        assert run.max_scores, "no autograded test cells"
        assert run.errors == {}, f"instructor solution fails: {json.dumps(run.errors, indent=1)}"
        assert run.score == run.max_score


def test_blank_release_scores_zero(assignment, blank_runs):
    for run in blank_runs:
        passing = [gid for gid, s in run.scores.items() if s > 0]
        assert not passing, f"these tests pass on the blank notebook (vacuous): {passing}"


def test_known_wrong_answers_lose_marks(assignment, scratch):
    path = WRONG_DIR / f"{assignment}.txt"
    assert path.exists(), f"no wrong answers recorded for {assignment} in {path}"
    wrong = validate.parse_wrong_answers(path.read_text(), str(path))
    nbs = source_notebooks(assignment)
    by_solution = {}
    for nb in nbs:
        ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nbformat.read(str(nb), as_version=4).cells}
        for w in wrong:
            if w.solution_id in ids:
                by_solution.setdefault(nb, []).append(w)
    orphans = [w.solution_id for w in wrong if not any(w in ws for ws in by_solution.values())]
    assert not orphans, f"wrong answers name unknown solution cells: {orphans}"
    solution_ids = {c.metadata["nbgrader"]["grade_id"] for nb in nbs for c in nbformat.read(str(nb), as_version=4).cells
                    if validate.kind_of(c) == "solution"}
    uncovered = solution_ids - {w.solution_id for w in wrong}
    assert not uncovered, f"every solution cell needs at least one known wrong answer; missing: {sorted(uncovered)}"
    problems = []
    for nb, ws in by_solution.items():
        results = validate.run_wrong_answers(nb, ws, scratch / assignment / "wrong" / nb.stem)
        for n, w in enumerate(ws):
            r = results[n]
            if r["passed"]:
                problems.append(f"line {w.line} ({w.description}): still passes {r['passed']}")
    assert not problems, "known wrong answers that keep their marks:\n" + "\n".join(problems)


def test_release_leaks_nothing(assignment):
    for nb in source_notebooks(assignment):
        found = validate.leaks(nb, release_path(nb))
        assert not found, "\n".join(found)


def test_no_network_or_downloader(assignment):
    for nb in source_notebooks(assignment):
        for path in (nb, release_path(nb)):
            assert validate.network_uses(path) == [], f"{path}: {validate.network_uses(path)}"


def test_graded_twice_same_score(assignment, instructor_runs, scratch):
    for nb, first in zip(source_notebooks(assignment), instructor_runs):
        second = validate.execute(nb, scratch / assignment / "again" / nb.stem)
        assert second.scores == first.scores
        # stdout only (stderr carries library logs with timestamps), object addresses masked; a cell's
        # stdout is joined because how the kernel splits it into stream messages depends on timing
        outputs = lambda run: [re.sub(r"0x[0-9a-f]+", "0x?", "".join(  # noqa: E731
                                   o.get("text", "") for o in c.get("outputs", []) if o.get("name") == "stdout"))
                               for c in run.nb.cells if validate.kind_of(c) == "tests"]
        assert outputs(second) == outputs(first), "test-cell stdout differs between two runs: something is unseeded"


def test_within_budget(assignment, instructor_runs):
    for nb, run in zip(source_notebooks(assignment), instructor_runs):
        budget = notebook_meta(nb).get("budget_s", 60)
        # A generous guard against gross regressions; exact timings come from `mlbd bench content`.
        assert run.seconds < max(3 * budget, budget + 60), f"{nb.name} took {run.seconds:.1f} s, budget {budget} s"
