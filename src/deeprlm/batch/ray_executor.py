"""Jobs on a Ray cluster: each job is a Ray task, a shared input one object in the object
store, and each model's concurrency limit and the batch's budget one small actor that
every worker asks.

- `RayExecutor` connects to a cluster (`address`), or starts a local one for the batch and
  stops it at the end. A local cluster it starts listens on 127.0.0.1 only.
- A job is a task with no retries of Ray's own: the driver retries a job whose worker died
  (`WorkerLost`), so that each loss is counted and reported, and frees the permits the dead
  worker held.
- `PermitBroker` hands out permits, first come first served, per model, and keeps the
  batch's budget (`deeprlm.batch.permits.Ledger`); `RayPermits` is the engine's `Permits`
  on a worker, asking the broker around each provider call. A worker that dies is charged
  the worst case of the calls it had in flight.

This is the only module that imports ray; it is loaded only for `--executor ray`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlparse

from deeprlm.batch.executors import Cancelled, JobFailed, WorkerLost
from deeprlm.batch.permits import BatchBudget, Ledger, Refusal
from deeprlm.blocking import run_blocking
from deeprlm.budget import Reservation
from deeprlm.engine.shared import Tab
from deeprlm.errors import InputError

INSTALL = "pip install 'deeprlm[ray]'"
# Ray reads this when imported: off, a local cluster binds 127.0.0.1 (and is one node).
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_TIMEOUT_S = 5.0
# Waiting acquisitions the broker holds at once: one per model call in flight or queued.
BROKER_CONCURRENCY = 10_000
# After Ctrl-C, how long a cancelled task may take to hand back what it had done.
CANCEL_GRACE_S = 5.0


def import_ray(local_only: bool = False) -> Any:
    if local_only:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    try:
        import ray
    except ImportError:
        raise InputError(f"--executor ray needs the ray extra: {INSTALL}") from None
    return ray


class PermitBroker:
    """One per batch, as a Ray actor: `limit` permits per model, first come first served,
    and the batch's budget. Each permit and reservation is a ticket of a holder (one attempt
    at one job); `release_holder` frees what a worker that died still held."""

    def __init__(self, limit: int, budget: BatchBudget | None = None) -> None:
        self.limit = limit
        self.ledger = Ledger(budget or BatchBudget())
        self.reserved: dict[str, set[str]] = {}  # holder -> its reservations' tickets
        self.in_use: dict[str, set[str]] = {}
        self.waiting: dict[str, OrderedDict[str, asyncio.Future[None]]] = {}
        self.tickets: dict[str, tuple[str, str]] = {}  # ticket -> (model, holder)
        self.holders: dict[str, set[str]] = {}
        self.peak: dict[str, int] = {}

    async def acquire(self, model: str, holder: str, ticket: str) -> None:
        self.tickets[ticket] = (model, holder)
        self.holders.setdefault(holder, set()).add(ticket)
        used = self.in_use.setdefault(model, set())
        queue = self.waiting.setdefault(model, OrderedDict())
        if len(used) < self.limit and not queue:
            self._grant(model, ticket)
            return
        future = asyncio.get_running_loop().create_future()
        queue[ticket] = future
        await future

    def _grant(self, model: str, ticket: str) -> None:
        used = self.in_use[model]
        used.add(ticket)
        self.peak[model] = max(self.peak.get(model, 0), len(used))

    async def release(self, ticket: str) -> None:
        """Gives a permit back, or gives up waiting for one."""
        model, holder = self.tickets.pop(ticket, ("", ""))
        if not model:
            return
        self.holders.get(holder, set()).discard(ticket)
        future = self.waiting[model].pop(ticket, None)
        if future is not None:
            future.cancel()
            return
        self.in_use[model].discard(ticket)
        queue = self.waiting[model]
        while queue and len(self.in_use[model]) < self.limit:
            waiter, future = queue.popitem(last=False)
            if not future.done():
                self._grant(model, waiter)
                future.set_result(None)

    async def reserve(self, holder: str, ticket: str, tokens: int, usd: float) -> Refusal | None:
        self.reserved.setdefault(holder, set()).add(ticket)
        refusal = await self.ledger.reserve(ticket, tokens, usd)
        if refusal is not None:
            self.reserved[holder].discard(ticket)
        return refusal

    async def settle(self, holder: str, ticket: str, tokens: int, usd: float) -> None:
        mine = self.reserved.get(holder, set())
        if ticket in mine:
            mine.discard(ticket)
            self.ledger.settle(ticket, tokens, usd)
        else:
            # Not (or no longer) this holder's: given up before its reservation began, or
            # already charged its worst case as lost. Nothing more is charged.
            self.ledger.settle(ticket, 0, 0.0)

    async def release_holder(self, holder: str) -> None:
        for ticket in list(self.holders.pop(holder, ())):
            await self.release(ticket)
        for ticket in self.reserved.pop(holder, ()):
            self.ledger.settle_lost(ticket)

    async def stats(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "peak": dict(self.peak),
            "in_use": {model: len(used) for model, used in self.in_use.items()},
            "waiting": {model: len(queue) for model, queue in self.waiting.items()},
            "tokens": self.ledger.tokens,
            "usd": self.ledger.usd,
            "refusal": self.ledger.refusal.message if self.ledger.refusal else None,
        }


class RayPermits:
    """The engine's `Permits` on a Ray worker: a permit from the broker per provider call."""

    def __init__(self, broker: Any, holder: str, budgeted: bool = False) -> None:
        self.broker = broker
        self.holder = holder
        self.budgeted = budgeted  # else no reservation needs the broker

    def hold(self, model: str) -> AbstractAsyncContextManager[object]:
        return self._hold(model)

    @asynccontextmanager
    async def _hold(self, model: str) -> AsyncIterator[None]:
        ticket = uuid.uuid4().hex
        try:
            await self.broker.acquire.remote(model, self.holder, ticket)
        except BaseException:
            # Cancelled while waiting, or granted just as it was: either way, given back.
            self.broker.release.remote(ticket)
            raise
        try:
            yield
        finally:
            self.broker.release.remote(ticket)

    def reserve(
        self, model: str, reservation: Reservation, tab: Tab
    ) -> AbstractAsyncContextManager[object]:
        if not self.budgeted:
            return contextlib.nullcontext()
        return self._reserve(reservation, tab)

    @asynccontextmanager
    async def _reserve(self, reservation: Reservation, tab: Tab) -> AsyncIterator[None]:
        ticket = uuid.uuid4().hex
        try:
            refusal = await self.broker.reserve.remote(
                self.holder, ticket, reservation.tokens, reservation.usd
            )
        except BaseException:
            # Cancelled while it waited (nothing was sent): given up, or given back.
            self.broker.settle.remote(self.holder, ticket, 0, 0.0)
            raise
        if refusal is not None:
            raise refusal.error()
        try:
            yield
        finally:
            # Awaited: by the time the task ends its charges are in, and what the driver's
            # `release_holder` finds then was lost with the worker.
            await self.broker.settle.remote(self.holder, ticket, tab.tokens, tab.usd)


