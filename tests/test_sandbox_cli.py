"""`deeprlm ask` runs the model's code in the sandbox by default, and `--allow-read` is the
way to let it read a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import repl
from fake_server import last_user_text


def test_ask_uses_the_sandbox_and_allow_read(chat_server, tmp_path):
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("allowed words")
    other = tmp_path / "other.txt"
    other.write_text("other words")
    code = (
        "seen = []\n"
        f"for path in ({str(allowed)!r}, {str(other)!r}):\n"
        "    try:\n"
        "        seen.append(open(path).read())\n"
        "    except OSError as exc:\n"
        "        seen.append(type(exc).__name__)\n"
        "seen = ' / '.join(seen)"
    )

    def responder(body):
        return repl(code) if "Query:" in last_user_text(body) else 'FINAL_VAR("seen")'

    server = chat_server(responder)
    doc = tmp_path / "doc.txt"
    doc.write_text("the context")
    trace = tmp_path / "trace.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    args = ["ask", "what?", "--context", str(doc), "--model", "openai/m"]
    args += ["--base-url", server.url, "--json", "--quiet"]
    args += ["--allow-read", str(allowed), "--trace", str(trace)]
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # The other file is not in the worker's root at all.
    assert json.loads(done.stdout)["answer"] == "allowed words / FileNotFoundError"
    started = json.loads(trace.read_text().splitlines()[0])
    assert started["type"] == "run_started" and started["repl"] == "sandbox"
    assert started["settings"]["allow_read"] == [str(allowed)]


def test_a_missing_allowed_path_is_bad_input(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("the context")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprlm",
            "ask",
            "q",
            "--context",
            str(doc),
            "--allow-read",
            "/nope",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "allow_read: no such file or folder" in done.stderr
