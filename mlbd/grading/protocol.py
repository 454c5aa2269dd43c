"""What the grading stages hand each other, and the grader's own mark on cells.

**The grader's mark.** A cell the trusted side failed itself (a timeout, a dead kernel, the
watchdog, a notebook that could not be graded) gets an error output *and*
``cell.metadata["mlbd"]["grader_error"] = {"kind": ..., "message": ...}``. Only trusted code writes
it, after execution: the kernel never sees or sends cell metadata, and a submission's own ``mlbd``
keys are removed before anything runs (``prepare.repair_metadata``). So "was this the grader?"
is answered by the mark, never by an exception's name or message, which a student can raise too.
"""
from __future__ import annotations

import nbformat

MARK = "mlbd"          # cell metadata key only the trusted side writes (grader cells, marks, notes)

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
KIND_OF = {ename: kind for kind, ename in GRADER_ERRORS.items() if ename}


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
