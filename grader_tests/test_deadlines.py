"""Due dates, extensions and the late policy (mlbd/deadlines.py): parsing, the penalty, the gradebook.

The end-to-end check (real student accounts submitting before and after a deadline through the
real exchange, a forged timestamp.txt, an extension) is in test_hub_exchange.py.
"""
from __future__ import annotations

import datetime
import os
import sys

import pytest
from nbgrader.api import Gradebook
from traitlets import TraitError
from traitlets.config import Config

from mlbd.deadlines import Deadlines, LatePenalty, parse_due

DAY = 86400


@pytest.mark.unit
def test_due_dates_parse_to_naive_utc_in_the_course_zone():
    assert parse_due("2027-01-22 17:00") == datetime.datetime(2027, 1, 22, 17, 0)
    assert parse_due("2027-06-22 17:00", "Europe/London") == datetime.datetime(2027, 6, 22, 16, 0)
    assert parse_due("2027-06-22 17:00:00 Europe/London") == datetime.datetime(2027, 6, 22, 16, 0)
    assert parse_due("2027-06-22T17:00:00+02:00") == datetime.datetime(2027, 6, 22, 15, 0)


@pytest.mark.unit
def test_a_typo_fails_when_the_config_loads():
    cfg = Config()
    cfg.Deadlines.due = {"lecture01": "next friday-ish"}
    with pytest.raises(TraitError, match="lecture01"):
        Deadlines(config=cfg)
    cfg = Config()
    cfg.Deadlines.extensions = {"lecture01": {"s1": "two days"}}
    with pytest.raises(TraitError, match="hours"):
        Deadlines(config=cfg)


@pytest.mark.unit
def test_penalty_is_per_day_started_and_capped():
    p = LatePenalty()
    assert p.late_submission_penalty("s", 10.0, 0) is None
    assert p.late_submission_penalty("s", 10.0, 1) == pytest.approx(1.0)          # one second: a day started
    assert p.late_submission_penalty("s", 10.0, DAY) == pytest.approx(1.0)
    assert p.late_submission_penalty("s", 10.0, DAY + 1) == pytest.approx(2.0)
    assert p.late_submission_penalty("s", 10.0, 30 * DAY) == pytest.approx(5.0)   # capped at 50 %
    cfg = Config()
    cfg.LatePenalty.grace_minutes = 5
    cfg.LatePenalty.cap = 1.0
    q = LatePenalty(config=cfg)
    assert q.late_submission_penalty("s", 10.0, 299) is None
    assert q.late_submission_penalty("s", 10.0, 30 * DAY) == pytest.approx(10.0)


def test_due_date_and_extension_reach_the_gradebook(tmp_path, monkeypatch):
    # a new gradebook runs `alembic` (not a unit test: that subprocess takes seconds)
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}")
    cfg = Config()
    cfg.Deadlines.due = {"a1": "2027-01-22 17:00"}
    cfg.Deadlines.extensions = {"a1": {"s1": 48}}
    d = Deadlines(config=cfg)
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(url) as gb:
        gb.add_assignment("a1")
        gb.add_assignment("a2", duedate=datetime.datetime(2027, 3, 1))
        for s in ("s1", "s2"):
            gb.add_student(s)
            gb.add_submission("a1", s, timestamp=datetime.datetime(2027, 1, 23, 12, 0))
        d.apply(gb, "a1", "s1")
        d.apply(gb, "a1", "s2")
        d.apply(gb, "a2")                                   # not configured: the gradebook's own stays
        assert gb.find_assignment("a1").duedate == datetime.datetime(2027, 1, 22, 17, 0)
        assert gb.find_assignment("a2").duedate == datetime.datetime(2027, 3, 1)
        assert gb.find_submission("a1", "s1").total_seconds_late == 0           # 48 h extension
        assert gb.find_submission("a1", "s2").total_seconds_late == 19 * 3600
        cfg.Deadlines.extensions = {}
        Deadlines(config=cfg).apply(gb, "a1", "s1")         # extension withdrawn in the config
        assert gb.find_submission("a1", "s1").total_seconds_late == 19 * 3600


@pytest.mark.unit
def test_students_are_told_the_due_date_and_the_policy():
    cfg = Config()
    cfg.Deadlines.due = {"a1": "2027-06-22 17:00"}
    cfg.Deadlines.timezone = "Europe/London"
    text = Deadlines(config=cfg).notice("a1", LatePenalty())
    assert "Tuesday 22 June 2027, 17:00 (Europe/London)" in text
    assert "10%" in text and "50%" in text and "exchange received" in text
    assert Deadlines(config=cfg).notice("a2", LatePenalty()) is None


@pytest.mark.unit
def test_the_assignment_list_reads_the_due_date_back_from_the_release(tmp_path):
    """The students' Assignment List shows the due date: the exchange's list reads it from the
    DEADLINE.md release wrote, in words and as UTC; a release without one (or a link) gives none."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory

    from mlbd.hub.exchange import DEADLINE_FILE, PrivateList

    cfg = Config()
    cfg.Deadlines.due = {"a1": "2027-06-22 17:00"}
    cfg.Deadlines.timezone = "Europe/London"
    for name in ("a1", "a2", "a3"):
        (tmp_path / "ex" / "c1" / "outbound" / name).mkdir(parents=True)
    (tmp_path / "ex" / "c1" / "outbound" / "a1" / DEADLINE_FILE).write_text(Deadlines(config=cfg).notice("a1", LatePenalty()))
    (tmp_path / "ex" / "c1" / "outbound" / "a3" / DEADLINE_FILE).symlink_to(
        tmp_path / "ex" / "c1" / "outbound" / "a1" / DEADLINE_FILE)
    cfg.Exchange.root = str(tmp_path / "ex")
    cfg.Exchange.assignment_dir = str(tmp_path / "home")
    cfg.CourseDirectory.course_id = "c1"
    (tmp_path / "home").mkdir()
    got = {a["assignment_id"]: a for a in PrivateList(coursedir=CourseDirectory(config=cfg), authenticator=Authenticator(config=cfg),
                                                     config=cfg).start()}
    assert got["a1"]["due"] == "Tuesday 22 June 2027, 17:00 (Europe/London)"
    assert got["a1"]["due_utc"] == "2027-06-22T16:00:00Z"
    assert "due" not in got["a2"] and "due" not in got["a3"]
