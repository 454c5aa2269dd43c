"""Fast tier: canaries, metadata repair and student feedback as pure functions (no kernel)."""
from __future__ import annotations

import random
import re
import textwrap

import nbformat
import pytest
from nbformat.validator import iter_validate

from mlbd.grading import assess, feedback, integrity, prepare, protocol

pytestmark = pytest.mark.unit

TEST = textwrap.dedent('''\
    r = f(2)
    assert r == 4, "f(2) should be 4"
    ### BEGIN HIDDEN TESTS
    assert f(3) == 9, "HIDDEN: f(3) should be 9"
    assert 0 < f(1) <= 1, "HIDDEN: f(1) should be 1"
    ### END HIDDEN TESTS''')


def _test_cell(source=TEST):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 1,
                                 "grade_id": "t1", "schema_version": 3}
    return cell


def _run(source: str, f, swallow: bool = False) -> bool:
    """True when ``source`` fails (raises) with ``f`` defined; ``swallow`` wraps it as a hook would."""
    if swallow:
        source = "try:\n" + textwrap.indent(source, "    ") + "\nexcept BaseException:\n    pass\n"
    try:
        exec(compile(source, "<cell>", "exec"), {"f": f})
    except Exception:  # noqa: BLE001
        return True
    return False


@pytest.mark.parametrize("seed", range(20))
def test_canary_is_the_test_plus_one_hidden_contradiction_and_always_fails(seed):
    canary = integrity.canary_cell(_test_cell(), random.Random(seed))
    lines, extra = TEST.splitlines(), canary.source.splitlines()
    assert len(extra) == len(lines) + 1
    added = [i for i in range(len(extra)) if extra[:i] + extra[i + 1:] == lines]
    assert added, canary.source
    assert 3 < added[0] < len(extra) - 1, "the reversed assert goes in the hidden part"
    assert extra[added[0]].startswith("assert ") and "HIDDEN:" in extra[added[0]]
    for f in (lambda x: x * x, lambda x: x + 2, lambda x: 4 if x == 2 else 0, lambda x: None):
        assert _run(canary.source, f), f"canary passed with {f}"
        assert not _run(canary.source, f, swallow=True)    # which is what check_and_strip catches
    assert not _run(TEST, lambda x: x * x)                  # the test itself passes a right answer


def test_no_canary_holds_for_an_honest_answer_when_later_statements_rebind_its_names():
    """The false tamper flag CI caught: the reversed copy of ``assert best(x) == min(scores)`` was put
    after a loop that rebinds ``scores``, so it held for a right answer and zeroed the submission.
    Every canary a cell can get must fail for a right answer, whatever runs after the assert."""
    src = ("scores = {1: 3.0, 2: 1.0}\n### BEGIN HIDDEN TESTS\n"
           "assert f(2) == min(scores, key=scores.get), 'HIDDEN: best'\n"
           "for k in (3, 4):\n    scores = {k: 0.0, 2: 1.0}\n    assert f(k) == min(scores, key=scores.get)\n"
           "xs = [1]\nassert len(xs) == 1, 'HIDDEN: one'\nxs.append(2)\n"
           "### END HIDDEN TESTS")
    right = lambda x: x  # noqa: E731
    assert not _run(src, right)
    copies = integrity.reversed_copies(src)
    assert len(copies) == 2
    for canary in copies:
        assert _run(canary, right), canary
        assert not _run(canary, right, swallow=True)
    for seed in range(30):
        assert _run(integrity.canary_cell(_test_cell(src), random.Random(seed)).source, right)


def test_contradiction_keeps_the_authors_spelling():
    src = 'assert len(x) == 75, "a quarter"\nassert 0.5 < acc <= 1.0, "m"\nassert not ok(1), "n"\nassert y in (1, 2)'
    tree = __import__("ast").parse(src)
    got = [integrity._contradiction(src, s, integrity._offsets(src)) for s in tree.body]
    assert got == ['assert len(x) != 75, "a quarter"', 'assert not (0.5 < acc <= 1.0), "m"',
                   'assert ok(1), "n"', "assert y not in (1, 2)"]


