"""Due dates, extensions and the late policy: one place, applied through nbgrader's own hooks.

The course's ``nbgrader_config.py`` holds them as traitlets config, so every nbgrader command and
``mlbd`` read the same values and a typo fails when the config loads::

    c.Deadlines.due = {"lecture01": "2027-01-22 17:00", "coursework1": "2027-02-19 17:00 Europe/London"}
    c.Deadlines.timezone = "Europe/London"              # for dates written without a zone
    c.Deadlines.extensions = {"coursework1": {"s123": 48}}   # hours, per assignment and student
    c.LatePenalty.per_day = 0.10                         # of the notebook's score, per day started
    c.LatePenalty.cap = 0.5

Where they go: ``nbgrader release_assignment`` (the exchange's ``PrivateReleaseAssignment``) writes
the due date into the gradebook (``Assignment.duedate``: the formgrader shows it) and a
``DEADLINE.md`` into the released folder (students see it in the assignment they fetch);
``ApplyDeadlines``, in place of nbgrader's ``AssignLatePenalties`` in the autograde steps, writes
the due date and the student's extension (``SubmittedAssignment.extension``) into the gradebook
before nbgrader computes how late the submission is and asks the late-submission plugin
(``c.AssignLatePenalties.plugin_class = LatePenalty``) for the penalty. The submission time it
uses is the one collect wrote from the exchange (``mlbd.hub.exchange``), never the student's.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

import dateutil.parser
from dateutil.tz import gettz
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import LateSubmissionPlugin
from nbgrader.preprocessors import AssignLatePenalties
from nbgrader.utils import parse_utc
from traitlets import Dict, Float, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable


# the machine-readable line of DEADLINE.md (an HTML comment: invisible where the file is rendered),
# read back by the exchange's list (the students' Assignment List shows it)
DUE_UTC_KEY = "due-utc:"


def due_from_notice(text: str) -> tuple[str, datetime.datetime] | None:
    """(the due date as the notice words it, the due date in naive UTC) from a DEADLINE.md's text,
    or None when it has none."""
    title = text.split("\n", 1)[0]
    marker = text.rfind(f"<!-- {DUE_UTC_KEY} ")
    if ": due " not in title or marker < 0:
        return None
    stamp = text[marker + len(DUE_UTC_KEY) + 6:].split(" ", 1)[0]
    try:
        due = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return title.split(": due ", 1)[1].strip(), due


def parse_due(text: str, zone: str = "UTC") -> datetime.datetime:
    """A due date as nbgrader stores it (naive UTC): ``"2027-01-22 17:00[:00] [Zone]"`` or ISO 8601."""
    if len(text.split()) == 3:       # date, time, zone name or offset: nbgrader's own format
        return parse_utc(text)
    when = dateutil.parser.parse(text)
    if when.tzinfo is None:
        tz = gettz(zone)
        if tz is None:
            raise ValueError(f"unknown time zone {zone!r}")
        when = when.replace(tzinfo=tz)
    return parse_utc(when)


class Deadlines(LoggingConfigurable):
    """Per-assignment due dates and per-student extensions (config: ``c.Deadlines.*``)."""

    due = Dict(value_trait=Unicode(), help="assignment → due date, e.g. '2027-01-22 17:00' (in `timezone`) "
               "or '2027-01-22 17:00:00 Europe/London'").tag(config=True)
    timezone = Unicode("UTC", help="Time zone of due dates written without one").tag(config=True)
    extensions = Dict(value_trait=Dict(), help="assignment → {student: extra hours}").tag(config=True)

    @validate("due")
    def _check_due(self, proposal):
        for name, text in proposal["value"].items():
            try:
                parse_due(text, self.timezone)
            except (ValueError, OverflowError) as exc:
                raise TraitError(f"Deadlines.due[{name!r}] = {text!r}: {exc}") from None
        return proposal["value"]

    @validate("extensions")
    def _check_extensions(self, proposal):
        for name, per_student in proposal["value"].items():
            for student, hours in per_student.items():
                if not isinstance(hours, (int, float)) or hours < 0:
                    raise TraitError(f"Deadlines.extensions[{name!r}][{student!r}] must be hours >= 0, not {hours!r}")
        return proposal["value"]

    def due_utc(self, assignment: str) -> datetime.datetime | None:
        text = self.due.get(assignment)
        return parse_due(text, self.timezone) if text else None

    def extension(self, assignment: str, student: str) -> datetime.timedelta | None:
        hours = self.extensions.get(assignment, {}).get(student)
        return datetime.timedelta(hours=hours) if hours else None

    def apply(self, gb: Gradebook, assignment: str, student: str | None = None) -> None:
        """Write the configured due date (and the student's extension) into the gradebook. An
        assignment without a configured due date keeps the gradebook's (``nbgrader db assignment``)."""
        due = self.due_utc(assignment)
        if due is None:
            return
        gb.update_or_create_assignment(assignment, duedate=due)
        if student is not None:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                return
            sub.extension = self.extension(assignment, student)
            gb.db.commit()

    def notice(self, assignment: str, policy: "LatePenalty") -> str | None:
        """The text students find next to the notebooks they fetch."""
        due = self.due_utc(assignment)
        if due is None:
            return None
        local = due.replace(tzinfo=datetime.timezone.utc).astimezone(gettz(self.timezone))
        return (f"# {assignment}: due {local:%A %d %B %Y, %H:%M} ({self.timezone})\n\n"
                f"{policy.describe()}\n\nThe time that counts is when the exchange received your "
                "submission (your last Submit), not the clock of your computer or the file you submit. "
                "An extension agreed with the course staff moves your own due date.\n\n"
                f"<!-- {DUE_UTC_KEY} {due:%Y-%m-%dT%H:%M:%SZ} -->\n")


class LatePenalty(LateSubmissionPlugin):
    """``per_day`` of the notebook's score for each day (or part of a day) late, at most ``cap``."""

    per_day = Float(0.10, help="Fraction of the score deducted for each day or part of a day late").tag(config=True)
    cap = Float(0.5, help="Largest fraction of the score deducted, however late").tag(config=True)
    grace_minutes = Float(0.0, help="Minutes after the due date that still count as on time").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float | None:
        if total_seconds_late <= 60 * self.grace_minutes:
            return None
        days = math.ceil(total_seconds_late / 86400)
        return score * min(self.cap, self.per_day * days)

    def describe(self) -> str:
        return (f"Late work loses {self.per_day:.0%} of its score for each day or part of a day late, "
                f"at most {self.cap:.0%}.")


@dataclass
class Lateness:
    """One submission against its due date, as ``mlbd deadlines`` prints it."""

    student: str
    received: datetime.datetime | None
    due: datetime.datetime | None          # the student's own: the assignment's plus any extension
    seconds_late: float
    penalty: float


def reapply(gb: Gradebook, assignment: str, deadlines: Deadlines, policy: LatePenalty) -> list[Lateness]:
    """The configured due date and extensions, and the penalties they give, written into the
    gradebook for every graded submission of ``assignment`` without regrading: what an extension
    granted after grading needs. Returns each submission's lateness."""
    deadlines.apply(gb, assignment)
    rows = []
    for sub in sorted(gb.assignment_submissions(assignment), key=lambda s: s.student.id):
        deadlines.apply(gb, assignment, sub.student.id)
        late, total = sub.total_seconds_late, 0.0
        for nb in sub.notebooks:
            penalty = policy.late_submission_penalty(sub.student.id, nb.score, late) if late > 0 else None
            nb.late_submission_penalty = None if penalty is None else max(0.0, min(penalty, nb.score))
            total += nb.late_submission_penalty or 0.0
        gb.db.commit()
        rows.append(Lateness(sub.student.id, sub.timestamp, sub.duedate, late, total))
    return rows


class ApplyDeadlines(AssignLatePenalties):
    """nbgrader's ``AssignLatePenalties``, after writing the configured due date and the student's
    extension into the gradebook (so ``total_seconds_late`` uses them)."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gb:
            Deadlines(parent=self).apply(gb, info["assignment"], info["student"])
        return super().preprocess(nb, resources)


def show(course_dir, assignment: str, config_file=None) -> list[Lateness]:
    """``mlbd deadlines ASSIGNMENT``: apply the course's due date, extensions and late policy to the
    gradebook (no regrading) and print each submission's lateness and penalty."""
    from nbgrader.preprocessors import AssignLatePenalties as Assign

    from .grading.pipeline import course_directory, load_config

    cfg = load_config(course_dir, config_file)
    cd = course_directory(course_dir, cfg)
    deadlines = Deadlines(config=cfg)
    policy = Assign(config=cfg).plugin_class(config=cfg)
    with Gradebook(cd.db_url, cd.course_id) as gb:
        rows = reapply(gb, assignment, deadlines, policy)
    due = deadlines.due_utc(assignment)
    print(f"{assignment}: due {due:%Y-%m-%d %H:%M} UTC" if due else f"{assignment}: no due date in the config "
          "(Deadlines.due); the gradebook's own is kept")
    for r in rows:
        when = f"{r.received:%Y-%m-%d %H:%M:%S}" if r.received else "?"
        late = f"{r.seconds_late / 3600:.1f} h late" if r.seconds_late else "on time"
        print(f"  {r.student:20} received {when} UTC  {late:>12}  penalty {r.penalty:g}")
    return rows
