"""The sub-call cache: served calls never reach the server (counted there), across runs and
processes; identical calls in flight are made once; sampling models keep their samples; a
damaged file is moved aside; a cache that cannot be written degrades to none, and says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deeprlm import RLM
from deeprlm.cache import Cache, RunCache, request_key
from deeprlm.lm.openai_compat import OpenAICompatibleLM
from deeprlm.lm.scripted import ScriptedLM

from conftest import repl
from fake_server import FakeReply, last_user_text

ROOT_TURNS = [
    repl('answers = llm_batch([f"item {i}" for i in range(5)])\nprint(answers)'),
    'FINAL_VAR("answers")',
]


def root_or_sub(body):
    """The root's turns by how many it has had; a sub-call echoes its prompt."""
    messages = body["messages"]
    if messages[0]["role"] == "system":
        turn = sum(m["role"] == "assistant" for m in messages)
        return ROOT_TURNS[min(turn, len(ROOT_TURNS) - 1)]
    return f"seen {last_user_text(body)}"


def lm(server, temperature=0.0):
    return OpenAICompatibleLM("m", base_url=server.url, temperature=temperature)


def test_a_repeated_run_is_served_without_a_request(chat_server, tmp_path):
    server = chat_server(root_or_sub)
    cache = tmp_path / "cache.sqlite"
    first = RLM(lm(server), cache=cache, repl="inprocess").run("q", "ctx")
    made = len(server.requests)
    assert made == 7  # two root turns, five sub-calls
    assert first.usage.total.calls == 7 and first.usage.total.cache_hits == 0

    second = RLM(lm(server), cache=cache, repl="inprocess").run("q", "ctx")
    assert len(server.requests) == made  # not one more request
    assert second.answer == first.answer
    total = second.usage.total
    assert (total.calls, total.cache_hits) == (0, 7)
    assert total.tokens == 0 and total.usd == 0.0
    assert total.saved_tokens == first.usage.total.tokens
    # The hits are in the trace, as free calls that say what they saved.
    hits = [e for e in second.trace.events if getattr(e, "cache", "") == "hit"]
    assert len(hits) == 7 and all(e.usd == 0 and e.saved_tokens > 0 for e in hits)


def test_a_hit_costs_no_budget(chat_server, tmp_path):
    server = chat_server(root_or_sub)
    cache = tmp_path / "cache.sqlite"
    first = RLM(lm(server), cache=cache, repl="inprocess").run("q", "ctx")
    # A token budget far below what the run used: every call is a hit, so it is never spent.
    tight = RLM(lm(server), cache=cache, repl="inprocess", max_tokens=10)
    again = tight.run("q", "ctx")
    assert again.answer == first.answer and again.status == "answered"


def test_the_usd_saved_is_priced(chat_server, tmp_path):
    from deeprlm.usage import Price

    server = chat_server(root_or_sub)
    cache = tmp_path / "cache.sqlite"
    prices = {"m": Price(1.0, 2.0)}
    first = RLM(lm(server), cache=cache, repl="inprocess", prices=prices).run("q", "ctx")
    second = RLM(lm(server), cache=cache, repl="inprocess", prices=prices).run("q", "ctx")
    assert first.usage.total.usd > 0
    assert second.usage.total.saved_usd == pytest.approx(first.usage.total.usd)


def test_identical_calls_in_flight_reach_the_server_once(chat_server, tmp_path):
    def slow(body):
        if body["messages"][0]["role"] == "system":
            turn = sum(m["role"] == "assistant" for m in body["messages"])
            code = 'r = llm_batch(["same prompt"] * 4)\nprint(r)'
            return [repl(code), 'FINAL_VAR("r")'][min(turn, 1)]
        return FakeReply(text="one reply", delay_s=0.5)

    server = chat_server(slow)
    result = RLM(lm(server), cache=tmp_path / "c.sqlite", repl="inprocess").run("q", "ctx")
    subs = [b for b in server.requests if b["messages"][0]["role"] != "system"]
    assert len(subs) == 1
    assert result.answer == str(["one reply"] * 4)
    shared = [e for e in result.trace.events if getattr(e, "cache", "") == "shared"]
    assert len(shared) == 3
    assert result.usage.total.cache_hits == 3


