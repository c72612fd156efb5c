"""The table of REPL functions and everything derived from it: the names tools may not
take, the functions of both REPL kinds, the sandbox's dispatch, the prompt's list, and
the `Host` that serves them."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from deeprlm import prompts
from deeprlm.engine.host import RunHost
from deeprlm.repl import functions
from deeprlm.repl.base import Host, REPLSettings
from deeprlm.repl.functions import (
    REPL_FUNCTIONS,
    RESERVED_NAMES,
    SESSION_NAMES,
    Param,
    REPLFunction,
    host_served,
)
from deeprlm.repl.inprocess import InProcessREPL
from deeprlm.repl.sandbox import SandboxREPL, SandboxSettings
from deeprlm.repl.session import Session


def params_of(fn: Callable[..., Any]) -> list[tuple[str, Any]]:
    signature = inspect.signature(fn)
    return [(p.name, p.default) for p in signature.parameters.values() if p.name != "self"]


HOST_SERVED = [f for f in REPL_FUNCTIONS if f.host_method is not None]


@pytest.mark.parametrize("function", HOST_SERVED, ids=lambda f: f.name)
def test_every_host_function_is_declared_on_host_and_served_by_the_engine(function):
    expected = [(p.name, p.default) for p in function.params]
    assert params_of(getattr(Host, function.host_method)) == expected
    assert params_of(getattr(RunHost, function.host_method)) == expected
    assert inspect.iscoroutinefunction(getattr(RunHost, function.host_method))


def test_reserved_names_are_exactly_what_a_session_defines():
    session = Session("ctx", lambda function, arguments: None)
    defined = {name for name in session.globals if not name.startswith("__")}
    assert defined - {"re", "json", "math"} == RESERVED_NAMES
    assert set(SESSION_NAMES) < RESERVED_NAMES
    assert {
        "llm_query",
        "llm_batch",
        "llm_query_batched",
        "rlm_query",
        "rlm_batch",
    } < RESERVED_NAMES


class RecordingHost:
    """A host that records the arguments each method got, by name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def llm_query(self, prompt: Any, model: str | None = None) -> str:
        self.calls.append(("llm_query", {"prompt": prompt, "model": model}))
        return f"q:{prompt}"

    async def llm_batch(self, prompts: list[Any], model: str | None = None) -> list[str]:
        self.calls.append(("llm_batch", {"prompts": prompts, "model": model}))
        return [f"b:{p}" for p in prompts]

    async def rlm_query(self, query: Any, context: Any = None) -> str:
        self.calls.append(("rlm_query", {"query": query, "context": context}))
        return f"r:{query}"

    async def rlm_batch(self, pairs: list[Any]) -> list[str]:
        self.calls.append(("rlm_batch", {"pairs": pairs}))
        return [f"rb:{p[0]}" for p in pairs]


CALLS = """
print(llm_query(prompt='by name', model='m'))
print(llm_batch(p for p in ['g1', 'g2']))
print(llm_query_batched(prompts=('t1',)))
print(rlm_query('q', context={'a.txt': 'text'}))
print(rlm_batch(pairs=[('q1', 'c1'), ['q2', None]]))
"""
EXPECTED_CALLS = [
    ("llm_query", {"prompt": "by name", "model": "m"}),
    ("llm_batch", {"prompts": ["g1", "g2"], "model": None}),
    ("llm_batch", {"prompts": ["t1"], "model": None}),
    ("rlm_query", {"query": "q", "context": {"a.txt": "text"}}),
    ("rlm_batch", {"pairs": [["q1", "c1"], ["q2", None]]}),
]
ERRORS = [
    ("llm_batch(5)", "TypeError: llm_batch takes a list, not int"),
    ("llm_query()", "TypeError: llm_query(): missing a required argument: 'prompt'"),
    ("llm_query('a', temperature=0)", "got an unexpected keyword argument 'temperature'"),
    ("rlm_batch([], [])", "TypeError: rlm_batch(): too many positional arguments"),
]


def as_lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    return value


