"""What a server is configured with: its own limits (`ServerSettings`, one table whose rows
become `deeprlm serve`'s flags) and the model setups clients pick by name (`Setup`).

A setup is what a model name in a request means: a root and a sub model, named models for
sub-calls, and run settings (`deeprlm.settings.Settings`), which are also the most a
request may ask for. Setups come from a TOML file, from the command line, or both:

    [server]
    max_runs = 4
    api_keys = ["..."]            # or DEEPRLM_API_KEY, or --api-key

    [models.deeprlm]              # clients send model="deeprlm"
    model = "openai/gpt-5"
    sub_model = "openai/gpt-5-mini"
    base_url = "https://..."      # for openai/NAME specs
    sub_models = { fast = "openai/gpt-5-nano" }
    prices = "prices.toml"        # as deeprlm ask --prices: a USD budget needs a price
    max_usd = 1.0                 # any setting of the settings table
    timeout_s = 600
    sandbox = { memory_mb = 2048 }
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from deeprlm.errors import InputError
from deeprlm.lm.specs import DEFAULT_MODEL, check_spec
from deeprlm.settings import Settings, check_rows, setting

SERVER = "the server"
# The environment variable holding the server's API key(s), comma-separated.
API_KEY_ENV = "DEEPRLM_API_KEY"
DEFAULT_SETUP = "deeprlm"
MB = 1_000_000


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting(
        "127.0.0.1",
        help="address to listen on; any but a loopback address needs an API key",
        section=SERVER,
        metavar="ADDRESS",
    )
    port: int = setting(
        8000, help="port (0 picks a free one)", section=SERVER, check="non-negative"
    )
    max_runs: int = setting(
        4, help="runs at once; more wait in a queue", section=SERVER, check="positive"
    )
    max_queued: int = setting(
        16,
        help="runs waiting for a slot; past that a request gets 429 with Retry-After",
        section=SERVER,
        check="non-negative",
    )
    max_body_mb: float = setting(
        32.0,
        help="one request body (a chat completion, an upload)",
        section=SERVER,
        check="positive",
    )
    max_context_mb: float = setting(
        256.0,
        help="what one uploaded context may unpack to (an archive's declared sizes, added up "
        "before anything is unpacked), and what load_context may read",
        section=SERVER,
        check="positive",
    )
    max_files: int = setting(
        20_000, help="members of one uploaded archive", section=SERVER, check="positive"
    )
    max_contexts: int = setting(
        64, help="contexts loaded at once, across all keys", section=SERVER, check="positive"
    )
    keep_runs: int = setting(
        1_000,
        help="finished runs whose status and trace are kept (the oldest go first)",
        section=SERVER,
        check="positive",
    )
    trace_dir: str | None = setting(
        None,
        help="folder for the runs' traces (default: a temporary folder, removed at exit)",
        section=SERVER,
        metavar="DIR",
    )
    max_connections: int = setting(
        2_048,
        help="open connections; one past it is closed at once",
        section=SERVER,
        check="positive",
    )
    header_timeout_s: float = setting(
        15.0,
        help="a connection must send a request's headers within this",
        section=SERVER,
        check="positive",
    )
    body_timeout_s: float = setting(
        30.0,
        help="a request body may pause this long before the request is dropped",
        section=SERVER,
        check="positive",
    )
    write_timeout_s: float = setting(
        60.0,
        help="a client that reads nothing of its response this long is dropped",
        section=SERVER,
        check="positive",
    )

    def __post_init__(self) -> None:
        check_rows(self)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MB)

    @property
    def max_context_bytes(self) -> int:
        return int(self.max_context_mb * MB)


@dataclass(frozen=True)
class Setup:
    """One model name a client may ask for, and what it runs."""

    name: str
    model: str = DEFAULT_MODEL
    sub_model: str | None = None
    sub_models: dict[str, str] = field(default_factory=dict)
    base_url: str | None = None
    api_key_env: str | None = None  # which variable holds the provider's key
    prices: str | None = None  # a prices file (USD per million tokens; a USD budget needs one)
    settings: Settings = field(default_factory=Settings)

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/models` says about it: the models and the limits (never a key)."""
        limits = {
            name: value
            for name, value in self.settings.to_dict().items()
            if name not in ("sandbox", "allow_read")
        }
        return {
            "model": self.model,
            "sub_model": self.sub_model or self.model,
            "sub_models": dict(self.sub_models),
            "settings": limits,
        }


