"""The otter-grader path: every assignment converts, and otter grades like nbgrader does."""
from __future__ import annotations

import os

import nbformat
import pytest

from mlbd import otter, validate
from mlbd.authoring import kind_of

from conftest import ROOT, WRONG_DIR, _cached, source_notebooks, uses_tensorflow


@pytest.fixture
def otter_build(assignment, _cache, scratch):
    return _cached(_cache, ("otter", assignment), lambda: otter.convert(ROOT, assignment, scratch / assignment / "otter"))


def _per_question(source_nb, value=lambda gid, points: points):
    """Sum ``value(test grade_id, test points)`` over the test cells after each solution cell:
    nbgrader's score for that exercise, the unit otter calls a question."""
    nb = nbformat.read(str(source_nb), as_version=4)
    totals, current = {}, None
    for cell in nb.cells:
        kind = kind_of(cell)
        if kind == "solution":
            current = cell.metadata["nbgrader"]["grade_id"]
            totals.setdefault(current, 0.0)
        elif kind == "tests":
            md = cell.metadata["nbgrader"]
            totals[current] += value(md["grade_id"], float(md["points"]))
    return totals


def _auto_points_per_question(source_nb):
    return _per_question(source_nb)


def _nbgrader_scores_per_question(source_nb, run):
    return _per_question(source_nb, lambda gid, points: run.scores[gid])


# `otter run` executes whole notebooks. Every assignment is converted and checked for leaks; the
# runs (solution, blank, wrong answers) cover every non-TensorFlow assignment and one TensorFlow one
# in CI, where the TensorFlow six would cost about as much as the rest of the suite. MLBD_OTTER=all
# runs them all (before a release of the otter route).
OTTER_TF_SAMPLE = "lecture11"


@pytest.fixture
def runs_under_otter(assignment):
    """Skips (before the conversion is built) what CI does not run under otter."""
    if uses_tensorflow(assignment) and assignment != OTTER_TF_SAMPLE and os.environ.get("MLBD_OTTER") != "all":
        pytest.skip(f"TensorFlow assignment run under otter only with MLBD_OTTER=all (CI runs {OTTER_TF_SAMPLE})")


def _first_wrong_answers(assignment, src):
    """The first known wrong answer of every exercise of ``src``, by solution grade_id."""
    wrong = validate.parse_wrong_answers((WRONG_DIR / f"{assignment}.txt").read_text())
    ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nbformat.read(str(src), as_version=4).cells}
    chosen = {}
    for w in wrong:
        if w.solution_id in ids and w.solution_id not in chosen:
            chosen[w.solution_id] = w
    return chosen


def _otter_wrong_submission(src, solution, chosen, path):
    """The otter solution notebook with the ``chosen`` wrong answers in place of the solutions,
    written to ``path``; returns the exercises it could not find."""
    ids = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nbformat.read(str(src), as_version=4).cells}
    sub = nbformat.read(str(solution), as_version=4)
    missing = []
    for gid, w in chosen.items():
        key = next(line.strip() for line in ids[gid].source.splitlines()
                   if line.strip() and "SOLUTION" not in line)
        matches = [c for c in sub.cells if c.cell_type == "code" and key in c.source]
        if matches:
            matches[0].source = w.code
        else:
            missing.append(gid)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(sub, str(path))
    return missing


@pytest.fixture
def otter_runs(runs_under_otter, assignment, otter_build, _cache, scratch):
    """Per notebook, otter's scores for the solution, the blank student notebook and a submission
    carrying the first known wrong answer of every exercise ("wrong", with "missing": the exercises
    not found in the otter notebook): all of an assignment's submissions graded by one process
    (``otter.otter_run_many``: otter's start-up costs seconds), once per worker."""
    def make():
        jobs, keys, out = [], [], {}
        for src in source_notebooks(assignment):
            built, work = otter_build[src.name], scratch / assignment / "otter-run" / src.stem
            out[src] = {}
            subs = {"solution": built["solution"], "blank": built["student"]}
            chosen = _first_wrong_answers(assignment, src)
            if chosen:
                out[src]["missing"] = _otter_wrong_submission(src, built["solution"], chosen, work / "wrong" / "otter.ipynb")
                subs["wrong"] = work / "wrong" / "otter.ipynb"
            for name, sub in subs.items():
                jobs.append((built["autograder_zip"], sub, work / name / "run"))
                keys.append((src, name))
        for (src, name), scores in zip(keys, otter.otter_run_many(jobs)):
            out[src][name] = scores
        return out
    return _cached(_cache, ("otter-runs", assignment), make)


