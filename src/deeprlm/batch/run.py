"""Running a batch: questions file in, results folder out, on any executor.

`run_batch` reads the questions (reporting each malformed line, or refusing the batch with
`strict`), skips those the folder already holds a final result for, and hands the rest to
the scheduler. Each question's end is written as it happens: its result line, its trace
and, when asked, its trajectory. A batch-wide budget (`max_usd`, `max_tokens`, counting all
the folder's results) holds as a question's own does, by reservation: each model call's
worst case is held against it while in flight (`deeprlm.batch.permits`), so the running
questions together cannot go past it. Once a call no longer fits, the batch stops cleanly:
nothing new starts, the running questions end with their partial answers (as "stopped",
which a resumed batch with room runs again), and everything is kept. Ctrl-C stops it too,
cancelling the running questions (kept as "cancelled", which a resumed batch runs again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import signal
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeprlm.batch import rewards
from deeprlm.batch.executors import Executor, executor_for
from deeprlm.batch.permits import BATCH_BUDGET_REACHED, BatchBudget
from deeprlm.batch.progress import BatchProgress, Tally
from deeprlm.batch.questions import ContextRef, LineProblem, Question, read_questions
from deeprlm.batch.scheduler import Item, Outcome, Scheduler
from deeprlm.batch.store import FINAL, STOPPED, ResultStore
from deeprlm.batch.work import CacheChoice, Finished, Loaded, Models, QuestionJob
from deeprlm.context import load_paths
from deeprlm.errors import InputError
from deeprlm.settings import Settings
from deeprlm.usage import UsageReport

DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class BatchConfig:
    questions: Path
    out: Path
    models: Models
    settings: Settings = field(default_factory=Settings)  # of each question
    shared: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> paths
    executor: str = "local"
    workers: int | None = None  # questions at once (Ray: default, the cluster's CPUs)
    ray_address: str | None = None  # None: start a local cluster
    ray_init: Mapping[str, Any] = field(default_factory=dict)  # more ray.init options
    cpus_per_question: float = 1.0  # Ray CPUs each question reserves
    provider_concurrency: int | None = None  # per model, batch-wide; default max_concurrency
    retries: int = DEFAULT_RETRIES  # runs again of a question whose worker was lost
    max_usd: float | None = None  # batch-wide
    max_tokens: int | None = None  # batch-wide
    strict: bool = False  # a malformed line refuses the batch
    retry_failed: bool = False  # run again the questions that ended in error
    trajectories: bool = False
    # The sub-call cache every question shares (on Ray, a file per node): a question run
    # again, after an interrupt say, replays the calls it had made.
    cache: CacheChoice | None = None
    # The JSON Schema of the answer of every question that gives none of its own.
    schema: Mapping[str, Any] | None = None

    def check(self) -> None:
        for name in ("workers", "provider_concurrency", "max_usd", "max_tokens"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"{name} must be positive, got {value}")
        if self.retries < 0:
            raise InputError(f"retries must be 0 or more, got {self.retries}")
        for name, paths in self.shared.items():
            for path in paths:
                if not Path(path).exists():
                    raise InputError(f"--shared {name}: no such file or folder: {path}")


@dataclass
class BatchReport:
    out: Path
    where: str = ""
    tally: Tally = field(default_factory=Tally)
    problems: list[LineProblem] = field(default_factory=list)
    # Why the batch ended before every question was done: "budget" or "interrupted".
    stopped: str | None = None
    ran: int = 0  # questions that ended in this run
    not_run: int = 0  # questions without a final result at the end
    wall_s: float = 0.0

    @property
    def statuses(self) -> Counter[str]:
        return self.tally.statuses

    def to_dict(self) -> dict[str, Any]:
        return {
            "questions": self.tally.total,
            "statuses": dict(self.tally.statuses),
            "not_run": self.not_run,
            "ran": self.ran,
            "stopped": self.stopped,
            "malformed_lines": [str(p) for p in self.problems],
            "tokens": self.tally.tokens,
            "usd": self.tally.usd,
            "wall_s": round(self.wall_s, 3),
            "executor": self.where,
        }


def cache_run(out: Path, question_id: str, finished_before: int) -> str:
    """A question's run's name in the cache: the same until it finishes, so that a question
    run again after an interrupt, a lost worker or the batch's budget replays what its
    models had replied; a new one for a question run again after it ended in error
    (`retry_failed`), which samples afresh."""
    key = f"batch\0{out.resolve()}\0{question_id}\0{finished_before}"
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def make_executor(config: BatchConfig) -> Executor:
    return executor_for(
        config.executor,
        workers=config.workers,
        address=config.ray_address,
        provider_concurrency=config.provider_concurrency or config.settings.max_concurrency,
        cpus_per_job=config.cpus_per_question,
        ray_init=config.ray_init,
    )


def read_batch(config: BatchConfig) -> tuple[list[Question], list[LineProblem]]:
    """The questions to answer, and the lines that are not questions."""
    questions, problems = read_questions(
        config.questions,
        shared=config.shared,
        base=config.settings,
        scorers=frozenset(rewards.scorers()),
    )
    if config.schema is not None:
        questions = [
            q if q.schema is not None else dataclasses.replace(q, schema=config.schema)
            for q in questions
        ]
    usd = config.max_usd is not None or config.settings.max_usd is not None
    if usd or any("max_usd" in q.limits for q in questions):
        # A USD budget counts $0 for a model without a price and never stops.
        config.models.require_prices()
    if config.strict and problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{config.questions}: {problems[0]}{more}; nothing was run")
    if not questions and not problems:
        raise InputError(f"{config.questions} holds no questions")
    return questions, problems


class _Batch:
    """One run of a batch: the state the scheduler's callbacks update."""

    def __init__(
        self,
        config: BatchConfig,
        store: ResultStore,
        report: BatchReport,
        progress: BatchProgress,
        questions: dict[str, Question],
    ) -> None:
        self.config = config
        self.store = store
        self.report = report
        self.progress = progress
        self.questions = questions
        self.scheduler: Scheduler | None = None

    def over_budget(self) -> str | None:
        c, tally = self.config, self.report.tally
        # (USD summed over many results carries rounding: a cent's millionth is no room.)
        if c.max_usd is not None and tally.usd >= c.max_usd - 1e-9:
            return f"batch budget reached: ${tally.usd:.4f} of ${c.max_usd:.4f} spent"
        if c.max_tokens is not None and tally.tokens >= c.max_tokens:
            return f"batch budget reached: {tally.tokens:,} of {c.max_tokens:,} tokens used"
        return None

    def on_start(self, item: Item) -> None:
        self.report.tally.running += 1
        self.progress.update(self.report.tally)

    def on_retry(self, item: Item, failure: str, attempt: int) -> None:
        self.progress.note(
            f"{item.job.key}: {failure} (attempt {attempt} of {self.config.retries + 1}); "
            "running it again"
        )

    def on_outcome(self, item: Item, outcome: Outcome) -> None:
        question = self.questions[item.job.key]
        record = self._record(question, outcome)
        self.store.append(record)
        tally = self.report.tally
        if outcome.attempts:
            tally.running -= 1
        tally.statuses[record["status"]] += 1
        total = record.get("usage", {}).get("total", {})
        tally.tokens += int(total.get("input_tokens", 0)) + int(total.get("output_tokens", 0))
        tally.usd += float(total.get("usd", 0.0))
        self.report.ran += 1
        self.progress.update(tally, record)
        reason = self.over_budget()
        if record["status"] == STOPPED:
            reason = str(record["error"])
        if reason is not None and self.scheduler is not None and not self.scheduler.stopped:
            self.report.stopped = "budget"
            self.progress.note(f"{reason}; no new questions start")
            self.scheduler.stop()

    def _record(self, question: Question, outcome: Outcome) -> dict[str, Any]:
        finished = outcome.value if outcome.value is not None else outcome.partial
        if isinstance(finished, Finished):
            record = dict(finished.record)
            record["trace"] = self.store.write_trace(question.id, finished.events)
        else:
            record = {
                "id": question.id,
                "status": "error",
                "answer": "",
                "error": outcome.error,
                "usage": UsageReport().to_dict(),
                "wall_s": 0.0,
            }
            if question.meta is not None:
                record["meta"] = dict(question.meta)
        if outcome.cancelled:
            record["status"] = "cancelled"
            record["error"] = "cancelled before it finished"
        elif record["status"] == "limit" and str(record["error"]).startswith(BATCH_BUDGET_REACHED):
            # Cut short by the batch's budget, not its own: run again by a batch with room.
            record["status"] = STOPPED
        record["attempts"] = outcome.attempts
        record["failures"] = list(outcome.failures)
        again = record["status"] in ("cancelled", STOPPED)
        if question.scorer is not None and not again:
            record["reward"] = rewards.reward(question.scorer, question.gold, record["answer"])
        # A question that runs again on resume has its trajectory from that run.
        if isinstance(finished, Finished) and finished.trajectory is not None and not again:
            trajectory = dict(finished.trajectory)
            trajectory["status"] = record["status"]
            trajectory["reward"] = record.get("reward")
            self.store.append_trajectory(trajectory)
        return record


