"""`mlbd grade` / `mlbd report` on a small self-made course: parity with `nbgrader autograde`,
idempotence, kill -9 resume, Dask LocalCluster, reports, configuration errors, the sandbox itself."""
from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from mlbd.course import nbgrader, tool_env
from mlbd.grading import workload as w
from mlbd.grading.execute import execute_job
from mlbd.grading.protocol import Job

from conftest import _cached

pytestmark = pytest.mark.xdist_group("grading-pipeline")

STUDENTS = {"right": w.RIGHT, "partly": w.PARTLY_WRONG, "blank": None}
EXPECTED = {"right": 10.0, "partly": 6.0, "blank": 0.0}


def mlbd(*args, check=True, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "mlbd.cli", *args], env=tool_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def cell_scores(course: Path) -> dict[tuple[str, str], float]:
    """(student, cell) → score from the gradebook; fails if any grade row exists twice."""
    from nbgrader.api import Gradebook

    db = sqlite3.connect(course / "gradebook.db")
    doubled = db.execute("select notebook_id, cell_id, count(*) from grade group by 1, 2 having count(*) > 1").fetchall()
    db.close()
    assert not doubled, f"grades recorded twice: {doubled}"
    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "testcourse") as gb:
        for sub in gb.assignment_submissions(w.ASSIGNMENT):
            for nb in sub.notebooks:
                for g in nb.grades:
                    out[(sub.student.id, g.name)] = float(g.score)
    return out


@pytest.fixture(scope="module")
def base_course(tmp_path_factory, _cache):
    # once per worker: xdist may tear a module fixture down between two of its tests and set it up again
    def make():
        course = w.make_course(tmp_path_factory.mktemp("gp") / "course", timeout=30)
        for student, answers in STUDENTS.items():
            w.submit(course, student, w.answered(course, answers) if answers else w.release_notebook(course))
        return course
    return _cached(_cache, "pipeline-base-course", make)


def clone(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest)
    cfg = dest / "nbgrader_config.py"
    cfg.write_text(cfg.read_text())      # HERE resolves to the new folder by itself
    return dest


@pytest.fixture(scope="module")
def graded(base_course, tmp_path_factory, _cache):
    def make():
        course = clone(base_course, tmp_path_factory.mktemp("gp-graded") / "course")
        return course, mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course), "--jobs", "2")
    return _cached(_cache, "pipeline-graded", make)


@pytest.mark.slow
def test_same_scores_as_nbgrader_autograde(graded, base_course, tmp_path):
    course, _ = graded
    stock = clone(base_course, tmp_path / "stock")
    cfg = stock / "nbgrader_config.py"        # stock nbgrader: its own Execute, no mlbd settings
    cfg.write_text(cfg.read_text().split("# mlbd:")[0])
    nbgrader(stock, "autograde", w.ASSIGNMENT)
    ours, theirs = cell_scores(course), cell_scores(stock)
    assert ours == theirs
    assert {s: sum(v for (st, _), v in ours.items() if st == s) for s in STUDENTS} == EXPECTED


def test_grade_summary_and_submissions_untouched(graded, base_course):
    course, proc = graded
    assert "grading summary" in proc.stdout
    for student in STUDENTS:
        a = (base_course / "submitted" / student / w.ASSIGNMENT / f"{w.NOTEBOOK}.ipynb").read_bytes()
        b = (course / "submitted" / student / w.ASSIGNMENT / f"{w.NOTEBOOK}.ipynb").read_bytes()
        assert a == b


def test_second_run_skips_and_force_is_identical(graded):
    course, _ = graded
    before = cell_scores(course)
    again = mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course))
    assert "3 already up to date" in again.stdout
    mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course), "--force", "--jobs", "2")
    assert cell_scores(course) == before


