"""Mutation operators for solution cells: the small changes a student's mistake makes.

Each operator changes one node of a solution cell's syntax tree, only on lines inside the cell's
``### BEGIN SOLUTION`` / ``### END SOLUTION`` regions (the code the student writes; signatures
and docstrings are handed out). ``force-default`` is the exception: it pins a parameter of a
function with a solution region to its default (a function that ignores ``k``).

Why our own small AST mutator rather than mutmut or cosmic-ray: both mutate files of an
installed package and run a test command per mutant; a notebook's solution cell is neither a
module on disk nor tested by a command, and their operators are not a public API. Here a mutant
is a new cell source, and :mod:`mlbd.mutants.runner` runs it in a warm kernel.
"""
from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass
from typing import Callable, Iterator

SOLUTION_REGION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)

COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
ARITH_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}
BOOL_SWAPS = {ast.And: ast.Or, ast.Or: ast.And}
# Keras names a student confuses: activations, optimizers, losses, monitored metrics.
KERAS_SWAPS = {
    "keras-activation": {"relu": "tanh", "tanh": "relu", "sigmoid": "linear", "softmax": "sigmoid",
                         "linear": "relu", "elu": "relu", "selu": "relu", "gelu": "relu", "swish": "relu"},
    "keras-optimizer": {"adam": "sgd", "sgd": "adam", "rmsprop": "sgd", "nadam": "sgd", "adamw": "sgd",
                        "Adam": "SGD", "SGD": "Adam", "RMSprop": "SGD", "Nadam": "SGD", "AdamW": "SGD"},
    "keras-loss": {"sparse_categorical_crossentropy": "categorical_crossentropy",
                   "categorical_crossentropy": "sparse_categorical_crossentropy",
                   "binary_crossentropy": "mse", "mse": "mae", "mae": "mse",
                   "mean_squared_error": "mean_absolute_error"},
    "keras-monitor": {"val_loss": "loss", "loss": "val_loss", "val_accuracy": "accuracy",
                      "accuracy": "val_accuracy"},
}
AXIS_SWAPS = {0: 1, 1: 0, -1: 0}


@dataclass(frozen=True)
class Mutant:
    """One mutated solution cell. ``key`` names it stably across unrelated edits of the notebook."""
    solution_id: str
    operator: str
    line: int          # 1-based line of the change in the cell
    original: str      # that line, stripped
    change: str        # "before -> after", the changed expression
    source: str        # the whole mutated cell

    @property
    def key(self) -> str:
        return f"{self.solution_id} | {self.operator} | {self.original} | {self.change}"


@dataclass
class _Point:
    index: int                               # position of the node in ast.walk order
    operator: str
    apply: Callable[[ast.AST], str]          # mutates the node in place, returns "before -> after"


def solution_lines(source: str) -> set[int]:
    """1-based line numbers of a cell that lie inside its solution regions."""
    lines: set[int] = set()
    for m in SOLUTION_REGION.finditer(source):
        first = source.count("\n", 0, m.start(1)) + 1
        last = first + m.group(1).count("\n") - 1
        lines.update(range(first, last + 1))
    return lines


def _in_solution(node: ast.AST, lines: set[int]) -> bool:
    return getattr(node, "lineno", None) in lines


def _swap_op(holder_attr: str, swaps: dict, position: int | None = None):
    def apply(node):
        before = ast.unparse(node)
        if position is None:
            setattr(node, holder_attr, swaps[type(getattr(node, holder_attr))]())
        else:
            ops = getattr(node, holder_attr)
            ops[position] = swaps[type(ops[position])]()
        return f"{before} -> {ast.unparse(node)}"
    return apply


def _set_value(value):
    def apply(node):
        before = ast.unparse(node)
        node.value = value
        return f"{before} -> {ast.unparse(node)}"
    return apply


def _drop_keyword(position: int):
    def apply(node):
        kw = node.keywords.pop(position)
        return f"{ast.unparse(kw)} -> (dropped)"
    return apply


def _swap_first_args(node):
    before = ast.unparse(node)
    node.args[0], node.args[1] = node.args[1], node.args[0]
    return f"{before} -> {ast.unparse(node)}"


def _remove_statement(field: str, position: int):
    def apply(parent):
        body = getattr(parent, field)
        removed = body[position]
        body[position] = ast.Pass()
        ast.copy_location(body[position], removed)
        return f"{ast.unparse(removed).splitlines()[0]} -> pass"
    return apply


def _unwrap_unary(node):
    return f"{ast.unparse(node)} -> {ast.unparse(node.operand)}"


def _force_default(name: str, default: ast.expr):
    def apply(fn):
        pin = ast.parse(f"{name} = {ast.unparse(default)}").body[0]
        body = fn.body
        at = 1 if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str) else 0
        body.insert(at, pin)
        return f"{name} -> {ast.unparse(default)} (ignores the argument)"
    return apply


