"""The grid on an executor (`deeprlm bench run --executor ray`): each cell a job, run the
way `deeprlm batch` runs questions (`deeprlm.batch.scheduler`).

Each example is generated once, in the driver, and handed to the executor once (on Ray, one
object in the object store) for all the methods that run on it; each job makes its models
from the specs in the run's config and sends its model calls under the batch's permits, so
the concurrency limit holds across the cluster. A worker that dies has its cell run again
(a bounded number of times); a cell that still cannot run is a result with score 0 and the
reason, never a missing line. The driver writes every line, trace and trajectory.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprlm.batch.executors import Executor
from deeprlm.batch.scheduler import Item, Outcome, Scheduler
from deeprlm.blocking import run_blocking
from deeprlm.engine.shared import Permits
from deeprlm_bench.example import Example
from deeprlm_bench.methods import Setup
from deeprlm_bench.runner import (
    Cell,
    CellDone,
    Result,
    RunConfig,
    Writer,
    example_of,
    make_models,
    run_cell_recorded,
)


@dataclass(frozen=True)
class CellJob:
    cell: Cell
    config: RunConfig
    trajectories: bool = False

    @property
    def key(self) -> str:
        c = self.cell
        return f"{c.task}/{c.length}/{c.index}/{c.method}"

    async def run(self, example: Example, permits: Permits) -> CellDone:
        # The methods block (they run the engine on loops of their own): off this loop.
        return await asyncio.to_thread(self._run, example, permits)

    def _run(self, example: Example, permits: Permits) -> CellDone:
        config = self.config
        model, sub = make_models(config)
        setup = Setup(
            model, sub, config.settings, config.window or model.context_window, permits=permits
        )
        return run_cell_recorded(
            self.cell, example, setup, events=config.traces, trajectory=self.trajectories
        )


def run_on(
    executor: Executor,
    config: RunConfig,
    out: Path,
    cells: list[Cell],
    *,
    retries: int,
    trajectories: bool = False,
    on_cell: Any = None,
    on_result: Any = None,
) -> list[Result]:
    return run_blocking(
        _run_on(executor, config, out, cells, retries, trajectories, on_cell, on_result)
    )


async def _run_on(
    executor: Executor,
    config: RunConfig,
    out: Path,
    cells: list[Cell],
    retries: int,
    trajectories: bool,
    on_cell: Any,
    on_result: Any,
) -> list[Result]:
    writer = Writer(out, config)
    results: list[Result] = []
    jobs: dict[str, Cell] = {}

    def on_start(item: Item) -> None:
        if on_cell is not None:
            on_cell(jobs[item.job.key])

    def on_outcome(item: Item, outcome: Outcome) -> None:
        cell = jobs[item.job.key]
        if outcome.cancelled:
            return  # not done: a resumed run runs it again
        if isinstance(outcome.value, CellDone):
            done = outcome.value
        else:
            done = CellDone(_failed(cell, config, outcome.error or "did not run"))
        writer.write(cell, done)
        results.append(done.result)
        if on_result is not None:
            on_result(done.result)

    items = []
    for cell in cells:
        job = CellJob(cell, config, trajectories)
        jobs[job.key] = cell
        key = (cell.task, cell.length, cell.index)
        items.append(
            Item(job, shared_key=key, load=functools.partial(example_of, cell, config.seed))
        )
    await executor.start()
    scheduler = Scheduler(executor, retries=retries, on_outcome=on_outcome, on_start=on_start)
    try:
        await scheduler.run(items)
    finally:
        writer.close()
        await executor.close()
    return results


def _failed(cell: Cell, config: RunConfig, error: str) -> Result:
    return Result(
        task=cell.task,
        length=cell.length,
        index=cell.index,
        method=cell.method,
        seed=config.seed,
        score=0.0,
        context_tokens=0,
        usage={},
        tokens_in=0,
        tokens_out=0,
        usd=0.0,
        wall_s=0.0,
        iterations=0,
        sub_calls=0,
        answer="",
        gold="",
        error=error,
    )