def execute(job: Any, shared: Any, broker: Any, holder: str, budgeted: bool = False) -> Any:
    """The Ray task: one job on a worker, its model calls under the broker's permits."""
    return run_blocking(_cancellable(job.run(shared, RayPermits(broker, holder, budgeted))))


async def _cancellable(job: Coroutine[Any, Any, Any]) -> Any:
    """Runs `job` so that Ray's cancel reaches it at once. Ray cancels a running task by
    raising KeyboardInterrupt in the worker's main thread; that thread waits in the event
    loop's poll while a model call is in flight, and Python would raise it only when the
    call returns, after the grace the driver gives (`CANCEL_GRACE_S`): the task would be
    killed with what it had spent. The loop's own SIGINT handler wakes the poll and cancels
    the job, which hands back its usage and trace (`Cancelled`)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    try:
        if task is not None:
            loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
        task = None
    try:
        return await job
    finally:
        if task is not None:
            loop.remove_signal_handler(signal.SIGINT)


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        provider_concurrency: int,
        cpus_per_job: float = 1.0,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.workers = workers
        self.provider_concurrency = provider_concurrency
        self.cpus_per_job = cpus_per_job
        self.init_options = dict(init_options or {})
        self._capacity = workers or 1
        self._ray: Any = None
        self._started_ray = False
        self._broker: Any = None
        self._task: Any = None
        self._where = ""
        self._budget: BatchBudget | None = None
        self.permit_stats: dict[str, Any] = {}

    @property
    def capacity(self) -> int:
        return self._capacity

    async def start(self, budget: BatchBudget | None = None) -> None:
        self._budget = budget if budget is not None and budget.limited else None
        ray = import_ray(local_only=self.address is None)
        self._ray = ray
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "log_to_driver": False,
                "logging_level": "ERROR",
                **self.init_options,
            }
            if self.address is not None:
                check_reachable(self.address)
                try:
                    ray.init(address=self.address, **options)
                except (ConnectionError, RuntimeError, ValueError) as err:
                    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    raise InputError(
                        f"cannot connect to the Ray cluster at {self.address}: {first}"
                    ) from None
            else:
                options.setdefault("num_cpus", self.workers or os.cpu_count() or 1)
                options.setdefault("include_dashboard", False)
                ray.init(**options)
            self._started_ray = True
        cpus = ray.cluster_resources().get("CPU", 1.0)
        fit = max(1, int(cpus // self.cpus_per_job)) if self.cpus_per_job > 0 else int(cpus)
        self._capacity = self.workers or fit
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        self._where = f"ray, {self._capacity} at once on {nodes} node(s) with {cpus:g} CPUs" + (
            "" if self.address is None else f" at {self.address}"
        )
        self._broker = (
            ray.remote(PermitBroker)
            .options(num_cpus=0, max_concurrency=BROKER_CONCURRENCY)
            .remote(self.provider_concurrency, self._budget)
        )
        self._task = ray.remote(execute).options(max_retries=0, num_cpus=self.cpus_per_job)

    async def share(self, value: Any) -> Any:
        return self._ray.put(value)

    async def run(self, job: Any, shared: Any, attempt: int) -> Any:
        ray = self._ray
        holder = f"{job.key}#{attempt}#{uuid.uuid4().hex[:8]}"
        ref = self._task.remote(job, shared, self._broker, holder, self._budget is not None)
        try:
            return await ref
        except asyncio.CancelledError:
            raise await self._cancel(ref) from None
        except ray.exceptions.TaskCancelledError:
            raise Cancelled(None) from None
        except ray.exceptions.RayTaskError as err:
            raise _job_error(err) from None
        except ray.exceptions.RayError as err:
            raise WorkerLost(_one_line(err)) from None
        finally:
            self._broker.release_holder.remote(holder)

    async def _cancel(self, ref: Any) -> BaseException:
        """Cancels a running task and waits a little for what it had done."""
        ray = self._ray
        ray.cancel(ref)
        try:
            await asyncio.wait_for(asyncio.wrap_future(ref.future()), CANCEL_GRACE_S)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, Cancelled):
                return cause
        except BaseException:  # gone with nothing to hand back, or too slow
            ray.cancel(ref, force=True)
        return Cancelled(None)

    async def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        if self._broker is not None:
            # What the permits saw (the most calls in flight per model), kept for reports.
            try:
                self.permit_stats = await asyncio.wait_for(
                    asyncio.wrap_future(self._broker.stats.remote().future()), CANCEL_GRACE_S
                )
                ray.kill(self._broker)
            except Exception:  # a cluster going away takes the broker with it
                pass
        self._broker = None
        if self._started_ray:
            ray.shutdown()

    def describe(self) -> str:
        return self._where or "ray"


def _job_error(err: Any) -> BaseException:
    cause = getattr(err, "cause", None)
    if isinstance(cause, Cancelled):
        return cause
    if cause is not None:
        return JobFailed(f"{type(cause).__name__}: {cause}")
    return JobFailed(_one_line(err))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    first = text.split(". ")[0].rstrip(".")
    return f"{type(err).__name__}: {first}"[:300]


def check_reachable(address: str) -> None:
    """One clear line, quickly, for a cluster that is not there: Ray itself retries for
    minutes before it gives up."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"ray-gcs://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or port is None:
        raise InputError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"cannot reach the Ray cluster at {address}: {reason}") from None