def _rename_attr(mapping: dict):
    def apply(node):
        before = node.attr
        node.attr = mapping[before]
        return f"{before} -> {node.attr}"
    return apply


def _points(tree: ast.AST, lines: set[int]) -> Iterator[_Point]:
    nodes = list(ast.walk(tree))
    for i, node in enumerate(nodes):
        if isinstance(node, ast.FunctionDef) and any(getattr(n, "lineno", 0) in lines for n in ast.walk(node)):
            args = node.args
            positional = args.posonlyargs + args.args
            for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults):
                yield _Point(i, "force-default", _force_default(arg.arg, default))
            for arg, default in zip(args.kwonlyargs, args.kw_defaults):
                if default is not None:
                    yield _Point(i, "force-default", _force_default(arg.arg, default))
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list):
                for j, stmt in enumerate(stmts):
                    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)) and _in_solution(stmt, lines) \
                            and not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                        yield _Point(i, "remove-statement", _remove_statement(field, j))
        if not _in_solution(node, lines):
            continue
        if isinstance(node, ast.Compare):
            for j, op in enumerate(node.ops):
                if type(op) in COMPARE_SWAPS:
                    yield _Point(i, "compare", _swap_op("ops", COMPARE_SWAPS, j))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITH_SWAPS:
            yield _Point(i, "arith", _swap_op("op", ARITH_SWAPS))
        elif isinstance(node, ast.BoolOp):
            yield _Point(i, "boolean", _swap_op("op", BOOL_SWAPS))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            yield _Point(i, "unary", _unwrap_unary)
        elif isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                yield _Point(i, "constant", _set_value(not value))
            elif isinstance(value, int):
                yield _Point(i, "off-by-one", _set_value(value + 1))
                yield _Point(i, "off-by-one", _set_value(value - 1))
            elif isinstance(value, float):
                yield _Point(i, "constant", _set_value(value * 2 if value else 1.0))
            elif isinstance(value, str):
                for operator, swaps in KERAS_SWAPS.items():
                    if value in swaps:
                        yield _Point(i, operator, _set_value(swaps[value]))
                        break
        elif isinstance(node, ast.Call):
            for j, kw in enumerate(node.keywords):
                if kw.arg is None:
                    continue
                yield _Point(i, "drop-argument", _drop_keyword(j))
            if len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]) \
                    and ast.dump(node.args[0]) != ast.dump(node.args[1]):
                yield _Point(i, "swap-args", _swap_first_args)
        elif isinstance(node, ast.keyword) and node.arg == "axis" and isinstance(node.value, ast.Constant) \
                and node.value.value in AXIS_SWAPS and not isinstance(node.value.value, bool):
            yield _Point(i, "axis", _axis_swap)
        elif isinstance(node, ast.Attribute) and node.attr in KERAS_SWAPS["keras-optimizer"]:
            yield _Point(i, "keras-optimizer", _rename_attr(KERAS_SWAPS["keras-optimizer"]))


def _axis_swap(kw):
    before = ast.unparse(kw)
    kw.value = ast.Constant(AXIS_SWAPS[kw.value.value])
    return f"{before} -> {ast.unparse(kw)}"


def mutants_of(solution_id: str, source: str) -> list[Mutant]:
    """Every mutant of one solution cell, in a stable order; mutants that unparse to the same
    code as the original (or as an earlier mutant) are dropped."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = solution_lines(source)
    if not lines:
        return []
    original_code = ast.unparse(tree)
    src_lines = source.splitlines()
    seen = {original_code}
    keys: dict[str, int] = {}
    out: list[Mutant] = []
    for point in _points(tree, lines):
        mutated = copy.deepcopy(tree)
        node = list(ast.walk(mutated))[point.index]
        change = point.apply(node)
        ast.fix_missing_locations(mutated)
        code = ast.unparse(mutated)
        if code in seen:
            continue
        seen.add(code)
        line = getattr(node, "lineno", 1)
        if point.operator == "force-default":
            line = node.lineno
        elif point.operator == "remove-statement":
            line = _changed_line(tree, mutated) or line
        original = src_lines[line - 1].strip() if 0 < line <= len(src_lines) else ""
        mutant = Mutant(solution_id, point.operator, line, original, change, code)
        keys[mutant.key] = keys.get(mutant.key, 0) + 1
        if keys[mutant.key] > 1:     # the same change at two places of one line
            mutant = Mutant(solution_id, point.operator, line, original, f"{change} #{keys[mutant.key]}", code)
        out.append(mutant)
    return out


def _changed_line(tree: ast.AST, mutated: ast.AST) -> int | None:
    for a, b in zip(ast.walk(tree), ast.walk(mutated)):
        if type(a) is not type(b) and hasattr(a, "lineno"):
            return a.lineno
    return None
