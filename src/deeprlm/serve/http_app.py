"""`deeprlm serve`'s HTTP API, on Starlette: the OpenAI-compatible endpoints, contexts,
and the runs' status, trace and trace page.

    GET  /v1/models                  the setups clients may name
    POST /v1/chat/completions        a question (stream: true for SSE chunks)
    POST /v1/contexts                upload a context (JSON, a text file, a tar or zip archive)
    GET  /v1/contexts[/{id}]         the caller's contexts;  DELETE /v1/contexts/{id}
    GET  /v1/runs[/{id}]             the caller's runs and their status
    GET  /v1/runs/{id}/trace         the run's trace so far, as JSON lines
    GET  /v1/runs/{id}/view          the trace as one HTML page
    GET  /health                     no key needed

Every error is an OpenAI-style body (`{"error": {"message", "type", "code"}}`) with its
status; nothing answers with a traceback. `BodyGuard` bounds what a request may send
(size, and how long its body may pause).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deeprlm.errors import DeepRLMError, InputError
from deeprlm.rlm import RLMResult
from deeprlm.serve import openai_api
from deeprlm.serve.auth import KeyRing
from deeprlm.serve.errors import ApiError, api_error, bad_request, too_large, unprocessable
from deeprlm.serve.runs import RunRecord, progress_line
from deeprlm.serve.service import Question, Service
from deeprlm.serve.uploads import UploadLimits, read_upload
from deeprlm.trace.viewer import read_trace, render_page

log = logging.getLogger("deeprlm.serve")

# How often progress may be streamed, and how often an idle stream says it is alive.
PROGRESS_INTERVAL_S = 0.25
PING_S = 15.0


def create_app(service: Service, keys: KeyRing) -> Starlette:
    api = _Api(service, keys)
    routes = [
        Route("/health", api.health),
        Route("/v1/models", api.models),
        Route("/v1/models/{name}", api.model),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/contexts", api.upload, methods=["POST"]),
        Route("/v1/contexts", api.list_contexts, methods=["GET"]),
        Route("/v1/contexts/{id}", api.get_context, methods=["GET"]),
        Route("/v1/contexts/{id}", api.delete_context, methods=["DELETE"]),
        Route("/v1/runs", api.list_runs),
        Route("/v1/runs/{id}", api.get_run),
        Route("/v1/runs/{id}/trace", api.trace),
        Route("/v1/runs/{id}/view", api.view),
    ]
    limits = service.config.server

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await service.aclose()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.add_middleware(BodyGuard, max_bytes=limits.max_body_bytes, pause_s=limits.body_timeout_s)
    return app


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return error_response(ApiError(exc.status_code, message, type=kind, code=kind))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server's log, never to the client.
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        ApiError(500, f"internal error: {type(exc).__name__}", type="server_error", code="internal")
    )


class BodyGuard:
    """Refuses a body over `max_bytes` (413, from its Content-Length or as it arrives), and
    drops a request whose body stops arriving for `pause_s` (408)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, pause_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.pause_s = pause_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await error_response(self._too_large())(scope, receive, send)
                    return
        received = 0
        body_done = False

        async def guarded() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()  # waiting for a disconnect: no deadline
            try:
                async with asyncio.timeout(self.pause_s):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    408, f"the request body stalled for {self.pause_s:g} s", code="timeout"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, guarded, send)

    def _too_large(self) -> ApiError:
        return too_large(
            f"the request body is over the server's limit of {self.max_bytes / 1e6:g} MB"
        )


