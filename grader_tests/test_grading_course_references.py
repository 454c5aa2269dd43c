"""A real course assignment graded by `mlbd grade` with its references judged outside the kernel
(``mlbd.grading.references``): lecture 10's hidden `test_backprop` compares the student's gradients
with finite differences and a reference implementation computed from the test's own data. The
instructor's two sandboxed runs give those values; the solution and a known right answer keep the
test's points, every known wrong answer loses them, and a blank answer under a kernel that swallows
every failure but those of the planted copies and twins (``_PAIR_AWARE``) gains nothing on it. While
the test handed its own arrays to the student's function, so that it stayed in the kernel, that
blank scored the test's 7 points unflagged (checked by grading the notebook of commit 4e04037)."""
from __future__ import annotations

import json

import pytest

from mlbd import validate
from mlbd.demo import scratch_course

from conftest import RIGHT_DIR, ROOT, WRONG_DIR, grade_submissions, release_path, source_notebooks, submission
from test_grading_redteam import _PAIR_AWARE

pytestmark = pytest.mark.xdist_group("grading-course-references")

ASSIGNMENT, SOLUTION, TEST = "lecture10", "backprop", "test_backprop"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("course-references")
    course = root / "course"
    env = scratch_course(ROOT, ASSIGNMENT, course, root / "exchange")
    (source,) = source_notebooks(ASSIGNMENT)
    wrong = [a for a in validate.parse_wrong_answers((WRONG_DIR / f"{ASSIGNMENT}.txt").read_text())
             if a.solution_id == SOLUTION]
    right = [a for a in validate.parse_right_answers((RIGHT_DIR / f"{ASSIGNMENT}.txt").read_text())
             if a.solution_id == SOLUTION]
    assert wrong and right
    subs = {"solution": submission(source), "hooked_blank": submission(release_path(source), hook=_PAIR_AWARE)}
    subs.update({f"wrong{n}": submission(source, SOLUTION, a.code) for n, a in enumerate(wrong)})
    subs.update({f"right{n}": submission(source, SOLUTION, a.code) for n, a in enumerate(right)})
    results = grade_submissions(course, ASSIGNMENT, env, subs, source.name)
    cache = json.loads((course / ".mlbd" / "references" / f"{ASSIGNMENT}.json").read_text())
    return results, cache["expected"][source.stem], wrong, right, f"{source.stem}/{TEST}"


def test_the_instructors_runs_judge_the_hidden_test(graded):
    _, expected, *_ = graded
    assert len(expected.get(TEST, {})) >= 6, expected.get(TEST)


def test_solution_and_right_answers_keep_every_point(graded):
    results, _, _, right, cell = graded
    assert results["solution"]["score"] == results["solution"]["max_score"], results["solution"]
    assert not results["solution"]["flags"]
    for n, a in enumerate(right):
        r = results[f"right{n}"]
        assert r["score"] == r["max_score"] and not r["flags"], (a.description, r["cells"], r["flags"])


def test_wrong_answers_and_a_hooked_blank_lose_the_test(graded):
    results, _, wrong, _, cell = graded
    for n, a in enumerate(wrong):
        assert results[f"wrong{n}"]["cells"][cell] == 0, (a.description, results[f"wrong{n}"]["cells"])
    assert results["hooked_blank"]["cells"][cell] == 0, results["hooked_blank"]["cells"]
