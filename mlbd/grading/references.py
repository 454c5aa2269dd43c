"""Checks against a reference the test computes from the author's own data, judged by the trusted side.

A hidden test often compares the student's value with one it computes itself::

    np.testing.assert_allclose(batch_gd(Xc, yc, 0.05, 1, t0c), _ref_batch_gd(X, y, 0.05, 1, t0), rtol=1e-6)

When the reference side depends only on the author's code and data, its value is the same in every
honest run of the notebook, so the grader takes it from the instructor's own runs of the source
notebook (``instructor_run``: a reference is used only where the solution, graded in the kernel's
form with another student's variant and reseeded random generators, passes against it) and
judges the check itself on the value the student's kernel recorded, exactly as for literals
(``literals``): the test cell reaches the kernel as ``_chk(K, batch_gd(...))``, the expected value
never enters it, the statements that only computed it are pruned (``prune``), and a kernel that
swallows failures gains nothing.

**Clean** (``Flow``) is decided statically, conservatively: a name is clean when only the author's
cells (locked and test cells, restored from the gradebook) bound it from clean values and no cell
a student writes mentions it (a student's cell may change what it mentions: ``df.dropna(inplace=
True)``); a call whose function or any argument is not clean makes every name handed to it unclean
(the student's function may change it), as does storing an unclean value into it; an assignment
that may share an object (anything but a copy, arithmetic or a constructor of new arrays) ties the
two names, so that changing one taints both (a number, string or tuple of them cannot change in
place and is never tainted that way). Reading files after the first cell a student writes,
the student's variant (``mlbd.variant``), ``globals()``, ``eval`` and the like are never clean. A
check is judged this way when exactly one side is unclean (the student's value) and one is clean and
not a literal (the reference); the rest stay in the kernel, as before.
"""
from __future__ import annotations

import ast
import builtins
import copy
import re
from dataclasses import dataclass, field

import nbformat

from . import literals
from .mutation import HANDED_SAFE, changed_names
from .literals import Site

_IMPURE_BUILTINS = {"open", "input", "globals", "locals", "vars", "eval", "exec", "compile", "__import__",
                    "breakpoint", "id", "hash", "setattr", "delattr"}
_IMPURE_MODULES = ("os", "sys", "io", "pathlib", "glob", "shutil", "pickle", "joblib", "subprocess", "socket",
                   "time", "datetime", "urllib", "requests", "tempfile", "mlbd.variant")
_READS = re.compile(r"read_\w*|load|loadtxt|genfromtxt|fromfile|load_model|load_weights|read_text|read_bytes|open")
# calls whose result is a new object sharing nothing with their arguments
_COPIES = {"copy", "deepcopy", "array", "zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like",
           "full_like", "arange", "linspace", "eye", "default_rng", "len", "sum", "float", "int", "str", "bool",
           "round", "abs", "min", "max", "mean", "std", "var", "median", "norm", "dot", "exp", "log", "sqrt", "allclose",
           "isclose", "array_equal", "equals", "astype", "tolist", "list", "tuple", "dict", "set", "sorted",
           "normal", "uniform", "integers", "random", "standard_normal", "permutation", "rand", "randn", "randint",
           "binomial", "poisson", "exponential", "predict", "predict_proba", "decision_function", "transform",
           "fit_transform", "score", "train_test_split"}
_BUILTINS = set(vars(builtins))


def _transformed(source: str) -> ast.Module | None:
    """A cell's statements, IPython's magics turned into Python first; None when it does not parse."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        source = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001
        pass
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _final(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _names(node: ast.AST, ctx=ast.Load) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _local_names(node: ast.AST) -> set[str]:
    """Names an expression binds for itself: comprehension targets, lambda parameters."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.comprehension):
            out |= _names(n.target, ast.Store)
        elif isinstance(n, ast.Lambda):
            out |= {a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg)}
    return out


def _free(fn: ast.AST) -> set[str]:
    """The global names a function (or class) body reads."""
    params = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)} if hasattr(fn, "args") else set()
    body = ast.Module(body=list(fn.body), type_ignores=[])
    stored = _names(body, ast.Store) | {n.name for n in ast.walk(body)
                                         if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return _names(body) - params - stored


def _calls(node: ast.AST):
    """The calls a statement makes itself (not those inside the functions it defines)."""
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Call):
            yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) or n is node:
            todo.extend(ast.iter_child_nodes(n))


