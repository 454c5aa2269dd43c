"""Grade exports through nbgrader's ExportPlugin mechanism are safe to open in a spreadsheet
(issue 17, invariant 5): every text field neutralised, quoted CSV; on a real gradebook
(which nbgrader creates with alembic, so not in the unit tier)."""
from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

import pytest

from mlbd.course import nbgrader
from mlbd.export import CanvasExportPlugin, SafeCsvExportPlugin


@pytest.fixture
def gradebook(tmp_path, monkeypatch):
    from nbgrader.api import Gradebook

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # nbgrader runs alembic by name
    gb = Gradebook(f"sqlite:///{tmp_path / 'gb.db'}", "c")
    gb.add_assignment("ps1")
    gb.add_student("=cmd|' /C calc'!A0", first_name="@SUM(1)", last_name="+Evil, Name", email="-x@y")
    gb.add_student("honest", first_name="Ada", last_name="Lovelace")
    yield gb
    gb.close()


def test_csv_and_canvas_exports_neutralise_every_text_field(gradebook):
    rows = list(csv.reader(io.StringIO(SafeCsvExportPlugin(assignment=["ps1"]).text(gradebook))))
    assert rows[0][:4] == ["assignment", "duedate", "timestamp", "student_id"] and len(rows) == 3
    canvas = list(csv.reader(io.StringIO(CanvasExportPlugin(assignment=["ps1"]).text(gradebook))))
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "ps1"]
    assert canvas[1][0].strip() == "Points Possible"
    for row in rows[1:] + canvas[2:]:
        assert len(row) == len(rows[0] if row in rows else canvas[0])      # the comma in a name shifted nothing
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    evil = next(r for r in canvas[2:] if "cmd" in r[2])
    assert evil[0] == "'+Evil, Name, @SUM(1)" and evil[2] == "'=cmd|' /C calc'!A0"




def test_nbgrader_export_uses_the_plugin(gradebook, tmp_path):
    """``nbgrader export --exporter=mlbd.export.CanvasExportPlugin`` as instructors run it."""
    (tmp_path / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(tmp_path)!r}\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{tmp_path / 'gb.db'}'\nc.CourseDirectory.course_id = 'c'\n")
    nbgrader(tmp_path, "export", "--exporter=mlbd.export.CanvasExportPlugin", "--to", str(tmp_path / "canvas.csv"))
    rows = list(csv.reader(open(tmp_path / "canvas.csv")))
    assert rows[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    assert any(r[2] == "'=cmd|' /C calc'!A0" for r in rows[2:]), rows
