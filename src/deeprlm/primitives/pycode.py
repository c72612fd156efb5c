"""`run_code`: evaluate a Python expression against a codebase held as a dict of files.

"What does `shop.mailer.send.retry_delay(3)` return?" is a question about code that reading
answers poorly (calls across modules, constants, loops) and running answers exactly. The
files of a dict context (`path/to/mod.py` -> source) are imported as the modules their
paths name, folders as packages, from memory: nothing is written to disk. The import
machinery knows them only while `run_code` runs, and the modules it loaded leave
`sys.modules` when it returns, so nothing of the codebase stays behind in the process.

Running the context's code is running untrusted code: in the sandboxed REPL it runs under
the sandbox's rules like any of the model's code; in process, only for trusted contexts.
Standard library only: this runs inside the REPL's process.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

_LOCK = threading.Lock()


class _FilesFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds modules and packages among the files of a dict, by their paths."""

    def __init__(self, modules: dict[str, tuple[str, str]], packages: set[str]) -> None:
        self.modules = modules  # module name -> (path, source)
        self.packages = packages  # names of folders, imported as packages

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.modules:
            origin, _ = self.modules[fullname]
            is_package = origin.endswith("__init__.py")
            return importlib.machinery.ModuleSpec(
                fullname, self, origin=origin, is_package=is_package
            )
        if fullname in self.packages:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        entry = self.modules.get(module.__name__)
        if entry is None:
            module.__path__ = []  # a folder without __init__.py
            return
        origin, source = entry
        module.__file__ = origin
        exec(compile(source, origin, "exec"), module.__dict__)


def _index(files: Mapping[str, str]) -> tuple[dict[str, tuple[str, str]], set[str]]:
    modules: dict[str, tuple[str, str]] = {}
    packages: set[str] = set()
    for path, source in files.items():
        if not path.endswith(".py"):
            continue
        parts = path.strip("/").removesuffix(".py").split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or not all(part.isidentifier() for part in parts):
            continue
        modules[".".join(parts)] = (path, source)
        for end in range(1, len(parts)):
            packages.add(".".join(parts[:end]))
    return modules, packages


def run_code(files: Any, expression: str) -> Any:
    """The value of `expression` (e.g. "shop.mailer.send.retry_delay(3)") with the Python
    files of `files` (a dict of path -> source) importable by their paths' module names."""
    if not isinstance(files, Mapping):
        raise TypeError(f"run_code: takes a dict of path -> source, not {type(files).__name__}")
    if not isinstance(expression, str):
        raise TypeError("run_code: the expression must be a str, e.g. 'pkg.mod.f(2)'")
    tree = ast.parse(expression.strip(), mode="eval")
    modules, packages = _index(files)
    if not modules:
        raise ValueError("run_code: the dict holds no .py files")
    finder = _FilesFinder(modules, packages)
    names = set(modules) | packages
    with _LOCK:
        # Modules of the same names loaded before (a file named json.py) step aside while
        # the codebase runs, and come back after.
        before = {name: sys.modules.pop(name) for name in names if name in sys.modules}
        sys.meta_path.insert(0, finder)
        try:
            namespace = _roots(tree, names)
            return eval(compile(tree, "<run_code>", "eval"), namespace)
        finally:
            sys.meta_path.remove(finder)
            for name in names:
                sys.modules.pop(name, None)
            sys.modules.update(before)


def _roots(tree: ast.Expression, names: set[str]) -> dict[str, Any]:
    """The top-level packages the expression names, imported (with every dotted module it
    reaches, so `pkg.mod.f` resolves as attributes)."""
    namespace: dict[str, Any] = {}
    for node in ast.walk(tree):
        dotted = _dotted(node)
        if dotted is None or dotted.split(".")[0] not in {n.split(".")[0] for n in names}:
            continue
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            name = ".".join(parts[:end])
            if name in names:
                importlib.import_module(name)
                break
        namespace[parts[0]] = sys.modules[parts[0]]
    return namespace


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def for_repl(namespace: Mapping[str, Any]) -> Callable[..., Any]:
    """`run_code` as the REPL has it: with one argument, the files are the REPL's context."""

    def run_code_in_repl(files: Any, expression: Any = None) -> Any:
        if expression is None and isinstance(files, str):
            files, expression = namespace.get("context"), files
        return run_code(files, expression)

    run_code_in_repl.__name__ = run_code_in_repl.__qualname__ = "run_code"
    run_code_in_repl.__doc__ = run_code.__doc__
    return run_code_in_repl
