"""The embedded model for real: prefix reuse, serialised calls, cancelling, whole runs over
small haystacks, and a run whose model process crashes. Slow (the model runs on the CPU);
select with `-m local_model`. tests/test_local_process.py drives the same child process
with a tiny model, fast."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deeprlm import RLM, ScriptedLM
from deeprlm.local.llama import LlamaCppLM
from deeprlm.local.models import local_lm
from deeprlm.primitives import packing
from deeprlm.trace.events import LMCallEnded, RunEnded
from deeprlm.trace.jsonl import read_jsonl
from deeprlm_bench.tasks.niah import hidden_fact

pytestmark = pytest.mark.local_model


@pytest.fixture(scope="module")
def lm() -> LlamaCppLM:
    return local_lm(progress=False)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_a_root_turn_evaluates_only_its_new_tokens_even_after_sub_calls(lm: LlamaCppLM):
    conversation = [
        {"role": "system", "content": "You answer in one short sentence."},
        user("Name a colour of the sky."),
    ]
    first = lm.complete(conversation, max_tokens=16)
    lm.for_role("sub").complete([user("Say the word pear.")], max_tokens=8)
    conversation += [{"role": "assistant", "content": first.text}, user("Name another one.")]
    second = lm.complete(conversation, max_tokens=16)
    assert first.text.strip()
    assert second.input_tokens > first.input_tokens
    # Everything the first turn sent is still cached, despite the sub-call in between.
    assert second.cached_tokens >= first.input_tokens
    assert second.cost_usd == 0.0


def test_concurrent_calls_are_served_one_at_a_time_each_with_its_own_reply(lm: LlamaCppLM):
    words = ["apple", "river", "candle"]
    sub = lm.for_role("sub")

    async def batch() -> list[str]:
        calls = [
            sub.acomplete([user(f"Repeat exactly this one word: {w}")], max_tokens=8) for w in words
        ]
        return [c.text.lower() for c in await asyncio.gather(*calls)]

    replies = asyncio.run(batch())
    assert [w in reply for w, reply in zip(words, replies, strict=True)] == [True, True, True]


def test_cancelling_stops_a_long_reply(lm: LlamaCppLM):
    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    try:
        reply = lm.for_role("sub").complete(
            [user("Count from 1 to 1000, one number per line.")], max_tokens=3000, cancel=cancel
        )
    finally:
        timer.cancel()
    assert reply.finish_reason == "cancelled"
    assert reply.output_tokens < 3000


def test_a_run_finds_the_fact_in_a_haystack(lm: LlamaCppLM):
    case = hidden_fact(30_000, depth=0.6, seed=3)
    result = RLM(lm, max_iterations=6).run(case.query, case.text)
    assert case.answer.lower() in result.answer.lower()
    root = result.usage.by_model[lm.name]
    assert root.calls >= 2
    assert root.cached_tokens > 0


def test_deeprlm_ask_uses_the_embedded_model_by_default(tmp_path: Path):
    case = hidden_fact(20_000, depth=0.3, seed=5)
    context = tmp_path / "notes.txt"
    context.write_text(case.text)
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm.cli", "ask", case.query, "--context", str(context), "-q"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    assert case.answer.lower() in done.stdout.lower()


def test_a_schema_holds_the_reply_through_a_grammar(lm: LlamaCppLM):
    sub = lm.for_role("sub")
    labels = ["person", "place", "number"]
    reply = sub.complete(
        [user("What kind of answer does 'Who wrote Hamlet?' ask for?")],
        schema={"enum": labels},
        max_tokens=8,
    )
    assert json.loads(reply.text) in labels
    packed = sub.complete(
        [user("Label each question: 1. Where is Paris? 2. How many legs has a spider?")],
        schema=packing.reply_schema(2, {"enum": labels}),
        max_tokens=40,
    )
    # A pack of labels takes the choice-at-a-time path (`deeprlm.local.labels`).
    assert json.loads(packed.text) == {"1": "place", "2": "number"}
    assert packed.finish_reason == "stop"
    # Items in the schema are read in the reply, each alone just before its label.
    for items, wanted in [
        (["Where is Paris?", "How many legs has a spider?"], ["place", "number"]),
        (["How many legs has a spider?", "Where is Paris?"], ["number", "place"]),
    ]:
        schema = packing.reply_schema(2, {"enum": labels})
        for key, item in zip("12", items, strict=True):
            schema["properties"][key]["description"] = item
        inline = sub.complete(
            [user("Label each question by the kind of answer it asks for.")],
            schema=schema,
            max_tokens=40,
        )
        assert json.loads(inline.text) == dict(zip("12", wanted, strict=True))


def test_the_embedded_model_answers_a_count_through_a_packed_classification(lm: LlamaCppLM):
    questions = [
        "Who wrote the novel Hamlet?",
        "Where is the Eiffel Tower?",
        "How many legs does a spider have?",
        "Who painted the Mona Lisa?",
        "Where is the river Nile?",
        "Who discovered penicillin?",
        "How many days are in a week?",
        "Where is Mount Everest?",
        "Who was the first person on the Moon?",
        "How many strings does a violin have?",
    ]
    context = "\n".join(
        f"Date: Mar {day:02d}, 2024 || User: {100 + day % 3} || Instance: {q}"
        for day, q in enumerate(questions, 1)
    )
    code = (
        "rows = records(context)\n"
        "labels = llm_classify([r['Instance'] for r in rows], "
        "['human being', 'location', 'numeric value'])\n"
        "n = labels.count('human being')\n"
        "print(n)"
    )
    root = ScriptedLM([f"```repl\n{code}\n```", "FINAL_VAR('n')"])
    result = RLM(root, lm.for_role("sub"), repl="inprocess").run(
        "How many records ask about a person?", context
    )
    assert result.answer == "4"
    assert result.sub_calls == 2  # ten short items in two packed calls


def test_a_schema_holds_the_reply_to_it_with_a_grammar(lm: LlamaCppLM):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
        "required": ["city", "year"],
        "additionalProperties": False,
    }
    reply = lm.complete(
        [user("Where and when were the first modern Olympic Games held?")],
        max_tokens=60,
        schema=schema,
    )
    value = json.loads(reply.text)
    assert set(value) == {"city", "year"} and isinstance(value["year"], int)


def test_a_model_process_killed_mid_run_ends_the_cli_with_one_line_and_a_full_trace(
    tmp_path: Path,
):
    """SIGSEGV to the model's process while it reads the second root turn's prompt: the
    command exits 1 with one line, prints the answer so far, and the trace is whole."""
    case = hidden_fact(20_000, depth=0.3, seed=5)
    context = tmp_path / "notes.txt"
    context.write_text(case.text)
    trace = tmp_path / "run.jsonl"
    cli = subprocess.Popen(
        [sys.executable, "-m", "deeprlm.cli", "ask", case.query, "--context", str(context),
         "-q", "--trace", str(trace), "--call-timeout", "900"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: _lines(trace).count("lm_call_started") >= 2, cli)
        worker = _model_process_of(cli.pid)
        os.kill(worker, signal.SIGSEGV)
        out, err = cli.communicate(timeout=300)
    finally:
        cli.kill()
    assert cli.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "crashed with a segmentation fault (SIGSEGV) during a call" in lines[0]
    assert lines[0].endswith("(partial answer printed)")
    events, problems = read_jsonl(trace)
    assert problems == []
    first_reply = next(e.reply for e in events if isinstance(e, LMCallEnded))
    assert out.strip() == first_reply.strip()
    ended = events[-1]
    assert isinstance(ended, RunEnded) and ended.status == "error" and "SIGSEGV" in ended.error
    assert ended.usage["total"]["calls"] == 1


def _lines(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 600
    while not condition():
        assert process.poll() is None, "the run ended before the model could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _model_process_of(pid: int) -> int:
    """The embedded model's child of process `pid` (started by any of its threads)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if "deeprlm.local.worker" in Path(f"/proc/{child}/cmdline").read_text():
                return int(child)
    raise AssertionError("the model's process is not running")
