"""The trace: ids and parents, JSONL output, and a size that does not grow with the context."""

from __future__ import annotations

import json

from deeprlm import RLM, ScriptedLM
from deeprlm.trace.events import RunEnded, RunStarted
from deeprlm.trace.jsonl import read_jsonl

from conftest import repl


def scripted_run(context: str, trace_path) -> None:
    def policy(messages):
        if "Query: child" in messages[1]["content"]:
            return repl("FINAL(llm_query(context[:50]))")
        if len(messages) == 2:
            return repl(
                "n = len(context)\nstep = n // 8\n"
                "parts = llm_batch([context[i*step:(i+1)*step] for i in range(8)])\n"
                "kid = rlm_query('child', context[-1000:])\n"
                "print(n, len(parts), kid[:20])"
            )
        return "FINAL(done)"

    sub = ScriptedLM(lambda m: "saw " + m[-1]["content"][:10], name="sub")
    RLM(ScriptedLM(policy), sub, trace_path=trace_path, repl="inprocess").run("q", context)


def test_trace_size_does_not_grow_with_the_context(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    scripted_run("a" * 40_000, small)
    scripted_run("a" * 8_000_000, large)
    assert large.stat().st_size < 120_000
    assert large.stat().st_size < small.stat().st_size * 2


def test_every_event_has_ids_and_parents_that_form_a_tree(tmp_path):
    path = tmp_path / "t.jsonl"
    scripted_run("word " * 2_000, path)
    events, problems = read_jsonl(path)
    assert problems == []
    ids = {e.id for e in events}
    for event in events:
        assert event.run_id in ids
        assert event.parent_id is None or event.parent_id in ids
    runs = [e for e in events if isinstance(e, RunStarted)]
    assert [r.depth for r in runs] == [0, 1]
    root = runs[0]
    assert root.context["chars"] == 10_000 and len(root.context["sha256"]) == 64
    assert root.settings["max_iterations"] == 20
    assert root.repl == "inprocess"
    kinds = [e.type for e in events]
    for kind in (
        "lm_call_started",
        "lm_call_ended",
        "cell_started",
        "cell_ended",
        "batch_started",
        "batch_ended",
        "run_ended",
    ):
        assert kind in kinds
    sub_calls = [e for e in events if e.type == "lm_call_ended" and e.purpose == "sub"]
    batch = next(e for e in events if e.type == "batch_started")
    assert sum(1 for s in sub_calls if s.parent_id == batch.id) == 8
    ended = [e for e in events if isinstance(e, RunEnded)]
    assert ended[-1].status == "answered" and ended[-1].usage["total"]["calls"] == 12


def test_the_context_appears_once_in_the_trace(tmp_path):
    marker = "UNIQUE-CONTEXT-MARKER "
    path = tmp_path / "t.jsonl"
    scripted_run(marker + "z" * 30_000, path)
    text = path.read_text()
    # The preview of the root's context, and the preview in the first sub-call's prompt.
    assert text.count(marker) <= 3
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(len(json.dumps(line)) < 30_000 for line in lines)


def test_a_truncated_trace_file_is_read_up_to_the_damage(tmp_path):
    path = tmp_path / "t.jsonl"
    scripted_run("text " * 100, path)
    data = path.read_text()
    path.write_text(data[: len(data) // 2])
    events, problems = read_jsonl(path)
    assert events and len(problems) == 1


def test_a_trace_written_before_role_became_purpose_reads_the_same(tmp_path):
    path = tmp_path / "old.jsonl"
    old = {"type": "lm_call_started", "t": 0.1, "id": "c1", "run_id": "r0", "parent_id": "r0"}
    path.write_text(json.dumps({**old, "role": "sub", "model": "m"}) + "\n")
    (event,), problems = read_jsonl(path)
    assert problems == [] and event.purpose == "sub" and event.model == "m"
