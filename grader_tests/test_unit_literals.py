"""Fast tier: checks against a literal judged by the trusted side (``mlbd.grading.literals``).

The kernel gets a test cell whose equality checks against a literal are replaced by a recorder;
the grader evaluates them on what was recorded. These run the recorder in-process (no kernel)."""
from __future__ import annotations

import math
import textwrap
import types

import numpy as np
import pytest

from mlbd.grading import literals

pytestmark = pytest.mark.unit

BIND = {"np": ["numpy", None], "math": ["math", None], "npt": ["numpy.testing", None],
        "isclose": ["numpy", "isclose"], "f": None}

CELL = textwrap.dedent('''\
    r = f(2)
    assert r == 4, "f(2) is wrong"
    ### BEGIN HIDDEN TESTS
    assert f(3) == 9 and isinstance(f(3), int), "HIDDEN: f(3) is wrong"
    assert np.isclose(f(0.5), 0.25, atol=1e-3), "HIDDEN: f(0.5) is wrong"
    np.testing.assert_allclose([f(1), f(1.5)],
                               [1.0, 2.25], rtol=1e-6, err_msg="HIDDEN: f is wrong on floats")
    for x in [1, 2]:
        assert math.isclose(f(-x), x * x) and 16 == f(4)
    assert np.shape(np.zeros(f(2))) == (4,)
    ### END HIDDEN TESTS''')
EXPECTED = ["4", "9", "0.25", "[1.0, 2.25]", "16", "(4,)"]


def _kernel():
    """The recorder as a kernel would define it, in a namespace of its own."""
    ns = {"get_ipython": lambda: types.SimpleNamespace(execution_count=7)}
    exec(literals.recorder_source("t", "_t_chk"), ns)
    return ns


def _run(kernel_source: str, f, swallow: bool = False):
    ns = _kernel()
    ns.update(f=f, np=np, math=math)
    code = kernel_source
    if swallow:      # a hook that makes every failure in the kernel pass
        code = "try:\n" + textwrap.indent(code, "    ") + "\nexcept BaseException:\n    pass\n"
    try:
        exec(compile(code, "<cell>", "exec"), ns)
        ran = True
    except Exception:  # noqa: BLE001
        ran = False
    return ran, literals.parse_records(repr(ns["_t_chk"].take()))


def test_the_kernel_never_sees_an_expected_value_and_the_lines_stay_put():
    kernel, sites = literals.rewrite(CELL, "_t_chk", BIND)
    assert [s.literal for s in sites] == EXPECTED
    assert [s.kind for s in sites] == ["compare", "compare", "call", "statement", "compare", "compare"]
    assert sites[2].module == "numpy" and sites[2].keywords == {"atol": 1e-3} and sites[3].message == "HIDDEN: f is wrong on floats"
    assert sites[4].literal_first and sites[1].message == "HIDDEN: f(3) is wrong"
    assert kernel.count("\n") == CELL.count("\n")
    for value in ("9", "0.25", "2.25", "16", "(4,)"):
        assert value not in kernel, value
    # what stays: the rest of the cell as written, messages included
    assert "isinstance(f(3), int)" in kernel and "HIDDEN: f(0.5) is wrong" in kernel
    assert "math.isclose(f(-x), x * x)" in kernel       # no literal there: the kernel checks it


@pytest.mark.parametrize("source", [
    'assert f(3) == 9, "f(3) should be 9"',                            # the message gives the value away
    "assert np.isclose(f(3), 9, atol=tol)",                            # a tolerance the grader cannot read
    "assert allclose(f(3), 9)",                                        # a function no trusted import pins down
    "assert np.isclose(f(3), 9, 0.5)",                                 # a positional tolerance
    "if f(0):\n    assert f(3) == 9",                                 # may never run
    "for x in xs:\n    assert f(x) == 9",
    "assert f(3) == 9 or f(2) == 4",
    "assert 3 == 9",
])
def test_checks_the_grader_cannot_judge_stay_as_written(source):
    kernel, sites = literals.rewrite(source, "_t_chk", BIND)
    assert sites == [] and kernel == source