@dataclass(frozen=True)
class ServeConfig:
    server: ServerSettings
    setups: dict[str, Setup]
    api_keys: tuple[str, ...] = ()


SETUP_KEYS = ("model", "sub_model", "sub_models", "base_url", "api_key_env", "prices")


def load_file(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as err:
        raise InputError(f"cannot read config {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"config {path} is not valid TOML: {err}") from None


def build_config(
    data: Mapping[str, Any],
    *,
    server_flags: Mapping[str, Any],
    cli_setup: Mapping[str, Any] | None,
    setting_flags: Mapping[str, Any],
    api_keys: tuple[str, ...] = (),
    environ: Mapping[str, str] = os.environ,
) -> ServeConfig:
    """The server's configuration from a config file's `data`, the server's own flags, a
    setup made on the command line (`cli_setup`: name, model, ...; None for none) and the
    settings flags, which win over the file for every setup."""
    unknown = sorted(set(data) - {"server", "models"})
    if unknown:
        raise InputError(f"config: unknown section(s): {', '.join(unknown)}")
    server_data = dict(_table(data, "server"))
    file_keys = server_data.pop("api_keys", [])
    if not isinstance(file_keys, list) or not all(isinstance(k, str) for k in file_keys):
        raise InputError("config: server.api_keys must be a list of strings")
    known = {f.name for f in fields(ServerSettings)}
    unknown = sorted(set(server_data) - known)
    if unknown:
        raise InputError(f"config: unknown server setting(s): {', '.join(unknown)}")
    server = _make(ServerSettings, {**server_data, **server_flags}, "server")

    setups: dict[str, Setup] = {}
    for name, table in _table(data, "models").items():
        if not isinstance(table, Mapping):
            raise InputError(f"config: models.{name} must be a table")
        setups[name] = make_setup(name, table, setting_flags)
    if cli_setup is not None:
        name = cli_setup["name"]
        if name in setups:
            raise InputError(f"model {name!r} is set both in the config file and by --model")
        setups[name] = make_setup(
            name, {k: v for k, v in cli_setup.items() if k != "name"}, setting_flags
        )
    if not setups:
        setups[DEFAULT_SETUP] = make_setup(DEFAULT_SETUP, {}, setting_flags)

    env_keys = tuple(k.strip() for k in environ.get(API_KEY_ENV, "").split(",") if k.strip())
    keys = tuple(dict.fromkeys((*api_keys, *env_keys, *file_keys)))
    if any(len(k) < 16 for k in keys):
        raise InputError("an API key must be at least 16 characters long")
    return ServeConfig(server, setups, keys)


def make_setup(name: str, table: Mapping[str, Any], setting_flags: Mapping[str, Any]) -> Setup:
    if not name or not name.strip() or name != name.strip():
        raise InputError(f"a model name must be a non-empty word, got {name!r}")
    options = {k: table[k] for k in SETUP_KEYS if table.get(k) is not None}
    for spec in (
        options.get("model"),
        options.get("sub_model"),
        *options.get("sub_models", {}).values(),
    ):
        if spec is not None:
            if not isinstance(spec, str):
                raise InputError(f"models.{name}: a model spec must be a string, got {spec!r}")
            check_spec(spec)
    settings = {k: v for k, v in table.items() if k not in SETUP_KEYS}
    settings.update(setting_flags)
    return Setup(name=name, settings=_make(Settings, settings, f"models.{name}"), **options)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise InputError(f"config: [{key}] must be a table")
    return value


def _make(cls: Any, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{where}: unknown setting(s): {', '.join(unknown)}")
    try:
        return cls(**values)
    except TypeError as err:  # a value of the wrong type that the checks tripped over
        raise InputError(f"{where}: {err}") from None
