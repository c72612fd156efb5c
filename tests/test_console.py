"""Live progress on stderr: the rich panel for terminals and plain lines for pipes."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from typing import Any

import pytest
from rich.console import Console

from deeprlm import RLM, ScriptedLM
from deeprlm.trace.console import LiveConsole, LogLines, console_sink
from deeprlm.trace.events import (
    BatchEnded,
    BatchStarted,
    CellEnded,
    CellStarted,
    Event,
    LMCallEnded,
    LMCallStarted,
    RunEnded,
    RunStarted,
)

from conftest import repl
from fake_server import FakeReply, last_user_text

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def root_policy(messages: list[dict[str, Any]]) -> str:
    turn = len(messages) // 2
    if "Query: child" in messages[1]["content"]:
        return "FINAL(child done)"
    return {
        1: repl("print(llm_batch(['a', 'b', 'c', 'd']))"),
        2: repl("print(rlm_query('child', 'ctx'))"),
    }.get(turn, "FINAL(done)")


def scripted_rlm(sink: Any, delay: float = 0.0) -> RLM:
    return RLM(
        ScriptedLM(root_policy, name="root", delay=delay),
        ScriptedLM(["s"], name="sub", delay=delay),
        on_event=sink,
    )


class Script:
    """Builds a trace by hand: a root run, a turn, a cell with a batch, and a child run."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, cls: type[Event], t: float, id: str, run: str, parent: str | None, **kw: Any):
        self.events.append(cls(t=t, id=id, run_id=run, parent_id=parent, **kw))
        return self

    def opening(self, batch_size: int = 5) -> Script:
        return (
            self.add(RunStarted, 0.0, "r0", "r0", None, query="How many?", model="big")
            .add(LMCallStarted, 0.1, "l1", "r0", "r0", purpose="root", model="big")
            .add(
                LMCallEnded,
                1.1,
                "l1",
                "r0",
                "r0",
                purpose="root",
                model="big",
                input_tokens=1200,
                output_tokens=300,
                usd=0.0125,
            )
            .add(CellStarted, 1.2, "c2", "r0", "r0", iteration=1)
            .add(BatchStarted, 1.3, "b3", "r0", "c2", kind="llm", size=batch_size)
        )

    def sub_call(self, i: int, t: float, error: str | None = None) -> Script:
        """A sub-call in the batch, started at `t - 0.01` and ended at `t`."""
        return self.add(
            LMCallStarted, t - 0.01, f"s{i}", "r0", "b3", purpose="sub", model="small"
        ).add(
            LMCallEnded,
            t,
            f"s{i}",
            "r0",
            "b3",
            purpose="sub",
            model="small",
            input_tokens=100,
            output_tokens=10,
            usd=0.0001,
            error=error,
        )


def frame(sink: LiveConsole) -> str:
    out = Console(file=io.StringIO(), width=120, color_system=None)
    out.print(sink.render())
    return out.file.getvalue()  # type: ignore[attr-defined]


def live_console(**kw: Any) -> tuple[LiveConsole, io.StringIO]:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    return LiveConsole(console, auto_refresh=False, **kw), screen


def test_live_panel_shows_turn_running_work_usage_and_child_runs():
    now = [1000.0]
    sink, _ = live_console(clock=lambda: now[0])
    script = Script().opening()
    script.sub_call(0, 1.4).sub_call(1, 1.5, error="boom")
    script.add(LMCallStarted, 1.6, "s2", "r0", "b3", purpose="sub", model="small")
    script.add(RunStarted, 1.7, "r9", "r9", "c2", depth=1, query="count the dogs", model="big")
    script.add(LMCallStarted, 1.8, "l10", "r9", "r9", purpose="root", model="big")
    for event in script.events:
        sink(event)
    now[0] += 12.3  # the clock runs on while a call is out
    text = frame(sink)
    lines = text.splitlines()
    assert lines[0].startswith("deeprlm 12.3s · 2 sub-calls done")
    assert "$0.0127" in lines[0]
    assert "run · big · turn 1" in text
    assert "cell 1 running 11.1s" in text
    assert "batch: 2 of 5 sub-calls done" in text and "1 failed" in text
    child = next(line for line in lines if "child run r9" in line)
    assert "depth 1 · big · turn 1 · count the dogs" in child
    below = lines[lines.index(child) + 1]
    # The child's model call is drawn one level deeper than the child itself.
    assert "model call big" in below
    assert below.index("model call") > child.index("child run")
    rows = [line.split() for line in lines]
    usage = {row[0]: row for row in rows if row[:1] in (["big"], ["small"])}
    assert usage["big"][1:] == ["1", "1.2k", "300", "$0.0125"]
    assert usage["small"][1:5] == ["2", "(1", "failed)", "200"]