def test_a_right_answer_passes_and_a_wrong_one_fails_whatever_the_kernel_does():
    kernel, sites = literals.rewrite(CELL, "_t_chk", BIND)
    right = lambda x: x * x  # noqa: E731
    ran, records = _run(kernel, right)
    assert ran and literals.judge(sites, records, True).failed is None
    # the kernel swallows every failure (or forges a pass): the values it computed still do not match
    for wrong in (lambda x: None, lambda x: x * x + 1e-2, lambda x: 0):
        ran, records = _run(kernel, wrong, swallow=True)
        verdict = literals.judge(sites, records, ran)
        assert verdict.failed is not None, wrong
    ran, records = _run(kernel, lambda x: 4 if x == 2 else 0)      # the visible check only
    verdict = literals.judge(sites, records, ran)
    assert verdict.failed.literal == "9" and verdict.failed.message == "HIDDEN: f(3) is wrong"
    # nothing recorded for a check in a cell that ran to its end: it was skipped, so it failed
    _, records = _run(kernel, right)
    assert literals.judge(sites, [r for r in records if r[1] != 5], True).why == "the check did not run"
    assert literals.judge(sites, None, True).failed is sites[0]


def test_what_the_kernel_records_comes_back_as_the_same_value():
    ns = _kernel()
    chk = ns["_t_chk"]
    values = [None, True, 3, -2**80, 0.1, float("inf"), -0.0, "é\n'\"", [1, (2.5, "x")], (),
              np.arange(6).reshape(2, 3), np.array([0.1, np.nan]), np.array(["a", "bc"]), np.array([True, False]),
              np.int64(7), np.float32(0.5), np.dtype("float32")]
    for i, v in enumerate(values):
        chk(i, v)
    got = literals.parse_records(repr(chk.take()))
    assert [k for _, k, _ in got] == list(range(len(values)))
    for (_, _, back), v in zip(got, values):
        assert type(back) is type(v)
        if isinstance(v, np.ndarray):
            assert back.dtype == v.dtype and back.shape == v.shape and np.array_equal(back, v, equal_nan=v.dtype.kind == "f")
        elif isinstance(v, float) and math.isnan(v):
            assert math.isnan(back)
        else:
            assert back == v and repr(back) == repr(v)


def test_pandas_frames_series_and_indexes_come_back_equal_and_the_rest_equals_nothing():
    """Frames, series and indexes of numbers, bools, strings (pandas' own string dtype too) and
    plain objects, with their index, columns, names and dtypes, come back as pandas' own testing
    functions compare them; a part the recorder does not carry makes the whole value equal nothing."""
    import pandas as pd

    carried = [
        pd.DataFrame([[1, np.nan, 2], [2, 3, 5], [np.nan, 4, 6]]), pd.DataFrame(),
        pd.DataFrame({"a": [1, 2], "b": ["x", None]}, index=["r1", "r2"]),
        pd.DataFrame({"n": np.array([5, 2], dtype=np.int32), "f": [1.0, .4], "ok": [True, False]}, index=pd.Index(["mu", "z"], name="nm")),
        pd.DataFrame(np.arange(6, dtype=np.float32).reshape(3, 2), columns=["x", "x"]),
        pd.Series([1.5, np.nan, -np.inf], index=list("abc"), name="s"), pd.Series([], dtype=float),
        pd.Series(["a", None], dtype=object), pd.Series([[1, 2], (3,)], dtype=object),
        pd.Index([3, 1, 2], name="k"), pd.RangeIndex(2, 10, 2), pd.Index(["a", "b"], dtype=object),
    ]
    not_carried = [pd.DataFrame({"c": pd.Categorical(["a"])}), pd.DataFrame({"d": pd.to_datetime(["2020-01-01"])}),
                   pd.Series([1, 2], dtype="Int64"), pd.Series(["a", None], dtype="string"), pd.Series([object()]),
                   pd.DataFrame({"a": [1]}, index=pd.MultiIndex.from_tuples([(1, 2)])), pd.DataFrame(np.zeros((300, 200)))]
    ns = _kernel()
    for i, v in enumerate(carried + not_carried):
        ns["_t_chk"](i, v)
    got = literals.parse_records(repr(ns["_t_chk"].take()))
    assert [k for _, k, _ in got] == list(range(len(carried) + len(not_carried)))
    for (_, _, back), v in zip(got, carried):
        check = {pd.DataFrame: pd.testing.assert_frame_equal, pd.Series: pd.testing.assert_series_equal}.get(type(v))
        if check:
            check(back, v, check_exact=True)
        else:
            pd.testing.assert_index_equal(back, v, exact=True)
    for (_, _, back), v in zip(got[len(carried):], not_carried):
        assert isinstance(back, literals.Unrecorded), v
        func = "assert_frame_equal" if isinstance(v, pd.DataFrame) else "assert_series_equal"
        site = literals.Site(0, "statement", "want", False, "pandas.testing", func, {}, reference=True)
        assert literals.holds(site, v, v) and not literals.holds(site, back, v)


