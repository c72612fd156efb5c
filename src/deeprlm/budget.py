"""The limits a whole run tree shares, and the ledger that keeps token and USD budgets.

Token and USD budgets are kept by reservation. Before a call is sent it reserves its worst
case: its prompt (counted, see `deeprlm.tokens`) plus the most it may reply, priced at the
model's full input and output rates. The reply cap is part of the request, so the worst
case is real: a call whose full cap does not fit waits while other calls are in flight
(their unused reservations come back when they settle), and when nothing is in flight it
gets what is left, or is refused. A refusal trips the budget. After the reply the
reservation is settled: it is released and the real usage is in the meter. So however many
calls run at once, what the provider counts stays within the budget (as long as it counts
no more prompt tokens than were reserved; each model's reported counts calibrate later
estimates).

The budget is tripped once: the first limit reached is remembered and raised again at every
later check, so a run whose code swallows the error (`except Exception`) still stops at its
next turn. Iterations and depth are per run and live in the engine; everything here is
counted across the tree.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deeprlm.errors import (
    CostLimitError,
    LimitError,
    SubCallLimitError,
    TimeLimitError,
    TokenLimitError,
)
from deeprlm.lm.base import Completion, Message, ToolSpec
from deeprlm.settings import Settings
from deeprlm.tokens import TokenCounter
from deeprlm.usage import Price, UsageMeter

# The reply cap of a call under a token or USD budget when neither the settings nor the
# model name one: enough for a root turn's code or a sub-call's findings.
DEFAULT_REPLY_TOKENS = 8_192
# A call is not sent with less room than this to reply (unless its cap is smaller still):
# its prompt would be paid for a reply cut off after a few words.
MIN_REPLY_TOKENS = 64


@dataclass(frozen=True)
class Reservation:
    """What one call holds while in flight, and the reply cap it must be sent with."""

    prompt_tokens: int  # counted before sending
    max_tokens: int | None  # the reply cap for the request (None: the provider's default)
    tokens: int = 0  # held against a token budget: prompt + cap
    usd: float = 0.0  # held against a USD budget: both at full price


class Budget:
    def __init__(self, settings: Settings, usage: UsageMeter) -> None:
        self.settings = settings
        self.usage = usage
        self.counter = TokenCounter()
        self.started = time.monotonic()
        self.deadline = None if settings.timeout_s is None else self.started + settings.timeout_s
        self.sub_calls = 0
        self.tripped: LimitError | None = None
        self._held_tokens = 0
        self._held_usd = 0.0
        self._in_flight = 0
        self._settled: asyncio.Event | None = None  # set when a reservation is released
        # Windows (prompt + reply, in tokens) that providers said their models have.
        self.windows: dict[str, int] = {}

    def trip(self, error: LimitError) -> LimitError:
        if self.tripped is None:
            self.tripped = error
        return self.tripped

    def check(self) -> None:
        """Raises the LimitError of the first exhausted budget, if any."""
        if self.tripped is not None:
            raise self.tripped
        s = self.settings
        tokens, usd = self.usage.spent()
        if s.max_tokens is not None and tokens >= s.max_tokens:
            raise self.trip(
                TokenLimitError(f"token budget reached: {tokens:,} of {s.max_tokens:,} used")
            )
        if s.max_usd is not None and usd >= s.max_usd:
            raise self.trip(
                CostLimitError(f"cost budget reached: ${usd:.4f} of ${s.max_usd:.4f} spent")
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

    # --- reservations ------------------------------------------------------------------

    @property
    def metered(self) -> bool:
        """True when calls must reserve: a token or USD budget is set."""
        return self.settings.max_tokens is not None or self.settings.max_usd is not None

    def price_of(self, lm: Any) -> Price | None:
        if self.settings.max_usd is not None:
            return self.usage.prices.require(lm)
        return self.usage.prices.for_lm(lm)

    def reply_cap(self, lm: Any, prompt: int = 0, wanted: int | None = None) -> int | None:
        """The most a call to `lm` with a prompt of `prompt` tokens may reply, before the
        budget has its say: the setting, else under a budget the model's own cap (else
        DEFAULT_REPLY_TOKENS), narrowed to `wanted` when the call asks for less (a packed
        map's reply); never more than the model's window leaves, where known."""
        cap = self.settings.max_reply_tokens
        if wanted is not None:
            cap = wanted if cap is None else min(cap, wanted)
        if cap is None and self.metered:
            cap = getattr(lm, "default_max_tokens", None) or DEFAULT_REPLY_TOKENS
        window = self.windows.get(lm.name) or getattr(lm, "context_window", None)
        if cap is not None and window:
            cap = max(1, min(cap, window - prompt))
        return cap

    def learn_window(self, lm: Any, tokens: int) -> bool:
        """Remembers the window a provider said `lm` has. True if it was news."""
        if self.windows.get(lm.name) == tokens:
            return False
        self.windows[lm.name] = tokens
        return True

    async def reserve(
        self,
        lm: Any,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] | None = None,
        wanted: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Holds a call's worst case, waiting for calls in flight to settle if it does not
        fit yet. Raises the budget's LimitError (and trips it) if it cannot fit at all.
        `wanted` narrows the reply cap for this call (see `reply_cap`)."""
        self.check()
        prompt = self.counter.prompt(lm, messages, tools, schema)
        cap = self.reply_cap(lm, prompt, wanted)
        if not self.metered:
            self._in_flight += 1
            return Reservation(prompt, cap)
        assert cap is not None
        price = self.price_of(lm)
        least = min(cap, MIN_REPLY_TOKENS)
        while True:
            self.check()
            tokens, usd = self.usage.spent()
            now = self._room(prompt, price, tokens + self._held_tokens, usd + self._held_usd)
            if now >= cap:
                reply = cap
                break
            best = self._room(prompt, price, tokens, usd)
            if best >= least and self._in_flight:
                await self._wait_for_settle()
                continue
            if now >= least:
                reply = int(now)  # nothing in flight: this is all that is left (finite here)
                break
            raise self.trip(self._refusal(prompt, least, tokens, usd))
        reservation = Reservation(
            prompt,
            reply,
            prompt + reply,
            price.cost(prompt, reply) if price is not None else 0.0,
        )
        self._held_tokens += reservation.tokens
        self._held_usd += reservation.usd
        self._in_flight += 1
        return reservation

    def settle(self, lm: Any, reservation: Reservation, completion: Completion | None) -> None:
        """Releases a reservation once its call has ended (its usage, if any, is already in
        the meter) and learns from the provider's count of the prompt."""
        self._held_tokens -= reservation.tokens
        self._held_usd -= reservation.usd
        self._in_flight -= 1
        if completion is not None and not completion.estimated:
            self.counter.learn(lm, reservation.prompt_tokens, completion.input_tokens)
        if self._settled is not None:
            self._settled.set()  # wakes every waiter; each looks at the ledger again
            self._settled = None

    async def _wait_for_settle(self) -> None:
        if self._settled is None:
            self._settled = asyncio.Event()
        await self._settled.wait()

    def _room(self, prompt: int, price: Price | None, tokens: int, usd: float) -> float:
        """Reply tokens that fit after `prompt`, given what is spent or held."""
        room = math.inf
        s = self.settings
        if s.max_tokens is not None:
            room = s.max_tokens - tokens - prompt
        if s.max_usd is not None and price is not None:
            left = s.max_usd - usd - prompt * price.input / 1e6
            if left < 0 or usd >= s.max_usd:
                return -1
            if price.output > 0:
                room = min(room, math.floor(left / (price.output / 1e6)))
        return room

    def _refusal(self, prompt: int, least: int, tokens: int, usd: float) -> LimitError:
        s = self.settings
        need = f"the next call needs about {prompt:,} tokens for its prompt plus its reply"
        if s.max_tokens is not None and s.max_tokens - tokens - prompt < least:
            return TokenLimitError(
                f"token budget reached: {tokens:,} of {s.max_tokens:,} used; {need}"
            )
        return CostLimitError(f"cost budget reached: ${usd:.4f} of ${s.max_usd:.4f} spent; {need}")
