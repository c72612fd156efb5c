"""A provider that misbehaves, driven through the API and the CLI against a real HTTP server
that injects the fault: hung and failing sub-calls, deadlines, long Retry-After waits,
empty replies, providers failing mid-run, and bad trace paths. Nothing the run produced
is lost, and each failure says what happened in one line."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from deeprlm import RLM, LMError, TimeLimitError
from deeprlm.lm.scripted import ScriptedLM
from deeprlm.settings import Settings
from deeprlm.textutil import estimate_tokens
from deeprlm.trace.events import LMCallEnded, Note

from conftest import deeprlm, repl
from fake_server import FakeReply, last_user_text

BATCH_48 = (
    "r = llm_batch([f'item {i}' for i in range(48)])\n"
    "answer['content'] = json.dumps(r)\n"
    "answer['ready'] = True\n"
)


def items_server(chat_server, item_reply):
    """The root asks for a batch of 48 items; `item_reply(i)` answers item i."""

    def responder(body):
        text = last_user_text(body)
        if "Query:" in text:
            return repl("import json\n" + BATCH_48)
        if text.startswith("item "):
            return item_reply(int(text.split()[1]))
        return "FINAL(unexpected)"

    return chat_server(responder)


HUNG = {*range(1, 48, 4), 2}  # 13 of the 48 items never get an answer


def hang_listed(i: int) -> FakeReply | str:
    return FakeReply(hang=True) if i in HUNG else f"answer {i}"


def check_batch(answer: str, error_words: str) -> None:
    answers = json.loads(answer)
    assert len(answers) == 48
    for i, text in enumerate(answers):
        if i in HUNG:
            assert text.startswith("Error: ") and error_words in text, text
        else:
            assert text == f"answer {i}"


# --- 5. one hung or failing item does not lose the batch ----------------------------------


def test_hung_items_stop_at_the_sub_call_timeout_and_the_rest_keep_their_answers(
    chat_server,
):
    server = items_server(chat_server, hang_listed)
    started = time.monotonic()
    result = RLM("openai/m", base_url=server.url, sub_call_timeout_s=1.0, repl="inprocess").run(
        "q", "ctx"
    )
    assert time.monotonic() - started < 20
    check_batch(result.answer, "stopped at the sub-call timeout of 1s")


def test_sub_calls_end_before_their_cell_is_stopped(chat_server):
    """No sub-call deadline of its own: the cell's timeout bounds them, with room for the
    cell to use the answers that came back."""
    server = items_server(chat_server, hang_listed)
    result = RLM("openai/m", base_url=server.url, cell_timeout_s=3.0, repl="inprocess").run(
        "q", "ctx"
    )
    check_batch(result.answer, "the cell's deadline for sub-calls (90% of its 3s timeout)")


def test_in_the_sandbox_from_the_cli_a_batch_keeps_its_answers(chat_server, tmp_path):
    server = items_server(chat_server, hang_listed)
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--cell-timeout",
        "3",
        "--json",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    check_batch(json.loads(done.stdout)["answer"], "cell's deadline for sub-calls")


def test_a_retry_waits_outside_its_concurrency_slot(chat_server):
    """With one slot, item 0 is told to come back in a second; item 1 goes first meanwhile
    instead of queueing behind the wait."""
    first_try = threading.Event()

    def responder(body):
        text = last_user_text(body)
        if "Query:" in text:
            return repl("print(llm_batch(['slow', 'fast']))")
        if text == "slow" and not first_try.is_set():
            first_try.set()
            return FakeReply(status=503, text="busy", headers={"Retry-After": "1"})
        if text in ("slow", "fast"):
            return f"done {text}"
        return "FINAL(ok)"

    server = chat_server(responder)
    result = RLM("openai/m", base_url=server.url, max_concurrency=1, repl="inprocess").run(
        "q", "ctx"
    )
    assert result.answer == "ok"
    order = [last_user_text(r) for r in server.requests[1:4]]
    assert order == ["slow", "fast", "slow"]
    assert "['done slow', 'done fast']" in last_user_text(server.requests[-1])


def test_a_burst_of_server_errors_is_retried_per_item(chat_server):
    failures: dict[int, int] = {}
    lock = threading.Lock()

    def flaky(i: int) -> FakeReply | str:
        with lock:
            failures[i] = failures.get(i, 0) + 1
            if failures[i] <= 2:
                return FakeReply(status=500, text="oops", headers={"Retry-After": "0"})
        return f"answer {i}"

    server = items_server(chat_server, flaky)
    result = RLM("openai/m", base_url=server.url, repl="inprocess").run("q", "ctx")
    assert json.loads(result.answer) == [f"answer {i}" for i in range(48)]
    assert result.usage.total.calls == 49  # only the answered attempts cost anything


# --- 6. a failing provider loses nothing --------------------------------------------------


def half_way_then(chat_server, fault):
    """Two turns answered (each with a sub-call), then `fault()` from the third request."""

    def responder(body):
        if len(server.requests) <= 2:
            return repl("answer['content'] = 'half way'\nprint(llm_query('x'))")
        return fault(server)

    server = chat_server(responder)
    return server


def stop_the_server(server):
    threading.Thread(target=server.stop, daemon=True).start()
    return FakeReply(reset=True)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (lambda s: FakeReply(raw=b"{not json"), "not a valid completion"),
        (
            lambda s: FakeReply(status=429, text="quota", headers={"Retry-After": "0"}),
            "HTTP 429 (rate limited)",
        ),
        (lambda s: FakeReply(reset=True), "cannot reach"),
        (stop_the_server, "cannot reach"),
    ],
    ids=["malformed-json", "exhausted-429", "reset", "closed-port"],
)
def test_a_provider_failing_mid_run_keeps_answer_and_usage(chat_server, tmp_path, fault, message):
    server = half_way_then(chat_server, fault)
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--max-retries",
        "1",
        "--json",
        "--quiet",
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "error" and message in data["error"]
    assert data["answer"] == "half way"
    assert data["usage"]["by_model"]["m"]["calls"] == 2
    served = server.counted
    total = data["usage"]["total"]
    assert total["input_tokens"] == served.prompt_tokens
    assert total["output_tokens"] == served.completion_tokens


def test_calls_cancelled_in_flight_are_charged_and_marked(chat_server):
    """The run's time runs out with sub-calls in flight: the answered ones are counted as
    the server counted them, the abandoned ones are charged their prompt, marked estimated."""

    def responder(body):
        text = last_user_text(body)
        if "Query:" in text:
            return repl("answer['content'] = 'waiting'\nllm_batch(['a', 'b', 'hang1', 'hang2'])")
        if text.startswith("hang"):
            return FakeReply(hang=True)
        return f"got {text}"

    server = chat_server(responder)
    with pytest.raises(TimeLimitError) as caught:
        RLM("openai/m", base_url=server.url, timeout_s=2.0, repl="inprocess").run("q", "ctx")
    usage = caught.value.usage.total
    served = server.counted
    assert served.calls == 3
    assert usage.calls == 5 and usage.estimated_calls == 2
    assert usage.output_tokens == served.completion_tokens
    assert usage.input_tokens > served.prompt_tokens
    assert caught.value.partial_answer == "waiting"


# --- 7. a default deadline on every model call ---------------------------------------------


def test_a_hung_server_is_given_up_on_at_the_call_timeout(chat_server, tmp_path):
    server = chat_server(lambda body: FakeReply(hang=True))
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    started = time.monotonic()
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        # Long enough that a loaded machine's server thread reads each attempt before
        # the client gives it up, so the count below is what the client sent.
        "--call-timeout",
        "3",
        "--json",
        "--quiet",
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert "no reply within the call timeout of 3s" in error and "2 attempts" in error
    assert len(server.requests) == 2  # a hung call is tried once more, not five times


def test_a_trickling_reply_is_stopped_at_the_call_timeout(chat_server):
    """Bytes keep coming, so no read timeout fires; the call's deadline does."""
    server = chat_server(lambda body: FakeReply(text="FINAL(slowly)", trickle_s=0.05))
    with pytest.raises(LMError, match="no reply within the call timeout of 1s"):
        RLM("openai/m", base_url=server.url, call_timeout_s=1.0).run("q", "ctx")


