"""Serve the same ``source/`` through otter-grader (Gradescope, students outside the hub).

An nbgrader instructor notebook is converted into an otter-assign master notebook at build time,
so there is never a second copy of any test to keep in sync:

* each nbgrader *solution* cell opens an otter question named after its ``grade_id``; the test
  cells that follow it become that question's test cases;
* each nbgrader test cell becomes two otter test cases: a public one (its visible asserts, 0
  points, what ``grader.check`` shows a student) and a hidden one (the whole cell, all its
  points). nbgrader scores a test cell all-or-nothing and the hidden case runs the whole cell, so
  a question's otter score equals the sum of nbgrader's scores for its test cells;
* tests are otter's exception-based test files: the cell's code runs with ``exec`` in the
  notebook's global namespace, exactly as nbgrader runs a test cell;
* manually graded answers and tasks become otter ``manual`` questions (rubrics stay in the
  solutions only). Otter cannot autograde a manual plot judgement: such questions are exported
  for manual grading on Gradescope, which ``UNSUPPORTED`` lists for the README.

Trusted use only: ``otter_run`` runs ``otter run``'s grading unsandboxed as the calling user, and otter runs
its tests with ``exec`` in the submission's namespace, so a submission can pass them by patching
``builtins.exec`` or rewriting the test files (README, "otter's route is for trusted use only").
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import yaml

from .authoring import kind_of
from .course import CourseError, check_assignments, notebooks, tool_env
from .validate import HIDDEN_RE, MARK_SCHEME_RE, SOLUTION_RE

UNSUPPORTED = [
    "manually graded answers and tasks (plots, essays) are exported as otter manual questions: "
    "Gradescope shows them to a human grader, nothing autogrades them",
    "nbgrader's 'read-only' cell locking has no otter equivalent: otter re-runs the tests from its "
    "own copy instead, so edited test cells cannot change a grade there either",
]

# Libraries the notebooks import; their pinned versions are copied from requirements.lock.
RUNTIME_PACKAGES = ["numpy", "pandas", "scikit-learn", "scipy", "matplotlib"]
TF_PACKAGES = ["tensorflow-cpu", "keras"]


def _raw(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_raw_cell(text)


def _config_cell(header: str, config: dict) -> nbformat.NotebookNode:
    return _raw(f"# {header}\n" + yaml.safe_dump(config, sort_keys=False).rstrip())


def _test_case(name: str, code: str, points: float, hidden: bool) -> nbformat.NotebookNode:
    config = yaml.safe_dump({"hidden": hidden, "points": points}, sort_keys=False).rstrip()
    func = re.sub(r"\W", "_", name)
    body = (f'""" # BEGIN TEST CONFIG\n{config}\n""" # END TEST CONFIG\n'
            f"def {func}(env):\n"
            f"    exec(compile({code!r}, {name!r}, 'exec'), env)\n")
    return nbformat.v4.new_code_cell(body)


def _otter_solution(source: str) -> str:
    """nbgrader's ``### BEGIN/END SOLUTION`` become otter's ``# BEGIN/END SOLUTION``."""
    return re.sub(r"^(\s*)#+ (BEGIN|END) SOLUTION", r"\1# \2 SOLUTION", source, flags=re.M)


