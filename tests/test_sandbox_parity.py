"""The same scripted runs give the same answers, outputs and errors in process and in the
sandbox: the model cannot tell where its code runs, except that the sandbox says no."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from deeprlm import RLM, ScriptedLM, SubCallLimitError
from deeprlm.trace.events import CellEnded, RunStarted

from conftest import repl

Policy = Callable[[list[dict[str, Any]]], str]


def sub_model() -> ScriptedLM:
    return ScriptedLM(lambda m: "sub<" + str(m[-1]["content"])[:40] + ">", name="sub")


def both(policy: Policy | list[str], context: Any, **settings: Any) -> list[Any]:
    """Runs the script in each REPL kind; returns what the model and the caller saw.

    The root's cells are compared in order; children's, which run at once, as a set."""
    seen = []
    for kind in ("inprocess", "sandbox"):
        root = ScriptedLM(policy if callable(policy) else list(policy))
        result = RLM(root, sub_model(), repl=kind, **settings).run("the query", context)
        ended = result.trace.of_type(CellEnded)
        cells = [(c.output, c.error, c.final) for c in ended if c.run_id == result_root(result)]
        children = sorted(
            (c.output, c.error or "", c.final or "")
            for c in ended
            if c.run_id != result_root(result)
        )
        seen.append((result.answer, result.status, result.sub_calls, cells, children))
    assert seen[0] == seen[1]
    return seen[0]


def result_root(result: Any) -> str:
    return result.trace.of_type(RunStarted)[0].run_id


def test_an_analysis_across_cells_with_a_batch():
    context = "\n".join(f"line {i}: {'error' if i % 7 == 0 else 'ok'}" for i in range(200))
    answer, status, sub_calls, cells, _ = both(
        [
            repl(
                "lines = context.splitlines()\nbad = [x for x in lines if 'error' in x]\nlen(bad)"
            ),
            repl(
                "chunks = [bad[i:i + 10] for i in range(0, len(bad), 10)]\n"
                "notes = llm_batch(['\\n'.join(c) for c in chunks])\n"
                "for n in notes:\n    print(n)"
            ),
            repl("summary = f'{len(bad)} errors in {len(notes)} chunks'\nFINAL_VAR('summary')"),
        ],
        context,
    )
    assert answer == "29 errors in 3 chunks"
    assert (status, sub_calls) == ("answered", 3)
    assert cells[0][0] == "29\n"


def test_the_answer_dict_and_show_vars():
    answer, *_ = both(
        [
            repl("answer['content'] = str(context).upper()\nx = 1\nprint(SHOW_VARS())"),
            repl("answer['content'] += '!'\nanswer['ready'] = True"),
        ],
        ["a", "b"],
    )
    assert answer == "['A', 'B']!"


def test_errors_read_the_same():
    _, _, _, cells, _ = both(
        [
            repl("def f(d):\n    return d['missing']\nf({})"),
            repl("import json\njson.loads('{bad')"),
            repl("raise SystemExit(3)"),
            repl("FINAL_VAR('nothing')"),
            repl("FINAL('ok')"),
        ],
        "ctx",
    )
    errors = [c[1] for c in cells]
    assert "KeyError: 'missing'" in errors[0] and "line 2, in f" in errors[0]
    assert errors[1].endswith(
        "json.decoder.JSONDecodeError: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)"
    )
    assert errors[2].endswith("SystemExit: 3")
    assert "no variable named 'nothing'" in errors[3]


def test_errors_raised_by_the_host_reach_the_code_alike():
    # The traceback's host-side frames differ (the sandbox has none); the error does not.
    errors = []
    for kind in ("inprocess", "sandbox"):
        root = ScriptedLM([repl("llm_query('x')"), repl("FINAL('ok')")])
        result = RLM(root, repl=kind, allow_sub_calls=False).run("q", "ctx")
        error = result.trace.of_type(CellEnded)[0].error or ""
        assert 'File "<cell 1>", line 1' in error
        errors.append(error.splitlines()[-1])
    assert errors == ["RuntimeError: sub-calls are disabled in this run"] * 2


def test_child_runs_and_tools():
    calls = []

    def lookup(key: str) -> str:
        """Looks a key up in the host."""
        calls.append(key)
        return f"value-of-{key}"

    def policy(messages: list[dict[str, Any]]) -> str:
        first = str(messages[1]["content"])
        if "Query: child" in first:
            return repl("FINAL(context[:5] + '|' + llm_query(context))")
        if len(messages) == 2:
            return repl(
                "kids = rlm_batch([('child a', 'alpha text'), ('child b', 'beta text')])\n"
                "one = rlm_query('child c', 'gamma text')\n"
                "print(kids, one, lookup('k1'))"
            )
        return "FINAL_VAR(one)"

    answer, _, _, cells, children = both(policy, "root context", tools={"lookup": lookup})
    assert answer == "gamma|sub<gamma text>"
    assert len(children) == 3
    assert cells[0][0] == (
        "['alpha|sub<alpha text>', 'beta |sub<beta text>'] gamma|sub<gamma text> value-of-k1\n"
    )
    assert calls == ["k1", "k1"]


def test_a_reached_limit_ends_both_the_same_way():
    for kind in ("inprocess", "sandbox"):
        root = ScriptedLM(
            [repl("answer['content'] = 'part'\nfor i in range(5):\n    llm_query(str(i))")]
        )
        with pytest.raises(SubCallLimitError) as caught:
            RLM(root, sub_model(), repl=kind, max_sub_calls=2).run("q", "ctx")
        assert caught.value.partial_answer == "part"
        assert caught.value.result.sub_calls == 2
