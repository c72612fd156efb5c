"""`LlamaCppLM`: a GGUF model run in process through llama-cpp-python.

Prefix reuse is the point of this adapter. llama.cpp keeps the tokens it has evaluated in
a context's KV cache, and a new prompt that starts with them only pays for its new tail. A
root conversation only grows, so each root turn costs just its new tokens, as long as
nothing else uses the same context in between. Sub-calls would, so every role ("root",
"sub", or any name) gets a context of its own: `lm.for_role("sub")` returns a twin that
shares the weights (mmapped once by the OS), the chat template and one lock, but not the
cache. Calls are serialised by that lock; two cores gain nothing from interleaving them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprlm.errors import InputError, LMError
from deeprlm.lm.base import Completion, Message, ToolSpec
from deeprlm.usage import Price

DEFAULT_CONTEXT_WINDOW = 32_768
DEFAULT_MAX_TOKENS = 1_024
# GGUF files below this size hold models of a few billion parameters at most; they follow
# a worked example better than instructions (see `deeprlm.prompts`).
SMALL_MODEL_BYTES = 5_000_000_000
# How much of a model file identifies it for the sub-call cache (see `_Shared.fingerprint`).
FINGERPRINT_BYTES = 1 << 20
_GGUF_MAGIC = b"GGUF"
# Used only when a GGUF carries no chat template of its own.
_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


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
    """What the role twins of one model share: the file, settings, lock, and contexts."""

    def __init__(self, path: Path, settings: LlamaSettings) -> None:
        self.path = path
        self.settings = settings
        self.lock = threading.Lock()
        self.contexts: dict[str, Any] = {}
        self.formatter: Any = None
        self.grammars: dict[str, Any] = {}  # JSON Schema text -> compiled grammar
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

    def grammar(self, schema: Mapping[str, Any]) -> Any:
        """The llama.cpp grammar that holds a reply to `schema`, compiled once per schema."""
        key = json.dumps(schema, sort_keys=True)
        grammar = self.grammars.get(key)
        if grammar is None:
            from llama_cpp import LlamaGrammar

            try:
                grammar = LlamaGrammar.from_json_schema(key, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise InputError(
                    f"llama.cpp cannot turn this JSON Schema into a grammar: {exc}"
                ) from None
            self.grammars[key] = grammar
        return grammar

    def context(self, role: str) -> Any:
        """The llama.cpp context of `role`, loaded on first use. Call with the lock held."""
        llm = self.contexts.get(role)
        if llm is None:
            llm = self._load()
            self.contexts[role] = llm
            if self.formatter is None:
                self.formatter = _chat_formatter(llm)
        return llm

    def _load(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise InputError(
                "the embedded model needs llama-cpp-python: pip install 'deeprlm[local]'"
            ) from exc
        threads = self.settings.threads or available_cores()
        try:
            return Llama(
                str(self.path),
                n_ctx=self.settings.context_window,
                n_batch=self.settings.batch,
                n_threads=threads,
                n_threads_batch=threads,
                seed=self.settings.seed,
                flash_attn=self.settings.flash_attn,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"llama.cpp cannot load {self.path}: {exc}") from exc


def _chat_formatter(llm: Any) -> Any:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def token_text(token: int) -> str:
        if token < 0:
            return ""
        return llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    template = llm.metadata.get("tokenizer.chat_template") or _CHATML
    return Jinja2ChatFormatter(
        template=template,
        eos_token=token_text(llm.token_eos()),
        bos_token=token_text(llm.token_bos()),
        add_generation_prompt=True,
    )


class LlamaCppLM:
    """A chat model over one GGUF file. `context_window` is in tokens."""

    supports_tools = False
    price = Price(0.0, 0.0)  # runs in this process: a USD budget has nothing to count
    in_process = True  # no server to hang: `call_timeout_s` does not apply

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
            _shared = _Shared(check_gguf(Path(model_path)), settings or LlamaSettings())
        self._shared = _shared
        self.role = role
        self.name = name or _shared.path.name.removesuffix(".gguf")
        self.context_window = _shared.settings.context_window
        if prompt_family is None:
            small = _shared.path.stat().st_size < SMALL_MODEL_BYTES
            prompt_family = "small" if small else "default"
        self.prompt_family = prompt_family
        self._twins: dict[str, LlamaCppLM] = {role: self}

    @property
    def path(self) -> Path:
        return self._shared.path

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

    def for_role(self, role: str) -> LlamaCppLM:
        """The same model with its own KV cache for `role` ("root", "sub", ...)."""
        twin = self._twins.get(role)
        if twin is None:
            twin = LlamaCppLM(
                self.path,
                name=self.name,
                role=role,
                prompt_family=self.prompt_family,
                _shared=self._shared,
            )
            twin._twins = self._twins
            self._twins[role] = twin
        return twin

    def load(self) -> None:
        """Loads this role's context now rather than on the first call."""
        with self._shared.lock:
            self._shared.context(self.role)

    def close(self) -> None:
        """Frees every role's context; the object loads them again if called later."""
        with self._shared.lock:
            for llm in self._shared.contexts.values():
                llm.close()
            self._shared.contexts.clear()

    def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """One reply. Setting `cancel` (from another thread) stops the call within one
        batch of prompt tokens or one generated token; the reply so far comes back with
        `finish_reason="cancelled"`. A `schema` (JSON Schema) is enforced by a grammar: the
        model can only sample tokens that keep the reply valid."""
        return self._complete(messages, max_tokens, schema, cancel or threading.Event())

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        # A worker thread cannot be killed, so a cancelled caller (a wall-clock limit) raises
        # a flag that prompt evaluation and sampling check between steps.
        cancel = threading.Event()
        try:
            return await asyncio.to_thread(
                self.complete, messages, max_tokens=max_tokens, schema=schema, cancel=cancel
            )
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _complete(
        self,
        messages: Sequence[Message],
        max_tokens: int | None,
        schema: Mapping[str, Any] | None,
        cancel: threading.Event,
    ) -> Completion:
        from llama_cpp import StoppingCriteriaList

        settings = self._shared.settings
        with self._shared.lock:
            grammar = self._shared.grammar(schema) if schema is not None else None
            llm = self._shared.context(self.role)
            try:
                tokens = self._prompt_tokens(llm, messages)
                room = settings.context_window - len(tokens)
                if room <= 0:
                    raise LMError(
                        f"prompt of {len(tokens):,} tokens does not fit the model's context "
                        f"window of {settings.context_window:,} tokens; send a shorter prompt"
                    )
                cached = _prefill(llm, tokens, settings.batch, cancel)
                if cancel.is_set():
                    return self._completion("", len(tokens), 0, cached, "cancelled")
                out = llm.create_completion(
                    tokens,
                    max_tokens=min(max_tokens or settings.max_tokens, room),
                    temperature=settings.temperature,
                    # The penalty stops free text from looping; under a grammar the reply's
                    # shape is fixed and repeating a label is right, not a loop.
                    repeat_penalty=1.0 if grammar is not None else settings.repeat_penalty,
                    seed=settings.seed,
                    grammar=grammar,
                    stopping_criteria=StoppingCriteriaList([lambda ids, logits: cancel.is_set()]),
                )
            except (ValueError, RuntimeError) as exc:
                raise LMError(f"llama.cpp failed: {exc}") from exc
        choice = out["choices"][0]
        reason = "cancelled" if cancel.is_set() else choice.get("finish_reason")
        return self._completion(
            choice["text"], len(tokens), out["usage"]["completion_tokens"], cached, reason
        )

    def _prompt_tokens(self, llm: Any, messages: Sequence[Message]) -> list[int]:
        chat = [{**m, "content": defuse_control_text(_text(m.get("content")))} for m in messages]
        prompt = self._shared.formatter(messages=chat).prompt
        # `special=True` so the template's own markers become control tokens; text inside
        # the messages was defused above, so only the template's markers can.
        return llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def _completion(
        self, text: str, prompt: int, generated: int, cached: int, reason: str | None
    ) -> Completion:
        return Completion(
            text=text,
            model=self.name,
            input_tokens=prompt,
            output_tokens=generated,
            cached_tokens=cached,
            cost_usd=0.0,
            finish_reason=reason,
        )