async def run_batch(
    config: BatchConfig,
    *,
    progress: BatchProgress | None = None,
    executor: Executor | None = None,
    handle_sigint: bool = False,
) -> BatchReport:
    """Runs the questions of `config.questions` not yet done in `config.out`. With
    `handle_sigint`, a first Ctrl-C stops the batch cleanly and a second one at once."""
    config.check()
    started = time.perf_counter()
    progress = progress or BatchProgress("silent")
    questions, problems = read_batch(config)
    report = BatchReport(config.out, problems=problems)
    for problem in problems:
        progress.note(f"{config.questions}: {problem} (skipped)")
    store = ResultStore(config.out)
    store.open({**config.models.info(), "questions": str(config.questions)})
    by_id = {q.id: q for q in questions}
    latest = store.latest()
    finished = {"answered", "forced", "limit"} if config.retry_failed else FINAL
    tally = report.tally
    tally.total = len(questions)
    for record in store.records():  # what the folder has spent, earlier runs included
        total = record.get("usage", {}).get("total", {})
        tally.tokens += int(total.get("input_tokens", 0)) + int(total.get("output_tokens", 0))
        tally.usd += float(total.get("usd", 0.0))
    todo = []
    for question in questions:
        status = str(latest.get(question.id, {}).get("status"))
        if status in finished:
            tally.statuses[status] += 1
        else:
            todo.append(question)
    batch = _Batch(config, store, report, progress, by_id)
    executor = executor or make_executor(config)
    try:
        reason = batch.over_budget()
        if reason is not None and todo:
            report.stopped = "budget"
            progress.note(f"{reason}; no question started")
        elif todo:
            await executor.start(
                BatchBudget(config.max_tokens, config.max_usd, tally.tokens, tally.usd)
            )
            report.where = executor.describe()
            progress.start(tally, report.where)
            scheduler = Scheduler(
                executor,
                retries=config.retries,
                on_outcome=batch.on_outcome,
                on_start=batch.on_start,
                on_retry=batch.on_retry,
            )
            batch.scheduler = scheduler
            with _interrupts(scheduler, report, progress, enabled=handle_sigint):
                finals = Counter(
                    str(r.get("id")) for r in store.records() if r.get("status") in FINAL
                )
                await scheduler.run([_item(q, config, finals[q.id]) for q in todo])
    finally:
        progress.close()
        await executor.close()
        store.close()
        latest = store.latest()
        report.not_run = sum(latest.get(q.id, {}).get("status") not in FINAL for q in questions)
        report.wall_s = time.perf_counter() - started
        store.write_summary(report.to_dict())
    return report


