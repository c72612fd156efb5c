"""Recursion depth, concurrent batches and concurrent child runs."""

from __future__ import annotations

import re

from deeprlm import RLM, ScriptedLM
from deeprlm.trace.events import (
    CellEnded,
    CellStarted,
    Event,
    Note,
    RunStarted,
)

from conftest import peak_in_flight, repl


def peak_cells_in_flight(events: list[Event]) -> int:
    running = peak = 0
    for event in events:
        if isinstance(event, CellStarted):
            running += 1
            peak = max(peak, running)
        elif isinstance(event, CellEnded):
            running -= 1
    return peak


def test_recursion_to_depth_three_then_fallback_to_a_plain_call():
    def policy(messages):
        level = int(re.search(r"Query: level (\d)", messages[1]["content"]).group(1))
        if len(messages) == 2:
            return repl(f"r = rlm_query('level {level + 1}', context + '>{level}')\nprint(r)")
        inner = re.search(r"Output:\n(.*)\n", messages[-1]["content"]).group(1)
        return f"FINAL(L{level}[{inner}])"

    sub = ScriptedLM(lambda m: "leaf:" + m[-1]["content"].split("Context:\n")[1], name="sub")
    result = RLM(ScriptedLM(policy), sub, max_depth=3).run("level 0", "c")
    starts = result.trace.of_type(RunStarted)
    assert [s.depth for s in starts] == [0, 1, 2, 3]
    assert result.answer == "L0[L1[L2[L3[leaf:c>0>1>2>3]]]]"
    notes = result.trace.of_type(Note)
    assert len(notes) == 1 and "depth limit 3" in notes[0].message
    # Child runs hang off the cell that started them.
    cells = {e.id for e in result.trace.events if e.type == "cell_started"}
    assert all(s.parent_id in cells for s in starts[1:])


def test_max_depth_zero_makes_rlm_query_a_plain_model_call():
    root = ScriptedLM([repl("print(rlm_query('what?', 'ctx text'))"), "FINAL(x)"])
    sub = ScriptedLM(lambda m: "plain:" + m[-1]["content"].replace("\n", " "), name="sub")
    result = RLM(root, sub, max_depth=0).run("q", "c")
    assert "plain:what?  Context: ctx text" in root.calls[1][-1]["content"]
    assert len(result.trace.of_type(RunStarted)) == 1


def test_batch_calls_really_overlap_and_keep_input_order():
    root = ScriptedLM([repl("print(llm_batch([f'p{i}' for i in range(12)]))"), "FINAL(x)"])
    sub = ScriptedLM(lambda m: m[-1]["content"].upper(), name="sub", delay=0.05)
    result = RLM(root, sub, max_concurrency=4).run("q", "ctx")
    expected = str([f"P{i}" for i in range(12)])
    assert expected in root.calls[1][-1]["content"]
    assert peak_in_flight(result.trace.events, "sub") == 4


def test_default_concurrency_is_at_least_sixteen():
    root = ScriptedLM([repl("llm_batch([str(i) for i in range(32)])"), "FINAL(x)"])
    result = RLM(root, ScriptedLM(["ok"], delay=0.05)).run("q", "ctx")
    assert peak_in_flight(result.trace.events, "sub") >= 16


def test_concurrent_child_runs_keep_their_prints_apart():
    child_code = "import time\nfor i in range(50):\n    print(context)\n    time.sleep(0.001)\n"

    def policy(messages):
        if "Query: child" in messages[1]["content"]:
            if len(messages) == 2:
                return repl(child_code)
            lines = set(messages[-1]["content"].split("Output:\n")[1].split("\n\n")[0].split())
            return f"FINAL({','.join(sorted(lines))})"
        if len(messages) == 2:
            return repl("print(rlm_batch([('child', f'id{i}') for i in range(8)]))")
        return "FINAL(done)"

    root = ScriptedLM(policy)
    # In process, where the eight cells share one process's stdout.
    result = RLM(root, max_concurrency=8, repl="inprocess").run("q", "root")
    shown = root.calls[-1][-1]["content"]
    assert str([f"id{i}" for i in range(8)]) in shown
    outputs = [e for e in result.trace.events if e.type == "cell_ended" and e.run_id != "run0"]
    assert len(outputs) == 8
    for cell in outputs:
        assert len(set(cell.output.split())) == 1
        assert len(cell.output.split()) == 50
    # The root's cell plus the eight children's cells, all at once.
    assert peak_cells_in_flight(result.trace.events) == 9


def test_sub_calls_from_many_children_share_one_concurrency_bound():
    def policy(messages):
        if "Query: child" in messages[1]["content"]:
            return repl("FINAL(llm_batch(['a', 'b', 'c', 'd']))")
        if len(messages) == 2:
            return repl("rlm_batch([('child', 'x')] * 4)")
        return "FINAL(done)"

    sub = ScriptedLM(["s"], name="sub", delay=0.05)
    result = RLM(ScriptedLM(policy), sub, max_concurrency=3).run("q", "ctx")
    assert peak_in_flight(result.trace.events, "sub") <= 3
    assert result.sub_calls == 4 + 16