def test_canary_of_a_test_without_asserts_still_fails():
    cell = _test_cell('np.testing.assert_allclose(f(2), 4, err_msg="should be four")')
    canary = integrity.canary_cell(cell, random.Random(0))
    assert canary.source.startswith(cell.source) and "should be four" in canary.source


def test_mutating_tests_run_their_canary_after_them():
    assert integrity.runs_twice_safely(TEST)
    for source in ("xs.append(1)\nassert len(xs) == 1", "n += 1\nassert n", "model.fit(X, y)\nassert model",
                   "d['k'] = 1\nassert d", "xs.append(1)\nxs = []", "m = model\nm.fit(X, y)", "a, b = f()\na.append(1)",
                   "a = np.asarray(x)\na[0] = 1", "def g(a):\n    a.append(1)", "r = np.random.default_rng(1)\nr.shuffle(x)",
                   "m = keras.Sequential()\nm.fit(X, y)", "global q\nq = 1", "np.random.seed(0)"):
        assert not integrity.runs_twice_safely(source), source
    # what a cell changes but created itself is made again by the next run: it can run twice
    for source in ("xs = []\nxs.append(1)\nassert len(xs) == 1", "n = 0\nn += 1", "m = Ridge().fit(X, y)\nassert m",
                   "d = {}\nd['k'] = 1", "a = np.array(x)\na[0] = 1", "a, b = [], {}\na.append(1)\nb[1] = 2",
                   "class A:\n    def __init__(self, f):\n        self.f = f", "def g(a):\n    b = []\n    b.append(a)"):
        assert integrity.runs_twice_safely(source), source
    nb = nbformat.v4.new_notebook(cells=[_test_cell("xs.append(1)\nassert len(xs) == 1, 'one'")])
    for seed in range(10):
        cells = [c for c in integrity.add_checks(nbformat.from_dict(nb), seed).cells if "probe" not in c.metadata.get("mlbd", {})]
        assert cells[0].metadata.get("nbgrader") and "canary" in cells[1].metadata["mlbd"]


def test_canary_order_is_not_derivable_from_the_seed():
    nb = nbformat.v4.new_notebook(cells=[_test_cell() for _ in range(12)])
    orders = {tuple("canary" in c.metadata.get("mlbd", {}) for c in integrity.add_checks(nbformat.from_dict(nb), 7).cells)
              for _ in range(6)}
    assert len(orders) > 1


def test_check_and_strip_flags_a_passing_canary_whatever_its_error_names():
    def executed(canary_error: str | None):
        nb = integrity.add_checks(nbformat.v4.new_notebook(cells=[_test_cell()]), 0)
        for cell in nb.cells:
            if "canary" in cell.metadata.get("mlbd", {}) and canary_error:
                cell.outputs = [nbformat.v4.new_output("error", ename=canary_error, evalue="x", traceback=[])]
        return nb
    for name in ("AssertionError", "KernelDied", "NotRun", "WhateverTheStudentRaised"):
        nb = executed(name)
        strong, _ = integrity.check_and_strip(nb)
        assert not [s for s in strong if "swallowed" in s]
        assert [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells] == ["t1"]
    strong, _ = integrity.check_and_strip(executed(None))
    assert any("failures are swallowed: 1 of 1" in s for s in strong)


def test_repair_metadata_costs_only_the_cell():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a = 1"), nbformat.v4.new_code_cell("b = 2"),
                                         nbformat.v4.new_markdown_cell("hi")])
    nb.cells[0]["id"] = "an id with spaces"
    nb.cells[0].metadata["tags"] = ["a,b", "ok"]
    nb.cells[1]["id"] = nb.cells[2]["id"]
    nb.cells[1].metadata["collapsed"] = "yes"
    nb.cells[2].metadata["mlbd"] = {"probe": "last", "nonce": "x"}
    notes, forged = prepare.repair_metadata(nb)
    assert next(iter_validate(nb), None) is None
    assert nb.cells[0].metadata["tags"] == ["ok"] and nb.cells[0]["id"] != "an id with spaces"
    assert "collapsed" not in nb.cells[1].metadata and "mlbd" not in nb.cells[2].metadata
    assert [c.source for c in nb.cells] == ["a = 1", "b = 2", "hi"]
    assert len(notes) == 4 and len(forged) == 1 and "mlbd" in forged[0]


