"""The questions file of `deeprlm batch`: one JSON object per line, read into `Question`s.

    {"id": "q1", "query": "...", "context": "inline text"}
    {"id": "q2", "query": "...", "context": ["doc a", "doc b"]}          # or {"name": "text"}
    {"id": "q3", "query": "...", "paths": ["notes/", "log.txt"]}        # files and folders
    {"id": "q4", "query": "...", "shared": "archive"}                   # --shared archive=PATH
    {"id": "q5", "query": "...", "paths": "a.txt", "limits": {"max_usd": 0.5},
     "schema": {"type": "object"}, "gold": "42", "scorer": "exact", "meta": {...}}

Each question names its context one way: `context` (the text itself), `paths` (read when
the question is scheduled, relative to the questions file's folder) or `shared` (a context
named on the command line, loaded once for every question that names it). `limits` are
settings of the loop, recursion and budget sections for this question only; `schema` asks
for a typed answer; `gold` and `scorer` give the reward a trajectory carries; `meta` is
copied to the question's result as it is.

A line that cannot be a question (not JSON, a missing field, a duplicate id, an unknown
setting) is a `LineProblem` with its line number; the caller decides whether it is skipped
or refuses the batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeprlm.context import normalize
from deeprlm.errors import InputError
from deeprlm.output import OutputSchema
from deeprlm.repl.base import ContextValue
from deeprlm.settings import BUDGETS, LOOP, RECURSION, Settings, table

FIELDS = ("id", "query", "context", "paths", "shared", "limits", "schema", "gold", "scorer", "meta")
CONTEXT_FIELDS = ("context", "paths", "shared")
# The settings a line may change for its own question: how long and how deep it may go and
# what it may spend, never where code runs or what it may read.
LIMIT_SECTIONS = (LOOP, RECURSION, BUDGETS)
LIMIT_NAMES = frozenset(row.name for row in table() if row.metadata["section"] in LIMIT_SECTIONS)


@dataclass(frozen=True)
class ContextRef:
    """Where a question's context comes from: exactly one of `inline`, `paths`, `shared`."""

    inline: ContextValue | None = None
    paths: tuple[str, ...] = ()  # absolute
    shared: str | None = None

    @property
    def key(self) -> tuple[str, ...] | None:
        """What questions with the same context have in common (None: its own, inline)."""
        if self.shared is not None:
            return ("shared", self.shared)
        if self.paths:
            return ("paths", *self.paths)
        return None


@dataclass(frozen=True)
class Question:
    id: str
    query: str
    context: ContextRef
    line: int
    limits: Mapping[str, Any] = field(default_factory=dict)
    schema: Mapping[str, Any] | None = None
    gold: Any = None
    scorer: str | None = None
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LineProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def read_questions(
    path: Path,
    *,
    shared: Mapping[str, Any] | None = None,
    base: Settings | None = None,
    scorers: frozenset[str] | None = None,
) -> tuple[list[Question], list[LineProblem]]:
    """Every question of the file, and a problem for each line that is not one. `shared`
    names the contexts given on the command line, `base` the settings `limits` change, and
    `scorers` the scorer names a line may give (None: any is accepted here)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"questions file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"the questions file is a folder: {path}") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    folder = path.resolve().parent
    questions: list[Question] = []
    problems: list[LineProblem] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            question = _parse_line(raw, number, folder, shared or {}, base or Settings(), scorers)
        except _Bad as bad:
            problems.append(LineProblem(number, str(bad)))
            continue
        if question.id in first_seen:
            first = first_seen[question.id]
            problems.append(
                LineProblem(number, f"duplicate id {question.id!r} (first on line {first})")
            )
            continue
        first_seen[question.id] = number
        questions.append(question)
    return questions, problems


class _Bad(Exception):
    """Why one line is not a question."""


def _parse_line(
    raw: bytes,
    number: int,
    folder: Path,
    shared: Mapping[str, Any],
    base: Settings,
    scorers: frozenset[str] | None,
) -> Question:
    try:
        item = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Bad("not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise _Bad(f"not JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(item, dict):
        raise _Bad(f"expected a JSON object, got {type(item).__name__}")
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise _Bad(
            f"unknown field(s) {', '.join(map(repr, unknown))}; the fields are "
            f'{", ".join(FIELDS)} (put other data under "meta")'
        )
    qid = item.get("id")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        raise _Bad('"id" is missing or empty (a string or an integer)')
    query = item.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _Bad('"query" is missing or empty')
    return Question(
        id=str(qid),
        query=query,
        context=_context(item, folder, shared),
        line=number,
        limits=_limits(item.get("limits"), base),
        schema=_schema(item.get("schema")),
        gold=item.get("gold"),
        scorer=_scorer(item, scorers),
        meta=_meta(item.get("meta")),
    )


def _context(item: dict[str, Any], folder: Path, shared: Mapping[str, Any]) -> ContextRef:
    given = [name for name in CONTEXT_FIELDS if name in item]
    if len(given) != 1:
        which = "none" if not given else " and ".join(given)
        raise _Bad(f"give the context one way, as context, paths or shared (got {which})")
    if "context" in item:
        try:
            return ContextRef(inline=normalize(item["context"]))
        except InputError as err:
            raise _Bad(str(err)) from None
    if "shared" in item:
        name = item["shared"]
        if not isinstance(name, str) or name not in shared:
            known = ", ".join(sorted(shared)) or "none given; pass --shared NAME=PATH"
            raise _Bad(f"no shared context named {name!r} (known: {known})")
        return ContextRef(shared=name)
    paths = item["paths"]
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise _Bad('"paths" must be a path or a non-empty list of paths')
    return ContextRef(paths=tuple(str(folder / p) for p in paths))


def _limits(limits: Any, base: Settings) -> dict[str, Any]:
    if limits is None:
        return {}
    if not isinstance(limits, dict):
        raise _Bad('"limits" must be an object of settings')
    unknown = sorted(set(limits) - LIMIT_NAMES)
    if unknown:
        raise _Bad(
            f"limits: {', '.join(map(repr, unknown))} cannot be set per question; these can: "
            f"{', '.join(sorted(LIMIT_NAMES))}"
        )
    try:
        Settings.from_kwargs(**{**base.to_dict(), **limits})
    except (InputError, TypeError) as err:
        raise _Bad(f"limits: {err}") from None
    return dict(limits)


def _schema(schema: Any) -> dict[str, Any] | None:
    """A JSON Schema for the typed answer, checked against its metaschema as `RLM` does."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise _Bad('"schema" must be a JSON Schema object')
    try:
        OutputSchema(schema)
    except InputError as err:
        raise _Bad(str(err).replace("output: ", "schema: ", 1)) from None
    return schema


def _scorer(item: dict[str, Any], scorers: frozenset[str] | None) -> str | None:
    scorer = item.get("scorer")
    if scorer is None:
        return None
    if not isinstance(scorer, str):
        raise _Bad('"scorer" must be the name of a scorer')
    if "gold" not in item:
        raise _Bad('"scorer" needs a "gold" answer to score against')
    if scorers is not None and scorer not in scorers:
        raise _Bad(f"unknown scorer {scorer!r}; known: {', '.join(sorted(scorers))}")
    return scorer


def _meta(meta: Any) -> dict[str, Any] | None:
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise _Bad('"meta" must be an object')
    return meta
