"""Typed answers: RLM(output=...) with a pydantic model or a JSON Schema. Valid at once;
invalid, told what is wrong, then corrected; invalid to the limit; a bad schema refused
before any call."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pydantic
import pytest

from deeprlm import RLM, InputError
from deeprlm.errors import OutputError
from deeprlm.lm.openai_compat import OpenAICompatibleLM
from deeprlm.lm.scripted import ScriptedLM
from deeprlm.output import OutputSchema

from conftest import repl


class Finding(pydantic.BaseModel):
    service: str
    timeouts: int


SCHEMA = {
    "type": "object",
    "properties": {"service": {"type": "string"}, "timeouts": {"type": "integer"}},
    "required": ["service", "timeouts"],
    "additionalProperties": False,
}


def test_a_valid_answer_is_parsed():
    lm = ScriptedLM([repl('found = {"service": "billing", "timeouts": 7}'), 'FINAL_VAR("found")'])
    result = RLM(lm, repl="inprocess", output=Finding).run("which?", "logs")
    assert result.value == Finding(service="billing", timeouts=7)
    assert json.loads(result.answer) == {"service": "billing", "timeouts": 7}
    assert result.to_dict()["value"] == {"service": "billing", "timeouts": 7}
    # The root was told the schema with the question.
    first = lm.calls[0][1]["content"]
    assert '"timeouts"' in first and "FINAL_VAR" in first


def test_an_invalid_answer_is_sent_back_and_corrected():
    lm = ScriptedLM(
        [
            'FINAL({"service": "billing", "timeouts": "seven"})',
            'FINAL({"service": "billing", "timeouts": 7})',
        ]
    )
    result = RLM(lm, repl="inprocess", output=SCHEMA).run("which?", "logs")
    assert result.value == {"service": "billing", "timeouts": 7}
    assert result.iterations == 2
    told = lm.calls[1][-1]["content"]
    assert "does not follow the required JSON Schema" in told
    assert "timeouts" in told and "'seven' is not of type 'integer'" in told
    assert any("does not follow the output schema" in n for n in result.notes)


def test_an_answer_invalid_to_the_limit_fails_with_what_it_had():
    lm = ScriptedLM(['FINAL({"service": "billing"})'])
    rlm = RLM(lm, repl="inprocess", output=SCHEMA, output_retries=2)
    with pytest.raises(OutputError) as failed:
        rlm.run("which?", "logs")
    assert len(lm.calls) == 3  # the first answer and two more tries
    assert "after 3 tries" in str(failed.value) and "'timeouts' is a required" in str(failed.value)
    assert failed.value.result.status == "error"
    assert "billing" in failed.value.partial_answer


def test_the_forced_answer_is_held_to_the_schema_too():
    lm = ScriptedLM([repl("x = 1"), "FINAL(not json)", 'FINAL({"service": "a", "timeouts": 1})'])
    result = RLM(lm, repl="inprocess", output=SCHEMA, max_iterations=1).run("q", "c")
    assert result.forced and result.value == {"service": "a", "timeouts": 1}


def test_an_invalid_schema_is_refused_before_any_call(chat_server, tmp_path):
    server = chat_server(lambda body: "FINAL(x)")
    lm = OpenAICompatibleLM("m", base_url=server.url)
    with pytest.raises(InputError, match="not a valid JSON Schema"):
        RLM(lm, output={"type": "objekt"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "object", "required": "service"}))
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprlm",
            "ask",
            "q",
            "-c",
            str(doc),
            "--model",
            "openai/m",
            "--base-url",
            server.url,
            "--schema",
            str(bad),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not a valid JSON Schema" in done.stderr and len(done.stderr.splitlines()) == 1
    assert server.requests == []


def test_schema_on_the_command_line(chat_server, tmp_path):
    answers = iter(['FINAL({"service": "db"})', 'FINAL({"service": "db", "timeouts": 2})'])
    server = chat_server(lambda body: next(answers))
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprlm",
            "ask",
            "q",
            "-c",
            str(doc),
            "--model",
            "openai/m",
            "--base-url",
            server.url,
            "--schema",
            str(schema),
            "--repl",
            "inprocess",
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["value"] == {"service": "db", "timeouts": 2}
    assert json.loads(out["answer"]) == out["value"]


def test_readings_of_an_answer():
    schema = OutputSchema(list[int])
    assert schema.check("[1, 2]").value == [1, 2]
    assert schema.check("```json\n[3]\n```").value == [3]
    assert schema.check("(4, 5)").problem is not None  # a tuple is not a JSON array
    text = OutputSchema({"type": "string"})
    assert text.check("plain words").value == "plain words"
    assert OutputSchema({"type": "object"}).check("").problem is not None


def test_sub_calls_can_take_a_schema(chat_server):
    server = chat_server(lambda body: '{"ok": true}')
    lm = OpenAICompatibleLM("m", base_url=server.url)
    from deeprlm.lm.base import complete_sync

    reply = complete_sync(lm, [{"role": "user", "content": "hi"}], schema={"type": "object"})
    assert reply.text == '{"ok": true}'
    sent = server.requests[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == {"type": "object"}