def run_in(
    kind: str, code: list[str], context: str = "the context"
) -> tuple[RecordingHost, list[Any]]:
    async def main() -> list[Any]:
        repl = InProcessREPL() if kind == "inprocess" else SandboxREPL(SandboxSettings())
        await repl.start(context, host, REPLSettings())
        try:
            return [await repl.run(c, timeout=60) for c in code]
        finally:
            await repl.close()

    host = RecordingHost()
    return host, asyncio.run(main())


@pytest.mark.parametrize("kind", ["inprocess", "sandbox"])
def test_keyword_and_list_arguments_reach_the_host_by_name_in_both_repl_kinds(kind):
    host, cells = run_in(kind, [CALLS, *(code for code, _ in ERRORS)])
    first = cells[0]
    assert first.error is None
    assert first.output.splitlines() == [
        "q:by name",
        "['b:g1', 'b:g2']",
        "['b:t1']",
        "r:q",
        "['rb:q1', 'rb:q2']",
    ]
    # A tuple stays a tuple in process and becomes a list through the sandbox's JSON.
    calls = [(name, as_lists(args)) for name, args in host.calls]
    assert calls == EXPECTED_CALLS
    for cell, (_, message) in zip(cells[1:], ERRORS, strict=True):
        assert message in (cell.error or ""), cell.error
    assert len(host.calls) == len(EXPECTED_CALLS)  # a refused call never reached the host


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x"], "must be sent by name"),
        ({"prompts": "not a list"}, "llm_batch takes a list"),
        ({"prompts": [], "extra": 1}, "unexpected arguments: extra"),
        ({"model": None}, "missing its argument 'prompts'"),
    ],
)
def test_the_host_refuses_malformed_arguments_from_a_worker(args, message):
    function = host_served("llm_batch")
    assert function is not None
    with pytest.raises(TypeError, match=message):
        function.from_wire(args)
    assert host_served("tool") is None and host_served("llm_query_batched") is None


def make_word_count(namespace: Mapping[str, Any]) -> Callable[..., Any]:
    def word_count(word: str, *, case: bool = False) -> int:
        text = namespace["context"]
        return (text if case else text.lower()).split().count(word if case else word.lower())

    return word_count


def test_a_function_that_runs_inside_the_repl_needs_no_host(monkeypatch):
    local = REPLFunction(
        "word_count",
        (Param("word"), Param("case", False, shown="")),
        returns="int",
        doc="how often a word occurs in `context`.",
        local=f"{__name__}:make_word_count",
        sub_call=False,
    )
    monkeypatch.setattr(functions, "REPL_FUNCTIONS", (*REPL_FUNCTIONS, local))
    monkeypatch.setattr(prompts, "REPL_FUNCTIONS", functions.REPL_FUNCTIONS)
    code = "print(word_count('The'), word_count('The', case=True))"
    host, cells = run_in("inprocess", [code], context="The cat saw the dog")
    assert cells[0].output == "2 1\n"
    assert host.calls == []
    # Listed for the model even where sub-calls are off, as it makes none.
    text = prompts.system_prompt(prompts.PromptSetup(allow_sub_calls=False))
    assert "- word_count(word) -> int: how often a word occurs in `context`." in text
    assert "llm_query" not in text.split("How to work")[0]


def test_an_entry_names_one_server():
    with pytest.raises(ValueError, match="exactly one"):
        REPLFunction("both", (), returns="str", doc="", host_method="x", local="m:f")
    with pytest.raises(ValueError, match="exactly one"):
        REPLFunction("neither", (), returns="str", doc="")


def test_the_prompt_lists_every_host_function_with_its_own_line():
    text = prompts.system_prompt(prompts.PromptSetup(sub_window_chars=3_000, max_depth=0))
    for function in REPL_FUNCTIONS:
        assert f"- {function.name}(" in text
    assert (
        "- llm_query(prompt) -> str: asks a sub-model (it can read about 3,000 characters" in text
    )
    assert "- rlm_batch([(query, context), ...]) -> list[str]:" in text
    assert "(here a plain llm_query, since recursion is at its depth limit)" in text
    assert "llm_query_batched" not in text  # aliases work but are not advertised