def _feedback(cells):
    nb = nbformat.v4.new_notebook(cells=cells)
    return feedback.StudentFeedback().preprocess(nb, {})[0]


def _out(text):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def _err(ename, evalue):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}", TEST])


def test_feedback_shows_only_what_never_saw_a_hidden_test():
    early = nbformat.v4.new_code_cell("print('early')")
    early.outputs = [_out("early output\n")]
    failed = _test_cell()
    failed.outputs = [_out("printed by the student's function: " + TEST), _err("AssertionError", "HIDDEN: f(3) should be 9")]
    rewritten = _test_cell()
    rewritten.outputs = [_err("AssertionError", "encoded: " + TEST[::-1])]
    custom = _test_cell()
    custom.outputs = [_err("Rot13Leak", "HIDDEN: f(3) should be 9")]
    late = nbformat.v4.new_code_cell("print(In)")
    late.outputs = [_out(TEST), _err("ValueError", TEST)]
    nb = _feedback([early, failed, rewritten, custom, late])
    early, failed, rewritten, custom, late = nb.cells
    assert early.outputs[0]["text"] == "early output\n"
    assert [o["output_type"] for o in failed.outputs] == ["error"]
    assert failed.outputs[0]["evalue"] == "HIDDEN: f(3) should be 9" and failed.outputs[0]["traceback"] == [
        "AssertionError: HIDDEN: f(3) should be 9"]
    assert rewritten.outputs[0]["evalue"] == feedback.GENERIC
    assert custom.outputs[0]["ename"] == "Error"
    assert late.outputs == [_out(feedback.AFTER_HIDDEN)]
    for cell in nb.cells:
        assert "f(3) == 9" not in cell.source
    assert "f(3) == 9" not in nbformat.writes(nb)


def test_feedback_shows_the_trusted_notes_and_grader_outputs():
    notes = assess.notes_cell(["sk: the kernel sent a message the grader cannot read (rot13 of the tests); "
                               "this cell and the ones after it were not run"], ["sk: failures are swallowed"])
    assert "rot13" in notes.source and "swallowed" in notes.source              # the TA reads everything
    student_md = nbformat.v4.new_markdown_cell("my answer")
    hidden = _test_cell()
    hidden.outputs = [_out("x")]
    blank = _test_cell()
    assess.grader_output(blank, "submission", "sk.ipynb has no answers: graded 0")
    nb = _feedback([notes, student_md, hidden, blank])
    assert "rot13" not in nb.cells[0].source and "swallowed" not in nb.cells[0].source
    assert "cannot read; this cell" in nb.cells[0].source and "review by a TA" in nb.cells[0].source
    assert nb.cells[1].source == "my answer"
    assert nb.cells[3].outputs[0]["evalue"] == "sk.ipynb has no answers: graded 0"
    assert not any("mlbd" in c.metadata for c in nb.cells)


def _probed(last_outputs, mark: str | None = None):
    """A checked notebook whose last probe produced ``last_outputs`` (the first one reported)."""
    nb = integrity.add_checks(nbformat.v4.new_notebook(cells=[_test_cell()]), 0)
    first, last = nb.cells[0], nb.cells[-1]
    nonce = first.metadata["mlbd"]["nonce"]
    first.outputs = [_out(nonce + '{"builtins": {}}\n')]
    for cell in nb.cells:
        if "canary" in cell.metadata.get("mlbd", {}):
            cell.outputs = [_err("AssertionError", "f(2) should be 4")]
    last.outputs = list(last_outputs)
    if mark:
        protocol.mark_grader_error(last, mark, "whatever the grader says")
    return nb


