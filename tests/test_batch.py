"""`deeprlm batch` in one process: a scripted model behind the fake HTTP server, the real
command in subprocesses where a user's process would be killed or interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from deeprlm.batch import BatchConfig, Models, run_batch
from deeprlm.batch.questions import read_questions
from deeprlm.batch.ray_executor import RayExecutor
from deeprlm.batch.store import FINAL
from deeprlm.batch.trajectory import SCHEMA_PATH
from deeprlm.errors import InputError
from deeprlm.settings import Settings

from batch_helpers import Script, mixed_batch, query, question_of, read_results
from batch_helpers import write_questions as write
from conftest import ctrl_c_works, repl
from fake_server import Tally

INPROCESS = Settings(repl="inprocess")


def deeprlm(*args: str, **options: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    return subprocess.run(
        [sys.executable, "-m", "deeprlm", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        **options,  # type: ignore[arg-type]
    )


def start_deeprlm(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    return subprocess.Popen(
        [sys.executable, "-m", "deeprlm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=ctrl_c_works,
    )


def config(questions: Path, out: Path, server, **changes) -> BatchConfig:
    base = dict(
        questions=questions,
        out=out,
        models=Models("openai/m", base_url=server.url),
        settings=INPROCESS,
    )
    return BatchConfig(**{**base, **changes})


def wait_for_lines(path: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines")


def test_a_batch_answers_every_question_from_its_own_context(chat_server, tmp_path):
    server = chat_server(Script())
    questions, answers, shared = mixed_batch(tmp_path, 12)
    report = asyncio.run(run_batch(config(questions, tmp_path / "out", server, shared=shared)))
    rows = read_results(tmp_path / "out")
    assert {r["id"]: r["answer"] for r in rows} == answers
    assert report.statuses == Counter(answered=12) and report.not_run == 0
    for row in rows:
        assert row["usage"]["total"]["calls"] == 3 and row["wall_s"] > 0
        trace = [json.loads(line) for line in (tmp_path / "out" / row["trace"]).open()]
        assert trace[0]["type"] == "run_started" and trace[-1]["type"] == "run_ended"
        assert trace[-1]["answer"] == row["answer"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["statuses"] == {"answered": 12} and summary["tokens"] > 0


def test_a_context_shared_by_many_questions_is_read_once(chat_server, tmp_path, monkeypatch):
    import deeprlm.batch.run as batch_run

    loads = Counter()
    real = batch_run.load_paths

    def counting(paths, **options):
        loads[tuple(paths)] += 1
        return real(paths, **options)

    monkeypatch.setattr(batch_run, "load_paths", counting)
    server = chat_server(Script())
    questions, answers, shared = mixed_batch(tmp_path, 24)
    asyncio.run(run_batch(config(questions, tmp_path / "out", server, shared=shared)))
    assert {r["id"]: r["answer"] for r in read_results(tmp_path / "out")} == answers
    # One shared context and four folders, each read once for its 8 or 4 questions.
    assert len(loads) == 5 and set(loads.values()) == {1}


def test_malformed_lines_are_reported_by_number_and_skipped(chat_server, tmp_path):
    server = chat_server(Script())
    questions = write(
        tmp_path / "q.jsonl",
        [
            {"id": "a", "query": query("x", "a"), "context": "x x"},
            "{not json",
            {"id": "b", "context": "no query"},
            {"id": "a", "query": query("x", "a"), "context": "duplicate"},
            {"id": "c", "query": query("x", "c"), "contxt": "typo"},
            {"id": "d", "query": query("x", "d"), "context": "x", "limits": {"repl": "inprocess"}},
            {"id": "e", "query": query("x", "e"), "context": "x", "limits": {"max_usd": -1}},
            {"id": "f", "query": query("x", "f"), "shared": "nowhere"},
            {"id": "g", "query": query("x", "g"), "context": "x", "schema": {"type": "thing"}},
            {"id": "h", "query": query("x", "h"), "paths": ["missing.txt"]},
            {"id": "i", "query": query("x", "i"), "context": "x x x", "limits": {"max_depth": 0}},
        ],
    )
    out = tmp_path / "out"
    done = deeprlm(
        "batch", str(questions), "--out", str(out), "--model", "openai/m",
        "--base-url", server.url, "--repl", "inprocess", "--quiet",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # h failed: exit 1 outranks the skipped lines
    problems = [line for line in done.stderr.splitlines() if "(skipped)" in line]
    assert [p.split(": ")[2] for p in problems] == [f"line {n}" for n in (2, 3, 4, 5, 6, 7, 8, 9)]
    assert "not JSON" in problems[0] and '"query" is missing' in problems[1]
    assert "duplicate id 'a' (first on line 1)" in problems[2]
    assert "unknown field(s) 'contxt'" in problems[3]
    assert "'repl' cannot be set per question" in problems[4]
    assert "max_usd must be positive" in problems[5]
    assert "no shared context named 'nowhere'" in problems[6]
    assert "schema: not a valid JSON Schema ('thing' is not valid" in problems[7]
    rows = {r["id"]: r for r in read_results(out)}
    assert set(rows) == {"a", "h", "i"}
    assert rows["a"]["answer"] == "x=2 doubled=4" and rows["i"]["answer"] == "x=3 doubled=6"
    # A missing context file fails its own question only.
    assert rows["h"]["status"] == "error"
    assert rows["h"]["error"].startswith("context file not found:")
    assert not any("missing.txt" in json.dumps(r) for r in server.requests)
    assert "3 questions: 2 answered, 1 error" in done.stdout
    assert "8 malformed line(s) skipped" in done.stdout


def test_strict_refuses_a_batch_with_a_malformed_line_before_any_call(chat_server, tmp_path):
    server = chat_server(Script())
    rows = [{"id": "a", "query": query("x", "a"), "context": "x"}, "[1, 2]"]
    questions = write(tmp_path / "q.jsonl", rows)
    done = deeprlm(
        "batch", str(questions), "--out", str(tmp_path / "out"), "--model", "openai/m",
        "--base-url", server.url, "--strict",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"deeprlm: error: {questions}: line 2: expected a JSON object, got list; nothing was run"
    ]
    assert server.requests == []


def test_a_question_file_that_is_not_there_is_one_line(tmp_path):
    done = deeprlm("batch", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"deeprlm: error: questions file not found: {tmp_path}/none.jsonl"


def test_per_question_limits_apply_to_that_question_only(chat_server, tmp_path):
    server = chat_server(Script())
    questions = write(
        tmp_path / "q.jsonl",
        [
            {"id": "free", "query": query("x", "free"), "context": "x"},
            {"id": "short", "query": query("x", "short"), "context": "x",
             "limits": {"max_iterations": 1}},
            {"id": "poor", "query": query("x", "poor"), "context": "x",
             "limits": {"max_sub_calls": 1, "max_tokens": 10}},
        ],
    )  # fmt: skip
    asyncio.run(run_batch(config(questions, tmp_path / "out", server)))
    rows = {r["id"]: r for r in read_results(tmp_path / "out")}
    assert rows["free"]["status"] == "answered" and rows["free"]["iterations"] == 2
    assert rows["short"]["status"] == "forced" and rows["short"]["iterations"] == 1
    assert rows["poor"]["status"] == "limit" and "token budget" in rows["poor"]["error"]


def test_resume_after_the_driver_is_killed_redoes_nothing_finished(chat_server, tmp_path):
    script = Script(root_delay=0.15)
    server = chat_server(script)
    rows = [
        {"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w " * i + "end"}
        for i in range(16)
    ]
    questions = write(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"
    args = ("batch", str(questions), "--out", str(out), "--model", "openai/m", "--base-url",
            server.url, "--repl", "inprocess", "--workers", "2", "--quiet")  # fmt: skip
    driver = start_deeprlm(*args)
    try:
        wait_for_lines(out / "results.jsonl", 5)
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate()
    # A kill can land in the middle of a write: a torn last line is skipped and redone.
    finished = {r["id"] for r in read_results(out) if r["status"] in FINAL}
    assert 5 <= len(finished) < 16
    torn = next(f"q{i}" for i in range(16) if f"q{i}" not in finished)
    with (out / "results.jsonl").open("a") as handle:
        handle.write(json.dumps({"id": torn, "status": "answered", "answer": "w=0"})[:30])
    seen = len(server.requests)

    done = deeprlm(*args)
    assert done.returncode == 0, done.stderr
    later = [question_of(body) for body in server.requests[seen:]]
    assert not set(later) & finished
    assert torn in later
    results = read_results(out)
    final = Counter(r["id"] for r in results if r["status"] in FINAL)
    assert final == Counter({f"q{i}": 1 for i in range(16)})
    assert {r["id"]: r["answer"] for r in results if r["status"] in FINAL} == {
        f"q{i}": f"w={i} doubled={2 * i}" for i in range(16)
    }
    assert "16 questions: 16 answered" in done.stdout


def test_ctrl_c_cancels_running_questions_and_keeps_the_finished(chat_server, tmp_path):
    server = chat_server(Script(sub_delay=1.0))
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(10)]
    questions = write(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"
    args = ("batch", str(questions), "--out", str(out), "--model", "openai/m",
            "--base-url", server.url, "--repl", "inprocess", "--workers", "2")  # fmt: skip
    driver = start_deeprlm(*args)
    wait_for_lines(out / "results.jsonl", 2)
    time.sleep(0.3)  # the next two are under way
    interrupted = time.monotonic()
    driver.send_signal(signal.SIGINT)
    stdout, stderr = driver.communicate(timeout=30)
    assert time.monotonic() - interrupted < 10
    assert driver.returncode == 130, stderr
    assert "interrupted: cancelling the running questions" in stderr
    assert "stopped: interrupted; run again to resume" in stdout
    results = read_results(out)
    statuses = Counter(r["status"] for r in results)
    assert statuses["answered"] >= 2 and statuses["cancelled"] == 2
    assert len(results) < 10
    for row in results:
        if row["status"] == "cancelled":
            # What a cancelled question spent is kept too.
            assert row["usage"]["total"]["calls"] >= 1
    answered = {r["id"] for r in results if r["status"] == "answered"}
    seen = len(server.requests)
    done = deeprlm(*args, "--quiet")
    assert done.returncode == 0, done.stderr
    assert not {question_of(body) for body in server.requests[seen:]} & answered
    assert "10 questions: 10 answered" in done.stdout


def test_the_batch_budget_stops_new_questions_and_keeps_what_finished(chat_server, tmp_path):
    server = chat_server(Script(cost=0.01))  # three calls: $0.03 a question
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(10)]
    questions = write(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"
    args = ("batch", str(questions), "--out", str(out), "--model", "openai/m",
            "--base-url", server.url, "--repl", "inprocess", "--workers", "1",
            "--batch-max-usd", "0.1")  # fmt: skip
    # A USD budget needs the model's price, as for `deeprlm ask`; the provider's own
    # reported cost then wins over it.
    unpriced = deeprlm(*args)
    assert unpriced.returncode == 2 and server.requests == []
    assert "a USD budget needs the price of model 'm'" in unpriced.stderr
    assert len(unpriced.stderr.strip().splitlines()) == 1
    args = (*args[:-2], "--price", "m=1,1", *args[-2:])
    done = deeprlm(*args)
    assert done.returncode == 3, done.stderr
    # After three questions $0.09 is spent: q3's first call fits (its worst case at the
    # price given is under $0.01), its second no longer does. q3 stops with what it had
    # (to run again in a batch with room), and nothing new starts.
    assert "batch budget reached: $0.1000 of $0.1000 spent, and a call may cost $0.00" in (
        done.stderr
    )
    assert "no new questions start" in done.stderr
    results = {r["id"]: r for r in read_results(out)}
    assert list(results) == ["q0", "q1", "q2", "q3"]
    assert results["q3"]["status"] == "stopped" and results["q3"]["usage"]["total"]["calls"] == 1
    assert {question_of(body) for body in server.requests} == {"q0", "q1", "q2", "q3"}
    assert len(server.requests) == 10
    assert "10 questions: 3 answered; 7 not run" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "budget" and summary["usd"] == pytest.approx(0.10)

    # The budget counts what the folder already spent: the same budget starts nothing.
    again = deeprlm(*args)
    assert again.returncode == 3
    assert "no question started" in again.stderr
    assert len(server.requests) == 10
    more = deeprlm(*args[:-1], "1.0", "--quiet")
    assert more.returncode == 0, more.stderr
    latest = {r["id"]: r["status"] for r in read_results(out)}
    assert latest == {f"q{i}": "answered" for i in range(10)}  # q3 ran again
    assert len(read_results(out)) == 11


def test_with_a_cache_a_question_run_again_replays_the_calls_it_had_made(chat_server, tmp_path):
    server = chat_server(Script(cost=0.01))
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(6)]
    questions = write(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"
    args = ("batch", str(questions), "--out", str(out), "--model", "openai/m",
            "--base-url", server.url, "--repl", "inprocess", "--workers", "1",
            "--price", "m=1,1", "--cache", str(tmp_path / "cache.sqlite"),
            "--export-trajectories", "--quiet", "--batch-max-usd")  # fmt: skip
    # $0.11: q0-q2 spend $0.09, q3 its root call and its sub-call, then it is stopped.
    first = deeprlm(*args, "0.11")
    assert first.returncode == 3, first.stderr
    latest = {r["id"]: r for r in read_results(out)}
    assert latest["q3"]["status"] == "stopped" and latest["q3"]["usage"]["total"]["calls"] == 2
    assert len(server.requests) == 11
    again = deeprlm(*args, "1.0")
    assert again.returncode == 0, again.stderr
    latest = {r["id"]: r for r in read_results(out)}
    assert {r["status"] for r in latest.values()} == {"answered"}
    # q3 ran again from its start: its two calls came from the cache (the model samples, so
    # they were its own), and only its last was sent.
    assert sum(question_of(body) == "q3" for body in server.requests) == 3
    assert len(server.requests) == 11 + 1 + 2 * 3
    usage = latest["q3"]["usage"]["total"]
    assert (usage["calls"], usage["cache_hits"]) == (1, 2)
    assert usage["saved_usd"] == pytest.approx(0.02)
    assert latest["q3"]["answer"] == "w=1 doubled=2"
    # Its trajectory still has every call's messages, the cached ones too.
    (q3,) = [
        t
        for t in map(json.loads, (out / "trajectories.jsonl").read_text().splitlines())
        if t["id"] == "q3"
    ]
    ((cell,),) = [turn["cells"] for turn in q3["runs"][0]["turns"][:1]]
    (sub_call,) = cell["sub_calls"]
    assert sub_call["complete"] and sub_call["messages"][0]["content"].startswith("double 1")
    # Questions that had finished did not run again, and another batch with the same cache
    # (a new folder) samples afresh: its runs are not these.
    other = deeprlm(*args[:3], str(tmp_path / "other"), *args[4:], "1.0")
    assert other.returncode == 0, other.stderr
    assert len(server.requests) == 11 + 1 + 2 * 3 + 6 * 3


def test_the_batch_budget_holds_while_questions_run_at_once(chat_server, tmp_path):
    # A budget of 3.6 questions with four questions at a time: were the budget checked only
    # as questions finish, the first four would spend 4 questions' worth.
    server = chat_server(Script(root_delay=0.05, sub_delay=0.05))
    settings = Settings(repl="inprocess", max_reply_tokens=200)
    one = write(tmp_path / "one.jsonl", [{"id": "q", "query": query("w", "q"), "context": "w"}])
    asyncio.run(run_batch(config(one, tmp_path / "one", server, settings=settings)))
    per_question = server.counted.tokens  # the same for every question below
    server.counted = Tally()
    server.requests.clear()
    budget = int(3.6 * per_question)
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(12)]
    questions = write(tmp_path / "q.jsonl", rows)
    cfg = config(questions, tmp_path / "out", server, settings=settings, workers=4,
                 max_tokens=budget)  # fmt: skip
    report = asyncio.run(run_batch(cfg))
    assert server.counted.tokens <= budget
    assert report.tally.tokens == server.counted.tokens  # the results count what was billed
    assert report.stopped == "budget" and report.not_run > 0
    results = read_results(tmp_path / "out")
    stopped = [r for r in results if r["status"] == "stopped"]
    assert stopped and all(r["error"].startswith("batch budget reached") for r in stopped)
    assert report.statuses["answered"] >= 1
    # Every call sent belongs to a question with a result (one that started as the budget
    # ran out may have none).
    asked = {question_of(body) for body in server.requests}
    assert asked <= {r["id"] for r in results}
    assert asked >= {r["id"] for r in results if r["usage"]["total"]["calls"]}


def test_the_ledger_holds_worst_cases_waits_for_settles_and_refuses_for_good():
    from deeprlm.batch.permits import BatchBudget, Ledger

    async def scenario():
        ledger = Ledger(BatchBudget(max_tokens=1_000, tokens=100))
        assert await ledger.reserve("a", 500, 0.0) is None
        waiting = asyncio.ensure_future(ledger.reserve("b", 500, 0.0))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # 100 spent + 500 held + 500 > 1,000: it waits
        ledger.settle("a", 300, 0.0)  # a cost less than it held
        assert await waiting is None and ledger.tokens == 400
        # 400 spent + 500 held: a call of 200 fits, one of 700 would not even alone.
        assert await ledger.reserve("c", 100, 0.0) is None
        refusal = await ledger.reserve("d", 700, 0.0)
        assert refusal is not None and refusal.kind == "tokens"
        assert refusal.message == (
            "batch budget reached: 400 of 1,000 tokens used, and a call may take 700 more"
        )
        # Refused once, refused from then on, however small the call.
        assert await ledger.reserve("e", 1, 0.0) is refusal
        # A waiter given up is not granted later; a lost worker's call counts its worst case.
        ledger.settle_lost("b")
        assert ledger.tokens == 900 and set(ledger.held) == {"c"}

    asyncio.run(scenario())


def test_the_provider_limit_holds_across_the_questions_of_a_batch(chat_server, tmp_path):
    rows = [{"id": f"q{i}", "query": query("w", f"q{i}"), "context": "w"} for i in range(8)]
    questions = write(tmp_path / "q.jsonl", rows)
    peaks = {}
    for limit in (3, 64):
        server = chat_server(Script(batch=6, sub_delay=0.1))
        cfg = config(questions, tmp_path / f"out{limit}", server, workers=8,
                     provider_concurrency=limit)  # fmt: skip
        report = asyncio.run(run_batch(cfg))
        assert report.statuses["answered"] == 8
        peaks[limit] = server.max_in_flight
    assert peaks[3] == 3
    assert peaks[64] > 3  # without the shared limit, the questions' calls pile up


def test_exported_trajectories_validate_against_their_schema(chat_server, tmp_path):
    def responder(body):
        messages = body["messages"]
        if len(messages) == 1:
            prompt = messages[0]["content"]
            return "4" if "2+2" in prompt else f"sub says: {prompt[:30]}"
        first = messages[1]["content"]
        if "Query: child" in first:
            if len(messages) == 2:
                return repl("print(llm_query('2+2 in the child'))")
            return "FINAL(child found 4)"
        if len(messages) == 2:
            code = "a = llm_batch(['2+2', 'other'])\nb = rlm_query('child', 'ctx')\nprint(a, b)"
            return repl(code)
        return "FINAL(four)" if "four-question" in first else "FINAL(five)"

    server = chat_server(responder)
    rows = [
        {"id": "right", "query": "four-question", "context": "text", "gold": "four",
         "scorer": "exact", "meta": {"split": "dev"}},
        {"id": "wrong", "query": "other-question", "context": "text", "gold": "four",
         "scorer": "exact"},
        {"id": "plain", "query": "third", "context": "text"},
    ]  # fmt: skip
    questions = write(tmp_path / "q.jsonl", rows)
    out = tmp_path / "out"
    done = deeprlm(
        "batch", str(questions), "--out", str(out), "--model", "openai/m",
        "--base-url", server.url, "--repl", "inprocess", "--export-trajectories", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    trajectories = {}
    for line in (out / "trajectories.jsonl").read_text().splitlines():
        item = json.loads(line)
        validator.validate(item)
        trajectories[item["id"]] = item
    assert set(trajectories) == {"right", "wrong", "plain"}
    right = trajectories["right"]
    assert (right["reward"], trajectories["wrong"]["reward"], trajectories["plain"]["reward"]) == (
        1.0, 0.0, None)  # fmt: skip
    assert right["meta"] == {"split": "dev"} and right["source"] == {"kind": "batch", "line": 1}
    rewards = {r["id"]: r.get("reward") for r in read_results(out)}
    assert rewards == {"right": 1.0, "wrong": 0.0, "plain": None}

    root, child = right["runs"]
    # The root's messages are the conversation the server was sent, whole, and its answer.
    last_root = next(
        b for b in reversed(server.requests)
        if len(b["messages"]) > 2 and "four-question" in b["messages"][1]["content"]
    )  # fmt: skip
    assert root["messages"][:-1] == last_root["messages"]
    assert root["messages"][-1] == {"role": "assistant", "content": "FINAL(four)"}
    assert [t["purpose"] for t in root["turns"]] == ["root", "root"]
    (cell,) = root["turns"][0]["cells"]
    assert "rlm_query('child', 'ctx')" in cell["code"] and "child found 4" in cell["output"]
    assert [s["messages"] for s in cell["sub_calls"]] == [
        [{"role": "user", "content": "2+2"}],
        [{"role": "user", "content": "other"}],
    ]
    assert [s["reply"] for s in cell["sub_calls"]] == ["4", "sub says: other"]
    assert all(s["complete"] for s in cell["sub_calls"])
    assert cell["child_runs"] == [child["run_id"]]
    assert child["parent_cell"] == cell["cell_id"] and child["depth"] == 1
    assert child["messages"][-1]["content"] == "FINAL(child found 4)"
    (child_cell,) = child["turns"][0]["cells"]
    assert child_cell["sub_calls"][0]["reply"] == "4"


COUNTED = {
    "type": "object",
    "properties": {"word": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["word", "n"],
}


def test_a_schema_gives_a_typed_answer_and_an_answer_off_it_is_an_error(chat_server, tmp_path):
    server = chat_server(Script())
    rows = [
        {"id": "typed", "query": query("x", "typed"), "context": "x x", "schema": COUNTED},
        # Answers in plain text: held to the schema, sent back, then an error.
        {"id": "plain", "query": query("x", "plain"), "context": "x", "schema": COUNTED},
        {"id": "text", "query": query("x", "text"), "context": "x"},
    ]
    questions = write(tmp_path / "q.jsonl", rows)
    report = asyncio.run(run_batch(config(questions, tmp_path / "out", server)))
    results = {r["id"]: r for r in read_results(tmp_path / "out")}
    assert report.statuses == Counter(answered=2, error=1)
    typed = results["typed"]
    assert typed["value"] == {"word": "x", "n": 2, "doubled": 4}
    assert json.loads(typed["answer"]) == typed["value"]
    assert results["plain"]["status"] == "error" and results["plain"]["value"] is None
    assert "did not follow the output schema" in results["plain"]["error"]
    assert results["text"]["answer"] == "x=1 doubled=2" and "value" not in results["text"]
    # The schema reached the model: the typed question's root prompt states it.
    typed_prompts = [
        json.dumps(r["messages"]) for r in server.requests if question_of(r) == "typed"
    ]
    assert any("must be JSON that follows this JSON Schema" in p for p in typed_prompts)


def test_the_schema_flag_types_every_question_without_its_own(chat_server, tmp_path):
    server = chat_server(Script())
    own = {"type": "object", "required": ["word", "doubled"]}
    rows = [
        {"id": "typed-a", "query": query("x", "typed-a"), "context": "x"},
        {"id": "typed-b", "query": query("y", "typed-b"), "context": "y y y", "schema": own},
    ]
    questions = write(tmp_path / "q.jsonl", rows)
    schema = tmp_path / "counted.json"
    schema.write_text(json.dumps(COUNTED))
    out = tmp_path / "out"
    common = ["--model", "openai/m", "--base-url", server.url, "--repl", "inprocess", "-q"]
    done = deeprlm("batch", str(questions), "--out", str(out), "--schema", str(schema), *common)
    assert done.returncode == 0, done.stderr
    results = {r["id"]: r for r in read_results(out)}
    assert results["typed-a"]["value"] == {"word": "x", "n": 1, "doubled": 2}
    assert results["typed-b"]["value"] == {"word": "y", "n": 3, "doubled": 6}
    prompts = {question_of(r): json.dumps(r["messages"]) for r in server.requests}
    assert '\\"required\\": [\\"word\\", \\"n\\"]' in prompts["typed-a"]
    assert '\\"required\\": [\\"word\\", \\"doubled\\"]' in prompts["typed-b"]
    # A schema file that is not a schema is one line, before any question runs.
    schema.write_text(json.dumps({"type": 5}))
    bad = deeprlm(
        "batch", str(questions), "--out", str(tmp_path / "o2"), "--schema", str(schema), *common
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a valid JSON Schema" in bad.stderr and not (tmp_path / "o2").exists()


def test_questions_read_their_paths_relative_to_the_file(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    questions = write(folder / "q.jsonl", [{"id": 7, "query": "q", "paths": "docs/a.txt"}])
    (parsed,), problems = read_questions(questions)
    assert problems == [] and parsed.id == "7"
    assert parsed.context.paths == (str(folder.resolve() / "docs/a.txt"),)


def test_the_ray_executor_without_ray_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"needs the ray extra: pip install 'deeprlm\[ray\]'"):
        asyncio.run(RayExecutor(provider_concurrency=1, address="127.0.0.1:1").start())


def test_an_unreachable_ray_cluster_is_one_clear_line(tmp_path):
    questions = write(tmp_path / "q.jsonl", [{"id": "a", "query": "q", "context": "x"}])
    started = time.monotonic()
    done = deeprlm(
        "batch", str(questions), "--out", str(tmp_path / "out"), "--model", "openai/m",
        "--base-url", "http://127.0.0.1:9/v1", "--executor", "ray", "--ray-address",
        "127.0.0.1:1",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "deeprlm: error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"
    ]
    assert time.monotonic() - started < 30


def test_the_permit_broker_queues_in_order_and_frees_what_a_dead_holder_held():
    from deeprlm.batch.ray_executor import PermitBroker

    async def scenario():
        broker = PermitBroker(limit=2)
        await broker.acquire("m", "dead#1", "t1")
        await broker.acquire("m", "alive#1", "t2")
        waiting = [
            asyncio.ensure_future(broker.acquire("m", "alive#1", t)) for t in ("t3", "t4", "t5")
        ]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        await broker.release("t4")  # gives up waiting: skipped when a permit frees
        await broker.release_holder("dead#1")  # its worker died holding t1
        await asyncio.sleep(0)
        assert [w.done() for w in waiting] == [True, True, False]
        await broker.release("t2")
        await asyncio.sleep(0)
        assert waiting[2].done()
        stats = await broker.stats()
        assert stats["peak"] == {"m": 2} and stats["in_use"] == {"m": 2}
        assert stats["waiting"] == {"m": 0}
        await broker.release("t3")
        await broker.release("t5")
        await broker.release("t5")  # twice is harmless
        assert (await broker.stats())["in_use"] == {"m": 0}

    asyncio.run(scenario())


def test_the_bar_shows_done_failed_running_tokens_and_usd():
    import io

    from deeprlm.batch.progress import BatchProgress, Tally

    stream = io.StringIO()
    progress = BatchProgress("bar", stream=stream)
    tally = Tally(total=5)
    progress.start(tally, "local, 4 at once")
    tally.statuses.update(answered=2, error=1)
    tally.running, tally.tokens, tally.usd = 2, 12_345, 0.5
    progress.update(tally)
    progress.close()
    assert "3/5 done 3  failed 1  running 2  12,345 tokens  $0.5000" in stream.getvalue()
