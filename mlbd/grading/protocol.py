"""What the grading stages hand each other, and the grader's own mark on cells.

**Records.** prepare ▸ ``Job`` ▸ execute (any worker) ▸ ``JobOutcome`` (a ``NotebookOutcome`` per
notebook) ▸ score ▸ ``Verdict`` per notebook ▸ ``ResultStore``. Jobs and outcomes are dataclasses
of plain data (str, bytes, numbers, lists, dicts), so they travel to Dask workers as they are.

**The grader's mark.** A cell the trusted side failed itself (a timeout, a dead kernel, the
watchdog, a notebook that could not be graded) gets an error output *and*
``cell.metadata["mlbd"]["grader_error"] = {"kind": ..., "message": ...}``. Only trusted code writes
it, after execution: the kernel never sees or sends cell metadata, and a submission's own ``mlbd``
keys are removed before anything runs (``prepare.repair_metadata``). So "was this the grader?"
is answered by the mark, never by an exception's name or message, which a student can raise too.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MARK = "mlbd"          # cell metadata key only the trusted side writes (grader cells, marks, notes)
RESULTS = ".mlbd/results"   # result records, relative to the course root (``ResultStore``)

# kind → the exception name its error output shows (output_limit only marks: outputs were cut, nothing failed)
GRADER_ERRORS = {
    "timeout": "CellTimeoutError",          # the cell ran past its time limit
    "wall_clock": "WallClockLimit",         # the notebook ran past its wall-clock limit
    "kernel_died": "KernelDied",            # killed (memory, processes, CPU time, os._exit)
    "kernel_start": "KernelStartError",     # no kernel could be started
    "kernel_protocol": "KernelProtocolError",  # the kernel sent what the grader cannot read
    "not_run": "NotRun",                    # not run after one of the above
    "watchdog": "WatchdogTimeout",          # the trusted side itself was stuck: job abandoned
    "crash": "GradingError",                # the execution job failed (worker crash)
    "submission": "SubmissionError",        # missing/unreadable/unanswered notebook: graded blank
    "output_limit": None,
}


def grader_error(cell) -> dict | None:
    """The grader's mark on ``cell`` (``{"kind", "message"}``), or None: the cell's errors, if any,
    are the student's code's."""
    meta = cell.get("metadata", {}).get(MARK)
    mark = meta.get("grader_error") if isinstance(meta, dict) else None
    return mark if isinstance(mark, dict) else None


def mark_grader_error(cell, kind: str, message: str) -> None:
    """Mark ``cell`` as failed (or cut) by the grader. A failure replaces an output-limit mark;
    otherwise the first mark stays (a kernel that died after its cell timed out: the timeout)."""
    if kind not in GRADER_ERRORS:
        raise ValueError(f"unknown grader error kind {kind!r}")
    if not isinstance(cell.metadata.get(MARK), dict):
        cell.metadata[MARK] = {}
    meta = cell.metadata[MARK]           # (a NotebookNode stores a copy of the dict it is given)
    old = meta.get("grader_error")
    if not isinstance(old, dict) or (old.get("kind") == "output_limit" and kind != "output_limit"):
        meta["grader_error"] = {"kind": kind, "message": message}


def fail_cell(cell, kind: str, message: str, replace: bool = False) -> None:
    """The grader's error output on ``cell`` (after its own, or ``replace``-ing them), marked."""
    ename = GRADER_ERRORS[kind]
    out = nbformat.v4.new_output("error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"])
    cell.outputs = [out] if replace else [*cell.get("outputs", []), out]
    mark_grader_error(cell, kind, message)


# --------------------------------------------------------------------------------------------
# Records between the stages: prepare ▸ execute (any worker: plain data, picklable for Dask) ▸ score
# --------------------------------------------------------------------------------------------

@dataclass
class JobNotebook:
    """One prepared notebook of a job: nbformat JSON, integrity checks inserted."""
    name: str
    notebook: str
    kernel_name: str = "python3"


