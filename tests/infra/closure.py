"""The deployed function's import closure, found by reading source (nothing is imported).

Every module of a source root reachable from an entry module through `import` and
`from ... import` statements anywhere in a file (module level, inside functions, under
TYPE_CHECKING: all count, since any of them may run), `importlib.import_module("...")` with a
literal name, and string literals naming a first-party module (`resources.files("pkg.data")`
reads a package's data). Third-party imports are collected by their full dotted name.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Closure:
    modules: dict[str, Path] = field(default_factory=dict)  # first-party name -> file
    third_party: set[str] = field(default_factory=set)  # dotted names as imported


def module_file(root: Path, name: str) -> Path | None:
    if not all(part.isidentifier() for part in name.split(".")):
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _named(module: str, is_package: bool, tree: ast.AST) -> list[str]:
    """Every dotted name a file may import."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node)
            names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append(node.args[0].value)
    return names


def _string_constants(tree: ast.AST) -> list[str]:
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def import_closure(root: Path, entry: str) -> Closure:
    closure = Closure()
    pending = [entry]
    while pending:
        module = pending.pop()
        path = module_file(root, module)
        if module in closure.modules or path is None:
            continue
        closure.modules[module] = path
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        named = _named(module, path.name == "__init__.py", tree)
        named += [s for s in _string_constants(tree) if module_file(root, s) is not None]
        for name in named:
            parts = name.split(".")
            if module_file(root, parts[0]) is None:
                if parts[0] not in sys.stdlib_module_names:
                    closure.third_party.add(name)
                continue
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py too.
            pending += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return closure
