"""Fast tier: the records the grading stages pass each other (no kernel, no gradebook)."""
from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from mlbd.grading import protocol
from mlbd.grading.protocol import Job, JobNotebook, JobOutcome, NotebookOutcome, ResultStore, Verdict

pytestmark = pytest.mark.unit


def _plain(value) -> bool:
    """Only what any worker can unpickle without mlbd's classes: str, bytes, numbers, lists, dicts."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_plain, value))
    return value is None or isinstance(value, (str, bytes, int, float, bool))


def test_jobs_and_outcomes_are_plain_data_and_survive_pickling():
    job = Job("s1", "ps1", [JobNotebook("a", '{"cells": []}'), JobNotebook("b", "{}", "ir")],
              {"data/x.csv": b"1,2\n"}, {"Sandbox": {"memory_mb": 512}}, 30)
    out = JobOutcome([NotebookOutcome("a", "{}", 1.5, ["note"], 1, {"disk": True}, [True], [3])],
                     {"out.txt": b"hi"}, 2.0, 123)
    for record in (job, out):
        assert _plain(dataclasses.asdict(record))
        assert pickle.loads(pickle.dumps(record)) == record
    assert job.id == "s1/ps1"


def test_a_crashed_job_fails_every_notebook_it_held():
    job = Job("s1", "ps1", [JobNotebook("a", "{}"), JobNotebook("b", "{}")])
    out = JobOutcome.crashed(job, "BrokenProcessPool: a worker died")
    assert [(o.name, o.notebook, o.crash, o.crash_kind) for o in out.notebooks] == [
        ("a", None, "BrokenProcessPool: a worker died", "crash"), ("b", None, "BrokenProcessPool: a worker died", "crash")]


def test_result_store_keeps_the_record_format(tmp_path):
    store = ResultStore(tmp_path, "ps1")
    assert store.read("s1") is None
    verdicts = {"a": Verdict(["a: slow"], ["a: hooked"], True, {"t1": "passed"}, 1.5),
                "b": Verdict([], [], False, {"t1": "hidden"}, 2.0)}
    summary = {"score": 3.0, "max_score": 4.0, "cells": {"a/t1": 1.0}, "needs_manual_grade": True}
    store.write_graded("s1", "d1g", ["extra notebook"], verdicts, summary)
    rec = json.loads((tmp_path / protocol.RESULTS / "ps1" / "s1.json").read_text())
    assert rec == {"student": "s1", "assignment": "ps1", "digest": "d1g", "errors": ["extra notebook", "a: slow"],
                   "flags": ["a: hooked"], "tests": {"a/t1": "passed", "b/t1": "hidden"}, "execute_seconds": 3.5,
                   **summary}
    assert store.read("s1") == rec
    store.record_failure("s1", ["scoring failed: boom"])
    assert store.read("s1") == {"student": "s1", "assignment": "ps1", "status": "failed",
                                "errors": ["scoring failed: boom"]}
    assert [p.name for p in (tmp_path / protocol.RESULTS / "ps1").iterdir()] == ["s1.json"]   # no temp files left


def test_a_failed_write_leaves_the_old_record(tmp_path):
    store = ResultStore(tmp_path, "ps1")
    store.record_failure("s1", ["first"])
    with pytest.raises(TypeError):
        store.write("s1", {"errors": [object()]})
    assert store.read("s1")["errors"] == ["first"]
    assert [p.name for p in store.folder.iterdir()] == ["s1.json"]