@dataclass
class Job:
    """What a worker runs for one submission: its notebooks, in order, in one work dir that starts
    with ``files`` (the assignment's own data files) under the limits of ``config``."""
    student: str
    assignment: str
    notebooks: list[JobNotebook]
    files: dict[str, bytes] = field(default_factory=dict)
    config: dict = field(default_factory=dict)      # {"Sandbox": {...}}: this assignment's limits
    timeout: int | None = None                      # seconds per cell

    @property
    def id(self) -> str:
        return f"{self.student}/{self.assignment}"

    @classmethod
    def one(cls, notebook: str, config: dict, timeout: int | None = None, files: dict[str, bytes] | None = None,
            kernel_name: str = "python3") -> "Job":
        """A job of one notebook (nbformat JSON) outside any course: sandbox tests, benchmarks."""
        return cls("-", "-", [JobNotebook("notebook", notebook, kernel_name)], dict(files or {}), config, timeout)


@dataclass
class NotebookOutcome:
    """What executing one notebook gave: the executed notebook (cells the grader failed carry its
    mark, ``grader_error``), or ``crash`` when there is none to score."""
    name: str
    notebook: str | None = None                     # executed, nbformat JSON
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # limits hit, kernel deaths, files dropped: for TA and student
    restarts: int = 0
    limits: dict[str, bool] = field(default_factory=dict)
    warm: list[bool] = field(default_factory=list)  # per kernel: forked from the zygote
    truncated: list[int] = field(default_factory=list)   # cells whose outputs were cut
    crash: str | None = None                        # why there is no executed notebook
    crash_kind: str = "crash"                       # its GRADER_ERRORS kind (crash, watchdog)


@dataclass
class JobOutcome:
    notebooks: list[NotebookOutcome] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)   # what the notebooks wrote, for autograded/
    seconds: float = 0.0
    worker_pid: int = 0

    @classmethod
    def crashed(cls, job: Job, why: str, kind: str = "crash") -> "JobOutcome":
        """The job's future failed (a worker died): every notebook of it is a grader failure."""
        return cls([NotebookOutcome(nb.name, crash=why, crash_kind=kind) for nb in job.notebooks])


@dataclass
class Verdict:
    """The scoring step's findings on one notebook, before and besides the gradebook's points."""
    errors: list[str] = field(default_factory=list)   # grading failures (the student reads them too)
    flags: list[str] = field(default_factory=list)    # integrity findings: need review
    strong: bool = False                              # a flag that zeroes the autograded tests
    tests: dict[str, str] = field(default_factory=dict)   # grade_id → outcomes.classify
    seconds: float | None = None                      # execution time


class ResultStore:
    """``.mlbd/results/<assignment>/<student>.json``: one record per student, written atomically
    (``mlbd report``, ``report --items`` and the cohort view read them; the keys stay as they are).

    A graded record: student, assignment, digest, errors, flags, tests, execute_seconds, score,
    max_score, cells, needs_manual_grade. A failed one: student, assignment, status "failed",
    errors, and no digest, so the next run grades the student again."""

    def __init__(self, course_root: Path, assignment: str):
        self.assignment = assignment
        self.folder = Path(course_root) / RESULTS / assignment

    def read(self, student: str) -> dict | None:
        try:
            return json.loads((self.folder / f"{student}.json").read_text())
        except (OSError, ValueError):
            return None

    def write(self, student: str, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"student": student, "assignment": self.assignment, **record}, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / f"{student}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def write_graded(self, student: str, digest: str, errors: list[str], verdicts: dict[str, Verdict],
                     summary: dict) -> None:
        self.write(student, {
            "digest": digest, "errors": errors + [e for v in verdicts.values() for e in v.errors],
            "flags": [f for v in verdicts.values() for f in v.flags],
            "tests": {f"{name}/{cell}": o for name, v in verdicts.items() for cell, o in v.tests.items()},
            "execute_seconds": sum(v.seconds or 0.0 for v in verdicts.values()), **summary})

    def record_failure(self, student: str, errors: list[str]) -> None:
        self.write(student, {"status": "failed", "errors": errors})
