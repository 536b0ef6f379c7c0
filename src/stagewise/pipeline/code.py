"""Task functions read as source, never imported by the runner.

The runner needs three facts about ``module:function`` before a worker imports it: that it
exists (a bad name is bad input, not a failed run), which arguments it takes (only those
pipeline parameters count towards its cache key), and its source (part of the cache key).
All three come from the module's file, parsed once per modification time, so that checking
a pipeline never runs user code and never imports heavy libraries into the runner.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

_trees: dict[tuple[str, int], tuple[str, ast.Module | None]] = {}
_files: dict[str, Path | None] = {}
_prints: dict[tuple[str, int], str] = {}


def problem(target: str) -> str | None:
    """Why ``target`` cannot be a task function, or None when it looks fine (or cannot be
    checked without importing, e.g. a compiled module)."""
    module_name, _, attribute = target.rpartition(":")
    path = module_file(module_name)
    if path is None:
        if module_name.endswith(".py"):
            return f"the file {module_name} does not exist"
        if _has_spec(module_name):
            return None  # compiled or namespace module: the worker will tell
        return f"cannot import module '{module_name}' (not found on the Python path)"
    tree = _tree(path)[1]
    if tree is None or _defines(tree, attribute.split(".")[0]):
        return None
    return f"{path} defines no '{attribute.split('.')[0]}'"


def fingerprint(target: str) -> str | None:
    """Hash of the source of the function (the whole file if it is not found there)."""
    module_name, _, attribute = target.rpartition(":")
    path = module_file(module_name)
    if path is None:
        return None
    text, tree = _tree(path)
    key = (target, _mtime(path))
    if key not in _prints:
        node = _definition(tree, attribute.split(".")[0]) if tree else None
        source = (ast.get_source_segment(text, node) if node else None) or text
        _prints[key] = hashlib.sha256(source.encode()).hexdigest()
    return _prints[key]


def accepted_parameters(target: str) -> set[str] | None:
    """The argument names of the function; None when it takes ``**kwargs`` or its source
    cannot be read (then every parameter counts)."""
    module_name, _, attribute = target.rpartition(":")
    path = module_file(module_name)
    tree = _tree(path)[1] if path else None
    node = _definition(tree, attribute.split(".")[0]) if tree else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.args.kwarg:
        return None
    args = node.args
    return {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}


def module_file(module_name: str) -> Path | None:
    """The ``.py`` file of a module name or a path, found without importing the module."""
    found = _files.get(module_name)
    if found is None:
        found = _find(module_name)
        if found is not None:  # a module that is missing now may be written later
            _files[module_name] = found
    return found


def _find(module_name: str) -> Path | None:
    if module_name.endswith(".py"):
        path = Path(module_name)
        return path if path.is_file() else None
    spec = _spec(module_name)
    if spec is None and os.getcwd() not in sys.path:
        # Workers run in the run's folder with it importable (as `python` run there does);
        # the `stagewise` console script does not put it on the path, so look there too.
        sys.path.append(os.getcwd())
        try:
            spec = _spec(module_name)
        finally:
            sys.path.remove(os.getcwd())
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _spec(module_name: str) -> Any:
    try:
        return importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None


def _has_spec(module_name: str) -> bool:
    return _spec(module_name) is not None


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _tree(path: Path) -> tuple[str, ast.Module | None]:
    key = (str(path), _mtime(path))
    if key[1] < 0:
        return "", None
    if key not in _trees:
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            _trees[key] = (text, ast.parse(text))
        except SyntaxError:
            _trees[key] = (text, None)
    return _trees[key]


def _definition(tree: ast.Module, name: str) -> ast.AST | None:
    for node in tree.body:
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name == name
        ):
            return node
    return None


def _defines(tree: ast.Module, name: str) -> bool:
    """True if the module's top level binds ``name`` (or could: star imports, __getattr__)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name in (name, "__getattr__"):
                return True
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*" or (alias.asname or alias.name.split(".")[0]) == name:
                    return True
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(name in {n.id for n in ast.walk(t) if isinstance(n, ast.Name)} for t in targets):
                return True
        elif isinstance(node, ast.If | ast.Try | ast.With):
            return True  # conditional definitions: leave it to the worker
    return False
