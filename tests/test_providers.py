"""The provider adapters against a real HTTP server on 127.0.0.1: replies, usage, retries,
garbage, native tool calling, in both the OpenAI and the Anthropic wire formats."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deeprlm import RLM, InputError, LMError, resolve_lm
from deeprlm.lm.anthropic_lm import AnthropicLM
from deeprlm.lm.base import complete_sync
from deeprlm.lm.openai_compat import OpenAICompatibleLM
from deeprlm.trace.events import LMCallEnded

from conftest import repl
from fake_server import FakeReply, last_user_text


def openai_lm(server, **kwargs) -> OpenAICompatibleLM:
    return OpenAICompatibleLM("test-model", base_url=server.url, **kwargs)


def test_completion_text_and_usage_come_from_the_server(chat_server):
    server = chat_server(lambda body: FakeReply(text="hello there", cost_usd=0.25))
    lm = openai_lm(server)
    completion = complete_sync(lm, [{"role": "user", "content": "hi"}])
    assert completion.text == "hello there"
    assert completion.input_tokens > 0 and completion.output_tokens > 0
    assert completion.cost_usd == 0.25
    again = asyncio.run(lm.acomplete([{"role": "user", "content": "hi"}], max_tokens=7))
    assert again.text == "hello there"
    assert server.requests[-1]["max_tokens"] == 7
    assert server.requests[-1]["model"] == "test-model"


def test_429_and_500_are_retried_then_succeed(chat_server):
    failures = iter(
        [
            FakeReply(status=429, text="slow down", headers={"Retry-After": "0"}),
            FakeReply(status=503, text="busy", headers={"Retry-After": "0"}),
        ]
    )
    server = chat_server(lambda body: next(failures, FakeReply(text="FINAL(finally)")))
    result = RLM("openai/m", base_url=server.url).run("q", "ctx")
    assert result.answer == "finally"
    assert len(server.requests) == 3
    attempts = [e for e in result.trace.of_type(LMCallEnded)]
    assert [e.attempt for e in attempts] == [1, 2, 3]
    assert "HTTP 429" in attempts[0].error and "HTTP 503" in attempts[1].error


def test_one_attempt_of_an_adapter_says_whether_to_retry(chat_server):
    server = chat_server(
        lambda body: FakeReply(status=429, text="quota", headers={"Retry-After": "7"})
    )
    with pytest.raises(LMError) as caught:
        complete_sync(openai_lm(server), [{"role": "user", "content": "hi"}])
    assert caught.value.transient and caught.value.retry_after_s == 7
    assert len(server.requests) == 1  # the SDK's own retries are off


def test_retries_exhausted_give_one_clear_line(chat_server):
    server = chat_server(
        lambda body: FakeReply(status=429, text="quota", headers={"Retry-After": "0"})
    )
    with pytest.raises(LMError) as caught:
        RLM("openai/m", base_url=server.url, max_retries=2).run("q", "ctx")
    message = str(caught.value)
    assert "HTTP 429" in message and "rate limited" in message and "\n" not in message
    assert "gave up after 3 attempts" in message
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    "raw", [b"<html>not json</html>", b'{"unexpected": true}', b'{"choices": "nope"}']
)
def test_garbage_from_the_server_is_an_lm_error(chat_server, raw):
    server = chat_server(lambda body: FakeReply(raw=raw))
    with pytest.raises(LMError, match=r"not a (valid )?(chat )?completion"):
        complete_sync(openai_lm(server, max_retries=0), [{"role": "user", "content": "hi"}])


def test_an_empty_choice_list_is_an_empty_reply_not_a_crash(chat_server):
    server = chat_server(lambda body: FakeReply(raw=b'{"id": "x", "choices": [], "usage": null}'))
    completion = complete_sync(openai_lm(server), [{"role": "user", "content": "hi"}])
    assert completion.text == ""


def test_unreachable_server_is_an_lm_error():
    lm = OpenAICompatibleLM("m", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(LMError, match=r"cannot reach http://127\.0\.0\.1:9/v1"):
        complete_sync(lm, [{"role": "user", "content": "hi"}])


def test_model_specs_resolve_and_bad_ones_are_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    lm = resolve_lm("openai/qwen", base_url="http://127.0.0.1:1/v1")
    assert isinstance(lm, OpenAICompatibleLM) and lm.name == "qwen"
    with pytest.raises(InputError, match="OPENAI_API_KEY is not set"):
        resolve_lm("openai/gpt-5")
    with pytest.raises(InputError, match="unknown model spec 'gpt5'"):
        resolve_lm("gpt5")
    with pytest.raises(InputError, match="needs a model name"):
        resolve_lm("openai/", base_url="http://127.0.0.1:1/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:2/v1")
    assert resolve_lm("openai/x").base_url == "http://127.0.0.1:2/v1"


def test_a_whole_run_through_the_http_server_with_a_smaller_sub_model(chat_server):
    def responder(body):
        text = last_user_text(body)
        if body["model"] == "small":
            return f"found: {text[-5:]}"
        if "Query:" in text:
            return repl("parts = llm_batch([context[:5], context[5:]])\nprint(parts)")
        return "FINAL(done)"

    server = chat_server(responder)
    rlm = RLM("openai/big", "openai/small", base_url=server.url)
    result = rlm.run("what is there?", "abcdefghij")
    assert result.answer == "done"
    assert set(result.usage.by_model) == {"big", "small"}
    assert result.usage.by_model["small"].calls == 2
    assert result.usage.by_model["big"].calls == 2
    assert "['found: abcde', 'found: fghij']" in last_user_text(server.requests[-1])


def test_native_tool_calling_in_sub_calls(chat_server):
    looked_up: list[str] = []

    def lookup(key: str) -> str:
        """Looks a key up in the user's store."""
        looked_up.append(key)
        return f"value-of-{key}"

    def responder(body):
        if body["model"] == "sub":
            if body["messages"][-1]["role"] == "tool":
                return f"sub saw {body['messages'][-1]['content']}"
            assert body["tools"][0]["function"]["name"] == "lookup"
            assert body["tools"][0]["function"]["parameters"]["required"] == ["key"]
            return FakeReply(tool_calls=(("lookup", {"key": "k1"}),))
        if "Query:" in last_user_text(body):
            return repl("print(llm_query('find k1'))")
        return "FINAL(done)"

    server = chat_server(responder)
    rlm = RLM("openai/root", "openai/sub", base_url=server.url, sub_tools=[lookup])
    rlm.run("q", "ctx")
    assert looked_up == ["k1"]
    root_requests = [r for r in server.requests if r["model"] == "root"]
    assert "sub saw value-of-k1" in last_user_text(root_requests[-1])
    assert all("tools" not in r for r in root_requests)


