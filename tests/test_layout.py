"""The layout holds: the README's table names every module of the library and nothing
else, and the library never imports the benchmarks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "src" / "deeprlm"


def layout_table() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return section.split("| module | owns |", 1)[1].split("\n\n", 1)[0]


def test_the_readme_layout_table_matches_the_library():
    rows = [line.split("|")[1] for line in layout_table().splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`([\w/]+)`", row)}
    present = {
        path.stem if path.is_file() else f"{path.name}/"
        for path in LIBRARY.iterdir()
        if (path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()))
        and path.stem not in ("__init__", "__main__")
    }
    assert named == present


def test_the_library_never_imports_the_benchmarks():
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "deeprlm_bench" for name in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
