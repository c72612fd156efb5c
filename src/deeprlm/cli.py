"""The `deeprlm` command: a thin layer over the library.

    deeprlm ask "QUERY" --context PATH [--context PATH ...] [--model SPEC] [--json] ...
    deeprlm view TRACE.jsonl [--open]
    deeprlm bench run|report|example ...

`bench` lives outside the library (the `deeprlm_bench` package, with the `bench` extra): its
parser is built, and its code imported, only when it is the command being run.

Exit status: 0 answered, 1 the model or sandbox failed, 2 bad input (one line on stderr),
3 a limit was reached (the partial answer is still printed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from deeprlm import watchdog
from deeprlm.context import load_paths
from deeprlm.errors import DeepRLMError, InputError, LimitError
from deeprlm.flags import add_setting_flags, settings_from_flags
from deeprlm.lm.specs import DEFAULT_MODEL
from deeprlm.rlm import RLM, RLMResult
from deeprlm.settings import Settings
from deeprlm.trace.console import console_sink
from deeprlm.trace.events import Event
from deeprlm.trace.viewer import add_view_command
from deeprlm.usage import UsageReport

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_LIMIT = 0, 1, 2, 3

# Commands loaded when run: name -> (module with `register(subparsers)`, a line of help).
LAZY_COMMANDS = {
    "bench": ("deeprlm_bench.cli", "run the benchmarks and baselines (the bench extra)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2, like every bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f"{message} (see {self.prog} --help)")
        raise SystemExit(EXIT_BAD_INPUT)


def _fail(message: str) -> None:
    print(f"deeprlm: error: {message}", file=sys.stderr)


def _named_models(text: str) -> dict[str, str]:
    models = {}
    for item in text.split(","):
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=SPEC, got {item!r}")
        models[name.strip()] = spec.strip()
    return models


def _add_ask(subparsers: Any) -> None:
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
    add_setting_flags(ask)
    output = ask.add_argument_group("output")
    output.add_argument("--trace", metavar="FILE.jsonl", help="write every event as JSON lines")
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    ask.set_defaults(handler=_ask)


def _print_result(result: RLMResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    elif result.answer:
        print(result.answer)


def _print_failure(message: str, status: str = "error") -> None:
    """`--json` prints exactly one object, also when nothing ran (bad input, say)."""
    data = {"answer": "", "status": status, "error": message, "usage": UsageReport().to_dict()}
    print(json.dumps(data, ensure_ascii=False))


def _ask(args: argparse.Namespace) -> int:
    context, skipped = load_paths(args.context)
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
        trace_path=args.trace,
        on_event=on_event if sinks else None,
        **settings_from_flags(args),
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `deeprlm` parser. A lazy command gets its real parser only when `command` names
    it; otherwise it is a line in the help."""
    parser = _Parser(prog="deeprlm", description="Recursive Language Models over any chat model.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_ask(subparsers)
    add_view_command(subparsers)
    for name, (module, help_text) in LAZY_COMMANDS.items():
        if name == command:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    args = build_parser(command).parse_args(argv)
    if command == "ask":
        try:
            settings = Settings.from_kwargs(**settings_from_flags(args))
        except InputError as err:
            return _bad_input(args, err)
        if settings.repl == "inprocess":
            # In-process code can hold Python's lock past any timeout: see deeprlm.watchdog.
            outcome = watchdog.guarded(
                lambda reporter: _handle(args, reporter),
                settings.timeout_s,
                settings.cell_timeout_s,
            )
            if isinstance(outcome, watchdog.Stuck):
                _fail(outcome.message)
                if args.json:
                    _print_failure(outcome.message, status="limit")
                return EXIT_LIMIT
            return outcome
    return _handle(args, None)


def _bad_input(args: argparse.Namespace, err: InputError) -> int:
    _fail(str(err))
    if getattr(args, "json", False):
        _print_failure(str(err))
    return EXIT_BAD_INPUT


def _handle(args: argparse.Namespace, reporter: watchdog.CellReporter | None) -> int:
    args.reporter = reporter
    as_json = bool(getattr(args, "json", False))
    try:
        return args.handler(args)
    except InputError as err:
        return _bad_input(args, err)
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
