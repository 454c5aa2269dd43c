"""Fast tier: checks against a reference the test computes (``mlbd.grading.references``).

Which references are clean (only the author's code and data decide them), how the test reaches the
kernel, and how the grader judges the student's recorded values against the instructor's run. The
recorder runs in-process (no kernel)."""
from __future__ import annotations

import textwrap
import types

import nbformat
import numpy as np
import pytest

from mlbd.grading import instructor_run, integrity, literals, references
from mlbd.grading.protocol import MARK

pytestmark = pytest.mark.unit

SETUP = "import numpy as np\ndata = np.arange(6.0)\ndef _twice(v):\n    return 2 * np.asarray(v)\n"
SOLUTION = "def f(v):\n    return 2 * np.asarray(v)\n"
TEST = textwrap.dedent('''\
    _x = data.copy()
    _got = f(_x)
    np.testing.assert_allclose(_got, _twice(data), err_msg="f is wrong")
    assert np.array_equal(_x, data), "f must not change its input"
    for _k in (1, 2):
        assert np.allclose(f(data[:_k].copy()), _twice(data[:_k])), "f is wrong on a prefix"
    assert len(_got) == len(data), "one value per input"''')


def _nb(*student_cells: str, test: str = TEST, setup: str = SETUP) -> nbformat.NotebookNode:
    locked = nbformat.v4.new_code_cell(setup)
    locked.metadata["nbgrader"] = {"locked": True, "grade": False, "solution": False, "grade_id": "setup"}
    sol = nbformat.v4.new_code_cell(SOLUTION)
    sol.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "q1"}
    cells = [locked, sol]
    for source in student_cells:
        cells.append(nbformat.v4.new_code_cell(source))
    t = nbformat.v4.new_code_cell(test)
    t.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 1, "grade_id": "t1"}
    return nbformat.v4.new_notebook(cells=[*cells, t])


def _refs(nb) -> list[str]:
    found = references.notebook_sites(nb, integrity.binding_checks(nb)["bind"])
    return [e[3].literal for i in sorted(found) for e in found[i][0]]


def test_clean_references_are_found_with_what_they_read():
    assert _refs(_nb()) == ["_twice(data)", "data", "_twice(data[:_k])", "len(data)"]


ALL = ["_twice(data)", "data", "_twice(data[:_k])", "len(data)"]


@pytest.mark.parametrize("student", [
    "print(data.shape, len(data), data[2], data.sum())", "np.mean(data) + 1", "data.copy().sort()",
    "model.fit(data.reshape(-1, 1), data)", "x = data.copy()\nx[0] = 1", "if data.any():\n    print(data)",
    "print(f'{data}')", "y = np.mean(data)", "z = [1, 2][int(data[0])]",
])
def test_a_students_cell_that_only_reads_leaves_the_references_clean(student):
    assert _refs(_nb(student)) == ALL


@pytest.mark.parametrize("student", [
    "data.sort()", "data[0] = 1", "y = data", "y = data[:3]", "y = data.reshape(2, 3)", "y = np.asarray(data)",
    "np.random.shuffle(data)", "np.add(data, 1, out=data)", "xs = []\nxs.append(data)", "for r in data:\n    pass",
    "def g():\n    return data", "import pandas as pd\npd.Series(data).clip(0, 1, inplace=True)", "helper(data)",
    "data += 1", "del data",
])
def test_a_students_cell_that_may_change_a_name_takes_it_out(student):
    assert _refs(_nb(student)) == []


@pytest.mark.parametrize("student, left", [
    ("data.sort()", []),                                   # a student's cell may change what it mentions
    ("x = data[:3]", []),
    ("def g():\n    global data\n    data = data * 2", []),
    ("def g(data):\n    return data * 2", ["_twice(data)", "data", "_twice(data[:_k])", "len(data)"]),  # a parameter
    ("def g(x):\n    from numpy import asarray as data\n    return data(x)", ["_twice(data)", "data", "_twice(data[:_k])", "len(data)"]),  # its own import
    ("from numpy import asarray as data", []),
    ("np.random.seed(0)\nprint(len(range(3)))", ["_twice(data)", "data", "_twice(data[:_k])", "len(data)"]),
    ("_twice = lambda v: v", []),                          # the author's function, rebound
])
def test_what_a_students_cell_mentions_is_not_clean(student, left):
    assert _refs(_nb(student)) == left


