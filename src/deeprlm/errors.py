"""The one error hierarchy of deeprlm.

Everything the library raises on purpose derives from `DeepRLMError`, so callers can catch
one type. The branches say whose fault it was: the caller's input, a budget that ran out,
the model provider, or the sandbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deeprlm.usage import UsageReport


class DeepRLMError(Exception):
    """Base of every error deeprlm raises on purpose.

    An error that ends a run loses nothing the run had produced: `partial_answer` is the
    best answer available when it stopped (the `answer` dict's content, else the last reply
    of the root model), `usage` the usage of the whole tree, and `result` the `RLMResult`
    (status "limit" or "error", iterations, trace path). All three stay empty for errors
    raised before a run starts, such as bad input.
    """

    def __init__(self, message: str = "", *, partial_answer: str = "", usage: Any = None) -> None:
        super().__init__(message)
        self.partial_answer = partial_answer
        self.usage: UsageReport | None = usage
        # Filled in by `RLM.arun` once the whole tree has stopped.
        self.result: Any = None


class InputError(DeepRLMError):
    """Bad input from the caller: a missing file, an empty context, an unknown model spec."""


class LMError(DeepRLMError):
    """A model provider failed after retries, or answered with something unusable.

    Raised by one attempt, it says whether trying again may help (`transient`: a 429, a
    5xx, a dropped connection, no reply in time) and how long the provider asked to wait
    (`retry_after_s`, from its Retry-After header); the engine's retry loop decides. A
    request refused because prompt and reply cap overflow the model's window says how large
    the window is (`window_tokens`), so the next attempt can ask for less. `status` is the
    HTTP status of the provider's answer, when there was one.
    """

    def __init__(
        self,
        message: str = "",
        *,
        transient: bool = False,
        retry_after_s: float | None = None,
        timed_out: bool = False,
        window_tokens: int | None = None,
        status: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.transient = transient
        self.retry_after_s = retry_after_s
        self.timed_out = timed_out
        self.window_tokens = window_tokens
        self.status = status


class OutputError(LMError):
    """The root model's final answer did not follow the output schema (`RLM(output=...)`),
    however many times it was told what was wrong. `partial_answer` is its last answer."""


class SandboxError(DeepRLMError):
    """The sandboxed REPL could not be started or kept alive."""


class SessionError(DeepRLMError):
    """A saved session that cannot be used: its file is damaged (it was moved aside), or
    another process has it open."""


class LimitError(DeepRLMError):
    """A budget ran out. Carries what the run had produced so far (see `DeepRLMError`)."""

    limit = "limit"


class TokenLimitError(LimitError):
    limit = "tokens"


class CostLimitError(LimitError):
    limit = "usd"


class TimeLimitError(LimitError):
    limit = "time"


class SubCallLimitError(LimitError):
    limit = "sub_calls"