def test_the_default_call_timeout_suits_model_latencies():
    assert Settings().call_timeout_s == 120.0


class SlowInProcessLM(ScriptedLM):
    """A model in this process (like llama.cpp on a busy CPU) whose replies take a while."""

    in_process = True


def test_a_model_in_this_process_is_not_stopped_at_the_call_timeout():
    slow = SlowInProcessLM(["FINAL(took its time)"], delay=1.0)
    result = RLM(slow, call_timeout_s=0.3, repl="inprocess").run("q", "ctx")
    assert result.answer == "took its time"
    remote_like = ScriptedLM(["FINAL(took its time)"] * 2, delay=1.0)
    with pytest.raises(LMError, match=r"no reply within the call timeout of 0\.3s"):
        RLM(remote_like, call_timeout_s=0.3, repl="inprocess").run("q", "ctx")


# --- 8. a long Retry-After -------------------------------------------------------------------


def test_a_retry_after_past_the_time_budget_fails_at_once_saying_so(chat_server):
    server = chat_server(
        lambda body: FakeReply(status=429, text="quota", headers={"Retry-After": "300"})
    )
    started = time.monotonic()
    with pytest.raises(LMError) as caught:
        RLM("openai/m", base_url=server.url, timeout_s=20.0).run("q", "ctx")
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "the provider asked to wait 300s" in message and "the run's time budget" in message
    assert len(server.requests) == 1


