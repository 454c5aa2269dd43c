"""The course tooling itself: release in sync, authoring round trip, harness sensitivity, CLI, demo."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mlbd import authoring, validate
from mlbd.course import nbgrader

from conftest import ROOT, release_path, source_notebooks

MLBD = [sys.executable, "-m", "mlbd.cli"]


def _cells(path: Path):
    nb = nbformat.read(str(path), as_version=4)
    return [(c.cell_type, c.source, json.dumps(c.metadata.get("nbgrader", {}), sort_keys=True)) for c in nb.cells]


def test_release_in_sync_with_source(assignment, tmp_path):
    """`mlbd build` on a copy of source/ reproduces the committed release/ exactly."""
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    shutil.copytree(ROOT / "source" / assignment, tmp_path / "source" / assignment)
    nbgrader(tmp_path, "generate_assignment", assignment, "--force",
             env={"MLBD_DB_URL": f"sqlite:///{tmp_path / 'gradebook.db'}"})
    for nb in source_notebooks(assignment):
        fresh = tmp_path / "release" / assignment / nb.name
        assert _cells(fresh) == _cells(release_path(nb)), f"release/{assignment}/{nb.name} is stale: run `mlbd build {assignment}`"
    committed = sorted(p.name for p in (ROOT / "release" / assignment).iterdir())
    generated = sorted(p.name for p in (tmp_path / "release" / assignment).iterdir())
    assert committed == generated


def test_authoring_round_trip(assignment):
    for nb in source_notebooks(assignment):
        text = authoring.export_text(nb)
        again = authoring.to_notebook(authoring.parse(text))
        original = nbformat.read(str(nb), as_version=4)
        assert [(c.cell_type, c.source, c.metadata.get("nbgrader"), c.get("id")) for c in again.cells] == \
               [(c.cell_type, c.source, c.metadata.get("nbgrader"), c.get("id")) for c in original.cells]


@pytest.mark.parametrize("text,message", [
    ("stray\n%% code\nx = 1", "before the first"),
    ("%% solution\nx = 1", "takes 1 argument"),
    ("%% tests t1 many\nassert 1", "points must be a number"),
    ("%% solution s1\nx = 1", "no ### BEGIN SOLUTION"),
    ("%% answer a1 2\nno rubric", "rubric"),
    ("%% solution s1\n### BEGIN SOLUTION\n### END SOLUTION\n%% tests s1 1\nassert 1", "duplicate id"),
    ("%% widget\nx", "unknown cell kind"),
])
def test_authoring_rejects_bad_text(text, message):
    with pytest.raises(authoring.AuthoringError, match=message):
        authoring.parse(text)


TINY = """%% notebook points=2
%% code
import math
%% solution double
def double(x):
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION
%% tests test_double 2
assert double(2) == 4, "double(2) is wrong"
### BEGIN HIDDEN TESTS
assert double(-3) == -6, "negative numbers"
### END HIDDEN TESTS
"""


def tiny_notebook(tmp_path):
    nb = tmp_path / "tiny.ipynb"
    nbformat.write(authoring.to_notebook(authoring.parse(TINY)), str(nb))
    return nb


def test_harness_detects_wrong_answers_that_keep_marks(tmp_path):
    """The wrong-answer check can fail: a 'wrong' answer that is in fact right is reported as passing."""
    nb = tiny_notebook(tmp_path)
    wrong = validate.parse_wrong_answers(
        "%% wrong double -> test_double : really wrong\ndef double(x):\n    return x + 2\n"
        "%% wrong double -> test_double : actually right\ndef double(x):\n    return x * 2\n"
        "%% wrong double -> test_double : only the hidden test catches it\ndef double(x):\n    return abs(2 * x)\n")
    results = validate.run_wrong_answers(nb, wrong, tmp_path / "work")
    assert results[0] == {"failed": ["test_double"], "passed": [], "setup_error": ""}
    assert results[1]["passed"] == ["test_double"]
    assert results[2]["failed"] == ["test_double"]
    run = validate.execute(nb, tmp_path / "exec")
    assert run.scores == {"test_double": 2.0} and run.errors == {}


def test_harness_detects_right_answers_that_lose_marks(tmp_path):
    """The right-answer check can fail: a 'right' answer that is in fact wrong is reported, hidden tests included."""
    nb = tiny_notebook(tmp_path)
    right = validate.parse_right_answers(
        "# comment lines before the first block are allowed\n"
        "%% right double : a loop instead of a product\ndef double(x):\n    total = 0\n    for _ in range(2):\n"
        "        total += x\n    return total\n"
        "%% right double : deliberately wrong, caught only by the hidden test\ndef double(x):\n    return abs(2 * x)\n"
        "%% right double : raises\ndef double(x):\n    return undefined_name\nundefined_name\n"
        "%% right double : addition\ndef double(x):\n    return x + x\n")
    assert [r.description.split()[0] for r in right] == ["a", "deliberately", "raises", "addition"]
    results = validate.run_right_answers(nb, right, tmp_path / "work")
    assert results[0] == {"tests": ["test_double"], "failed": {}, "setup_error": ""}
    assert list(results[1]["failed"]) == ["test_double"] and "negative numbers" in results[1]["failed"]["test_double"]
    assert "NameError" in results[2]["setup_error"] and "test_double" in results[2]["failed"]
    assert results[3]["failed"] == {}, "the reference must be restored after a failing alternative"
    with pytest.raises(ValueError, match="expected '%% right"):
        validate.parse_right_answers("%% right double no description\nx = 1\n")


def test_leak_check_finds_solution_lines(tmp_path):
    src = tmp_path / "src.ipynb"
    nbformat.write(authoring.to_notebook(authoring.parse(TINY)), str(src))
    leaky = nbformat.read(str(src), as_version=4)
    nbformat.write(leaky, str(tmp_path / "leaky.ipynb"))
    found = validate.leaks(src, tmp_path / "leaky.ipynb")
    assert any("BEGIN SOLUTION" in f for f in found)
    assert any("BEGIN HIDDEN TESTS" in f for f in found)


def test_network_scan_finds_downloaders(tmp_path):
    text = "%% code\nfrom sklearn.datasets import fetch_openml\nX = fetch_openml('mnist_784')\n" \
           "%% code\nimport tensorflow as tf\ntf.keras.datasets.mnist.load_data()\n"
    path = tmp_path / "net.ipynb"
    nbformat.write(authoring.to_notebook(authoring.parse(text)), str(path))
    hits = validate.network_uses(path)
    assert len(hits) >= 3


@pytest.mark.parametrize("argv,needle", [
    (["build", "no_such_assignment"], "unknown assignment"),
    (["demo", "--assignment", "no_such_assignment"], "unknown assignment"),
    (["build", "--course-dir", "/tmp"], "not a course directory"),
])
def test_cli_errors_are_one_line(argv, needle):
    proc = subprocess.run(MLBD + argv, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_full_cycle(tmp_path):
    proc = subprocess.run(MLBD + ["demo", "--assignment", "lecture01", "--workdir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from mlbd.demo import score_table

    scores = {s: (score, mx) for s, score, mx in score_table(tmp_path / "course", "lecture01")}
    auto_max = validate.points_summary(ROOT / "source/lecture01/L01_quickcheck.ipynb")["auto"]
    assert scores["student1"][0] == auto_max, "the correct submission must get every autograded point"
    assert 0 < scores["student2"][0] < auto_max, "the partly wrong submission must lose some points"
    assert scores["student3"][0] == 0
    for student in ("student1", "student2", "student3"):
        assert list((tmp_path / "course" / "feedback" / student / "lecture01").glob("*.html"))
