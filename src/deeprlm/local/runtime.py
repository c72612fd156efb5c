"""The embedded model's llama.cpp work: one GGUF loaded once, one context per role.

This runs inside the model's child process (`deeprlm.local.worker`); the benchmark also
runs it in process, to measure what the process boundary costs.

Prefix reuse is the point. llama.cpp keeps the tokens a context has evaluated in its KV
cache, and a prompt that starts with them only pays for its new tail. A root conversation
only grows, so each root turn costs just its new tokens, as long as nothing else uses the
same context in between. Sub-calls would, so every role ("root", "sub", "depth1", ...) has
a context of its own over the one loaded model (weights and their repacked copy exist
once; each context adds its KV cache). Calls are serialised by the caller.

Built on llama-cpp-python's thin wrappers of the C API (`llama_cpp._internals`, pinned with
the package's version) rather than its `Llama` class, which ties one context to one model.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import llama_cpp
from llama_cpp import _internals as internals
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar

from deeprlm.local import labels

# Used only when a GGUF carries no chat template of its own.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Generated tokens the repeat penalty looks back over (llama-cpp-python's default).
PENALTY_WINDOW = 64
# Label prompts whose lean is kept (a few classifications under way at once).
_LEANS_KEPT = 16


class PromptTooLong(ValueError):
    """The prompt leaves no room in the context window."""


class LoadFailed(ValueError):
    """llama.cpp refused the model file or could not make a context."""


class BadSchema(ValueError):
    """A JSON Schema that cannot be turned into a grammar."""


@dataclass(frozen=True)
class Settings:
    """How each context is made and how it samples (sent by the host as a dict)."""

    context_window: int
    threads: int
    max_tokens: int
    temperature: float
    repeat_penalty: float
    seed: int
    batch: int
    flash_attn: bool


@dataclass(frozen=True)
class Reply:
    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    finish_reason: str  # stop | length | cancelled


def system_info() -> str:
    """What this llama.cpp build was compiled with (`deeprlm.local.build` reads it)."""
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace")


# ggml's log levels (ggml.h); CONT continues the line before it.
_WARN, _ERROR, _CONT = 3, 4, 5
_keeping = False


@llama_cpp.llama_log_callback
def _log(level: int, text: bytes, user_data: Any) -> None:
    global _keeping
    if level != _CONT:
        _keeping = level in (_WARN, _ERROR)
    if _keeping:
        sys.stderr.write(text.decode("utf-8", "replace"))
        sys.stderr.flush()


def quiet_logs() -> None:
    """llama.cpp logs every step of a load; keep its warnings and errors only, on stderr,
    where the host reads the reason for a failure. (llama-cpp-python's own filter maps
    ggml's levels wrongly and drops the errors.)"""
    llama_cpp.llama_log_set(_log, None)


class _Context:
    """One role's llama.cpp context and the tokens its KV cache holds, in order."""

    def __init__(self, model: internals.LlamaModel, settings: Settings) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.context_window
        params.n_batch = settings.batch
        params.n_ubatch = settings.batch
        params.n_threads = settings.threads
        params.n_threads_batch = settings.threads
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if settings.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        try:
            self.ctx = internals.LlamaContext(model=model, params=params, verbose=False)
        except ValueError as exc:
            raise LoadFailed(
                f"llama.cpp could not make a context of {settings.context_window:,} tokens "
                f"({exc}); lower the context window or free memory"
            ) from exc
        self.batch = internals.LlamaBatch(
            n_tokens=settings.batch, embd=0, n_seq_max=1, verbose=False
        )
        self.tokens: list[int] = []

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()


class Runtime:
    """A GGUF model and its role contexts. Not thread-safe: one call at a time."""

    def __init__(self, path: str, settings: Settings) -> None:
        self.settings = settings
        llama_cpp.llama_backend_init()
        try:
            # verbose: stderr stays open, where llama.cpp says why a load failed (the log
            # level set by `quiet_logs` keeps out the rest).
            self.model = internals.LlamaModel(
                path_model=path, params=llama_cpp.llama_model_default_params(), verbose=True
            )
        except ValueError as exc:
            raise LoadFailed(f"llama.cpp cannot load {path}") from exc
        self.n_vocab = self.model.n_vocab()
        self.contexts: dict[str, _Context] = {}
        self._grammars: dict[str, LlamaGrammar] = {}
        # A label prompt's lean (see `labels`), by the prompt's tokens: a classification
        # sends the same prompt with each pack, and measures it once.
        self._leans: dict[tuple[int, ...], dict[tuple[int, ...], Mapping[int, float]]] = {}
        metadata = self.model.metadata()
        self.formatter = Jinja2ChatFormatter(
            template=metadata.get("tokenizer.chat_template") or CHATML,
            eos_token=self._token_text(self.model.token_eos()),
            bos_token=self._token_text(self.model.token_bos()),
            add_generation_prompt=True,
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.model.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def context(self, role: str) -> _Context:
        """The context of `role`, made on first use."""
        context = self.contexts.get(role)
        if context is None:
            context = self.contexts[role] = _Context(self.model, self.settings)
        return context

    def close(self) -> None:
        for context in self.contexts.values():
            context.close()
        self.contexts.clear()
        self.model.close()

    # --- one call ---------------------------------------------------------------------

    def prompt_tokens(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        chat = [{**m, "content": defuse_control_text(_text(m.get("content")))} for m in messages]
        prompt = self.formatter(messages=cast(Any, chat)).prompt
        # `special=True` so the template's own markers become control tokens; text inside
        # the messages was defused above, so only the template's markers can.
        return self.model.tokenize(prompt.encode("utf-8", "replace"), add_bos=False, special=True)

    def complete(
        self,
        role: str,
        messages: Sequence[dict[str, Any]],
        *,
        max_tokens: int | None = None,
        schema: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Reply:
        """One reply in `role`'s context. Setting `cancel` (from another thread) stops the
        call within one batch of prompt tokens or one generated token; what was generated
        comes back with finish_reason "cancelled"."""
        cancel = cancel or threading.Event()
        settings = self.settings
        tokens = self.prompt_tokens(messages)
        room = settings.context_window - len(tokens)
        if room <= 0:
            raise PromptTooLong(
                f"prompt of {len(tokens):,} tokens does not fit the model's context window of "
                f"{settings.context_window:,} tokens; send a shorter prompt"
            )
        # A pack of labels, decoded greedily, takes the fast path (see `labels`).
        shape = labels.label_object(schema) if settings.temperature <= 0.0 else None
        grammar = None if schema is None or shape is not None else self.grammar(schema)
        context = self.context(role)
        try:
            cached = self._prefill(context, tokens, cancel)
            if cancel.is_set():
                return Reply("", len(tokens), 0, cached, "cancelled")
            limit = min(max_tokens or settings.max_tokens, room)
            if shape is not None:
                decoded = labels.decode_labels(
                    shape,
                    self._piece_tokens,
                    lambda t: self._step(context, t),
                    lambda: self._rewind(context, len(tokens)),
                    limit,
                    cancel,
                    # Only items read alone follow one prompt whose lean is measured.
                    self._leans_of(tokens) if shape.items is not None else None,
                )
                return Reply(
                    decoded.text(shape),
                    len(tokens) + decoded.read_tokens,
                    decoded.reply_tokens,
                    cached,
                    decoded.reason,
                )
            out, reason = self._generate(context, limit, grammar, cancel)
        except BaseException:
            # What the KV cache holds after a failed decode is unknown: start it afresh.
            context.ctx.kv_cache_clear()
            context.tokens.clear()
            raise
        text = self.model.detokenize(out).decode("utf-8", errors="ignore")
        return Reply(text, len(tokens), len(out), cached, reason)

    def _prefill(self, context: _Context, tokens: list[int], cancel: threading.Event) -> int:
        """Evaluates the prompt past the cached prefix, a batch at a time so that a cancel
        takes effect within one batch. Returns how many tokens came from the cache. At least
        the last token is evaluated again: sampling needs its fresh logits."""
        cached = min(_common_prefix(context.tokens, tokens), len(tokens) - 1)
        self._rewind(context, cached)
        for start in range(cached, len(tokens), self.settings.batch):
            if cancel.is_set():
                break
            self._decode(context, tokens[start : start + self.settings.batch])
        return cached

    def _decode(self, context: _Context, chunk: list[int]) -> None:
        context.batch.set_batch(chunk, n_past=len(context.tokens), logits_all=False)
        context.ctx.decode(context.batch)
        context.tokens.extend(chunk)

    def _piece_tokens(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _leans_of(self, prompt: list[int]) -> dict[tuple[int, ...], Mapping[int, float]]:
        key = tuple(prompt)
        if key not in self._leans and len(self._leans) >= _LEANS_KEPT:
            del self._leans[next(iter(self._leans))]  # the oldest prompt
        return self._leans.setdefault(key, {})

    def _rewind(self, context: _Context, length: int) -> None:
        """Forgets the tokens the context holds past the first `length`."""
        context.ctx.kv_cache_seq_rm(-1, length, -1)
        del context.tokens[length:]

    def _step(self, context: _Context, tokens: list[int]) -> Any:
        """Evaluates `tokens` after the context's; the next position's scores, by token."""
        for start in range(0, len(tokens), self.settings.batch):
            self._decode(context, tokens[start : start + self.settings.batch])
        logits = context.ctx.get_logits_ith(-1)
        return logits.__getitem__

    def _generate(
        self,
        context: _Context,
        limit: int,
        grammar: LlamaGrammar | None,
        cancel: threading.Event,
    ) -> tuple[list[int], str]:
        sampler = self._sampler(grammar)
        out: list[int] = []
        try:
            while True:
                if cancel.is_set():
                    return out, "cancelled"
                token = sampler.sample(context.ctx, -1)
                if llama_cpp.llama_vocab_is_eog(self.model.vocab, token):
                    return out, "stop"
                out.append(token)
                if len(out) >= limit:
                    return out, "length"
                self._decode(context, [token])
        finally:
            sampler.close()

    def _sampler(self, grammar: LlamaGrammar | None) -> internals.LlamaSampler:
        settings = self.settings
        sampler = internals.LlamaSampler()
        sampler.add_penalties(
            n_vocab=self.n_vocab,
            penalty_last_n=PENALTY_WINDOW,
            # The penalty stops free text from looping; under a grammar the reply's shape is
            # fixed and repeating a label is right, not a loop.
            penalty_repeat=1.0 if grammar is not None else settings.repeat_penalty,
            penalty_freq=0.0,
            penalty_present=0.0,
        )
        if grammar is not None:
            sampler.add_grammar(self.model, grammar)
        if settings.temperature <= 0.0:
            sampler.add_greedy()
        else:
            sampler.add_temp(settings.temperature)
            sampler.add_dist(settings.seed)
        return sampler

    def grammar(self, schema: dict[str, Any]) -> LlamaGrammar:
        """The grammar a JSON Schema compiles to, compiled once per schema."""
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            try:
                grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as exc:  # the converter raises whatever it trips on
                raise BadSchema(f"no grammar comes of it ({type(exc).__name__}: {exc})") from exc
            # llama.cpp parses the grammar when a sampler is made, and makes none (a null
            # that would crash the chain) if it cannot: try once here.
            probe = llama_cpp.llama_sampler_init_grammar(
                self.model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
            )
            if not probe:
                raise BadSchema("its grammar does not parse in llama.cpp")
            llama_cpp.llama_sampler_free(probe)
            self._grammars[key] = grammar
        return grammar


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


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