def test_a_retry_after_within_the_time_budget_is_waited_out(chat_server):
    replies = iter([FakeReply(status=429, text="quota", headers={"Retry-After": "6"})])
    server = chat_server(lambda body: next(replies, "FINAL(after the wait)"))
    started = time.monotonic()
    result = RLM("openai/m", base_url=server.url, timeout_s=60.0).run("q", "ctx")
    assert result.answer == "after the wait"
    assert time.monotonic() - started >= 6
    notes = [n.message for n in result.trace.of_type(Note)]
    assert any("asked to wait 6s" in n and "retrying in 6.0s" in n for n in notes)


def test_a_retry_after_longer_than_any_wait_is_refused_without_a_time_budget(chat_server):
    server = chat_server(
        lambda body: FakeReply(status=429, text="quota", headers={"Retry-After": "86400"})
    )
    with pytest.raises(LMError, match="asked to wait 86400s before retrying, past the longest"):
        RLM("openai/m", base_url=server.url).run("q", "ctx")


# --- 9. empty replies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (FakeReply(no_choices=True), "finish reason: none given"),
        (FakeReply(null_content=True, finish_reason="length"), "finish reason: length"),
        (FakeReply(text="   ", finish_reason="content_filter"), "finish reason: content_filter"),
    ],
)
def test_an_empty_reply_is_retried_once_then_an_error(chat_server, tmp_path, reply, reason):
    server = chat_server(lambda body: reply)
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--json",
        "--quiet",
    )
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert "sent an empty reply twice" in data["error"] and reason in data["error"]
    assert len(server.requests) == 2
    assert data["usage"]["total"]["calls"] == 2  # both replies were served, and count


def test_one_empty_reply_then_a_real_one_is_fine(chat_server):
    replies = iter([FakeReply(no_choices=True)])
    server = chat_server(lambda body: next(replies, "FINAL(second time lucky)"))
    result = RLM("openai/m", base_url=server.url).run("q", "ctx")
    assert result.answer == "second time lucky"
    assert [e.attempt for e in result.trace.of_type(LMCallEnded)] == [1, 2]


# --- 10. a bad trace path is found before anything else --------------------------------------


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        ("{tmp}", "is a folder"),
        ("{tmp}/missing/run.jsonl", "the folder {tmp}/missing does not exist"),
        ("{tmp}/file.txt/run.jsonl", "is not a folder"),
        ("/sys/deeprlm-trace.jsonl", "cannot write the trace /sys/deeprlm-trace.jsonl"),
        ("{tmp}/fifo", "No such device or address"),  # a named pipe nobody reads
    ],
)
def test_a_bad_trace_path_exits_2_before_the_context_is_read(tmp_path, trace, message):
    (tmp_path / "file.txt").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    trace = trace.replace("{tmp}", str(tmp_path))
    message = message.replace("{tmp}", str(tmp_path))
    # The context does not exist either: the trace must be what is reported.
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(tmp_path / "absent.txt"),
        "--trace",
        trace,
        "--model",
        "openai/m",
        "--base-url",
        "http://127.0.0.1:9/v1",
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_the_api_checks_the_trace_path_when_configured(tmp_path):
    from deeprlm import InputError

    with pytest.raises(InputError, match="is a folder"):
        RLM("openai/m", base_url="http://127.0.0.1:9/v1", trace_path=tmp_path)


def test_a_reply_cap_past_a_small_window_is_asked_again_within_it(chat_server):
    """A server with a 4,096-token window refuses prompt + cap beyond it, as vLLM does; the
    call is tried again with a cap that fits, and later calls ask for no more."""

    def responder(body):
        prompt = estimate_tokens(json.dumps(body["messages"]))
        cap = body.get("max_tokens") or 0
        if prompt + cap > 4096:
            message = (
                f"This model's maximum context length is 4096 tokens. However, you requested "
                f"{prompt + cap} tokens ({prompt} in the messages, {cap} in the completion)."
            )
            return FakeReply(status=400, text=message)
        if "Query:" in last_user_text(body):
            return repl("print(1)")
        return "FINAL(fits)"

    server = chat_server(responder)
    result = RLM("openai/small-window", base_url=server.url, max_tokens=100_000).run("q", "c")
    assert result.answer == "fits"
    caps = [r["max_tokens"] for r in server.requests]
    assert caps[0] == 8_192 and all(cap < 4_096 for cap in caps[1:])
    assert len(server.requests) == 3  # one refusal, then two calls within the window


def test_a_reply_cut_off_by_a_reset_is_tried_again(chat_server):
    replies = iter([FakeReply(text="FINAL(whole)", reset_after=40)])
    server = chat_server(lambda body: next(replies, "FINAL(whole)"))
    result = RLM("openai/m", base_url=server.url).run("q", "ctx")
    assert result.answer == "whole"
    assert len(server.requests) == 2
    assert result.usage.total.calls == 1  # the cut reply never arrived, so it cost nothing