def test_report_formats(graded, tmp_path):
    course, _ = graded
    data = json.loads(mlbd("report", w.ASSIGNMENT, "--course-dir", str(course), "--format", "json").stdout)
    assert data["assignment"] == w.ASSIGNMENT
    got = {s["student"]: s["score"] for s in data["submissions"]}
    assert got == EXPECTED
    for s in data["submissions"]:
        assert set(s) == {"student", "status", "score", "max_score", "flags", "errors"} and s["max_score"] == 10.0
        assert s["status"] == "graded"
        assert isinstance(s["flags"], list) and isinstance(s["errors"], list)
    ours = mlbd("report", w.ASSIGNMENT, "--course-dir", str(course), "--format", "csv").stdout
    nbgrader(course, "export", "--to", str(tmp_path / "export.csv"))
    assert list(csv.DictReader(io.StringIO(ours))) == list(csv.DictReader(open(tmp_path / "export.csv")))
    canvas = list(csv.reader(io.StringIO(mlbd("report", w.ASSIGNMENT, "--course-dir", str(course), "--format", "canvas",
                                              "--plots", str(tmp_path / "plots")).stdout)))
    assert canvas[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"] and canvas[0][5] == w.ASSIGNMENT
    assert canvas[1][0].strip() == "Points Possible" and canvas[1][5] == "10"
    assert {r[3]: float(r[5]) for r in canvas[2:]} == EXPECTED
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 6 and all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    table = mlbd("report", w.ASSIGNMENT, "--course-dir", str(course)).stdout
    assert "right" in table and "per question" in table


def test_configuration_errors_are_one_line(graded):
    course, _ = graded
    for args, words in [(["grade", "nope"], "not in the gradebook"),
                        (["grade", w.ASSIGNMENT, "--executor", "carrier-pigeon"], "unknown executor"),
                        (["grade", w.ASSIGNMENT, "--student", "ghost"], "no submission"),
                        (["report", "nope"], "not in the gradebook")]:
        proc = mlbd(*args, "--course-dir", str(course), check=False)
        assert proc.returncode == 2 and words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_kill_9_then_rerun_loses_and_doubles_nothing(base_course, tmp_path):
    course = clone(base_course, tmp_path / "course")
    for i in range(4):
        w.submit(course, f"extra{i}", w.answered(course, w.RIGHT))
    proc = subprocess.Popen([sys.executable, "-m", "mlbd.cli", "grade", w.ASSIGNMENT, "--course-dir", str(course),
                             "--jobs", "2"], env=tool_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    results = course / ".mlbd" / "results" / w.ASSIGNMENT
    deadline = time.time() + 400
    while time.time() < deadline and len(list(results.glob("*.json"))) < 2:
        time.sleep(0.2)
    import os
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(results.glob("*.json")))
    assert 2 <= done_before < 7
    mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course), "--jobs", "2")
    scores = cell_scores(course)            # raises on a doubled grade
    totals = {}
    for (student, _), v in scores.items():
        totals[student] = totals.get(student, 0) + v
    assert totals == {**EXPECTED, **{f"extra{i}": 10.0 for i in range(4)}}
    assert len(list(results.glob("*.json"))) == 7
    # the killed run's warm-kernel zygotes left folders behind; the rerun removed them
    from mlbd.grading.zygote import owner_alive
    import tempfile
    for owner in Path(tempfile.gettempdir()).glob("mlbd-z-*/owner"):
        try:
            alive = owner_alive(owner)
        except OSError:         # another test's grader closing its zygote right now
            continue
        assert alive, f"{owner.parent} outlived its grader"


