"""The command-line options `deeprlm serve` and `deeprlm mcp` share: a config file, a model
setup made from flags, the run settings' flags (from the settings table) and the server's
own (from `ServerSettings`), and how they become a `ServeConfig`.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Iterable
from typing import Any

from deeprlm.errors import InputError
from deeprlm.flags import (
    add_setting_flags,
    named_models,
    parse_named_models,
    settings_from_flags,
)
from deeprlm.serve.config import DEFAULT_SETUP, ServeConfig, ServerSettings, build_config, load_file
from deeprlm.settings import table


def add_model_options(parser: argparse.ArgumentParser, *, exclude: Iterable[str] = ()) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="server settings and named model setups ([server], [models.NAME])",
    )
    models = parser.add_argument_group(
        "the model setup made on the command line (besides any in --config)"
    )
    models.add_argument(
        "--name",
        default=DEFAULT_SETUP,
        help="the model name clients ask for (default: %(default)s)",
    )
    models.add_argument(
        "--model", "-m", metavar="SPEC", help="root model: local, gguf:PATH, openai/NAME, ..."
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
        help="more models the code may pick by name (repeatable)",
    )
    models.add_argument(
        "--base-url", metavar="URL", help="OpenAI-compatible server for openai/NAME specs"
    )
    models.add_argument(
        "--prices",
        metavar="FILE.toml",
        help="a prices file (USD per million tokens, as for deeprlm ask); a USD budget needs "
        "the price of every model",
    )
    excluded = set(exclude)
    add_setting_flags(
        parser,
        [row.name for row in table() if row.name not in excluded],
        title="run settings, for every model setup (a request may lower the bounds, never "
        "raise them)",
    )


def add_server_options(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    add_setting_flags(parser, names, of=ServerSettings)
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a key clients must send as 'Authorization: Bearer KEY' (repeatable; other "
        "users of this machine can see it in the process list: prefer DEEPRLM_API_KEY)",
    )


def config_from_args(
    args: argparse.Namespace, server_names: Iterable[str] | None = None
) -> ServeConfig:
    data = load_file(args.config) if args.config else {}
    cli_setup: dict[str, Any] | None = None
    if args.model or not data.get("models"):
        cli_setup = {
            "name": args.name,
            "model": args.model,
            "sub_model": args.sub_model,
            "sub_models": named_models(args),
            "base_url": args.base_url,
            "prices": args.prices,
        }
    elif args.sub_model or args.sub_models or args.base_url or args.prices:
        raise InputError("--sub-model, --sub-models, --base-url and --prices go with --model")
    server_flags = settings_from_flags(args, of=ServerSettings)
    if server_names is not None:
        server_flags = {k: v for k, v in server_flags.items() if k in set(server_names)}
    return build_config(
        data,
        server_flags=server_flags,
        cli_setup=cli_setup,
        setting_flags=settings_from_flags(args),
        api_keys=tuple(getattr(args, "api_key", ())),
    )


def require(extra: str, *modules: str) -> None:
    """A clear error, not an ImportError, when an extra is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(
            f"this needs the {extra} extra ({', '.join(missing)} not installed): "
            f"pip install 'deeprlm[{extra}]'"
        )
