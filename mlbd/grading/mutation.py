"""Which of the notebook's names a cell the student writes may change (``references.Flow``).

A reference is judged by the grader with the instructor's value only while the student's cells
leave what it reads alone. Reading a name cannot change it: ``X.shape``, ``len(X)``, ``print(X.head())``,
``X + 1``, ``np.mean(X)``, ``model.fit(X, y)``, ``Y[X]``. Everything else may: rebinding it, storing into
it (``X[0] = 1``, ``X.a = 1``), a method that is not known to only read (``X.sort()``, ``X.append(1)``),
handing it to a function not known to leave its arguments alone, and keeping a second handle on it
(``Y = X``, ``Y = X[:5]``, ``Y = np.asarray(X)``, ``[X]``, ``return X``, ``for row in X``), which could be
changed later. Unknown means may change: a name some use of which is not known to be a read counts.
"""
from __future__ import annotations

import ast
import builtins

# Methods that only read their object and return something new.
READ_METHODS = {
    "copy", "astype", "sum", "mean", "std", "var", "min", "max", "argmax", "argmin", "dot", "tolist", "item",
    "round", "cumsum", "prod", "any", "all", "get", "keys", "values", "items", "count", "startswith", "endswith",
    "lower", "upper", "strip", "split", "join", "format", "replace", "dropna", "fillna", "equals", "isna", "notna",
    "median", "predict", "predict_proba", "decision_function", "transform", "score", "clip", "nonzero",
    "argsort", "sort_values", "sort_index", "reset_index", "drop", "drop_duplicates", "to_list", "unique",
    "nunique", "value_counts", "get_params", "numpy", "as_list", "outer", "conj", "trace", "take", "repeat",
    "mask", "where", "abs", "head", "tail", "describe", "info", "isin", "corr", "cov", "quantile", "idxmax",
    "idxmin", "to_numpy", "groupby", "agg", "merge", "apply", "map", "plot", "hist", "summary", "count_params",
    "get_config", "get_weights", "evaluate", "flatten",
}
# Methods and functions whose result may share the object they read (a view, the object itself).
VIEWS = {"reshape", "ravel", "transpose", "squeeze", "view", "T", "asarray", "asanyarray", "atleast_1d",
         "atleast_2d", "atleast_3d", "broadcast_to", "expand_dims", "swapaxes", "moveaxis", "diagonal",
         "DataFrame", "Series", "iter", "enumerate", "zip", "list", "tuple", "set", "dict", "reversed", "filter",
         "map", "loc", "iloc", "values", "to_numpy"}
# Methods that leave the objects they are handed alone (they may change their own object).
HANDED_SAFE = READ_METHODS | {"fit", "partial_fit", "fit_transform", "fit_predict", "train_on_batch", "set_params",
                              "add_subplot", "scatter", "plot", "imshow", "bar", "legend", "set_title",
                              "set_xlabel", "set_ylabel", "format"}
_READ_BUILTINS = {"len", "print", "type", "isinstance", "issubclass", "repr", "str", "int", "float", "bool", "abs",
                  "round", "sum", "min", "max", "sorted", "any", "all", "hasattr", "getattr", "callable", "divmod",
                  "pow", "format", "ord", "chr", "hex", "bin", "oct", "complex", "display"}
_LIBRARIES = {"numpy", "pandas", "sklearn", "scipy", "math", "matplotlib", "tensorflow", "keras", "statistics"}
_CHANGING = {"shuffle", "seed", "fill", "put", "place", "copyto", "resize", "fill_diagonal", "putmask"}


def changed_names(tree: ast.Module, candidates: set[str], resolve) -> set[str]:
    """The names of ``candidates`` (globals a student's cell reads) that some use in ``tree`` may
    change. ``resolve(func)``: a call's dotted import path ("numpy.mean") when the name it starts
    from is an import, else ""."""
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in candidates \
                and node.id not in out and not _read_only(node, parent, resolve):
            out.add(node.id)
    return out


def _read_only(node: ast.AST, parent: dict, resolve) -> bool:
    """Whether this use of a value (and of what it may share, up the expression) only reads it."""
    while True:
        p = parent.get(node)
        if isinstance(p, ast.Attribute) and p.value is node:
            if isinstance(p.ctx, (ast.Store, ast.Del)):
                return False
            call = parent.get(p)
            if isinstance(call, ast.Call) and call.func is p:       # a method of it
                if any(k.arg == "inplace" for k in call.keywords):
                    return False                                  # X.dropna(inplace=True)
                if p.attr in VIEWS:
                    node = call
                    continue
                return p.attr in READ_METHODS
            node = p                                              # an attribute: part of it
            continue
        if isinstance(p, ast.Subscript):
            if p.value is not node:
                return True                                       # used as an index
            if isinstance(p.ctx, (ast.Store, ast.Del)):
                return False
            node = p
            continue
        if isinstance(p, ast.keyword):
            node, p = p, parent.get(p)
        if isinstance(p, ast.Call):
            if p.func is node:
                return True                                       # called, not changed
            func = p.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if isinstance(func, ast.Name) and name in vars(builtins):
                if name in VIEWS:
                    node = p
                    continue
                return name in _READ_BUILTINS
            if any(k.arg == "out" for k in p.keywords):
                return False                                      # np.add(a, b, out=X)
            path = resolve(func)
            if path and (path.split(".")[0] in _LIBRARIES or path.startswith("mlbd.checks.")):
                if name in _CHANGING or ".random." in f".{path}.":
                    return False
                if name in VIEWS:
                    node = p
                    continue
                return True
            if isinstance(func, ast.Attribute) and not path:
                return name in HANDED_SAFE and name not in VIEWS
            return False
        if isinstance(p, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.FormattedValue, ast.JoinedStr)):
            return True
        if isinstance(p, (ast.If, ast.While, ast.Assert, ast.IfExp)) and getattr(p, "test", None) is node:
            return True
        if isinstance(p, ast.Expr):
            return True                                           # shown, not kept
        if isinstance(p, ast.Starred):
            node = p
            continue
        return False
