"""The `Example` record every task family produces, and the `Task` protocol they implement.

An example is one benchmark item: the context (a text, a list of documents or a dict of
files — the shapes the engine loads), the question, the exact gold answer, and `info`, the
question's parameters in structured form. `info` is what a scripted oracle policy reads in
place of understanding the question; it never holds the gold answer itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from deeprlm.context import as_text
from deeprlm.errors import InputError
from deeprlm.repl.base import ContextValue
from deeprlm.textutil import estimate_tokens
from deeprlm_bench.tokens import format_length


@dataclass(frozen=True)
class Example:
    task: str
    length: int  # the target length in tokens
    seed: int
    context: ContextValue
    query: str
    gold: Any
    info: Mapping[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The context as one text, the way a prompt-based method shows it to a model."""
        return as_text(self.context)

    def tokens(self) -> int:
        return estimate_tokens(self.text())


class Task(Protocol):
    """A task family (or one variant of it): a deterministic generator and its scorer."""

    @property
    def name(self) -> str: ...

    # What the family measures, for `deeprlm bench run --help` and the report.
    @property
    def description(self) -> str: ...

    def generate(self, seed: int, length: int) -> Example: ...

    def score(self, example: Example, answer: str) -> float: ...


def example_seed(seed: int, task: str, length: int, index: int) -> int:
    """The seed of one grid cell's example: every method at that cell sees the same example,
    and adding tasks or lengths to a run does not change the examples already there."""
    digest = hashlib.sha256(f"{seed}/{task}/{length}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def too_short(task: str, minimum: int) -> InputError:
    return InputError(
        f"{task} needs a length of at least {format_length(minimum)} tokens "
        f"({minimum:,}) to hold its question's documents"
    )
