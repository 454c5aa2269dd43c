"""Per-assignment limits (``c.Sandbox.per_assignment``) resolve from config alone, the same for
``mlbd grade``, ``nbgrader autograde`` (SandboxedExecute) and the formgrader's Autograde button:
never from the command line."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from traitlets.config import Config

from mlbd.grading.kernel import SandboxedExecute
from mlbd.grading.pipeline import load_config
from mlbd.grading.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.unit
def test_the_course_config_gives_coursework2_its_limits_whatever_the_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["jupyterhub-singleuser", "--formgrader"])     # no assignment name
    cfg = load_config(ROOT)
    box = Sandbox(config=cfg)
    long, short = box.for_assignment("coursework2"), box.for_assignment("lecture01")
    assert (long.memory_mb, long.wall_seconds) == (3072, 3600)
    assert (short.memory_mb, short.wall_seconds) == (2048, 900)
    assert box.cell_timeout("coursework2", 120) == 300 and box.cell_timeout("lecture01", 120) == 120
    assert box.memory_mb == 2048                                                # unchanged by for_assignment
    execute = SandboxedExecute(config=cfg)
    assert execute.use_assignment("coursework2").memory_mb == 3072 and execute.timeout == 300
    assert execute.use_assignment("lecture01").memory_mb == 2048 and execute.timeout == 120


@pytest.mark.unit
def test_an_unknown_setting_is_refused():
    box = Sandbox(config=Config({"Sandbox": {"per_assignment": {"cw": {"memroy_mb": 1}}}}))
    with pytest.raises(ValueError, match="memroy_mb"):
        box.for_assignment("cw")
    assert box.for_assignment("other").memory_mb == box.memory_mb


CONFIG = '''
from pathlib import Path
c = get_config()  # noqa: F821
HERE = Path(__file__).resolve().parent
c.CourseDirectory.course_id = "limits"
c.CourseDirectory.root = str(HERE)
c.CourseDirectory.db_url = f"sqlite:///{HERE / 'gradebook.db'}"
c.Exchange.root = str(HERE / ".exchange")
c.ExecutePreprocessor.timeout = 120
c.Sandbox.memory_mb = 768
c.Sandbox.disk_mb = 128
c.Sandbox.per_assignment = {"coursework2": {"disk_mb": 96, "cpu_seconds": 333, "cell_timeout": 4}}
c.Autograde.autograde_preprocessors = [
    "mlbd.grading.kernel.SandboxedExecute", "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor", "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades", "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata"]
'''

PROBE = '''import os, resource
print("disk", os.statvfs(".").f_blocks * os.statvfs(".").f_frsize // 2**20, "cpu", resource.getrlimit(resource.RLIMIT_CPU)[0])
open("written.txt", "w").write("from the notebook")'''


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="bubblewrap sandbox")
def test_nbgrader_autograde_gives_coursework2_its_limits(tmp_path):
    from mlbd.course import nbgrader
    course = tmp_path / "course"
    (course / "source" / "coursework2").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(CONFIG)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(PROBE),
        nbformat.v4.new_code_cell("import time\ntime.sleep(30)")])
    nbformat.write(nb, str(course / "source" / "coursework2" / "cw.ipynb"))
    nbgrader(course, "generate_assignment", "coursework2", "--force")
    sub = course / "submitted" / "s1" / "coursework2"
    sub.mkdir(parents=True)
    nbformat.write(nbformat.read(str(course / "release" / "coursework2" / "cw.ipynb"), 4), str(sub / "cw.ipynb"))
    nbgrader(course, "db", "student", "add", "s1")
    nbgrader(course, "autograde", "coursework2")
    graded = course / "autograded" / "s1" / "coursework2"
    cells = nbformat.read(str(graded / "cw.ipynb"), 4).cells
    out = "".join(o.get("text", "") for o in cells[0].outputs)
    assert "disk 96 cpu 333" in out, out                      # coursework2's, not the course-wide 128
    assert any(o.get("ename") == "CellTimeoutError" for o in cells[1].outputs), cells[1].outputs   # 4 s, not 120
    assert (graded / "written.txt").read_text() == "from the notebook"   # nbgrader semantics: side effects kept