def master_notebook(source_nb: Path, assignment: str, requirements: str, files: list[str]) -> nbformat.NotebookNode:
    """The otter-assign master notebook for one nbgrader instructor notebook."""
    nb = nbformat.read(str(source_nb), as_version=4)
    out = nbformat.v4.new_notebook(metadata=nb.metadata)
    out.cells.append(_config_cell("ASSIGNMENT CONFIG", {
        "name": assignment,
        "requirements": requirements,
        "files": files,
        "init_cell": True,
        "check_all_cell": False,
        "export_cell": False,
        "run_tests": False,
        "generate": True,
        "tests": {"ok_format": False, "files": False},
    }))
    open_question = None

    def close_question():
        nonlocal open_question
        if open_question == "tests":
            out.cells.append(_raw("# END TESTS"))
        if open_question:
            out.cells.append(_raw("# END QUESTION"))
        open_question = None

    for cell in nb.cells:
        kind = kind_of(cell)
        md = cell.metadata.get("nbgrader", {})
        gid = md.get("grade_id")
        if kind == "solution":
            close_question()
            points = _points_of_tests_after(nb, cell)
            out.cells.append(_config_cell("BEGIN QUESTION", {"name": gid, "points": points}))
            out.cells.append(_raw("# BEGIN SOLUTION"))
            out.cells.append(nbformat.v4.new_code_cell(_otter_solution(cell.source)))
            out.cells.append(_raw("# END SOLUTION"))
            open_question = "question"
        elif kind == "tests":
            if open_question is None:
                raise CourseError(f"{source_nb.name}: test cell {gid} has no solution cell before it")
            if open_question == "question":
                out.cells.append(_raw("# BEGIN TESTS"))
                open_question = "tests"
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0].strip()
            # a hidden-tests cell shows students only its label comment: no public case for it
            if any(line.strip() and not line.lstrip().startswith("#") for line in visible.splitlines()):
                out.cells.append(_test_case(f"{gid}_public", visible, 0, hidden=False))
            out.cells.append(_test_case(gid, HIDDEN_RE.sub(r"\1", cell.source), float(md.get("points", 0)), hidden=True))
        elif kind in ("answer", "task"):
            close_question()
            out.cells.append(_config_cell("BEGIN QUESTION", {"name": gid, "manual": True,
                                                             "points": float(md.get("points", 0))}))
            prompt = MARK_SCHEME_RE.sub("", SOLUTION_RE.sub("", cell.source)).strip()
            rubric = "\n".join(SOLUTION_RE.findall(cell.source) + MARK_SCHEME_RE.findall(cell.source)).strip()
            out.cells.append(_raw("# BEGIN PROMPT"))
            out.cells.append(nbformat.v4.new_markdown_cell(prompt or f"Answer for {gid}."))
            out.cells.append(_raw("# END PROMPT"))
            out.cells.append(_raw("# BEGIN SOLUTION"))
            out.cells.append(nbformat.v4.new_markdown_cell(rubric or "(graded by hand)"))
            out.cells.append(_raw("# END SOLUTION"))
            out.cells.append(_raw("# END QUESTION"))
        else:
            if open_question == "tests":
                close_question()  # anything after a question's tests starts the next exercise
            fresh = nbformat.v4.new_markdown_cell(cell.source) if cell.cell_type == "markdown" \
                else nbformat.v4.new_code_cell(cell.source)
            out.cells.append(fresh)
    close_question()
    return out


def _points_of_tests_after(nb, solution_cell) -> float:
    idx = nb.cells.index(solution_cell)
    total = 0.0
    for cell in nb.cells[idx + 1:]:
        kind = kind_of(cell)
        if kind == "solution":
            break
        if kind == "tests":
            total += float(cell.metadata["nbgrader"].get("points", 0))
    return total


