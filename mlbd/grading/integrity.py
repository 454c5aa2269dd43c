"""Integrity checks: canary cells, a runtime probe for known hooks, and a static scan.

The sandbox protects the machine; it cannot make the student's kernel honest. Student code runs
before the tests and can hook them. Three checks catch the known ways:

- **Canaries** (trusted, one next to every test cell, before or after it at random where running
  the test twice is harmless): a copy of that test cell, same helpers, same hidden part, with one
  of its own top-level asserts (in the hidden part when there is one) repeated right after itself
  with the condition reversed, in the author's own spelling. It fails whatever the answer: at the original assert,
  at the reversed copy, or earlier. A canary that passes proves failures are being swallowed. A
  hook cannot tell the canary from the test by shape, helpers, size or message; only by knowing
  the hidden assertions, which the student never sees.
- **Probe** (first and last cell): reports IPython's input/AST transformers, custom exception
  handlers, event callbacks, patched shell methods, ``sys.excepthook``, replaced builtins and
  whether numpy's / math's assertion helpers are still the genuine ones. The grader compares the
  last report with the first.
- **Static scan** of the cells the student wrote, for the same hooks spelled out in code.

Canary and probe findings are strong (the submission's test cells are zeroed and flagged for
review); static findings alone flag for review and keep the scores.

Checks against a literal do not depend on any of this: ``add_checks`` has the kernel run them
without their expected values and the grader judges them (``literals``, ``assess.JudgeChecks``).
"""
from __future__ import annotations

import ast
import io
import json
import random
import re
import secrets
import tokenize

import nbformat

from . import literals
from .protocol import MARK, grader_error

WORDS = ["shape mismatch", "wrong result", "values differ", "unexpected output", "check your function",
         "incorrect", "not close enough", "result is off"]



# How a comparison reads when it must come out the other way.
_FLIP = {ast.Eq: "!=", ast.NotEq: "==", ast.Lt: ">=", ast.GtE: "<", ast.Gt: "<=", ast.LtE: ">",
         ast.In: "not in", ast.NotIn: "in", ast.Is: "is not", ast.IsNot: "is"}
_HIDDEN = re.compile(r"BEGIN HIDDEN TESTS(.*?)END HIDDEN TESTS", re.S)


_offsets = literals.line_offsets


def _contradiction(source: str, stmt: ast.Assert, starts: list[int]) -> str:
    """The text of ``stmt`` with its condition reversed, in the author's own spelling."""
    raw = source.encode()
    at = lambda line, col: starts[line - 1] + col          # noqa: E731
    begin, end = at(stmt.lineno, stmt.col_offset), at(stmt.end_lineno, stmt.end_col_offset)
    test = stmt.test
    t0, t1 = at(test.lineno, test.col_offset), at(test.end_lineno, test.end_col_offset)
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _FLIP:
        left_end = at(test.left.end_lineno, test.left.end_col_offset)
        right = test.comparators[0]
        right_start = at(right.lineno, right.col_offset)
        gap = raw[left_end:right_start].decode()
        op = re.search(r"not\s+in|is\s+not|==|!=|<=|>=|<|>|in|is", gap)
        if op and not re.search(r"[()]", gap):
            gap = gap[:op.start()] + _FLIP[type(test.ops[0])] + gap[op.end():]
            return (raw[begin:left_end] + gap.encode() + raw[right_start:end]).decode()
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = test.operand
        i0, i1 = at(inner.lineno, inner.col_offset), at(inner.end_lineno, inner.end_col_offset)
        return (raw[begin:t0] + raw[i0:i1] + raw[t1:end]).decode()
    return (raw[begin:t0] + b"not (" + raw[t0:t1] + b")" + raw[t1:end]).decode()


def reversed_copies(source: str, avoid: frozenset[int] = frozenset()) -> list[str]:
    """Every canary source a test cell can get from its own asserts: the whole cell with one
    top-level assert (one in the hidden part when there is one) repeated right after itself with
    the condition reversed. Empty when the cell has no top-level assert (or does not parse).
    ``avoid``: lines of asserts not to copy (checks the trusted side judges: a reversed copy would
    hand the kernel their expected value)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:      # magics: no statement to copy
        return []
    hidden = _HIDDEN.search(source)
    lo = source[:hidden.start()].count("\n") + 1 if hidden else 0
    hi = source[:hidden.end()].count("\n") + 1 if hidden else 0
    asserts = [s for s in tree.body if isinstance(s, ast.Assert) and s.lineno not in avoid]
    inside = [s for s in asserts if lo < s.lineno < hi]
    starts = _offsets(source)
    out = []
    for stmt in inside or asserts:
        # right after the copied assert: any statement in between could rebind or change what the
        # condition reads (a loop reusing its names, a fit), and a reversed copy that then held
        # would flag an honest submission as tampered
        lines = source.splitlines()
        lines.insert(stmt.end_lineno, _contradiction(source, stmt, starts))
        out.append("\n".join(lines))
    return out


def canary_cell(test: nbformat.NotebookNode, rng: random.Random, avoid: frozenset[int] = frozenset(),
                secret: frozenset[str] = frozenset()) -> nbformat.NotebookNode:
    """A canary that reads as the test cell itself (one of ``reversed_copies`` at random). Whatever
    the answer, it fails: at the original assert, at the reversed copy, or earlier. Only a kernel
    that swallows failures lets it pass. A cell without a top-level assert gets a plain failing
    assert in its own words."""
    copies = reversed_copies(test.source, avoid)
    if copies:
        new = rng.choice(copies)
    else:
        try:
            tree = ast.parse(test.source)
        except SyntaxError:
            tree = None
        literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                    and len(n.value) > 8 and n.value not in secret] if tree else []
        msg = rng.choice(literals) if literals else rng.choice(WORDS)
        new = test.source.rstrip() + f"\nassert {rng.randint(2, 999)} == {rng.randint(1000, 9999)}, {msg!r}"
    cell = nbformat.v4.new_code_cell(new)
    cell.metadata[MARK] = {"canary": True}
    return cell


# --------------------------------------------------------------------------------------------
# Twins: the test cell with one expected value changed
# --------------------------------------------------------------------------------------------

# Calls that hold only when their first two arguments are equal (within a tolerance).
_EQUAL_CALLS = {"isclose": (1e-5, 1e-8), "allclose": (1e-5, 1e-8), "assert_allclose": (1e-7, 0.0),
                "assert_array_equal": (0.0, 0.0), "assert_array_almost_equal": (0.0, 1.5e-6),
                "assert_almost_equal": (0.0, 1.5e-7), "assert_equal": (0.0, 0.0)}


_value = literals.literal_value


def _tolerance(call: ast.Call, name: str) -> tuple[float, float] | None:
    """The check's tolerance (rtol, atol); None when it is not spelled out as literals (a variable
    tolerance could be wide enough for the twin's value to pass too)."""
    rtol, atol = _EQUAL_CALLS[name]
    if len(call.args) > 2 or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    for kw in call.keywords:
        if kw.arg is None:
            return None
        if kw.arg in ("rtol", "rel_tol", "atol", "abs_tol", "decimal"):
            v = _value(kw.value)
            if not isinstance(v, (int, float)):
                return None
            if kw.arg in ("rtol", "rel_tol"):
                rtol = float(v)
            elif kw.arg in ("atol", "abs_tol"):
                atol = float(v)
            else:
                atol = 1.5 * 10 ** (-float(v))
    return rtol, atol


