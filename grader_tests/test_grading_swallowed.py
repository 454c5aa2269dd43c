"""Lecture 2 graded by real `mlbd grade` with the canaries' and probes' verdicts left out
(``CheckIntegrity`` not in ``c.AssessSubmission.preprocessors``) and every submission carrying a
hook that swallows the failure of every statement of every cell with an ``assert`` (each statement
wrapped in its own ``try``, so that every later check still runs): what is left to stop a wrong
answer is what the grader judges itself (``mlbd.grading.literals`` and ``references``).

The hook is transparent to code that passes: the solution under it keeps every point. The blank
release under it scores 0, and every known wrong answer of ``grader_tests/wrong_answers/lecture02.txt``
loses at least one of its must-fail cells on a check the grader judged (``metadata.mlbd.judged``).
With lecture 2's notebook as it was before stop 25 (commit f670045), 3 of the 25 wrong answers
keep every mark under this hook (lines 228, 244 and 255 of the wrong answers: references the test
handed to the student's function); with the grader of that commit as well (no pandas values, no
`_check_frame` judged), 10 did, under a first version of the hook."""
from __future__ import annotations


import nbformat
import pytest

from mlbd import validate
from mlbd.demo import scratch_course

from conftest import ROOT, WRONG_DIR, grade_submissions, release_path, source_notebooks, submission

pytestmark = pytest.mark.xdist_group("grading-swallowed")

ASSIGNMENT = "lecture02"

# Wraps each statement of a cell that has an assert (except inside a `try` body, whose handlers
# must still see what it raises) in `try: … except BaseException: pass`, through a class-level
# patch of IPython's run_cell_async, with names no notebook uses.
SWALLOW_EVERY_STATEMENT = r'''
import ast as _sw_ast
_sw_shell = type(get_ipython())
_sw_name = "run_" + "cell_" + "async"
_sw_orig = getattr(_sw_shell, _sw_name)
class _SwWrap(_sw_ast.NodeTransformer):
    def generic_visit(self, node):
        super().generic_visit(node)
        for f in ("body", "orelse", "finalbody"):
            st = None if isinstance(node, _sw_ast.Try) and f == "body" else getattr(node, f, None)
            if isinstance(st, list) and st and isinstance(st[0], _sw_ast.stmt):
                setattr(node, f, [s if isinstance(s, (_sw_ast.Global, _sw_ast.Nonlocal, _sw_ast.ImportFrom)) else
                                  _sw_ast.Try(body=[s], handlers=[_sw_ast.ExceptHandler(
                                      type=_sw_ast.Name("BaseException", _sw_ast.Load()), name=None, body=[_sw_ast.Pass()])],
                                      orelse=[], finalbody=[]) for s in st])
        return node
async def _sw_run(self, raw_cell, *a, **k):
    if "assert" in raw_cell:
        try:
            raw_cell = _sw_ast.unparse(_sw_ast.fix_missing_locations(_SwWrap().visit(_sw_ast.parse(raw_cell))))
        except SyntaxError:
            pass
        if k.get("transformed_cell") is not None:
            k["transformed_cell"] = raw_cell
    return await _sw_orig(self, raw_cell, *a, **k)
setattr(_sw_shell, _sw_name, _sw_run)
'''

JUDGE_ONLY = ("\nc.AssessSubmission.preprocessors = ['mlbd.grading.assess.FailUnrun', "
              "'mlbd.grading.assess.JudgeChecks', 'mlbd.grading.assess.ReportLimits']\n")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("swallowed")
    course = root / "course"
    env = scratch_course(ROOT, ASSIGNMENT, course, root / "exchange")
    with open(course / "nbgrader_config.py", "a") as f:
        f.write(JUDGE_ONLY)
    (source,) = source_notebooks(ASSIGNMENT)
    wrong = validate.parse_wrong_answers((WRONG_DIR / f"{ASSIGNMENT}.txt").read_text())
    hook = SWALLOW_EVERY_STATEMENT
    subs = {"solution": submission(source, hook=hook), "blank": submission(release_path(source), hook=hook)}
    subs.update({f"wrong{n:02d}": submission(source, a.solution_id, a.code, hook) for n, a in enumerate(wrong)})
    results = grade_submissions(course, ASSIGNMENT, env, subs, source.name)
    judged = {}
    for s in subs:
        nb = nbformat.read(str(course / "autograded" / s / ASSIGNMENT / source.name), as_version=4)
        judged[s] = {c.metadata["nbgrader"]["grade_id"] for c in nb.cells
                     if c.metadata.get("mlbd", {}).get("judged") and c.metadata.get("nbgrader", {}).get("grade_id")}
    return results, judged, wrong, validate.points_summary(source)["auto"], source.stem


def test_the_hook_lets_passing_code_pass(graded):
    results, _, _, auto, _ = graded
    assert results["solution"]["score"] == auto, results["solution"]["cells"]


def test_a_hooked_blank_gains_nothing(graded):
    results, *_ = graded
    assert results["blank"]["score"] == 0, results["blank"]["cells"]


def test_every_wrong_answer_loses_a_cell_on_a_check_the_grader_judged(graded):
    results, judged, wrong, _, stem = graded
    kept = []
    for n, a in enumerate(wrong):
        cells = results[f"wrong{n:02d}"]["cells"]
        lost = [g for g in a.must_fail if cells.get(f"{stem}/{g}") == 0 and g in judged[f"wrong{n:02d}"]]
        if not lost:
            kept.append(f"line {a.line} ({a.description}): {[cells.get(f'{stem}/{g}') for g in a.must_fail]}")
    assert not kept, "wrong answers the judged checks do not stop:\n" + "\n".join(kept)