@pytest.mark.parametrize("test, refs", [
    # handed to the student's function (it may change it): every later reference that reads it is out
    ("_got = f(data)\nnp.testing.assert_allclose(_got, _twice(data))", []),
    # a view shares the object: handing the view hands the data
    ("_v = data[:3]\n_got = f(_v)\nnp.testing.assert_allclose(_got, _twice(data[:3]))", []),
    # a copy shares nothing
    ("_v = data[:3].copy()\n_got = f(_v)\nnp.testing.assert_allclose(_got, _twice(data[:3]))", ["_twice(data[:3])"]),
    # stored into by a method that is handed the student's value
    ("_xs = [1.0]\n_xs.append(f(1))\nassert _xs == [1.0, 2.0]", []),
    # a library's fit leaves what it is handed alone, whatever the estimator was made with
    ("from sklearn.linear_model import Ridge\n_m = Ridge(alpha=float(f(1))).fit(data.reshape(-1, 1), data)\n"
     "assert np.allclose(f(data.copy()), _twice(data))", ["_twice(data)"]),
    # a number or a tuple of them cannot be changed in place; a list can
    ("_n = (3, 4)\n_got = f(_n)\nassert np.allclose(_got, _twice(_n))", ["_twice(_n)"]),
    ("for _k in (1, 2):\n    assert np.allclose(f(_k), _twice(_k))", ["_twice(_k)"]),
    ("_l = [3.0]\n_got = f(_l)\nassert np.allclose(_got, _twice(_l))", []),
    # a file read after the student's cells, the student's variant, globals(): never clean
    ("assert np.allclose(f(1), np.load('ref.npy'))", []),
    ("from mlbd import variant\nassert np.allclose(f(1), variant.rng('a').random())", []),
    ("assert f(1) == globals()['data'][1]", []),
    # ... nor anything that reaches them inside an author's function, or reads an impure module
    # without calling it (two runs with different variants can still agree by chance: lecture 2's
    # `make_readings()` drew each student's sensor log, and one sensor in five was the most missing)
    ("from mlbd import variant\ndef _mine():\n    return variant.rng('a').random()\nassert np.allclose(f(1), _mine())", []),
    ("from mlbd import variant\ndef _mine():\n    return variant.rng('a').random()\ndef _ref():\n    return _mine() + 1\n"
     "assert np.allclose(f(1), _ref())", []),
    ("import mlbd.variant\nclass _R:\n    def v(self):\n        return mlbd.variant.rng('a').random()\nassert f(1) == _R().v()", []),
    ("import os\nassert f(1) == len(os.environ['HOME'])", []),
    ("import sys\nassert f(1) == len(sys.argv)", []),
    ("def _pure(v):\n    return 2 * np.asarray(v)\nassert np.allclose(f(1), _pure(1))", ["_pure(1)"]),
    # copies made in a comprehension share nothing with what they copy; `a or b` is one of them
    ("_xs = (data, data + 1)\n_cs = [x.copy() for x in _xs]\n_got = f(*_xs)\nassert np.allclose(_got, _twice(_cs[0]))",
     ["_twice(_cs[0])"]),
    ("_xs = (data, data + 1)\n_cs = [x for x in _xs]\n_got = f(*_xs)\nassert np.allclose(_got, _twice(_cs[0]))", []),
    ("_y = None or data\n_got = f(_y)\nassert np.allclose(_got, _twice(data))", []),
    # a built-in a tainted value was made with is not changed by it (it was, and every later
    # `list(...)`, `float(...)` reference was left in the kernel; with the copies above, 16 checks of 6
    # course test cells were found only once both were fixed)
    ("_m = map(float, (1, 2))\n_got = f(_m)\nassert np.allclose(f(1), _twice(float(data[1])))", ["_twice(float(data[1]))"]),
    # a new object made from a generator's draw shares nothing with the generator, so handing it
    # to the student leaves later draws clean (lecture 2's `m` after `frame = pd.DataFrame(_rng.uniform(…))`)
    ("_g = np.random.default_rng(0)\n_a = np.asarray(_g.uniform(size=6))\n_got = f(_a)\n_b = _g.uniform(size=6)\n"
     "assert np.allclose(f(_b.copy()), _twice(_b))", ["_twice(_b)"]),
    ("_a = np.asarray(data)\n_got = f(_a)\nassert np.allclose(_got, _twice(data))", []),      # a view of data
    # a loop over rows: each name takes its own column (numbers there stay clean when handed over)
    ("for _n, _v in [(2, (1, 2)), (3, np.arange(3.0))]:\n    assert np.allclose(f(_n), _twice(_n))", ["_twice(_n)"]),
    ("for _n, _v in [(2, [1.0]), (3, [2.0])]:\n    _got = f(_v)\n    assert np.allclose(_got, _twice(_v))", []),
    # a name bound anew shares nothing with what it held, but what was tied through it stays tied
    ("_a = data\n_b = _a\n_a = np.zeros(6)\n_got = f(_b)\nassert np.allclose(f(1), _twice(data[1]))", []),
    ("_a = data\n_a = np.zeros(6)\n_got = f(_a)\nassert np.allclose(f(1), _twice(data[1]))", ["_twice(data[1])"]),
    # `+=` may change the object in place: the name keeps its ties
    ("_a = data\n_a += 1\n_got = f(_a)\nassert np.allclose(f(1), _twice(data[1]))", []),
    # a loop over a list bound just before: numbers in its rows stay clean when handed over, what the
    # rows hold otherwise does not
    ("_cases = [(2, [1.0]), (3, [2.0])]\nfor _n, _v in _cases:\n    f(_n)\nassert np.allclose(f(1), _twice(_cases[0][0]))",
     ["_twice(_cases[0][0])"]),
    ("_cases = [(2, [1.0]), (3, [2.0])]\nfor _n, _v in _cases:\n    f(_v)\nassert np.allclose(f(1), _twice(_cases[0][0]))", []),
    ("_cases = [(2, [1.0]), (3, [2.0])]\n_cases.append((data, data))\nfor _n, _v in _cases:\n    f(_n)\n"
     "assert np.allclose(f(1), _twice(_cases[0][0]))", []),
    # both sides the student's, or both the author's: not a reference check
    ("assert f(1) == f(1.0)", []),
    ("assert _twice(1) == 2 * data[1]", []),
])
def test_references_and_what_taints_them(test, refs):
    assert _refs(_nb(test=test)) == refs


