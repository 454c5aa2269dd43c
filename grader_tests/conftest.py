"""Shared fixtures: the course under test and cached notebook executions.

Assignments are discovered from ``source/``, so a new notebook is covered without editing tests.
Each assignment's tests share one xdist group, so its notebooks execute once per worker.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mlbd.course import assignments, notebooks
from mlbd import validate

ROOT = Path(__file__).resolve().parent.parent
WRONG_DIR = Path(__file__).resolve().parent / "wrong_answers"
RIGHT_DIR = Path(__file__).resolve().parent / "right_answers"
TF_ASSIGNMENTS = {f"lecture{n:02d}" for n in range(10, 16)} | {"coursework2"}


def pytest_generate_tests(metafunc):
    if "assignment" in metafunc.fixturenames:
        params = []
        for a in assignments(ROOT):
            marks = [pytest.mark.xdist_group(a)]
            if a in TF_ASSIGNMENTS or a.startswith("coursework"):
                marks.append(pytest.mark.slow)
            params.append(pytest.param(a, id=a, marks=marks))
        metafunc.parametrize("assignment", params)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keep each ``xdist_group`` on one worker under ``--dist loadgroup``. pytest-xdist 3.8 marks a
    group by appending ``@group`` to ``item._nodeid``, which pytest 9.2 no longer reads (node ids are
    structured): without this, a group's tests were spread over the workers, each set up its own
    copy of the module's fixtures (the same Unix accounts, twice), and one's teardown broke the other."""
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


@pytest.fixture(scope="session")
def course_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def _cache():
    return {}


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def _cached(cache, key, make):
    if key not in cache:
        try:
            cache[key] = ("ok", make())
        except Exception as exc:  # noqa: BLE001  (re-raised for every test that asks)
            cache[key] = ("error", exc)
    status, value = cache[key]
    if status == "error":
        raise value
    return value


def source_notebooks(assignment: str) -> list[Path]:
    return notebooks(ROOT, assignment, "source")


def notebook_uses_tensorflow(nb: Path) -> bool:
    import re

    import nbformat
    code = "\n".join(c.source for c in nbformat.read(str(nb), as_version=4).cells if c.cell_type == "code")
    return re.search(r"^\s*(import|from)\s+(tensorflow|keras)\b", code, re.M) is not None


def uses_tensorflow(assignment: str) -> bool:
    """Whether a notebook of ``assignment`` imports TensorFlow (or Keras)."""
    return any(notebook_uses_tensorflow(nb) for nb in source_notebooks(assignment))


def release_path(source_nb: Path) -> Path:
    return ROOT / "release" / source_nb.parent.name / source_nb.name


def _instructor_and_blank_runs(assignment, cache, scratch):
    """Per source notebook, (instructor run, blank run) from one kernel (``validate.execute_then_blank``),
    once per worker."""
    def make():
        return [validate.execute_then_blank(nb, release_path(nb), scratch / assignment / "instructor" / nb.stem,
                                            scratch / assignment / "blank" / nb.stem)
                for nb in source_notebooks(assignment)]
    return _cached(cache, ("instructor+blank", assignment), make)


@pytest.fixture
def instructor_runs(assignment, _cache, scratch):
    """Executions of the instructor notebooks (with solutions and hidden tests), in a new kernel each."""
    return [instructor for instructor, _ in _instructor_and_blank_runs(assignment, _cache, scratch)]


@pytest.fixture
def blank_runs(assignment, _cache, scratch):
    """Executions of the released (blank) student notebooks, with the hidden tests put back.

    A blank release must fail its hidden tests too, so the tests of the instructor version are
    spliced into the student version before it runs, as the autograder would do. Each runs in its
    instructor run's kernel, cleared (``validate.start_afresh``).
    """
    return [blank for _, blank in _instructor_and_blank_runs(assignment, _cache, scratch)]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium driven by Playwright, one per test module (skipped where either is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def grade_submissions(course: Path, assignment: str, env: dict, subs: dict, notebook: str) -> dict[str, dict]:
    """Each student's notebook (``subs``: student → NotebookNode) submitted as ``notebook`` to the
    scratch ``course``, graded by real ``mlbd grade --jobs 2``; student → ``.mlbd/results`` record."""
    import json
    import subprocess
    import sys

    import nbformat

    from mlbd.course import tool_env

    for student, nb in subs.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nbformat.write(nb, str(folder / notebook))
        (folder / "timestamp.txt").write_text("2026-01-05 12:00:00+00:00")
    proc = subprocess.run([sys.executable, "-m", "mlbd.cli", "grade", assignment, "--course-dir", str(course), "--jobs", "2"],
                          env=tool_env(env), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {s: json.loads((course / ".mlbd" / "results" / assignment / f"{s}.json").read_text()) for s in subs}


def submission(path: Path, solution_id: str | None = None, code: str | None = None, hook: str | None = None):
    """The notebook at ``path`` with the solution cell ``solution_id`` replaced by ``code`` and
    ``hook`` as a free cell after the first one (what a student could add)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if solution_id and cell.metadata.get("nbgrader", {}).get("grade_id") == solution_id:
            cell.source = code
    if hook:
        nb.cells.insert(1, nbformat.v4.new_code_cell(hook))
    return nb
