"""User tools in the root's REPL and sub-call tools through the text protocol."""

from __future__ import annotations

import pytest

from deeprlm import RLM, InputError, ScriptedLM
from deeprlm.tools import parse_text_call, tool_spec

from conftest import outputs, repl


def test_root_tools_are_callable_from_the_repl_and_listed_in_the_prompt():
    def word_count(text: str) -> int:
        """Counts the words in a text."""
        return len(text.split())

    root = ScriptedLM([repl("print(word_count(context))"), "FINAL(x)"])
    RLM(root, tools=[word_count]).run("q", "one two three")
    assert "word_count: Counts the words in a text." in root.calls[0][0]["content"]
    assert outputs(root.calls[1][-1]["content"]) == ["3"]


def test_sub_tools_reach_only_sub_calls_through_the_text_protocol():
    opened: list[str] = []

    def read_file(path: str) -> str:
        """Reads a file."""
        opened.append(path)
        return "BIG FILE CONTENT " * 100

    def sub(messages):
        assert "read_file(path)" in messages[0]["content"]
        if messages[-1]["content"].startswith("Result of read_file"):
            return "the file is about BIG FILE CONTENT"
        return (
            'Let me read it.\n```tool\n{"name": "read_file", "arguments": {"path": "a.txt"}}\n```'
        )

    root = ScriptedLM([repl("print(llm_query('what is in a.txt?'))"), "FINAL(x)"])
    RLM(root, ScriptedLM(sub), sub_tools=[read_file]).run("q", "ctx")
    assert opened == ["a.txt"]
    shown = root.calls[1][-1]["content"]
    assert shown.strip().startswith("Output:\nthe file is about BIG FILE CONTENT")
    assert shown.count("BIG FILE CONTENT") == 1  # tool output stayed in the sub-call
    assert "read_file" not in root.calls[0][0]["content"]  # the root is not offered it


def test_sub_tool_loop_ends_after_its_turn_limit():
    calls = []

    def sub(messages):
        calls.append(messages)
        return '```tool\n{"name": "ping", "arguments": {}}\n```'

    root = ScriptedLM([repl("print(llm_query('loop forever'))"), "FINAL(x)"])
    RLM(root, ScriptedLM(sub), sub_tools={"ping": lambda: "pong"}, sub_tool_turns=2).run("q", "c")
    assert len(calls) == 3
    assert "No more tool calls" in calls[-1][-1]["content"]


def test_tool_errors_and_unknown_tools_go_back_to_the_sub_model():
    def sub(messages):
        last = messages[-1]["content"]
        if "Error" in last:
            return f"saw: {last}"
        if "second" in last:
            return '```tool\n{"name": "nope", "arguments": {}}\n```'
        return '```tool\n{"name": "boom", "arguments": {}}\n```'

    def boom():
        raise ValueError("bad day")

    root = ScriptedLM([repl("print(llm_query('first'))\nprint(llm_query('second'))"), "FINAL(x)"])
    RLM(root, ScriptedLM(sub), sub_tools=[boom]).run("q", "c")
    shown = root.calls[1][-1]["content"]
    assert "ValueError: bad day" in shown
    assert "no tool named 'nope'" in shown


@pytest.mark.parametrize("name", ["llm_query", "context", "FINAL", "answer"])
def test_tool_names_that_clash_with_the_repl_are_refused(name):
    with pytest.raises(InputError, match=f"the name '{name}' is taken"):
        RLM(ScriptedLM(["FINAL(x)"]), tools={name: print})
    with pytest.raises(InputError, match="is taken"):
        RLM(ScriptedLM(["FINAL(x)"]), sub_tools={name: print})


def test_bad_tools_are_refused():
    with pytest.raises(InputError, match="not callable"):
        RLM(ScriptedLM(["FINAL(x)"]), tools={"x": 3})
    with pytest.raises(InputError, match="not a valid Python name"):
        RLM(ScriptedLM(["FINAL(x)"]), tools={"bad name": print})


def test_tool_spec_comes_from_signature_and_docstring():
    def search(query: str, limit: int = 5, exact: bool = False) -> list[str]:
        """Searches the corpus.

        Longer explanation that is left out."""
        return []

    spec = tool_spec("search", search)
    assert spec.description == "Searches the corpus."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer"},
            "exact": {"type": "boolean"},
        },
        "required": ["query"],
    }


def test_text_tool_calls_parse_or_explain_why_not():
    assert parse_text_call("no tool here") is None
    call = parse_text_call('```tool\n{"name": "f", "arguments": {"a": 1}}\n```')
    assert call.name == "f" and call.arguments == {"a": 1}
    assert "could not read" in parse_text_call("```tool\n{not json}\n```")
