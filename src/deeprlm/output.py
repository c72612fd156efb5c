"""Typed answers: `RLM(output=...)` holds a run's final answer to a schema.

`output` is a JSON Schema (a dict), or a type pydantic can check (a `BaseModel`, a
dataclass, `list[int]`, ...). The schema is checked against its own metaschema before
any call: a schema that is not valid JSON Schema is bad input. A final answer is read as
JSON (inside a ```json fence too), else as a Python literal (what `FINAL(a_dict)` prints),
else as plain text, and the first reading that validates wins; `value` is the parsed
object (a model instance for a pydantic type) and `answer` its JSON. When none
validates, `problem` says what is wrong in a few lines the root model can act on.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import pydantic
from jsonschema.exceptions import best_match

from deeprlm.errors import InputError
from deeprlm.textutil import clip

_FENCED = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
PROBLEM_CHARS = 1_500
# A schema shown to the model is clipped past this: a huge schema would crowd the prompt.
SCHEMA_CHARS = 8_000


@dataclass(frozen=True)
class Checked:
    """One answer held to the schema: `value` and its JSON when it validates, else why not."""

    value: Any = None
    answer: str = ""
    problem: str | None = None


class OutputSchema:
    """The schema a run's answer must follow, and the check of an answer against it."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self._adapter: pydantic.TypeAdapter[Any] | None = None
        if isinstance(spec, Mapping):
            schema = dict(spec)
        elif isinstance(spec, type) or _is_type_form(spec):
            try:
                self._adapter = pydantic.TypeAdapter(spec)
                schema = self._adapter.json_schema()
            except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError) as err:
                raise InputError(f"output: pydantic cannot check {spec!r}: {err}") from None
        else:
            raise InputError(
                "output must be a JSON Schema (a dict) or a type pydantic can check, "
                f"not {type(spec).__name__}"
            )
        validator_class = jsonschema.validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as err:
            where = "/".join(str(p) for p in err.path) or "the top"
            raise InputError(
                f"output: not a valid JSON Schema ({clip(err.message, 300)} at {where})"
            ) from None
        self.schema: dict[str, Any] = schema
        self._validator = validator_class(schema)

    @classmethod
    def from_file(cls, path: str) -> OutputSchema:
        """`--schema FILE.json`."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise InputError(f"cannot read the schema {path}: {err.strerror or err}") from None
        try:
            schema = json.loads(text)
        except ValueError as err:
            raise InputError(f"the schema {path} is not JSON: {err}") from None
        if not isinstance(schema, dict):
            raise InputError(f"the schema {path} is not a JSON object")
        return cls(schema)

    def instruction(self) -> str:
        """What the root model is told about the answer it must give."""
        shown = clip(json.dumps(self.schema, ensure_ascii=False), SCHEMA_CHARS)
        return (
            "Your final answer must be JSON that follows this JSON Schema:\n"
            f"{shown}\n"
            "Build it as a Python value (a dict or a list) in a variable and end with "
            "FINAL_VAR(name), or pass it to FINAL(json.dumps(value))."
        )

    def retry_note(self, problem: str) -> str:
        """What the root model is told when its final answer did not validate."""
        return (
            f"Your final answer does not follow the required JSON Schema: {problem}\n"
            "Fix it and give the final answer again."
        )

    def check(self, text: str) -> Checked:
        readings = _readings(text)
        if readings and readings[0] == text.strip() and text.strip()[:1] in "{[":
            # It looks like JSON and is not: say why, rather than that a string is no object.
            try:
                json.loads(text.strip())
            except ValueError as err:
                return Checked(problem=f"the answer is not valid JSON ({err})")
        first_problem: str | None = None
        for value in readings:
            result = self._check_value(value)
            if result.problem is None:
                return result
            if first_problem is None:
                first_problem = result.problem
        if first_problem is None:  # no reading at all: only for an empty answer
            first_problem = "the answer is empty"
        return Checked(problem=clip(first_problem, PROBLEM_CHARS))

    def _check_value(self, value: Any) -> Checked:
        error = best_match(self._validator.iter_errors(value))
        if error is not None:
            where = "".join(f"[{p!r}]" for p in error.absolute_path) or "the answer"
            return Checked(problem=f"at {where}: {error.message}")
        if self._adapter is None:
            return Checked(value, json.dumps(value, ensure_ascii=False))
        try:
            parsed = self._adapter.validate_python(value)
        except pydantic.ValidationError as err:
            lines = [
                f"at {'.'.join(str(p) for p in e['loc']) or 'the answer'}: {e['msg']}"
                for e in err.errors()[:5]
            ]
            return Checked(problem="; ".join(lines))
        return Checked(parsed, self._adapter.dump_json(parsed).decode("utf-8"))

    def to_json_value(self, value: Any) -> Any:
        """`value` as plain JSON data (for `RLMResult.to_dict`)."""
        if self._adapter is None:
            return value
        return self._adapter.dump_python(value, mode="json")


def _readings(text: str) -> list[Any]:
    """The values an answer's text may mean, most likely first."""
    body = text.strip()
    fenced = _FENCED.match(body)
    if fenced:
        body = fenced.group(1).strip()
    readings: list[Any] = []
    try:
        readings.append(json.loads(body))
    except ValueError:
        try:
            literal = ast.literal_eval(body)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
        else:
            readings.append(literal)
    if body and all(not (isinstance(r, str) and r == body) for r in readings):
        readings.append(body)  # plain text, for a schema of a string
    return readings


def _is_type_form(spec: Any) -> bool:
    """`list[int]`, `int | None`, `Annotated[...]`: types that are not classes."""
    return hasattr(spec, "__origin__") or type(spec).__name__ in ("UnionType", "_UnionGenericAlias")


def as_output(value: Any) -> OutputSchema | None:
    if value is None or isinstance(value, OutputSchema):
        return value
    return OutputSchema(value)
