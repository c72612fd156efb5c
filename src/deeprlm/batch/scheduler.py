"""The driver's loop: which job runs when, on any executor.

It keeps the executor full (up to its capacity), loads each shared input once and hands it
over once (`Executor.share`), releasing it when the last job needing it is done; runs a job
again when its worker was lost, up to `retries` times, saying so each time; and reports
every job's end, whatever it was, through `on_outcome`: nothing is dropped silently.

`stop()` lets running jobs finish and starts no new one (a batch budget reached);
`interrupt()` also cancels the running ones (Ctrl-C). Jobs never started are left pending.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from deeprlm.batch.executors import Cancelled, Executor, Job, JobFailed, WorkerLost
from deeprlm.errors import DeepRLMError


@dataclass(frozen=True)
class Item:
    job: Job
    # Jobs with the same key share one input, made by `load` (in a thread) the first time.
    shared_key: Hashable | None = None
    load: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """How one job ended: `value` (what it returned), `cancelled` (with its partial
    result, possibly None) or `error` (it could not run, or its workers kept dying)."""

    value: Any = None
    cancelled: bool = False
    partial: Any = None
    error: str | None = None
    attempts: int = 0
    failures: tuple[str, ...] = ()


@dataclass
class _Running:
    item: Item
    attempt: int
    failures: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        executor: Executor,
        *,
        retries: int,
        on_outcome: Callable[[Item, Outcome], None],
        on_start: Callable[[Item], None] | None = None,
        on_retry: Callable[[Item, str, int], None] | None = None,
    ) -> None:
        self.executor = executor
        self.retries = retries
        self.on_outcome = on_outcome
        self.on_start = on_start
        self.on_retry = on_retry
        self.stopped = False
        self.interrupted = False
        self.pending: deque[_Running] = deque()
        self._running: dict[asyncio.Task[Any], _Running] = {}
        self._wake = asyncio.Event()
        self._uses: Counter[Hashable] = Counter()
        self._shared: dict[Hashable, Any] = {}  # key -> handle, or the error loading it

    def stop(self) -> None:
        self.stopped = True
        self._wake.set()

    def interrupt(self) -> None:
        self.stopped = self.interrupted = True
        for task in self._running:
            task.cancel()
        self._wake.set()

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self, items: Sequence[Item]) -> None:
        self.pending.extend(_Running(item, 1) for item in items)
        self._uses.update(item.shared_key for item in items if item.shared_key is not None)
        try:
            while self._running or (self.pending and not self.stopped):
                while self.pending and not self.stopped and self.capacity_left():
                    await self._start(self.pending.popleft())
                if not self._running:
                    continue
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    done, _ = await asyncio.wait(
                        [*self._running, waker], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    waker.cancel()
                for task in done:
                    if task is not waker:
                        self._settle(task, self._running.pop(task))
        finally:
            # Cancelled from outside: the running jobs go with it.
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
            self._shared.clear()

    def capacity_left(self) -> bool:
        return len(self._running) < self.executor.capacity

    async def _start(self, entry: _Running) -> None:
        item = entry.item
        shared = None
        if item.shared_key is not None and item.load is not None:
            shared = await self._share(item.shared_key, item.load)
            if isinstance(shared, BaseException):
                self._finish(item, Outcome(error=str(shared), attempts=0))
                return
        if self.stopped:  # interrupted while the input loaded
            self.pending.appendleft(entry)
            return
        task = asyncio.ensure_future(self.executor.run(item.job, shared, entry.attempt))
        self._running[task] = entry
        if self.on_start is not None and entry.attempt == 1:
            self.on_start(item)

    async def _share(self, key: Hashable, load: Callable[[], Any]) -> Any:
        if key not in self._shared:
            try:
                value = await asyncio.to_thread(load)
                self._shared[key] = await self.executor.share(value)
            except DeepRLMError as err:
                self._shared[key] = err
            except Exception as err:  # one input that cannot be made fails its jobs only
                self._shared[key] = JobFailed(f"{type(err).__name__}: {err}")
        return self._shared[key]

    def _settle(self, task: asyncio.Task[Any], entry: _Running) -> None:
        item, attempt = entry.item, entry.attempt
        failures = tuple(entry.failures)
        if task.cancelled():
            self._finish(item, Outcome(cancelled=True, attempts=attempt, failures=failures))
            return
        error = task.exception()
        if error is None:
            self._finish(item, Outcome(value=task.result(), attempts=attempt, failures=failures))
        elif isinstance(error, Cancelled):
            outcome = Outcome(
                cancelled=True, partial=error.partial, attempts=attempt, failures=failures
            )
            self._finish(item, outcome)
        elif isinstance(error, WorkerLost):
            failures += (f"attempt {attempt}: {error}",)
            if self.stopped:
                # Stopped meanwhile: not run again now, and not done, so a resumed batch
                # runs it.
                self._finish(item, Outcome(cancelled=True, attempts=attempt, failures=failures))
            elif attempt <= self.retries:
                if self.on_retry is not None:
                    self.on_retry(item, str(error), attempt)
                # Ahead of the queue, so that a retried job does not wait behind the rest.
                self.pending.appendleft(_Running(item, attempt + 1, list(failures)))
            else:
                lost = f"its worker was lost {attempt} time(s); last: {error}"
                self._finish(item, Outcome(error=lost, attempts=attempt, failures=failures))
        elif isinstance(error, JobFailed):
            self._finish(item, Outcome(error=str(error), attempts=attempt, failures=failures))
        else:
            message = f"{type(error).__name__}: {error}"
            self._finish(item, Outcome(error=message, attempts=attempt, failures=failures))

    def _finish(self, item: Item, outcome: Outcome) -> None:
        if item.shared_key is not None:
            self._uses[item.shared_key] -= 1
            if self._uses[item.shared_key] <= 0:
                # The last job needing it is done: the executor may free it.
                self._shared.pop(item.shared_key, None)
        self.on_outcome(item, outcome)
