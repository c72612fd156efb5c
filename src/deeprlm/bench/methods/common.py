"""What every method shares: the `Setup` it runs under (models, budget, window), the
`Outcome` it returns, and the metered, budget-checked model call of the prompt-based ones.

All methods get the same models and the same budget, so that the comparison is fair: the
budget's token, dollar and time limits hold for the whole of one example, whichever method
spends them, and `max_iterations` bounds the turns of every agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from deeprlm.bench.example import Example
from deeprlm.bench.tokens import count_tokens
from deeprlm.budget import Budget
from deeprlm.errors import LMError
from deeprlm.lm.base import LM, Completion, Message
from deeprlm.lm.provider import Deadline, RetryPolicy, call_with_retries
from deeprlm.settings import Settings
from deeprlm.usage import UsageMeter, UsageReport

# Tokens kept free in a model's window for its reply, when deciding whether a prompt fits.
REPLY_RESERVE = 1024


@dataclass(frozen=True)
class Limits:
    """The budget of one example, the same for every method."""

    max_iterations: int = 20
    max_tokens: int | None = None
    max_usd: float | None = None
    timeout_s: float | None = None
    max_reply_tokens: int | None = None

    def engine_settings(self) -> dict[str, Any]:
        return asdict(self)  # each field is the engine setting of the same name


@dataclass(frozen=True)
class Setup:
    model: LM
    sub_model: LM
    limits: Limits = field(default_factory=Limits)
    # The root model's window in tokens; None when unknown (then every prompt is tried).
    window: int | None = None
    # The REPL kind of the engine-based methods; None: the engine's default.
    repl: str | None = None
    # Where an engine-based method writes the run's trace (JSONL), if anywhere.
    trace_path: Path | None = None

    def engine_settings(self) -> dict[str, Any]:
        settings = self.limits.engine_settings()
        return settings if self.repl is None else {**settings, "repl": self.repl}


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


def window_of(lm: LM) -> int | None:
    window = getattr(lm, "context_window", None)
    return int(window) if window else None


def prompt_tokens(messages: Sequence[Message]) -> int:
    """The benchmark's token estimate of a prompt (see `deeprlm.bench.tokens`)."""
    return sum(count_tokens(str(m.get("content") or "")) for m in messages)


class TooLong(Exception):
    """The prompt cannot fit the model's window: the method scores 0 on this example."""


def fits(tokens: int, window: int | None) -> bool:
    return window is None or tokens + REPLY_RESERVE <= window


def too_long_message(tokens: int, window: int | None) -> str:
    return (
        f"input does not fit the model's window: about {tokens:,} tokens plus "
        f"{REPLY_RESERVE:,} for the reply, window {window:,}"
    )


class Caller:
    """Model calls for the prompt-based methods, metered and held to the example's budget
    exactly as the engine holds an RLM to it."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.usage = UsageMeter()
        limits = setup.limits
        self.budget = Budget(
            Settings(
                max_tokens=limits.max_tokens,
                max_usd=limits.max_usd,
                timeout_s=limits.timeout_s,
            ),
            self.usage,
        )
        self.calls = 0

    def complete(self, messages: list[Message], lm: LM | None = None) -> str:
        """One call; raises TooLong before calling when the prompt cannot fit, and a
        LimitError when the budget is spent."""
        tokens = prompt_tokens(messages)
        if not fits(tokens, self.setup.window):
            raise TooLong(too_long_message(tokens, self.setup.window))
        self.budget.check()
        lm = lm or self.setup.model
        try:
            completion = asyncio.run(self._with_retries(lm, messages))
        except LMError as err:
            # The model's own count is the real one; it may disagree with the estimate.
            if "does not fit" in str(err):
                raise TooLong(str(err)) from err
            raise
        self.usage.record(completion)
        self.calls += 1
        return completion.text

    async def _with_retries(self, lm: LM, messages: list[Message]) -> Completion:
        """The engine's retry loop (429s, 5xx, empty replies) around the sync call."""
        cap = self.setup.limits.max_reply_tokens
        end = self.budget.deadline
        deadline = None if end is None else Deadline(end, "run", "the example's time budget")
        return await call_with_retries(
            lambda: asyncio.to_thread(lm.complete, messages, max_tokens=cap),
            model=lm.name,
            policy=RetryPolicy(),
            deadline=lambda: deadline,
            on_retry=lambda message, wait_s: None,
            max_tokens=lambda: cap,
        )
