"""The adapters behind the `local`, `gguf:PATH` and `hf:REPO/FILE` model specs.

Each GGUF file is opened once per process: naming the same file again (a second `RLM`, a
sub model spec) returns the same `LlamaCppLM`, so its KV cache and lock are shared rather
than doubled.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

from deeprlm.errors import InputError
from deeprlm.local import hub, weights
from deeprlm.local.llama import LlamaCppLM, check_gguf

LOCAL_NAME = "qwen2.5-coder-1.5b"

_opened: dict[Path, LlamaCppLM] = {}
_opened_lock = threading.Lock()


def local_lm(*, progress: bool = True) -> LlamaCppLM:
    """The embedded default model, assembled from its installed parts on first use."""
    _require_runtime()
    path = weights.ensure_model(progress=progress)
    return open_gguf(path, name=LOCAL_NAME)


def gguf_lm(argument: str) -> LlamaCppLM:
    if not argument.strip():
        raise InputError("bad model spec 'gguf:': give a file, as in gguf:/models/model.gguf")
    _require_runtime()
    return open_gguf(Path(argument.strip()))


def hf_lm(argument: str) -> LlamaCppLM:
    hub_file = hub.parse_hub_spec(argument)
    _require_runtime()
    return open_gguf(hub.fetch(hub_file))


def open_gguf(path: Path, *, name: str | None = None) -> LlamaCppLM:
    path = check_gguf(path).resolve()
    with _opened_lock:
        lm = _opened.get(path)
        if lm is None:
            lm = _opened[path] = LlamaCppLM(path, name=name)
        return lm


def _require_runtime() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise InputError(
            "local models need llama-cpp-python, which is not installed: "
            "pip install 'deeprlm[local]'"
        )
