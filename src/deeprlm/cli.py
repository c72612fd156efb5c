"""The `deeprlm` command: a thin layer over the library.

    deeprlm ask "QUERY" --context PATH [--context PATH ...] [--model SPEC] [--json] ...
    deeprlm ask --resume TRACE.jsonl [--max-... N]
    deeprlm ask "QUERY" --session ID [--rebind]     one more question to a saved session
    deeprlm chat --context PATH [...]  |  deeprlm chat --session ID
    deeprlm view TRACE.jsonl [--open]
    deeprlm bench run|report|example ...
    deeprlm serve [--config FILE] [--model SPEC] ...
    deeprlm mcp --root PATH [--model SPEC] ...
    deeprlm doctor [--json]
    deeprlm batch QUESTIONS.jsonl --out DIR [--executor local|ray] ...

`bench` lives outside the library (the `deeprlm_bench` package, with the `bench` extra), and
`serve` and `mcp` need their extras (`batch`, the ray extra for `--executor ray`): a lazy
command's parser is built, and its code (and its heavy dependencies) imported, only when it
is the command being run.

Exit status: 0 answered, 1 the model or sandbox failed, 2 bad input (one line on stderr),
3 a limit was reached (the partial answer is still printed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deeprlm import resume, watchdog
from deeprlm.cache import Cache, as_cache
from deeprlm.chat import Chat
from deeprlm.context import load_paths
from deeprlm.errors import DeepRLMError, InputError, LimitError
from deeprlm.flags import (
    add_model_flags,
    add_price_flags,
    add_setting_flags,
    named_models,
    prices_from_flags,
    settings_from_flags,
)
from deeprlm.lm.specs import DEFAULT_MODEL
from deeprlm.output import OutputSchema
from deeprlm.rlm import RLM, RLMResult
from deeprlm.session import Session, read_session, rlm_from
from deeprlm.session.store import TRACE_FILE, folder_of, new_id
from deeprlm.settings import SESSION, Settings, for_models, table
from deeprlm.trace.console import console_sink
from deeprlm.trace.events import Event
from deeprlm.trace.jsonl import check_trace_path
from deeprlm.trace.viewer import add_view_command
from deeprlm.usage import UsageReport

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_LIMIT = 0, 1, 2, 3

# Commands loaded when run: name -> (module with `register(subparsers)`, a line of help).
LAZY_COMMANDS = {
    "bench": ("deeprlm_bench.cli", "run the benchmarks and baselines (the bench extra)"),
    "serve": ("deeprlm.serve.cli", "serve an OpenAI-compatible HTTP endpoint (the serve extra)"),
    "mcp": ("deeprlm.serve.mcp_cli", "serve the RLM to agents over MCP (the mcp extra)"),
    "doctor": ("deeprlm.doctor", "check what deeprlm needs on this machine, and how to fix it"),
    "batch": ("deeprlm.batch.cli", "answer a file of questions, here or on a Ray cluster"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2, like every bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f"{message} (see {self.prog} --help)")
        raise SystemExit(EXIT_BAD_INPUT)


# The root model a command that may reopen a saved run falls back to.
SAVED_MODEL = f"{DEFAULT_MODEL}; with --session or --resume, the saved one"


def _fail(message: str) -> None:
    print(f"deeprlm: error: {message}", file=sys.stderr)


def _add_session_flags(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_argument_group("sessions")
    group.add_argument("--session", metavar="ID", help=what)
    group.add_argument(
        "--rebind",
        action="store_true",
        help="with --session: go on although the context's files changed since it was saved",
    )


def _add_ask(subparsers: Any) -> None:
    ask = subparsers.add_parser("ask", help="answer a query over a context")
    ask.add_argument("query", nargs="?", help="the question to answer (left out with --resume)")
    ask.add_argument(
        "--context",
        "-c",
        action="append",
        default=[],
        metavar="PATH",
        help="a file, a folder (its text files) or - for stdin; repeatable",
    )
    add_model_flags(ask, default_said=SAVED_MODEL)
    _add_session_flags(
        ask, "ask a saved session (see deeprlm chat) one more question, and save it again"
    )
    add_setting_flags(ask, [row.name for row in table() if row.metadata["section"] != SESSION])
    add_price_flags(ask)
    cache = ask.add_argument_group("cache and resume")
    cache.add_argument(
        "--cache",
        nargs="?",
        const="on",
        metavar="PATH|on|off",
        help="keep model replies in a SQLite file so that no identical call is paid twice and "
        "the run can be resumed; alone or 'on': $DEEPRLM_HOME/cache.sqlite (default: off)",
    )
    cache.add_argument(
        "--cache-sampled",
        action="store_true",
        help="also share cached replies of models that sample (temperature above 0) "
        "between runs; without it they serve only this run and its resumption",
    )
    cache.add_argument(
        "--resume",
        metavar="TRACE.jsonl",
        help="continue the run of this trace (made with --cache): its calls replay from the "
        "cache, its cells run again, and it goes on with the limit that stopped it raised; "
        "its question, models, settings and context are the run's unless given",
    )
    output = ask.add_argument_group("output")
    output.add_argument(
        "--schema",
        metavar="FILE.json",
        help="a JSON Schema the answer must follow; the answer printed is its JSON",
    )
    output.add_argument("--trace", metavar="FILE.jsonl", help="write every event as JSON lines")
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    ask.set_defaults(handler=_ask)


def _add_chat(subparsers: Any) -> None:
    chat = subparsers.add_parser(
        "chat",
        help="ask a context many questions at a prompt; its REPL keeps what each one made",
        description="Questions to one session, one per line (/help at the prompt lists the "
        "commands). The session is saved after every question; go on later with "
        "--session ID here or in deeprlm ask.",
    )
    chat.add_argument(
        "--context",
        "-c",
        action="append",
        default=[],
        metavar="PATH",
        help="a file or a folder (its text files); repeatable",
    )
    add_model_flags(chat, default_said=SAVED_MODEL)
    _add_session_flags(chat, "go on with a saved session")
    add_setting_flags(chat)
    add_price_flags(chat)
    cache = chat.add_argument_group("cache")
    cache.add_argument(
        "--cache",
        metavar="PATH|on|off",
        help="the sub-call cache the questions use (default: on, $DEEPRLM_HOME/cache.sqlite)",
    )
    output = chat.add_argument_group("output")
    output.add_argument(
        "--trace",
        metavar="FILE.jsonl",
        help="where the questions' events go (default: trace.jsonl in the session's folder)",
    )
    output.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    chat.set_defaults(handler=_chat)


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
    _check_session_flags(args)
    if args.session:
        return _ask_session(args)
    output = OutputSchema.from_file(args.schema) if args.schema else None
    cache = as_cache(args.cache)
    if cache is not None and args.cache_sampled:
        cache = Cache(cache.path, sampled=True)
    models = named_models(args)
    settings = settings_from_flags(args)
    sources = args.context
    recorded = None
    if args.resume:
        if args.query:
            raise InputError("--resume continues the run's own question; leave the query out")
        recorded = resume.read(args.resume, cache)
        specs = recorded.record.get("specs") or {}
        args.model = args.model or specs.get("model")
        args.sub_model = args.sub_model or specs.get("sub_model")
        models = models or dict(specs.get("models") or {})
        args.base_url = args.base_url or specs.get("base_url")
        settings = {**resume.recorded_settings(recorded), **settings}
        sources = sources or list(recorded.record.get("sources") or [])
        if not sources or "-" in sources:
            raise InputError("give --context: the run's context did not come from files")
        if output is None and recorded.record.get("output"):
            output = OutputSchema(recorded.record["output"])
        if args.trace is None:
            old = Path(args.resume)
            args.trace = str(old.with_name(f"{old.stem}.resumed{old.suffix or '.jsonl'}"))
    elif not args.query:
        raise InputError("the query is missing (or give --resume TRACE.jsonl)")
    # What can be judged without work is judged first (the settings were, in `main`): a bad
    # trace path or price costs nothing, not the reading of a large context.
    if args.trace:
        check_trace_path(args.trace)
    prices = prices_from_flags(args)
    notes: list[str] = []
    context, skipped = load_paths(sources, notes=notes)
    for note in notes if not args.quiet else ():
        print(f"deeprlm: note: {note}", file=sys.stderr)
    progress = console_sink(quiet=args.quiet)
    sinks = [sink for sink in (progress, getattr(args, "reporter", None)) if sink is not None]

    def on_event(event: Event) -> None:
        for sink in sinks:
            sink(event)

    rlm = RLM(
        args.model or DEFAULT_MODEL,
        args.sub_model,
        models=models,
        base_url=args.base_url,
        prices=prices,
        trace_path=args.trace,
        on_event=on_event if sinks else None,
        cache=cache,
        output=output,
        **settings,
    )
    try:
        if recorded is not None:
            result = rlm.resume(args.resume, context, skipped=skipped)
        else:
            where = [p if p == "-" else os.path.abspath(p) for p in sources]
            result = rlm.run(args.query, context, skipped=skipped, sources=where)
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


def _check_session_flags(args: argparse.Namespace) -> None:
    if args.session and getattr(args, "resume", None):
        raise InputError("--resume continues a single run; a session goes on with --session")
    if args.session and args.context:
        raise InputError(
            "--context goes with a new session; a saved one has its own (--rebind takes its "
            "files as they are now)"
        )
    if args.rebind and not args.session:
        raise InputError("--rebind goes with --session")


def _open_session(args: argparse.Namespace) -> Session:
    """The saved session `--session` names, with the models the flags give instead of the
    saved ones."""
    _check_session_flags(args)
    saved = read_session(args.session)
    if args.trace:
        check_trace_path(args.trace)
    schema = getattr(args, "schema", None)
    rlm = rlm_from(
        saved,
        model=args.model,
        sub_model=args.sub_model,
        base_url=args.base_url,
        trace_path=args.trace,
        prices=prices_from_flags(args),
        output=OutputSchema.from_file(schema) if schema else None,
    )
    session = Session.open(saved.id, rlm, rebind=args.rebind)
    if args.cache is not None:  # from now on; saved with the session
        try:
            session.set_cache(args.cache)
        except InputError:
            session.close()
            raise
    return session


def _ask_session(args: argparse.Namespace) -> int:
    if not args.query:
        raise InputError("the query is missing")
    session = _open_session(args)
    progress = console_sink(quiet=args.quiet)
    sinks = [sink for sink in (progress, getattr(args, "reporter", None)) if sink is not None]

    def on_event(event: Event) -> None:
        for sink in sinks:
            sink(event)

    status = EXIT_OK
    try:
        try:
            result = session.ask(args.query, on_event=on_event, **settings_from_flags(args))
        except DeepRLMError as err:
            if err.result is None:
                raise
            printed = " (partial answer printed)" if err.result.answer or args.json else ""
            _fail(f"{err}{printed}")
            result = err.result
            status = EXIT_LIMIT if isinstance(err, LimitError) else EXIT_FAILED
        finally:
            if progress is not None:
                progress.close()
        _print_result(result, args.json)
        # Saved whatever became of the question: its record is part of the session now.
        session.save()
    finally:
        session.close()
    return status


def _chat(args: argparse.Namespace) -> int:
    settings = settings_from_flags(args)
    if args.session:
        session = _open_session(args)
        # A saved session keeps its REPL and totals; the other flags apply to each question.
        overrides = settings
        try:
            session.question_settings(**overrides)
        except InputError:
            session.close()
            raise
    else:
        _check_session_flags(args)
        if not args.context:
            raise InputError("no context given: pass --context PATH, or --session ID")
        if "-" in args.context:
            raise InputError("chat reads its questions from stdin: give the context as files")
        session_id = new_id()
        folder = folder_of(session_id)
        # Made first: the trace goes in it, and the trace path is checked when the RLM is.
        folder.mkdir(parents=True, mode=0o700)
        try:
            rlm = RLM(
                args.model or DEFAULT_MODEL,
                args.sub_model,
                models=named_models(args),
                base_url=args.base_url,
                prices=prices_from_flags(args),
                trace_path=args.trace or folder / TRACE_FILE,
                **settings,
            )
            session = rlm.session(
                [Path(p) for p in args.context],
                session_id=session_id,
                cache="on" if args.cache is None else args.cache,
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        overrides = {}
    try:
        session.save()
        chat = Chat(
            session,
            overrides=overrides,
            progress=lambda: console_sink(quiet=args.quiet),
        )
        return chat.run()
    finally:
        session.close()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `deeprlm` parser. A lazy command gets its real parser only when `command` names
    it; otherwise it is a line in the help."""
    parser = _Parser(prog="deeprlm", description="Recursive Language Models over any chat model.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_ask(subparsers)
    _add_chat(subparsers)
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
            settings = _ask_settings(args)
        except InputError as err:
            return _bad_input(args, err)
        except DeepRLMError as err:
            _fail(str(err))
            if args.json:
                _print_failure(str(err))
            return EXIT_FAILED
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


def _ask_settings(args: argparse.Namespace) -> Settings:
    """The settings `deeprlm ask` will run with: the flags over a saved session's."""
    _check_session_flags(args)
    given = settings_from_flags(args)
    if args.resume:  # the run's own settings, unless given (its REPL kind, say)
        given = {**resume.recorded_settings(resume.read(args.resume)), **given}
    if not args.session:
        # The models are made later; their specs say whether one computes in this process.
        specs = (args.model or DEFAULT_MODEL, args.sub_model, *named_models(args).values())
        return for_models(Settings.from_kwargs(**given), given, specs)
    saved = read_session(args.session)
    known = {row.name for row in table()}
    settings = {k: v for k, v in saved.rlm["settings"].items() if k in known}
    return Settings.from_kwargs(**{**settings, **given})


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
        if as_json:
            _print_failure("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