def test_kill_9_of_the_grader_alone_leaves_no_process(base_course, tmp_path):
    """`kill -9` of the `mlbd grade` process only (not its process group, as a scheduler or a
    supervisor may do): its pool workers, their zygotes and kernels end within seconds instead of
    idling on under init (before, 10 of its 13 descendants were still there an hour later)."""
    import os

    import psutil

    course = clone(base_course, tmp_path / "course")
    for i in range(4):
        w.submit(course, f"extra{i}", w.answered(course, w.RIGHT))
    proc = subprocess.Popen([sys.executable, "-m", "mlbd.cli", "grade", w.ASSIGNMENT, "--course-dir", str(course),
                             "--jobs", "2", "--force"], env=tool_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    results = course / ".mlbd" / "results" / w.ASSIGNMENT
    deadline = time.time() + 300
    while time.time() < deadline and not list(results.glob("extra*.json")):
        time.sleep(0.2)
    family = [(c.pid, c.create_time()) for c in psutil.Process(proc.pid).children(recursive=True)]
    assert family, "the grader had started no workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline, left = time.time() + 15, family
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = [(pid, t) for pid, t in left if psutil.pid_exists(pid) and _same(pid, t)]
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} of the grader's {len(family)} processes outlived it"


def _same(pid: int, created: float) -> bool:
    import psutil

    try:
        return psutil.Process(pid).create_time() == created
    except psutil.Error:
        return False


@pytest.mark.slow
def test_dask_localcluster(base_course, tmp_path):
    course = clone(base_course, tmp_path / "course")
    mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course), "--executor", "dask", "--jobs", "2")
    totals = {}
    for (student, _), v in cell_scores(course).items():
        totals[student] = totals.get(student, 0) + v
    assert totals == EXPECTED


def test_dask_existing_scheduler(base_course, tmp_path):
    """`--executor tcp://…` joins a scheduler someone else started (as dask-kubernetes would)."""
    from distributed import LocalCluster

    course = clone(base_course, tmp_path / "course")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course), "--executor", cluster.scheduler_address)
        ran = [p for p in cluster.scheduler.task_prefixes if p.startswith("mlbd")]
        assert ran, f"no grading task reached the scheduler: {list(cluster.scheduler.task_prefixes)}"
    totals = {}
    for (student, _), v in cell_scores(course).items():
        totals[student] = totals.get(student, 0) + v
    assert totals == EXPECTED


def test_sandbox_none_warns(graded, tmp_path):
    course, _ = graded
    proc = mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course), "--sandbox", "none", "--student", "blank", "--force")
    assert "--sandbox none" in proc.stderr and "development only" in proc.stderr


