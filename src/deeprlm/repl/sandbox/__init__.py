"""The sandboxed REPL: the model's code runs in a separate, locked-down worker process.

`SandboxREPL` (host side, `repl.py`) drives a worker (`worker.py`, started and ended by
`process.py`) that isolates itself (`isolation.py`; a private root, `mounts.py`;
`landlock.py`; `seccomp.py`), talks JSON frames (`protocol.py`), and keeps a snapshot of its
variables (`snapshot.py`) so that a replaced worker loses as little as possible. A keeper
process (`keeper.py`) holds the workspace, a tmpfs with a quota, across workers. Settings
and limits live in `config.py`.
"""

from deeprlm.repl.sandbox.config import SandboxSettings
from deeprlm.repl.sandbox.repl import Isolation, SandboxREPL

__all__ = ["Isolation", "SandboxREPL", "SandboxSettings"]
