"""What every question of a batch shares around each model call: each model's concurrency
limit, and the batch's token and USD budget.

The engine asks for a permit around each provider call, then has each attempt's worst case
held against the batch's budget (`deeprlm.engine.shared.Permits`). In one process a permit
is a slot of an asyncio semaphore per model name and the budget a `Ledger`; across a Ray
cluster one small actor keeps both (`deeprlm.batch.ray_executor.PermitBroker`), with the
same `Ledger`.

The `Ledger` keeps the batch's budget by reservation, as `deeprlm.budget` keeps a run
tree's: an attempt holds its worst case (its prompt and its whole reply cap, at full price)
while in flight and is then charged what it really cost. An attempt that does not fit
beside those in flight waits for them to settle; one that would not fit even if nothing
were in flight is refused, and from then on every attempt is (the batch's budget is
reached: its running questions end at their limit, with their partial answers, and no new
question starts). So however many questions run at once, on however many machines, what
the providers count stays within the batch's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from deeprlm.budget import Reservation
from deeprlm.engine.shared import Tab
from deeprlm.errors import CostLimitError, LimitError, TokenLimitError

# Every refusal starts so: the driver reads it in a question's result to stop the batch.
BATCH_BUDGET_REACHED = "batch budget reached"


@dataclass(frozen=True)
class BatchBudget:
    """A batch's budget, and what the folder had spent before this run of it."""

    max_tokens: int | None = None
    max_usd: float | None = None
    tokens: int = 0
    usd: float = 0.0

    @property
    def limited(self) -> bool:
        return self.max_tokens is not None or self.max_usd is not None


@dataclass(frozen=True)
class Refusal:
    """Why an attempt may not be sent: `kind` is "tokens" or "usd"."""

    kind: str
    message: str

    def error(self) -> LimitError:
        kind = TokenLimitError if self.kind == "tokens" else CostLimitError
        return kind(self.message)


class Ledger:
    """A batch's token and USD budget, kept by reservation. One event loop uses it (the
    driver's, or the broker actor's)."""

    def __init__(self, budget: BatchBudget) -> None:
        self.budget = budget
        self.tokens = budget.tokens  # charged so far
        self.usd = budget.usd
        self.held: dict[str, tuple[int, float]] = {}  # ticket -> worst case in flight
        self.refusal: Refusal | None = None
        self._abandoned: set[str] = set()  # tickets given up while they waited
        self._settled: asyncio.Event | None = None

    async def reserve(self, ticket: str, tokens: int, usd: float) -> Refusal | None:
        """Holds `tokens` and `usd` for `ticket`, waiting while they do not fit beside the
        reservations in flight; the refusal if they never will."""
        while True:
            if ticket in self._abandoned:
                self._abandoned.discard(ticket)
                return None
            if self.refusal is not None:
                return self.refusal
            over = self._over(self.tokens + tokens, self.usd + usd)
            if over is not None:
                self.refusal = self._refuse(over, tokens, usd)
                return self.refusal
            held_tokens = sum(t for t, _ in self.held.values())
            held_usd = sum(u for _, u in self.held.values())
            if self._over(self.tokens + held_tokens + tokens, self.usd + held_usd + usd) is None:
                self.held[ticket] = (tokens, usd)
                return None
            if self._settled is None:
                self._settled = asyncio.Event()
            await self._settled.wait()

    def settle(self, ticket: str, tokens: int, usd: float) -> None:
        """Releases `ticket`'s reservation and charges what the attempt cost. A ticket still
        waiting is given up."""
        if self.held.pop(ticket, None) is None:
            self._abandoned.add(ticket)
        self.tokens += tokens
        self.usd += usd
        if self._settled is not None:
            # Every waiter looks again; the next wait makes a new event.
            self._settled.set()
            self._settled = None

    def settle_lost(self, ticket: str) -> None:
        """A reservation whose worker died: what the attempt cost is unknown, so it is
        charged its worst case."""
        held = self.held.get(ticket)
        self.settle(ticket, *(held or (0, 0.0)))

    def _over(self, tokens: int, usd: float) -> str | None:
        b = self.budget
        if b.max_tokens is not None and tokens > b.max_tokens:
            return "tokens"
        if b.max_usd is not None and usd > b.max_usd:
            return "usd"
        return None

    def _refuse(self, kind: str, tokens: int, usd: float) -> Refusal:
        b = self.budget
        if kind == "tokens":
            return Refusal(
                kind,
                f"{BATCH_BUDGET_REACHED}: {self.tokens:,} of {b.max_tokens:,} tokens used, "
                f"and a call may take {tokens:,} more",
            )
        return Refusal(
            kind,
            f"{BATCH_BUDGET_REACHED}: ${self.usd:.4f} of ${b.max_usd:.4f} spent, and a call "
            f"may cost ${usd:.4f} more",
        )


class LocalPermits:
    """The engine's `Permits` for the questions of one process."""

    def __init__(self, limit: int, budget: BatchBudget | None = None) -> None:
        self.limit = limit
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self.ledger = Ledger(budget) if budget is not None and budget.limited else None

    def hold(self, model: str) -> AbstractAsyncContextManager[object]:
        semaphore = self._semaphores.get(model)
        if semaphore is None:
            semaphore = self._semaphores[model] = asyncio.Semaphore(self.limit)
        return semaphore

    def reserve(
        self, model: str, reservation: Reservation, tab: Tab
    ) -> AbstractAsyncContextManager[object]:
        if self.ledger is None:
            return contextlib.nullcontext()
        return self._reserve(self.ledger, reservation, tab)

    @asynccontextmanager
    async def _reserve(
        self, ledger: Ledger, reservation: Reservation, tab: Tab
    ) -> AsyncIterator[None]:
        ticket = uuid.uuid4().hex
        try:
            refusal = await ledger.reserve(ticket, reservation.tokens, reservation.usd)
        except BaseException:
            ledger.settle(ticket, 0, 0.0)  # cancelled while it waited: nothing was sent
            raise
        if refusal is not None:
            raise refusal.error()
        try:
            yield
        finally:
            ledger.settle(ticket, tab.tokens, tab.usd)
