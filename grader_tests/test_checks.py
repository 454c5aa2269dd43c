"""mlbd.checks: the line a visible test cell prints when it passes."""
import pytest

from mlbd.checks import passed

pytestmark = pytest.mark.unit


def test_passed_prints_one_line_naming_the_exercise(capsys):
    passed("split_indices")
    assert capsys.readouterr().out == "\u2713 split_indices: visible tests passed (hidden tests run when graded)\n"


def test_passed_without_hidden_tests_does_not_mention_them(capsys):
    passed("quick_checks", hidden=False)
    assert capsys.readouterr().out == "\u2713 quick_checks: visible tests passed\n"
