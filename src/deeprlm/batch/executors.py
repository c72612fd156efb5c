"""Where a batch's jobs run: the `Executor` protocol and the local executor.

An executor runs one job at a time per call of `run`, as many calls at once as its
`capacity`; the scheduler (`deeprlm.batch.scheduler`) decides what runs when. A job's large
input (a context many questions share) is handed over once through `share`, and the handle
it returns is what each job receives. The local executor runs jobs as tasks of this
process's event loop; the Ray executor (`deeprlm.batch.ray_executor`) as Ray tasks on a
cluster, where a worker can die: `run` then raises `WorkerLost` and the scheduler retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from deeprlm.batch.permits import BatchBudget, LocalPermits
from deeprlm.engine.shared import Permits
from deeprlm.errors import InputError

EXECUTORS = ("local", "ray")
DEFAULT_LOCAL_WORKERS = 4


class WorkerLost(Exception):
    """The process or node running a job died; the job can be run again."""


class Cancelled(Exception):
    """The job was cancelled while it ran; `partial` is what it had done (None if unknown)."""

    def __init__(self, partial: Any = None) -> None:
        super().__init__("cancelled")
        self.partial = partial


class JobFailed(Exception):
    """The job itself raised where it ran (a defect, not a lost worker): not retried."""


class Job(Protocol):
    @property
    def key(self) -> str:
        """Names the job in reports; unique within a batch."""
        ...

    async def run(self, shared: Any, permits: Permits) -> Any:
        """Does the work where the executor runs it. Raises `Cancelled` when cancelled."""
        ...


class Executor(Protocol):
    name: str

    @property
    def capacity(self) -> int:
        """Jobs in flight at once."""
        ...

    async def start(self, budget: BatchBudget | None = None) -> None:
        """Connects; `budget` is the batch's, which every job's model calls share."""
        ...

    async def share(self, value: Any) -> Any:
        """Hands a value to the executor once; jobs get the returned handle as `shared`."""
        ...

    async def run(self, job: Job, shared: Any, attempt: int) -> Any: ...

    async def close(self) -> None: ...

    def describe(self) -> str:
        """One line: where jobs run."""
        ...


class LocalExecutor:
    """Jobs as tasks of this process's event loop; model calls share `LocalPermits`."""

    name = "local"

    def __init__(self, workers: int, provider_concurrency: int) -> None:
        self.workers = workers
        self.provider_concurrency = provider_concurrency
        self.permits = LocalPermits(provider_concurrency)

    @property
    def capacity(self) -> int:
        return self.workers

    async def start(self, budget: BatchBudget | None = None) -> None:
        self.permits = LocalPermits(self.provider_concurrency, budget)

    async def share(self, value: Any) -> Any:
        return value

    async def run(self, job: Job, shared: Any, attempt: int) -> Any:
        return await job.run(shared, self.permits)

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"local, {self.workers} at once"


def executor_for(
    kind: str,
    *,
    workers: int | None,
    provider_concurrency: int,
    address: str | None = None,
    cpus_per_job: float = 1.0,
    ray_init: Mapping[str, Any] | None = None,
) -> Executor:
    """The executor `kind` names ("local" or "ray"); Ray is imported only for "ray"."""
    if kind == "local":
        return LocalExecutor(workers or DEFAULT_LOCAL_WORKERS, provider_concurrency)
    if kind == "ray":
        from deeprlm.batch.ray_executor import RayExecutor

        return RayExecutor(
            address=address,
            workers=workers,
            provider_concurrency=provider_concurrency,
            cpus_per_job=cpus_per_job,
            init_options=dict(ray_init or {}),
        )
    raise InputError(f"unknown executor {kind!r}; choose one of: {', '.join(EXECUTORS)}")