def test_otter_solution_full_marks_and_blank_zero(runs_under_otter, assignment, otter_runs):
    for src in source_notebooks(assignment):
        expected = _auto_points_per_question(src)
        solution, blank = otter_runs[src]["solution"], otter_runs[src]["blank"]
        got = {q: s for q, s in solution.items() if q in expected}
        assert got == {q: (p, p) for q, p in expected.items()}, f"solution under otter: {solution}"
        assert {q: s[0] for q, s in blank.items() if q in expected} == {q: 0.0 for q in expected}


def test_otter_student_version_leaks_nothing(assignment, otter_build):
    for src in source_notebooks(assignment):
        student = otter_build[src.name]["student"]
        found = validate.leaks(src, student)
        assert not found, "\n".join(found)


def test_otter_matches_nbgrader_on_known_wrong_answers(runs_under_otter, assignment, otter_runs, scratch):
    """One submission per notebook carrying the first known wrong answer of every exercise:
    otter and nbgrader's all-or-nothing test cells give the same per-question scores."""
    for src in source_notebooks(assignment):
        chosen = _first_wrong_answers(assignment, src)
        if not chosen:
            continue
        assert not otter_runs[src]["missing"], f"cannot find exercises {otter_runs[src]['missing']} in the otter notebook"
        # nbgrader side: the instructor notebook with the wrong answers in place of the solutions
        nb = nbformat.read(str(src), as_version=4)
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in chosen:
                cell.source = chosen[gid].code
        work = scratch / assignment / "otter-wrong" / src.stem
        work.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(work / "nbgrader.ipynb"))
        run = validate.execute(work / "nbgrader.ipynb", work / "nbgrader-run")
        nbgrader_scores = _nbgrader_scores_per_question(src, run)
        # otter side: the otter solution notebook with the same wrong answers (graded in otter_runs)
        got = {q: otter_runs[src]["wrong"][q][0] for q in nbgrader_scores}
        assert got == nbgrader_scores
        assert sum(got.values()) < sum(_auto_points_per_question(src).values()), "the wrong answers must lose points"


# otter's route is for trusted use only (README, "Grading on Gradescope with otter"): `otter run`
# executes the submission as the invoking user, unsandboxed, and its tests run with `exec` in the
# student's own namespace. These tests pin down what it therefore does not protect, so that the
# README stays exact: when one of them fails, otter started protecting it and the README must change.
TRUSTED_ONLY = "lecture01"

# exec becomes a no-op for otter's test code only (compiled under the test's name), so otter runs
_NO_EXEC = """
import builtins, types
_exec = builtins.exec
def _quiet(code, *a, **k):
    name = getattr(code, "co_filename", "<")
    if isinstance(code, types.CodeType) and not name.startswith(("<", "/")) and not name.endswith(".py"):
        return None
    return _exec(code, *a, **k)
builtins.exec = _quiet
"""


@pytest.mark.slow
def test_otter_route_does_not_protect_against_a_patched_exec(_cache, scratch):
    built = _cached(_cache, ("otter", TRUSTED_ONLY), lambda: otter.convert(ROOT, TRUSTED_ONLY, scratch / TRUSTED_ONLY / "otter"))
    for src in source_notebooks(TRUSTED_ONLY):
        expected = _auto_points_per_question(src)
        nb = nbformat.read(str(built[src.name]["student"]), as_version=4)
        first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        nb.cells.insert(first_code, nbformat.v4.new_code_cell(_NO_EXEC))
        work = scratch / TRUSTED_ONLY / "otter-untrusted" / src.stem
        work.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(work / src.name))
        got = otter.otter_run(built[src.name]["autograder_zip"], work / src.name, work / "run")
        # blank answers, full marks: documented, not protected
        assert {q: s for q, s in got.items() if q in expected} == {q: (p, p) for q, p in expected.items()}, got


@pytest.mark.unit
def test_hidden_only_test_cells_get_no_public_case():
    """A hidden-tests cell shows students only its label comment: otter must not turn that comment
    into a 0-point public check that always passes."""
    nb_path = source_notebooks("coursework1")[0]
    master = otter.master_notebook(nb_path, "coursework1", "", [])
    hidden_only = [c.metadata["nbgrader"]["grade_id"] for c in nbformat.read(str(nb_path), as_version=4).cells
                   if kind_of(c) == "tests" and not any(
                       ln.strip() and not ln.lstrip().startswith("#")
                       for ln in c.source.split("### BEGIN HIDDEN TESTS")[0].splitlines())]
    assert hidden_only, "coursework 1 has hidden-only test cells"
    text = "\n".join(c.source for c in master.cells)
    for gid in hidden_only:
        assert f"{gid}_public" not in text, f"{gid}: a public otter case made of a comment"
        assert f'"name": "{gid}"' in text or f"name: {gid}" in text or gid in text
