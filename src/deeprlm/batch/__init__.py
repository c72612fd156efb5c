"""Many questions at once: `deeprlm batch`, in this process or on a Ray cluster.

    questions   the questions file (JSONL): each line's question, context and limits
    store       the results folder: results, traces, trajectories, summary; how it resumes
    work        one question answered where it runs, returned as a record
    scheduler   the driver's loop: capacity, shared inputs, retries, stop and interrupt
    executors   the Executor protocol and the local executor
    ray_executor  Ray tasks, the object store, the cluster-wide permit broker (needs ray)
    permits     each model's concurrency limit and the batch's budget (the ledger that
                holds each call's worst case), across the questions of one process
    trajectory  the trajectories format for training, and the tap that sees the messages
    rewards     the benchmark's scorers by name, for questions with a gold answer
    progress    the live bar and the plain lines
    run         `run_batch`: all of it together; `cli` is its command

Ray is imported only by `ray_executor`, and only for `--executor ray`.
"""

from deeprlm.batch.run import BatchConfig, BatchReport, run_batch
from deeprlm.batch.work import Models

__all__ = ["BatchConfig", "BatchReport", "Models", "run_batch"]
