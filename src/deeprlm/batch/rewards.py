"""Rewards: the benchmark's scorers, by name, for questions that carry a gold answer.

The scorers live with the benchmarks (`deeprlm_bench.scoring.SCORERS`: exact, contains,
number, oolong, comparison, choice, pairs). Like the `bench` command, they are loaded by
name only when a batch runs, so the library never imports the benchmarks.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

SCORERS_MODULE = "deeprlm_bench.scoring"

Scorer = Callable[[Any, str], float]


@functools.cache
def scorers() -> Mapping[str, Scorer]:
    """Every scorer by name; none when the benchmarks are not installed."""
    try:
        module = importlib.import_module(SCORERS_MODULE)
    except ImportError:
        return {}
    return dict(module.SCORERS)


def reward(scorer: str | None, gold: Any, answer: str) -> float | None:
    """The answer's score against `gold`, from 0 to 1; None without a scorer."""
    if scorer is None:
        return None
    if not answer:
        return 0.0
    try:
        return float(scorers()[scorer](gold, answer))
    except (TypeError, ValueError):  # a gold answer of the wrong shape for its scorer
        return 0.0