def _call_sites(call: ast.expr, asserted: bool) -> list[tuple[ast.expr, tuple[float, float]]]:
    """The literal arguments of an equality call (``np.isclose(x, LIT)`` inside an assert, the
    ``np.testing.assert_*`` checks as statements), with the call's tolerance."""
    if not isinstance(call, ast.Call):
        return []
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if name not in _EQUAL_CALLS or name.startswith("assert_") == asserted:
        return []
    tol = _tolerance(call, name)
    return [] if tol is None else [(arg, tol) for arg in call.args[:2] if _value(arg) is not None]


def _condition_sites(test: ast.expr) -> list[tuple[ast.expr, tuple[float, float]]]:
    """Literals an assert's condition requires a value to equal: ``x == LIT``, ``np.isclose(x,
    LIT)``, and each of those joined by ``and`` (all of them hold when the assert does)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [site for v in test.values for site in _condition_sites(v)]
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        return [(side, (0.0, 0.0)) for side in (test.left, test.comparators[0]) if _value(side) is not None]
    return _call_sites(test, asserted=True)


def _sites(stmt: ast.stmt) -> list[tuple[ast.expr, tuple[float, float]]]:
    """Literals a check statement requires its value to equal: ``assert x == LIT``, ``assert
    np.isclose(x, LIT)`` (alone or joined by ``and``) and the ``np.testing.assert_*`` equality
    checks, with their tolerance."""
    if isinstance(stmt, ast.Assert):
        return _condition_sites(stmt.test)
    if isinstance(stmt, ast.Expr):
        return _call_sites(stmt.value, asserted=False)
    return []


def _decimals(text: str) -> int | None:
    """Digits after the point of a plain decimal literal; None for an exponent or a hex spelling."""
    m = re.fullmatch(r"\s*[-+]?\d*\.(\d*)\s*", text)
    return len(m.group(1)) if m else None


def _number(value, text: str, tol: tuple[float, float], rng: random.Random) -> str | None:
    """``value`` moved well outside ``tol``, spelled like ``text`` (an int as an int, a decimal with
    as many decimals)."""
    rtol, atol = tol
    need = 2 * (atol + rtol * abs(value)) + 1e-9
    plain_int = re.fullmatch(r"\s*[-+]?\d+\s*", text) is not None
    places = _decimals(text)
    if not plain_int and places is None:
        return None
    for _ in range(20):
        if plain_int:
            step = max(rng.choice([2, 3, 4, 5, 7]), int(need) + 1)
            down = value - step
            # a count stays a count: a positive value never becomes 0 or negative, 0 never negative
            new = down if rng.random() < 0.5 and (down > 0 or value < 0) else value + step
            out = str(new)
        else:
            r = rng.uniform(0.1, 0.45) * rng.choice([-1, 1])     # a positive value stays positive
            new = value * (1 + r) if value else rng.choice([-1, 1]) * max(need * 10, rng.randint(1, 9) * 10 ** -max(places, 1))
            out = f"{new:.{places}f}"
        if abs(float(out) - value) > need and out.strip() != text.strip():
            return out
    return None


def _quoted(value: str, like: str) -> str | None:
    """``value`` as a string literal in ``like``'s quotes; None for prefixed or escaped spellings."""
    q = like[:1]
    if q not in ("'", '"') or like[:3] in ("\'\'\'", '"""'):
        return None
    if q in value or "\\" in value or "\n" in value or not value.isprintable():
        return None
    return q + value + q


def _mutant(source: str, node: ast.expr, tol, strings: list[str], rng: random.Random) -> str | None:
    """The source of a literal that differs from ``node``'s: a number moved out of tolerance, a
    string the cell uses elsewhere, a list with one element changed or two strings swapped."""
    value = _value(node)
    text = ast.get_source_segment(source, node) or ""
    if isinstance(value, (int, float)):
        return _number(value, text, tol, rng)
    if isinstance(value, str):
        others = sorted({s for s in strings if s != value and _quoted(s, text)})
        shape = lambda t: (t.isidentifier(), t.isupper(), t.islower(), t[:1].isupper())     # noqa: E731
        alike = [s for s in others if len(value) / 2 <= len(s) <= len(value) * 2 and shape(s) == shape(value)]
        # an expected value swapped for a sentence or a name of another kind would give the twin away
        return _quoted(rng.choice(alike), text) if alike else None
    parts = [ast.get_source_segment(source, e) for e in node.elts]
    if not all(parts):
        return None
    if all(isinstance(v, str) for v in value):
        pairs = [(i, j) for i in range(len(value)) for j in range(i + 1, len(value)) if value[i] != value[j]]
        if not pairs:
            return None
        i, j = rng.choice(pairs)
        parts[i], parts[j] = parts[j], parts[i]
    else:
        k = rng.randrange(len(parts))
        moved = _number(value[k], parts[k], tol, rng)
        if moved is None:
            return None
        parts[k] = moved
    # only the elements change: the brackets, commas and spacing between them are the author's
    a = node.elts[0]
    starts = _offsets(source)
    raw = source.encode()
    at = lambda line, col: starts[line - 1] + col          # noqa: E731
    out = raw[at(node.lineno, node.col_offset):at(a.lineno, a.col_offset)]
    for k, e in enumerate(node.elts):
        out += parts[k].encode()
        nxt = node.elts[k + 1] if k + 1 < len(node.elts) else None
        end = at(nxt.lineno, nxt.col_offset) if nxt else at(node.end_lineno, node.end_col_offset)
        out += raw[at(e.end_lineno, e.end_col_offset):end]
    return out.decode()


