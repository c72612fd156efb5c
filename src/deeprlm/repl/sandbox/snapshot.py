"""Keeping the model's variables across a worker that had to be replaced.

After each cell the worker pickles the user's variables, one file each, into a folder only
the workers of this REPL use; a fresh worker loads them back. Modules are kept by name and
imported again. What cannot be kept (functions and classes defined in cells, open files,
values over the size budget) is listed, so the model can be told what it lost.

Both ends of this are inside the sandbox: the host never unpickles a snapshot. Loading one
runs code the model wrote (a pickle can call anything), so the worker does it only after
its handshake, on the host's request, under a cell's limits and timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import pickle
import sys
import types
from collections.abc import Iterable, MutableMapping
from typing import Any

INDEX = "index.json"
# Values whose pickled form is larger than this are not kept; nor are any past the total.
MAX_VALUE_BYTES = 64 << 20
MAX_TOTAL_BYTES = 256 << 20
# Re-pickling these is pointless while the same object is bound: they cannot change.
_IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), range)


class Snapshot:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._digests: dict[str, str] = {}
        self._same: dict[str, tuple[int, type]] = {}

    def save(self, namespace: MutableMapping[str, Any], names: Iterable[str]) -> None:
        kept: dict[str, str] = {}
        modules: dict[str, str] = {}
        lost: dict[str, str] = {}
        total = 0
        for name in names:
            if not name.isidentifier() or name not in namespace:
                continue
            value = namespace[name]
            if isinstance(value, types.ModuleType):
                modules[name] = value.__name__
                continue
            identity = (id(value), type(value))
            if isinstance(value, _IMMUTABLE) and self._same.get(name) == identity:
                kept[name] = self._digests[name]
                continue
            # Flat values (text, bytes, arrays) report their whole size: skip pickling those
            # that could never be kept.
            size = _shallow_size(value)
            if size > MAX_VALUE_BYTES:
                lost[name] = f"too large to keep ({size / 1e6:.0f} MB)"
                continue
            try:
                blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                lost[name] = f"{type(value).__name__} cannot be kept ({type(exc).__name__})"
                continue
            if len(blob) > MAX_VALUE_BYTES or total + len(blob) > MAX_TOTAL_BYTES:
                lost[name] = f"too large to keep ({len(blob) / 1e6:.0f} MB)"
                continue
            total += len(blob)
            digest = hashlib.blake2b(blob, digest_size=16).hexdigest()
            if self._digests.get(name) != digest:
                _write(os.path.join(self.folder, f"{name}.pickle"), blob)
            kept[name] = digest
            self._same[name] = identity
        for name in set(self._digests) - set(kept):
            self._same.pop(name, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.folder, f"{name}.pickle"))
        self._digests = kept
        index = {"kept": kept, "modules": modules, "lost": lost}
        _write(os.path.join(self.folder, INDEX), json.dumps(index).encode())

    def restore(self, namespace: MutableMapping[str, Any]) -> tuple[list[str], dict[str, str]]:
        """Loads the last snapshot into `namespace`: (names restored, {name: why lost})."""
        try:
            with open(os.path.join(self.folder, INDEX), "rb") as f:
                index = json.load(f)
        except (OSError, ValueError):
            return [], {}
        restored: list[str] = []
        lost: dict[str, str] = dict(index.get("lost", {}))
        for name, module in index.get("modules", {}).items():
            try:
                namespace[name] = importlib.import_module(module)
                restored.append(name)
            except Exception as exc:
                lost[name] = f"module {module} could not be imported again ({exc})"
        for name, digest in index.get("kept", {}).items():
            if not name.isidentifier():
                continue
            try:
                with open(os.path.join(self.folder, f"{name}.pickle"), "rb") as f:
                    namespace[name] = pickle.load(f)
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                lost[name] = f"could not be loaded again ({type(exc).__name__})"
                continue
            restored.append(name)
            self._digests[name] = digest
        return sorted(restored), lost


def _shallow_size(value: Any) -> int:
    try:
        return sys.getsizeof(value)
    except Exception:
        return 0


def _write(path: str, data: bytes) -> None:
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)