@dataclass
class Flow:
    """Which names hold values only the author's code determines, cell by cell, statement by statement."""
    bind: dict                                    # the notebook's trusted imports (integrity.binding_checks)
    state: dict[str, bool] = field(default_factory=dict)     # name -> clean
    funcs: dict[str, set[str]] = field(default_factory=dict)  # author function -> free names
    imports: dict[str, str] = field(default_factory=dict)     # name -> dotted module path (author imports)
    alias: dict[str, set[str]] = field(default_factory=dict)
    students: set[str] = field(default_factory=set)            # names a student's cell binds (maybe functions)
    defs: dict[str, ast.AST] = field(default_factory=dict)      # author function or lambda -> its node
    immutable: set[str] = field(default_factory=set)            # bound to a number, string, tuple of them
    displays: dict[str, ast.expr] = field(default_factory=dict)  # bound to a list or tuple display, untouched since
    visit: object = None      # called with each assignment or definition and whether its value is clean
    after_student: bool = False

    # -- names and expressions ------------------------------------------------------------
    def clean_name(self, name: str, seen: frozenset = frozenset()) -> bool:
        if name in seen:
            return True
        if name in self.state:
            if not self.state[name]:
                return False
            return all(self.clean_name(f, seen | {name}) for f in self.funcs.get(name, ()))
        if name in self.bind:
            return True
        return name in _BUILTINS and name not in _IMPURE_BUILTINS

    def _path(self, func: ast.expr) -> str:
        parts = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return ""
        head = self.imports.get(func.id)
        if head is None and self.bind.get(func.id):
            module, attr = self.bind[func.id]
            head = module if attr is None else f"{module}.{attr}"
        return ".".join([head or func.id, *reversed(parts)])

    def library_path(self, func: ast.expr) -> str:
        """A call's dotted path when the name it starts from is an import ("numpy.mean"), else ""."""
        base = _base(func)
        return self._path(func) if base is not None and self._module(base) else ""

    def impure(self, func: ast.expr) -> bool:
        if isinstance(func, ast.Name) and func.id in _IMPURE_BUILTINS and func.id not in self.state:
            return True
        path = self._path(func)
        if any(path == m or path.startswith(m + ".") for m in _IMPURE_MODULES):
            return True
        return self.after_student and bool(_READS.fullmatch(_final(func)))

    def clean(self, node: ast.AST) -> bool:
        local = _local_names(node)
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in local and not self.clean_name(n.id):
                return False
        return not self.reaches_outside(node)

    def reaches_outside(self, node: ast.AST) -> bool:
        """Whether ``node`` (an expression, or a whole function or class) calls something impure or
        reads an impure module (``variant.rng(…)``, ``os.environ["…"]``, ``sys.argv``): its value may
        differ from run to run, or from student to student, however clean the names it reads."""
        for n in ast.walk(node):
            if isinstance(n, ast.Call) and self.impure(n.func):
                return True
            if isinstance(n, (ast.Attribute, ast.Name)) and isinstance(n.ctx, ast.Load):
                path = self.library_path(n)
                if any(path == m or path.startswith(m + ".") for m in _IMPURE_MODULES):
                    return True
        return False

    # -- effects ----------------------------------------------------------------------------
    def taint(self, names) -> None:
        """Names whose object may have been changed (and every name sharing it); a number, string
        or tuple of them cannot be changed in place."""
        todo = [n for n in names if not self._fixed(n) and n not in self.immutable]
        while todo:
            name = todo.pop()
            was = self.state.get(name)
            self.state[name] = False
            if was is not False:      # a module or built-in it was tied to changes only by rebinding
                todo.extend(n for n in self.alias.get(name, ()) if not self._fixed(n) and n not in self.immutable)

    def _module(self, name: str) -> bool:
        target = self.bind.get(name)
        return (bool(target) or name in self.imports) and name not in self.state

    def _fixed(self, name: str) -> bool:
        """A module, an imported or built-in function or one the author defines: only rebinding it changes it."""
        return self._module(name) or (name in _BUILTINS and name not in self.state) or \
            (name in self.funcs and self.state.get(name) is True)

    def _tie(self, name: str, value: ast.expr | None) -> None:
        if value is None:
            return
        for other in _shared(value):
            self._tie_names(name, other)

    def _may_hold_shared(self, name: str) -> bool:
        """Whether ``name`` can hold an object that another name shares (not a module or a function)."""
        return not self._fixed(name) and name not in self.funcs

    def _shares_names(self, value: ast.expr) -> bool:
        """Whether ``value`` may share an object with a name (not a module or a function)."""
        return any(self._may_hold_shared(n) for n in _shared(value))

    def _tie_names(self, name: str, other: str) -> None:
        if other != name and self._may_hold_shared(other):
            self.alias.setdefault(name, set()).add(other)
            self.alias.setdefault(other, set()).add(name)

    def _rebind(self, name: str) -> None:
        """``name`` now holds a new value: it shares nothing with what it was tied to, but what was
        tied through it (``b = a; c = b``) still shares, so those stay tied to one another."""
        others = self.alias.pop(name, set())
        for o in others:
            self.alias[o].discard(name)
            self.alias[o] |= others - {o}

    def assign(self, target: ast.expr, value: ast.expr | None, clean: bool, whole: bool = False) -> None:
        """``target = value``; ``whole``: each part of the target may take any part of the value (a loop)."""
        if isinstance(target, ast.Name):
            self.state[target.id] = clean
            self._rebind(target.id)
            self._tie(target.id, value)
            if isinstance(value, (ast.List, ast.Tuple)) and not whole:
                self.displays[target.id] = value
            else:
                self.displays.pop(target.id, None)
            if clean and value is not None and (_constant_items(value) if whole else _constant(value)):
                self.immutable.add(target.id)
            else:
                self.immutable.discard(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)) and whole and _rows(value, len(target.elts)) and \
                not any(isinstance(t, ast.Starred) for t in target.elts):
            # for n, fr in [(7, (0.6, 0.4)), (9, np.array(...))]: each name takes its column of the rows
            for k, t in enumerate(target.elts):
                column = ast.copy_location(ast.List(elts=[row.elts[k] for row in value.elts], ctx=ast.Load()), value)
                # numbers and strings in a row cannot change, and a column of new objects (`X + noise`,
                # `make()`: nothing they share with a name) holds a different object in each row, so
                # what a pass did to one row's object is not what the next row binds
                own = _constant_items(column) or all(not self._shares_names(e) for e in column.elts)
                self.assign(t, column, self.clean(column) if own else clean and self.clean(column), whole)
        elif isinstance(target, (ast.Tuple, ast.List)):
            parts = value.elts if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts) \
                and not any(isinstance(e, ast.Starred) for e in value.elts) and not whole else None
            for k, t in enumerate(target.elts):
                part = parts[k] if parts else value
                self.assign(t, part, clean and (parts is None or self.clean(part)), whole)
        elif isinstance(target, ast.Starred):
            self.assign(target.value, value, clean, whole)
        else:       # x[i] = v, x.a = v: x now holds v
            base = _base(target)
            if base:
                self.displays.pop(base, None)
                if not clean or not self.clean(target):
                    self.taint([base])
                else:
                    self._tie(base, value)

    def effects(self, stmt: ast.stmt) -> None:
        """What running ``stmt``'s calls may change: what is handed to a function that is not clean
        (or to one that is, along with a function that is not), and the object whose method is
        handed a value that is not clean (``xs.append(v)``)."""
        for call in _calls(stmt):
            handed = [*call.args, *(k.value for k in call.keywords)]
            for n in set().union(*(_shared(a) for a in handed), _shared(call.func)):
                self.displays.pop(n, None)      # what a call is handed or called on may change
            dirty = [a for a in handed if not self.clean(a)]
            base = _base(call.func) if isinstance(call.func, ast.Attribute) else None
            if not self.clean(call.func) and self._library_method(call.func):
                pass        # LogisticRegression(C=c).fit(X, y): the library's own method leaves X alone
            elif not self.clean(call.func) or any(self._callable(a) for a in dirty):
                self.taint(set().union(*(_shared(a) for a in handed))
                           | ({base} if base else set()))
            elif dirty and base:
                self.taint({base})

    def _library_method(self, func: ast.expr) -> bool:
        """A method known to leave what it is handed alone, of an object a library call made right there."""
        if not isinstance(func, ast.Attribute) or func.attr not in HANDED_SAFE:
            return False
        node = func.value
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return isinstance(node, ast.Call) and bool(self.library_path(node.func))

    def _callable(self, node: ast.expr) -> bool:
        """Whether a value that is not clean may be a function of the student's."""
        return isinstance(node, (ast.Attribute, ast.Lambda)) or (isinstance(node, ast.Name) and node.id in self.students)

    def statement(self, stmt: ast.stmt, checks: frozenset = frozenset(), found=None) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.funcs[stmt.name] = _free(stmt)
            # a function is clean when what it reads is (checked at each use, ``clean_name``) and its
            # body reaches nothing impure: ``def make_readings(): rng = variant.rng(…)`` draws the
            # student's variant, so a reference computed by calling it differs between students
            self.state[stmt.name] = all(self.clean(d) for d in stmt.decorator_list) and \
                all(self.clean(b) for b in getattr(stmt, "bases", [])) and not self.reaches_outside(stmt)
            self.defs[stmt.name] = stmt
            if self.visit:
                self.visit(stmt, self.state[stmt.name] and self.clean_name(stmt.name))
            return
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                name = a.asname or a.name.split(".")[0]
                self.imports[name] = a.name if a.asname else a.name.split(".")[0]
                self.state.pop(name, None)
            return
        if isinstance(stmt, ast.ImportFrom):
            for a in stmt.names:
                if a.name != "*":
                    name = a.asname or a.name
                    self.imports[name] = f"{stmt.module}.{a.name}" if stmt.module and not stmt.level else name
                    self.state.pop(name, None)
            return
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.effects(ast.Expr(stmt.iter))
            it, rows = stmt.iter, None
            if isinstance(it, ast.Name) and it.id in self.displays and self.clean_name(it.id):
                rows = self.displays[it.id]     # `cases = [(X, 3), ...]` then `for data, k in cases:`
            for n in range(3):      # what one pass taints reaches the next
                if rows is None:
                    self.assign(stmt.target, it, self.clean(it), whole=True)
                else:
                    self.assign(stmt.target, rows, self.clean(it), whole=True)
                    for t in _names(stmt.target, ast.Store) - self.immutable:
                        self._tie_names(t, it.id)      # what it takes is an element of the list
                self.block(stmt.body, checks if n == 2 else frozenset(), found)
            self.block(stmt.orelse)
            return
        if isinstance(stmt, ast.While):
            for _ in range(2):
                self.effects(ast.Expr(stmt.test))
                self.block(stmt.body)
            self.block(stmt.orelse)
            return
        if isinstance(stmt, ast.If):
            self.effects(ast.Expr(stmt.test))
            self.block(stmt.body)
            self.block(stmt.orelse)
            return
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                self.effects(ast.Expr(item.context_expr))
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, item.context_expr, self.clean(item.context_expr))
            self.block(stmt.body)
            return
        if isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            self.block(stmt.body)
            for h in stmt.handlers:
                if h.name:
                    self.state[h.name] = False
                self.block(h.body)
            self.block(stmt.orelse)
            self.block(stmt.finalbody)
            return
        self.effects(stmt)
        if found is not None and id(stmt) in checks:
            found(stmt)
        if isinstance(stmt, ast.Assign):
            ok = self.clean(stmt.value)
            if self.visit:
                self.visit(stmt, ok)
            for t in stmt.targets:
                self.assign(t, stmt.value, ok)
                for n in _names(t, ast.Store):
                    self.defs.pop(n, None)
            if len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Lambda):
                self.defs[stmt.targets[0].id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self.assign(stmt.target, stmt.value, self.clean(stmt.value))
        elif isinstance(stmt, ast.AugAssign):
            ok = self.clean(stmt.value) and self.clean(stmt.target) if not isinstance(stmt.target, ast.Name) \
                else self.clean(stmt.value) and self.clean_name(stmt.target.id)
            if isinstance(stmt.target, ast.Name):     # `xs += ys` may change xs in place: its ties stay
                self.state[stmt.target.id] = ok
                self._tie(stmt.target.id, stmt.value)
                self.displays.pop(stmt.target.id, None)
                self.immutable.discard(stmt.target.id)
            else:
                self.assign(stmt.target, stmt.value, ok)
        elif isinstance(stmt, ast.Delete):
            for t in stmt.targets:
                gone = _names(t, ast.Del) | ({_base(t)} if _base(t) else set())
                self.taint(gone)
                for n in gone:
                    self.displays.pop(n, None)

    def block(self, body, checks: frozenset = frozenset(), found=None) -> None:
        for stmt in body:
            self.statement(stmt, checks, found)

    def student_cell(self, source: str) -> None:
        """What a cell the student writes binds, or uses in a way that may change it."""
        self.after_student = True
        tree = _transformed(source)
        if tree is None:
            names = set(re.findall(r"[A-Za-z_]\w*", source))
        else:
            stores, loads = _global_mentions(tree.body)
            # what it only reads stays the author's (mutation.changed_names); a module or a built-in
            # changes only by rebinding it
            names = stores | changed_names(tree, {n for n in loads if not self._fixed(n)}, self.library_path)
        for name in names:      # rebound: no longer the author's
            self.state[name] = False
            self.defs.pop(name, None)
            self.displays.pop(name, None)
            self.immutable.discard(name)
        self.taint(names)
        self.students |= names


def _global_mentions(body: list[ast.stmt], local: frozenset = frozenset()) -> tuple[set[str], set[str]]:
    """The global names a block binds and reads (inside the functions it defines: those not local to them)."""
    stores, loads = set(), set()
    todo = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if not isinstance(node, ast.Lambda):
                (loads if node.name in local else stores).add(node.name)
                todo.extend(node.decorator_list)
            args = node.args
            todo.extend(args.defaults + [d for d in args.kw_defaults if d is not None])
            inner = node.body if isinstance(node.body, list) else [ast.Expr(node.body)]
            declared = {n for s in ast.walk(ast.Module(body=inner, type_ignores=[]))
                        if isinstance(s, (ast.Global,)) for n in s.names}
            imported = {a.asname or a.name.split(".")[0] for s in ast.walk(ast.Module(body=inner, type_ignores=[]))
                        if isinstance(s, (ast.Import, ast.ImportFrom)) for a in s.names if a.name != "*"}
            mine = ({a.arg for a in ast.walk(args) if isinstance(a, ast.arg)}
                    | _names(ast.Module(body=inner, type_ignores=[]), ast.Store) | imported) - declared
            s2, l2 = _global_mentions(inner, frozenset(mine))
            stores |= s2
            loads |= l2
            continue
        if isinstance(node, ast.ClassDef):
            stores.add(node.name)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name != "*" and (a.asname or a.name.split(".")[0]) not in local:   # a function's own import is its own
                    stores.add(a.asname or a.name.split(".")[0])
        if isinstance(node, ast.Name) and node.id not in local:
            (loads if isinstance(node.ctx, ast.Load) else stores).add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return stores, loads


def _rows(value: ast.expr | None, width: int) -> bool:
    """A list or tuple display of list or tuple displays, each ``width`` long, nothing starred."""
    return isinstance(value, (ast.List, ast.Tuple)) and bool(value.elts) and all(
        isinstance(row, (ast.List, ast.Tuple)) and len(row.elts) == width and not any(isinstance(x, ast.Starred) for x in row.elts)
        for row in value.elts)


def _constant(value: ast.expr) -> bool:
    """A literal number, string, bool, None or tuple of them (nothing that can change in place)."""
    try:
        v = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    todo = [v]
    while todo:
        x = todo.pop()
        if isinstance(x, tuple):
            todo.extend(x)
        elif not (x is None or isinstance(x, (int, float, complex, str, bytes, bool))):
            return False
    return True


def _constant_items(it: ast.expr) -> bool:
    """What a loop over ``it`` binds is constant: a display of constants, or ``range(...)``."""
    if isinstance(it, (ast.Tuple, ast.List)):
        return all(_constant(e) for e in it.elts)
    return isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"


def _base(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _shared(value: ast.expr) -> set[str]:
    """The names whose objects ``value`` may be, hold or view: none for a new value (``_fresh``);
    for a call, what its receiver and its arguments may share (``pd.DataFrame(rng.uniform(…))``
    shares nothing with ``rng``; ``x.drop(…)`` may share with ``x``); for anything else not known,
    every name it reads."""
    if _fresh(value):
        return set()
    if isinstance(value, ast.Name):
        return {value.id}
    if isinstance(value, (ast.Attribute, ast.Subscript, ast.Starred)):
        return _shared(value.value)
    if isinstance(value, ast.Call):
        return set().union(_shared(value.func), *(_shared(a) for a in [*value.args, *(k.value for k in value.keywords)]))
    if isinstance(value, (ast.List, ast.Tuple, ast.Set, ast.BoolOp)):
        return set().union(*(_shared(e) for e in (value.values if isinstance(value, ast.BoolOp) else value.elts)))
    if isinstance(value, ast.IfExp):
        return _shared(value.body) | _shared(value.orelse)
    return _names(value) - _local_names(value)


def _fresh(value: ast.expr) -> bool:
    """A value that shares no object with the names it reads: a new number, array or copy, or a
    display or comprehension of them (``[t.copy() for t in tables]``); ``a or b`` is one of its operands."""
    if isinstance(value, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.JoinedStr)):
        return True
    if isinstance(value, ast.BoolOp):
        return all(_fresh(v) for v in value.values)
    if isinstance(value, (ast.List, ast.Tuple, ast.Set)):
        return all(_fresh(e) for e in value.elts)
    if isinstance(value, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
        return _fresh(value.elt)
    if isinstance(value, ast.DictComp):
        return _fresh(value.key) and _fresh(value.value)
    return isinstance(value, ast.Call) and _final(value.func) in _COPIES


# ------------------------------------------------------------------------------------------------
# Sites
# ------------------------------------------------------------------------------------------------

def _cell_sites(source: str, flow: Flow) -> list[tuple[ast.AST, ast.expr, ast.expr, Site]]:
    """The test cell's checks of an unclean value against a clean reference (``literals.sites_of``'s
    shape: replaced node, reference node, value node, Site), running ``flow`` through the cell."""
    tree = _transformed(source)
    if tree is None:
        return []
    checks = frozenset(id(s) for s in literals.checks_that_run(tree.body))

    def role(node):
        if literals.literal_value(node) is not None:
            return literals.NEITHER
        return literals.FIXED if flow.clean(node) else literals.VALUE

    finder = literals.CheckFinder(source, flow.bind, role, reference=True)
    flow.block(tree.body, checks, finder.statement)
    return finder.sites


def _is_test(cell) -> bool:
    md = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(md.get("grade")) and not md.get("solution")


def notebook_sites(nb: nbformat.NotebookNode, bind: dict) -> dict[int, tuple[list, Flow]]:
    """Cell index → its reference sites (``_cell_sites``) and the flow as the cell starts (for its
    canary), for every test cell that has any."""
    from .integrity import _trusted_code
    flow, out = Flow(bind), {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if not _trusted_code(cell):
            flow.student_cell(cell.source)
        elif _is_test(cell):
            before = copy.deepcopy(flow)
            sites = _cell_sites(cell.source, flow)
            if sites:
                out[i] = (sites, before)
        else:
            tree = _transformed(cell.source)
            if tree is None:
                flow.student_cell(cell.source)
            else:
                flow.block(tree.body)
    return out


def position(entry) -> str:
    """Where a site is in its cell, and what its reference reads: how the instructor's run and a
    submission's name the same check."""
    replaced, _ref, _val, site = entry
    return f"{replaced.lineno}:{replaced.col_offset}:{site.literal}"


def canary_sites(source: str, before: Flow, literals_of: set[str]) -> list:
    """A canary's checks against the same references as its test's (so that both reach the kernel
    alike); never judged."""
    return [e for e in _cell_sites(source, copy.deepcopy(before)) if e[3].literal in literals_of]
