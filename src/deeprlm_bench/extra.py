"""The `bench` extra: the libraries `deeprlm bench run` needs beyond the library itself,
checked before a run starts so that a missing one costs a line, not a finished grid."""

from __future__ import annotations

import importlib.util
import sys

from deeprlm.errors import InputError

INSTALL = "pip install 'deeprlm[bench]'"
# Import name -> what it is for.
MODULES = {"bm25s": "the codeact baseline's search", "matplotlib": "the report's plot"}


def missing(names: tuple[str, ...] | None = None) -> list[str]:
    """Which of the extra's modules (or of `names`) cannot be imported here."""
    absent = []
    for name in names or tuple(MODULES):
        if name in sys.modules:
            if sys.modules[name] is None:  # import blocked on purpose
                absent.append(name)
        elif importlib.util.find_spec(name) is None:
            absent.append(name)
    return absent


def require() -> None:
    """Raises one InputError line naming the install command when the extra is missing."""
    absent = missing()
    if absent:
        what = ", ".join(f"{name} ({MODULES[name]})" for name in absent)
        raise InputError(f"deeprlm bench run needs the bench extra, missing {what}: {INSTALL}")
