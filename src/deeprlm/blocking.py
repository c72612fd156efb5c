"""Running the async core from blocking code: `RLM.run`, `complete_sync`.

Each call gets a private event loop. Called from inside a running loop (a notebook), the
private loop runs in a thread of its own, since a loop cannot be re-entered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
