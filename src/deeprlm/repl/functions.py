"""The REPL's functions, in one table: `llm_query`, `llm_batch`, `llm_map`, `llm_classify`,
`rlm_query`, `rlm_batch`, `follow_chain`, and the helpers that run inside the REPL
(`search`, `chunk_text`, `records`, `run_code`, `parse_date`).

Each entry says what a function is called (and its aliases), its parameters, one line for
the model's prompt, how its arguments cross the sandbox's channel, and what serves it: a
method of the `Host` (below) that the engine implements, or, for a function that needs no
host, a factory that builds it inside the REPL. Everything else is derived from this
table: the names user tools may not take (`RESERVED_NAMES`), the functions every REPL kind
puts in its namespace (`repl_functions`, in process and in the sandbox worker alike), the
sandbox host's dispatch (`host_served` and `serve`), and the list in the system prompt
(`REPLFunction.prompt_line`).

Adding a function served by the host: an entry in `REPL_FUNCTIONS`, its method on `Host`,
and that method in the engine (`deeprlm.engine.host.RunHost`). Adding one that runs inside
the REPL (pure Python over `context`, say): an entry whose `local` names its factory.

Arguments reach the host as keyword arguments, bound to the entry's parameters in the
REPL, so `llm_batch(prompts=[...])` and `llm_batch([...])` are the same call. A parameter
marked `many` is a list: whatever iterable the code passes is made a list before it
leaves the REPL, and the host refuses anything that is not one. Across the sandbox's
channel the arguments travel as one JSON object; values JSON cannot hold are sent as
their `str()`.

This module imports only the standard library: the sandbox worker loads it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

REQUIRED: Any = inspect.Parameter.empty

# Names the REPL's session defines itself (see `deeprlm.repl.session`).
SESSION_NAMES = ("context", "FINAL", "FINAL_VAR", "SHOW_VARS", "answer")


class Host(Protocol):
    """What code in a REPL may ask of the engine: one method per host-served entry of
    `REPL_FUNCTIONS`, taking its parameters by name. All are called on the engine's loop."""

    async def llm_query(self, prompt: Any, model: str | None = None) -> str: ...

    async def llm_batch(self, prompts: list[Any], model: str | None = None) -> list[str]: ...

    async def llm_map(
        self, instruction: Any, items: Any, model: str | None = None
    ) -> list[str] | dict[str, str]: ...

    async def llm_classify(
        self, items: Any, labels: Any, instruction: Any = "", model: str | None = None
    ) -> list[str] | dict[str, str]: ...

    async def rlm_query(self, query: Any, context: Any = None) -> str: ...

    async def rlm_batch(self, pairs: list[Any]) -> list[str]: ...

    async def follow_chain(self, question: Any, where: Any = None) -> str: ...