def _prefill(llm: Any, tokens: list[int], batch: int, cancel: threading.Event) -> int:
    """Evaluates all but the last prompt token, reusing the cached prefix, in batches so a
    cancel takes effect within one batch. Returns how many tokens came from the cache.

    The last token is left to `create_completion`, whose own prefix match then finds
    everything else in place and evaluates just that one to get fresh logits.
    """
    from llama_cpp import Llama

    cached = min(Llama.longest_token_prefix(llm._input_ids.tolist(), tokens), len(tokens) - 1)
    llm.n_tokens = cached  # `eval` drops every cached token past this point.
    for start in range(cached, len(tokens) - 1, batch):
        if cancel.is_set():
            break
        llm.eval(tokens[start : min(start + batch, len(tokens) - 1)])
    return cached


# Text spelling a control token (`<|im_start|>`) would become one when the prompt is
# tokenized with special=True, so a context could forge a system turn. A zero-width joiner
# after the '<' keeps the text readable and makes it plain text again.
_CONTROL_TEXT = re.compile(r"<(\|[^<>|\s]{1,64}\|)>")


def defuse_control_text(text: str) -> str:
    return _CONTROL_TEXT.sub("<\u200d\\1>", text)


def _text(content: Any) -> str:
    """Message content as plain text (OpenAI content parts are joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)