class _Api:
    def __init__(self, service: Service, keys: KeyRing) -> None:
        self.service = service
        self.keys = keys
        limits = service.config.server
        self.upload_limits = UploadLimits(limits.max_context_bytes, limits.max_files)
        self.write_timeout_s = limits.write_timeout_s

    def owner(self, request: Request) -> str:
        return self.keys.owner(request.headers.get("authorization"))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # -- models

    async def models(self, request: Request) -> Response:
        self.owner(request)
        data = [self._model(setup_name) for setup_name in self.service.setups]
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        self.owner(request)
        return JSONResponse(self._model(self.service.setup(request.path_params["name"]).name))

    def _model(self, name: str) -> dict[str, Any]:
        setup = self.service.setups[name]
        return {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "deeprlm",
            "deeprlm": setup.describe(),
        }

    # -- chat completions

    async def chat(self, request: Request) -> Response:
        entered = time.perf_counter()
        owner = self.owner(request)
        body = await _json_body(request)
        chat = openai_api.parse_chat(body)
        question = self.service.start(
            owner,
            chat.model,
            chat.query,
            context=chat.context,
            context_id=chat.context_id,
            overrides=chat.overrides,
        )
        if chat.stream:
            return EventSourceResponse(
                self._stream(question, chat),
                ping=PING_S,
                sep="\n",
                send_timeout=self.write_timeout_s,
            )
        response = await self._complete(request, question)
        result = question.record.result
        if result is not None:
            # What the run took and what the whole request took here (RFC Server-Timing).
            total_ms = (time.perf_counter() - entered) * 1000
            response.headers["Server-Timing"] = (
                f"run;dur={result.wall_s * 1000:.3f}, total;dur={total_ms:.3f}"
            )
        return response

    async def _complete(self, request: Request, question: Question) -> Response:
        """Runs the question; a client that goes away meanwhile cancels it."""
        record = question.record
        run = asyncio.create_task(self.service.execute(question))
        gone = asyncio.create_task(_disconnected(request))
        try:
            await asyncio.wait({run, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
            gone.cancel()
        if run.cancelled():
            return Response(status_code=499)  # nobody is listening any more
        err = run.exception()
        if err is None:
            return JSONResponse(openai_api.completion_body(record, run.result()))
        return self._failed(record, err)

    def _failed(self, record: RunRecord, err: BaseException) -> Response:
        if isinstance(err, DeepRLMError) and err.result is not None:
            result: RLMResult = err.result
            if result.status == "limit":
                # A budget ran out: the partial answer is the completion, cut short.
                return JSONResponse(openai_api.completion_body(record, result))
        if not isinstance(err, DeepRLMError):
            raise err
        extra = {
            "usage": openai_api.usage_body(record.usage()),
            "deeprlm": {
                **openai_api.extension(record, err.result),
                "partial_answer": err.partial_answer,
            },
        }
        return error_response(api_error(err, extra))

    async def _stream(self, question: Question, chat: openai_api.ChatRequest) -> AsyncIterator[Any]:
        record = question.record
        run = asyncio.create_task(self.service.execute(question))
        try:
            yield _data(openai_api.chunk(record, {"role": "assistant", "content": ""}))

            def progress(line: str) -> Any:
                if chat.progress == "comments":
                    return ServerSentEvent(comment=line)
                return _data(openai_api.chunk(record, {"reasoning_content": line + "\n"}))

            await asyncio.sleep(0)  # the run takes a free slot now, if there is one
            if record.status == "queued" and chat.progress != "none":
                yield progress("waiting for a free run slot")
            last = ""
            async for _ in record.changes(PROGRESS_INTERVAL_S):
                line = progress_line(record.progress)
                if line == last or chat.progress == "none":
                    continue
                last = line
                yield progress(line)
            await asyncio.wait({run})
            err = run.exception()
            result: RLMResult | None = run.result() if err is None else None
            if (
                isinstance(err, DeepRLMError)
                and err.result is not None
                and err.result.status == "limit"
            ):
                result, err = err.result, None
            if err is not None:
                failure = self._stream_error(record, err)
                yield _data(failure)
            else:
                assert result is not None
                yield _data(openai_api.chunk(record, {"content": result.answer}))
                finish = openai_api.FINISH_REASONS.get(result.status, "stop")
                if chat.include_usage:
                    yield _data(openai_api.chunk(record, {}, finish_reason=finish))
                    yield _data(openai_api.usage_chunk(record, result))
                else:
                    yield _data(
                        openai_api.chunk(
                            record,
                            {},
                            finish_reason=finish,
                            usage=result.usage,
                            extra={"deeprlm": openai_api.extension(record, result)},
                        )
                    )
            yield {"data": "[DONE]"}
        finally:
            if not run.done():
                # The client went away: the run (and its sandbox worker) stops.
                run.cancel()

    def _stream_error(self, record: RunRecord, err: BaseException) -> dict[str, Any]:
        if not isinstance(err, DeepRLMError):
            log.error("unexpected error in run %s", record.id, exc_info=err)
            err = DeepRLMError(f"internal error: {type(err).__name__}")
        extra = {
            "usage": openai_api.usage_body(record.usage()),
            "deeprlm": {
                **openai_api.extension(record, err.result),
                "partial_answer": err.partial_answer,
            },
        }
        return api_error(err, extra).body()

    # -- contexts

    async def upload(self, request: Request) -> Response:
        owner = self.owner(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        name = request.query_params.get("name", "")
        if kind == "application/json":
            body = await _json_body(request)
            if not isinstance(body, dict) or "context" not in body:
                raise bad_request("send {'context': TEXT | [TEXT, ...] | {NAME: TEXT}}")
            name = str(body.get("name") or name)
            entry = self.service.add_context(owner, body["context"], name=name)
        else:
            parts = await self._files(request, kind)
            upload = await asyncio.to_thread(read_upload, parts, self.upload_limits)
            name = name or (parts[0][0] if len(parts) == 1 else "")
            entry = self.service.add_context(
                owner, upload.context, skipped=upload.skipped, name=name
            )
        return JSONResponse(entry.describe(), status_code=201)

    async def _files(self, request: Request, kind: str) -> list[tuple[str, bytes]]:
        if kind == "multipart/form-data":
            try:
                form = await request.form(max_files=64, max_fields=64)
            except HTTPException as err:
                raise bad_request(f"the form could not be read: {err.detail}") from None
            parts = []
            for key, value in form.multi_items():
                if isinstance(value, str):
                    continue
                if key != "file":
                    raise bad_request(f"unexpected file field {key!r}: send files as 'file'")
                parts.append((value.filename or "upload", await value.read()))
            await form.close()
            if not parts:
                raise bad_request("no file in the form: send it as the field 'file'")
            return parts
        if kind in ("", "application/x-www-form-urlencoded"):
            raise bad_request(
                "say what the body is: Content-Type application/json, multipart/form-data, "
                "text/plain or an archive type"
            )
        data = await request.body()
        if not data:
            raise unprocessable("the upload is empty", code="no_text")
        return [(request.query_params.get("filename", "upload"), data)]

    async def list_contexts(self, request: Request) -> Response:
        owner = self.owner(request)
        data = [c.describe() for c in self.service.list_contexts(owner)]
        return JSONResponse({"object": "list", "data": data})

    async def get_context(self, request: Request) -> Response:
        entry = self.service.context(self.owner(request), request.path_params["id"])
        return JSONResponse(entry.describe())

    async def delete_context(self, request: Request) -> Response:
        entry = await self.service.drop_context(self.owner(request), request.path_params["id"])
        return JSONResponse({"id": entry.id, "object": "deeprlm.context", "deleted": True})

    # -- runs

    async def list_runs(self, request: Request) -> Response:
        owner = self.owner(request)
        data = [r.describe() for r in self.service.runs.values() if r.owner == owner]
        return JSONResponse({"object": "list", "data": data})

    async def get_run(self, request: Request) -> Response:
        record = self.service.run(self.owner(request), request.path_params["id"])
        return JSONResponse(record.describe())

    async def trace(self, request: Request) -> Response:
        record = self.service.run(self.owner(request), request.path_params["id"])
        try:
            size = record.trace_path.stat().st_size
        except FileNotFoundError:
            size = 0  # still in line
        return StreamingResponse(
            _whole_lines(record.trace_path, size), media_type="application/x-ndjson"
        )

    async def view(self, request: Request) -> Response:
        record = self.service.run(self.owner(request), request.path_params["id"])
        if not record.trace_path.exists():
            raise ApiError(409, f"run {record.id} is still waiting to start", code="not_started")
        try:
            tree = await asyncio.to_thread(read_trace, record.trace_path)
        except InputError as err:
            raise ApiError(409, str(err), code="no_trace_yet") from None
        page = render_page(tree, source=record.id)
        return HTMLResponse(page)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise bad_request(f"the body is not valid JSON: {err}", code="invalid_json") from None


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _whole_lines(path: Path, size: int, chunk: int = 1 << 16) -> AsyncIterator[bytes]:
    """The first `size` bytes of a trace that may still be growing, up to its last whole
    line (the run may be writing the next one right now)."""
    if size == 0:
        return
    with open(path, "rb") as f:
        left = size
        held = b""
        while left > 0:
            data = await asyncio.to_thread(f.read, min(chunk, left))
            if not data:
                break
            left -= len(data)
            data = held + data
            cut = data.rfind(b"\n") + 1
            held = data[cut:]
            if cut:
                yield data[:cut]


def _data(body: dict[str, Any]) -> dict[str, str]:
    return {"data": json.dumps(body, ensure_ascii=False, separators=(",", ":"))}