def test_grader_failures_are_read_from_the_trusted_mark_not_from_names():
    """A student can raise the grader's own exception with the grader's own message: without the
    trusted mark it is the kernel's failure (the silenced probe is flagged); with the mark, any
    name is the grader's (a probe the grader stopped is not tampering)."""
    for ename, evalue in (("KernelDied", "the kernel died while running this cell (os._exit, a crash or a kill); "
                                        "later cells ran in a fresh kernel"),
                          ("NotRun", "not run: the notebook exceeded its wall-clock limit"),
                          ("CellTimeoutError", "the cell ran longer than 30 s")):
        strong, _ = integrity.check_and_strip(_probed([_err(ename, evalue)]))
        assert strong == ["the integrity probe after the last cell failed in the kernel"], (ename, strong)
        strong, _ = integrity.check_and_strip(_probed([_err(ename, evalue)], mark="kernel_died"))
        assert strong == [], (ename, strong)
    for kind in ("timeout", "kernel_died", "not_run", "wall_clock", "output_limit"):
        strong, _ = integrity.check_and_strip(_probed([_err("AssertionError", "anything")], mark=kind))
        assert strong == [], (kind, strong)
    strong, _ = integrity.check_and_strip(_probed([]))
    assert strong == ["the integrity probe after the last cell produced no report (output hijacked)"]


def test_the_executor_marks_only_its_own_timeouts():
    """A cell that raises ``CellTimeoutError`` with the grader's message is the student's error;
    the reply nbclient makes up when the grader's clock runs out is marked as the grader's."""
    from mlbd.grading.execute import GradingClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise X"), nbformat.v4.new_code_cell("loop")])
    client = GradingClient(nb, timeout=30)
    forged = {"content": {"status": "error", "ename": "CellTimeoutError", "evalue": "the cell ran longer than 30 s",
                          "traceback": ["CellTimeoutError: the cell ran longer than 30 s"]}}
    client._record_error_reply(nb.cells[0], 0, forged)
    assert [o["ename"] for o in nb.cells[0].outputs] == ["CellTimeoutError"]
    assert protocol.grader_error(nb.cells[0]) is None
    client._timed_out = True                  # what _async_handle_timeout sets when the clock runs out
    client._record_error_reply(nb.cells[1], 1, {"content": {"status": "error", "ename": "Whatever", "evalue": ""}})
    assert protocol.grader_error(nb.cells[1]) == {"kind": "timeout", "message": "the cell ran longer than 30 s"}
    assert nb.cells[1].outputs[-1]["ename"] == "CellTimeoutError"


def test_marked_cells_stay_in_the_notebook_and_only_checks_are_stripped():
    student = nbformat.v4.new_code_cell("while True: pass")
    protocol.fail_cell(student, "timeout", "the cell ran longer than 30 s")
    nb = integrity.add_checks(nbformat.v4.new_notebook(cells=[student, _test_cell()]), 0)
    integrity.check_and_strip(nb)
    assert [c.source for c in nb.cells] == ["while True: pass", TEST]
    assert protocol.grader_error(nb.cells[0])["kind"] == "timeout"
    protocol.mark_grader_error(nb.cells[1], "output_limit", "cut")
    protocol.mark_grader_error(nb.cells[1], "kernel_died", "killed")     # a failure outranks a cut
    protocol.mark_grader_error(nb.cells[1], "not_run", "later")          # the first failure stays
    assert protocol.grader_error(nb.cells[1]) == {"kind": "kernel_died", "message": "killed"}
    with pytest.raises(ValueError):
        protocol.mark_grader_error(nb.cells[1], "student", "x")


def test_forged_grader_marks_are_stripped_from_submissions():
    cell = nbformat.v4.new_code_cell("1 / 0")
    cell.metadata["mlbd"] = {"grader_error": {"kind": "timeout", "message": "the cell ran longer than 30 s"}}
    nb = nbformat.v4.new_notebook(cells=[cell])
    _, forged = prepare.repair_metadata(nb)
    assert forged and protocol.grader_error(nb.cells[0]) is None


def test_one_metadata_repair_stage_serves_both_graders(caplog):
    """Plain nbgrader autograde runs the same RepairMetadata (no job in its resources: the findings
    go to the log); the old name in course configs is the same class."""
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["mlbd"] = {"canary": True}
    nb = nbformat.v4.new_notebook(cells=[cell])
    stage = prepare.RepairMetadata()
    with caplog.at_level("WARNING"):
        nb, _ = stage.preprocess(nb, {"nbgrader": {"notebook": "n"}})
    assert "mlbd" not in nb.cells[0].metadata and caplog.records
    assert prepare.UntrustedMetadata is prepare.RepairMetadata


