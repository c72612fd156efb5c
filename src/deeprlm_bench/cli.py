"""`deeprlm bench`: the command line of the benchmarks.

    deeprlm bench run --tasks niah,aggregate --lengths 8k,32k --methods base,rlm \\
        --model SPEC [--sub-model SPEC] --n 3 --seed 0 --out DIR
    deeprlm bench report DIR
    deeprlm bench example TASK [--length 8k] [--seed 0]

`register(subparsers)` adds the command to the main `deeprlm` parser. Bad arguments raise
InputError, which the main command prints as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deeprlm.batch.cli import add_executor_flags
from deeprlm.batch.executors import executor_for
from deeprlm.errors import InputError
from deeprlm.flags import add_setting_flags, settings_from_flags
from deeprlm.lm.specs import DEFAULT_MODEL
from deeprlm.settings import Settings, for_models
from deeprlm_bench import extra
from deeprlm_bench.example import example_seed
from deeprlm_bench.methods import BUDGET, METHODS
from deeprlm_bench.report import SUMMARY_MD, Report, write_report
from deeprlm_bench.runner import RunConfig, run
from deeprlm_bench.tasks import TASKS, get_task
from deeprlm_bench.tokens import format_length, parse_length

DEFAULT_TASKS = "niah,aggregate,pairs,multihop,codeqa"


def _names(text: str, known: dict[str, Any], what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    if not names:
        raise InputError(f"no {what} given")
    return names


def _lengths(text: str) -> tuple[int, ...]:
    lengths = tuple(sorted({parse_length(part) for part in text.split(",") if part.strip()}))
    if not lengths:
        raise InputError("no lengths given")
    return lengths


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def register(subparsers: Any) -> None:
    """Adds `bench` (with `run`, `report`, `example`) to the `deeprlm` parser."""
    bench = subparsers.add_parser("bench", help="run the benchmarks and baselines")
    commands = bench.add_subparsers(dest="bench_command", required=True, parser_class=type(bench))

    run_p = commands.add_parser("run", help="run tasks x lengths x methods into a folder")
    run_p.add_argument(
        "--tasks",
        default=DEFAULT_TASKS,
        help=f"comma-separated, of: {', '.join(TASKS)} (default: %(default)s)",
    )
    run_p.add_argument(
        "--lengths",
        default="8k,32k",
        help="comma-separated input lengths in tokens, e.g. 8k,32k,1m (default: %(default)s)",
    )
    run_p.add_argument(
        "--methods",
        default="base,rlm",
        help=f"comma-separated, of: {', '.join(METHODS)} (default: %(default)s)",
    )
    run_p.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        metavar="SPEC",
        help="the model every method uses (default: %(default)s)",
    )
    run_p.add_argument("--sub-model", metavar="SPEC", help="model for sub-calls (default: --model)")
    run_p.add_argument("--base-url", metavar="URL", help="OpenAI-compatible server for openai/NAME")
    run_p.add_argument("--n", type=_positive(int), default=3, help="examples per task and length")
    run_p.add_argument("--seed", type=int, default=0)
    run_p.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    add_setting_flags(
        run_p,
        BUDGET,
        title="budget of each example, the same for every method",
        help_overrides={"max_iterations": "agent turns", "max_tokens": "tokens, all calls "
                        "together", "max_usd": "USD, all calls together"},
    )  # fmt: skip
    run_p.add_argument(
        "--window",
        type=_positive(int),
        metavar="TOKENS",
        help="the model's context window, when it does not report one",
    )
    add_setting_flags(
        run_p,
        ["repl"],
        help_overrides={"repl": "where the engine runs code, for rlm, rlm-nosub and oracle"},
    )
    run_p.add_argument(
        "--traces", action="store_true", help="keep each engine run's trace in DIR/traces/"
    )
    run_p.add_argument(
        "--export-trajectories",
        action="store_true",
        help="write DIR/trajectories.jsonl: each cell's conversation, code, outputs and "
        "sub-calls, its score as the reward (format: deeprlm/batch/trajectory.schema.json)",
    )
    add_executor_flags(run_p)
    run_p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    run_p.set_defaults(handler=_run)

    report_p = commands.add_parser("report", help="rebuild a results folder's summary")
    report_p.add_argument("dir", metavar="DIR")
    report_p.set_defaults(handler=_report)

    example_p = commands.add_parser("example", help="print one generated example")
    example_p.add_argument("task", help=f"one of: {', '.join(TASKS)}")
    example_p.add_argument("--length", default="8k")
    example_p.add_argument("--seed", type=int, default=0)
    example_p.add_argument("--index", type=int, default=0)
    example_p.add_argument("--chars", type=int, default=1500, help="context characters to show")
    example_p.set_defaults(handler=_example)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    given = settings_from_flags(args)
    return RunConfig(
        tasks=_names(args.tasks, TASKS, "task"),
        lengths=_lengths(args.lengths),
        methods=_names(args.methods, METHODS, "method"),
        n=args.n,
        seed=args.seed,
        model=args.model,
        sub_model=args.sub_model,
        base_url=args.base_url,
        settings=for_models(Settings(**given), given, (args.model, args.sub_model)),
        window=args.window,
        traces=args.traces,
    )


def _run(args: argparse.Namespace) -> int:
    extra.require()
    config = config_from_args(args)
    config.check()
    out = Path(args.out)
    options: dict[str, Any] = {"trajectories": args.export_trajectories}
    if args.executor == "local" and args.workers is not None:
        raise InputError("--workers needs --executor ray: a local grid runs one cell at a time")
    if args.executor != "local":
        options["executor"] = executor_for(
            args.executor,
            workers=args.workers,
            address=args.ray_address,
            provider_concurrency=args.provider_concurrency or config.settings.max_concurrency,
            cpus_per_job=args.ray_cpus,
        )
        options["retries"] = args.retries
    if args.quiet:
        run(config, out, **options)
    else:
        _run_with_progress(config, out, options)
    _print_report(write_report(out), out)
    return 0


def _print_report(report: Report, out: Path) -> None:
    print(out / SUMMARY_MD)
    if report.plot is not None:
        print(report.plot)
    for note in report.notes:
        print(f"deeprlm: note: {note}", file=sys.stderr)


def _run_with_progress(config: RunConfig, out: Path, options: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
        console=Console(stderr=True),
    )
    bar = progress.add_task("bench", total=None, last="")
    with progress:
        run(
            config,
            out,
            on_start=lambda total: progress.update(bar, total=total),
            on_cell=lambda c: progress.update(
                bar, description=f"{c.task} {format_length(c.length)} #{c.index} {c.method}"
            ),
            on_result=lambda r: progress.update(
                bar,
                advance=1,
                last=f"last: {r.score:.2f}" + (" (error)" if r.error else ""),
            ),
            **options,
        )


def _report(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    if not out.is_dir():
        raise InputError(f"no results folder at {out}")
    report = write_report(out)
    print((out / SUMMARY_MD).read_text(encoding="utf-8"), end="")
    for note in report.notes:
        print(f"deeprlm: note: {note}", file=sys.stderr)
    return 0


def _example(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    length = parse_length(args.length)
    example = task.generate(example_seed(args.seed, args.task, length, args.index), length)
    text = example.text()
    print(json.dumps({"task": example.task, "length": length, "tokens": example.tokens(),
                      "gold": example.gold if isinstance(example.gold, str)
                      else json.dumps(example.gold)[:500],
                      "info": dict(example.info)}, indent=2))  # fmt: skip
    print(f"\nQuery:\n{example.query}\n\nContext ({len(text):,} characters) begins:\n")
    print(text[: args.chars])
    return 0