def test_kernel_is_sandboxed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP")
    code = f"""
import os, socket
print("uid", os.getuid(), os.getgid())
print("cwd_writable", os.access(".", os.W_OK), "root_writable", os.access("/usr", os.W_OK))
try:
    open({str(secret)!r}).read(); print("SECRET_VISIBLE")
except OSError:
    print("secret hidden")
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2); print("NETWORK")
except OSError:
    print("no network")
print("pids", len([p for p in os.listdir("/proc") if p.isdigit()]))
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    (out,) = execute_job(Job.one(nbformat.writes(nb), {"Sandbox": {"memory_mb": 256}}, 60)).notebooks
    text = "".join(o.get("text", "") for o in nbformat.reads(out.notebook, 4).cells[0].outputs)
    uid, gid = (int(x) for x in text.split("uid ", 1)[1].split()[:2])
    assert uid == gid and uid not in (0, 65534), text              # a uid of its own (c.Sandbox.job_uids)
    assert "cwd_writable True root_writable False" in text, text
    assert "secret hidden" in text and "no network" in text and "SECRET_VISIBLE" not in text
    assert int(text.split("pids")[1].split()[0]) <= 4     # own pid namespace: bwrap init + kernel
    assert not list(tmp_path.glob("mlbd-sbx-*"))


def test_grader_failures_are_marked_by_the_grader_not_named(tmp_path):
    """A cell raising the grader's own exception with its message is the student's error (no
    mark, no "interrupted" note, the kernel is not re-checked); a real timeout is marked."""
    from mlbd.grading.protocol import grader_error
    forged = ("class CellTimeoutError(Exception):\n    pass\n"
              "raise CellTimeoutError('the cell ran longer than 3 s')")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in (forged, "import time\ntime.sleep(60)",
                                                                                "print('after')")])
    (out,) = execute_job(Job.one(nbformat.writes(nb), {"Sandbox": {"memory_mb": 256}}, 3)).notebooks
    cells = nbformat.reads(out.notebook, 4).cells
    assert [o.get("ename") for o in cells[0].outputs] == ["CellTimeoutError"] and grader_error(cells[0]) is None
    assert grader_error(cells[1]) == {"kind": "timeout", "message": "the cell ran longer than 3 s"}
    assert "after" in cells[2].outputs[0]["text"] and grader_error(cells[2]) is None
    assert [n for n in out.notes if "interrupted" in n] == ["a cell at the top: the cell ran longer than 3 s and was interrupted"]


def test_plain_nbgrader_autograde_is_sandboxed(graded, tmp_path):
    course, _ = graded
    stock = clone(course, tmp_path / "course")
    w.submit(stock, "probe", w.answered(stock, dict(w.RIGHT, q1=w.RIGHT["q1"] + "\nimport os\nprint('UID', os.getuid())")))
    nbgrader(stock, "autograde", w.ASSIGNMENT, "--student", "probe")
    nb = nbformat.read(str(stock / "autograded" / "probe" / w.ASSIGNMENT / f"{w.NOTEBOOK}.ipynb"), 4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    uid = int(text.split("UID ", 1)[1].split()[0])
    assert uid not in (0, 65534), text                              # sandboxed, a uid of its own


def test_plain_nbgrader_autograde_bounds_outputs(graded, tmp_path):
    """One long line, a display swapped for 3 MB later, and widget comms: nbgrader's LimitOutput
    counts lines, so only the sandbox's byte limits keep these out of autograded/."""
    course, _ = graded
    stock = clone(course, tmp_path / "course")
    flood = ("print('x' * 3_000_000)\nh = display('small', display_id=True)\nh.update('y' * 3_000_000)\n"
             "from comm import create_comm\ncreate_comm(target_name='jupyter.widget', data={'state': {}})\n")
    w.submit(stock, "flood", w.answered(stock, w.RIGHT, [("q1", flood)]))
    nbgrader(stock, "autograde", w.ASSIGNMENT, "--student", "flood")
    path = stock / "autograded" / "flood" / w.ASSIGNMENT / f"{w.NOTEBOOK}.ipynb"
    assert path.stat().st_size < 2_500_000
    assert "mlbd: output truncated" in path.read_text()
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{stock / 'gradebook.db'}", "testcourse") as gb:
        assert gb.find_submission(w.ASSIGNMENT, "flood").score == 10.0


@pytest.fixture
def request_cleanup():
    paths: list[Path] = []
    yield paths
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def test_autograde_as_the_course_account_is_sandboxed(graded, request_cleanup):
    """The formgrader runs `nbgrader autograde` as the (non-root) course account: the sandbox then
    uses a user namespace and rlimits, and still hides the gradebook, the network and the box."""
    import pwd
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="mlbd-rootless-"))     # pytest's tmp_path is 0700 root
    request_cleanup.append(home)
    course = clone(graded[0], home / "course")
    probe = ("\nimport os, socket\nprint('UID', os.getuid())\n"
             f"print('DB', os.path.exists({str(course / 'gradebook.db')!r}))\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); print('NET yes')\nexcept OSError:\n    print('NET no')\n"
             "try:\n    b = bytearray(3 * 2**30); print('MEM unlimited')\nexcept MemoryError:\n    print('MEM limited')\n")
    w.submit(course, "probe", w.answered(course, dict(w.RIGHT, q1=w.RIGHT["q1"] + probe)))
    nobody = pwd.getpwnam("nobody")
    subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(home)], check=True)
    home.chmod(0o755)
    proc = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-m", "nbgrader", "autograde", w.ASSIGNMENT,
                           "--student", "probe"], cwd=course, env=tool_env({"HOME": str(home)}),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = nbformat.read(str(course / "autograded" / "probe" / w.ASSIGNMENT / f"{w.NOTEBOOK}.ipynb"), 4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "UID 65534" in text and "DB False" in text and "NET no" in text and "MEM limited" in text, text
    assert cell_scores(course)[("probe", "t1")] == 2.0


def test_library_hooks_are_not_flagged(graded, tmp_path):
    """matplotlib's inline backend registers an IPython post_execute callback: an honest plot is
    not tampering, and it reaches the student's feedback."""
    course = clone(graded[0], tmp_path / "course")
    plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
    w.submit(course, "plotter", w.answered(course, w.RIGHT, [("q1", plot)]))
    mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course), "--student", "plotter")
    row = {r["student"]: r for r in json.loads(mlbd("report", w.ASSIGNMENT, "--course-dir", str(course),
                                                      "--format", "json").stdout)["submissions"]}["plotter"]
    assert row["score"] == 10.0 and row["flags"] == [] and row["errors"] == [], row
    # and the student sees the plot in the feedback
    nbgrader(course, "generate_feedback", w.ASSIGNMENT, "--student", "plotter", "--force")
    html = (course / "feedback" / "plotter" / w.ASSIGNMENT / f"{w.NOTEBOOK}.html").read_text()
    assert "data:image/png;base64," in html


