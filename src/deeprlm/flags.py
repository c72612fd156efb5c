"""Command-line flags made from the settings table (`deeprlm.settings`).

Each setting becomes a flag named after it (`max_iterations` -> `--max-iterations`; a
trailing `_s` is dropped and the value is in SECONDS), typed from its annotation, with its
help text and default from the table. A flag that is not given leaves the setting out, so
the library's default applies; values are checked by `Settings` itself, in one place.
The model flags (`--model`, `--sub-model`, `--sub-models`, `--base-url`) and the price flags
(`--price`, `--prices`) of `deeprlm batch` are made here too; `ask` defines the same ones in
`deeprlm.cli`.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable
from dataclasses import Field, fields
from typing import Any

from deeprlm.lm.specs import DEFAULT_MODEL
from deeprlm.repl import REPL_KINDS
from deeprlm.settings import Settings
from deeprlm.usage import Price, load_prices, parse_price


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


def parse_named_models(text: str) -> dict[str, str]:
    """Parses NAME=SPEC[,NAME=SPEC] (the --sub-models flag)."""
    models = {}
    for item in text.split(","):
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=SPEC, got {item!r}")
        models[name.strip()] = spec.strip()
    return models


def add_model_flags(parser: argparse.ArgumentParser, *, default_said: str | None = None) -> None:
    """The models group. `default_said`: for a command that decides the root model's
    default itself (`--model` is then None when not given), how the help states it."""
    models = parser.add_argument_group("models")
    models.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL if default_said is None else None,
        metavar="SPEC",
        help="root model: local, gguf:PATH, hf:REPO/FILE, openai/NAME, "
        f"anthropic/NAME (default: {default_said or DEFAULT_MODEL})",
    )
    models.add_argument(
        "--sub-model", metavar="SPEC", help="model for sub-calls (default: --model)"
    )
    models.add_argument(
        "--sub-models",
        action="append",
        default=[],
        type=parse_named_models,
        metavar="NAME=SPEC[,NAME=SPEC]",
        help="more models the code may pick by name, as llm_query(p, model=NAME); "
        "repeatable (the code can name only these, root and sub)",
    )
    models.add_argument(
        "--base-url",
        metavar="URL",
        help="OpenAI-compatible server for openai/NAME (or OPENAI_BASE_URL)",
    )


def named_models(args: argparse.Namespace) -> dict[str, str]:
    """The --sub-models given, by name."""
    return {name: spec for group in args.sub_models for name, spec in group.items()}


def add_price_flags(parser: argparse.ArgumentParser) -> None:
    prices = parser.add_argument_group("prices (USD per million tokens; a USD budget needs one)")
    prices.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=IN,OUT",
        help="a model's input and output price, e.g. my-model=0.5,1.5 (repeatable)",
    )
    prices.add_argument(
        "--prices",
        metavar="FILE.toml",
        help='a prices file: a table per model, e.g. ["my-model"] input = 0.5 output = 1.5',
    )


def prices_from_flags(args: argparse.Namespace) -> dict[str, Price]:
    """--prices FILE, then each --price (which wins for its model)."""
    prices = load_prices(args.prices) if args.prices else {}
    prices.update(parse_price(spec) for spec in args.price)
    return prices