def test_sampling_models_keep_their_samples_and_share_them_only_when_asked(chat_server, tmp_path):
    counter = iter(range(1000))

    def sampled(body):
        if body["messages"][0]["role"] == "system":
            turn = sum(m["role"] == "assistant" for m in body["messages"])
            return [repl('r = llm_batch(["pick one"] * 3)'), 'FINAL_VAR("r")'][min(turn, 1)]
        return f"sample {next(counter)}"

    server = chat_server(sampled)
    path = tmp_path / "c.sqlite"
    # Temperature left to the server: a sampling model. Each identical call is its own.
    first = RLM(lm(server, None), cache=path, repl="inprocess").run("q", "ctx")
    samples = json.loads(first.answer.replace("'", '"'))
    assert len(set(samples)) == 3
    made = len(server.requests)
    # Not asked to share samples: another run makes its own calls.
    RLM(lm(server, None), cache=path, repl="inprocess").run("q", "ctx")
    assert len(server.requests) == made + 5

    asked = Cache(tmp_path / "shared.sqlite", sampled=True)
    one = RLM(lm(server, None), cache=asked, repl="inprocess").run("q", "ctx")
    made = len(server.requests)
    two = RLM(lm(server, None), cache=asked, repl="inprocess").run("q", "ctx")
    assert len(server.requests) == made
    assert two.answer == one.answer and len(set(json.loads(two.answer.replace("'", '"')))) == 3


def test_the_key_holds_what_shapes_the_reply():
    base = ScriptedLM(["x"], temperature=0.0)
    messages = [{"role": "user", "content": "hi"}]
    key = request_key(base, messages, tools=None, max_tokens=None, schema=None)
    assert key == request_key(base, list(messages), tools=None, max_tokens=None, schema=None)
    others = [
        request_key(
            ScriptedLM(["x"], name="other", temperature=0.0),
            messages,
            tools=None,
            max_tokens=None,
            schema=None,
        ),
        request_key(
            ScriptedLM(["x"], temperature=0.5), messages, tools=None, max_tokens=None, schema=None
        ),
        request_key(
            base, [{"role": "user", "content": "hi!"}], tools=None, max_tokens=None, schema=None
        ),
        request_key(base, messages, tools=None, max_tokens=10, schema=None),
        request_key(base, messages, tools=None, max_tokens=None, schema={"type": "string"}),
    ]
    assert len({key, *others}) == 6