def _kernel(f):
    ns = {"get_ipython": lambda: types.SimpleNamespace(execution_count=3), "np": np, "f": f,
          "data": np.arange(6.0), "_twice": lambda v: 2 * np.asarray(v)}
    exec(literals.recorder_source("t", "_t_chk"), ns)
    return ns


def _run_in_process(nb, f) -> None:
    """Execute a recording notebook here (kernel sources where a cell has one), leaving each test
    cell's records where the grader's client leaves them."""
    ns = {"get_ipython": lambda: types.SimpleNamespace(execution_count=3), "f": f}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get(MARK, {})
        exec(meta.get("kernel_source", cell.source), ns)
        if cell.metadata.get("nbgrader", {}).get("solution"):
            ns["f"] = f          # the answer this run stands for
        if "take" in meta:
            meta["records"] = repr(ns[instructor_run.RECORDER].take(everything=True))


def _expected(nb, solution=lambda v: 2 * np.asarray(v)) -> dict:
    """What the instructor's two runs give, computed in-process from ``solution``."""
    first, where1, sites = instructor_run.recording_notebook(nb)
    second, where2, _ = instructor_run.recording_notebook(nb, perturb=1)
    _run_in_process(first, lambda v: 2 * np.asarray(v))
    _run_in_process(second, solution)
    return instructor_run.agreed(instructor_run.recorded(first, where1), instructor_run.recorded(second, where2), sites)


def _graded(f, swallow=False, test=TEST, setup=SETUP):
    nb = _nb(test=test, setup=setup)
    expected = _expected(nb)
    kernel, sites = literals.rewrite(test, "_t_chk", integrity.binding_checks(nb)["bind"], 0, frozenset(),
                                     [e for e in references.notebook_sites(nb, integrity.binding_checks(nb)["bind"])[2][0]
                                      if (e[3].__setattr__("expected", expected["t1"][references.position(e)]) or True)])
    ns = _kernel(f)
    exec(setup, ns)
    code = kernel
    if swallow:
        code = "try:\n" + textwrap.indent(code, "    ") + "\nexcept BaseException:\n    pass\n"
    try:
        exec(code, ns)
        ran = True
    except Exception:  # noqa: BLE001
        ran = False
    return kernel, literals.judge(sites, literals.parse_records(repr(ns["_t_chk"].take())), ran)


def test_the_kernel_runs_the_check_without_the_reference_and_the_grader_judges_it():
    kernel, verdict = _graded(lambda v: 2 * np.asarray(v))
    assert verdict.failed is None
    assert "assert_allclose" not in kernel and "np.allclose" not in kernel and "array_equal" not in kernel
    assert kernel.count("\n") == TEST.count("\n")


