"""Runs that resume: a run killed mid-way (SIGKILL of the CLI), or stopped by a limit,
goes on from where it stopped, and no model call reaches the server twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from deeprlm import RLM, InputError, SubCallLimitError
from deeprlm.lm.openai_compat import OpenAICompatibleLM

from conftest import repl
from fake_server import last_user_text


def turns(marker):
    """The root's script: a batch, a cell that stops the first time (until killed), then a
    sub-call, then an answer built from variables of earlier cells."""
    return [
        repl('parts = llm_batch(["a", "b", "c"])\nprint(parts)'),
        repl(
            "import os, time\n"
            f"if not os.path.exists({str(marker)!r}):\n"
            f"    open({str(marker)!r}, 'w').close()\n"
            "    time.sleep(120)\n"
            "count = len(parts)\nprint(count)"
        ),
        repl('extra = llm_query("one more")\nprint(extra)'),
        repl('summary = f"{count}: {parts} {extra}"\nprint(summary)'),
        'FINAL_VAR("summary")',
    ]


def responder(script):
    def respond(body):
        messages = body["messages"]
        if messages[0]["role"] == "system":
            turn = sum(m["role"] == "assistant" for m in messages)
            return script[min(turn, len(script) - 1)]
        return f"reply to {last_user_text(body)}"

    return respond


def no_repeats(requests):
    bodies = [json.dumps(b, sort_keys=True) for b in requests]
    return len(bodies) == len(set(bodies))


def group_ends(group, wait_s=10.0):
    """True once no process of the group is left."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.killpg(group, signal.SIGKILL)  # leave nothing behind either way
    return False


def cli(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    return [sys.executable, "-m", "deeprlm", *args], env


def test_a_killed_run_resumes_with_no_call_made_twice(chat_server, tmp_path):
    marker = tmp_path / "marker"
    server = chat_server(responder(turns(marker)))
    doc = tmp_path / "doc.txt"
    doc.write_text("the context")
    trace = tmp_path / "run.jsonl"
    command, env = cli(
        "ask",
        "what is there?",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--repl",
        "inprocess",
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--trace",
        str(trace),
        "--quiet",
        "--json",
    )
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: what is left of it can be seen
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached its second cell"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert group_ends(proc.pid), "the killed command left its run going on in another process"
    before = len(server.requests)
    assert before == 5  # two root turns, three sub-calls

    command, env = cli("ask", "--resume", str(trace), "--json", "--quiet")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # The REPL was rebuilt: the answer uses variables of the cells before the kill.
    assert out["answer"] == ("3: ['reply to a', 'reply to b', 'reply to c'] reply to one more")
    assert len(server.requests) == before + 4  # turns 3-5 and one sub-call: new work only
    assert no_repeats(server.requests)
    assert out["usage"]["total"]["cache_hits"] == 5
    assert any("resumed from" in note for note in out["notes"])
    assert (tmp_path / "run.resumed.jsonl").exists()


def test_a_run_stopped_by_a_limit_resumes_with_the_limit_raised(chat_server, tmp_path):
    marker = tmp_path / "marker"
    marker.touch()  # no pause in this one
    server = chat_server(responder(turns(marker)))
    lm = OpenAICompatibleLM("m", base_url=server.url)
    trace = tmp_path / "run.jsonl"
    cache = tmp_path / "c.sqlite"
    rlm = RLM(lm, cache=cache, repl="inprocess", max_sub_calls=3, trace_path=trace)
    with pytest.raises(SubCallLimitError) as stopped:
        rlm.run("what is there?", "the context")
    assert stopped.value.result.status == "limit"
    before = len(server.requests)

    again = RLM(
        lm, cache=cache, repl="inprocess", max_sub_calls=3, trace_path=tmp_path / "again.jsonl"
    )
    result = again.resume(trace, "the context")
    assert result.status == "answered"
    assert result.answer.startswith("3: ['reply to a'")
    assert no_repeats(server.requests)
    assert len(server.requests) == before + 3  # the sub-call refused, turns 4 and 5
    assert any("max_sub_calls raised to 6" in note for note in result.notes)


def test_a_forced_run_resumes_with_more_turns(chat_server, tmp_path):
    marker = tmp_path / "marker"
    marker.touch()
    script = turns(marker)
    # The forced last turn of the first run: an answer from what it had.
    server = chat_server(responder(script))
    lm = OpenAICompatibleLM("m", base_url=server.url)
    trace = tmp_path / "run.jsonl"
    cache = tmp_path / "c.sqlite"
    first = RLM(lm, cache=cache, repl="inprocess", max_iterations=3, trace_path=trace).run(
        "q", "ctx"
    )
    assert first.forced
    before = len(server.requests)
    result = RLM(lm, cache=cache, repl="inprocess", max_iterations=3).resume(trace, "ctx")
    assert not result.forced and result.answer.startswith("3: ")
    assert no_repeats(server.requests)
    # Turns 1-3 and their sub-calls replayed; turn 4 and 5 are new.
    assert len(server.requests) == before + 2


def test_resuming_a_run_made_without_a_cache_is_refused(chat_server, tmp_path):
    server = chat_server(responder(["FINAL(done)"]))
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    trace = tmp_path / "run.jsonl"
    command, env = cli(
        "ask",
        "q",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--repl",
        "inprocess",
        "--trace",
        str(trace),
        "--quiet",
    )
    assert subprocess.run(command, env=env, capture_output=True, timeout=60).returncode == 0
    command, env = cli("ask", "--resume", str(trace))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "without a sub-call cache" in lines[0]


def test_resuming_over_another_context_is_refused(chat_server, tmp_path):
    server = chat_server(responder(["FINAL(done)"]))
    lm = OpenAICompatibleLM("m", base_url=server.url)
    trace = tmp_path / "run.jsonl"
    RLM(lm, cache=tmp_path / "c.sqlite", repl="inprocess", trace_path=trace).run("q", "ctx")
    with pytest.raises(InputError, match="sha256 differs"):
        RLM(lm, repl="inprocess").resume(trace, "another context")