def test_the_size_limit_is_per_cell_not_per_notebook():
    """Each cell's values are bounded (50,000 items) and the bound starts again when the grader takes
    them: a notebook whose earlier cells recorded large frames still records the later cells' values
    (coursework 1's honest solution lost 38 points under mlbd grade while the bound ran over the
    whole notebook, canaries included)."""
    ns = _kernel()
    for _ in range(5):
        ns["_t_chk"](0, np.zeros(30_000))
        got = literals.parse_records(repr(ns["_t_chk"].take()))
        assert not isinstance(got[0][2], literals.Unrecorded), got[0][2]
    ns["_t_chk"](0, np.zeros(30_000))
    ns["_t_chk"](1, np.zeros(30_000))
    got = literals.parse_records(repr(ns["_t_chk"].take()))
    assert isinstance(got[1][2], literals.Unrecorded)       # within one cell the bound holds


def test_sets_come_back_as_sets_and_a_forged_one_equals_nothing():
    ns = _kernel()
    ns["_t_chk"](0, {"TP", "FP", "recall"})
    ns["_t_chk"](1, frozenset({1, 2.5}))
    got = literals.parse_records(repr(ns["_t_chk"].take()))
    assert got[0][2] == {"TP", "FP", "recall"} and type(got[0][2]) is set
    assert got[1][2] == frozenset({1, 2.5}) and type(got[1][2]) is frozenset
    forged = literals.parse_records(repr(repr([(1, 0, ("set", [("l", [])]))])))
    assert isinstance(forged[0][2], literals.Unrecorded)


def test_a_value_the_recorder_does_not_carry_equals_nothing():
    class Yes(int):            # an answer whose == says yes to anything
        def __eq__(self, other):
            return True
        __hash__ = int.__hash__

    ns = _kernel()
    for i, v in enumerate([Yes(3), object(), {"a": 1}, np.array([object()]), np.zeros(3_000_000)]):
        ns["_t_chk"](i, v)
    got = literals.parse_records(repr(ns["_t_chk"].take()))
    site = literals.Site(0, "compare", "3", False)
    for _, _, back in got:
        assert isinstance(back, literals.Unrecorded) and not literals.holds(site, back)
    call = literals.Site(0, "call", "3", False, "numpy", "isclose", {})
    assert not literals.holds(call, got[0][2])


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", repr("__import__('os')"), repr("[(1, 0, ('x', 1))]"),
    repr("[(1, 0, ('a', '<f8', [2], [('f', '0x1p+0')]))]"), repr("[(1, 0, ('a', '|O', [1], [('n',)]))]"),
    repr("[(1, 0, ('i', '9' * 5000))]"), repr("[" * 200 + "]" * 200), "x" * (literals.MAX_RECORDS_TEXT + 1),
    repr("[(1, 'k', ('n',))]"), repr("{1: 2}"), 12,
])
def test_malformed_records_are_unreadable_not_trusted(text):
    assert literals.parse_records(text) is None


