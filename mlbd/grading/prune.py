"""The reference computations a judged test cell no longer needs, taken out of the kernel's source.

Once its checks against a reference are judged by the grader (``references``), a test cell still
computes the reference (``_want = _ref_clean(messy_test, 31, medians)``, the ``def _ref_clean``
before it) in the student's kernel, where a hook could read it from the namespace or catch it as it
is returned and record it as the student's value. ``prune`` replaces each such statement by ``pass``
(the line count kept) when nothing else needs it and leaving it out changes nothing else:

- it binds only names no remaining statement of the cell (or of its canary) reads, no later locked
  or test cell mentions, and, for a name without a leading underscore, no later cell at all;
- its value is clean (``references.Flow``: only the author's code and data decide it) and
  *harmless*: every call in it is to a function or method known not to change its arguments or
  any state (numpy's and scikit-learn's functions, ``.copy()``, ``.predict()``...; never a random
  draw, ``.fit``, ``.append``), or to a function the author defined that changes nothing but
  what it creates itself.

Whatever this gets wrong shows in the instructor's second run, which grades the solution with the
pruned cells (``references``): a check it breaks is left in the kernel.
"""
from __future__ import annotations

import ast
import copy
import re

from .mutation import READ_METHODS, VIEWS
from .references import _BUILTINS, Flow, _base, _calls, _final, _names, _transformed

# Methods that read their object and return something new (or a view); never change state (nor
# draw, nor call back into code: a pruned statement must leave no trace).
PURE_METHODS = (READ_METHODS | VIEWS) - {"plot", "hist", "info", "apply", "map", "agg", "evaluate"}
# Module functions that change their arguments or a global state.
_IMPURE_FUNCS = {"shuffle", "seed", "fill", "put", "place", "copyto", "resize", "set_seed", "set_random_seed",
                 "next", "iter", "setattr", "delattr", "exec", "eval", "open", "input", "print", "globals", "vars"}
_RANDOM = ("numpy.random", "random", "tensorflow.random", "keras.random")
_NEW_GENERATORS = {"default_rng", "Generator", "RandomState", "SeedSequence", "PCG64"}


class _Harmless:
    """Whether evaluating an expression (or calling an author's function) changes nothing outside it."""

    def __init__(self, flow: Flow, defs: dict[str, ast.AST]):
        self.flow, self.defs, self.busy = flow, defs, set()

    def expr(self, node: ast.AST, local_fresh: frozenset = frozenset()) -> bool:
        if any(isinstance(n, (ast.NamedExpr, ast.Yield, ast.YieldFrom, ast.Await)) for n in ast.walk(node)):
            return False
        return all(self.call(c, local_fresh) for c in _calls(node))

    def call(self, call: ast.Call, local_fresh: frozenset) -> bool:
        f = call.func
        if isinstance(f, ast.Name):
            if f.id in self.defs:
                return self.function(f.id)
            if f.id in _BUILTINS and f.id not in self.flow.state:
                return f.id not in _IMPURE_FUNCS
            return self._library(f)
        if isinstance(f, ast.Attribute):
            base = _base(f)
            if base is not None and self.flow._module(base):
                return self._library(f)
            return f.attr in PURE_METHODS or (f.attr not in {"fit", "partial_fit"} and base in local_fresh)
        return False

    def _library(self, f: ast.expr) -> bool:
        path = self.flow._path(f)
        if not path or path.split(".")[0] not in {"numpy", "pandas", "sklearn", "scipy", "math", "tensorflow", "keras"}:
            return False
        if _final(f) in _NEW_GENERATORS:      # a generator of its own: no state shared with anything
            return True
        return _final(f) not in _IMPURE_FUNCS and not any(path == r or path.startswith(r + ".") for r in _RANDOM)

    def function(self, name: str) -> bool:
        """An author's function that changes only what it creates itself."""
        if name in self.busy:
            return True
        node = self.defs[name]
        self.busy.add(name)
        try:
            if isinstance(node, ast.Lambda):
                return self.expr(node.body) and all(self.expr(d) for d in node.args.defaults)
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.decorator_list:
                return False
            from .integrity import _Fresh
            fresh = frozenset(_Fresh(node).names)
            body = ast.Module(body=list(node.body), type_ignores=[])
            for n in ast.walk(body):
                if isinstance(n, (ast.Global, ast.Nonlocal, ast.Delete)):
                    return False
                targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, (ast.AugAssign, ast.AnnAssign)) else []
                for t in targets:
                    for sub in ast.walk(t):
                        if isinstance(sub, (ast.Subscript, ast.Attribute)) and isinstance(sub.ctx, ast.Store) \
                                and _base(sub) not in fresh:
                            return False
            return self.expr(body, fresh) and all(self.expr(d) for d in node.args.defaults)
        finally:
            self.busy.discard(name)


