"""A small self-contained nbgrader course for grading tests and the grading benchmark.

``make_course(dir)`` writes a course with one assignment (``ps1``) holding one 5-question
scikit-learn notebook (``sk``), generates it with nbgrader, and ``submit(dir, student, answers)``
drops a submission into ``submitted/`` as ``nbgrader collect`` would.
"""
from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import nbformat

from .. import authoring
from ..course import nbgrader

ASSIGNMENT = "ps1"
NOTEBOOK = "sk"

CONFIG = '''
import os
from pathlib import Path
c = get_config()  # noqa: F821
HERE = Path(__file__).resolve().parent
c.CourseDirectory.course_id = "testcourse"
c.CourseDirectory.root = str(HERE)
c.CourseDirectory.db_url = f"sqlite:///{HERE / 'gradebook.db'}"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]
c.ExecutePreprocessor.timeout = TIMEOUT
c.Exchange.root = str(HERE / ".exchange")
'''

MLBD_SETTINGS = '''
# mlbd: the same sandbox for plain `nbgrader autograde`, student-safe feedback
c.Sandbox.memory_mb = MEMORY
c.Autograde.autograde_preprocessors = [
    "mlbd.grading.kernel.SandboxedExecute", "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor", "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades", "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata"]
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades", "mlbd.grading.feedback.StudentFeedback",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]
c.HTMLExporter.sanitize_html = True
'''

SECRET = "SECRET_SOLUTION_7f3a"     # appears only in the instructor's solutions

SOURCE = '''%% notebook points=10 budget_s=60
%% markdown
# Problem set 1: scikit-learn in five steps
%% code
import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
X, y = make_classification(n_samples=300, n_features=6, random_state=0)
%% solution q1
def split(X, y):
    """Quarter of the rows for testing, random_state=0."""
    ### BEGIN SOLUTION
    # SECRET_SOLUTION_7f3a
    return train_test_split(X, y, test_size=0.25, random_state=0)
    ### END SOLUTION
%% tests t1 2
Xtr, Xte, ytr, yte = split(X, y)
assert len(Xte) == 75, "the test part should hold a quarter of the rows"
### BEGIN HIDDEN TESTS
assert np.allclose(Xtr, train_test_split(X, y, test_size=0.25, random_state=0)[0]), "HIDDEN_TEST_ONE: use random_state=0"
assert Xtr.shape == (225, 6), "HIDDEN_TEST_ONE: three quarters of the rows go to training"
### END HIDDEN TESTS
%% solution q2
def scale(Xtr, Xte):
    """Standardise both parts with statistics of the training part."""
    ### BEGIN SOLUTION
    s = StandardScaler().fit(Xtr)
    return s.transform(Xtr), s.transform(Xte)
    ### END SOLUTION
%% tests t2 2
Str, Ste = scale(Xtr, Xte)
assert np.allclose(Str.mean(axis=0), 0), "the training part should have mean 0"
### BEGIN HIDDEN TESTS
assert not np.allclose(Ste.mean(axis=0), 0), "HIDDEN_TEST_TWO: scale the test part with the training statistics"
### END HIDDEN TESTS
%% solution q3
def fit(Xtr, ytr):
    """A LogisticRegression with C=1.0 fitted on the training part."""
    ### BEGIN SOLUTION
    return LogisticRegression(C=1.0).fit(Xtr, ytr)
    ### END SOLUTION
%% tests t3 2
model = fit(Str, ytr)
assert hasattr(model, "coef_"), "return a fitted model"
### BEGIN HIDDEN TESTS
assert np.allclose(model.coef_, LogisticRegression(C=1.0).fit(Str, ytr).coef_), "HIDDEN_TEST_THREE: C should be 1.0"
### END HIDDEN TESTS
%% solution q4
def accuracy(model, X, y):
    """Fraction of correct predictions."""
    ### BEGIN SOLUTION
    return float(np.mean(model.predict(X) == y))
    ### END SOLUTION
%% tests t4 2
acc = accuracy(model, Ste, yte)
assert 0.5 < acc <= 1.0, "accuracy should be a fraction above chance"
### BEGIN HIDDEN TESTS
assert abs(acc - model.score(Ste, yte)) < 1e-12, "HIDDEN_TEST_FOUR: compare predictions with the labels"
### END HIDDEN TESTS
%% solution q5
def best_c(Xtr, ytr, Xva, yva, grid=(0.01, 0.1, 1.0, 10.0)):
    """The C of the grid with the best validation accuracy (first on ties)."""
    ### BEGIN SOLUTION
    scores = [LogisticRegression(C=c).fit(Xtr, ytr).score(Xva, yva) for c in grid]
    return grid[int(np.argmax(scores))]
    ### END SOLUTION
%% tests t5 2
c = best_c(Str, ytr, Ste, yte)
assert c in (0.01, 0.1, 1.0, 10.0), "return one of the grid values"
### BEGIN HIDDEN TESTS
_s = [LogisticRegression(C=v).fit(Str, ytr).score(Ste, yte) for v in (0.01, 0.1, 1.0, 10.0)]
assert c == (0.01, 0.1, 1.0, 10.0)[int(np.argmax(_s))], "HIDDEN_TEST_FIVE: pick the best validation accuracy"
### END HIDDEN TESTS
'''

