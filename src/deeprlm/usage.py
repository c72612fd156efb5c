"""Tokens, calls and dollars per model, and the price table that turns tokens into dollars.

Usage is added up in one way, a `UsageTally` of `ModelUsage` per model: the engine's
`UsageMeter` (one per run tree: root, sub-calls, child runs) keeps one from the providers'
replies, and the trace's readers (the live console, the viewer) keep one from the events.
`report()` freezes a tally into a `UsageReport`. Prices are USD per million tokens; users
extend the table with `register_price`, `RLM(prices=...)` (a dict, or the path of a TOML
prices file, see `load_prices`) or `--price MODEL=IN,OUT`. A cost the provider reports
itself wins over the table. Usage the provider did not report is counted on this side and
marked estimated.
"""

from __future__ import annotations

import math
import os
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeprlm.errors import InputError

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


# How a user can give a price, for errors that ask for one.
PRICE_HELP = (
    "give its price with --price {model}=IN,OUT (USD per million input and output tokens) "
    "or a prices file (--prices FILE.toml; in Python, RLM(prices=...))"
)


def _rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number of USD per million tokens, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{what} must be a finite number of 0 or more, got {value!r}")
    return float(value)


def parse_price(spec: str) -> tuple[str, Price]:
    """`"MODEL=IN,OUT"` or `"MODEL=IN,OUT,CACHED_IN"` (USD per million tokens)."""
    model, sep, rates = spec.rpartition("=")
    parts = rates.split(",")
    if not sep or not model.strip() or len(parts) not in (2, 3):
        raise InputError(f"bad price {spec!r}: use MODEL=IN,OUT in USD per million tokens")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"bad price {spec!r}: IN and OUT must be numbers") from None
    names = ("input", "output", "cached input")
    values = [
        _rate(v, f"price {spec!r}: the {n} rate")
        for v, n in zip(numbers, names[: len(numbers)], strict=True)
    ]
    return model.strip(), Price(*values)


_PRICE_KEYS = {"input", "output", "cached_input"}


def load_prices(path: str | os.PathLike[str]) -> dict[str, Price]:
    """Reads a TOML prices file: one table per model, rates in USD per million tokens.

    ["qwen2.5-72b-instruct"]
    input = 0.9
    output = 0.9
    cached_input = 0.45   # optional
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"prices file not found: {path}") from None
    except OSError as err:
        raise InputError(f"cannot read prices file {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"prices file {path} is not valid TOML: {err}") from None
    prices: dict[str, Price] = {}
    for model, table in data.items():
        where = f"prices file {path}, model {model!r}"
        if not isinstance(table, dict):
            raise InputError(f"{where}: expected a table with input and output rates")
        unknown = sorted(set(table) - _PRICE_KEYS)
        missing = sorted({"input", "output"} - set(table))
        if unknown or missing:
            wrong = f"unknown key(s) {', '.join(unknown)}" if unknown else ""
            absent = f"missing {', '.join(missing)}" if missing else ""
            raise InputError(f"{where}: {'; '.join(x for x in (wrong, absent) if x)}")
        cached = table.get("cached_input")
        prices[model] = Price(
            _rate(table["input"], f"{where}: input"),
            _rate(table["output"], f"{where}: output"),
            None if cached is None else _rate(cached, f"{where}: cached_input"),
        )
    return prices


def as_prices(prices: Mapping[str, Price] | str | os.PathLike[str] | None) -> dict[str, Price]:
    """`RLM(prices=...)`: a mapping of model -> Price, or the path of a prices file."""
    if prices is None:
        return {}
    if isinstance(prices, (str, os.PathLike)):
        return load_prices(Path(prices))
    for model, price in prices.items():
        if not isinstance(price, Price):
            raise InputError(f"prices: {model!r} must map to a Price, not {price!r}")
    return dict(prices)


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

    def for_lm(self, lm: Any) -> Price | None:
        """An LM's price: the table's, else the one the LM declares (a model that runs in
        process costs nothing)."""
        price = self.lookup(lm.name)
        return price if price is not None else getattr(lm, "price", None)

    def require(self, lm: Any) -> Price:
        """The price of `lm` for a USD budget, which cannot be kept without one."""
        price = self.for_lm(lm)
        if price is None:
            raise InputError(
                f"a USD budget needs the price of model {lm.name!r}: "
                + PRICE_HELP.format(model=lm.name)
            )
        return price

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
    """Calls paid for and what they cost; and, apart, the calls the sub-call cache served
    (`cache_hits`) with the tokens and USD they would have cost. `cached_tokens` is the
    provider's own prompt cache, inside calls that were paid for."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    usd: float = 0.0
    # Calls whose usage was counted here, not reported: the provider sent none, or the call
    # was abandoned in flight (a deadline, a cancelled run) and is charged its prompt.
    estimated_calls: int = 0
    cache_hits: int = 0
    saved_tokens: int = 0
    saved_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def estimated(self) -> bool:
        return self.estimated_calls > 0

    def __add__(self, other: ModelUsage) -> ModelUsage:
        return ModelUsage(
            self.calls + other.calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.usd + other.usd,
            self.estimated_calls + other.estimated_calls,
            self.cache_hits + other.cache_hits,
            self.saved_tokens + other.saved_tokens,
            self.saved_usd + other.saved_usd,
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
            1 if completion.estimated else 0,
        )
        with self._lock:
            self._tally.add(completion.model, call)
        return usd

    def spent(self) -> tuple[int, float]:
        """Tokens and USD across every model so far."""
        total = self.report().total
        return total.tokens, total.usd

    def record_hit(self, completion: Completion) -> float:
        """Adds one call the sub-call cache served: free, and counted apart. Returns the USD
        it saved."""
        saved = self.prices.cost(completion)
        hit = ModelUsage(
            cache_hits=1,
            saved_tokens=completion.input_tokens + completion.output_tokens,
            saved_usd=saved,
        )
        with self._lock:
            self._tally.add(completion.model, hit)
        return saved

    def report(self) -> UsageReport:
        with self._lock:
            return self._tally.report()
