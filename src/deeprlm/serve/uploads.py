"""Uploaded files made into a context: text files as they are, tar and zip archives (of a
folder, say) read member by member, in memory.

Nothing is written to disk, so an archive cannot place a file anywhere; still, a member
whose name climbs out of the archive (`../x`, `/etc/x`) makes the whole upload refused, as
a sign of a hostile or broken archive. Only regular files are read (links, devices and
folders are skipped), binary files are skipped and listed, and the sizes the archive
declares are added up before anything is unpacked, so a small archive that unpacks to
gigabytes is refused early (the sizes also cap what is read).
"""

from __future__ import annotations

import io
import re
import stat
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from deeprlm.context import SKIP_DIRS, decode_text
from deeprlm.repl.base import ContextValue
from deeprlm.serve.errors import ApiError, too_large, unprocessable

# First bytes of the compressed forms tarfile reads, and of a zip file.
_TAR_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int  # text in all, after unpacking
    max_files: int  # members of one archive


@dataclass(frozen=True)
class Upload:
    context: ContextValue
    skipped: tuple[str, ...]  # files left out (binary, links)
    files: int  # text files read


def read_upload(parts: Sequence[tuple[str, bytes]], limits: UploadLimits) -> Upload:
    """One or more uploaded files (name, bytes) as one context: one text file gives a str,
    anything else a dict of name -> text (an archive's members keyed by their path in it,
    prefixed with the archive's name when several files came)."""
    if not parts:
        raise ApiError(400, "no file in the upload: send one as the form field 'file'")
    texts: dict[str, str] = {}
    skipped: list[str] = []
    budget = _Budget(limits)
    for name, data in parts:
        key = member_key(name) or "upload"
        prefix = f"{key}/" if len(parts) > 1 else ""
        if is_archive(data):
            members, binary = read_archive(key, data, budget)
            texts.update({prefix + k: v for k, v in members.items()})
            skipped += [prefix + k for k in binary]
            continue
        budget.take(len(data), key)
        text = decode_text(data)
        if text is None:
            raise unprocessable(
                f"{key} is a binary file: upload text files, or a tar or zip archive of them",
                code="binary_upload",
            )
        texts[key] = text
    if not texts:
        raise unprocessable(
            f"the upload holds no text files ({len(skipped)} binary or other files skipped)",
            code="no_text",
        )
    if not any(texts.values()):
        raise unprocessable("the upload's files are all empty", code="no_text")
    if len(parts) == 1 and not is_archive(parts[0][1]):
        return Upload(next(iter(texts.values())), (), 1)
    return Upload(texts, tuple(skipped), len(texts))


def is_archive(data: bytes) -> bool:
    return data.startswith(_TAR_MAGIC + _ZIP_MAGIC) or data[257:262] == b"ustar"


def member_key(name: str) -> str:
    """An archive member's (or an uploaded file's) name as a relative path; refuses one
    that is absolute or climbs out with '..'."""
    if "\0" in name:
        raise unprocessable(f"a file name holds a NUL byte: {name!r}", code="unsafe_path")
    path = name.replace("\\", "/")
    if path.startswith("/") or _DRIVE.match(path):
        raise unprocessable(
            f"the archive names an absolute path: {name!r}; refusing it", code="unsafe_path"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise unprocessable(
            f"the archive names a path outside itself: {name!r}; refusing it",
            code="unsafe_path",
        )
    return "/".join(parts)


class _Budget:
    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.bytes = 0

    def take(self, size: int, name: str) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise too_large(
                f"the context is over the server's limit of {self.limits.max_bytes / 1e6:g} MB "
                f"(reached at {name})"
            )

    def count(self, members: int, name: str) -> None:
        if members > self.limits.max_files:
            raise too_large(f"{name} holds more than {self.limits.max_files} files")


def read_archive(name: str, data: bytes, budget: _Budget) -> tuple[dict[str, str], list[str]]:
    try:
        if data.startswith(_ZIP_MAGIC):
            return _read_zip(name, data, budget)
        return _read_tar(name, data, budget)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, RuntimeError) as err:
        # zlib.error and lzma.LZMAError derive from Exception only: caught as a group below.
        raise unprocessable(
            f"{name} is not a readable archive: {err}", code="bad_archive"
        ) from None
    except ApiError:
        raise
    except Exception as err:  # a damaged compressed stream
        raise unprocessable(
            f"{name} is not a readable archive: {err}", code="bad_archive"
        ) from None


def _skipped_dir(key: str) -> bool:
    return any(part in SKIP_DIRS for part in key.split("/")[:-1])


def _read_tar(name: str, data: bytes, budget: _Budget) -> tuple[dict[str, str], list[str]]:
    texts: dict[str, str] = {}
    skipped: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        count = 0
        for member in tar:  # headers are read one by one, so a count bound stops early
            count += 1
            budget.count(count, name)
            key = member_key(member.name)
            if member.isdir() or not key or _skipped_dir(key):
                continue
            if not member.isfile():
                skipped.append(key)  # links, devices, fifos
                continue
            # Declared sizes are added up before reading: what a member unpacks to is
            # bounded by the budget, not by the archive's word alone.
            budget.take(member.size, f"{name}:{key}")
            handle = tar.extractfile(member)
            if handle is None:
                skipped.append(key)
                continue
            text = decode_text(handle.read(member.size))
            if text is None:
                skipped.append(key)
            else:
                texts[key] = text
    return texts, skipped


def _read_zip(name: str, data: bytes, budget: _Budget) -> tuple[dict[str, str], list[str]]:
    texts: dict[str, str] = {}
    skipped: list[str] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        budget.count(len(infos), name)
        for info in infos:
            key = member_key(info.filename)
            if info.is_dir() or not key or _skipped_dir(key):
                continue
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver said nothing
            if kind and kind != stat.S_IFREG:
                skipped.append(key)  # a link or other special file
                continue
            budget.take(info.file_size, f"{name}:{key}")
            with archive.open(info) as handle:
                # Never more than declared: a member lying about its size gets cut there.
                text = decode_text(handle.read(info.file_size))
            if text is None:
                skipped.append(key)
            else:
                texts[key] = text
    return texts, skipped
