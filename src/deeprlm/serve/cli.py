"""`deeprlm serve`: the OpenAI-compatible HTTP endpoint, from the command line.

    deeprlm serve --model openai/gpt-5 --sub-model openai/gpt-5-mini --max-usd 1
    deeprlm serve --config serve.toml --host 0.0.0.0     # needs DEEPRLM_API_KEY

The web stack (the serve extra) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deeprlm.serve.options import add_model_options, add_server_options, config_from_args, require

DESCRIPTION = (
    "Serve the RLM as an OpenAI-compatible Chat Completions endpoint (POST "
    "/v1/chat/completions, GET /v1/models), with uploaded contexts kept loaded "
    "(POST /v1/contexts) and each run's status and trace (GET /v1/runs/ID). Binds "
    "127.0.0.1 unless told otherwise; any other address needs an API key. The model's code "
    "always runs in the sandbox."
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve an OpenAI-compatible HTTP endpoint", description=DESCRIPTION
    )
    # Served code always runs in the sandbox: `--repl` is not offered.
    add_model_options(parser, exclude=("repl",))
    add_server_options(parser)
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="server log on stderr (default: %(default)s)",
    )
    parser.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    require("serve", "starlette", "uvicorn", "sse_starlette", "multipart")
    from deeprlm.serve.auth import KeyRing, check_bind
    from deeprlm.serve.http_app import create_app
    from deeprlm.serve.server import run
    from deeprlm.serve.service import Service

    config = config_from_args(args)
    check_bind(config.server.host, config.api_keys)
    service = Service(config, force_sandbox=True)
    app = create_app(service, KeyRing(config.api_keys))
    names = ", ".join(config.setups)

    def ready(url: str) -> None:
        keys = "API key required" if config.api_keys else "no API key (loopback only)"
        print(
            f"deeprlm serve: listening on {url} · models: {names} · {keys}",
            file=sys.stderr,
            flush=True,
        )

    run(app, config.server, on_ready=ready, log_level=args.log_level)
    return 0
