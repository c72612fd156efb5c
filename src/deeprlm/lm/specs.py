"""Model specs: the strings users write (`local`, `gguf:PATH`, `hf:REPO/FILE`, `openai/NAME`,
`anthropic/NAME`) and the adapters they make.

Each scheme is one entry in `SCHEMES`; a key ending in ':' or '/' is a prefix followed by
an argument, any other key is a whole spec. Adapters are imported when used, so that an
extra that is not installed costs nothing until it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from deeprlm.errors import InputError
from deeprlm.lm.base import LM, computes_in_process


@dataclass(frozen=True)
class SpecOptions:
    base_url: str | None = None
    api_key: str | None = None


Factory = Callable[[str, SpecOptions], LM]


def _openai(name: str, options: SpecOptions) -> LM:
    from deeprlm.lm.openai_compat import OpenAICompatibleLM

    return OpenAICompatibleLM(name, base_url=options.base_url, api_key=options.api_key)


def _anthropic(name: str, options: SpecOptions) -> LM:
    from deeprlm.lm.anthropic_lm import AnthropicLM

    return AnthropicLM(name, base_url=options.base_url, api_key=options.api_key)


def _local(argument: str, options: SpecOptions) -> LM:
    from deeprlm.local.models import local_lm

    return local_lm()


def _gguf(path: str, options: SpecOptions) -> LM:
    from deeprlm.local.models import gguf_lm

    return gguf_lm(path)


def _hf(repo_file: str, options: SpecOptions) -> LM:
    from deeprlm.local.models import hf_lm

    return hf_lm(repo_file)


SCHEMES: dict[str, Factory] = {
    "openai/": _openai,
    "anthropic/": _anthropic,
    "local": _local,
    "gguf:": _gguf,
    "hf:": _hf,
}

# The schemes whose models run in this process (llama.cpp): see `computes_in_process`.
_IN_PROCESS = {_local, _gguf, _hf}

DEFAULT_MODEL = "local"


def resolve_lm(spec: str | LM, *, base_url: str | None = None, api_key: str | None = None) -> LM:
    """Makes the LM a spec names. An LM object is returned as it is."""
    if not isinstance(spec, str):
        if not isinstance(spec, LM):
            raise InputError(
                f"not a model: {spec!r} (give a model spec or an LM object: name, "
                "supports_tools, context_window, prompt_family, for_role and acomplete; "
                "deeprlm.lm.LMDefaults has the usual values of all but name and acomplete)"
            )
        return spec
    factory, argument = _parse(spec)
    return factory(argument, SpecOptions(base_url=base_url, api_key=api_key))


def any_in_process(specs: Iterable[str | LM | None]) -> bool:
    """Whether one of the models the specs name computes in this process, known without
    making them (None stands for a model not given)."""
    return any(
        _parse(spec)[0] in _IN_PROCESS if isinstance(spec, str) else computes_in_process(spec)
        for spec in specs
        if spec is not None
    )


def check_spec(spec: str) -> None:
    """Raises InputError when `spec` names no known kind of model, without making the model
    (which may mean loading weights): for checking arguments before long work starts."""
    _parse(spec)


def _parse(spec: str) -> tuple[Factory, str]:
    spec = spec.strip()
    for key, factory in SCHEMES.items():
        if key.endswith((":", "/")):
            if spec.startswith(key):
                return factory, spec[len(key) :]
        elif spec == key:
            return factory, ""
    raise InputError(
        f"unknown model spec {spec!r}: use local, gguf:PATH, hf:REPO/FILE, openai/NAME "
        "or anthropic/NAME"
    )
