"""`deeprlm chat` and `deeprlm ask --session` as a user runs them: real processes, a real
HTTP server, questions from a pipe and from a terminal (a pty), Ctrl-C and Ctrl-D."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from deeprlm import RLM

from conftest import ctrl_c_works, outputs, repl
from fake_server import last_user_text
from session_script import QuestionScript, deeprlm


def final_of_output(body) -> str:
    return f"FINAL(answer: {outputs(last_user_text(body))[0]})"


def script() -> QuestionScript:
    return QuestionScript(
        {
            "count the words": [
                repl("words = context.split()\nprint(len(words))"),
                final_of_output,
            ],
            "last word?": [repl("print(words[-1])"), final_of_output],
            "slow question": [
                repl("import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass"),
                "FINAL(never)",
            ],
        }
    )


@pytest.fixture
def setup(chat_server, tmp_path):
    server = chat_server(script())
    doc = tmp_path / "doc.txt"
    doc.write_text("alpha beta gamma delta")
    home = tmp_path / "home"
    flags = ["--model", "openai/m", "--base-url", server.url, "--repl", "inprocess"]
    return server, doc, home, flags


def saved_id(stderr: str) -> str:
    found = re.search(r"session (\S+) saved; go on with: deeprlm chat --session \1", stderr)
    assert found, stderr
    return found.group(1)


def test_chat_from_a_pipe_then_go_on_with_the_session(setup):
    _server, doc, home, flags = setup
    lines = "count the words\n/vars\n/history\n/nonsense\n\nlast word?\n/save\n"
    done = deeprlm("chat", "--context", str(doc), *flags, stdin=lines, home=home)
    assert done.returncode == 0, done.stderr
    session_id = saved_id(done.stderr)
    out = done.stdout.splitlines()
    assert out[0] == "answer: 4"
    assert out[1] == "words  list"
    assert out[2] == "1. [answered] count the words" and out[3] == "   -> answer: 4"
    assert "unknown command /nonsense; /help lists them" in out
    assert "answer: delta" in out
    assert f"saved to {home / 'sessions' / session_id}" in out
    assert "run started" in done.stderr  # progress, as plain lines on a pipe
    folder = home / "sessions" / session_id
    trace = [json.loads(line) for line in (folder / "trace.jsonl").read_text().splitlines()]
    assert [e["run_id"] for e in trace if e["type"] == "run_started"] == ["q1.run0", "q2.run0"]

    # A later chat goes on with it: the history and the variables are there.
    done = deeprlm(
        "chat", "--session", session_id, *flags[:4], stdin="/history\nlast word?\n", home=home
    )
    assert done.returncode == 0, done.stderr
    assert "2. [answered] last word?" in done.stdout
    assert done.stdout.splitlines()[-1] == "answer: delta"
    assert "2 earlier questions" in done.stderr

    # So does ask --session, which saves it again.
    done = deeprlm("ask", "last word?", "--session", session_id, "--json", "-q", home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == "answer: delta"
    saved = json.loads((folder / "session.json").read_text())
    assert len(saved["history"]) == 4


def test_ask_session_refuses_a_changed_context_unless_rebound(setup):
    _server, doc, home, flags = setup
    done = deeprlm("chat", "-c", str(doc), *flags, stdin="count the words\n", home=home)
    session_id = saved_id(done.stderr)
    doc.write_text("alpha beta gamma delta epsilon")
    done = deeprlm("ask", "last word?", "--session", session_id, "-q", home=home)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--rebind" in done.stderr
    done = deeprlm("ask", "last word?", "--session", session_id, "-q", "--rebind", home=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "answer: delta"  # `words` was made from the text it read


def test_ask_session_reports_a_damaged_session_and_moves_it_aside(setup):
    _server, doc, home, flags = setup
    done = deeprlm("chat", "-c", str(doc), *flags, stdin="count the words\n", home=home)
    session_id = saved_id(done.stderr)
    path = home / "sessions" / session_id / "session.json"
    path.write_bytes(b"\x00\xff not json")
    done = deeprlm("ask", "last word?", "--session", session_id, "--json", "-q", home=home)
    assert done.returncode == 1
    assert (
        done.stderr.count("\n") == 1 and "damaged" in done.stderr and "moved aside" in done.stderr
    )
    assert json.loads(done.stdout)["status"] == "error"  # --json: still one object
    assert [p.name.split("-")[0] for p in path.parent.glob("session.json.corrupt-*")] == [
        "session.json.corrupt"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat"], "no context given"),
        (["chat", "--context", "-"], "give the context as files"),
        (["chat", "--session", "nope"], "no saved session 'nope'"),
        (["ask", "q", "--session", "nope"], "no saved session 'nope'"),
        (["ask", "q", "--session", "../x"], "session id"),
        (["ask", "q", "--session", "x", "--context", "f"], "--context goes with a new session"),
        (["ask", "q", "--context", "f", "--rebind"], "--rebind goes with --session"),
        (["chat", "--session", "saved", "--repl", "sandbox"], "repl is fixed for the session"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(setup, args, message, monkeypatch):
    server, doc, home, _flags = setup
    if "saved" in args:  # a saved session named "saved", made in process
        monkeypatch.setenv("DEEPRLM_HOME", str(home))
        rlm = RLM("openai/m", base_url=server.url, repl="inprocess")
        with rlm.session(doc, session_id="saved") as session:
            session.save()
    done = deeprlm(*args, "--model", "openai/m", "--base-url", server.url, home=home)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr


def test_session_flags_are_made_from_the_settings_table():
    done = deeprlm("chat", "--help", home="/nonexistent")
    assert "--session-max-usd X" in done.stdout and "--compact-tokens N" in done.stdout
    done = deeprlm("ask", "--help", home="/nonexistent")
    assert "--session-max-usd" not in done.stdout and "--session ID" in done.stdout


# --- on a terminal ---------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Terminal:
    """`deeprlm` on a pseudo-terminal: what a user types goes in, what the screen shows
    comes out (escape codes removed)."""

    def __init__(self, args: list[str], home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
        env.update(DEEPRLM_HOME=str(home), TERM="xterm-256color", COLUMNS="100", LINES="40")
        env.pop("NO_COLOR", None)
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its terminal
            ctrl_c_works()
            os.execve(sys.executable, [sys.executable, "-m", "deeprlm", *args], env)
        self.pid, self.fd = pid, fd
        self.screen = ""
        self.read_to = 0

    def _pump(self, timeout: float) -> bool:
        ready = select.select([self.fd], [], [], timeout)[0]
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # the child closed the terminal
            return False
        if not data:
            return False
        self.screen += ANSI.sub("", data.decode("utf-8", "replace"))
        return True

    def expect(self, text: str, timeout: float = 60) -> str:
        """Waits until `text` shows after what was already read; returns what came."""
        deadline = time.monotonic() + timeout
        while text not in self.screen[self.read_to :]:
            if time.monotonic() > deadline or not self._pump(0.2):
                if text in self.screen[self.read_to :]:
                    break
                raise AssertionError(f"{text!r} never showed; screen:\n{self.screen[-3000:]}")
        end = self.screen.index(text, self.read_to) + len(text)
        shown, self.read_to = self.screen[self.read_to : end], end
        return shown

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def kill(self) -> None:
        """Ends the process if it is still there (a failed test must not leave it)."""
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return  # reaped by wait()
        if pid == 0:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._pump(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"the chat did not end; screen:\n{self.screen[-3000:]}")


@pytest.mark.parametrize("kind", ["inprocess", "sandbox"])
def test_chat_on_a_terminal_with_ctrl_c_and_ctrl_d(setup, kind):
    _server, doc, home, flags = setup
    flags = [*flags[:-1], kind]
    term = Terminal(["chat", "--context", str(doc), *flags], home)
    try:
        banner = term.expect("deeprlm> ")
        assert "/help lists commands" in banner
        term.type("count the words\n")
        shown = term.expect("deeprlm> ")
        assert "answer: 4" in shown
        assert "deeprlm" in shown and "turn" in shown  # the live panel was drawn
        term.type("/vars\n")
        assert re.search(r"words +list", term.expect("deeprlm> "))
        # Ctrl-C stops the question being answered, not the chat.
        term.type("slow question\n")
        term.expect("cell 1 running")
        term.type("\x03")
        assert "question cancelled; the session goes on" in term.expect("deeprlm> ")
        term.type("last word?\n")
        assert "answer: delta" in term.expect("deeprlm> ")
        # At the prompt, Ctrl-C only says how to leave; the line typed so far is dropped.
        term.type("half a li")
        term.expect("half a li")  # echoed: readline has the line
        term.type("\x03")
        assert "Ctrl-D or /quit leaves" in term.expect("deeprlm> ")
        term.type("/history\n")
        shown = term.expect("deeprlm> ")
        assert "2. [cancelled] slow question" in shown and "3. [answered] last word?" in shown
        # Line history: the up arrow brings back the last line.
        term.type("\x1b[A\n")
        assert "3. [answered] last word?" in term.expect("deeprlm> ")
        term.type("\x04")  # Ctrl-D leaves
        term.expect("go on with: deeprlm chat --session")
        assert term.wait() == 0
    finally:
        term.kill()
    assert (home / "chat_history").read_text().splitlines()[-1] == "/history"
    sessions = list((home / "sessions").iterdir())
    saved = json.loads((sessions[0] / "session.json").read_text())
    assert [r["status"] for r in saved["history"]] == ["answered", "cancelled", "answered"]