def _whole_lines(stmt: ast.stmt, lines: list[str], siblings: list[ast.stmt]) -> bool:
    """Whether a statement occupies its lines alone (no ``;`` neighbour, nothing after it but a comment)."""
    if lines[stmt.lineno - 1][:stmt.col_offset].strip():
        return False
    rest = lines[stmt.end_lineno - 1].encode()[stmt.end_col_offset:].decode(errors="replace").strip()
    if rest and not rest.startswith("#"):
        return False
    return not any(o is not stmt and (stmt.lineno <= o.lineno <= stmt.end_lineno or stmt.lineno <= o.end_lineno <= stmt.end_lineno)
                   for o in siblings)


def _blocks(body: list[ast.stmt]):
    """Every statement list of a cell outside the functions it defines."""
    yield body
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                yield from _blocks(inner)
        for h in getattr(stmt, "handlers", []):
            yield from _blocks(h.body)


def prune(cells: list[tuple[str, str]], before: Flow, later: list[tuple[str, bool]]) -> list[str]:
    """``cells``: (source as written, source as the kernel runs it) of a test cell and its canary,
    pruned alike; ``before``: the flow as the test cell starts; ``later``: (source, written by the
    author) of every later cell. Returns the kernel sources, pruned."""
    mentioned_by_author, mentioned = set(), set()
    for source, author in later:
        words = set(re.findall(r"[A-Za-z_]\w*", source))
        mentioned |= words
        if author:
            mentioned_by_author |= words

    def needed_later(name: str) -> bool:
        return name in mentioned_by_author or (not name.startswith("_") and name in mentioned)

    parsed = []
    for original, kernel in cells:
        flow = copy.deepcopy(before)
        clean: dict[int, bool] = {}
        flow.visit = lambda stmt, ok: clean.__setitem__(stmt.lineno, clean.get(stmt.lineno, True) and ok)
        tree = _transformed(original)
        if tree is not None:
            flow.block(tree.body)
        ktree = _transformed(kernel)
        if ktree is None or tree is None:
            return [k for _, k in cells]
        parsed.append((kernel, ktree, clean, flow))

    candidates = []     # (cell index, statement, names it binds)
    for k, (kernel, ktree, clean, flow) in enumerate(parsed):
        lines = kernel.splitlines()
        harmless = _Harmless(flow, flow.defs)
        for block in _blocks(ktree.body):
            for stmt in block:
                if not clean.get(stmt.lineno) or not _whole_lines(stmt, lines, block):
                    continue
                if isinstance(stmt, ast.Assign) and all(_plain(t) for t in stmt.targets):
                    if harmless.expr(stmt.value):
                        candidates.append((k, stmt, set().union(*(_names(t, ast.Store) for t in stmt.targets))))
                elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and not stmt.decorator_list \
                        and all(harmless.expr(d) for d in stmt.args.defaults + [d for d in stmt.args.kw_defaults if d]):
                    candidates.append((k, stmt, {stmt.name}))

    removed: set[int] = set()
    while True:
        reads: set[str] = set()
        for k, (kernel, ktree, _clean, _flow) in enumerate(parsed):
            gone = {id(s) for kk, s, _ in candidates if kk == k and id(s) in removed}
            for node in _kept_nodes(ktree, gone):
                if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
                    reads.add(node.id)
                elif isinstance(node, ast.AugAssign):        # x += 1 reads x
                    reads |= _names(node.target, ast.Store)
        more = [s for _k, s, names in candidates if id(s) not in removed
                and not any(n in reads or needed_later(n) for n in names)]
        if not more:
            break
        removed |= {id(s) for s in more}

    out = []
    for k, (kernel, _ktree, _clean, _flow) in enumerate(parsed):
        lines = kernel.split("\n")
        for kk, stmt, _names_ in candidates:
            if kk == k and id(stmt) in removed:
                lines[stmt.lineno - 1] = " " * stmt.col_offset + "pass"
                for i in range(stmt.lineno, stmt.end_lineno):
                    lines[i] = ""
        out.append("\n".join(lines))
    return out


def _plain(target: ast.expr) -> bool:
    """A target that only binds names (``a``, ``a, b``), nothing stored into an object."""
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, (ast.Tuple, ast.List)) and all(_plain(e) for e in target.elts)


def _kept_nodes(tree: ast.AST, gone: set[int]):
    todo = [tree]
    while todo:
        node = todo.pop()
        if id(node) in gone:
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))