def twin_copies(source: str, rng: random.Random, allowed: frozenset[tuple[int, int]] | None = None) -> list[str]:
    """The sources of ``twins``."""
    return [text for text, _ in twins(source, rng, allowed)]


def twins(source: str, rng: random.Random, allowed: frozenset[tuple[int, int]] | None = None
          ) -> list[tuple[str, tuple[int, int]]]:
    """Every twin a test cell can get: the cell exactly as it is except for one expected value in a
    top-level equality check of its hidden part (``assert x == 3`` → ``assert x == 5``, a number
    moved well past the check's tolerance, a string swapped for another the cell uses, a list with
    one element changed or two swapped). An answer that passes the test fails its twin at that check,
    so a test and its twin that both pass mean the kernel makes failing checks pass; and a hook that
    wants to let twins fail and tests pass must tell which of the two holds the right value, which
    it cannot without knowing the answer. Empty for a cell without such a check (or not parsing)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    hidden = _HIDDEN.search(source)
    if not hidden:
        return []        # the release shows a visible test: a twin of it would be recognisable
    lo = source[:hidden.start()].count("\n") + 1
    hi = source[:hidden.end()].count("\n") + 1
    # the strings the hidden checks use as values: never a message, which no expected value looks like
    messages = {id(m) for node in ast.walk(tree) for part in (
        [node.msg] if isinstance(node, ast.Assert) and node.msg is not None else
        [k.value for k in node.keywords if k.arg in ("err_msg", "msg")] if isinstance(node, ast.Call) else [])
        for m in ast.walk(part)}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and lo < getattr(n, "lineno", 0) < hi and id(n) not in messages]
    starts = _offsets(source)
    raw = source.encode()
    out = []
    for stmt in literals.checks_that_run(tree.body):
        if not lo < stmt.lineno < hi:
            continue
        message = ""
        if isinstance(stmt, ast.Assert) and stmt.msg is not None:
            message = ast.get_source_segment(source, stmt.msg) or ""
        for node, tol in _sites(stmt):
            text = ast.get_source_segment(source, node)
            if allowed is not None and (node.lineno, node.col_offset) not in allowed:
                continue     # a check the kernel runs itself: its twin would differ from the test there
            if not text or literals.quotes(message, _value(node)):
                continue     # the author's message gives the value away: the twin's would not match it
            new = _mutant(source, node, tol, [s for s in strings if s not in message], rng)
            if new is None:
                continue
            a = starts[node.lineno - 1] + node.col_offset
            b = starts[node.end_lineno - 1] + node.end_col_offset
            out.append(((raw[:a] + new.encode() + raw[b:]).decode(), (node.lineno, node.col_offset)))
    return out


PROBE = r'''
def _{nonce}():
    import sys, json, builtins
    ip = get_ipython()
    shell_cls = type(ip)
    r = {{}}
    import os
    libs = tuple({{sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__)}})
    def user(f):
        f = getattr(f, "__func__", f)
        code = getattr(f, "__code__", None) or getattr(getattr(type(f), "__call__", None), "__code__", None)
        if code is None:
            return type(f).__name__ not in ("builtin_function_or_method", "method-wrapper")
        return not code.co_filename.startswith(libs)
    # hooks installed by libraries (matplotlib's post_execute flush, ...) are fine; count the user's
    r["input_transformers_post"] = sum(map(user, ip.input_transformers_post))
    r["input_transformers_cleanup"] = sum(map(user, ip.input_transformers_cleanup))
    r["ast_transformers"] = sum(map(user, ip.ast_transformers))
    r["custom_exceptions"] = len(tuple(ip.custom_exceptions))
    r["events"] = {{k: sum(map(user, v)) for k, v in ip.events.callbacks.items()}}
    r["patched_shell_methods"] = sorted(n for n in ("run_cell", "run_cell_async", "run_ast_nodes", "run_code",
        "showtraceback", "_showtraceback", "showsyntaxerror", "transform_cell", "transform_ast",
        "should_run_async", "ex", "ev", "run_line_magic", "user_expressions") if n in vars(ip)
        or getattr(shell_cls, n, None) is not getattr(sys.modules[shell_cls.__module__].__dict__.get(shell_cls.__name__, shell_cls), n, None))
    r["excepthook"] = repr(sys.excepthook)[:60]
    r["trace"] = [sys.gettrace() is not None, sys.getprofile() is not None]
    managed = {{"_", "input", "raw_input", "display", "get_ipython", "help", "exit", "quit", "copyright",
               "credits", "license", "execfile", "runfile", "dreload"}}
    r["builtins"] = {{k: id(v) for k, v in vars(builtins).items() if not k.startswith("__") and k not in managed}}
    bad = []
    def genuine(f, d):
        code = getattr(f, "__code__", None) or getattr(getattr(f, "__wrapped__", None), "__code__", None)
        if code is not None:
            return code.co_filename.startswith(d)
        return type(f).__module__ in ("builtins", "numpy") and type(f).__name__ in (
            "builtin_function_or_method", "ufunc", "_ArrayFunctionDispatcher")
    m = sys.modules.get("math")
    if m is not None and type(getattr(m, "isclose", None)).__name__ != "builtin_function_or_method":
        bad.append("math.isclose")
    np = sys.modules.get("numpy")
    if np is not None:
        import os
        d = os.path.dirname(np.__file__)
        for name in ("allclose", "isclose", "array_equal", "testing.assert_allclose", "testing.assert_array_equal",
                     "testing.assert_almost_equal", "testing.assert_array_almost_equal", "testing.assert_equal"):
            obj = np
            for part in name.split("."):
                obj = getattr(obj, part, None)
            if obj is None or not genuine(obj, d):
                bad.append("numpy." + name)
        if sys.modules.get("numpy.testing") is not getattr(np, "testing", None):
            bad.append("numpy.testing module")
    pd = sys.modules.get("pandas")
    if pd is not None:
        import os
        d = os.path.dirname(pd.__file__)
        for name in ("assert_frame_equal", "assert_series_equal"):
            f = getattr(getattr(pd, "testing", None), name, None)
            if f is None or not genuine(f, d):
                bad.append("pandas.testing." + name)
    r["patched_helpers"] = bad
    import inspect, types
    ns, chk, shadowed = ip.user_ns, json.loads({checks}), []
    for n, (m, a) in chk["bind"].items():
        mod = sys.modules.get(m)
        if mod is None or n not in ns:
            continue
        want = mod if a is None else getattr(mod, a, ns[n])
        if (a is None or (callable(want) and not isinstance(want, types.MethodType))) and ns[n] is not want:
            shadowed.append(n)
    # IPython's own `open` (user_ns_hidden) is as released; `sum = 0` only breaks the tests honestly
    for n in chk["builtins"]:
        if n in ns and callable(ns[n]) and ns[n] is not getattr(builtins, n, None) and ns[n] is not ip.user_ns_hidden.get(n):
            shadowed.append(n)
    for n, text in chk["defs"].items():
        if n in ns:
            try:
                import ast, textwrap
                same = ast.dump(ast.parse(textwrap.dedent(inspect.getsource(ns[n])))) == ast.dump(ast.parse(text))
            except (TypeError, OSError, SyntaxError):
                same = False
            if not same:
                shadowed.append(n)
    r["shadowed"] = sorted(shadowed)
    # library code the tests import, patched in place (LogisticRegression.score, a mixin's method,
    # a module's function): every function reachable from those names must come from a library or
    # from its own package, not from a notebook cell
    def own_dir(modname):
        top = sys.modules.get(str(modname).split(".")[0])
        f = getattr(top, "__file__", None)
        return (os.path.dirname(f),) if f else ()
    def foreign(f, owner):
        f = getattr(f, "__func__", f)
        code = getattr(f, "__code__", None)
        if not isinstance(code, types.CodeType):
            return False
        name = code.co_filename
        return not (name.startswith("<") or name.startswith(libs + own_dir(owner)))
    patched = []
    for n, (m, a) in chk["bind"].items():
        try:
            mod = sys.modules.get(m)
            obj = mod if a is None else getattr(mod, a, None) if mod is not None else None
            if isinstance(obj, types.ModuleType):
                patched += [m + "." + k for k, v in list(vars(obj).items()) if isinstance(v, types.FunctionType)
                            and foreign(v, m)]
            elif isinstance(obj, type):
                for klass in obj.__mro__[:-1]:
                    for k, v in list(vars(klass).items()):
                        fs = [v.fget, v.fset] if isinstance(v, property) else [v]
                        if any(foreign(f, klass.__module__) for f in fs):
                            patched.append(f"{{klass.__module__}}.{{klass.__qualname__}}.{{k}}")
            elif isinstance(obj, types.FunctionType) and foreign(obj, m):
                patched.append(m + "." + a)
        except Exception:  # a class the checks cannot walk: no finding
            pass
    r["patched_library"] = sorted(set(patched))[:20]
    print("{nonce}" + json.dumps(r, sort_keys=True))
_{nonce}()
del _{nonce}
'''


# Evaluated by the kernel right after a test cell (or a canary) that passed, as the execute
# request's user expression (no cell of its own, so tests and canaries still read the same): the
# names the tests use that are rebound at that moment. It reaches the namespace and the builtins
# through a lambda's attributes, not through names the notebook could shadow, and evaluates the
# rest in a namespace of its own.
USE_CHECK = r'''(lambda f: f.__builtins__["eval"]({src!r}, {{"__builtins__": f.__builtins__, "g": f.__globals__}}))(lambda: 0)'''
_USE_CHECK_SRC = """(lambda sys, types, bi, ip, c: sorted(
    [n for n, (m, a) in c["bind"].items() if n in g and sys.modules.get(m) is not None
     and (lambda want: (a is None or (callable(want) and not isinstance(want, types.MethodType)))
          and g[n] is not want)(sys.modules[m] if a is None else getattr(sys.modules[m], a, g[n]))]
    + [n for n in c["builtins"] if n in g and callable(g[n]) and g[n] is not getattr(bi, n, None)
       and (ip is None or g[n] is not ip.user_ns_hidden.get(n))]))(
    __import__("sys"), __import__("types"), __import__("builtins"),
    getattr(__import__("sys").modules.get("IPython"), "get_ipython", lambda: None)(), CHECKS)"""


def use_check(checks: dict) -> str:
    """The user expression that lists the names in ``checks`` (``binding_checks``) rebound now."""
    return USE_CHECK.format(src=_USE_CHECK_SRC.replace("CHECKS", repr({"bind": checks["bind"], "builtins": checks["builtins"]})))


def use_report(reply: dict | None):
    """What the expression reported in an execute reply's content: the rebound names (a list),
    ``"error"`` when it could not be evaluated, ``"missing"`` when a reply to a cell that ran
    without error does not carry it (only an intercepted execution answers so)."""
    value = ((reply or {}).get("user_expressions") or {}).get(MARK)
    if not isinstance(value, dict):
        return "missing"
    if value.get("status") != "ok":
        return "error"
    try:
        names = ast.literal_eval(str((value.get("data") or {}).get("text/plain", "")))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return "error"
    return [str(n) for n in names][:50] if isinstance(names, list) else "error"


def probe_cell(nonce: str, which: str, checks: dict | None = None) -> nbformat.NotebookNode:
    checks = checks or {"bind": {}, "builtins": [], "defs": {}}
    cell = nbformat.v4.new_code_cell(PROBE.format(nonce=nonce, checks=repr(json.dumps(checks))).strip())
    cell.metadata[MARK] = {"probe": which, "nonce": nonce}
    return cell


def _trusted_code(cell) -> bool:
    """A code cell the student cannot change: locked, or an autograded test (both restored from the gradebook)."""
    md = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and (md.get("locked") or (md.get("grade") and not md.get("solution")))


def _body(source: str) -> list:
    try:
        return ast.parse(source).body
    except SyntaxError:      # magics
        return []


_MANAGED = {"_", "input", "raw_input", "display", "get_ipython", "help", "exit", "quit", "copyright", "credits",
            "license", "execfile", "runfile", "dreload"}


def binding_checks(nb: nbformat.NotebookNode) -> dict:
    """What the probes check in the notebook's namespace: the names the locked and test cells import
    (``bind``: name → [module, attribute or None]), the built-in names the tests call (``builtins``)
    and the functions locked cells define (``defs``: name → source). A student cell that rebinds
    one (``np`` to a copy of numpy whose ``allclose`` says yes, a global ``abs``) changes what a
    hidden test computes without any hook, and every canary still fails as it should."""
    bind: dict[str, list | None] = {}
    defs: dict[str, str | None] = {}
    used: set[str] = set()       # loaded by any locked or test cell
    in_tests: set[str] = set()   # loaded by a test cell
    assigned: set[str] = set()
    import builtins as _b
    for cell in nb.cells:
        if not _trusted_code(cell):
            continue
        md = cell.metadata.get("nbgrader", {})
        test = md.get("grade") and not md.get("solution")
        body = _body(cell.source)
        for stmt in body:
            pairs = []
            if isinstance(stmt, ast.Import):
                pairs = [(a.asname or a.name.split(".")[0], [a.name if a.asname else a.name.split(".")[0], None])
                         for a in stmt.names]
            elif isinstance(stmt, ast.ImportFrom) and stmt.module and not stmt.level:
                pairs = [(a.asname or a.name, [stmt.module, a.name]) for a in stmt.names if a.name != "*"]
            elif isinstance(stmt, ast.FunctionDef) and not stmt.decorator_list:
                text = ast.get_source_segment(cell.source, stmt)
                defs[stmt.name] = text.strip() if stmt.name not in defs and text else None
            for name, target in pairs:
                bind[name] = target if bind.get(name, target) == target else None
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.add(node.id)
                if test:
                    in_tests.add(node.id)
            elif isinstance(node, ast.Name):
                assigned.add(node.id)
    builtin = sorted(n for n in in_tests if n in vars(_b) and n not in _MANAGED and n not in assigned and n not in bind
                     and not n.startswith("__"))
    # a name a locked cell binds more than one way (imported, defined, assigned) is not checked
    return {"bind": {k: v for k, v in bind.items() if v and k not in defs and k not in assigned and k in used},
            "builtins": builtin,
            "defs": {k: v for k, v in defs.items() if v and k not in bind and k not in assigned and k in used}}


# Calls that change the object they are called on (or, for seed and shuffle, the random state a
# later run draws from): a cell that makes them on an object it did not create itself cannot run twice.
_MUTATING = {"append", "extend", "insert", "pop", "remove", "update", "add", "clear", "setdefault", "popitem",
             "fit", "partial_fit", "fit_transform", "train", "compile", "write", "seed", "shuffle"}
# Functions whose result is a new object (numpy's constructors copy; asarray does not)
_NEW = {"list", "dict", "set", "sorted", "bytearray", "copy", "deepcopy", "zeros", "ones", "empty", "full",
        "zeros_like", "ones_like", "empty_like", "full_like", "array", "arange", "linspace", "eye", "default_rng"}


class _Fresh:
    """Which objects a cell (or a function it defines) creates itself, so that changing them is
    undone by the next run of the cell: a display (``[]``, ``{}``, a comprehension), arithmetic, a
    constructor (``Ridge(alpha=1)``, a CapWords name), numpy's array constructors, ``.copy()``, a
    method of such an object, and a name every assignment of which in its scope is one of those."""

    def __init__(self, scope: ast.AST, fresh_self: bool = False):
        self.names: set[str] = {"self", "cls"} if fresh_self else set()
        bound: dict[str, list[ast.expr | None]] = {}
        for node in self._own(scope):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for name, value in self._pairs(t, node.value):
                        bound.setdefault(name, []).append(value)
            elif isinstance(node, (ast.For, ast.comprehension, ast.With, ast.NamedExpr, ast.Global, ast.Nonlocal,
                                   ast.Import, ast.ImportFrom)):
                for t in ([node.target] if hasattr(node, "target") else []) + \
                         [i.optional_vars for i in getattr(node, "items", []) if i.optional_vars]:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            bound.setdefault(n.id, []).append(None)
                for n in getattr(node, "names", []):
                    bound.setdefault(n if isinstance(n, str) else (n.asname or n.name).split(".")[0], []).append(None)
        # a name read before the scope first assigns it holds what an earlier run left there
        first: dict[str, bool] = {}
        for node in sorted((n for n in self._own(scope) if isinstance(n, ast.Name)), key=lambda n: (n.lineno, n.col_offset)):
            first.setdefault(node.id, isinstance(node.ctx, ast.Store))
        for _ in range(3):          # a name fresh from another fresh name
            self.names |= {n for n, values in bound.items()
                           if first.get(n, True) and all(v is not None and self.expr(v) for v in values)}
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            self.names -= {a.arg for a in ast.walk(scope.args) if isinstance(a, ast.arg)} - {"self", "cls"}

    @staticmethod
    def _own(scope: ast.AST):
        """The nodes of a scope, not those of the functions, lambdas and classes it defines."""
        todo = list(ast.iter_child_nodes(scope))
        while todo:
            node = todo.pop()
            yield node
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                todo.extend(ast.iter_child_nodes(node))

    @staticmethod
    def _pairs(target: ast.expr, value: ast.expr | None):
        if isinstance(target, ast.Name):
            yield target.id, value
        elif isinstance(target, (ast.Tuple, ast.List)):
            # unpacking: a fresh tuple display gives each name its own part; anything else, its elements
            parts = value.elts if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts) \
                else [None] * len(target.elts)
            for t, v in zip(target.elts, parts):
                yield from _Fresh._pairs(t, v)

    def expr(self, node: ast.expr) -> bool:
        if isinstance(node, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp,
                             ast.Constant, ast.JoinedStr, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp)):
            return True
        if isinstance(node, ast.Name):
            return node.id in self.names
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                return f.id in _NEW or f.id.lstrip("_")[:1].isupper()
            if isinstance(f, ast.Attribute):
                return f.attr in _NEW or f.attr[:1].isupper() or self.expr(f.value)
        return False


def runs_twice_safely(source: str) -> bool:
    """Whether running a test cell twice leaves the second run as the first: what it changes is
    only what it creates itself (``_Fresh``), it declares no globals and it neither seeds nor
    shuffles a random state. TensorFlow cells keep the stricter rule (anything they change makes
    them unsafe): their training state is global."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    strict = any(isinstance(n, ast.Name) and n.id in ("tf", "keras") for n in ast.walk(tree))
    scopes = [(tree, _Fresh(tree))]
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            scopes += [(f, _Fresh(f, fresh_self=True)) for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
    methods = {id(f) for f, _ in scopes[1:]}
    scopes += [(n, _Fresh(n)) for n in ast.walk(tree)
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and id(n) not in methods]
    for scope, fresh in scopes:
        ok = (lambda e: False) if strict else fresh.expr     # noqa: E731
        for node in _Fresh._own(scope):
            if isinstance(node, (ast.Global, ast.Nonlocal)):
                return False
            if isinstance(node, ast.Delete) and not all(isinstance(t, ast.Name) or ok(t.value) for t in node.targets):
                return False
            if isinstance(node, ast.AugAssign) and not ok(node.target if isinstance(node.target, ast.Name) else node.target.value):
                return False
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            for t in targets:
                for part in ast.walk(t):
                    if isinstance(part, (ast.Subscript, ast.Attribute)) and isinstance(part.ctx, ast.Store) \
                            and not ok(part.value):
                        return False
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATING:
                if node.func.attr in ("seed", "shuffle") or not ok(node.func.value):
                    return False
    return True


def add_checks(nb: nbformat.NotebookNode, seed: int, judge_literals: bool = True,
               expected: dict | None = None, notes: list[str] | None = None) -> nbformat.NotebookNode:
    """Insert a probe first and last and, next to every autograded test cell, a canary built from
    that cell (in place): its twin (``twin_copies``) where the hidden part has an equality check
    with a literal, else a reversed copy (``canary_cell``). Which of the two comes first is random
    where running the test twice changes nothing; ``seed`` is mixed with a secret, so a student
    cannot derive the order or the twin's value. With ``judge_literals``, the test and its canary
    reach the kernel as ``literals.rewrite`` makes them (``metadata.mlbd.kernel_source``, with
    ``sites`` for the grader and a recorder cell after the first probe); the check the twin changes
    stays in the kernel in both. ``expected`` (grade_id → position → values, from the instructor's
    run: ``references``) adds the checks against a reference that the submission's own cells leave
    clean (those it leaves in the kernel instead are named in ``notes``: a student's cell that may
    change what a reference reads keeps the check in the kernel, where a hook could swallow it, so a
    TA should look). Every test cell and canary carries the user expressions the grader sends with it
    (``after``: ``use_check``; ``take``: the recorded values)."""
    from . import prune, references
    rng = random.Random(f"{seed}/{secrets.token_hex(16)}")
    nonce = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12))
    checks = binding_checks(nb)
    after = use_check(checks) if checks["bind"] or checks["builtins"] else None
    recorder = f"_{nonce}_chk"
    referenced = references.notebook_sites(nb, checks["bind"]) if judge_literals and expected else {}
    cells = [probe_cell(nonce, "first")]
    base = 0
    for index, cell in enumerate(nb.cells):
        md = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and md.get("grade") and not md.get("solution"):
            judged = literals.sites_of(cell.source, checks["bind"]) if judge_literals else []
            extra, before = [], None
            want = (expected or {}).get(md.get("grade_id")) or {} if judge_literals else {}
            found, before = referenced.get(index, ([], None))
            for entry in found:
                if references.position(entry) in want:
                    entry[3].expected = want[references.position(entry)]
                    extra.append(entry)
            if len(extra) < len(want) and notes is not None:
                notes.append(f"{md.get('grade_id')}: {len(want) - len(extra)} check(s) against a reference that the grader "
                             "judges itself ran in the kernel instead, because the notebook's own cells may change "
                             "what the reference reads: a TA should look")
            allowed = frozenset((lit.lineno, lit.col_offset) for _, lit, _, _ in judged) if judge_literals else None
            safe = runs_twice_safely(cell.source)
            # a twin that always comes second tells a hook which of the two is the test (and, with
            # judged checks, hands it the one expected value the kernel sees): a reversed copy then
            choices = twins(cell.source, rng, allowed) if safe or not judge_literals else []
            kept: frozenset[tuple[int, int]] = frozenset()
            if choices:
                text, where = rng.choice(choices)
                # the check the twin changes also stays in the kernel, in test and twin alike: a kernel
                # that lets both pass makes failing checks pass (and every check is judged here too)
                kept = frozenset([where])
                canary = nbformat.v4.new_code_cell(text)
                canary.metadata[MARK] = {"canary": True, "twin_of": md.get("grade_id")}
            else:
                secret = frozenset(v for _, lit, _, _ in judged for v in [literals.literal_value(lit)] if isinstance(v, str))
                # a reversed copy of a judged check would always hold in the kernel (and flag an honest answer)
                canary = canary_cell(cell, rng, frozenset(site.line for *_, site in judged + extra), secret)
            rewritten = {}
            if judged or extra:
                for c in (cell, canary):       # the test and its canary alike
                    more = extra if c is cell else references.canary_sites(c.source, before, {e[3].literal for e in extra}) \
                        if extra else []
                    rewritten[id(c)] = literals.rewrite(c.source, recorder, checks["bind"], base, kept, more)
            if extra:       # the references they no longer need leave the kernel, in both alike
                pruned = prune.prune([(c.source, rewritten[id(c)][0]) for c in (cell, canary)], before,
                                     [(c.source, bool(_trusted_code(c))) for c in nb.cells[index + 1:] if c.cell_type == "code"])
                for c, text in zip((cell, canary), pruned):
                    rewritten[id(c)] = (text, rewritten[id(c)][1])
            for c in (cell, canary):
                if not isinstance(c.metadata.get(MARK), dict):
                    c.metadata[MARK] = {}
                if after:
                    c.metadata[MARK]["after"] = after
                kernel, sites = rewritten.get(id(c), (None, []))
                if sites:
                    c.metadata[MARK].update(kernel_source=kernel, sites=literals.site_dicts(sites),
                                            take=literals.take_expression(recorder))
                if not c.metadata[MARK]:
                    del c.metadata[MARK]
            base += len(judged) + len(extra) + 1
            first = safe and rng.random() < 0.5
            cells += [canary, cell] if first else [cell, canary]
        else:
            cells.append(cell)
    cells.append(probe_cell(nonce, "last", checks))
    if any("sites" in c.metadata.get(MARK, {}) for c in cells):
        cells.insert(1, nbformat.v4.new_code_cell(literals.recorder_source(nonce, recorder)))
        cells[1].metadata[MARK] = {"probe": "recorder"}
    nb.cells = cells
    return nb