def test_live_panel_counts_a_chains_links_as_they_are_read():
    now = [1000.0]
    sink, _ = live_console(clock=lambda: now[0])
    script = Script().opening()
    script.add(BatchStarted, 1.3, "b7", "r0", "c2", kind="chain", size=0)
    script.add(LMCallStarted, 1.4, "s8", "r0", "b7", purpose="sub", model="small")
    script.add(LMCallEnded, 1.5, "s8", "r0", "b7", purpose="sub", model="small")
    for event in script.events:
        sink(event)
    now[0] += 3.0
    assert "follow_chain: 1 link read" in frame(sink)


def test_live_panel_stops_by_itself_when_the_root_run_ends():
    sink, screen = live_console()
    script = Script().opening(batch_size=2).sub_call(0, 1.4).sub_call(1, 1.5)
    script.add(BatchEnded, 1.6, "b3", "r0", "c2", size=2)
    script.add(CellEnded, 1.7, "c2", "r0", "r0", iteration=1)
    script.add(RunEnded, 1.8, "r0", "r0", None, status="answered", wall_s=1.8)
    for event in script.events:
        sink(event)
    assert not sink._live.is_started
    final = ANSI.sub("", screen.getvalue())
    assert "run · big · turn 1 · answered in 1.8s" in final
    assert "2 sub-calls done" in final
    sink(
        LMCallStarted(t=2.0, id="late", run_id="r0", parent_id="r0", purpose="root", model="big")
    )  # ignored
    sink.close()  # twice is fine


def test_events_update_state_and_leave_drawing_to_the_refresh():
    drawn = []

    class Counting(LiveConsole):
        def render(self):
            drawn.append(1)
            return super().render()

    sink = Counting(Console(file=io.StringIO(), force_terminal=True), auto_refresh=False)
    script = Script().opening(batch_size=3000)
    for i in range(3000):
        script.sub_call(i, 2 + i / 1000)
    for event in script.events:
        sink(event)
    assert sink.progress.active["b3"].done == 3000
    assert len(drawn) <= 1  # at most the first frame, when the panel was created
    sink.close()


def test_live_panel_during_a_real_run():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    sink = LiveConsole(console, refresh_per_second=50)
    result = scripted_rlm(sink, delay=0.02).run("q", "ctx")
    assert result.answer == "done"
    assert not sink._live.is_started
    final = ANSI.sub("", screen.getvalue()).split("deeprlm ")[-1]
    assert "run · root · turn 3 · answered" in final
    assert "1 child run finished" in final
    assert re.search(r"root +4 ", final) and re.search(r"sub +4 ", final)


def test_plain_lines_follow_a_run_with_a_batch_and_a_child():
    out = io.StringIO()
    result = scripted_rlm(LogLines(out)).run("q", "ctx")
    assert result.answer == "done"
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines[0] == "run started · root · q"
    assert lines[1].startswith("turn 1 · root replied in ")
    assert "batch of 4 sub-calls started" in lines
    assert any(line.startswith("batch of 4 done in ") for line in lines)
    child = [line for line in lines if "[run" in line]
    assert child[0].startswith("  [run")
    assert "child run (depth 1) started · root · child" in child[0]
    assert "child run answered" in child[-1]
    ended = next(line for line in lines if line.startswith("run answered in "))
    assert ended.endswith("3 turns · 5 sub-calls")
    assert lines[-2].startswith("usage · root: 4 calls")
    assert lines[-1].startswith("usage · sub: 4 calls")


def test_plain_lines_sum_up_sub_calls_every_few_seconds_of_trace_time():
    out = io.StringIO()
    sink = LogLines(out, every_s=5.0)
    script = Script().opening(batch_size=1000)
    for i in range(1000):
        script.sub_call(i, 1 + i / 100)  # they end at 1.0 .. 10.99
    for event in script.events:
        sink(event)
    summaries = [line for line in out.getvalue().splitlines() if "sub-calls done" in line]
    assert len(summaries) == 2
    assert "401 sub-calls done" in summaries[0] and "batches 401/1000" in summaries[0]
    assert "901 sub-calls done" in summaries[1]
    # The run's start, its turn, the batch's start and the two summaries; no line per call.
    assert len(out.getvalue().splitlines()) == 5