@pytest.mark.parametrize("site, value, ok", [
    (literals.Site(0, "compare", "3", False), np.array([3, 3]), False),        # ambiguous, as the assert would be
    (literals.Site(0, "compare", "3", False), np.int64(3), True),
    (literals.Site(0, "compare", "(4,)", False), [4], False),                   # a list is not a tuple
    (literals.Site(0, "compare", "[2, 3]", True), np.array([2, 3]), False),    # elementwise, then ambiguous
    (literals.Site(0, "compare", "(2, 3)", False), literals._Shape([2, 3]), True),
    (literals.Site(0, "call", "0.25", False, "numpy", "isclose", {"atol": 1e-3}), 0.2505, True),
    (literals.Site(0, "call", "0.25", False, "numpy", "isclose", {"atol": 1e-3}), 0.26, False),
    (literals.Site(0, "call", "1.0", False, "math", "isclose", {"rel_tol": 0.1}), 1.05, True),
    (literals.Site(0, "call", "[1.0, 2.0]", False, "numpy", "allclose", {}), np.array([1.0, 2.0]), True),
    (literals.Site(0, "call", "[1.0, 2.0]", False, "numpy", "isclose", {}), np.array([1.0, 2.0]), False),
    (literals.Site(0, "statement", "[1.0, 2.25]", False, "numpy.testing", "assert_allclose", {"rtol": 1e-6}),
     [1.0, 2.25], True),
    (literals.Site(0, "statement", "[1.0, 2.25]", False, "numpy.testing", "assert_allclose", {"rtol": 1e-6}),
     [1.0, 2.26], False),
    (literals.Site(0, "statement", "5", False, "numpy.testing", "assert_equal", {}), None, False),
])
def test_the_grader_evaluates_the_authors_check_with_python_and_numpy_semantics(site, value, ok):
    assert literals.holds(site, value) is ok


def test_a_check_kept_in_the_kernel_for_its_twin_is_judged_here_too():
    """The check a twin changes stays in the kernel (test and twin then differ there only, and a
    kernel that lets both pass is caught), with its value passed through the recorder."""
    line = CELL.splitlines().index("    assert np.shape(np.zeros(f(2))) == (4,)".strip()) + 1
    keep = frozenset([(line, CELL.splitlines()[line - 1].index("(4,)"))])
    kernel, sites = literals.rewrite(CELL, "_t_chk", BIND, keep=keep)
    assert "assert _t_chk.v(5, (np.shape(np.zeros(f(2))))) == (4,)" in kernel.splitlines()
    assert len(sites) == 6 and kernel.count("\n") == CELL.count("\n")
    ran, records = _run(kernel, lambda x: x * x)
    assert ran and literals.judge(sites, records, True).failed is None
    ran, records = _run(kernel, lambda x: x * x if x != 2 else 3, swallow=True)     # np.zeros(3): shape (3,)
    assert literals.judge(sites, records, ran).failed is sites[0]


def test_a_test_whose_order_is_fixed_gets_no_twin_and_keeps_no_expected_value_in_the_kernel():
    import nbformat

    from mlbd.grading import integrity

    locked = nbformat.v4.new_code_cell("import numpy as np")
    locked.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False, "grade_id": "imports"}
    twice = "r = f(2)\n### BEGIN HIDDEN TESTS\nassert np.isclose(r, 0.25, atol=1e-3), 'HIDDEN: wrong'\n### END HIDDEN TESTS"
    for source, twinned in ((twice, True), ("model.fit(X)\n" + twice, False)):     # model.fit: after the test only
        test = nbformat.v4.new_code_cell(source)
        test.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 1, "grade_id": "t1",
                                     "schema_version": 3}
        for seed in range(6):
            nb = integrity.add_checks(nbformat.v4.new_notebook(cells=[locked, nbformat.from_dict(test)]), seed)
            canary = next(c for c in nb.cells if "canary" in c.metadata.get("mlbd", {}))
            graded = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
            assert bool(canary.metadata["mlbd"].get("twin_of")) is twinned
            kernel = graded.metadata["mlbd"]["kernel_source"]
            assert ("0.25" in kernel) is twinned, kernel     # the kept check of a twin; none otherwise
            assert "0.25" not in canary.metadata["mlbd"]["kernel_source"] or twinned


def test_feedback_shows_a_judged_checks_err_msg_and_no_other_hidden_string():
    from mlbd.grading import feedback

    source = ("### BEGIN HIDDEN TESTS\nnp.testing.assert_allclose(f(1), [1.0], err_msg=\"HIDDEN: f(1) is off\")\n"
              "assert g() == \"SECRET_VALUE\"\n### END HIDDEN TESTS")
    shown = feedback.shown_messages(source, "")
    assert "HIDDEN: f(1) is off" in shown and "SECRET_VALUE" not in shown


