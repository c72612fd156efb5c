"""Each model's concurrency limit, shared by every question of a batch run in one process.

The engine asks for a permit around each provider call (`deeprlm.engine.shared.Permits`);
here a permit is a slot of one asyncio semaphore per model name. Across a Ray cluster the
same limit is kept by one small actor instead (`deeprlm.batch.ray_executor.PermitBroker`).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager


class LocalPermits:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def hold(self, model: str) -> AbstractAsyncContextManager[object]:
        semaphore = self._semaphores.get(model)
        if semaphore is None:
            semaphore = self._semaphores[model] = asyncio.Semaphore(self.limit)
        return semaphore
