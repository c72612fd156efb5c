"""Folding a trace's events into state, one event at a time: what the live console
(`deeprlm.trace.progress`) and the viewer (`deeprlm.trace.tree`) share.

`Fold.apply(event)` does what every reader of a trace needs, once: it tallies each model
call's usage per model (`usage`, and `failed` calls), remembers which run each id belongs
to (`owner`, so a child run can be placed under its parent run even when its parent link
names a batch), and then hands the event to the subclass's handler for its type, a method
named `on_` + the event's type (`on_run_started`, ...), if it has one. A subclass may turn
an event away first (`accepts`), as the viewer does with damaged ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

from deeprlm.trace.events import EVENT_TYPES, Event, LMCallEnded
from deeprlm.usage import ModelUsage, UsageTally


class Fold:
    _handlers: ClassVar[dict[type[Event], Callable[[Any, Any], None]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = {
            event_cls: handler
            for event_cls in EVENT_TYPES.values()
            if (handler := getattr(cls, f"on_{event_cls.type}", None)) is not None
        }

    def __init__(self) -> None:
        self.usage = UsageTally()
        self.failed: Counter[str] = Counter()  # failed model calls, per model
        self.owner: dict[str, str] = {}  # id -> the run it belongs to
        self.last_t = 0.0

    def accepts(self, event: Event) -> bool:
        return True

    def apply(self, event: Event) -> None:
        if not self.accepts(event):
            return
        self.last_t = max(self.last_t, event.t)
        self.owner.setdefault(event.id, event.run_id)
        if isinstance(event, LMCallEnded):
            model = event.model or "?"
            if event.cache:
                usage = ModelUsage(
                    cache_hits=1, saved_tokens=event.saved_tokens, saved_usd=event.saved_usd
                )
            else:
                usage = ModelUsage(
                    1,
                    event.input_tokens,
                    event.output_tokens,
                    event.cached_tokens,
                    event.usd,
                    1 if event.estimated else 0,
                )
            self.usage.add(model, usage)
            self.failed[model] += event.error is not None
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(self, event)

    def run_of(self, id: str | None) -> str | None:
        """The run that `id` (a run, a cell, a batch, a call) belongs to."""
        return self.owner.get(id) if id is not None else None
