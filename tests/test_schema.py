"""Constrained replies (`schema=`): `response_format` for OpenAI-compatible servers, with the
fallbacks for servers that refuse it or ignore it; Anthropic and the check-and-ask-again
path; the checker itself; a classification reaching a real HTTP server as an enum."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from deeprlm import RLM, LMError
from deeprlm.lm import schema as schemas
from deeprlm.lm.anthropic_lm import AnthropicLM
from deeprlm.lm.base import complete_sync
from deeprlm.lm.openai_compat import OpenAICompatibleLM

from conftest import repl
from fake_server import FakeReply, last_user_text

LABELS = {"enum": ["yes", "no"]}
MESSAGES = [{"role": "user", "content": "Is it?"}]


def openai_lm(server) -> OpenAICompatibleLM:
    return OpenAICompatibleLM("test-model", base_url=server.url, max_retries=0)


def test_a_schema_goes_to_the_server_as_response_format(chat_server):
    def responder(body):
        fmt = body.get("response_format")
        if fmt is None:
            return "plain"
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["schema"] == LABELS
        assert fmt["json_schema"]["name"]
        return '"yes"'

    server = chat_server(responder)
    lm = openai_lm(server)
    assert complete_sync(lm, MESSAGES, schema=LABELS).text == '"yes"'
    assert asyncio.run(lm.acomplete(MESSAGES, schema=LABELS)).text == '"yes"'
    assert len(server.requests) == 2
    # Without a schema, no response_format.
    complete_sync(lm, MESSAGES)
    assert "response_format" not in server.requests[-1]


def test_a_server_that_refuses_response_format_is_asked_without_it_from_then_on(chat_server):
    def responder(body):
        if "response_format" in body:
            return FakeReply(status=400, text="response_format is not supported")
        assert "JSON Schema" in last_user_text(body)  # the schema moved into the prompt
        return '"no"'

    server = chat_server(responder)
    lm = openai_lm(server)
    assert complete_sync(lm, MESSAGES, schema=LABELS).text == '"no"'
    assert ["response_format" in r for r in server.requests] == [True, False]
    asyncio.run(lm.acomplete(MESSAGES, schema=LABELS))
    assert "response_format" not in server.requests[-1]  # not tried again


def test_a_reply_that_ignores_the_schema_is_asked_for_again_with_the_problem(chat_server):
    replies = iter(["Yes, it is.", '"yes"'])
    server = chat_server(lambda body: next(replies))
    completion = complete_sync(openai_lm(server), MESSAGES, schema=LABELS)
    assert completion.text == '"yes"'
    again = server.requests[1]["messages"]
    assert again[-2] == {"role": "assistant", "content": "Yes, it is."}
    assert "does not follow the JSON Schema: the reply is not JSON" in again[-1]["content"]
    # Usage covers both calls.
    single = complete_sync(openai_lm(chat_server(lambda body: '"yes"')), MESSAGES, schema=LABELS)
    assert completion.input_tokens > single.input_tokens


def test_a_reply_that_never_follows_is_returned_after_one_retry(chat_server):
    server = chat_server(lambda body: "maybe")
    completion = complete_sync(openai_lm(server), MESSAGES, schema=LABELS)
    assert completion.text == "maybe"  # the caller reads it leniently or gives up
    assert len(server.requests) == 1 + schemas.RETRIES


def test_other_http_errors_are_not_mistaken_for_a_refusal(chat_server):
    server = chat_server(lambda body: FakeReply(status=401, text="bad key"))
    with pytest.raises(LMError, match="HTTP 401") as caught:
        complete_sync(openai_lm(server), MESSAGES, schema=LABELS)
    assert caught.value.status == 401
    assert len(server.requests) == 1


def test_anthropic_gets_the_schema_in_the_prompt_and_is_checked(chat_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    replies = iter(['{"answer": 3}', '{"answer": "three"}'])
    server = chat_server(lambda body: next(replies))
    lm = AnthropicLM("claude-haiku-4-5", base_url=server.url.removesuffix("/v1"), max_retries=0)
    shape = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    completion = complete_sync(lm, MESSAGES, schema=shape)
    assert json.loads(completion.text) == {"answer": "three"}
    first = server.requests[0]
    assert "output_format" not in first and "response_format" not in first
    assert '"required": ["answer"]' in last_user_text(first)
    assert "$.answer must be of type string" in last_user_text(server.requests[1])


def test_llm_classify_reaches_an_http_sub_model_as_an_enum(chat_server):
    def responder(body):
        text = last_user_text(body)
        if text.startswith("Query:"):
            return repl("print(llm_classify(['Who is it?', 'Where is it?'], ['person', 'place']))")
        if "Output:" in text:
            return "FINAL(done)"
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["required"] == ["1", "2"]
        assert schema["properties"]["2"] == {"enum": ["person", "place"]}
        items = dict(re.findall(r"^(\d+)\. (.*)$", text, re.M))
        return json.dumps(
            {n: "person" if q.startswith("Who") else "place" for n, q in items.items()}
        )

    server = chat_server(responder)
    result = RLM("openai/m", base_url=server.url).run("q", "ctx")
    assert result.answer == "done"
    assert "['person', 'place']" in last_user_text(server.requests[-1])


@pytest.mark.parametrize(
    ("value", "schema", "problem"),
    [
        ("a", {"enum": ["a", "b"]}, None),
        ("c", {"enum": ["a", "b"]}, "must be one of"),
        ({"1": "a"}, {"type": "object", "required": ["1", "2"]}, "lacks the required key"),
        (
            {"1": "a", "x": 1},
            {"type": "object", "properties": {"1": {}}, "additionalProperties": False},
            "does not allow",
        ),
        ([1, 2], {"type": "array", "items": {"type": "integer"}, "maxItems": 1}, "at most 1"),
        ([1, "2"], {"type": "array", "items": {"type": "integer"}}, "$[1] must be of type"),
        (True, {"type": "integer"}, "must be of type integer"),
        (3.0, {"type": "integer"}, None),
        ("abc", {"type": "string", "maxLength": 2}, "at most 2 characters"),
        (None, {"type": ["string", "null"]}, None),
    ],
)
def test_the_checker(value, schema, problem):
    found = schemas.check(value, schema)
    assert (found is None) if problem is None else (problem in found)


def test_fenced_json_counts_as_json():
    assert schemas.problem('```json\n"a"\n```', {"enum": ["a"]}) is None
    assert "not JSON" in schemas.problem("a", {"enum": ["a"]})


def test_a_prompt_too_long_for_the_window_is_not_taken_for_a_refusal(chat_server):
    text = "This model's maximum context length is 4096 tokens. Please reduce the length."
    server = chat_server(lambda body: FakeReply(status=400, text=text))
    lm = openai_lm(server)
    with pytest.raises(LMError, match="maximum context length") as caught:
        complete_sync(lm, MESSAGES, schema=LABELS)
    assert caught.value.window_tokens == 4096
    assert len(server.requests) == 1 and lm.native_schema  # response_format kept
