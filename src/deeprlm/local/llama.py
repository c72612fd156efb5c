"""`LlamaCppLM`: a GGUF model run by llama.cpp in a child process deeprlm owns.

The model's native code runs in that child (`deeprlm.local.worker`), so that a crash in it
(a build for another CPU, a corrupt file, memory running out) fails one call with an
`LMError` instead of killing the user's process: the run ends like any failed run, with its
partial answer, usage and trace, and the next call starts a fresh child. No server and no
port: the two talk over a socketpair (`deeprlm.local.protocol`).

The child loads the file once and keeps one llama.cpp context per role, each with its own
KV cache: `lm.for_role("sub")` returns a twin that shares the child, the settings and one
lock, so sub-calls never evict the root conversation's cached prefix (see
`deeprlm.local.runtime`). Calls are serialised by that lock; two cores gain nothing from
interleaving them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deeprlm.errors import InputError, LMError
from deeprlm.lm.base import Completion, Message, ToolSpec
from deeprlm.local import protocol
from deeprlm.local.process import Cancelled, ModelProcess
from deeprlm.usage import Price

DEFAULT_CONTEXT_WINDOW = 32_768
DEFAULT_MAX_TOKENS = 1_024
# GGUF files below this size hold models of a few billion parameters at most; they follow
# a worked example better than instructions (see `deeprlm.prompts`).
SMALL_MODEL_BYTES = 5_000_000_000
# How much of a model file identifies it for the sub-call cache (see `_Shared.fingerprint`).
FINGERPRINT_BYTES = 1 << 20
_GGUF_MAGIC = b"GGUF"


def available_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LlamaSettings:
    """How each llama.cpp context is made and how it samples."""

    context_window: int = DEFAULT_CONTEXT_WINDOW
    threads: int = 0  # 0: every available core
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    repeat_penalty: float = 1.05
    seed: int = 0
    batch: int = 512
    flash_attn: bool = True

    def for_child(self) -> dict[str, Any]:
        return {**asdict(self), "threads": self.threads or available_cores()}


def check_gguf(path: Path) -> Path:
    """Fails with one clear line unless `path` is a readable GGUF file."""
    path = path.expanduser()
    if not path.is_file():
        raise InputError(f"no GGUF model file at {path}")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise InputError(f"cannot read the model file {path}: {exc.strerror}") from exc
    if magic != _GGUF_MAGIC:
        raise InputError(f"{path} is not a GGUF model file")
    return path


class _Shared:
    """What the role twins of one model share: the file, settings, lock and child."""

    def __init__(self, path: Path, settings: LlamaSettings, name: str) -> None:
        self.path = path
        self.settings = settings
        self.name = name
        self.lock = threading.Lock()
        self.process: ModelProcess | None = None
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """Which weights these are, whatever the file is called: its size and a hash of
        its first MiB (the GGUF header: architecture, metadata, tensor table). Two models
        named alike (`model.gguf` in two folders) then never share sub-call cache entries."""
        if self._fingerprint is None:
            with self.path.open("rb") as handle:
                head = handle.read(FINGERPRINT_BYTES)
            size = self.path.stat().st_size
            self._fingerprint = f"{size}:{hashlib.sha256(head).hexdigest()[:32]}"
        return self._fingerprint

    def request(
        self, message: dict[str, Any], during: str, cancel: threading.Event
    ) -> dict[str, Any] | None:
        """One request to the child, started first if need be. None when `cancel` made
        the child stop before it answered. Call with the lock held."""
        try:
            if self.process is None or not self.process.alive():
                self.process = None
                process = ModelProcess(self.path, self.settings.for_child(), self.name)
                process.start(cancel)
                self.process = process
            return self.process.request(message, during, cancel)
        except Cancelled:
            self.stop()
            return None
        except BaseException:
            # A crash has ended the child already; anything else (an interrupt) leaves a
            # request in flight: the next call starts afresh either way.
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None


class LlamaCppLM:
    """A chat model over one GGUF file. `context_window` is in tokens."""

    supports_tools = False
    price = Price(0.0, 0.0)  # runs on this machine: a USD budget has nothing to count
    # No server to hang (a crash of its process is an error at once), and on a busy CPU one
    # long reply may rightly take minutes: `call_timeout_s` does not apply to it.
    in_process = True

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        settings: LlamaSettings | None = None,
        role: str = "root",
        prompt_family: str | None = None,
        _shared: _Shared | None = None,
    ) -> None:
        if _shared is None:
            path = check_gguf(Path(model_path))
            _shared = _Shared(
                path, settings or LlamaSettings(), name or path.name.removesuffix(".gguf")
            )
        self._shared = _shared
        self.role = role
        self.name = _shared.name
        self.context_window = _shared.settings.context_window
        if prompt_family is None:
            small = _shared.path.stat().st_size < SMALL_MODEL_BYTES
            prompt_family = "small" if small else "default"
        self.prompt_family = prompt_family
        self._twins: dict[str, LlamaCppLM] = {role: self}

    @property
    def inline_labels(self) -> bool:
        """Whether it reads each item of a pack of labels alone just before labelling it: the
        greedy fast path does (`deeprlm.local.labels`); a sampled reply comes under a
        grammar that holds the labels only, so its items must be in the prompt."""
        return self._shared.settings.temperature <= 0.0

    @property
    def path(self) -> Path:
        return self._shared.path

    @property
    def settings(self) -> LlamaSettings:
        return self._shared.settings

    @property
    def default_max_tokens(self) -> int:
        """The reply cap used when a call gives none."""
        return self._shared.settings.max_tokens

    @property
    def sampling(self) -> dict[str, Any]:
        """What besides the messages shapes a reply (read by the sub-call cache)."""
        s = self._shared.settings
        return {
            "temperature": s.temperature,
            "seed": s.seed,
            "repeat_penalty": s.repeat_penalty,
            "context_window": s.context_window,
            "weights": self._shared.fingerprint(),
        }

    @property
    def process_id(self) -> int | None:
        """The pid of the child running the model, None while there is none."""
        process = self._shared.process
        return process.pid if process is not None and process.alive() else None

    def for_role(self, role: str) -> LlamaCppLM:
        """The same model with its own KV cache for `role` ("root", "sub", ...)."""
        twin = self._twins.get(role)
        if twin is None:
            twin = LlamaCppLM(
                self.path, role=role, prompt_family=self.prompt_family, _shared=self._shared
            )
            twin._twins = self._twins
            self._twins[role] = twin
        return twin

    def load(self) -> None:
        """Starts the child, loads the model and this role's context now rather than on
        the first call."""
        with self._shared.lock:
            answer = self._shared.request(
                {"op": "open", "role": self.role}, "while making a context", threading.Event()
            )
        if answer is not None and not answer.get("ok"):
            raise LMError(str(answer.get("message")))

    def build_info(self) -> dict[str, Any]:
        """What the child's llama.cpp says about itself: `version` and `system_info` (its
        compiled features). Starts the child if need be."""
        self.load()
        process = self._shared.process
        return dict(process.hello) if process is not None else {}

    def close(self) -> None:
        """Ends the child and frees every role's context; a later call starts it again."""
        with self._shared.lock:
            self._shared.stop()

    def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """One reply. `schema`: a JSON Schema the reply's text must follow (the child holds
        the model to it with a grammar). Setting `cancel` (from another thread) stops the
        call within one batch of prompt tokens or one generated token; the reply so far
        comes back with `finish_reason="cancelled"`."""
        cancel = cancel or threading.Event()
        message = {
            "op": "complete",
            "role": self.role,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
            "schema": None if schema is None else _plain_schema(schema),
        }
        with self._shared.lock:
            if cancel.is_set():
                return self._completion({}, "cancelled")
            answer = self._shared.request(message, "during a call", cancel)
        if answer is None:
            return self._completion({}, "cancelled")
        if not answer.get("ok"):
            text = str(answer.get("message"))
            if answer.get("kind") == protocol.SCHEMA:
                text = f"llama.cpp cannot hold a reply to this schema: {text}"
            elif answer.get("kind") == protocol.FAILED:
                text = f"llama.cpp failed: {text}"
            raise LMError(text)
        return self._completion(answer, answer.get("finish_reason"))

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        # The waiting thread cannot be killed, so a cancelled caller (a wall-clock limit)
        # raises a flag that it passes on to the child, which checks it between steps.
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(
                self.complete, messages, max_tokens=max_tokens, schema=schema, cancel=cancel
            )
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _completion(self, answer: dict[str, Any], reason: str | None) -> Completion:
        return Completion(
            text=str(answer.get("text", "")),
            model=self.name,
            input_tokens=int(answer.get("input_tokens", 0)),
            output_tokens=int(answer.get("output_tokens", 0)),
            cached_tokens=int(answer.get("cached_tokens", 0)),
            cost_usd=0.0,
            finish_reason=reason,
        )


def _plain_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` as plain JSON for the wire (any Mapping inside it becomes a dict)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError(f"{type(value).__name__} is not JSON")

    try:
        result: dict[str, Any] = json.loads(json.dumps(schema, default=plain))
    except (TypeError, ValueError) as exc:
        raise LMError(f"llama.cpp cannot hold a reply to this schema: {exc}") from exc
    return result