def _probe_report(cell) -> dict | None:
    nonce = cell.metadata[MARK]["nonce"]
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            for line in out.get("text", "").splitlines():
                at = line.find(nonce)       # a thread's print may have started the line
                if at >= 0:
                    try:
                        report = json.JSONDecoder().raw_decode(line[at + len(nonce):])[0]
                    except ValueError:
                        return None
                    return report if isinstance(report, dict) else None
    return None


def _failed(cell) -> bool:
    return any(out.get("output_type") == "error" for out in cell.get("outputs", []))


def _failed_in_kernel(cell) -> bool:
    """An error output the kernel produced (the grader's judged failure, first when there is one,
    not counted)."""
    errors = [out for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    judged = isinstance(cell.metadata.get(MARK), dict) and "judged" in cell.metadata[MARK]
    return len(errors) > (1 if judged else 0)


def is_check(cell) -> bool:
    """A canary or probe cell the grader inserted (prepare strips ``mlbd`` keys from submissions)."""
    meta = cell.get("metadata", {}).get(MARK)
    return isinstance(meta, dict) and ("canary" in meta or "probe" in meta)


USE_KEYS = ("after", "bindings")      # the check after each test cell (check_and_strip reads them)
JUDGE_KEYS = ("kernel_source", "sites", "take", "records", "exec_count")    # judged checks (assess.JudgeChecks)


def drop_cell_checks(cell, keys=USE_KEYS + JUDGE_KEYS) -> None:
    """Remove what the checks a test cell carried left in its metadata."""
    meta = cell.metadata.get(MARK)
    if isinstance(meta, dict) and any(k in meta for k in keys):
        for k in keys:
            meta.pop(k, None)
        if not meta:
            del cell.metadata[MARK]


def strip_checks(nb: nbformat.NotebookNode) -> None:
    """Remove the grader's checks unread: its cells, and the checks each test cell carried."""
    nb.cells = [c for c in nb.cells if not is_check(c)]
    for cell in nb.cells:
        drop_cell_checks(cell)


def check_and_strip(nb: nbformat.NotebookNode) -> tuple[list[str], list[str]]:
    """Evaluate canaries and probes of an executed notebook and remove them (in place).

    Returns ``(strong, notes)``: ``strong`` are tampering findings (reasons), ``notes`` weaker ones.
    A canary counts as failed on any error output, the grader's own included (a cell the grader
    could not run swallowed nothing). Whether the grader itself stopped a probe is read from its
    mark (``protocol.grader_error``), never from an error's name or message: a last probe that
    reported nothing and that the grader did not stop was silenced by the kernel.
    """
    strong: list[str] = []
    notes: list[str] = []
    first = last = None
    kept = []
    canaries = passed = 0
    twins: list[str] = []           # grade ids whose twin passed
    shadowed: set[str] = set()
    patched: set[str] = set()
    for cell in nb.cells:
        meta = cell.metadata.get(MARK)
        if isinstance(meta, dict) and "after" in meta:
            del meta["after"]
            report = meta.pop("bindings", None)      # only a cell that ran without error has one
            label = cell.metadata.get("nbgrader", {}).get("grade_id") or "a test cell"
            if isinstance(report, list):
                shadowed.update(report)
            elif report == "missing":
                strong.append(f"{label}: the kernel's reply to a test cell that passed lacks the grader's check "
                              "(its execution was intercepted)")
            elif report == "error":
                notes.append(f"{label}: the grader's check of the names the tests use could not run after this cell")
            drop_cell_checks(cell, USE_KEYS)
        if not is_check(cell):
            kept.append(cell)
            continue
        if "canary" in meta and meta.get("twin_of") is not None:
            canaries += 1
            if not _failed(cell):
                twins.append(str(meta["twin_of"]))
        elif "canary" in meta:
            canaries += 1
            passed += not _failed(cell)
        elif meta.get("probe") == "first":
            first = _probe_report(cell)
        elif meta.get("probe") == "last":
            last = _probe_report(cell)
            shadowed.update((last or {}).get("shadowed") or [])
            patched.update((last or {}).get("patched_library") or [])
            if last is None and grader_error(cell) is None:
                strong.append("the integrity probe after the last cell produced no report (output hijacked)"
                              if not _failed(cell) else "the integrity probe after the last cell failed in the kernel")
    if patched:
        strong.append("library code the tests use is patched by the notebook: " + ", ".join(sorted(map(str, patched))[:8]))
    if shadowed:
        strong.append("names the tests use are rebound by the notebook: " + ", ".join(sorted(map(str, shadowed))[:8]))
    tests = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in kept}
    # the test as the kernel ran it: a check the grader judged failed is not the kernel's doing
    both = [gid for gid in twins if gid in tests and not _failed_in_kernel(tests[gid])]
    passed += len(both)
    if passed:
        strong.append(f"failures are swallowed: {passed} of {canaries} copies of test cells that must fail passed"
                      + (f" ({', '.join(both[:8])}: the test and its twin with a different expected value both held)"
                         if both else ""))
    for gid in twins:
        if gid not in both:
            notes.append(f"{gid}: the copy of this test with a different expected value passed and the test failed: "
                         "either the answer equals that value, or the kernel chose which checks fail (review)")
    if first is not None and last is not None:
        for key, what in [("input_transformers_post", "input transformers rewrite later cells"),
                          ("input_transformers_cleanup", "input transformers rewrite later cells"),
                          ("ast_transformers", "AST transformers rewrite later cells"),
                          ("custom_exceptions", "a custom exception handler swallows errors (set_custom_exc)")]:
            if last.get(key, 0) > first.get(key, 0):
                strong.append(what)
        for ev, n in (last.get("events") or {}).items():
            if n > (first.get("events") or {}).get(ev, 0):
                strong.append(f"a callback on IPython's '{ev}' event runs around later cells")
        for name in last.get("patched_shell_methods") or []:
            if name not in (first.get("patched_shell_methods") or []):
                strong.append(f"the shell's {name} is patched")
        if last.get("excepthook") != first.get("excepthook"):
            strong.append("sys.excepthook is replaced")
        if any(last.get("trace") or []) and not any(first.get("trace") or []):
            strong.append("a trace or profile function is installed")
        fb, lb = first.get("builtins") or {}, last.get("builtins") or {}
        changed = sorted(k for k in fb if lb.get(k) != fb[k])
        if changed:
            strong.append("builtins replaced: " + ", ".join(changed[:8]))
        for helper in last.get("patched_helpers") or []:
            strong.append(f"assertion helper {helper} is patched")
    elif last is None and first is not None:
        pass  # reported above or the kernel died at the end (its own error)
    nb.cells = kept
    return sorted(set(strong)), notes