RIGHT = {
    "q1": "def split(X, y):\n    return train_test_split(X, y, test_size=0.25, random_state=0)",
    "q2": "def scale(Xtr, Xte):\n    s = StandardScaler().fit(Xtr)\n    return s.transform(Xtr), s.transform(Xte)",
    "q3": "def fit(Xtr, ytr):\n    return LogisticRegression(C=1.0).fit(Xtr, ytr)",
    "q4": "def accuracy(model, X, y):\n    return float(np.mean(model.predict(X) == y))",
    "q5": ("def best_c(Xtr, ytr, Xva, yva, grid=(0.01, 0.1, 1.0, 10.0)):\n"
           "    scores = [LogisticRegression(C=c).fit(Xtr, ytr).score(Xva, yva) for c in grid]\n"
           "    return grid[int(np.argmax(scores))]"),
}
PARTLY_WRONG = dict(RIGHT, **{
    "q2": "def scale(Xtr, Xte):\n    return StandardScaler().fit_transform(Xtr), StandardScaler().fit_transform(Xte)",
    "q5": "def best_c(Xtr, ytr, Xva, yva, grid=(0.01, 0.1, 1.0, 10.0)):\n    return grid[-1]",
})


def make_course(root: Path, timeout: int = 60, mlbd_settings: bool = True, memory_mb: int = 1024) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    text = CONFIG.replace("TIMEOUT", str(timeout))
    if mlbd_settings:
        text += MLBD_SETTINGS.replace("MEMORY", str(memory_mb))
    (root / "nbgrader_config.py").write_text(text)
    src = root / "source" / ASSIGNMENT
    src.mkdir(parents=True, exist_ok=True)
    nbformat.write(authoring.to_notebook(authoring.parse(SOURCE)), str(src / f"{NOTEBOOK}.ipynb"))
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
    return root


def release_notebook(root: Path, name: str = NOTEBOOK) -> nbformat.NotebookNode:
    return nbformat.read(str(Path(root) / "release" / ASSIGNMENT / f"{name}.ipynb"), as_version=4)


def answered(root: Path, answers: dict[str, str], extra_cells: list[tuple[str, str]] | None = None,
             name: str = NOTEBOOK):
    """The released notebook ``name`` with ``answers`` (grade_id → code) filled in; ``extra_cells``
    are ``(after_grade_id, source)`` free cells inserted after a cell."""
    nb = release_notebook(root, name)
    cells = []
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
        cells.append(cell)
        for after, src in extra_cells or []:
            if after == gid or (after == "start" and gid is not None and not cells[:-1]):
                cells.append(nbformat.v4.new_code_cell(src))
    nb.cells = cells
    return nb


def submit(root: Path, student: str, nb=None, raw: str | bytes | None = None,
           name: str = NOTEBOOK, timestamp: str | None = None) -> Path:
    """Place a submission as ``nbgrader collect`` would (``raw`` writes the file bytes as they are)."""
    folder = Path(root) / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    if raw is not None:
        (path.write_bytes if isinstance(raw, bytes) else path.write_text)(raw)
    elif nb is not None:
        nbformat.write(nb, str(path))
    (folder / "timestamp.txt").write_text(timestamp or datetime.datetime(2026, 1, 5, 12, 0).isoformat() + "+00:00")
    return folder


def clear_submissions(root: Path) -> None:
    for name in ("submitted", "autograded", "feedback", ".mlbd"):
        shutil.rmtree(Path(root) / name, ignore_errors=True)