def test_prepare_stages_are_configurable_preprocessors(tmp_path):
    """mlbd grade's trusted steps are nbgrader-style Preprocessors: listed in config by import
    name, settings as traits, findings recorded on the NotebookJob in resources."""
    from traitlets.config import Config
    cfg = Config()
    cfg.PrepareSubmission.preprocessors = ["mlbd.grading.prepare.RepairMetadata", "mlbd.grading.prepare.RejectUnanswered",
                                           "mlbd.grading.prepare.InsertIntegrityChecks"]
    stages = prepare.PrepareSubmission(config=cfg).stages()
    assert [type(s).__name__ for s in stages] == ["RepairMetadata", "RejectUnanswered", "InsertIntegrityChecks"]
    release = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def f(x):\n    raise NotImplementedError"),
                                              _test_cell()])
    nbformat.write(release, str(tmp_path / "nb.ipynb"))

    def run(nb, stages):
        job = prepare.NotebookJob("nb")
        res = {"nbgrader": {"notebook": "nb"}, "mlbd": {"job": job, "release": tmp_path, "seed": 1}}
        for stage in stages:
            nb, res = stage.preprocess(nb, res)
        return nb, job

    as_released = nbformat.reads(nbformat.writes(release), 4)
    as_released.cells[0].metadata["mlbd"] = {"probe": "last"}      # forged grader metadata
    with pytest.raises(prepare.GradeAsBlank, match="no answers"):
        run(as_released, stages)
    answered = nbformat.reads(nbformat.writes(release), 4)
    answered.cells[0].source = "def f(x):\n    return x * x"
    answered.cells[0].metadata["mlbd"] = {"probe": "last"}
    nb, job = run(answered, stages)
    assert any("mlbd" in f for f in job.flags), job.flags
    assert sum(integrity.is_check(c) for c in nb.cells) == 3, "two probes and one canary inserted"
    cfg.RejectUnanswered.enabled = False            # a trait, read the same way as nbgrader's
    nb, _ = run(nbformat.reads(nbformat.writes(release), 4), prepare.PrepareSubmission(config=cfg).stages())
    assert sum(integrity.is_check(c) for c in nb.cells) == 3
    assert prepare.Sanitize(config=cfg)._restore() is True
    cfg.OverwriteCells.add_missing_cells = False    # nbgrader's own setting wins over the default
    assert prepare.Sanitize(config=cfg)._restore() is False


def _reported(nb):
    """``nb`` with its last probe reporting what the first did (an honest run)."""
    nb.cells[-1].outputs = list(nb.cells[0].outputs)
    return nb


