"""`mlbd report` lists every student of the assignment (issue 14 point 4): graded, failed (with the
reason `mlbd grade` recorded), submitted but not graded yet, and missing; on a real course and
gradebook (nbgrader generate_assignment, no kernel)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlbd import report
from mlbd.course import tool_env
from mlbd.grading import workload as w
from mlbd.grading.pipeline import record_failure

pytestmark = pytest.mark.xdist_group("report-rows")


def test_report_lists_failed_ungraded_and_missing(tmp_path, monkeypatch):
    from nbgrader.api import Gradebook

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    course = w.make_course(tmp_path / "course", timeout=30)
    w.submit(course, "failing", w.release_notebook(course))
    w.submit(course, "pending", w.release_notebook(course))
    reason = "preparing failed: ValueError: the notebook's cell 3 has no source " + "x" * 120
    record_failure(course, w.ASSIGNMENT, "failing", [reason])
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "testcourse") as gb:
        gb.add_student("absent", first_name="Al", last_name="Sent")

    rows = {r.student: r for r in report.collect(course, w.ASSIGNMENT)["submissions"]}
    assert set(rows) == {"failing", "pending", "absent"}
    assert (rows["failing"].status, rows["failing"].errors) == ("failed", [reason])
    assert rows["pending"].status == "not graded" and "mlbd grade" in rows["pending"].errors[0]
    assert (rows["absent"].status, rows["absent"].errors) == ("missing", ["no submission"])

    env = tool_env({"COLUMNS": "80"})
    out = subprocess.run([sys.executable, "-m", "mlbd.cli", "report", w.ASSIGNMENT, "--course-dir", str(course)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert max(len(line) for line in out.stdout.splitlines()) <= 80
    assert reason.replace(" ", "") in "".join(out.stdout.split()).replace("│", ""), out.stdout
    data = json.loads(subprocess.run([sys.executable, "-m", "mlbd.cli", "report", w.ASSIGNMENT, "--course-dir", str(course),
                                      "--format", "json"], env=env, capture_output=True, text=True, timeout=120).stdout)
    assert {s["student"]: s["status"] for s in data["submissions"]} == {"failing": "failed", "pending": "not graded",
                                                                       "absent": "missing"}