def test_plain_lines_report_cell_errors_on_one_line():
    out = io.StringIO()
    sink = LogLines(out)
    sink(RunStarted(t=0.0, id="r0", run_id="r0", parent_id=None, query="q", model="m"))
    sink(
        CellEnded(
            t=1.0,
            id="c1",
            run_id="r0",
            parent_id="r0",
            iteration=2,
            error="Traceback ...\n  x\nKeyError: 'k'",
        )
    )
    assert (
        out.getvalue()
        .splitlines()[-1]
        .endswith("cell 2 ran in 0.0s · 0 chars of output · error: KeyError: 'k'")
    )


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def plain_env(monkeypatch):
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def test_console_sink_picks_a_panel_for_a_terminal_and_lines_otherwise(plain_env):
    assert console_sink(quiet=True, stream=FakeTTY()) is None
    assert isinstance(console_sink(stream=FakeTTY()), LiveConsole)
    assert isinstance(console_sink(stream=io.StringIO()), LogLines)


def test_console_sink_gives_lines_on_a_dumb_terminal(plain_env, monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(console_sink(stream=FakeTTY()), LogLines)


# ---- `deeprlm ask` as a user runs it, with a real process and a fake chat server


@pytest.fixture
def ask(chat_server, tmp_path):
    def responder(body):
        text = last_user_text(body)
        if "Query:" in text:
            return FakeReply(repl("print(llm_batch(['a', 'b', 'c']))"), delay_s=0.05)
        if text in ("a", "b", "c"):
            return FakeReply("sub " + text, delay_s=0.05)
        return "FINAL(three parts)"

    server = chat_server(responder)
    doc = tmp_path / "doc.txt"
    doc.write_text("some text")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    env.update(TERM="xterm-256color", COLUMNS="100")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        env.pop(name, None)
    command = [sys.executable, "-m", "deeprlm", "ask", "q", "-c", str(doc)]
    command += ["--model", "openai/m", "--base-url", server.url]

    def run(*extra: str, stderr: int = subprocess.PIPE) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*command, *extra], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )

    return run


def test_ask_writes_plain_progress_lines_when_stderr_is_a_pipe(ask):
    process = ask()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out == "three parts\n"
    lines = [line.split("] ", 1)[1] for line in err.splitlines()]
    assert lines[0] == "run started · m · q"
    assert "batch of 3 sub-calls started" in lines
    assert lines[-2].startswith("run answered in ")
    assert lines[-1].startswith("usage · m: 5 calls")


def test_ask_quiet_writes_nothing_on_stderr(ask):
    process = ask("--quiet")
    assert process.communicate(timeout=120) == ("three parts\n", "")
    assert process.returncode == 0


def test_ask_draws_a_live_panel_on_a_terminal(ask):
    leader, follower = pty.openpty()
    process = ask(stderr=follower)
    os.close(follower)
    screen = b""
    try:
        # Read while it runs, so the terminal's buffer never fills and stalls it.
        deadline = time.monotonic() + 120
        while True:
            if not select.select([leader], [], [], 1)[0]:
                if time.monotonic() > deadline:
                    process.kill()
                    pytest.fail("deeprlm ask did not finish")
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed its end of the terminal
                break
            if not chunk:
                break
            screen += chunk
        out, _ = process.communicate(timeout=120)
    finally:
        os.close(leader)
    assert process.returncode == 0
    assert out == "three parts\n"
    text = ANSI.sub("", screen.decode())
    assert "\x1b[" in screen.decode()  # drawn with cursor moves, not lines
    assert "run · m · turn 2 · answered" in text
    assert re.search(r" m +5 ", text)  # the usage table


def test_the_console_the_viewer_and_the_result_count_the_same_usage():
    from deeprlm.trace.progress import Progress
    from deeprlm.trace.tree import build_tree

    def sub(messages):
        if messages[-1]["content"] == "c":
            raise RuntimeError("down")
        return "s"

    root = ScriptedLM([repl("print(llm_batch(['a', 'b', 'c']))"), "FINAL(x)"], name="root")
    result = RLM(root, ScriptedLM(sub, name="sub")).run("q", "ctx")
    progress = Progress()
    for event in result.trace.events:
        progress.apply(event)
    viewer = build_tree(result.trace.events).usage
    assert progress.usage.report().by_model["root"] == result.usage.by_model["root"]
    # A failed call costs nothing but is counted, by both readers alike.
    assert result.usage.by_model["sub"].calls == 2
    assert progress.usage.by_model["sub"].calls == 3 and progress.failed["sub"] == 1
    for model, usage in progress.usage.by_model.items():
        assert viewer[model] == {
            "calls": usage.calls,
            "in": usage.input_tokens,
            "out": usage.output_tokens,
            "cached": usage.cached_tokens,
            "usd": usage.usd,
            "errors": progress.failed[model],
        }