@pytest.mark.parametrize("f", [
    lambda v: 3 * np.asarray(v),                          # wrong everywhere
    lambda v: np.asarray(v) + np.asarray(v)[:1],          # right on the first value only
    lambda v: (v.__setitem__(slice(None), 0) if isinstance(v, np.ndarray) else None) or 2 * np.asarray(v),  # changes its input
])
def test_a_wrong_answer_fails_even_when_the_kernel_swallows_every_failure(f):
    _kernel_source, verdict = _graded(f, swallow=True)
    assert verdict.failed is not None


PD_SETUP = SETUP + "import pandas as pd\n"
PD_WRAPPER = textwrap.dedent('''\
    def _check_frame(got, want, msg, **kw):
        try:
            pd.testing.assert_frame_equal(got, want, **kw)
        except AssertionError:
            raise AssertionError(msg) from None
    ''')
PD_TEST = PD_WRAPPER + textwrap.dedent('''\
    _df = pd.DataFrame({"a": data.copy()}, index=list("uvwxyz"))
    _got = pd.DataFrame({"a": f(data.copy())}, index=list("uvwxyz"))
    _check_frame(_got, _df * 2, msg="f is wrong", check_dtype=False)
    pd.testing.assert_series_equal(_got["a"], _df["a"] * 2, obj="column a")''')


def test_pandas_checks_and_the_authors_wrappers_of_them_are_judged_here():
    """``pd.testing.assert_*_equal`` and a helper of the test's own that only re-raises its failure
    with the author's message (lecture 2's ``_check_frame``) are judged on the frames the kernel
    recorded, with the author's keywords and message; the kernel never runs them."""
    assert _refs(_nb(test=PD_TEST, setup=PD_SETUP)) == ["_df * 2", '_df["a"] * 2']
    kernel, verdict = _graded(lambda v: 2 * np.asarray(v), test=PD_TEST, setup=PD_SETUP)
    assert verdict.failed is None and "_check_frame(_got" not in kernel and "assert_series_equal" not in kernel
    _, verdict = _graded(lambda v: 3 * np.asarray(v), swallow=True, test=PD_TEST, setup=PD_SETUP)
    assert verdict.failed is not None and verdict.failed.message == "f is wrong"
    # the wrapper's check_dtype=False holds for integers; assert_series_equal checks dtypes by default
    _, verdict = _graded(lambda v: (2 * np.asarray(v)).astype(int), swallow=True, test=PD_TEST, setup=PD_SETUP)
    assert verdict.failed is not None and verdict.failed.message == "column a"


def test_a_pandas_equals_check_is_judged_here():
    test = PD_TEST.split("_check_frame(_got")[0] + 'assert _got.equals(_df * 2), "f is wrong"\n'
    assert _refs(_nb(test=test, setup=PD_SETUP)) == ["_df * 2"]
    kernel, verdict = _graded(lambda v: 2 * np.asarray(v), test=test, setup=PD_SETUP)
    assert verdict.failed is None and ".equals(" not in kernel
    _, verdict = _graded(lambda v: 2 * np.asarray(v) + 1e-12, swallow=True, test=test, setup=PD_SETUP)
    assert verdict.failed is not None and verdict.failed.message == "f is wrong"


@pytest.mark.parametrize("wrapper", [
    PD_WRAPPER.replace("raise AssertionError(msg) from None", "pass"),                   # swallows
    PD_WRAPPER.replace("except AssertionError:", "except AssertionError:\n        print(want)"),
    PD_WRAPPER.replace("(got, want, **kw)", "(want, want, **kw)"),                        # compares the wrong things
    PD_WRAPPER + "_check_frame = lambda *a, **k: None\n",                                # rebound in the cell
])
def test_a_helper_that_does_more_or_less_than_re_raise_is_not_a_check(wrapper):
    assert _refs(_nb(test=PD_TEST.replace(PD_WRAPPER, wrapper), setup=PD_SETUP)) == ['_df["a"] * 2']


def test_a_reference_checked_fewer_or_more_times_than_in_the_instructors_run_fails():
    site = literals.Site(0, "compare", "", False, expr="__v__ == __e__", reference=True, expected=repr([("i", "2"), ("i", "4")]))
    assert literals.judge([site], [(1, 0, 2), (1, 0, 4)], True).failed is None
    assert literals.judge([site], [(1, 0, 2)], True).why == "the check did not run"
    assert literals.judge([site], [(1, 0, 2), (1, 0, 4), (1, 0, 4)], True).failed is site
    assert literals.judge([site], [(1, 0, 2), (1, 0, 5)], True).failed is site
    broken = literals.Site(0, "compare", "", False, expr="__v__ == __e__", reference=True, expected="[oops")
    assert literals.judge([broken], [(1, 0, 2)], True).failed is broken


