"""The sandbox's settings: the limits its worker runs under.

One frozen record with every knob and its default, held by the run's settings
(`Settings.sandbox`). Limits are per worker process; a worker that is replaced (after a
crash or a stuck cell) starts again with fresh limits. What the worker may read
(`Settings.allow_read`) and a cell's wall clock (`Settings.cell_timeout_s`) are settings of
the run, since they mean the same wherever the code runs; they reach the sandbox through
`REPLSettings` and `REPL.run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deeprlm.errors import InputError

MIB = 1 << 20


@dataclass(frozen=True)
class SandboxSettings:
    # Address space of the worker. None: 2 GiB plus four times the context's size, room for
    # the context itself, a few copies the code makes of it, and numpy.
    memory_mb: int | None = None
    cpu_s: int = 600  # CPU seconds over the worker's life (all cells together)
    processes: int = 64  # processes and threads of the worker's user, the worker included
    file_size_mb: int = 1024  # the largest file the code may write
    # The workspace (files and saved variables together), a tmpfs the kernel holds to these;
    # where namespaces are refused, only the per-file limit holds (said in the notes).
    workspace_mb: int = 512
    workspace_files: int = 10_000
    open_files: int = 256
    # How long a stopped cell may take to come back before its worker is killed and replaced.
    stop_grace_s: float = 2.0
    # How long a new worker may take to report ready.
    start_timeout_s: float = 30.0
    # Turning these off is for tests of the fallbacks and for kernels known to lack them;
    # either way, what was not applied is reported in `SandboxREPL.notes`.
    namespaces: bool = True
    landlock: bool = True

    def __post_init__(self) -> None:
        for name in (
            "cpu_s",
            "processes",
            "file_size_mb",
            "workspace_mb",
            "workspace_files",
            "open_files",
        ):
            if getattr(self, name) <= 0:
                raise InputError(f"sandbox {name} must be positive, got {getattr(self, name)}")
        for name in ("stop_grace_s", "start_timeout_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:  # nan passes `<= 0`
                raise InputError(f"sandbox {name} must be a finite positive number, got {value}")
        if self.memory_mb is not None and self.memory_mb < 256:
            raise InputError(f"sandbox memory_mb must be at least 256, got {self.memory_mb}")

    def memory_bytes(self, context_bytes: int) -> int:
        if self.memory_mb is not None:
            return self.memory_mb * MIB
        return 2048 * MIB + 4 * context_bytes
