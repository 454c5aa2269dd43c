"""`mlbd grade` judges a hidden test's comparison with a reference it computes from the author's
data (``mlbd.grading.references``): the values come from two sandboxed runs of the instructor's
notebook, the kernel never sees them, and a kernel that swallows every failure (while letting the
canaries fail, so nothing is flagged) gains nothing on such a check."""
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
np.testing.assert_allclose(_got, _twice(data), err_msg="HIDDEN_REF: double is wrong")
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


def _answered(course: Path, answers: dict, hook: str | None = None):
    nb = nbformat.read(str(course / "release" / w.ASSIGNMENT / "rf.ipynb"), as_version=4)
    cells = []
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
        cells.append(cell)
        if gid == "q1" and hook:
            cells.append(nbformat.v4.new_code_cell(hook))
    nb.cells = cells
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("references") / "course"
    course = w.make_course(root, timeout=20, memory_mb=512)
    (course / "source" / w.ASSIGNMENT / "sk.ipynb").unlink()
    nbformat.write(authoring.to_notebook(authoring.parse(SOURCE)), str(course / "source" / w.ASSIGNMENT / "rf.ipynb"))
    nbgrader(course, "generate_assignment", w.ASSIGNMENT, "--force")
    for student, answers, hook in (("right", RIGHT, None), ("hooked_blank", BLANK, _CANARY_AWARE),
                                   ("hooked_wrong", WRONG, _CANARY_AWARE), ("plain_blank", BLANK, None)):
        w.submit(course, student, _answered(course, answers, hook), name="rf")
    proc = subprocess.run([sys.executable, "-m", "mlbd.cli", "grade", w.ASSIGNMENT, "--course-dir", str(course),
                           "--jobs", "2"], env=tool_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = {k: v for k, v in cell_scores(course).items()}
    return course, scores, proc.stdout + proc.stderr


def test_the_instructors_values_are_computed_once_and_kept_from_the_kernel(graded):
    course, scores, out = graded
    saved = json.loads((course / ".mlbd" / "references" / f"{w.ASSIGNMENT}.json").read_text())
    positions = saved["expected"]["rf"]["t1"]
    assert len(positions) == 2 and any("_twice(data)" in p for p in positions)
    assert "two runs for the tests' reference values" in out
    # the autograded notebook keeps no trace of the instructor's values
    text = (course / "autograded" / "right" / w.ASSIGNMENT / "rf.ipynb").read_text()
    assert "expected" not in json.loads(text)["cells"][0].get("metadata", {}).get("mlbd", {})
    assert not any(v in text for p in positions.values() for v in [p[:60]])


def test_right_answers_score_full_marks(graded):
    _course, scores, _out = graded
    assert scores[("right", "t1")] == 2.0 and scores[("right", "t2")] == 2.0


@pytest.mark.parametrize("student", ["hooked_blank", "hooked_wrong", "plain_blank"])
def test_a_swallowing_kernel_gains_nothing_on_a_reference_check(graded, student):
    _course, scores, _out = graded
    assert scores[(student, "t1")] == 0.0