def requirements_for(course_dir: Path, source_nb: Path, wheel: str) -> str:
    code = "\n".join(c.source for c in nbformat.read(str(source_nb), as_version=4).cells)
    wanted = RUNTIME_PACKAGES + (TF_PACKAGES if re.search(r"\b(tensorflow|keras)\b", code) else [])
    pins = {}
    for line in (course_dir / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins[m.group(1).lower()] = line.split(";")[0].split()[0]
    lines = [pins.get(p, p) for p in wanted]
    lines.append(f"./{wheel}")  # the mlbd package (data helpers), shipped inside the autograder zip
    return "\n".join(lines) + "\n"


def build_wheel(course_dir: Path, dest: Path) -> str:
    """A wheel of this project's ``mlbd`` package, so Gradescope installs the same data helpers."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # from a private copy: setuptools builds in the source tree's build/, which concurrent builds share
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(course_dir / name, src / name)
        shutil.copytree(course_dir / "mlbd", src / "mlbd", ignore=shutil.ignore_patterns("__pycache__"))
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                               "-q", "-w", tmp, str(src)], capture_output=True, text=True, env=tool_env())
        if proc.returncode != 0:
            raise CourseError(f"could not build the mlbd wheel: {proc.stderr.strip()[-300:]}")
        wheel = next(Path(tmp).glob("mlbd-*.whl"))
        shutil.copy(wheel, dest / wheel.name)
    return wheel.name


def convert(course_dir: Path, assignment: str, out_dir: Path) -> dict:
    """Write the master notebook(s) and run ``otter assign``; returns what was produced.

    ``out_dir/master/`` holds the generated master notebook, ``out_dir/dist/<notebook>/student``
    the student notebook with ``grader.check`` cells and public tests, and
    ``out_dir/dist/<notebook>/autograder`` the solution notebook and the Gradescope autograder zip.
    """
    [assignment] = check_assignments(course_dir, [assignment])
    master_dir = out_dir / "master"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    master_dir.mkdir(parents=True)
    wheel = build_wheel(course_dir, master_dir)
    produced = {}
    for src in notebooks(course_dir, assignment):
        (master_dir / "requirements.txt").write_text(requirements_for(course_dir, src, wheel))
        master = master_dir / src.name
        nbformat.write(master_notebook(src, assignment, "requirements.txt", [wheel]), str(master))
        dist = out_dir / "dist" / src.stem
        proc = subprocess.run([str(Path(sys.executable).parent / "otter"), "assign", "--no-pdfs", str(master), str(dist)],
                              cwd=master_dir, capture_output=True, text=True, env=tool_env())
        if proc.returncode != 0:
            raise CourseError(f"otter assign failed for {src.name}: {(proc.stderr or proc.stdout).strip()[-800:]}")
        zips = sorted((dist / "autograder").glob("*.zip"))
        if not zips:
            raise CourseError(f"otter assign produced no autograder zip for {src.name}")
        produced[src.name] = {
            "master": master,
            "student": dist / "student" / src.name,
            "solution": dist / "autograder" / src.name,
            "autograder_zip": zips[0],
        }
    return produced


# `otter run`'s own work (otter.run.main) for several submissions in one process: importing otter
# costs seconds, each submission still runs in a new kernel of its own, as under `otter run`.
_RUN_MANY = """\
import json, sys, traceback
from otter import logging
from otter.run import main
logging.set_level(logging.WARNING)                     # `otter run` without -v
for autograder, submission, out in json.loads(sys.argv[1]):
    try:
        main(submission, autograder=autograder, output_dir=out, no_logo=True)
    except Exception:
        traceback.print_exc()
        print(f"otter run failed for {submission}", file=sys.stderr)
"""


def otter_run_many(jobs: list[tuple[Path, Path, Path]]) -> list[dict[str, tuple[float, float]]]:
    """Grade several notebooks as ``otter run`` grades each, in one process; ``jobs`` are
    (autograder zip, submission, working directory) triples. Returns each one's question →
    (score, max_score), in order; raises if any of them produced no results."""
    import json

    for _, _, workdir in jobs:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "results.json").unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-c", _RUN_MANY,
                           json.dumps([[str(z), str(s), str(w)] for z, s, w in jobs])],
                          cwd=jobs[0][2] if jobs else None, capture_output=True, text=True, env=tool_env())
    out = []
    for _, submission, workdir in jobs:
        results = workdir / "results.json"
        if proc.returncode != 0 or not results.exists():
            raise CourseError(f"otter run failed for {submission}: {(proc.stderr or proc.stdout).strip()[-800:]}")
        out.append(_scores(json.loads(results.read_text())))
    return out


def otter_run(autograder_zip: Path, submission: Path, workdir: Path) -> dict[str, tuple[float, float]]:
    """Grade one notebook as ``otter run`` does; returns question → (score, max_score)."""
    return otter_run_many([(autograder_zip, submission, workdir)])[0]


def _scores(data: dict) -> dict[str, tuple[float, float]]:
    """Question → (score, max_score) from otter's results.json."""
    out = {}
    for test in data.get("tests", []):
        name = test.get("name", "").split(" - ")[0].split(" results")[0]
        out[name] = (float(test.get("score") or 0), float(test.get("max_score") or 0))
    return out
