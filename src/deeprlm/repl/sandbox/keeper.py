"""The keeper: holds one REPL's workspace, a size- and file-limited tmpfs, for the REPL's life.

The host starts it (`python -I -S -B keeper.py ROOT BYTES FILES`) when it makes a workspace.
It enters a user and a mount namespace of its own, mounts the tmpfs over ROOT there (so the
kernel enforces the quota on everything the code writes, files and saved variables alike),
makes `work/`, `state/` and `rootfs/` in it, answers "ok" on stdout and waits until the host
closes its stdin or dies. Workers join its namespaces (see `isolation.enter_namespaces`), so
the files survive a worker that is replaced; when the keeper ends, the tmpfs goes with it.

It runs none of the model's code and is invisible from the workers' pid namespaces.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

FOLDERS = ("work", "state", "rootfs")


def _load(name: str) -> types.ModuleType:
    """A sibling module by its path: both need only the standard library, and importing the
    deeprlm package would load the engine and the model clients."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_deeprlm_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    isolation, mounts = _load("isolation"), _load("mounts")
    root, size, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        isolation.die_with_parent()
        if os.getppid() == 1:
            return 1  # the host is already gone
        notes: list[str] = []
        if not isolation.enter_user_namespace(notes):
            raise OSError(0, "; ".join(notes))
        if isolation._libc.unshare(isolation.CLONE_NEWNS) != 0:
            raise OSError(0, "the kernel refused a mount namespace")
        mounts.make_private()
        mounts.mount_tmpfs(root, size, files, 0o711)
        for name in FOLDERS:
            path = os.path.join(root, name)
            os.mkdir(path, 0o700 if name != "rootfs" else 0o755)
            if os.geteuid() == 0 and name != "rootfs":
                os.chown(path, isolation.NOBODY, isolation.NOBODY)
    except OSError as exc:
        sys.stdout.write(f"{exc.strerror or exc}\n")
        sys.stdout.flush()
        return 1
    sys.stdout.write("ok\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()  # returns when the host closes the pipe, or dies
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
