"""The baselines' mechanics, driven by scripted models: what each method sends, when it
stops, and how it fails."""

import re

from deeprlm.lm.scripted import ScriptedLM
from deeprlm.settings import Settings
from deeprlm.trace.jsonl import read_jsonl
from deeprlm_bench.methods import METHODS, Setup
from deeprlm_bench.methods.codeact import BM25Index
from deeprlm_bench.methods.common import WithinWindow
from deeprlm_bench.methods.summary import chunks
from deeprlm_bench.tasks import TASKS


def niah(length=8192, seed=0):
    return TASKS["niah"].generate(seed, length)


def test_base_sends_context_then_question_in_one_call():
    example = niah(2048)
    model = ScriptedLM([f"Answer: {example.gold}"])
    outcome = METHODS["base"].run(example, Setup(model, model))
    (messages,) = model.calls
    assert messages[-1]["content"] == f"{example.context}\n\n{example.query}"
    assert outcome.answer == f"Answer: {example.gold}" and outcome.iterations == 1


def test_chunks_cut_at_line_breaks_and_cover_the_text():
    text = "\n".join(f"line {i} " + "x" * (i % 7) for i in range(500))
    pieces = chunks(text, 300)
    assert "".join(pieces) == text
    assert all(len(p) <= 300 for p in pieces)
    assert all(p.endswith("\n") for p in pieces[:-1])


def test_summary_reads_every_chunk_then_answers_from_its_notes():
    example = niah(8192)
    seen = []

    def policy(messages):
        prompt = messages[-1]["content"]
        seen.append(prompt)
        if "Your notes on the whole text" in prompt:
            return "Answer: " + re.search(r"NOTE (\d+)", prompt).group(1)
        found = re.search(r"special magic numbers for \S+ is: (\d+)", prompt)
        kept = re.search(r"NOTE \d+", prompt)
        return f"NOTE {found.group(1)}" if found else (kept.group(0) if kept else "nothing")

    model = ScriptedLM(policy)
    outcome = METHODS["summary"].run(example, Setup(model, model, window=3000))
    parts = len(chunks(example.text(), (3000 - 1024) // 2 * 4))
    assert parts > 4 and len(seen) == parts + 1
    assert TASKS["niah"].score(example, outcome.answer) == 1.0
    # The needle sits in one chunk; the notes carry it to the end.
    assert sum(example.gold in p for p in seen) >= 2


def test_summary_stops_at_the_token_budget():
    model = ScriptedLM(["some notes"])
    setup = Setup(model, model, Settings(max_tokens=1500), window=3000)
    outcome = METHODS["summary"].run(niah(8192), setup)
    assert "token budget" in outcome.error
    # Each call reserves its worst case first: the budget is kept, not passed.
    assert 0 < outcome.usage.total.tokens <= 1500
    assert len(model.calls) < 5


def test_bm25_finds_the_needle_chunk():
    example = niah(16384, seed=2)
    pieces = chunks(example.text(), 1500)
    found = BM25Index(pieces).search(f"special magic number {example.info['key']}", k=2)
    assert example.gold in found
    assert found.startswith("[chunk ")


def test_codeact_runs_code_with_search_and_returns_its_final():
    example = niah(16384, seed=2)
    key = example.info["key"]
    replies = [
        f'```python\nhits = bm25_search("magic number {key}", k=3)\nprint(hits[:3000])\n```',
        f"The text says it.\nFINAL(Answer: {example.gold})",
    ]
    model = ScriptedLM(replies)
    outcome = METHODS["codeact"].run(example, Setup(model, model, window=32768))
    assert outcome.answer == f"Answer: {example.gold}" and outcome.iterations == 2
    assert example.gold in model.calls[1][-1]["content"]  # the search output came back
    assert example.context in model.calls[0][1]["content"]  # the input is in the prompt


def test_codeact_shows_only_the_head_of_an_input_beyond_the_window():
    example = niah(16384)
    model = ScriptedLM(["FINAL(no idea)"])
    METHODS["codeact"].run(example, Setup(model, model, window=8192))
    system, user = model.calls[0][0]["content"], model.calls[0][1]["content"]
    assert "too long to show" in system
    assert len(user) < len(example.context) // 2


def test_rlm_nosub_has_no_sub_calls_and_rlm_has():
    example = niah(2048)
    code = "```repl\nprint(llm_query('hi'))\n```"
    for name, has_sub in (("rlm", True), ("rlm-nosub", False)):
        root = ScriptedLM([code, "FINAL(done)"], name="root")
        sub = ScriptedLM(["hello"], name="sub")
        outcome = METHODS[name].run(example, Setup(root, sub))
        assert outcome.answer == "done"
        assert outcome.sub_calls == (1 if has_sub else 0)
        assert ("hello" in root.calls[1][-1]["content"]) == has_sub


def test_codeact_runs_on_the_engine_loop_budget_and_trace(tmp_path):
    example = niah(2048)
    model = ScriptedLM(['```python\nfound = "x"\n```', 'FINAL_VAR("found")'])
    trace = tmp_path / "codeact.jsonl"
    outcome = METHODS["codeact"].run(example, Setup(model, model, trace_path=trace))
    assert outcome.answer == "x" and outcome.error is None  # the variable's value, not its name
    events, problems = read_jsonl(trace)
    assert problems == [] and events[0].type == "run_started" and events[-1].type == "run_ended"
    assert [e.purpose for e in events if e.type == "lm_call_ended"] == ["root", "root"]

    looping = ScriptedLM(['```python\nprint("again")\n```'])
    outcome = METHODS["codeact"].run(example, Setup(looping, looping, Settings(max_iterations=2)))
    assert outcome.error == "no FINAL answer within the iteration limit"
    assert outcome.iterations == 2 and len(looping.calls) == 2  # no forced extra turn

    costly = ScriptedLM(['```python\nprint("again")\n```'])
    outcome = METHODS["codeact"].run(example, Setup(costly, costly, Settings(max_tokens=20_000)))
    assert "token budget" in outcome.error
    assert 0 < outcome.usage.total.tokens <= 20_000


def test_the_window_guard_keeps_what_the_engine_reads_of_its_model():
    class InProcess(ScriptedLM):
        in_process = True

    assert WithinWindow(InProcess(["x"]), 1000).in_process
    assert not WithinWindow(ScriptedLM(["x"]), 1000).in_process
    assert WithinWindow(ScriptedLM(["x"], temperature=0), None).sampling == {"temperature": 0}
