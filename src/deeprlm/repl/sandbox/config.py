"""The sandbox's settings: what the worker may read, and the limits it runs under.

One frozen record with every knob and its default. Limits are per worker process; a worker
that is replaced (after a crash or a stuck cell) starts again with fresh limits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from deeprlm.errors import InputError

MIB = 1 << 20


@dataclass(frozen=True)
class SandboxSettings:
    # Paths (files or folders) the model's code may read, besides Python and its libraries.
    allow_read: tuple[str, ...] = ()
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
    # Wall clock per cell when the engine gives none; a cell never runs unbounded.
    cell_timeout_s: float = 300.0
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
        for name in ("cell_timeout_s", "stop_grace_s", "start_timeout_s"):
            if getattr(self, name) <= 0:
                raise InputError(f"sandbox {name} must be positive, got {getattr(self, name)}")
        if self.memory_mb is not None and self.memory_mb < 256:
            raise InputError(f"sandbox memory_mb must be at least 256, got {self.memory_mb}")
        object.__setattr__(self, "allow_read", tuple(resolve_read_paths(self.allow_read)))

    def memory_bytes(self, context_bytes: int) -> int:
        if self.memory_mb is not None:
            return self.memory_mb * MIB
        return 2048 * MIB + 4 * context_bytes


def resolve_read_paths(paths: tuple[str, ...] | list[str]) -> list[str]:
    """Absolute, symlink-free paths, each checked to exist: a typo must not silently allow
    nothing (or, worse, something else)."""
    resolved = []
    for path in paths:
        real = os.path.realpath(os.path.expanduser(os.fspath(path)))
        if not os.path.exists(real):
            raise InputError(f"allow_read: no such file or folder: {path}")
        resolved.append(real)
    return resolved
