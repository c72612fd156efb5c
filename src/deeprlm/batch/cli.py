"""`deeprlm batch`: a file of questions answered into a results folder, here or on Ray.

    deeprlm batch QUESTIONS.jsonl --out DIR [--model SPEC ...] [--shared NAME=PATH ...]
        [--executor local|ray] [--ray-address ADDR] [--workers N]
        [--provider-concurrency N] [--batch-max-usd X] [--batch-max-tokens N]
        [--cache [PATH]] [--schema FILE.json] [--export-trajectories] [--strict]
        [--retry-failed] [--json] [--quiet]
        [every setting of `deeprlm ask`, for each question]

Run again on the same folder, it resumes: finished questions are not run again.

Exit status: 0 every question answered; 1 a question ended in error; 2 bad input (a line
was skipped, or the batch refused); 3 a limit: a question's own budget, or the batch's,
which left questions unrun; 130 interrupted (Ctrl-C), finished results kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from deeprlm.batch.executors import DEFAULT_LOCAL_WORKERS, EXECUTORS
from deeprlm.batch.progress import BatchProgress
from deeprlm.batch.run import (
    DEFAULT_RETRIES,
    BatchConfig,
    BatchReport,
    run_batch,
)
from deeprlm.batch.store import RESULTS
from deeprlm.batch.work import CacheChoice, Models
from deeprlm.errors import InputError
from deeprlm.flags import (
    add_model_flags,
    add_price_flags,
    add_setting_flags,
    named_models,
    prices_from_flags,
    settings_from_flags,
)
from deeprlm.output import OutputSchema
from deeprlm.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_LIMIT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
        return value

    return parse


def _shared(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, paths = text.partition("=")
    parts = tuple(p for p in paths.split(",") if p)
    if not sep or not name.strip() or not parts:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH[,PATH...], got {text!r}")
    return name.strip(), parts


def add_executor_flags(parser: argparse.ArgumentParser) -> None:
    """Where the jobs run and how many at once: for `deeprlm batch` and `deeprlm bench run`."""
    run = parser.add_argument_group("where and how many")
    run.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: this process; ray: a Ray cluster (the ray extra) (default: %(default)s)",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: start a local "
        "one for the run",
    )
    run.add_argument(
        "--workers",
        type=_positive(int),
        metavar="N",
        help=f"jobs at once (default: {DEFAULT_LOCAL_WORKERS} locally; on Ray, the cluster's CPUs)",
    )
    run.add_argument(
        "--ray-cpus",
        type=_positive(float),
        default=1.0,
        metavar="X",
        help="CPUs each job reserves on Ray; below 1 runs several per core, as questions "
        "mostly wait on models (default: %(default)g)",
    )
    run.add_argument(
        "--provider-concurrency",
        type=_positive(int),
        metavar="N",
        help="model calls in flight to each model across the whole run, every worker and "
        "node together (default: --max-concurrency)",
    )
    run.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        metavar="N",
        help="times a job whose worker died is run again (default: %(default)s)",
    )


def register(subparsers: Any) -> None:
    batch = subparsers.add_parser(
        "batch",
        help="answer a file of questions, here or on a Ray cluster",
        description='Answers each line of QUESTIONS.jsonl ({"id", "query", and the '
        'context as "context" (the text), "paths" or "shared"; optional "limits", '
        '"schema", "gold", "scorer", "meta"}) into DIR/results.jsonl, as each '
        "finishes. Run again on the same DIR, it goes on where it stopped.",
    )
    batch.add_argument("questions", metavar="QUESTIONS.jsonl", help="one question per line")
    batch.add_argument("--out", "-o", required=True, metavar="DIR", help="the results folder")
    batch.add_argument(
        "--shared",
        action="append",
        default=[],
        type=_shared,
        metavar="NAME=PATH[,PATH]",
        help='a context loaded once for every question naming it as "shared"; repeatable',
    )
    add_model_flags(batch)
    add_executor_flags(batch)
    budget = batch.add_argument_group(
        "the batch's budget (each call's worst case is held against it, across the cluster; "
        "reached: no new question starts, running ones stop; counts the folder's results)"
    )
    budget.add_argument("--batch-max-usd", type=_positive(float), metavar="X", help="USD")
    budget.add_argument("--batch-max-tokens", type=_positive(int), metavar="N", help="tokens")
    add_setting_flags(batch)
    add_price_flags(batch)
    cache = batch.add_argument_group("cache")
    cache.add_argument(
        "--cache",
        nargs="?",
        const="on",
        metavar="PATH|on|off",
        help="keep model replies in a SQLite file every question shares, so that no identical "
        "call is paid twice and a question run again (after an interrupt, a lost worker, the "
        "batch budget) replays the calls it had made; alone or 'on': "
        "$DEEPRLM_HOME/cache.sqlite, on each machine that answers questions (default: off)",
    )
    cache.add_argument(
        "--cache-sampled",
        action="store_true",
        help="also share cached replies of models that sample (temperature above 0) between "
        "questions and batches",
    )
    output = batch.add_argument_group("output")
    output.add_argument(
        "--schema",
        metavar="FILE.json",
        help='a JSON Schema every answer must follow (a question\'s own "schema" wins); '
        "the result's answer is its JSON and its value the parsed object",
    )
    output.add_argument(
        "--export-trajectories",
        action="store_true",
        help="write DIR/trajectories.jsonl: each run's conversation, code, outputs, "
        "sub-calls and reward (format: deeprlm/batch/trajectory.schema.json)",
    )
    output.add_argument(
        "--strict", action="store_true", help="refuse the batch if a line is malformed"
    )
    output.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the questions whose result is an error",
    )
    output.add_argument("--json", action="store_true", help="print the summary as one object")
    output.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    batch.set_defaults(handler=_batch)


def config_from_args(args: argparse.Namespace) -> BatchConfig:
    return BatchConfig(
        questions=Path(args.questions),
        out=Path(args.out),
        models=Models(
            model=args.model,
            sub_model=args.sub_model,
            named=tuple(named_models(args).items()),
            base_url=args.base_url,
            prices=tuple(prices_from_flags(args).items()),
        ),
        settings=Settings.from_kwargs(**settings_from_flags(args)),
        shared=dict(args.shared),
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        cpus_per_question=args.ray_cpus,
        provider_concurrency=args.provider_concurrency,
        retries=args.retries,
        max_usd=args.batch_max_usd,
        max_tokens=args.batch_max_tokens,
        strict=args.strict,
        retry_failed=args.retry_failed,
        trajectories=args.export_trajectories,
        cache=_cache(args),
        schema=OutputSchema.from_file(args.schema).schema if args.schema else None,
    )


def _cache(args: argparse.Namespace) -> CacheChoice | None:
    if args.cache in (None, "off", ""):
        if args.cache_sampled:
            raise InputError("--cache-sampled needs --cache")
        return None
    # Made absolute here: a Ray worker does not run in this directory.
    path = None if args.cache == "on" else str(Path(args.cache).expanduser().resolve())
    return CacheChoice(path, sampled=args.cache_sampled)


def _batch(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    progress = BatchProgress("quiet" if args.quiet else "auto")
    report = asyncio.run(run_batch(config, progress=progress, handle_sigint=True))
    if args.json:
        print(json.dumps({**report.to_dict(), "results": str(config.out / RESULTS)}))
    else:
        print(summary_text(report, config.out))
    return exit_status(report)


def summary_text(report: BatchReport, out: Path) -> str:
    statuses = report.statuses
    order = ("answered", "forced", "limit", "error")
    counts = ", ".join(f"{statuses[s]} {s}" for s in order if statuses[s])
    lines = [
        f"{report.tally.total} questions: {counts or 'none finished'}"
        + (f"; {report.not_run} not run" if report.not_run else ""),
        f"{report.ran} ended in this run, in {report.wall_s:.1f}s"
        + (f" ({report.where})" if report.where else ""),
        f"{report.tally.tokens:,} tokens, ${report.tally.usd:.4f} (the folder's results)",
    ]
    if report.problems:
        lines.append(f"{len(report.problems)} malformed line(s) skipped")
    if report.stopped == "budget":
        lines.append("stopped: the batch budget was reached")
    elif report.stopped == "interrupted":
        lines.append("stopped: interrupted; run again to resume")
    lines.append(f"results: {out / RESULTS}")
    return "\n".join(lines)


def exit_status(report: BatchReport) -> int:
    if report.stopped == "interrupted":
        print("deeprlm: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if report.statuses["error"]:
        return EXIT_FAILED
    if report.problems:
        return EXIT_BAD_INPUT
    if report.stopped == "budget" or report.statuses["limit"]:
        return EXIT_LIMIT
    return EXIT_OK