def _item(question: Question, config: BatchConfig, finished_before: int = 0) -> Item:
    job = QuestionJob(
        question,
        config.models,
        config.settings,
        config.trajectories,
        config.cache,
        batch_max_tokens=config.max_tokens,
        batch_max_usd=config.max_usd,
        cache_run=cache_run(config.out, question.id, finished_before)
        if config.cache is not None
        else None,
    )
    ref = question.context
    if ref.key is None:
        return Item(job)
    paths = config.shared[ref.shared] if ref.shared is not None else ref.paths
    return Item(job, shared_key=ref.key, load=lambda: _load(ref, paths))


def _load(ref: ContextRef, paths: tuple[str, ...]) -> Loaded:
    notes: list[str] = []
    context, skipped = load_paths(list(paths), notes=notes)
    return Loaded(context, tuple(skipped), tuple(notes))


class _interrupts:
    """Ctrl-C while the batch runs: the first stops it cleanly, a second one at once."""

    def __init__(
        self, scheduler: Scheduler, report: BatchReport, progress: BatchProgress, enabled: bool
    ) -> None:
        self.scheduler = scheduler
        self.report = report
        self.progress = progress
        self.enabled = enabled

    def _first(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_signal_handler(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, self._second)
        self.report.stopped = "interrupted"
        self.progress.note(
            "interrupted: cancelling the running questions (Ctrl-C again to quit now)"
        )
        self.scheduler.interrupt()

    def _second(self) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> _interrupts:
        if self.enabled:
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._first)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
