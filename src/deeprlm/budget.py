"""The limits a whole run tree shares, checked before each model call.

The budget is tripped once: the first limit reached is remembered and raised again at every
later check, so a run whose code swallows the error (`except Exception`) still stops at its
next turn. Iterations and depth are per run and live in the engine; everything here is
counted across the tree.
"""

from __future__ import annotations

import time

from deeprlm.errors import (
    CostLimitError,
    LimitError,
    SubCallLimitError,
    TimeLimitError,
    TokenLimitError,
)
from deeprlm.settings import Settings
from deeprlm.usage import UsageMeter


class Budget:
    def __init__(self, settings: Settings, usage: UsageMeter) -> None:
        self.settings = settings
        self.usage = usage
        self.started = time.monotonic()
        self.deadline = None if settings.timeout_s is None else self.started + settings.timeout_s
        self.sub_calls = 0
        self.tripped: LimitError | None = None

    def trip(self, error: LimitError) -> LimitError:
        if self.tripped is None:
            self.tripped = error
        return self.tripped

    def check(self) -> None:
        """Raises the LimitError of the first exhausted budget, if any."""
        if self.tripped is not None:
            raise self.tripped
        s = self.settings
        total = self.usage.report().total
        if s.max_tokens is not None and total.tokens >= s.max_tokens:
            raise self.trip(
                TokenLimitError(f"token budget reached: {total.tokens:,} of {s.max_tokens:,} used")
            )
        if s.max_usd is not None and total.usd >= s.max_usd:
            raise self.trip(
                CostLimitError(f"cost budget reached: ${total.usd:.4f} of ${s.max_usd:.4f} spent")
            )
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self.trip(self.time_error())

    def take_sub_call(self) -> None:
        self.check()
        limit = self.settings.max_sub_calls
        if limit is not None and self.sub_calls >= limit:
            raise self.trip(SubCallLimitError(f"sub-call budget reached: {limit:,} sub-calls made"))
        self.sub_calls += 1

    def check_sub_calls(self, count: int) -> None:
        """Before a batch creates anything: raises (and trips) when `count` more sub-calls
        would go past the budget."""
        self.check()
        limit = self.settings.max_sub_calls
        if limit is not None and self.sub_calls + count > limit:
            left = max(0, limit - self.sub_calls)
            raise self.trip(
                SubCallLimitError(
                    f"sub-call budget reached: a batch of {count:,} needs more than the "
                    f"{left:,} sub-calls left of {limit:,}"
                )
            )

    def time_error(self) -> TimeLimitError:
        return TimeLimitError(f"time budget reached: {self.settings.timeout_s:g}s")

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
