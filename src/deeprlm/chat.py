"""`deeprlm chat`: a session's questions at an interactive prompt.

Each line is a question to the session (answered with live progress on stderr, the answer
on stdout) or a command: /vars, /history, /trace, /save, /help, /quit. The session is saved
after every question, so a chat that ends however it ends (Ctrl-D, /quit, a closed
terminal) can go on with `deeprlm chat --session ID` or `deeprlm ask --session ID`.
Ctrl-C stops the question being answered and leaves the session as it was after its last
finished cell; at the prompt it does nothing but say how to leave.

On a terminal, lines are edited and recalled with the standard library's `readline`, the
history kept in `$DEEPRLM_HOME/chat_history`, and read by `prompt_line.read_line`, which
keeps a Ctrl-C at the prompt from being lost. From a pipe, lines are read as they come and
no prompt is shown, so `deeprlm chat < questions.txt` prints only the answers.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from deeprlm.errors import DeepRLMError, InputError
from deeprlm.local.home import deeprlm_home
from deeprlm.prompt_line import read_line
from deeprlm.session import Session
from deeprlm.textutil import clip
from deeprlm.trace.events import CellEnded, Compacted, Event, LMCallEnded, Note, RunEnded
from deeprlm.trace.progress import short_seconds, short_tokens, short_usd

PROMPT = "deeprlm> "
HISTORY_FILE = "chat_history"
HISTORY_LINES = 1_000
ANSWER_PREVIEW = 100

# Makes the progress sink for one question: (quiet) -> a sink with close(), or None.
ProgressFactory = Callable[[], Any]


@dataclass(frozen=True)
class Command:
    name: str
    help: str


COMMANDS = (
    Command("/vars", "the REPL's variables and their types (and those that were lost)"),
    Command("/history", "the questions asked so far, how each ended and what it cost"),
    Command("/trace", "where the trace is, and what the last question did"),
    Command("/save", "save the session now (it is also saved after every question)"),
    Command("/help", "this list"),
    Command("/quit", "leave (as does Ctrl-D); the session stays saved"),
)
ALIASES = {"/exit": "/quit", "/variables": "/vars", "/q": "/quit", "/?": "/help"}


class Chat:
    def __init__(
        self,
        session: Session,
        *,
        overrides: dict[str, Any] | None = None,
        progress: ProgressFactory | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.session = session
        self.overrides = dict(overrides or {})
        self.progress = progress or (lambda: None)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.interactive = self.stdin.isatty()
        self.last_events: list[Event] = []

    # --- output ------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def tell(self, text: str) -> None:
        """A line about the chat itself, on stderr, out of the answers' way."""
        self.stderr.write(text + "\n")
        self.stderr.flush()

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        history = self._load_history() if self.interactive else None
        self.tell(self._banner())
        for note in self.session.notes:
            self.tell(f"note: {note}")
        try:
            while True:
                try:
                    line = self._read()
                except KeyboardInterrupt:
                    self.tell("\n(Ctrl-D or /quit leaves)")
                    continue
                if line is None:
                    break
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/") and not line.startswith("//"):
                    if not self.command(line):
                        break
                    continue
                try:
                    self.question(line.removeprefix("/"))
                except KeyboardInterrupt:
                    # Ctrl-C again while a stopped question was being recorded: leave.
                    self.tell("interrupted again: leaving")
                    break
        finally:
            if history is not None:
                self._save_history(history)
            self._save(quietly=True)
            self.tell(
                f"session {self.session.id} saved; go on with: deeprlm chat --session "
                f"{self.session.id}"
            )
        return 0

    def _read(self) -> str | None:
        if self.interactive:
            try:
                return read_line(PROMPT)
            except EOFError:
                self.tell("")
                return None
        line = self.stdin.readline()
        return line if line else None

    def _banner(self) -> str:
        session = self.session
        info = session.info
        asked = len(session.history)
        text = (
            f"deeprlm chat · session {session.id} · context: {info.kind}, "
            f"{info.chars:,} characters · {session.rlm.model.name}"
        )
        if asked:
            text += f" · {asked} earlier question{'s' if asked != 1 else ''}"
        return text + " · /help lists commands"

    # --- questions -----------------------------------------------------------------------

    def question(self, query: str) -> None:
        self.last_events = []
        sink = self.progress()

        def on_event(event: Event) -> None:
            self.last_events.append(event)
            if sink is not None:
                sink(event)

        try:
            result = self.session.ask(query, on_event=on_event, **self.overrides)
        except KeyboardInterrupt:
            if sink is not None:
                sink.close()
            self.tell("question cancelled; the session goes on")
            self._save(quietly=True)
            return
        except InputError as err:
            if sink is not None:
                sink.close()
            self.tell(f"deeprlm: error: {err}")
            return
        except DeepRLMError as err:
            if sink is not None:
                sink.close()
            partial = err.result.answer if err.result is not None else ""
            self.tell(f"deeprlm: error: {err}" + (" (partial answer printed)" if partial else ""))
            if partial:
                self.say(partial)
            self._save(quietly=True)
            return
        if sink is not None:
            sink.close()
        self.say(result.answer)
        self._save(quietly=True)

    # --- commands ------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Runs a command; False when it ends the chat."""
        name = line.split()[0].lower()
        name = ALIASES.get(name, name)
        if name == "/quit":
            return False
        handler = {
            "/vars": self.show_vars,
            "/history": self.show_history,
            "/trace": self.show_trace,
            "/save": lambda: self._save(quietly=False),
            "/help": self.show_help,
        }.get(name)
        if handler is None:
            self.say(f"unknown command {name}; /help lists them")
        else:
            handler()
        return True

    def show_vars(self) -> None:
        variables = self.session.variables()
        lost = self.session.lost
        if not variables and not lost:
            self.say("no variables yet")
            return
        width = max(len(name) for name in [*variables, *lost])
        for name, kind in sorted(variables.items()):
            self.say(f"{name:<{width}}  {kind}")
        for name, why in sorted(lost.items()):
            if name not in variables:
                self.say(f"{name:<{width}}  lost: {why}")

    def show_history(self) -> None:
        history = self.session.history
        if not history:
            self.say("no questions yet")
            return
        for number, record in enumerate(history, 1):
            total = record.usage.total
            answer = " ".join(record.answer.split())
            self.say(
                f"{number}. [{record.status}] {clip(' '.join(record.query.split()), 80)}\n"
                f"   -> {clip(answer, ANSWER_PREVIEW) or '(no answer)'}\n"
                f"   {short_seconds(record.wall_s)} · {record.iterations} turns · "
                f"{record.sub_calls} sub-calls · {short_tokens(total.tokens)} tok · "
                f"{short_usd(total.usd)}"
            )
        total = self.session.usage.total
        self.say(
            f"session: {len(history)} questions · {total.calls} model calls · "
            f"{short_tokens(total.tokens)} tok · {short_usd(total.usd)}"
        )

    def show_trace(self) -> None:
        path = self.session.rlm.trace_path
        if path is not None:
            self.say(f"trace: {path}  (see it with: deeprlm view {path} --open)")
        else:
            self.say("no trace file: this session keeps its trace in memory")
        events = self.last_events
        if not events:
            self.say("no question asked in this chat yet")
            return
        calls = [e for e in events if isinstance(e, LMCallEnded)]
        cells = [e for e in events if isinstance(e, CellEnded)]
        runs = [e for e in events if isinstance(e, RunEnded)]
        root = runs[-1] if runs else None
        subs = sum(1 for e in calls if e.purpose == "sub")
        tokens = sum(e.input_tokens + e.output_tokens for e in calls)
        line = f"last question: run {root.run_id} {root.status}" if root else "last question:"
        self.say(
            f"{line} · {len(cells)} cells · {len(calls) - subs} root calls · {subs} sub-calls"
            f" · {len(runs) - 1 if runs else 0} child runs · {short_tokens(tokens)} tok"
        )
        for event in events:
            if isinstance(event, Compacted):
                self.say(
                    f"  turns {event.first_turn}-{event.last_turn} compacted "
                    f"({short_tokens(event.tokens_before)} -> "
                    f"{short_tokens(event.tokens_after)} tok)"
                )
            elif isinstance(event, Note):
                self.say(f"  note: {clip(event.message, 200)}")

    def show_help(self) -> None:
        for command in COMMANDS:
            self.say(f"{command.name:<9} {command.help}")
        self.say(
            "Anything else is a question (start it with // to begin it with /). Ctrl-C "
            "stops a question; Ctrl-D leaves."
        )

    def _save(self, *, quietly: bool) -> None:
        try:
            folder = self.session.save()
        except DeepRLMError as err:
            self.tell(f"deeprlm: error: the session could not be saved: {err}")
            return
        except OSError as err:
            self.tell(f"deeprlm: error: the session could not be saved: {err.strerror or err}")
            return
        if quietly:
            return
        lost = self.session.lost
        self.say(f"saved to {folder}")
        if lost:
            listed = ", ".join(f"{name} ({why})" for name, why in sorted(lost.items()))
            self.say(f"not kept: {listed}")

    # --- line history --------------------------------------------------------------------

    def _load_history(self) -> Any:
        try:
            import readline
        except ImportError:  # not every platform has it
            return None
        path = deeprlm_home() / HISTORY_FILE
        with contextlib.suppress(OSError):
            readline.read_history_file(path)
        readline.set_history_length(HISTORY_LINES)
        return readline

    def _save_history(self, readline: Any) -> None:
        path = deeprlm_home() / HISTORY_FILE
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
