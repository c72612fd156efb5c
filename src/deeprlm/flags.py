"""Command-line flags made from the settings table (`deeprlm.settings`).

Each setting becomes a flag named after it (`max_iterations` -> `--max-iterations`; a
trailing `_s` is dropped and the value is in SECONDS), typed from its annotation, with its
help text and default from the table. A flag that is not given leaves the setting out, so
the library's default applies; values are checked by `Settings` itself, in one place.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from dataclasses import Field, fields
from typing import Any

from deeprlm.repl import REPL_KINDS
from deeprlm.settings import Settings


def flag_of(row: Field[Any]) -> str:
    """The row's flag: its own if the table names one ("" for none), else made from its name."""
    if row.metadata.get("flag") is not None:
        return str(row.metadata["flag"])
    return "--" + row.name.removesuffix("_s").replace("_", "-")


def _value_type(annotation: Any) -> Any:
    """int for `int | None`, str for `tuple[str, ...]`, the type itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0]
    return annotation


def add_setting_flags(
    parser: argparse.ArgumentParser,
    names: Iterable[str] | None = None,
    *,
    title: str | None = None,
    help_overrides: dict[str, str] | None = None,
    of: type[Any] = Settings,
) -> None:
    """Adds a flag for each setting in `names` (all of them by default), grouped by section,
    or in one group called `title`. `of` is the table: `Settings`, or another frozen
    dataclass whose rows are made with `deeprlm.settings.setting`."""
    wanted = set(names) if names is not None else None
    hints = typing.get_type_hints(of)
    defaults = of()
    groups: dict[str, Any] = {}
    for row in fields(of):
        flag = flag_of(row)
        if not flag or (wanted is not None and row.name not in wanted):
            continue
        section = title or row.metadata["section"]
        if section not in groups:
            groups[section] = parser.add_argument_group(section)
        help_text = (help_overrides or {}).get(row.name, row.metadata["help"])
        default = getattr(defaults, row.name)
        options: dict[str, Any] = {"dest": row.name, "default": argparse.SUPPRESS}
        kind = _value_type(hints[row.name])
        if kind is bool:
            options["action"] = "store_false" if default else "store_true"
        elif typing.get_origin(hints[row.name]) is tuple:
            options.update(action="append", type=kind, metavar=row.metadata.get("metavar"))
        else:
            options["type"] = kind
            if row.name == "repl":
                options["choices"] = sorted(REPL_KINDS)
            elif row.name.endswith("_s"):
                options["metavar"] = "SECONDS"
            else:
                options["metavar"] = row.metadata.get("metavar") or {int: "N", float: "X"}.get(kind)
            if default is not None:
                help_text += (
                    f" (default: {default:g})" if kind is float else f" (default: {default})"
                )
        options["help"] = help_text.replace("%", "%%")
        groups[section].add_argument(flag, **options)


def settings_from_flags(args: argparse.Namespace, of: type[Any] = Settings) -> dict[str, Any]:
    """The settings the command line gave, by name; the rest keep the table's defaults."""
    given = vars(args)
    result: dict[str, Any] = {}
    for row in fields(of):
        if row.name in given:
            value = given[row.name]
            result[row.name] = tuple(value) if isinstance(value, list) else value
    return result
