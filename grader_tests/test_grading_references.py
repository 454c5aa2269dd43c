"""`mlbd grade` judges a hidden test's comparison with a reference it computes from the author's
data (``mlbd.grading.references``): the values come from two sandboxed runs of the instructor's
notebook, the kernel never sees or computes them, and neither a kernel that swallows every failure
(while letting the canaries fail, so nothing is flagged) nor one that hands the grader a reference
it finds in the namespace gains anything on such a check."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mlbd import authoring
from mlbd.course import nbgrader, tool_env
from mlbd.grading import workload as w

from test_grading_pipeline import cell_scores
from test_grading_redteam import _CANARY_AWARE

pytestmark = pytest.mark.xdist_group("grading-references")

SOURCE = '''%% notebook points=4 budget_s=30
%% code
import numpy as np
data = np.linspace(0.0, 1.0, 7)
def _twice(v):
    return 2 * np.asarray(v)
%% solution q1
def double(v):
    ### BEGIN SOLUTION
    return 2 * np.asarray(v)
    ### END SOLUTION
%% tests t1 2
_x = data.copy()
_got = double(_x)
assert _got is not None, "double must return something"
### BEGIN HIDDEN TESTS
_want = _twice(data)
np.testing.assert_allclose(_got, _want, err_msg="HIDDEN_REF: double is wrong")
assert np.array_equal(_x, data), "double must not change its input"
### END HIDDEN TESTS
%% solution q2
def total(v):
    ### BEGIN SOLUTION
    return float(np.sum(v))
    ### END SOLUTION
%% tests t2 2
assert abs(total(data) - 3.5) < 1e-9, "total is wrong"
'''
RIGHT = {"q1": "def double(v):\n    return np.asarray(v) * 2.0", "q2": "def total(v):\n    return float(sum(v))"}
BLANK = {"q1": "def double(v):\n    raise NotImplementedError()", "q2": "def total(v):\n    return 3.5"}
WRONG = {"q1": "def double(v):\n    v *= 2\n    return v", "q2": RIGHT["q2"]}     # right values, changes its input
# Replaces the grader's recorder (any global named *_chk) by one that hands over, instead of the
# student's result (_got, as the test cell it can read in the kernel names it), an array of the same
# shape the test cell has computed too and named as a reference (want, ref, expect): the reference a
# judged test would otherwise compute in the kernel. The test
# cell never computes it there: the statements that did were pruned (mlbd.grading.prune).
_THIEF = r'''
import numpy as _np
def _steal(orig):
    def chk(key, value):
        if not any(v is value for n, v in list(globals().items()) if "got" in n):
            return orig(key, value)       # only the student's result (the test calls it _got)
        for name, v in list(globals().items()):
            if any(s in name for s in ("want", "ref", "expect")) and isinstance(v, _np.ndarray) \
                    and v.shape == _np.shape(value):
                return orig(key, v)
        return orig(key, value)
    chk.take, chk.v = orig.take, orig.v
    return chk
for _k in [k for k in globals() if k.endswith("_chk") and callable(globals()[k])]:
    globals()[_k] = _steal(globals()[_k])
'''
# A cell that reads as harmless (data is sorted already) but may change what the references read:
# those checks then stay in the kernel, where the hook above swallows them. Flagged for a TA.
DOWNGRADE = "\ndata.sort()\n"
THIEF_ANSWER = {"q1": "def double(v):\n    return np.asarray(v) + 0.0", "q2": RIGHT["q2"]}


def _answered(course: Path, answers: dict, hook: str | None = None):
    return w.answered(course, answers, [("q1", hook)] if hook else None, name="rf")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("references") / "course"
    course = w.make_course(root, timeout=20, memory_mb=512)
    (course / "source" / w.ASSIGNMENT / "sk.ipynb").unlink()
    nbformat.write(authoring.to_notebook(authoring.parse(SOURCE)), str(course / "source" / w.ASSIGNMENT / "rf.ipynb"))
    nbgrader(course, "generate_assignment", w.ASSIGNMENT, "--force")
    for student, answers, hook in (("right", RIGHT, None), ("hooked_blank", BLANK, _CANARY_AWARE),
                                   ("hooked_wrong", WRONG, _CANARY_AWARE), ("plain_blank", BLANK, None),
                                   ("reference_thief", THIEF_ANSWER, _THIEF),
                                   ("downgrade", BLANK, _CANARY_AWARE + DOWNGRADE)):
        w.submit(course, student, _answered(course, answers, hook), name="rf")
    proc = subprocess.run([sys.executable, "-m", "mlbd.cli", "grade", w.ASSIGNMENT, "--course-dir", str(course),
                           "--jobs", "2"], env=tool_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = {k: v for k, v in cell_scores(course).items()}
    report = subprocess.run([sys.executable, "-m", "mlbd.cli", "report", w.ASSIGNMENT, "--course-dir", str(course),
                             "--format", "json"], env=tool_env(), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    scores["flags"] = {r["student"]: r["flags"] for r in json.loads(report.stdout)["submissions"]}
    return course, scores, proc.stdout + proc.stderr


def test_the_instructors_values_are_computed_once_and_kept_from_the_kernel(graded):
    course, scores, out = graded
    path = course / ".mlbd" / "references" / f"{w.ASSIGNMENT}.json"
    assert path.stat().st_mode & 0o077 == 0        # the hidden tests' expected values: the grader's only
    saved = json.loads(path.read_text())
    positions = saved["expected"]["rf"]["t1"]
    assert len(positions) == 2 and any(p.endswith(":_want") for p in positions)
    assert "two runs for the tests' reference values" in out
    # the autograded notebook keeps no trace of the instructor's values
    text = (course / "autograded" / "right" / w.ASSIGNMENT / "rf.ipynb").read_text()
    assert "expected" not in json.loads(text)["cells"][0].get("metadata", {}).get("mlbd", {})
    assert not any(v in text for p in positions.values() for v in [p[:60]])


def test_right_answers_score_full_marks(graded):
    _course, scores, _out = graded
    assert scores[("right", "t1")] == 2.0 and scores[("right", "t2")] == 2.0


@pytest.mark.parametrize("student", ["hooked_blank", "hooked_wrong", "plain_blank", "reference_thief"])
def test_a_swallowing_kernel_gains_nothing_on_a_reference_check(graded, student):
    _course, scores, _out = graded
    assert scores[(student, "t1")] == 0.0


def test_a_notebook_that_keeps_a_judged_check_in_the_kernel_is_flagged(graded):
    _course, scores, _out = graded
    assert any("a TA should look" in f for f in scores["flags"]["downgrade"]), scores["flags"]["downgrade"]
    for student in ("right", "reference_thief", "plain_blank"):
        assert not any("a TA should look" in f for f in scores["flags"][student]), scores["flags"][student]
