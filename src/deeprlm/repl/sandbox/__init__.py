"""The sandboxed REPL: the model's code runs in a separate, locked-down worker process.

`SandboxREPL` (host side, `repl.py`) drives a worker (`worker.py`) that isolates itself
(`isolation.py`, `landlock.py`), talks JSON frames (`protocol.py`), and keeps a snapshot of
its variables (`snapshot.py`) so that a replaced worker loses as little as possible.
Settings and limits live in `config.py`.
"""

from deeprlm.repl.sandbox.config import SandboxSettings
from deeprlm.repl.sandbox.repl import Isolation, SandboxREPL

__all__ = ["Isolation", "SandboxREPL", "SandboxSettings"]