def test_anthropic_wire_format_system_tools_and_cache(chat_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")

    def responder(body):
        assert "cache_control" in body
        if body.get("tools"):
            last = body["messages"][-1]["content"][-1]
            if last.get("type") == "tool_result":
                return f"tool said {last['content']}"
            return FakeReply(tool_calls=(("shout", {"text": "hey"}),))
        if "Query:" in last_user_text(body):
            assert "persistent Python REPL" in body["system"]
            return repl("print(llm_query('use the tool'))")
        return "FINAL(done)"

    server = chat_server(responder)
    rlm = RLM(
        "anthropic/claude-haiku-4-5",
        base_url=server.url.removesuffix("/v1"),
        sub_tools={"shout": lambda text: text.upper()},
    )
    result = rlm.run("q", "ctx")
    assert result.answer == "done"
    assert "tool said HEY" in last_user_text(server.requests[-1])
    assert result.usage.total.usd > 0  # priced from the table


def test_anthropic_without_a_key_is_bad_input(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(InputError, match="ANTHROPIC_API_KEY is not set"):
        AnthropicLM("claude-sonnet-4")


def test_one_lm_serves_runs_on_different_event_loops(chat_server):
    server = chat_server(lambda body: "FINAL(ok)")
    rlm = RLM("openai/m", base_url=server.url)
    answers = [rlm.run("q", "ctx").answer for _ in range(2)]
    thread_answer: list[str] = []
    worker = threading.Thread(target=lambda: thread_answer.append(rlm.run("q", "c").answer))
    worker.start()
    worker.join()
    assert answers + thread_answer == ["ok", "ok", "ok"]


def test_the_reply_cap_is_named_as_each_server_expects(chat_server):
    """OpenAI's reasoning models refuse `max_tokens`; the servers that copy its API know
    only that name."""
    messages = [{"role": "user", "content": "hi"}]
    openai_itself = OpenAICompatibleLM("gpt-5", api_key="test-key")
    assert openai_itself._request(messages, None, 100)["max_completion_tokens"] == 100
    server = chat_server(lambda body: "x" * 400)
    local = openai_lm(server)
    assert local._request(messages, None, 100)["max_tokens"] == 100
    completion = complete_sync(local, messages, max_tokens=10)
    assert completion.finish_reason == "length" and completion.output_tokens == 10
