"""codeqa: the generated repository is real Python, and every question's right option is
right by the code itself (imported and run, or read with `ast`)."""

import ast
import importlib
import sys

import pytest

from deeprlm_bench.tasks.codeqa import KINDS, LETTERS, CodeQA


def examples_of_every_kind():
    seen, seed = {}, 0
    while len(seen) < len(KINDS):
        example = CodeQA().generate(seed, 16384)
        seen.setdefault(example.info["kind"], example)
        seed += 1
    return list(seen.values())


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """Writes a repository to disk and makes it importable for the test."""
    packages = []

    def write(files):
        for path, source in files.items():
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        packages.append(next(iter(files)).split("/")[0])
        importlib.invalidate_caches()
        return packages[-1]

    yield write
    for name in [n for n in sys.modules if n.split(".")[0] in packages]:
        del sys.modules[name]


def functions(files):
    """qualified name -> (function node, module name) for every top-level def."""
    found = {}
    for path, source in files.items():
        module = path[:-3].replace("/", ".")
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef):
                found[f"{module}.{node.name}"] = (node, module)
    return found


def imports_of(source):
    return {
        alias.name: node.module
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def right_option(example):
    return example.info["options"][LETTERS.index(example.gold)]


@pytest.mark.parametrize("example", examples_of_every_kind(), ids=lambda e: e.info["kind"])
def test_right_option_is_right_by_the_code(example, importable):
    files = example.context
    for source in files.values():
        compile(source, "<generated>", "exec")
    target = example.info["question"].split("`")[1]
    right = right_option(example)
    kind = example.info["kind"]
    if kind == "value":
        importable(files)
        call = target.rsplit("(", 1)
        module, name = call[0].rsplit(".", 1)
        value = getattr(importlib.import_module(module), name)(int(call[1].rstrip(")")))
        assert right == str(value)
        assert len(set(example.info["options"])) == 4
    elif kind == "writer":
        writers = set()
        for qualname, (node, _) in functions(files).items():
            for sub in ast.walk(node):
                if (
                    isinstance(sub, ast.Assign)
                    and isinstance(sub.targets[0], ast.Subscript)
                    and ast.literal_eval(sub.targets[0].slice) == target
                ):
                    writers.add(qualname)
        assert writers == {right}
    elif kind == "caller":
        module, name = target.rsplit(".", 1)
        callers = set()
        for qualname, (node, here) in functions(files).items():
            source = files[here.replace(".", "/") + ".py"]
            bound = here == module or imports_of(source).get(name) == module
            calls = {
                c.func.id
                for c in ast.walk(node)
                if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
            }
            if bound and name in calls:
                callers.add(qualname)
        assert right in callers
        assert not callers & (set(example.info["options"]) - {right})
    else:
        definers = {
            path[:-3].replace("/", ".")
            for path, source in files.items()
            for node in ast.parse(source).body
            if isinstance(node, ast.Assign) and node.targets[0].id == target
        }
        assert definers == {right}


def test_every_function_in_a_repository_runs(importable):
    files = CodeQA().generate(4, 16384).context
    package = importable(files)
    ran = 0
    for node, module in functions(files).values():
        if node.args.args and node.args.args[0].arg == "x":
            getattr(importlib.import_module(module), node.name)(3)
            ran += 1
    assert package and ran > 20


def test_letter_scoring():
    example = CodeQA().generate(0, 4096)
    assert CodeQA().score(example, f"Answer: {example.gold}") == 1.0
    wrong = next(letter for letter in LETTERS if letter != example.gold)
    assert CodeQA().score(example, f"Answer: {wrong}") == 0.0