def _two_notebook_course(root: Path) -> Path:
    """ps1 of two notebooks: ``one`` asks for a function that writes shared.txt, ``two`` for one
    that reads it back (nbgrader's test_side_effects, across notebooks)."""
    def cell(source, grade_id, points=None):
        c = nbformat.v4.new_code_cell(source)
        test = points is not None
        c.metadata["nbgrader"] = {"grade": test, "solution": not test, "locked": test, "grade_id": grade_id,
                                  "schema_version": 3, **({"points": points} if test else {})}
        return c

    root.mkdir(parents=True)
    (root / "nbgrader_config.py").write_text(w.CONFIG.replace("TIMEOUT", "30") + w.MLBD_SETTINGS.replace("MEMORY", "512"))
    src = root / "source" / w.ASSIGNMENT
    src.mkdir(parents=True)
    stub = "    ### BEGIN SOLUTION\n    {}\n    ### END SOLUTION"
    for name, cells in {
            "one": [cell("def save(text):\n" + stub.format("open('shared.txt', 'w').write(text)"), "save"),
                    cell("save('written by notebook one')\nassert open('shared.txt').read() == 'written by notebook one'",
                         "t_save", 1)],
            "two": [cell("def load():\n" + stub.format("return open('shared.txt').read()"), "load"),
                    cell("assert load() == 'written by notebook one', 'notebook one wrote shared.txt'", "t_load", 2)]}.items():
        nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}),
                       str(src / f"{name}.ipynb"))
    nbgrader(root, "generate_assignment", w.ASSIGNMENT, "--force")
    return root


def test_later_notebooks_see_the_files_earlier_ones_wrote(tmp_path):
    """As with stock `nbgrader autograde`: a submission's notebooks run one after another in one
    work dir, and what they wrote lands in autograded/<student>/<assignment>/."""
    course = _two_notebook_course(tmp_path / "course")
    answers = {"save": "def save(text):\n    open('shared.txt', 'w').write(text)",
               "load": "def load():\n    return open('shared.txt').read()"}
    for student in ("s1", "s2"):
        for name in ("one", "two"):
            nb = nbformat.read(str(course / "release" / w.ASSIGNMENT / f"{name}.ipynb"), 4)
            for c in nb.cells:
                c.source = answers.get(c.metadata.get("nbgrader", {}).get("grade_id"), c.source)
            w.submit(course, student, nb, name=name)
    mlbd("grade", w.ASSIGNMENT, "--course-dir", str(course), "--jobs", "2")
    rows = {r["student"]: r for r in json.loads(mlbd("report", w.ASSIGNMENT, "--course-dir", str(course),
                                                      "--format", "json").stdout)["submissions"]}
    for student in ("s1", "s2"):
        assert rows[student]["score"] == 3.0 and not rows[student]["flags"], rows[student]
        kept = course / "autograded" / student / w.ASSIGNMENT / "shared.txt"
        assert kept.read_text() == "written by notebook one"
