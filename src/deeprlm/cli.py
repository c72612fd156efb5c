"""The `deeprlm` command: a thin layer over the library.

    deeprlm ask "QUERY" --context PATH [--context PATH ...] [--model SPEC] [--json] ...

Exit status: 0 answered, 1 the model or sandbox failed, 2 bad input (one line on stderr),
3 a limit was reached (the partial answer is still printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from deeprlm import watchdog
from deeprlm.bench.cli import register as add_bench_command
from deeprlm.context import load_paths
from deeprlm.errors import DeepRLMError, InputError, LimitError
from deeprlm.lm.specs import DEFAULT_MODEL
from deeprlm.repl import REPL_KINDS
from deeprlm.rlm import RLM, RLMResult
from deeprlm.settings import Settings
from deeprlm.trace.console import console_sink
from deeprlm.trace.events import Event
from deeprlm.trace.recorder import check_trace_path
from deeprlm.trace.viewer import add_view_command
from deeprlm.usage import Price, UsageReport, load_prices, parse_price

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_LIMIT = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2, like every bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f"{message} (see {self.prog} --help)")
        raise SystemExit(EXIT_BAD_INPUT)


def _fail(message: str) -> None:
    print(f"deeprlm: error: {message}", file=sys.stderr)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _named_models(text: str) -> dict[str, str]:
    models = {}
    for item in text.split(","):
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=SPEC, got {item!r}")
        models[name.strip()] = spec.strip()
    return models


def _add_ask(subparsers: Any) -> None:
    defaults = Settings()
    ask = subparsers.add_parser("ask", help="answer a query over a context")
    ask.add_argument("query", help="the question to answer")
    ask.add_argument(
        "--context",
        "-c",
        action="append",
        default=[],
        metavar="PATH",
        help="a file, a folder (its text files) or - for stdin; repeatable",
    )
    models = ask.add_argument_group("models")
    models.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        metavar="SPEC",
        help="root model: local, gguf:PATH, hf:REPO/FILE, openai/NAME, "
        "anthropic/NAME (default: %(default)s)",
    )
    models.add_argument(
        "--sub-model", metavar="SPEC", help="model for sub-calls (default: --model)"
    )
    models.add_argument(
        "--sub-models",
        action="append",
        default=[],
        type=_named_models,
        metavar="NAME=SPEC[,NAME=SPEC]",
        help="more models the code may pick by name, as llm_query(p, model=NAME); "
        "repeatable (the code can name only these, root and sub)",
    )
    models.add_argument(
        "--base-url",
        metavar="URL",
        help="OpenAI-compatible server for openai/NAME (or OPENAI_BASE_URL)",
    )
    limits = ask.add_argument_group("limits")
    limits.add_argument("--max-iterations", type=_positive_int, default=defaults.max_iterations)
    limits.add_argument("--max-depth", type=int, default=defaults.max_depth)
    limits.add_argument("--max-concurrency", type=_positive_int, default=defaults.max_concurrency)
    limits.add_argument("--max-sub-calls", type=_positive_int)
    limits.add_argument("--max-tokens", type=_positive_int, help="tokens across the run tree")
    limits.add_argument("--max-usd", type=float, help="USD across the run tree")
    limits.add_argument("--timeout", type=float, metavar="SECONDS", help="wall clock for the run")
    limits.add_argument(
        "--cell-timeout", type=float, metavar="SECONDS", help="wall clock for one cell"
    )
    limits.add_argument(
        "--max-reply-tokens",
        type=_positive_int,
        help="output tokens per model call (default: the provider's; under a token or USD "
        "budget the model's own cap, else 8192)",
    )
    limits.add_argument(
        "--call-timeout",
        type=float,
        metavar="SECONDS",
        default=defaults.call_timeout_s,
        help="one request to a model (default: %(default)gs); a timed-out one is tried again once",
    )
    limits.add_argument(
        "--sub-call-timeout",
        type=float,
        metavar="SECONDS",
        help="one sub-call with its retries (default: none; sub-calls always end before "
        "their cell's timeout)",
    )
    limits.add_argument(
        "--max-retries",
        type=int,
        default=defaults.max_retries,
        help="further attempts of a failed model call (default: %(default)s)",
    )
    limits.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=IN,OUT",
        help="a model's price in USD per million input and output tokens (repeatable)",
    )
    limits.add_argument(
        "--prices",
        metavar="FILE.toml",
        help='a prices file: one table per model, e.g. ["my-model"] input = 0.5, output = 1.5',
    )
    limits.add_argument(
        "--max-output-chars",
        type=_positive_int,
        help="cell output the model reads per turn (default: 8000; 2000 for small models)",
    )
    limits.add_argument(
        "--no-sub-calls", action="store_true", help="no llm_query/rlm_query in the REPL (ablation)"
    )
    ask.add_argument(
        "--repl",
        choices=sorted(REPL_KINDS),
        default=defaults.repl,
        help="where the model's code runs (default: %(default)s). inprocess is not isolated, "
        "and C code that holds Python's lock (a catastrophic regex) cannot be interrupted "
        "there: --timeout and --cell-timeout then end the whole command, with status 3, "
        "some seconds late",
    )
    ask.add_argument(
        "--allow-read",
        action="append",
        default=[],
        metavar="PATH",
        help="a file or folder the sandboxed code may read (repeatable)",
    )
    ask.add_argument("--trace", metavar="FILE.jsonl", help="write every event as JSON lines")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    ask.set_defaults(handler=_ask)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_iterations": args.max_iterations,
        "max_depth": args.max_depth,
        "max_concurrency": args.max_concurrency,
        "max_sub_calls": args.max_sub_calls,
        "max_tokens": args.max_tokens,
        "max_usd": args.max_usd,
        "timeout_s": args.timeout,
        "cell_timeout_s": args.cell_timeout,
        "max_reply_tokens": args.max_reply_tokens,
        "call_timeout_s": args.call_timeout,
        "sub_call_timeout_s": args.sub_call_timeout,
        "max_retries": args.max_retries,
        "max_output_chars": args.max_output_chars,
        "sub_calls": not args.no_sub_calls,
        "repl": args.repl,
        "allow_read": tuple(args.allow_read),
    }


def _print_result(result: RLMResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    elif result.answer:
        print(result.answer)


def _print_failure(message: str, status: str = "error") -> None:
    """`--json` prints exactly one object, also when nothing ran (bad input, say)."""
    data = {"answer": "", "status": status, "error": message, "usage": UsageReport().to_dict()}
    print(json.dumps(data, ensure_ascii=False))


def _prices(args: argparse.Namespace) -> dict[str, Price]:
    """--prices FILE, then each --price (which wins for its model)."""
    prices = load_prices(args.prices) if args.prices else {}
    prices.update(parse_price(spec) for spec in args.price)
    return prices


def _ask(args: argparse.Namespace) -> int:
    # Everything that can be judged without work is judged first: a bad trace path or
    # setting costs nothing, not the reading of a large context.
    if args.trace:
        check_trace_path(args.trace)
    settings = _settings(args)
    Settings.from_kwargs(**settings)
    prices = _prices(args)
    notes: list[str] = []
    context, skipped = load_paths(args.context, notes=notes)
    for note in notes if not args.quiet else ():
        print(f"deeprlm: note: {note}", file=sys.stderr)
    progress = console_sink(quiet=args.quiet)
    sinks = [sink for sink in (progress, getattr(args, "reporter", None)) if sink is not None]

    def on_event(event: Event) -> None:
        for sink in sinks:
            sink(event)

    rlm = RLM(
        args.model,
        args.sub_model,
        models={name: spec for group in args.sub_models for name, spec in group.items()},
        base_url=args.base_url,
        prices=prices,
        trace_path=args.trace,
        on_event=on_event if sinks else None,
        **settings,
    )
    try:
        result = rlm.run(args.query, context, skipped=skipped)
    except DeepRLMError as err:
        if err.result is None:
            raise
        printed = " (partial answer printed)" if err.result.answer or args.json else ""
        _fail(f"{err}{printed}")
        _print_result(err.result, args.json)
        return EXIT_LIMIT if isinstance(err, LimitError) else EXIT_FAILED
    finally:
        if progress is not None:
            progress.close()
    _print_result(result, args.json)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deeprlm", description="Recursive Language Models over any chat model.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_ask(subparsers)
    add_view_command(subparsers)
    add_bench_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "handler", None) is _ask:
        try:  # before the watchdog below reads the timeouts
            Settings.from_kwargs(**_settings(args))
        except InputError as err:
            return _bad_input(str(err), args.json)
    if getattr(args, "repl", None) == "inprocess" and (args.timeout or args.cell_timeout):
        # In-process code can hold Python's lock past any timeout: see deeprlm.watchdog.
        outcome = watchdog.guarded(
            lambda reporter: _handle(args, reporter), args.timeout, args.cell_timeout
        )
        if isinstance(outcome, watchdog.Stuck):
            _fail(outcome.message)
            if args.json:
                _print_failure(outcome.message, status="limit")
            return EXIT_LIMIT
        return outcome
    return _handle(args, None)


def _handle(args: argparse.Namespace, reporter: watchdog.CellReporter | None) -> int:
    args.reporter = reporter
    as_json = bool(getattr(args, "json", False))
    try:
        return args.handler(args)
    except InputError as err:
        return _bad_input(str(err), as_json)
    except DeepRLMError as err:
        _fail(str(err))
        if as_json:
            _print_failure(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail("interrupted")
        if as_json:
            _print_failure("interrupted")
        return 130


def _bad_input(message: str, as_json: bool) -> int:
    _fail(message)
    if as_json:
        _print_failure(message)
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