def test_assess_stages_are_configurable_preprocessors():
    """The steps after execution are nbgrader-style Preprocessors too: listed in config by import
    name, findings on the Verdict in resources; canaries that passed flag and zero the notebook, a
    crashed run fails every test cell with the grader's own mark, stderr of a passing test stays
    visible without failing it, and the notes cell comes first."""
    from traitlets.config import Config
    from mlbd.grading.protocol import NotebookOutcome, Verdict

    def run(nb, outcome, stages):
        job = prepare.NotebookJob("nb", notebook=nb)
        sub = prepare.Submission("s", "a", None, "")
        v = Verdict()
        res = {"nbgrader": {"notebook": "nb"}, "mlbd": {"verdict": v, "outcome": outcome, "job": job, "submission": sub}}
        for stage in stages:
            nb, res = stage.preprocess(nb, res)
        return nb, v

    stages = assess.AssessSubmission().stages()
    assert [type(s).__name__ for s in stages] == ["FailUnrun", "JudgeChecks", "CheckIntegrity", "ReportLimits", "KeepStderrVisible",
                                                  "ClassifyTests", "AddGradingNotes"]
    honest = _reported(_probed([]))
    test = next(c for c in honest.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "t1")
    test.outputs = [nbformat.v4.new_output("stream", name="stderr", text="FutureWarning: x\n")]
    nb, v = run(honest, NotebookOutcome("nb", notebook="{}", seconds=1.5, notes=["memory limit hit"]), stages)
    assert not v.flags and not v.strong and v.seconds == 1.5 and v.tests == {"t1": "passed"}
    assert not any(integrity.is_check(c) for c in nb.cells)
    assert nb.cells[0].metadata["tags"] == [assess.NOTE_TAG] and "memory limit hit" in nb.cells[0].source
    kept = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "t1")
    assert kept.outputs[0]["output_type"] == "display_data" and "FutureWarning" in kept.outputs[0]["data"]["text/plain"]

    swallowed = _reported(_probed([]))
    for cell in swallowed.cells:
        if "canary" in cell.metadata.get("mlbd", {}):
            cell.outputs = []                       # the canary passed: a hook swallowed its failure
    nb, v = run(swallowed, NotebookOutcome("nb", notebook="{}"), stages)
    assert v.strong and any("swallowed" in f for f in v.flags)

    crashed = _probed([])
    nb, v = run(crashed, NotebookOutcome("nb", crash="worker died", crash_kind="crash"), stages)
    t1 = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "t1")
    assert protocol.grader_error(t1)["kind"] == "crash" and t1.metadata["mlbd"]["grader_output"]
    assert any("could not be executed: worker died" in e for e in v.errors) and not v.tests

    cfg = Config()
    cfg.AssessSubmission.preprocessors = ["mlbd.grading.assess.CheckIntegrity"]   # by import name, as in nbgrader
    nb, v = run(_probed([]), NotebookOutcome("nb", notebook="{}"), assess.AssessSubmission(config=cfg).stages())
    assert not any(integrity.is_check(c) for c in nb.cells) and not v.tests and nb.cells[0].cell_type == "code"


TWIN_TEST = textwrap.dedent('''\
    r = f(2)
    assert r == 4, "f(2) should be 4"
    ### BEGIN HIDDEN TESTS
    import numpy as np
    assert f(3) == 9, "HIDDEN: f(3) is wrong"
    assert np.isclose(f(0.5), 0.25, atol=1e-3), "HIDDEN: f(0.5) is wrong"
    np.testing.assert_allclose([f(1), f(1.5)], [1.0, 2.25], rtol=1e-6)
    assert [g(w) for w in ("bb", "aa", "cc")] == ["BB", "AA", "CC"], "HIDDEN: g is wrong"
    assert g("dd") == "DD"
    ### END HIDDEN TESTS''')


def _run_with(source: str, f, g=str.upper, swallow: bool = False) -> bool:
    if swallow:
        source = "try:\n" + textwrap.indent(source, "    ") + "\nexcept BaseException:\n    pass\n"
    try:
        exec(compile(source, "<cell>", "exec"), {"f": f, "g": g})
    except Exception:  # noqa: BLE001
        return True
    return False


@pytest.mark.parametrize("seed", range(15))
def test_a_twin_is_the_test_with_one_expected_value_changed_and_fails_for_the_right_answer(seed):
    right = lambda x: x * x  # noqa: E731
    assert not _run_with(TWIN_TEST, right)
    twins = integrity.twin_copies(TWIN_TEST, random.Random(seed))
    assert len(twins) == 5, twins      # one per literal the hidden checks compare with
    lines = TWIN_TEST.splitlines()
    for twin in twins:
        other = twin.splitlines()
        changed = [i for i, (a, b) in enumerate(zip(lines, other)) if a != b]
        assert len(other) == len(lines) and len(changed) == 1, twin
        assert 3 < changed[0] < len(lines) - 1, "only the hidden part changes (the release shows the rest)"
        assert _run_with(twin, right), f"a twin held for the right answer:\n{twin}"
        assert not _run_with(twin, right, swallow=True)
        # what a hook cannot do: make the twin fail and the test pass without knowing which is which
        assert _run_with(twin, lambda x: 0) and _run_with(TWIN_TEST, lambda x: 0)


