"""What the course maintainers decided about surviving mutants: ``grader_tests/mutants/<a>.txt``.

One line per mutant, its key (``SOLUTION_ID | OPERATOR | ORIGINAL LINE | CHANGE``, as
``mlbd mutants`` prints it) after a verdict and before `` :: `` and the reason::

    equivalent selection | off-by-one | return df.iloc[:n] | ... :: slicing past the end is the same here
    survivor   fit_line | drop-argument | ... :: backlog: no test fits with a non-default alpha yet

*equivalent*: the mutant cannot change what the function is specified to do (it is left out of
the score). *survivor*: a real weakness not yet killed by a test (it counts against the score,
and the CI sample accepts it only because it is written down here).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .runner import MutantResult

VERDICTS = ("equivalent", "survivor")


@dataclass
class Decisions:
    equivalent: dict[str, str] = field(default_factory=dict)
    survivor: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "Decisions":
        out = cls()
        if not path.exists():
            return out
        for lineno, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            verdict, _, rest = line.partition(" ")
            key, sep, reason = rest.strip().partition(" :: ")
            if verdict not in VERDICTS or not sep or not reason.strip():
                raise ValueError(f"{path}:{lineno}: expected '<equivalent|survivor> KEY :: reason'")
            getattr(out, verdict)[key.strip()] = reason.strip()
        return out


@dataclass
class Score:
    total: int
    killed: int
    equivalent: int
    survived: list[MutantResult]

    @property
    def score(self) -> float:
        counted = self.total - self.equivalent
        return self.killed / counted if counted else 1.0


def score(results: list[MutantResult], decisions: Decisions) -> Score:
    killed = sum(r.killed for r in results)
    equivalent = sum(1 for r in results if not r.killed and r.mutant.key in decisions.equivalent)
    survived = [r for r in results if not r.killed and r.mutant.key not in decisions.equivalent]
    return Score(len(results), killed, equivalent, survived)


def unrecorded(results: list[MutantResult], decisions: Decisions) -> list[MutantResult]:
    """Survivors nobody has looked at: neither equivalent nor in the backlog."""
    return [r for r in results if not r.killed and r.mutant.key not in decisions.equivalent
            and r.mutant.key not in decisions.survivor]
