"""`deeprlm ask` as a user runs it: a real process against a real HTTP server."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from deeprlm import cli
from deeprlm.cli import build_parser
from deeprlm.flags import flag_of, settings_from_flags
from deeprlm.settings import IN_PROCESS_CELL_TIMEOUT_S, Settings, table
from deeprlm_bench.cli import config_from_args

from conftest import deeprlm, outputs, repl
from fake_server import last_user_text


@pytest.fixture
def server(chat_server):
    def responder(body):
        text = last_user_text(body)
        if "Query:" in text:
            return repl("print(len(context), llm_query('count'))")
        if "no turns left" in text:
            return "FINAL(forced)"
        if "needs-more-turns" in json.dumps(body["messages"][:2]):
            return repl("print('again')")
        return "FINAL(the answer is 42)"

    return chat_server(responder)


def test_ask_answers_and_prints_json(server, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("some text to search")
    trace = tmp_path / "trace.jsonl"
    done = deeprlm(
        "ask",
        "what is it?",
        "--context",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--json",
        "--trace",
        str(trace),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["answer"] == "the answer is 42"
    assert data["iterations"] == 2 and data["sub_calls"] == 1
    assert data["usage"]["by_model"]["m"]["calls"] == 3
    assert data["usage"]["total"]["input_tokens"] > 0
    assert data["wall_s"] > 0
    assert data["trace"] == str(trace)
    types = [json.loads(line)["type"] for line in trace.read_text().splitlines()]
    assert types[0] == "run_started" and types[-1] == "run_ended"
    # What the root's code printed: len(context) and the sub-call's answer.
    assert outputs(last_user_text(server.requests[2])) == ["19 FINAL(the answer is 42)"]


def test_ask_reads_stdin_and_folders(server, tmp_path):
    done = deeprlm(
        "ask",
        "q",
        "--context",
        "-",
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--quiet",
        stdin="from stdin",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the answer is 42"
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "img.bin").write_bytes(b"\x89PNG\0\0\0")
    done = deeprlm(
        "ask",
        "q",
        "-c",
        str(tmp_path),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    first_prompt = last_user_text(server.requests[-3])
    assert "Keys: a.txt" in first_prompt and "Left out as binary: img.bin" in first_prompt


def test_a_limit_exits_3_and_still_prints_the_partial_answer(server, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask",
        "needs-more-turns",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--max-sub-calls",
        "1",
        "--json",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr  # one sub-call is within budget
    done = deeprlm(
        "ask",
        "needs-more-turns",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--max-tokens",
        "2500",
        "--json",
        "--quiet",
    )
    assert done.returncode == 3
    assert "token budget reached" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    data = json.loads(done.stdout)
    assert data["status"] == "limit" and "```repl" in data["answer"]
    total = data["usage"]["total"]
    assert 0 < total["input_tokens"] + total["output_tokens"] <= 2500


def test_iteration_limit_forces_an_answer_with_exit_0(server, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask",
        "needs-more-turns",
        "-c",
        str(doc),
        "--model",
        "openai/m",
        "--base-url",
        server.url,
        "--max-iterations",
        "2",
        "--json",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["answer"] == "forced" and data["forced"] is True


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["-c", "{tmp}/missing.txt"], "context file not found"),
        ("binary", ["-c", "{tmp}/blob.bin"], "is a binary file"),
        ("empty", ["-c", "{tmp}/empty.txt"], "the context is empty"),
        ("empty_dir", ["-c", "{tmp}/nothing"], "the context is empty"),
        (None, [], "no context given"),
        ("ok", ["-c", "{tmp}/ok.txt", "--model", "gpt-5"], "unknown model spec 'gpt-5'"),
        ("ok", ["-c", "{tmp}/ok.txt", "--model", "openai/gpt-5"], "OPENAI_API_KEY is not set"),
        ("ok", ["-c", "{tmp}/ok.txt", "--max-iterations", "0"], "max_iterations must be positive"),
        ("ok", ["-c", "{tmp}/ok.txt", "--cell-timeout", "-1"], "cell_timeout_s must be positive"),
        ("ok", ["-c", "{tmp}/ok.txt", "--max-usd", "lots"], "invalid float value: 'lots'"),
        ("ok", ["-c", "{tmp}/ok.txt", "--repl", "docker"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, setup, args, message):
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2" * 100)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "ok.txt").write_text("fine")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = deeprlm("ask", "q", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert done.stdout == ""


def test_a_file_that_cannot_be_read_as_text_exits_2(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    done = deeprlm("ask", "q", "-c", str(tmp_path / "pipe"))
    assert done.returncode == 2
    assert "not a regular file" in done.stderr


def test_a_server_that_fails_exits_1_with_one_line(chat_server, tmp_path):
    from fake_server import FakeReply

    server = chat_server(lambda body: FakeReply(raw=b"garbage"))
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask", "q", "-c", str(doc), "--model", "openai/m", "--base-url", server.url, "--quiet"
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "not a valid completion" in done.stderr or "not a chat completion" in done.stderr


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [
        ([], IN_PROCESS_CELL_TIMEOUT_S),  # the embedded model, the default
        (["--sub-model", "gguf:/models/m.gguf", "--model", "openai/m"], IN_PROCESS_CELL_TIMEOUT_S),
        (["--cell-timeout", "40"], 40.0),
        (["--model", "openai/m"], 300.0),
    ],
)
def test_ask_and_bench_give_cells_of_a_model_in_this_process_longer_unless_told(flags, wanted):
    # What the command's own deadline watch (in-process code) and the run are given.
    args = build_parser("ask").parse_args(["ask", "q", *flags])
    assert cli._ask_settings(args).cell_timeout_s == wanted
    args = build_parser("bench").parse_args(["bench", "run", "--out", "unused", *flags])
    assert config_from_args(args).settings.cell_timeout_s == wanted


def test_every_setting_has_a_flag_and_each_flag_reaches_the_settings(tmp_path):
    given = {
        "--max-iterations": "7",
        "--output-retries": "1",
        "--max-output-chars": "900",
        "--cell-timeout": "2.5",
        "--max-reply-tokens": "64",
        "--compact-tokens": "3000",
        "--max-depth": "0",
        "--max-concurrency": "3",
        "--sub-tool-turns": "2",
        "--max-batch": "50",
        "--max-repls": "4",
        "--call-timeout": "30",
        "--sub-call-timeout": "12",
        "--max-retries": "2",
        "--max-sub-calls": "9",
        "--max-tokens": "5000",
        "--max-usd": "0.5",
        "--timeout": "60",
        "--repl": "inprocess",
    }
    argv = ["ask", "q", "--no-sub-calls", "--allow-read", str(tmp_path)]
    for flag, value in given.items():
        argv += [flag, value]
    settings = Settings(**settings_from_flags(build_parser().parse_args(argv)))
    assert settings == Settings(
        max_iterations=7,
        output_retries=1,
        max_output_chars=900,
        cell_timeout_s=2.5,
        max_reply_tokens=64,
        compact_tokens=3000,
        max_depth=0,
        max_concurrency=3,
        allow_sub_calls=False,
        sub_tool_turns=2,
        max_batch=50,
        max_repls=4,
        call_timeout_s=30.0,
        sub_call_timeout_s=12.0,
        max_retries=2,
        max_sub_calls=9,
        max_tokens=5000,
        max_usd=0.5,
        timeout_s=60.0,
        repl="inprocess",
        allow_read=(str(tmp_path),),
    )
    # A session's totals are flags of the command that makes sessions.
    session = ["--session-max-tokens", "100", "--session-max-usd", "2"]
    chat = settings_from_flags(build_parser().parse_args(["chat", *argv[2:], *session]))
    assert Settings(**chat) == dataclasses.replace(
        settings, session_max_tokens=100, session_max_usd=2.0
    )
    flags = {flag_of(row) for row in table()} - {""}
    # every flag-worthy setting
    assert flags == {*given, "--no-sub-calls", "--allow-read", *session[::2]}
    untouched = settings_from_flags(build_parser().parse_args(["ask", "q"]))
    assert untouched == {}  # the library's defaults apply


def test_max_reply_tokens_reaches_the_provider(server, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done = deeprlm(
        "ask", "q", "-c", str(doc), "--model", "openai/m", "--base-url", server.url,
        "--max-reply-tokens", "77", "--repl", "inprocess", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {r["max_tokens"] for r in server.requests} == {77}


# Runs the command line as `deeprlm` does, then lists the benchmark modules it loaded.
LOADED = """
import atexit, sys
atexit.register(lambda: print("LOADED", sorted(
    m for m in sys.modules if m.split(".")[0] in ("deeprlm_bench", "bm25s", "matplotlib")
), file=sys.stderr))
from deeprlm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def loaded_by(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=120
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED"))
    return done, line


def test_ask_imports_no_benchmark_module(server, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    done, loaded = loaded_by(
        "ask", "q", "-c", str(doc), "--model", "openai/m", "--base-url", server.url, "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert loaded == "LOADED []"
    help_done, loaded = loaded_by("--help")
    assert "bench" in help_done.stdout and loaded == "LOADED []"
    # The check can see a benchmark module when one is loaded.
    example, loaded = loaded_by("bench", "example", "niah", "--length", "1k")
    assert example.returncode == 0, example.stderr
    assert "'deeprlm_bench.cli'" in loaded


def test_a_provider_failing_mid_run_keeps_the_answer_so_far_and_the_usage(chat_server, tmp_path):
    """Two turns are answered, then the server breaks: --json still prints one object with
    the error, the last reply as the partial answer and the usage of the calls made."""
    from fake_server import FakeReply

    def breaks_on_the_third_request():
        def responder(body):
            if len(server.requests) <= 2:
                return repl("answer['content'] = 'half way'\nprint(llm_query('x'))")
            return FakeReply(raw=b"{not json")

        server = chat_server(responder)
        return ["--model", "openai/m", "--base-url", server.url]

    doc = tmp_path / "doc.txt"
    doc.write_text("text")
    trace = tmp_path / "trace.jsonl"
    common = ["ask", "q", "-c", str(doc)]
    args = [*breaks_on_the_third_request(), "--json", "--quiet", "--trace", str(trace)]
    done = deeprlm(*common, *args)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "error"
    assert "not a valid completion" in data["error"] or "not a chat completion" in data["error"]
    assert data["answer"] == "half way"
    assert data["usage"]["by_model"]["m"]["calls"] == 2
    assert data["iterations"] == 2
    ended = json.loads(trace.read_text().splitlines()[-1])
    assert ended["type"] == "run_ended" and ended["status"] == "error"

    # Without --json: the partial answer on stdout.
    done = deeprlm(*common, *breaks_on_the_third_request(), "--quiet")
    assert done.returncode == 1
    assert done.stdout.strip() == "half way"


def test_json_prints_one_object_even_for_bad_input(tmp_path):
    done = deeprlm("ask", "q", "-c", str(tmp_path / "missing.txt"), "--json")
    assert done.returncode == 2
    data = json.loads(done.stdout)
    assert data["status"] == "error" and "context file not found" in data["error"]


def test_sub_models_are_named_repeatable_and_comma_separated():

    args = build_parser().parse_args(
        ["ask", "q", "--sub-models", "fast=openai/a,big=anthropic/b", "--sub-models", "z=local"]
    )
    assert args.sub_models == [{"fast": "openai/a", "big": "anthropic/b"}, {"z": "local"}]
    bad = subprocess.run(
        [sys.executable, "-m", "deeprlm", "ask", "q", "--sub-models", "fast"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "expected NAME=SPEC" in bad.stderr


def test_a_named_model_must_be_a_known_spec_and_not_root_or_sub():
    from deeprlm import RLM, ScriptedLM
    from deeprlm.errors import InputError

    with pytest.raises(InputError, match="taken"):
        RLM(ScriptedLM(["x"]), models={"root": "openai/a"})
    with pytest.raises(InputError):
        RLM(ScriptedLM(["x"]), models={"fast": "nonsense:spec"})


def test_in_process_code_stuck_in_c_ends_the_command_with_status_3(chat_server, tmp_path):
    """A catastrophic regex holds Python's lock: no timeout inside the process can act, so
    the command's watchdog ends it, with the trace written up to the stuck cell."""
    stuck = "import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')"

    def responder(body):
        return repl(stuck) if "Query:" in last_user_text(body) else "FINAL(never)"

    server = chat_server(responder)
    doc = tmp_path / "doc.txt"
    doc.write_text("the context")
    trace = tmp_path / "trace.jsonl"
    args = ["ask", "what?", "--context", str(doc), "--model", "openai/m", "--repl", "inprocess"]
    args += ["--base-url", server.url]
    args += ["--cell-timeout", "1", "--json", "--quiet", "--trace", str(trace)]
    env = {**os.environ, "OPENAI_API_KEY": "x"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 30
    assert "cannot be interrupted in process" in done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "limit" and "1s timeout" in data["error"]
    events = [json.loads(line)["type"] for line in trace.read_text().splitlines()]
    assert events[-1] == "cell_started"
