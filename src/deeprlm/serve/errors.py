"""The errors a front end answers with, and how every library error maps onto them.

`ApiError` carries what an OpenAI-style error body needs (HTTP status, type, code) plus,
when a run had started, what it had produced. `api_error(err)` maps any `DeepRLMError` to
one, in one table: bad input 400, a provider failing 502, the sandbox 500. Nothing here
ever carries a traceback.
"""

from __future__ import annotations

from typing import Any

from deeprlm.errors import DeepRLMError, InputError, LimitError, LMError, SandboxError


class ApiError(DeepRLMError):
    """A request the server answers with an error body instead of a completion."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more fields of the error object (usage, run id)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": str(self), "type": self.type, "code": self.code}
        error.update(self.extra)
        return {"error": error}


def bad_request(message: str, code: str | None = None) -> ApiError:
    return ApiError(400, message, code=code)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, message, code=code)


def unprocessable(message: str, code: str | None = None) -> ApiError:
    return ApiError(422, message, code=code)


def too_large(message: str) -> ApiError:
    return ApiError(413, message, code="too_large")


def busy(message: str, retry_after_s: int, code: str = "queue_full") -> ApiError:
    return ApiError(
        429,
        message,
        type="rate_limit_error",
        code=code,
        headers={"Retry-After": str(retry_after_s)},
    )


# A library error -> (HTTP status, error type, code). The first class that matches wins.
_LIBRARY_ERRORS: tuple[tuple[type[DeepRLMError], int, str, str], ...] = (
    (InputError, 400, "invalid_request_error", "invalid_input"),
    (LMError, 502, "upstream_error", "model_failed"),
    (SandboxError, 500, "server_error", "sandbox_failed"),
    (LimitError, 200, "limit", "limit"),  # a limit is an answer (partial), not an error
    (DeepRLMError, 500, "server_error", "internal"),
)


def api_error(err: DeepRLMError, extra: dict[str, Any] | None = None) -> ApiError:
    """The error body for a library error; `extra` (usage so far, run id) joins it."""
    if isinstance(err, ApiError):
        err.extra.update(extra or {})
        return err
    for cls, status, kind, code in _LIBRARY_ERRORS:
        if isinstance(err, cls):
            return ApiError(status, str(err), type=kind, code=code, extra=extra)
    raise AssertionError("DeepRLMError matches the last row")  # pragma: no cover
