"""Checks against a literal, judged by the trusted side (the kernel never sees the expected value).

A test cell's equality check against a literal (``assert f(3) == 9``, ``assert np.isclose(x, 0.25,
atol=1e-3)``, ``np.testing.assert_allclose(y, [1.0, 2.25])``, alone, in an ``and`` or in a loop
that always runs) reaches the student's kernel as ``_chk(K, f(3))``: the kernel computes the value
the test looks at and hands it to a recorder, which always says yes. The trusted side reads what
was recorded (a safe encoding: numbers, strings, lists, tuples, numpy arrays and scalars, shapes,
dtypes; nothing is unpickled) and evaluates the author's comparison itself, with the author's
operator, function and tolerance. Whatever the kernel does to its own execution (a swallowed
failure, a lenient ``np``, a patched ``assert_allclose``), a value it did not compute correctly
fails, because the expected value never entered the kernel: a hook can only guess it.

Left in the kernel as written: a check whose message names its value (the message would give it
away), a tolerance or keyword that is not a literal, a comparison function the notebook's imports
do not pin down, and checks that may not run (under an ``if``, in a loop that may be empty).
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import asdict, dataclass

import numpy

# Functions that hold when two arguments are equal within a tolerance, and their modules
_FUNCS = {"numpy": {"isclose", "allclose", "array_equal"},
          "math": {"isclose"},
          "numpy.testing": {"assert_allclose", "assert_array_equal", "assert_array_almost_equal",
                            "assert_almost_equal", "assert_equal"},
          "pandas.testing": {"assert_frame_equal", "assert_series_equal", "assert_index_equal"}}
_STATEMENTS = {"numpy.testing", "pandas.testing"}      # modules whose checks raise rather than return
_KEYWORDS = {"rtol", "atol", "rel_tol", "abs_tol", "decimal", "equal_nan", "strict",
             "check_dtype", "check_exact", "check_names", "check_index_type", "check_column_type", "check_like",
             "check_categorical", "check_freq", "check_flags", "check_series_type", "check_frame_type",
             "check_index", "check_order", "exact"}
_MESSAGES = {"err_msg", "msg", "verbose", "obj"}
MAX_RECORDS_TEXT = 1_000_000        # characters of recorded values the grader reads per cell (a whole
                                    # course notebook's solution records under 3,000)


_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.In: "in", ast.NotIn: "not in"}
_ORDER = tuple(_OPS)
_VALUE = "__v__"          # where the recorded value goes in a judged comparison
_EXPECTED = "__e__"       # where a reference's value goes (``references``)


@dataclass
class Site:
    """One check, as the trusted side evaluates it."""
    key: int
    kind: str                 # "compare" (v == LIT), "call" (inside an assert), "statement" (np.testing.*)
    literal: str              # the expected value's source
    literal_first: bool       # LIT == v rather than v == LIT / f(LIT, v) rather than f(v, LIT)
    module: str = ""          # "numpy", "numpy.testing" or "math" for calls
    func: str = ""
    keywords: dict | None = None
    message: str | None = None    # the author's message when it is a plain string
    line: int = 0             # 1-based, in the test cell's own source
    expr: str = ""            # a comparison: the author's, literals as written, the value as __v__
    reference: bool = False   # the expected side is a reference the test computes (``references``):
    expected: str = ""        # its values in the instructor's run, one per time the check ran (recorded)


def literal_value(node: ast.expr):
    """The value a node spells when it is a number, a string, or a flat list or tuple of numbers
    or of strings; else None."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)     # noqa: E731
    if number(value) or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and (all(map(number, value)) or all(isinstance(v, str) for v in value)):
        return value
    return None


def _dotted(node: ast.expr) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def resolve(func: ast.expr, bind: dict) -> tuple[str, str] | None:
    """``(module, name)`` of a comparison function as the notebook's trusted imports bind it
    (``bind``: ``integrity.binding_checks``' name → [module, attribute or None]); None otherwise."""
    parts = _dotted(func)
    if not parts:
        return None
    target = bind.get(parts[0])
    if not target:
        return None
    module, attr = target
    path = ([module] if attr is None else [module, attr]) + parts[1:]
    for split in range(len(path) - 1, 0, -1):
        mod, rest = ".".join(path[:split]), path[split:]
        if len(rest) == 1 and rest[0] in _FUNCS.get(mod, ()):
            return mod, rest[0]
    return None