def run_cli(*args, env=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "deeprlm", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


def test_processes_share_the_cache_file(chat_server, tmp_path):
    server = chat_server(root_or_sub)
    doc = tmp_path / "doc.txt"
    doc.write_text("some text")
    path = tmp_path / "c.sqlite"
    base = [
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "-c",
        str(doc),
        "--repl",
        "inprocess",
        "--cache",
        str(path),
        "--cache-sampled",
        "--json",
        "--quiet",
    ]
    # Two processes at once, on the same file, asking different questions.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "deeprlm", "ask", question, *base],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for question in ("first question", "second question")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    made = len(server.requests)
    # Four root turns of their own; the five sub-calls the two share are made once or,
    # when both ask at the same moment, twice (processes tolerate duplicates).
    assert 9 <= made <= 14
    assert all("seen item 4" in json.loads(out)["answer"] for out, _ in outs)
    # A third process asking both again is served from the file alone.
    for question in ("first question", "second question"):
        done = run_cli("ask", question, *base)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["usage"]["total"]["cache_hits"] == 7
    assert len(server.requests) == made


def test_a_damaged_file_is_moved_aside_and_said(chat_server, tmp_path):
    server = chat_server(root_or_sub)
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    result = RLM(lm(server), cache=path, repl="inprocess").run("q", "ctx")
    assert result.status == "answered"
    asides = list(tmp_path.glob("c.sqlite.corrupt-*"))
    assert len(asides) == 1
    assert asides[0].read_bytes().startswith(b"this is not a database")
    assert any("moved aside" in note and str(asides[0]) in note for note in result.notes)
    # The fresh file works: the same run again is all hits.
    made = len(server.requests)
    again = RLM(lm(server), cache=path, repl="inprocess").run("q", "ctx")
    assert len(server.requests) == made and again.usage.total.cache_hits == 7


def test_a_cache_that_cannot_be_written_degrades_to_none_with_a_note(chat_server, tmp_path):
    """A real write failure: the file size limit of the process (what a full disk gives
    SQLite too: a write that cannot complete)."""
    server = chat_server(root_or_sub)
    script = textwrap.dedent(
        f"""
        import json, resource, signal
        from deeprlm import RLM
        from deeprlm.cache import Cache
        from deeprlm.lm.openai_compat import OpenAICompatibleLM

        cache = Cache({str(tmp_path / "c.sqlite")!r})
        cache.open()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        lm = OpenAICompatibleLM("m", base_url={server.url!r}, temperature=0.0)
        result = RLM(lm, cache=cache, repl="inprocess").run("q", "ctx")
        print(json.dumps({{"answer": result.answer, "notes": result.notes,
                           "calls": result.usage.total.calls}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["calls"] == 7 and "seen item 4" in out["answer"]
    notes = [n for n in out["notes"] if "cannot write" in n]
    assert len(notes) == 1 and "without a cache" in notes[0]


def test_a_database_of_something_else_is_refused(tmp_path):
    import sqlite3

    from deeprlm.errors import InputError

    other = tmp_path / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE accounts (id INTEGER)")
    with pytest.raises(InputError, match="not a deeprlm cache"):
        RunCache(Cache(other)).cache.open()
    assert other.exists() and not list(Path(tmp_path).glob("app.db.corrupt-*"))


def test_cache_flags_reach_the_run(chat_server, tmp_path):
    server = chat_server(root_or_sub)
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    home = tmp_path / "home"
    common = [
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "-c",
        str(doc),
        "--repl",
        "inprocess",
        "--json",
        "--quiet",
        "--cache-sampled",
    ]
    done = run_cli("ask", "q", *common, "--cache", env={"DEEPRLM_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert (home / "cache.sqlite").exists()
    off = run_cli("ask", "q", *common, "--cache", "off", env={"DEEPRLM_HOME": str(home)})
    assert json.loads(off.stdout)["usage"]["total"]["cache_hits"] == 0


def test_the_progress_lines_count_cached_calls(chat_server, tmp_path):
    import io

    from deeprlm.trace.console import console_sink

    server = chat_server(root_or_sub)
    cache = tmp_path / "cache.sqlite"
    RLM(lm(server), cache=cache, repl="inprocess").run("q", "ctx")
    stream = io.StringIO()
    sink = console_sink(stream=stream)
    assert sink is not None
    RLM(lm(server), cache=cache, repl="inprocess", on_event=sink).run("q", "ctx")
    sink.close()
    assert "7 cached calls" in stream.getvalue()


def test_a_reply_cut_short_under_a_budget_is_not_kept(tmp_path):
    """Under a token budget the reply cap may be lowered to fit what is left: a reply cut
    there is not the reply to the request as keyed."""
    from deeprlm.lm.base import Completion

    def policy(messages):
        if messages[0]["role"] == "system":
            turn = sum(m["role"] == "assistant" for m in messages)
            return [repl('r = llm_query("long answer please")'), 'FINAL_VAR("r")'][min(turn, 1)]
        return Completion(text="cut", model="s", output_tokens=5, finish_reason="length")

    path = tmp_path / "c.sqlite"
    for _ in range(2):
        lm = ScriptedLM(policy, name="s", temperature=0.0)
        result = RLM(lm, cache=path, repl="inprocess", max_tokens=1_000_000).run("q", "c")
    # The second run's root turns were hits; the cut sub-call was made again.
    assert result.usage.total.cache_hits == 2 and result.usage.total.calls == 1
    assert len(lm.calls) == 1
