"""`mlbd mutants`: the operators (unit tier), the runner on a small notebook whose answer is known,
and a fixed sample of the course's own mutants, every survivor of which must be written down."""
from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
import pytest

from mlbd.mutants import records
from mlbd.mutants.operators import mutants_of, solution_lines
from mlbd.mutants.runner import notebook_mutants, plan_for, run
from mlbd.mutants.session import decisions_path, mutate_assignment

ROOT = Path(__file__).resolve().parent.parent

CELL = textwrap.dedent('''\
    def count_above(values, thr=0.5, *, strict=True):
        """How many values exceed thr."""
        ### BEGIN SOLUTION
        values = list(values)
        if strict:
            return sum(1 for v in values if v > thr)
        return sum(1 for v in values if v >= thr)
        ### END SOLUTION


    def build(units=3):
        ### BEGIN SOLUTION
        return Dense(units, activation="relu", optimizer="adam")
        ### END SOLUTION
    ''')


def _by_operator(mutants):
    out = {}
    for m in mutants:
        out.setdefault(m.operator, []).append(m)
    return out


@pytest.mark.unit
def test_only_solution_lines_are_mutated_except_pinned_defaults():
    lines = solution_lines(CELL)
    assert lines == {4, 5, 6, 7, 13}
    mutants = mutants_of("count", CELL)
    for m in mutants:
        if m.operator != "force-default":
            assert m.line in lines, m.key
    changes = {m.change for m in mutants}
    assert "v > thr -> v >= thr" in changes and "v >= thr -> v > thr" in changes
    assert "'relu' -> 'tanh'" in changes, "Keras activations are swapped"
    assert "'adam' -> 'sgd'" in changes, "Keras optimizers are swapped"
    assert "activation='relu' -> (dropped)" in changes
    # the docstring is kept first when a default is pinned
    pinned = [m for m in mutants if m.change.startswith("thr -> 0.5")]
    assert pinned and '"""How many values exceed thr."""\n    thr = 0.5' in pinned[0].source.replace("'''", '"""')
    assert any(m.change.startswith("strict -> True") for m in mutants), "keyword-only defaults are pinned too"


@pytest.mark.unit
def test_mutants_are_distinct_valid_and_keyed_stably():
    mutants = mutants_of("count", CELL)
    sources = [m.source for m in mutants]
    assert len(set(sources)) == len(sources), "no two mutants are the same code"
    for m in mutants:
        compile(m.source, m.key, "exec")
    assert len({m.key for m in mutants}) == len(mutants)
    # an edit elsewhere in the cell (a comment, a new line above) keeps every key
    shifted = mutants_of("count", "# a comment\n\n" + CELL)
    assert {m.key for m in shifted} == {m.key for m in mutants}
    ops = _by_operator(mutants)
    assert {"compare", "remove-statement", "force-default", "drop-argument", "keras-activation",
            "keras-optimizer", "off-by-one"} <= set(ops)
    assert not mutants_of("x", "def f():\n    return 1\n"), "a cell without a solution region has no mutants"


@pytest.mark.unit
def test_decisions_file_parses_and_rejects_malformed(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("# comment\nequivalent s | compare | x | a -> b :: same here\n"
                    "survivor s | arith | y | + -> - :: backlog: no test with negative inputs\n")
    d = records.Decisions.read(good)
    assert d.equivalent == {"s | compare | x | a -> b": "same here"}
    assert list(d.survivor) == ["s | arith | y | + -> -"]
    bad = tmp_path / "b.txt"
    bad.write_text("equivalent s | compare | x | a -> b\n")
    with pytest.raises(ValueError, match="b.txt:1"):
        records.Decisions.read(bad)


def _tiny_notebook(path: Path) -> None:
    def graded(source, gid, **md):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["nbgrader"] = {"grade_id": gid, "locked": False, "schema_version": 3, **md}
        return cell
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import math"),
        graded(CELL.split("\n\ndef build")[0] + "\n", "count", solution=True, grade=False),
        # kills the comparison swaps, the removed list() is harmless (equivalent), ignores thr
        graded("assert count_above([0.2, 0.5, 0.9]) == 1\nassert count_above([0.5], strict=False) == 1\n",
               "test_count", grade=True, solution=False, points=1),
    ]
    nbformat.write(nb, str(path))


def test_runner_kills_what_the_tests_catch_and_reports_the_rest(tmp_path):
    nb_path = tmp_path / "tiny.ipynb"
    _tiny_notebook(nb_path)
    nb = nbformat.read(str(nb_path), as_version=4)
    assert plan_for(nb, 1).tests == [2]
    mutants = notebook_mutants(nb_path)
    results = {r.mutant.change: r for r in run({nb_path: mutants}, tmp_path / "work", jobs=1, timeout=20)}
    assert results["v > thr -> v >= thr"].killed_by == ["test_count"]
    assert results["v >= thr -> v > thr"].killed
    assert not results["thr -> 0.5 (ignores the argument)"].killed, "the tests never pass a non-default thr"
    survivor = [r for r in results.values() if not r.killed]
    removed_list = [r for r in survivor if r.mutant.operator == "remove-statement"]
    assert removed_list, "removing `values = list(values)` changes nothing for list inputs"
    s = records.score(list(results.values()), records.Decisions(equivalent={removed_list[0].mutant.key: "lists in"}))
    assert s.equivalent == 1 and s.killed == sum(r.killed for r in results.values())
    assert 0 < s.score < 1


@pytest.mark.parametrize("sampled", ["lecture01", "lecture02"])
def test_fixed_sample_every_survivor_is_recorded(sampled):
    """The CI sample: every mutant of two short notebooks. A survivor must be written down in
    grader_tests/mutants/<assignment>.txt, as equivalent (with the reason) or as backlog."""
    results = mutate_assignment(ROOT, sampled, jobs=1, timeout=60)
    assert len(results) >= 40
    decisions = records.Decisions.read(decisions_path(ROOT, sampled))
    new = records.unrecorded(results, decisions)
    assert not new, "surviving mutants nobody has looked at (kill them with a test, or record them):\n" + \
        "\n".join(r.mutant.key for r in new)
    s = records.score(results, decisions)
    assert s.killed >= 0.75 * (s.total - s.equivalent)