# --------------------------------------------------------------------------------------------
# Static scan of student-written cells
# --------------------------------------------------------------------------------------------

HOOKS = [
    (r"input_transformers", "rewrites later cells (IPython input transformers)"),
    (r"ast_transformers", "rewrites later cells (AST transformers)"),
    (r"set_custom_exc|custom_exceptions", "swallows exceptions (set_custom_exc)"),
    (r"showtraceback|showsyntaxerror|InteractiveTB|CustomTB", "hides tracebacks"),
    (r"excepthook", "replaces sys.excepthook"),
    (r"events\s*\.\s*register|pre_run_cell|post_run_cell|pre_execute|post_execute", "registers IPython event callbacks"),
    (r"\bbuiltins\b|__builtins__", "touches builtins"),
    (r"\b(isclose|allclose|array_equal|assert_\w+|assert_frame_equal)\s*=(?!=)", "replaces an assertion helper"),
    (r"setattr\s*\(\s*(np|numpy|math|builtins|pd|pandas|testing|npt)\b", "replaces a library function"),
    (r"\bos\s*\.\s*(_exit|kill|killpg|abort)|\bsignal\s*\.\s*(signal|alarm|setitimer)", "kills or signals the kernel"),
    (r"sys\s*\.\s*(settrace|setprofile|modules\s*\[)", "traces execution or replaces modules"),
    (r"\b(run_cell|run_code|run_ast_nodes|transform_cell|user_expressions)\b", "wraps IPython's execution"),
    (r"\bctypes\b|gc\s*\.\s*get_(referrers|objects)|sys\s*\.\s*_getframe|f_back|f_globals", "low-level interpreter access"),
    (r"(?<![.\w])(exec|eval|compile)\s*\(|__import__\s*\(|importlib", "dynamic code execution"),
    (r"get_ipython\s*\(\s*\)\s*\.\s*(kernel|shell|display_pub|displayhook|user_ns_hidden)", "reaches into the kernel"),
    # an answer whose == / < / abs() say whatever the test wants passes asserts without a hook
    (r"__(eq|ne|lt|le|gt|ge|bool|abs|float|round)__", "defines comparison operators (a value that can equal anything)"),
]


def _code_only(source: str) -> str:
    """The source without comments (strings are kept: obfuscated names hide in them)."""
    try:
        toks = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT]
        return tokenize.untokenize(toks)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source


def scan_source(source: str) -> list[str]:
    code = _code_only(source)
    found = []
    for pattern, what in HOOKS:
        m = re.search(pattern, code)
        if m:
            found.append(f"{what}: {m.group(0).strip()!r}")
    return found


def static_scan(nb: nbformat.NotebookNode) -> list[str]:
    """Known hooks in the cells a student wrote (solution cells and free cells)."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        md = cell.metadata.get("nbgrader", {})
        if md.get("locked") or (md.get("grade") and not md.get("solution")):
            continue
        for finding in scan_source(cell.source):
            label = md.get("grade_id") or f"cell {i + 1}"
            out.append(f"{label}: {finding}")
    return out
