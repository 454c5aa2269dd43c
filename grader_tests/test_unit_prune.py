"""Fast tier: a judged test cell's reference computations leave the kernel (``mlbd.grading.prune``)
when nothing else needs them and leaving them out changes nothing else."""
from __future__ import annotations

import textwrap

import nbformat
import pytest

from mlbd.grading import integrity, literals, prune, references

pytestmark = pytest.mark.unit

SETUP = "import numpy as np\ndata = np.arange(6.0)\n_rng = np.random.default_rng(0)\n"
SOLUTION = "def f(v):\n    return 2 * np.asarray(v)\n"


def _kernel(test: str, later: list[tuple[str, bool]] = ()) -> str:
    """The test cell as the kernel gets it: every reference check judged, then pruned."""
    locked = nbformat.v4.new_code_cell(SETUP)
    locked.metadata["nbgrader"] = {"locked": True, "grade_id": "setup"}
    sol = nbformat.v4.new_code_cell(SOLUTION)
    sol.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "q1"}
    cell = nbformat.v4.new_code_cell(test)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 1, "grade_id": "t1"}
    nb = nbformat.v4.new_notebook(cells=[locked, sol, cell])
    bind = integrity.binding_checks(nb)["bind"]
    entries, before = references.notebook_sites(nb, bind)[2]
    kernel, _ = literals.rewrite(test, "_k", bind, 0, frozenset(), entries)
    out = prune.prune([(test, kernel)], before, list(later))[0]
    assert out.count("\n") == test.count("\n")
    return out


REF = textwrap.dedent('''\
    def _ref(v):
        out = np.zeros_like(v)
        out[:] = 2 * v
        return out
    _x = data.copy()
    _want = _ref(data)
    _got = f(_x)
    np.testing.assert_allclose(_got, _want, err_msg="f is wrong")''')


def test_the_reference_and_the_function_computing_it_leave_the_kernel():
    kernel = _kernel(REF)
    assert "_ref" not in kernel and "_want" not in kernel
    assert "_got = f(_x)" in kernel and "_x = data.copy()" in kernel


@pytest.mark.parametrize("old, new, kept", [
    # a random draw moves the generator that later cells draw from
    ("_want = _ref(data)", "_want = _ref(data) + 0 * _rng.normal()", "_want = "),
    # a function that changes what it is handed
    ("    out[:] = 2 * v", "    v[0] = v[0]\n    out[:] = 2 * v", "_want = "),
    # a method that changes its object
    ("_want = _ref(data)", "_want = _ref(data)\n_lst = [1]\n_tmp = _lst.append(2)\nprint(_lst)", "_tmp = "),
])
def test_a_statement_that_may_change_something_else_stays(old, new, kept):
    assert old in REF
    assert kept in _kernel(REF.replace(old, new))


def test_dead_chains_go_whole():
    kernel = _kernel(REF + "\n_m = np.polynomial.Polynomial.fit(data, data, 1)\n_m2 = _m")
    assert "_m" not in kernel


def test_what_later_cells_use_stays():
    assert "_want = " in _kernel(REF, later=[("print(_want)", True)])         # a later test or locked cell
    assert "_want = " not in _kernel(REF, later=[("print(_want)", False)])    # a student's: private names are not theirs
    public = REF.replace("_want", "want")
    assert "want = " in _kernel(public, later=[("print(want)", False)])


def test_a_name_read_by_an_augmented_assignment_stays():
    source = REF + "\n_n = 0\n_n += 1\nprint(_n)"
    assert "_n = 0" in _kernel(source)