_NUMBER_WORDS = {0: "zero|no|none", 1: "one|single", 2: "two|both|pair|twice", 3: "three|third|thrice",
                 4: "four|quarter", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten",
                 11: "eleven", 12: "twelve", 0.5: "half", 0.25: "quarter"}


def quotes(message: str, value) -> bool:
    """Whether an assert's message names ``value`` (a number in digits or in words, a string, an
    element of a list): a twin would then contradict its own message."""
    if not message:
        return False
    low = message.lower()
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, str):
            # a word is named as a word ("a" is not named by "lower-case"), anything else as written
            word = re.fullmatch(r"\w+", v) is not None
            if (re.search(rf"(?<!\w){re.escape(v.lower())}(?!\w)", low) if word else v.lower() in low):
                return True
            continue
        spellings = [re.escape(repr(v))] + ([str(int(v))] if float(v).is_integer() else [])
        if v in _NUMBER_WORDS:
            spellings.append(_NUMBER_WORDS[v])
        if re.search(rf"(?<![\w.])({'|'.join(spellings)})(?![\w.])", low):
            return True
    return False


def runs_body(loop: ast.stmt) -> bool:
    """Whether every statement directly in a ``for`` loop's body runs at least once whenever the
    loop finishes: it walks a non-empty literal (a list or tuple display, ``range(N)`` with N ≥ 1)
    and nothing in it skips ahead (``break``, ``continue``)."""
    if not isinstance(loop, ast.For) or loop.orelse:
        return False
    it = loop.iter
    if isinstance(it, (ast.List, ast.Tuple)):
        ok = bool(it.elts) and not any(isinstance(e, ast.Starred) for e in it.elts)
    elif isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range" and len(it.args) == 1:
        n = literal_value(it.args[0])
        ok = isinstance(n, int) and n >= 1 and not it.keywords
    else:
        ok = False
    return ok and not any(isinstance(n, (ast.Break, ast.Continue)) for n in ast.walk(loop))


def checks_that_run(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run whenever the cell passes: the top level and, recursively, the direct
    body of a loop that ``runs_body``. A check under an ``if`` or a ``try`` may never run, so
    changing its value would not make the twin fail."""
    out = []
    for stmt in body:
        out.append(stmt)
        if runs_body(stmt):
            out += checks_that_run(stmt.body)
    return out


PLACEHOLDER = "…"         # a formatted part of an f-string message, as feedback shows it


def message_node(stmt: ast.stmt, call: ast.Call | None = None) -> ast.expr | None:
    """The message of a check: an assert's, or a check call's ``err_msg=`` / ``msg=``."""
    if isinstance(stmt, ast.Assert):
        return stmt.msg
    if call is not None:
        named = {k.arg: k.value for k in call.keywords}
        return next((named[k] for k in ("err_msg", "msg", "obj") if k in named), None)
    return None


def message_text(node: ast.expr | None) -> str | None:
    """A message as the author wrote it: a plain string, or an f-string with each formatted part
    shown as ``PLACEHOLDER`` (what it formats may be an expected value); None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else PLACEHOLDER
                       for v in node.values)
    return None


