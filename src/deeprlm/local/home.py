"""Where deeprlm keeps its per-user files (assembled models): `$DEEPRLM_HOME`, else the
platform's user cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def deeprlm_home() -> Path:
    """The folder for deeprlm's per-user files; not created here."""
    configured = os.environ.get("DEEPRLM_HOME")
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "deeprlm"


def models_dir() -> Path:
    return deeprlm_home() / "models"
