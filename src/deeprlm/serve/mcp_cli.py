"""`deeprlm mcp`: the MCP server, from the command line.

    deeprlm mcp --root ~/src/project --model openai/gpt-5-mini          # stdio
    deeprlm mcp --root . --transport http --port 8765                   # streamable HTTP

Over stdio, stdout carries the protocol: everything else this process says goes to stderr.
Over HTTP the same rule as `deeprlm serve` holds: any address but loopback needs an API key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from deeprlm.errors import InputError
from deeprlm.serve.options import add_model_options, add_server_options, config_from_args, require

DESCRIPTION = (
    "Serve the RLM to agents (Claude Code, Cursor, ...) over the Model Context Protocol: tools "
    "to load files and folders within the --root folders as a context, ask questions about "
    "it (with progress notifications), list contexts and summarise a run's trace."
)
# Of the server's settings, those that mean something here.
SERVER_SETTINGS = (
    "host",
    "port",
    "max_runs",
    "max_queued",
    "max_context_mb",
    "max_contexts",
    "keep_runs",
    "trace_dir",
    "max_body_mb",
    "max_connections",
    "header_timeout_s",
    "body_timeout_s",
    "write_timeout_s",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mcp", help="serve the RLM to agents over MCP", description=DESCRIPTION
    )
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="PATH",
        help="a folder whose files load_context may read (repeatable; at least one)",
    )
    parser.add_argument(
        "--transport",
        choices=["stdio", "http"],
        default="stdio",
        help="stdio for a desktop agent, http for streamable HTTP at /mcp (default: %(default)s)",
    )
    add_model_options(parser)
    add_server_options(parser, SERVER_SETTINGS)
    parser.set_defaults(handler=mcp_command)


def mcp_command(args: argparse.Namespace) -> int:
    require("mcp", "mcp")
    from deeprlm.serve.auth import KeyRing, check_bind
    from deeprlm.serve.mcp_tools import build_mcp
    from deeprlm.serve.service import Service

    roots = [os.path.realpath(os.path.expanduser(root)) for root in args.root]
    if not roots:
        raise InputError("give at least one --root PATH: the folders load_context may read")
    for root in roots:
        if not os.path.isdir(root):
            raise InputError(f"--root {root} is not a folder")
    config = config_from_args(args, SERVER_SETTINGS)
    keys = KeyRing(config.api_keys)
    service = Service(config, force_sandbox=False)
    mcp = build_mcp(service, roots, keys)
    names = ", ".join(config.setups)
    if args.transport == "stdio":

        async def main() -> None:
            print(
                f"deeprlm mcp: on stdio · models: {names} · roots: {json.dumps(roots)}",
                file=sys.stderr,
                flush=True,
            )
            try:
                await mcp.run_stdio_async()
            finally:
                await service.aclose()

        asyncio.run(main())
        return 0

    from deeprlm.serve.auth import KeyGuard
    from deeprlm.serve.server import run

    check_bind(config.server.host, config.api_keys)
    app = KeyGuard(mcp.streamable_http_app(host=config.server.host), keys)

    def ready(url: str) -> None:
        print(f"deeprlm mcp: listening on {url}/mcp · models: {names}", file=sys.stderr, flush=True)

    run(app, config.server, on_ready=ready, after=service.aclose)
    return 0