def call_keywords(node: ast.Call) -> dict | None:
    """A two-argument comparison call's keywords (tolerances and the like) when all are literal; None
    when the call has another shape or a keyword the grader cannot evaluate itself."""
    if len(node.args) != 2 or any(isinstance(a, ast.Starred) for a in node.args):
        return None
    keywords = {}
    for k in node.keywords:
        if k.arg in _MESSAGES:
            continue
        if k.arg not in _KEYWORDS:
            return None
        try:
            keywords[k.arg] = ast.literal_eval(k.value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return keywords


def comparison_wrappers(source: str, bind: dict) -> dict[str, tuple[str, str, str]]:
    """The cell's own helpers that only re-raise a check's failure with the author's message,
    ``name → (module, function, message parameter)``: at the top level, bound nowhere else in the
    cell, exactly::

        def _check_frame(got, want, msg, **kw):
            try:
                pd.testing.assert_frame_equal(got, want, **kw)
            except AssertionError:
                raise AssertionError(msg) from None

    A call ``_check_frame(a, b, msg="…", check_dtype=False)`` is then that check with that message."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return {}
    bound: dict[str, int] = {}
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        names = [node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else \
            [node.id] if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) else \
            [a.asname or a.name.split(".")[0] for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
        for n in names:
            bound[n] = bound.get(n, 0) + 1
    out = {}
    for fn in body:
        if not isinstance(fn, ast.FunctionDef) or fn.decorator_list or bound.get(fn.name) != 1:
            continue
        a = fn.args
        params = [x.arg for x in a.args]
        if len(params) != 3 or a.posonlyargs or a.vararg or a.kwonlyargs or a.defaults or a.kwarg is None:
            continue
        if len(fn.body) != 1 or not isinstance(fn.body[0], ast.Try):
            continue
        t = fn.body[0]
        if t.orelse or t.finalbody or len(t.body) != 1 or len(t.handlers) != 1 or not isinstance(t.body[0], ast.Expr):
            continue
        call, h = t.body[0].value, t.handlers[0]
        where = resolve(call.func, bind) if isinstance(call, ast.Call) else None
        if where is None or where[0] not in _STATEMENTS:
            continue
        if [getattr(x, "id", None) for x in call.args] != params[:2] or len(call.keywords) != 1 or \
                call.keywords[0].arg is not None or getattr(call.keywords[0].value, "id", None) != a.kwarg.arg:
            continue
        r = h.body[0] if len(h.body) == 1 else None
        if not (isinstance(h.type, ast.Name) and h.type.id == "AssertionError" and h.name is None and bound.get("AssertionError") is None
                and isinstance(r, ast.Raise) and isinstance(r.exc, ast.Call) and getattr(r.exc.func, "id", None) == "AssertionError"
                and len(r.exc.args) == 1 and getattr(r.exc.args[0], "id", None) == params[2] and not r.exc.keywords):
            continue
        out[fn.name] = (where[0], where[1], params[2])
    return out


# What an operand of a check is, to ``CheckFinder``
FIXED, VALUE, NEITHER = "fixed", "value", "neither"


class CheckFinder:
    """A cell's checks of one value against a fixed side, statement by statement (``statement``):
    ``assert`` comparisons (``v == 3``, ``0.5 < acc <= 1``), ``assert`` of a call and
    ``np.testing.*`` statements. ``role(node)`` says what an operand is: FIXED (what the value is
    checked against: a literal, or with ``reference`` a reference the trusted side knows), VALUE
    (what the student's kernel computes) or NEITHER (a literal kept as written beside a reference).
    ``sites``: ``(replaced node, fixed node, value node, Site)`` in the order found (keys 0, 1, ...);
    a check whose message names one of its literals is left out (a twin would contradict it)."""

    def __init__(self, source: str, bind: dict, role, reference: bool = False):
        self.source, self.bind, self.role, self.reference = source, bind, role, reference
        self.sites: list[tuple[ast.AST, ast.expr, ast.expr, Site]] = []
        self.wrappers = comparison_wrappers(source, bind)

    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Assert):
            self._condition(stmt, stmt.test)
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            self._call(stmt, stmt.value, "statement")

    def _text(self, node) -> str:
        return ast.get_source_segment(self.source, node) or ""

    def _add(self, stmt, replaced, fixed: list, val, site: Site, message: ast.expr | None = None) -> None:
        node = message if message is not None else message_node(stmt, replaced if isinstance(replaced, ast.Call) else None)
        text = self._text(node) if node is not None else ""
        if any(quotes(text, v) for v in map(literal_value, fixed) if v is not None):
            return
        site.message, site.line, site.key = message_text(node), stmt.lineno, len(self.sites)
        site.literal, site.reference = self._text(fixed[0]), self.reference
        self.sites.append((replaced, fixed[0], val, site))

    def _condition(self, stmt, test) -> None:
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
            for v in test.values:
                self._condition(stmt, v)
        elif isinstance(test, ast.Compare) and all(type(op) in _ORDER for op in test.ops):
            operands = [test.left, *test.comparators]
            roles = [self.role(o) for o in operands]
            values = [o for o, r in zip(operands, roles) if r == VALUE]
            fixed = [o for o, r in zip(operands, roles) if r == FIXED]
            # one value, compared with what is fixed: x == 3, 0.5 < acc <= 1, c in (1, 2); never a value
            # that is the container of an `in` (a dict, a History: the recorder carries neither)
            if len(values) != 1 or not fixed or (self.reference and len(fixed) > 1):
                return
            val, ref = values[0], fixed[0]
            if any(isinstance(op, (ast.In, ast.NotIn)) and o is val for op, o in zip(test.ops, test.comparators)):
                return
            spell = lambda o: _VALUE if o is val else _EXPECTED if self.reference and o is ref else self._text(o)  # noqa: E731
            expr = spell(operands[0]) + "".join(f" {_OPS[type(op)]} {spell(o)}" for op, o in zip(test.ops, test.comparators))
            self._add(stmt, test, fixed, val, Site(0, "compare", "", operands.index(ref) < operands.index(val), expr=expr))
        elif isinstance(test, ast.Call) and _equals_method(test):
            self._equals(stmt, test)
        elif isinstance(test, ast.Call):
            self._call(stmt, test, "call")

    def _equals(self, stmt, node) -> None:
        """``assert a.equals(b)``: pandas' own equality of two frames, series or indexes."""
        a, b = node.func.value, node.args[0]
        roles = (self.role(a), self.role(b))
        if set(roles) != {FIXED, VALUE}:
            return
        first = roles[0] == FIXED
        fixed, val = (a, b) if first else (b, a)
        self._add(stmt, node, [fixed], val, Site(0, "call", "", first, PANDAS_METHOD, "equals", {}))

    def _call(self, stmt, node, kind) -> None:
        where, message = resolve(node.func, self.bind), None
        wrapper = self.wrappers.get(node.func.id) if isinstance(node.func, ast.Name) else None
        if wrapper is not None and kind == "statement":
            where, (node, message) = wrapper[:2], _unwrapped(node, wrapper[2])
            if node is None:
                return
        if where is None or (kind == "call") == (where[0] in _STATEMENTS):
            return
        keywords = call_keywords(node)
        if keywords is None:
            return
        a, b = node.args
        roles = (self.role(a), self.role(b))
        if set(roles) != {FIXED, VALUE}:
            return
        first = roles[0] == FIXED
        fixed, val = (a, b) if first else (b, a)
        self._add(stmt, node, [fixed], val, Site(0, kind, "", first, where[0], where[1], keywords), message)


PANDAS_METHOD = "pandas method"     # a Site's module when its check is a method of a pandas object


def _equals_method(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Attribute) and node.func.attr == "equals" and len(node.args) == 1 \
        and not node.keywords and not isinstance(node.args[0], ast.Starred)


def _unwrapped(call: ast.Call, message_param: str) -> tuple[ast.Call | None, ast.expr | None]:
    """A call of a ``comparison_wrappers`` helper as the call of the check it wraps (same node
    positions, so that ``rewrite`` replaces the whole call), and the message it was handed."""
    args, keywords = list(call.args), [k for k in call.keywords if k.arg != message_param]
    message = next((k.value for k in call.keywords if k.arg == message_param), None)
    if len(args) == 3 and message is None:
        message = args.pop()
    if message is None or len(args) != 2 or any(k.arg is None for k in keywords):
        return None, None
    inner = ast.Call(func=call.func, args=args, keywords=keywords)
    return ast.copy_location(inner, call), message


def sites_of(source: str, bind: dict) -> list[tuple[ast.AST, ast.expr, ast.expr, Site]]:
    """Every check of a cell against literals, judged outside the kernel: ``(replaced node, literal
    node, value node, Site)`` in source order (keys 0, 1, ...)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    finder = CheckFinder(source, bind, lambda n: VALUE if literal_value(n) is None else FIXED)
    for stmt in checks_that_run(tree.body):
        finder.statement(stmt)
    return finder.sites


def line_offsets(source: str) -> list[int]:
    """Byte offset of each line start (ast columns are UTF-8 byte offsets)."""
    starts, pos = [0], 0
    for line in source.encode().splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def rewrite(source: str, name: str, bind: dict, base: int = 0, keep: frozenset = frozenset(), extra=()
            ) -> tuple[str, list[Site]]:
    """The cell as the kernel runs it and its sites, keys counted from ``base``: each judged check
    replaced by ``name(KEY, value)`` (the line count kept). ``keep``: (line, column) of literals
    whose checks also stay in the kernel as written, their value passed through ``name.v(KEY,
    value)`` so that it is judged here too. ``extra``: more sites in ``sites_of``'s shape (checks
    against a reference, ``references``). The source itself when nothing is judged."""
    found = sites_of(source, bind) + list(extra)
    if not found:
        return source, []
    raw, starts = source.encode(), line_offsets(source)
    at = lambda line, col: starts[line - 1] + col          # noqa: E731
    pieces, pos, sites = [], 0, []
    for replaced, lit, val, site in sorted(found, key=lambda f: (f[0].lineno, f[0].col_offset)):
        a, b = at(replaced.lineno, replaced.col_offset), at(replaced.end_lineno, replaced.end_col_offset)
        if a < pos:
            continue        # nested in a site already replaced
        v0, v1 = at(val.lineno, val.col_offset), at(val.end_lineno, val.end_col_offset)
        value = raw[v0:v1].decode()
        site.key = base + len(sites)
        if (lit.lineno, lit.col_offset) in keep:
            pieces += [raw[pos:v0], f"{name}.v({site.key}, ({value}))".encode()]
            pos = v1
        else:
            gone = raw[a:b].count(b"\n") - value.count("\n")
            pieces += [raw[pos:a], f"{name}({site.key}, ({value}){chr(10) * max(gone, 0)})".encode()]
            pos = b
        sites.append(site)
    pieces.append(raw[pos:])
    return b"".join(pieces).decode(), sites


# --------------------------------------------------------------------------------------------
# The kernel's side: a recorder (it is the student's kernel: nothing it records is trusted)
# --------------------------------------------------------------------------------------------

RECORDER = r'''
def _{nonce}_make():
    import sys
    records, budget = [], [50_000]     # values encoded since the grader last took them (one cell)
    def enc(v, depth=0):
        budget[0] -= 1
        if budget[0] < 0 or depth > 20:
            return ("?", "too large")
        t = type(v)
        if v is None:
            return ("n",)
        if t is bool:
            return ("b", v)
        if t is int:
            return ("i", str(v)) if v.bit_length() < 4000 else ("?", "too large")
        if t is float:
            return ("f", v.hex())
        if t is str:
            return ("s", v) if len(v) < 100_000 else ("?", "too large")
        if t is list or t is tuple:
            if len(v) > budget[0]:
                return ("?", "too large")
            return ("l" if t is list else "t", [enc(x, depth + 1) for x in v])
        if t is set or t is frozenset:
            if len(v) > budget[0]:
                return ("?", "too large")
            return ("set" if t is set else "fset", [enc(x, depth + 1) for x in v])
        np = sys.modules.get("numpy")
        if np is not None:
            if t is np.ndarray:
                if v.dtype.kind not in "biufU" or v.size > budget[0]:
                    return ("?", "array of " + str(v.dtype))
                return ("a", v.dtype.str, list(v.shape), [enc(x, depth + 1) for x in v.ravel().tolist()])
            if isinstance(v, np.generic) and type(v).__module__ == "numpy" and v.dtype.kind in "biufU":
                return ("g", v.dtype.str, enc(v.item(), depth + 1))
            if t is np.dtype or isinstance(v, np.dtype):
                return ("d", v.str)
        pd = sys.modules.get("pandas")
        if pd is not None and t in (pd.DataFrame, pd.Series, pd.Index, pd.RangeIndex):
            return enc_pandas(pd, t, v, depth)
        if t.__module__.startswith("tensorflow") and t.__name__ in ("EagerTensor", "ResourceVariable"):
            try:
                return enc(v.numpy(), depth + 1)
            except Exception:
                return ("?", t.__name__)
        if t.__name__ == "TensorShape" and hasattr(v, "as_list"):
            try:
                return ("shape", enc(list(v.as_list()), depth + 1))
            except Exception:
                return ("?", "TensorShape")
        return ("?", t.__name__[:100])
    def enc_values(v, depth):
        # a Series' or an Index's values: numpy numbers, bools and strings as an array, objects one by one
        np, dt = sys.modules["numpy"], v.dtype
        if isinstance(dt, np.dtype) and dt.kind in "biufUO":
            name = dt.str
        elif type(dt).__name__ == "StringDtype" and isinstance(dt.na_value, float):
            name = "str/" + str(dt.storage)       # pandas' default string dtype (NaN for missing)
        else:
            return ("?", "values of " + str(dt)[:60])
        if len(v) > budget[0]:
            return ("?", "too large")
        budget[0] -= len(v)
        return ("values", name, [enc(x, depth + 1) for x in v.tolist()])
    def enc_pandas(pd, t, v, depth):
        if t is pd.RangeIndex:
            return ("range", v.start, v.stop, v.step, enc(v.name, depth + 1))
        if t is pd.Index:
            return ("index", enc_values(v, depth), enc(v.name, depth + 1))
        if t is pd.Series:
            return ("series", enc_values(v, depth), enc(v.index, depth + 1), enc(v.name, depth + 1))
        if v.shape[0] * v.shape[1] > budget[0]:
            return ("?", "too large")
        return ("frame", enc(v.index, depth + 1), enc(v.columns, depth + 1),
                [enc_values(v.iloc[:, j], depth) for j in range(v.shape[1])])
    def chk(key, value):
        try:
            n = get_ipython().execution_count
        except Exception:
            n = None
        try:
            records.append((n, key, enc(value)))
        except Exception as e:
            records.append((n, key, ("?", type(e).__name__)))
        return True
    def take(everything=False):
        # this execution's records only (a canary that failed was not asked for its own)
        try:
            n = get_ipython().execution_count
        except Exception:
            n = None
        out = repr([r for r in records if everything or r[0] == n])
        records.clear()
        budget[0] = 50_000
        return out
    chk.take = take
    chk.v = lambda key, value: (chk(key, value), value)[1]
    return chk
{name} = _{nonce}_make()
del _{nonce}_make
'''


def recorder_source(nonce: str, name: str) -> str:
    return RECORDER.format(nonce=nonce, name=name).strip()


def take_expression(name: str) -> str:
    """The user expression that hands the grader what the recorder holds (and empties it)."""
    return f"(lambda f: f.__globals__[{name!r}].take())(lambda: 0)"


# --------------------------------------------------------------------------------------------
# The trusted side
# --------------------------------------------------------------------------------------------

class Unreadable(ValueError):
    """What the kernel sent is not a well-formed record."""


class _Shape(tuple):
    """A TensorShape as recorded: equal to any sequence with the same dimensions, as TensorShape is."""

    def __eq__(self, other):
        return isinstance(other, (list, tuple)) and list(self) == list(other)

    def __ne__(self, other):
        return not self == other

    __hash__ = tuple.__hash__


@dataclass
class Unrecorded:
    """A value of a type the recorder does not carry: it equals nothing."""
    what: str

    def __eq__(self, other):
        return False

    __hash__ = None


def decode(e):
    if not isinstance(e, tuple) or not e or not isinstance(e[0], str):
        raise Unreadable("not a record")
    tag, rest = e[0], e[1:]
    if tag == "n" and not rest:
        return None
    if tag == "b" and len(rest) == 1 and isinstance(rest[0], bool):
        return rest[0]
    if tag == "i" and len(rest) == 1 and isinstance(rest[0], str) and len(rest[0]) < 1300:
        return int(rest[0])
    if tag == "f" and len(rest) == 1 and isinstance(rest[0], str):
        return float.fromhex(rest[0])
    if tag == "s" and len(rest) == 1 and isinstance(rest[0], str):
        return rest[0]
    if tag in ("l", "t") and len(rest) == 1 and isinstance(rest[0], list):
        items = [decode(x) for x in rest[0]]
        return items if tag == "l" else tuple(items)
    if tag in ("set", "fset") and len(rest) == 1 and isinstance(rest[0], list):
        items = [decode(x) for x in rest[0]]
        try:
            return set(items) if tag == "set" else frozenset(items)
        except TypeError:           # an item the kernel sent that cannot be in a set: equals nothing
            return Unrecorded(tag)
    if tag == "a" and len(rest) == 3 and isinstance(rest[0], str) and isinstance(rest[1], list) and isinstance(rest[2], list):
        dtype = numpy.dtype(rest[0])
        shape = tuple(int(n) for n in rest[1])
        if dtype.kind not in "biufU" or math.prod(shape) != len(rest[2]) or any(n < 0 for n in shape):
            raise Unreadable("array")
        return numpy.array([decode(x) for x in rest[2]], dtype=dtype).reshape(shape)
    if tag == "g" and len(rest) == 2 and isinstance(rest[0], str):
        dtype = numpy.dtype(rest[0])
        if dtype.kind not in "biufU":
            raise Unreadable("scalar")
        return dtype.type(decode(rest[1]))
    if tag == "d" and len(rest) == 1 and isinstance(rest[0], str) and len(rest[0]) < 40:
        return numpy.dtype(rest[0])
    if tag == "shape" and len(rest) == 1:
        dims = decode(rest[0])
        if not isinstance(dims, list):
            raise Unreadable("shape")
        return _Shape(dims)
    if tag == "?" and len(rest) == 1 and isinstance(rest[0], str):
        return Unrecorded(rest[0][:100])
    if tag in _PANDAS_TAGS:
        return _decode_pandas(tag, rest)
    raise Unreadable(f"unknown record {tag!r}")


_PANDAS_TAGS = ("range", "index", "series", "frame")


class _NotCarried(Exception):
    """Part of a pandas object the recorder did not carry (a categorical column, dates)."""


def _values(e) -> tuple[numpy.ndarray, numpy.dtype]:
    """A Series' or an Index's values as recorded, and their dtype (numbers, bools, strings, objects)."""
    if isinstance(e, tuple) and len(e) == 2 and e[0] == "?":
        raise _NotCarried(str(e[1])[:100])
    if not (isinstance(e, tuple) and len(e) == 3 and e[0] == "values" and isinstance(e[1], str) and isinstance(e[2], list)):
        raise Unreadable("values")
    if e[1] in ("str/python", "str/pyarrow"):
        import pandas

        values = [decode(x) for x in e[2]]
        if not all(isinstance(x, str) or (isinstance(x, float) and math.isnan(x)) for x in values):
            raise _NotCarried("strings")
        dtype = pandas.StringDtype(e[1][4:], na_value=numpy.nan)
        return pandas.array(values, dtype=dtype), dtype
    dtype = numpy.dtype(e[1])
    if dtype.kind not in "biufUO":
        raise Unreadable("values")
    values = [decode(x) for x in e[2]]
    if dtype.kind != "O":
        return numpy.array(values, dtype=dtype), dtype
    out = numpy.empty(len(values), dtype=object)      # element by element: a list stays one element
    for i, v in enumerate(values):
        out[i] = v
    return out, dtype


def _decode_pandas(tag: str, rest: tuple):
    """A pandas DataFrame, Series or Index rebuilt from what the recorder sent (only plain values and
    numpy dtypes: nothing of the kernel's runs here); one with a part the recorder did not carry
    equals nothing (``Unrecorded``)."""
    try:
        value = _pandas_object(tag, rest)
    except _NotCarried as e:
        return Unrecorded(f"{tag} with {e}")
    if any(isinstance(part, Unrecorded) for part in _pandas_parts(value)):
        return Unrecorded(f"{tag} with values not recorded")
    return value


def _pandas_parts(value):
    import pandas

    if isinstance(value, pandas.DataFrame):
        yield from (value.index.name, *value.columns, *value.index)
        for j in range(value.shape[1]):
            yield from value.iloc[:, j].tolist()
    elif isinstance(value, pandas.Series):
        yield from (value.name, value.index.name, *value.index, *value.tolist())
    elif isinstance(value, pandas.Index):
        yield from (value.name, *value)


def _pandas_object(tag: str, rest: tuple):
    import pandas

    if tag == "range":
        if len(rest) != 4 or not all(type(n) is int for n in rest[:3]) or rest[2] == 0:
            raise Unreadable("range")
        return pandas.RangeIndex(rest[0], rest[1], rest[2], name=decode(rest[3]))
    if tag == "index" and len(rest) == 2:
        values, dtype = _values(rest[0])
        return pandas.Index(values, dtype=dtype, name=decode(rest[1]), copy=False)
    if tag == "series" and len(rest) == 3:
        values, dtype = _values(rest[0])
        index = decode(rest[1])
        if isinstance(index, Unrecorded):
            raise _NotCarried(index.what)
        if not isinstance(index, pandas.Index) or len(index) != len(values):
            raise Unreadable("series")
        return pandas.Series(values, index=index, dtype=dtype, name=decode(rest[2]), copy=False)
    if tag == "frame" and len(rest) == 3 and isinstance(rest[2], list):
        index, columns = decode(rest[0]), decode(rest[1])
        for part in (index, columns):
            if isinstance(part, Unrecorded):
                raise _NotCarried(part.what)
        if not (isinstance(index, pandas.Index) and isinstance(columns, pandas.Index) and len(columns) == len(rest[2])):
            raise Unreadable("frame")
        data = {}
        for j, col in enumerate(rest[2]):
            values, dtype = _values(col)
            if len(values) != len(index):
                raise Unreadable("frame")
            data[j] = pandas.Series(values, index=index, dtype=dtype, copy=False)
        frame = pandas.DataFrame(data, index=index)
        frame.columns = columns
        return frame
    raise Unreadable(f"malformed {tag} record")


def parse_records(text) -> list[tuple[object, int, object]] | None:
    """The recorder's ``repr`` (the text/plain of the user expression, itself a repr of a string):
    ``[(execution count, key, value)]``, values decoded; None when it cannot be read."""
    if not isinstance(text, str) or len(text) > MAX_RECORDS_TEXT:
        return None
    try:
        inner = ast.literal_eval(text)
        raw = ast.literal_eval(inner) if isinstance(inner, str) else None
        if not isinstance(raw, list):
            return None
        out = []
        for item in raw:
            if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[1], int)):
                return None
            out.append((item[0], item[1], decode(item[2])))
        return out
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError):
        return None


def holds(site: Site, value, expected=None) -> bool:
    """The author's check on ``value``, evaluated here: True when it holds. ``expected``: the
    reference's value for a reference site (``references``), else the site's literal."""
    if isinstance(value, Unrecorded) or isinstance(expected, Unrecorded):
        return False
    try:
        if not site.reference:
            expected = ast.literal_eval(site.literal)
        if site.kind == "compare" and site.expr:
            return bool(_comparison(site.expr)(value, expected))
        if site.kind == "compare":
            return bool(expected == value if site.literal_first else value == expected)
        if site.module == PANDAS_METHOD and site.func == "equals":
            first, second = (expected, value) if site.literal_first else (value, expected)
            return _is_pandas(first) and bool(first.equals(second))
        module = {"numpy": numpy, "numpy.testing": numpy.testing, "math": math}.get(site.module) or _pandas_testing(site.module)
        func = getattr(module, site.func)
        args = (expected, value) if site.literal_first else (value, expected)
        result = func(*args, **(site.keywords or {}))
        return True if site.kind == "statement" else bool(result)
    except Exception:  # noqa: BLE001  (an AssertionError from numpy.testing, an ambiguous truth value, ...)
        return False


def _is_pandas(value) -> bool:
    import pandas

    return type(value) in (pandas.DataFrame, pandas.Series, pandas.Index, pandas.RangeIndex)


def _pandas_testing(module: str):
    if module != "pandas.testing":
        raise KeyError(module)
    import pandas.testing

    return pandas.testing


def expected_values(site: Site) -> list | None:
    """A reference site's values in the instructor's run (decoded), None when unreadable."""
    try:
        raw = ast.literal_eval(site.expected)
        return [decode(e) for e in raw] if isinstance(raw, list) else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError):
        return None


def _comparison(expr: str):
    """``expr`` (a chain of comparisons between literals and ``__v__``) as a function of ``__v__``;
    anything else in it is refused."""
    tree = ast.parse(expr, mode="eval")
    allowed = (ast.Expression, ast.Compare, ast.Constant, ast.Tuple, ast.List, ast.UnaryOp, ast.USub, ast.UAdd,
               ast.Load, *_ORDER)
    for node in ast.walk(tree):
        if not (isinstance(node, allowed) or (isinstance(node, ast.Name) and node.id in (_VALUE, _EXPECTED))):
            raise ValueError(f"not a comparison with literals: {expr!r}")
    code = compile(tree, "<judged check>", "eval")
    return lambda value, expected=None: eval(code, {"__builtins__": {}},      # noqa: S307  (checked above)
                                             {_VALUE: value, _EXPECTED: expected})


@dataclass
class Judged:
    """The trusted verdict on one cell's judged checks: the first that failed (or never ran)."""
    failed: Site | None
    why: str = ""


def judge(sites: list[Site], records: list | None, ran_to_end: bool) -> Judged:
    """Every site's recorded values (of this execution: the recorder hands over only those) must
    satisfy its check, a reference site's n-th value against the n-th value of the instructor's
    run. ``ran_to_end``: the kernel finished the cell without error, so every site ran (a
    reference site as many times as in the instructor's run)."""
    if not sites:
        return Judged(None)
    if records is None:
        return Judged(sites[0], "the values the checks look at could not be read back from the kernel")
    by_key = {s.key: s for s in sites}
    expected = {s.key: expected_values(s) for s in sites if s.reference}
    seen: dict[int, int] = {}
    for _count, key, value in records:
        site = by_key.get(key)
        if site is None:
            continue
        n = seen[key] = seen.get(key, 0) + 1
        if site.reference:
            want = expected[key]
            if want is None or n > len(want):
                return Judged(site, "the check ran more often than in the instructor's run")
            if not holds(site, value, want[n - 1]):
                return Judged(site, "check failed")
        elif not holds(site, value):
            return Judged(site, "check failed")
    if ran_to_end:
        missing = [s for s in sites if s.key not in seen or (s.reference and seen[s.key] < len(expected[s.key] or ()))]
        if missing:
            return Judged(missing[0], "the check did not run")
    return Judged(None)


def site_dicts(sites: list[Site]) -> list[dict]:
    return [asdict(s) for s in sites]


def sites_from(dicts) -> list[Site]:
    return [Site(**d) for d in dicts or []]
