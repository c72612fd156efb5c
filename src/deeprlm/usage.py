"""Tokens, calls and dollars per model, and the price table that turns tokens into dollars.

Usage is added up in one way, a `UsageTally` of `ModelUsage` per model: the engine's
`UsageMeter` (one per run tree: root, sub-calls, child runs) keeps one from the providers'
replies, and the trace's readers (the live console, the viewer) keep one from the events.
`report()` freezes a tally into a `UsageReport`. Prices are USD per million tokens; users
extend the table with `register_price` or `RLM(prices=...)`. A cost the provider reports
itself wins over the table.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deeprlm.lm.base import Completion


@dataclass(frozen=True)
class Price:
    """USD per million tokens. `cached_input` applies to prompt tokens served from cache."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        cached_rate = self.input if self.cached_input is None else self.cached_input
        fresh = max(0, input_tokens - cached_tokens)
        return (
            fresh * self.input + cached_tokens * cached_rate + output_tokens * self.output
        ) / 1e6


PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.0, 0.125),
    "gpt-5-mini": Price(0.25, 2.0, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "gpt-4.1": Price(2.0, 8.0, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-4o": Price(2.50, 10.0, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "o3": Price(2.0, 8.0, 0.50),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "claude-opus-4": Price(15.0, 75.0, 1.50),
    "claude-sonnet-4": Price(3.0, 15.0, 0.30),
    "claude-haiku-4-5": Price(1.0, 5.0, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.0, 0.08),
}


def register_price(model: str, price: Price) -> None:
    """Add or replace a model's price for every run in this process."""
    PRICES[model] = price


class PriceTable:
    """Looks a model up by exact name, then by the longest known prefix, so that dated
    names (`gpt-5-mini-2025-08-07`) and routed names (`openai/gpt-5`) find their price."""

    def __init__(self, extra: Mapping[str, Price] | None = None) -> None:
        self._prices = {**PRICES, **(extra or {})}

    def lookup(self, model: str) -> Price | None:
        name = model.rsplit("/", 1)[-1]
        for candidate in (model, name):
            if candidate in self._prices:
                return self._prices[candidate]
        matches = [key for key in self._prices if name.startswith(key)]
        return self._prices[max(matches, key=len)] if matches else None

    def cost(self, completion: Completion) -> float:
        if completion.cost_usd is not None:
            return completion.cost_usd
        price = self.lookup(completion.model)
        if price is None:
            return 0.0
        return price.cost(
            completion.input_tokens, completion.output_tokens, completion.cached_tokens
        )


@dataclass(frozen=True)
class ModelUsage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: ModelUsage) -> ModelUsage:
        return ModelUsage(
            self.calls + other.calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.usd + other.usd,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class UsageReport:
    by_model: dict[str, ModelUsage] = field(default_factory=dict)

    @property
    def total(self) -> ModelUsage:
        return sum(self.by_model.values(), ModelUsage())

    def to_dict(self) -> dict[str, object]:
        return {
            "by_model": {name: u.to_dict() for name, u in self.by_model.items()},
            "total": self.total.to_dict(),
        }


class UsageTally:
    """Usage per model, added up call by call."""

    def __init__(self) -> None:
        self.by_model: dict[str, ModelUsage] = {}

    def add(self, model: str, usage: ModelUsage) -> None:
        self.by_model[model] = self.by_model.get(model, ModelUsage()) + usage

    @property
    def total(self) -> ModelUsage:
        return sum(self.by_model.values(), ModelUsage())

    def report(self) -> UsageReport:
        return UsageReport(dict(self.by_model))


class UsageMeter:
    """Accumulates usage from every call in a run tree. Safe to use from any thread."""

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices or PriceTable()
        self._lock = threading.Lock()
        self._tally = UsageTally()

    def record(self, completion: Completion) -> float:
        """Adds one call; returns its cost in USD."""
        usd = self.prices.cost(completion)
        call = ModelUsage(
            1,
            completion.input_tokens,
            completion.output_tokens,
            completion.cached_tokens,
            usd,
        )
        with self._lock:
            self._tally.add(completion.model, call)
        return usd

    def report(self) -> UsageReport:
        with self._lock:
            return self._tally.report()
