"""What a student sees when a visible test cell passes.

A visible test cell that passes prints nothing by itself, so a student cannot tell "passed" from
"not run". Each visible test cell in ``source/`` ends with ``passed("<exercise>")``, after its last
visible assert (so a failing assert never reaches it) and before its hidden block.
"""
from __future__ import annotations


def passed(name: str, hidden: bool = True) -> None:
    """Print one line saying that the visible tests of ``name`` passed."""
    more = " (hidden tests run when graded)" if hidden else ""
    print(f"\u2713 {name}: visible tests passed{more}")
