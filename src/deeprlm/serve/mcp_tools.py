"""The MCP server: tools that let an agent load files and folders of this machine as a
context and ask the RLM about them, without reading them into its own window.

    load_context(paths, name)       files or folders (their text files), within the roots
                                    the user allowed when starting the server
    ask(context_id, question)       an answer, with progress notifications while it runs
    list_contexts()                 what is loaded
    unload_context(context_id)
    trace_summary(run_id)           how a run went: status, turns, sub-calls, usage, tree

It runs on the same `Service` as `deeprlm serve` (the queue, the sessions, the runs), over
stdio or streamable HTTP (see `deeprlm.serve.mcp_cli`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from deeprlm.context import load_paths
from deeprlm.errors import DeepRLMError, InputError
from deeprlm.serve.auth import KeyRing
from deeprlm.serve.errors import ApiError
from deeprlm.serve.runs import progress_line
from deeprlm.serve.service import Service

INSTRUCTIONS = (
    "deeprlm answers questions about large files and folders without putting them in your "
    "context window: a Recursive Language Model reads them with code and sub-model calls. "
    "Call load_context once with the paths, then ask as many questions as you like with "
    "the id it returns; each answer comes with a run id for trace_summary."
)
# How often an `ask` in progress sends a notification.
PROGRESS_INTERVAL_S = 0.5


def build_mcp(service: Service, roots: Sequence[str], keys: KeyRing | None = None) -> MCPServer:
    """The MCP server over `service`; `load_context` reads only inside `roots`."""
    allowed = [os.path.realpath(root) for root in roots]
    max_bytes = service.config.server.max_context_bytes
    default_model = next(iter(service.setups))
    models = f" Models for ask: {', '.join(service.setups)} (the first is the default)."
    mcp: MCPServer = MCPServer("deeprlm", instructions=INSTRUCTIONS + models, log_level="WARNING")

    def owner(ctx: Context) -> str:
        if keys is None or not keys.required:
            return ""
        headers = ctx.headers or {}
        try:
            return keys.owner(headers.get("authorization"))
        except ApiError as err:
            raise ToolError(str(err)) from None

    @mcp.tool()
    async def load_context(paths: list[str], ctx: Context, name: str = "") -> dict[str, Any]:
        """Loads files and folders of this machine as one context to ask questions about
        (a folder gives all its text files; binary files are skipped). Relative paths are
        taken from the first allowed root. Returns the context's id and what it holds."""
        if not paths:
            raise ToolError("give at least one path")
        resolved = [os.path.join(allowed[0], os.path.expanduser(p)) for p in paths]
        try:
            context, skipped = await asyncio.to_thread(
                load_paths, resolved, within=allowed, max_bytes=max_bytes
            )
            entry = service.add_context(
                owner(ctx), context, skipped=skipped, name=name or ", ".join(paths)
            )
        except InputError as err:
            raise ToolError(f"{err} (allowed roots: {', '.join(allowed)})") from None
        except ApiError as err:
            raise ToolError(str(err)) from None
        return entry.describe()

    @mcp.tool()
    async def ask(context_id: str, question: str, ctx: Context, model: str = "") -> dict[str, Any]:
        """Answers a question about a loaded context (see load_context). Sends progress
        notifications while it works. Returns the answer, its status (answered, forced,
        limit, error), the run id, tokens and USD."""
        try:
            admitted = service.start(
                owner(ctx), model or default_model, question, context_id=context_id
            )
        except ApiError as err:
            raise ToolError(str(err)) from None
        record = admitted.record
        run = asyncio.create_task(service.execute(admitted))
        try:
            async for _ in record.changes(PROGRESS_INTERVAL_S):
                await ctx.report_progress(record.events, None, progress_line(record.progress))
            await asyncio.wait({run})
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        failure = run.exception()
        if failure is not None and not isinstance(failure, DeepRLMError):
            raise failure
        result = run.result() if failure is None else failure.result
        usage = record.usage().total
        return {
            "answer": result.answer if result is not None else "",
            "status": record.status,
            "error": record.error,
            "run_id": record.id,
            "iterations": result.iterations if result is not None else 0,
            "sub_calls": result.sub_calls if result is not None else 0,
            "tokens": {
                "input": usage.input_tokens,
                "output": usage.output_tokens,
                "cached": usage.cached_tokens,
            },
            "usd": round(usage.usd, 8),
        }

    @mcp.tool()
    async def list_contexts(ctx: Context) -> list[dict[str, Any]]:
        """The contexts loaded now, with their ids, sizes and how many questions each had."""
        return [entry.describe() for entry in service.list_contexts(owner(ctx))]

    @mcp.tool()
    async def unload_context(context_id: str, ctx: Context) -> dict[str, Any]:
        """Frees a loaded context (and its warm REPL)."""
        try:
            entry = await service.drop_context(owner(ctx), context_id)
        except ApiError as err:
            raise ToolError(str(err)) from None
        return {"id": entry.id, "unloaded": True}

    @mcp.tool()
    async def trace_summary(run_id: str, ctx: Context) -> dict[str, Any]:
        """How a run went: status, answer, turns, sub-calls, usage per model, the tree of
        runs, and any notes (fallbacks the sandbox took, say)."""
        try:
            record = service.run(owner(ctx), run_id)
        except ApiError as err:
            raise ToolError(str(err)) from None
        summary = record.summary()
        summary["trace_file"] = str(record.trace_path)
        return summary

    return mcp