def test_a_reference_is_used_only_where_the_solution_passes_it_in_the_second_run():
    nb = _nb()
    assert {len(v) for v in _expected(nb).values()} == {4}
    # a solution that differs in the second run (another variant, reseeded generators) on one
    # value: the references it then fails are not used
    kept = _expected(nb, solution=lambda v: 2 * np.asarray(v) + (np.asarray(v) > 0.5 * 5))
    assert 0 < len(kept.get("t1", {})) < 4


def test_values_the_recorder_could_not_carry_are_not_used():
    assert not instructor_run._carried(("l", [("i", "1"), ("?", "DataFrame")]))
    assert instructor_run._carried(("a", "<f8", [2], [("f", "0x1p-1"), ("f", "0x1p+0")]))
    site = literals.Site(0, "compare", "", False, expr="__v__ == __e__", reference=True)
    assert instructor_run.agreed({("t1", "p"): [("i", "1")]}, {("t1", "p"): [("i", "1")]}, {("t1", "p"): site}) \
        == {"t1": {"p": repr([("i", "1")])}}
    assert instructor_run.agreed({("t1", "p"): [("i", "1")]}, {("t1", "p"): [("i", "2")]}, {("t1", "p"): site}) == {}
    assert instructor_run.agreed({("t1", "p"): [("i", "1")]}, {("t1", "p"): [("i", "1"), ("i", "1")]},
                                 {("t1", "p"): site}) == {}


def test_the_perturbed_run_reseeds_before_every_students_cell_only():
    nb = _nb("x = 1")
    plain, _, _ = instructor_run.recording_notebook(nb)
    perturbed, _, _ = instructor_run.recording_notebook(nb, perturb=5)
    assert len(perturbed.cells) == len(plain.cells) + 2        # the solution cell and the free cell
    assert sum("_mlbd_reseed" in c.source for c in perturbed.cells) == 2


def test_add_checks_judges_references_in_test_and_canary_alike():
    nb = _nb()
    expected = {"t1": {k: v for k, v in _expected(nb)["t1"].items()}}
    integrity.add_checks(nb, 3, True, expected)
    test = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "t1")
    canary = next(c for c in nb.cells if c.metadata.get(MARK, {}).get("canary"))
    sites = literals.sites_from(test.metadata[MARK]["sites"])
    assert sum(s.reference for s in sites) == 4 and all(s.expected for s in sites if s.reference)
    for cell in (test, canary):
        assert "_twice(data))" not in cell.metadata[MARK]["kernel_source"]
    # without the instructor's values the checks stay in the kernel, as written
    plain = _nb()
    integrity.add_checks(plain, 3, True, None)
    test = next(c for c in plain.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "t1")
    assert "np.testing.assert_allclose(_got, _twice(data)" in test.metadata[MARK].get("kernel_source", test.source)


def test_the_cache_is_the_graders_only_and_follows_source(tmp_path):
    cache = instructor_run.Cache(tmp_path, "ps1")
    assert cache.load("k1") is None
    cache.save("k1", {"nb": {"t1": {"1:0:x": "[('i', '1')]"}}})
    assert cache.path.stat().st_mode & 0o077 == 0
    assert cache.load("k1") == {"nb": {"t1": {"1:0:x": "[('i', '1')]"}}}
    assert cache.load("k2") is None                    # source/ changed: computed again
    cache.path.write_text("{not json")
    assert cache.load("k1") is None
    key = instructor_run.digest({"nb": b"{}"}, {})
    assert key != instructor_run.digest({"nb": b"{ }"}, {}) and key != instructor_run.digest({"nb": b"{}"}, {"d.csv": b"1"})


def test_a_check_the_submission_keeps_in_the_kernel_is_noted_for_a_ta():
    expected = _expected(_nb())
    notes: list[str] = []
    integrity.add_checks(_nb("data.sort()"), 3, True, expected, notes)
    assert len(notes) == 1 and notes[0].startswith("t1: 4 check(s)") and "a TA should look" in notes[0]
    quiet: list[str] = []
    integrity.add_checks(_nb("print(data.mean())"), 3, True, expected, quiet)
    assert quiet == []