@dataclass(frozen=True)
class Param:
    name: str
    default: Any = REQUIRED
    many: bool = False  # a list (see the module's docstring)
    # How the prompt writes it: None for its name, "" to leave it out of the prompt.
    shown: str | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class REPLFunction:
    name: str
    params: tuple[Param, ...]
    returns: str  # as the prompt writes it: "str", "list[str]"
    # One line for the prompt, after the signature. It may use {window} (what one sub-call
    # can read) and {depth_note} (said at the recursion limit); write braces as {{ }}.
    doc: str
    aliases: tuple[str, ...] = ()
    host_method: str | None = None  # the `Host` method that serves it
    # For a function that runs inside the REPL: "module:factory"; the factory takes the
    # REPL's namespace (`context` and all) and returns the function.
    local: str | None = None
    # It calls models: refused by the host, and left out of the prompt, when a run allows
    # no sub-calls.
    sub_call: bool = True
    # Made once from `params`: every call of the function binds its arguments to it.
    _signature: inspect.Signature = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.host_method is None) == (self.local is None):
            raise ValueError(f"{self.name}: give exactly one of host_method and local")
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        signature = inspect.Signature(
            [inspect.Parameter(p.name, kind, default=p.default) for p in self.params]
        )
        object.__setattr__(self, "_signature", signature)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def signature(self) -> inspect.Signature:
        return self._signature

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The call's arguments by name, defaults filled in, lists made lists. Raises the
        TypeError a Python function would, naming this one."""
        try:
            bound = self.signature().bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{self.name}(): {err}") from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        for param in self.params:
            if param.many:
                try:
                    values[param.name] = list(values[param.name])
                except TypeError:
                    kind = type(values[param.name]).__name__
                    raise TypeError(f"{self.name} takes a list, not {kind}") from None
        return values

    def from_wire(self, args: Any) -> dict[str, Any]:
        """The arguments a sandbox worker sent, checked: the worker is not trusted."""
        if not isinstance(args, dict):
            raise TypeError(f"{self.name}: the arguments must be sent by name")
        known = {p.name for p in self.params}
        unknown = sorted(str(key) for key in args if key not in known)
        if unknown:
            raise TypeError(f"{self.name}() got unexpected arguments: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name not in args:
                if param.required:
                    raise TypeError(f"{self.name}() is missing its argument {param.name!r}")
                values[param.name] = param.default
                continue
            value = args[param.name]
            if param.many and not isinstance(value, list):
                raise TypeError(f"{self.name} takes a list")
            values[param.name] = value
        return values

    def prompt_line(self, **facts: str) -> str:
        """`- name(params) -> returns: doc`, as the system prompt lists it."""
        shown = [p.name if p.shown is None else p.shown for p in self.params]
        params = ", ".join(text for text in shown if text)
        return f"- {self.name}({params}) -> {self.returns}: {self.doc.format(**facts)}"

    def local_function(self, namespace: Mapping[str, Any]) -> Callable[..., Any]:
        assert self.local is not None
        module, _, factory = self.local.partition(":")
        make: Callable[[Mapping[str, Any]], Callable[..., Any]] = getattr(
            importlib.import_module(module), factory
        )
        return make(namespace)


REPL_FUNCTIONS: tuple[REPLFunction, ...] = (
    REPLFunction(
        "llm_query",
        (Param("prompt"), Param("model", None, shown="")),
        returns="str",
        doc="asks a sub-model{window}. Use it to read or judge pieces of text.",
        host_method="llm_query",
    ),
    REPLFunction(
        "llm_batch",
        (Param("prompts", many=True), Param("model", None, shown="")),
        returns="list[str]",
        doc="many llm_query calls at once, run concurrently, answers in order (a failed "
        'item comes back as a string starting with "Error:"). Prefer it to a loop.',
        aliases=("llm_query_batched",),
        host_method="llm_batch",
    ),
    REPLFunction(
        "llm_map",
        (Param("instruction"), Param("items"), Param("model", None, shown="")),
        returns="list[str]",
        doc="one instruction applied to every item (a list; a dict gives a dict back). Short "
        "items are packed many to a sub-call, equal items asked once, answers come back in "
        "input order; an item that could not be answered is a string starting with 'Error:'.",
        host_method="llm_map",
    ),
    REPLFunction(
        "llm_classify",
        (
            Param("items"),
            Param("labels"),
            Param("instruction", "", shown='instruction=""'),
            Param("model", None, shown=""),
        ),
        returns="list[str]",
        doc="one label per item, held to `labels`, packed like llm_map. Use it to label "
        "records by meaning, then count in code.",
        host_method="llm_classify",
    ),
    REPLFunction(
        "rlm_query",
        (Param("query"), Param("context", None, shown="context")),
        returns="str",
        doc="hands a sub-question and its own context to a child RLM like you{depth_note}.",
        host_method="rlm_query",
    ),
    REPLFunction(
        "rlm_batch",
        (Param("pairs", many=True, shown="[(query, context), ...]"),),
        returns="list[str]",
        doc="several rlm_query calls at once, run concurrently, answers in order.",
        host_method="rlm_batch",
    ),
    REPLFunction(
        "follow_chain",
        (Param("question"), Param("where", None, shown="")),
        returns="str",
        doc="answers a question that reaches its subject through other things ('the founder "
        "of the sponsor of X'): link by link, a search of `context` and a helper model's "
        "answer held to the names the documents found write.",
        host_method="follow_chain",
    ),
    REPLFunction(
        "search",
        (Param("query"), Param("where", None, shown="where=context")),
        returns="hits",
        doc="words (any case, all on one line; else the lines with most of them) or a regex, "
        "in a str, list or dict alike. Each hit has .key (dict key or list index), .line, "
        ".offset, .text (the lines around it) and, in code, .scope (the function it is in); "
        "print(hits) shows them compactly.",
        local="deeprlm.primitives.search:for_repl",
        sub_call=False,
    ),
    REPLFunction(
        "chunk_text",
        (
            Param("text"),
            Param("size", 8_000, shown="size=8000"),
            Param("overlap", 0, shown="overlap=0"),
            Param("by", "chars", shown="by='chars' or 'lines'"),
        ),
        returns="list[str]",
        doc="pieces that never cut a record (a line, or a block between blank lines; a list "
        "item or dict entry).",
        local="deeprlm.primitives.chunking:for_repl",
        sub_call=False,
    ),
    REPLFunction(
        "records",
        (Param("text", None, shown="context"),),
        returns="rows",
        doc="one dict per line of a text of 'Name: value || Name: value' records (or tab, "
        "'|' or ';' separated), keyed by field name.",
        local="deeprlm.primitives.records:records_for_repl",
        sub_call=False,
    ),
    REPLFunction(
        "run_code",
        (Param("files", shown="context"), Param("expression")),
        returns="value",
        doc="evaluates a Python expression such as 'pkg.mod.f(2)' with the .py files of a dict "
        "context importable by their paths (in memory; nothing stays loaded afterwards).",
        local="deeprlm.primitives.pycode:for_repl",
        sub_call=False,
    ),
    REPLFunction(
        "parse_date",
        (Param("text"),),
        returns="date",
        doc="a date you can compare, from the usual forms ('Mar 04, 2023', '2023-03-04', ...).",
        local="deeprlm.primitives.records:parse_date_for_repl",
        sub_call=False,
    ),
)

RESERVED_NAMES = frozenset(SESSION_NAMES) | {
    name for function in REPL_FUNCTIONS for name in function.names
}

# (function, arguments by name) -> the host's answer. Each REPL kind brings its own: a call
# onto the engine's loop in process, a frame over the channel in the sandbox.
Transport = Callable[[REPLFunction, dict[str, Any]], Any]


def repl_functions(
    transport: Transport, namespace: Mapping[str, Any]
) -> dict[str, Callable[..., Any]]:
    """Every function of the table under each of its names, as the REPL's code calls them."""
    functions: dict[str, Callable[..., Any]] = {}
    for function in REPL_FUNCTIONS:
        fn = (
            function.local_function(namespace)
            if function.local is not None
            else _stub(function, transport)
        )
        for name in function.names:
            functions[name] = fn
    return functions


def _stub(function: REPLFunction, transport: Transport) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return transport(function, function.bind(args, kwargs))

    call.__name__ = call.__qualname__ = function.name
    call.__signature__ = function.signature()  # type: ignore[attr-defined]
    call.__doc__ = function.doc.format(window="", depth_note="")
    return call


def host_served(name: Any) -> REPLFunction | None:
    """The host-served entry a worker's call names, if any."""
    for function in REPL_FUNCTIONS:
        if function.name == name and function.host_method is not None:
            return function
    return None


async def serve(host: Host, function: REPLFunction, arguments: dict[str, Any]) -> Any:
    """Runs a host-served function on the engine's loop."""
    assert function.host_method is not None
    method = getattr(host, function.host_method)
    return await method(**arguments)
