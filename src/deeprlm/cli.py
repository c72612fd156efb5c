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

from deeprlm.bench.cli import register as add_bench_command
from deeprlm.context import load_paths
from deeprlm.doctor import add_doctor_command
from deeprlm.errors import DeepRLMError, InputError, LimitError
from deeprlm.lm.specs import DEFAULT_MODEL
from deeprlm.repl import REPL_KINDS
from deeprlm.rlm import RLM, RLMResult
from deeprlm.settings import Settings
from deeprlm.trace.console import console_sink
from deeprlm.trace.viewer import add_view_command
from deeprlm.usage import UsageReport

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
    limits.add_argument("--cell-timeout", type=float, metavar="SECONDS")
    limits.add_argument(
        "--max-output-chars",
        type=_positive_int,
        help="cell output the model reads per turn (default: 8000; 2000 for small models)",
    )
    limits.add_argument(
        "--no-sub-calls", action="store_true", help="no llm_query/rlm_query in the REPL (ablation)"
    )
    ask.add_argument("--repl", choices=sorted(REPL_KINDS), default=defaults.repl)
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


def _print_failure(message: str) -> None:
    """`--json` prints exactly one object, also when nothing ran (bad input, say)."""
    data = {"answer": "", "status": "error", "error": message, "usage": UsageReport().to_dict()}
    print(json.dumps(data, ensure_ascii=False))


def _ask(args: argparse.Namespace) -> int:
    context, skipped = load_paths(args.context)
    progress = console_sink(quiet=args.quiet)
    rlm = RLM(
        args.model,
        args.sub_model,
        base_url=args.base_url,
        trace_path=args.trace,
        on_event=progress,
        **_settings(args),
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
    add_doctor_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    try:
        return args.handler(args)
    except InputError as err:
        _fail(str(err))
        if as_json:
            _print_failure(str(err))
        return EXIT_BAD_INPUT
    except DeepRLMError as err:
        _fail(str(err))
        if as_json:
            _print_failure(str(err))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