def test_twins_keep_the_authors_spelling_and_leave_unsafe_checks_alone():
    twins = integrity.twin_copies(TWIN_TEST, random.Random(3))
    changed = {b for t in twins for a, b in zip(TWIN_TEST.splitlines(), t.splitlines()) if a != b}
    assert any(re.search(r"np\.isclose\(f\(0\.5\), 0\.\d\d, atol=1e-3\)", c) for c in changed), changed
    assert any(re.search(r"\[1\.0, 2\.25\]|\[\d\.\d, 2\.25\]|\[1\.0, \d\.\d\d\]", c) for c in changed), changed
    assert any('"DD"' not in c and re.search(r'== "[A-Z]{2}"', c) for c in changed), changed
    # a message quoting the value, a tolerance the twin cannot read, a visible-only test: no twin
    for src in ('### BEGIN HIDDEN TESTS\nassert f(3) == 9, "HIDDEN: f(3) should be 9"\n### END HIDDEN TESTS',
                "### BEGIN HIDDEN TESTS\nassert np.isclose(f(3), 9, atol=tol)\n### END HIDDEN TESTS",
                "### BEGIN HIDDEN TESTS\nassert np.isclose(f(3), 9, 0.5)\n### END HIDDEN TESTS",
                "assert f(3) == 9",
                "### BEGIN HIDDEN TESTS\nif True:\n    assert f(3) == 9\n### END HIDDEN TESTS",
                # a check that may never run, or a value that may not have to hold
                "### BEGIN HIDDEN TESTS\nfor x in xs:\n    assert f(x) == 9\n### END HIDDEN TESTS",
                "### BEGIN HIDDEN TESTS\nfor x in []:\n    assert f(x) == 9\n### END HIDDEN TESTS",
                "### BEGIN HIDDEN TESTS\nfor x in [1, 2]:\n    if x > 1:\n        break\n    assert f(x) == 9\n"
                "### END HIDDEN TESTS",
                "### BEGIN HIDDEN TESTS\nassert f(3) == 9 or f(2) == 4\n### END HIDDEN TESTS",
                # an expected string swapped for a message would read as one
                '### BEGIN HIDDEN TESTS\nassert g(1) == "RELU", "the activation is not the one asked for"\n'
                '### END HIDDEN TESTS'):
        assert integrity.twin_copies(src, random.Random(0)) == [], src


LOOP_TEST = textwrap.dedent('''\
    ### BEGIN HIDDEN TESTS
    for x in [1, 2, 3]:
        y = f(x)
        assert y >= 0 and f(-x) == y, "f is even and not negative"
        for k in range(2):
            np.testing.assert_allclose(f(x * k * 0), 0.0, atol=1e-9, err_msg="f is wrong at the origin")
    assert f(0) == 0 and g("ab") == "AB" and g("cd") == "CD", "f or g is wrong"
    ### END HIDDEN TESTS''')


@pytest.mark.parametrize("seed", range(10))
def test_twins_reach_checks_joined_by_and_and_in_loops_that_always_run(seed):
    import numpy as np
    right = lambda x: x * x  # noqa: E731
    ns = lambda: {"f": right, "g": str.upper, "np": np}     # noqa: E731
    exec(LOOP_TEST, ns())
    twins = integrity.twin_copies(LOOP_TEST, random.Random(seed))
    assert len(twins) == 4, twins      # the inner loop's allclose, and the three parts of the last `and`
    for twin in twins:
        with pytest.raises(AssertionError):
            exec(twin, ns())


def test_a_test_and_its_twin_that_both_pass_are_tampering_and_a_twin_alone_is_for_review():
    def graded(test_passes: bool, twin_passes: bool):
        nb = integrity.add_checks(nbformat.v4.new_notebook(cells=[_test_cell(TWIN_TEST)]), 0)
        nb.cells = [c for c in nb.cells if "probe" not in c.metadata.get("mlbd", {})]     # canaries only
        twins = [c for c in nb.cells if c.metadata.get("mlbd", {}).get("twin_of") == "t1"]
        assert len(twins) == 1 and twins[0].source != TWIN_TEST
        failed = [nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=[])]
        for cell in nb.cells:
            if cell is twins[0]:
                cell.outputs = [] if twin_passes else failed
            elif cell.metadata.get("nbgrader"):
                cell.outputs = [] if test_passes else failed
        return integrity.check_and_strip(nb)
    strong, notes = graded(True, True)
    assert any("both held" in s and "t1" in s for s in strong) and not notes
    strong, notes = graded(False, True)
    assert not strong and any("t1" in n and "review" in n for n in notes)
    assert graded(True, False) == ([], []) and graded(False, False) == ([], [])


