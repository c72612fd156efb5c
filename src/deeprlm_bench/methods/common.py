"""What every method shares: the `Setup` it runs under (models, settings, window), the
`Outcome` it returns, and the model calls of the prompt-based ones.

All methods get the same models and the same budget, so that the comparison is fair: the
budget is the engine's own `Settings` (the `BUDGET` fields: turns, tokens, dollars, time,
reply length), holding for the whole of one example whichever method spends it, and every
model call of every method goes through the engine's one metered call
(`SharedState.call_lm`). The prompt-based methods add one rule of their own: a prompt that
cannot fit the model's window is not sent (`TooLong`), and the method scores 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deeprlm.batch.trajectory import CallTap
from deeprlm.engine import SharedState
from deeprlm.engine.shared import Permits
from deeprlm.errors import LMError
from deeprlm.lm.base import LM, Completion, Message, ToolSpec
from deeprlm.lm.wrapped import WrappedLM
from deeprlm.settings import Settings
from deeprlm.textutil import estimate_tokens
from deeprlm.trace.events import Event
from deeprlm.trace.jsonl import JsonlSink
from deeprlm.trace.recorder import Recorder, Sink, Trace
from deeprlm.usage import UsageMeter, UsageReport
from deeprlm_bench.example import Example

# Tokens kept free in a model's window for its reply, when deciding whether a prompt fits.
REPLY_RESERVE = 1024
# The settings that make up one example's budget: what a results folder holds fixed.
# A cell's wall clock is part of it: a map over hundreds of items with a model on a CPU may
# need longer than the library's default, and its sub-calls end with the cell.
BUDGET = (
    "max_iterations",
    "max_tokens",
    "max_usd",
    "timeout_s",
    "cell_timeout_s",
    "max_reply_tokens",
)


def budget_of(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in BUDGET}


@dataclass(frozen=True)
class Setup:
    model: LM
    sub_model: LM
    # The budget of each example and, for the methods on the engine, where code runs.
    settings: Settings = field(default_factory=Settings)
    # The root model's window in tokens; None when unknown (then every prompt is tried).
    window: int | None = None
    # Where a method on the engine writes the run's trace (JSONL), if anywhere.
    trace_path: Path | None = None
    # Shared beyond one example: each model's permits (a batch on a cluster), see
    # `deeprlm.engine.shared.Permits`.
    permits: Permits | None = None
    # Every event of every method's calls and runs, and a tap that sees their messages
    # (for trajectories): the runner's models come wrapped, a method's own models it wraps.
    on_event: Callable[[Event], None] | None = None
    tap: CallTap | None = None

    def own_model(self, lm: LM) -> LM:
        """A model a method makes itself (the oracle's), seen by the tap if there is one."""
        return self.tap.wrap(lm) if self.tap is not None else lm


@dataclass(frozen=True)
class Outcome:
    answer: str
    usage: UsageReport
    iterations: int = 0
    sub_calls: int = 0
    error: str | None = None


class Method(Protocol):
    name: str

    def run(self, example: Example, setup: Setup) -> Outcome: ...


def prompt_tokens(messages: Sequence[Message]) -> int:
    """The benchmark's token estimate of a prompt."""
    return sum(estimate_tokens(str(m.get("content") or "")) for m in messages)


class TooLong(LMError):
    """The prompt cannot fit the model's window: the method scores 0 on this example."""


def fits(tokens: int, window: int | None) -> bool:
    return window is None or tokens + REPLY_RESERVE <= window


def too_long_message(tokens: int, window: int | None) -> str:
    return (
        f"input does not fit the model's window: about {tokens:,} tokens plus "
        f"{REPLY_RESERVE:,} for the reply, window {window:,}"
    )


class WithinWindow(WrappedLM):
    """A model that refuses, before sending it, a prompt that cannot fit `window`; the
    model's own refusal (its count is the real one) becomes `TooLong` too."""

    def __init__(self, lm: LM, window: int | None) -> None:
        super().__init__(lm)
        self.window = window

    def wrap(self, lm: LM) -> LM:
        return WithinWindow(lm, self.window)

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        tokens = prompt_tokens(messages)
        if not fits(tokens, self.window):
            raise TooLong(too_long_message(tokens, self.window))
        try:
            return await super().acomplete(
                messages, tools=tools, max_tokens=max_tokens, schema=schema
            )
        except LMError as err:
            if "does not fit" in str(err):
                raise TooLong(str(err)) from err
            raise


def shared_state(
    setup: Setup,
    settings: Settings,
    trace: JsonlSink | None = None,
    tools: Mapping[str, Callable[..., Any]] | None = None,
) -> SharedState:
    """The state one example's calls share: the setup's model held to its window, the
    budget of `settings`, a fresh usage meter, the REPL's tools, and the trace file if one
    is kept."""
    model = WithinWindow(setup.model, setup.window)
    sinks: list[Sink] = [sink for sink in (trace, setup.on_event) if sink is not None]
    return SharedState(
        settings,
        model,
        model,
        recorder=Recorder(Trace(sinks)),
        usage=UsageMeter(),
        tools=tools,
        permits=setup.permits,
    )


class Calls:
    """Model calls for the prompt-based methods: the engine's metered call, held to the
    window. They are not traced to a file: only runs of the engine are."""

    def __init__(self, setup: Setup) -> None:
        self.shared = shared_state(setup, setup.settings)
        self.run_id = self.shared.recorder.new_id("run")
        self.count = 0

    def usage(self) -> UsageReport:
        return self.shared.usage.report()

    async def complete(self, messages: list[Message]) -> str:
        """One call; raises TooLong before calling when the prompt cannot fit, and a
        LimitError when the budget is spent."""
        completion = await self.shared.call_lm(
            self.shared.root_lm,
            messages,
            purpose="root",
            run_id=self.run_id,
            parent_id=self.run_id,
            prompt=str(messages[-1].get("content") or ""),
        )
        self.count += 1
        return completion.text