@pytest.mark.parametrize("source, good, bad", [
    ("assert 0.5 < f(1) <= 1.0, 'a fraction above chance'", 0.75, 0.4),
    ("assert f(1) in (0.01, 0.1, 1.0), 'a value of the grid'", np.float64(0.1), 0.2),
    ("assert f(1) != 0, 'must differ'", 3, 0),
    ("assert f(1) >= -2 and f(1) < 3", 0, 5),
    ("assert 'iu' .count(f(1)) == 1", "i", "f"),
])
def test_comparisons_with_literals_are_judged_whatever_their_operators(source, good, bad):
    kernel, sites = literals.rewrite(source, "_t_chk", BIND)
    assert sites and "_t_chk(" in kernel
    for value, ok in ((good, True), (bad, False)):
        ran, records = _run(kernel, lambda x: value, swallow=True)
        assert (literals.judge(sites, records, ran).failed is None) is ok, (source, value)


def test_a_judged_comparison_is_evaluated_from_literals_only():
    with pytest.raises(ValueError):
        literals._comparison("__import__('os').system('true') == __v__")
    with pytest.raises(ValueError):
        literals._comparison("__v__.__class__ == 1")


def test_a_value_that_holds_the_literal_is_not_judged():
    """``"val_loss" in hist.history``: the value is a container (a dict, a History) the recorder
    does not carry, so the check stays in the kernel (found on coursework 2's solution)."""
    for source in ('assert "val_loss" in hist.history', "assert 3 not in f(1)"):
        assert literals.rewrite(source, "_t_chk", BIND) == (source, [])


def test_checks_taken_out_of_the_kernel_are_judged_even_when_the_stage_list_leaves_the_judge_out():
    """In the kernel a judged check always holds: a configured stage list without JudgeChecks must
    not let it pass. CheckIntegrity keeps what JudgeChecks reads, and scoring runs JudgeChecks after
    the list whatever it holds (score.stage)."""
    import nbformat
    from traitlets.config import Config

    from mlbd.grading import assess, integrity, prepare, score
    from mlbd.grading.protocol import NotebookOutcome, Verdict

    locked = nbformat.v4.new_code_cell("import numpy as np")
    locked.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False, "grade_id": "imports"}
    test = nbformat.v4.new_code_cell("assert f(2) == 4, 'f(2) is wrong'")
    test.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 1, "grade_id": "t1",
                                 "schema_version": 3}
    nb = integrity.add_checks(nbformat.v4.new_notebook(cells=[locked, test]), 0)
    graded = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
    graded.metadata["mlbd"]["records"] = repr(repr([(3, graded.metadata["mlbd"]["sites"][0]["key"], ("i", "5"))]))
    for c in nb.cells:
        if "canary" in c.metadata.get("mlbd", {}):
            c.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=[])]
    cfg = Config()
    cfg.AssessSubmission.preprocessors = ["mlbd.grading.assess.FailUnrun", "mlbd.grading.assess.CheckIntegrity"]
    res = {"nbgrader": {"notebook": "nb"}, "mlbd": {"verdict": Verdict(), "outcome": NotebookOutcome("nb", notebook="{}"),
                                                    "job": prepare.NotebookJob("nb", notebook=nb),
                                                    "submission": prepare.Submission("s", "a", None, "")}}
    for stage in assess.AssessSubmission(config=cfg).stages():
        nb, res = stage.preprocess(nb, res)
    graded = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
    assert "sites" in graded.metadata["mlbd"] and not graded.outputs      # not judged yet: it "passed"
    assert score.JudgeChecks is assess.JudgeChecks
    nb, res = assess.JudgeChecks(config=cfg).preprocess(nb, res)             # what score.stage runs last
    graded = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade"))
    assert graded.outputs[0].evalue == "f(2) is wrong" and "sites" not in graded.metadata["mlbd"]


def test_a_judged_check_with_an_f_string_message_reports_its_template():
    cell = 'for k in [1, 2]:\n    assert f(k) == 4, f"f({k}) is wrong"\n'
    _kernel_source, sites = literals.rewrite(cell, "_t_chk", BIND)
    assert [s.message for s in sites] == ["f(…) is wrong"]