USING = textwrap.dedent('''\
    import numpy as np
    from numpy import allclose
    ''')


def test_the_check_after_a_passing_test_cell_names_what_is_rebound_at_that_moment():
    """Shadowing a name the tests use and restoring it before the last probe (no hook at all) is seen
    by the user expression every test cell's execute request carries, which reaches the namespace
    and the builtins through a lambda, not through names the notebook can shadow."""
    import builtins
    import types

    import numpy
    locked = nbformat.v4.new_code_cell(USING)
    locked.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False, "grade_id": "imports"}
    test = _test_cell("assert allclose(abs(np.array([-1.0])), 1.0)")
    nb = integrity.add_checks(nbformat.v4.new_notebook(cells=[locked, test]), 0)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") or "canary" in c.metadata.get("mlbd", {})]
    assert len(graded) == 2 and len({c.metadata["mlbd"]["after"] for c in graded}) == 1   # test and canary alike
    expr = graded[0].metadata["mlbd"]["after"]
    honest = {"np": numpy, "allclose": numpy.allclose, "__builtins__": builtins}
    assert eval(expr, honest) == []
    fake = types.ModuleType("numpy")
    fake.__dict__.update(vars(numpy))
    cheat = {"np": fake, "allclose": lambda *a, **k: True, "abs": lambda x: 0, "__builtins__": builtins,
             # the names the check itself would use, were it to look them up in the notebook
             "isinstance": lambda *a: False, "sorted": lambda x: [], "getattr": None, "callable": None, "eval": None}
    assert eval(expr, cheat) == ["abs", "allclose", "np"]


def test_what_the_check_after_a_test_cell_reported_is_judged_by_the_trusted_side():
    def graded(report):
        locked = nbformat.v4.new_code_cell(USING)
        locked.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False, "grade_id": "imports"}
        nb = integrity.add_checks(nbformat.v4.new_notebook(cells=[locked, _test_cell("assert np.allclose(f(1), 1)")]), 0)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade"):
                assert cell.metadata["mlbd"]["after"]
                if report is not None:
                    cell.metadata["mlbd"]["bindings"] = report
        strong, notes = integrity.check_and_strip(nb)
        assert not any(set(c.metadata.get("mlbd", {})) & {"after", "bindings"} for c in nb.cells)
        return strong, notes

    assert integrity.use_report({"user_expressions": {"mlbd": {"status": "ok", "data": {"text/plain": "['np']"}}}}) == ["np"]
    assert integrity.use_report({"user_expressions": {"mlbd": {"status": "error", "ename": "NameError"}}}) == "error"
    assert integrity.use_report({"user_expressions": {}}) == "missing"
    assert integrity.use_report({"user_expressions": {"mlbd": {"status": "ok", "data": {"text/plain": "os.system"}}}}) == "error"
    assert any("rebound by the notebook: np" in s for s in graded(["np"])[0])
    assert any("lacks the grader's check" in s for s in graded("missing")[0])
    assert any("could not run" in n for n in graded("error")[1])
    assert not any("rebound" in s or "check" in s for s in graded([])[0] + graded(None)[0])


def test_an_f_string_message_is_shown_as_its_template_never_as_filled_in():
    source = TEST.replace('"HIDDEN: f(3) should be 9"', 'f"HIDDEN: f(3) should be {3 ** 2}, not {f(3)}"')
    cell = _test_cell(source)
    cell.outputs = [_err("AssertionError", "HIDDEN: f(3) should be 9, not 10")]
    shown = _feedback([cell]).cells[0].outputs[0]
    assert shown["evalue"] == "HIDDEN: f(3) should be …, not …" and "9" not in shown["evalue"]
    other = _test_cell(source)
    other.outputs = [_err("AssertionError", "something else: 9")]
    assert _feedback([other]).cells[0].outputs[0]["evalue"] == feedback.GENERIC
