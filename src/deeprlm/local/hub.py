"""`hf:REPO/FILE` model specs: a GGUF file fetched from the Hugging Face hub through
`huggingface_hub`, which keeps it in its own cache (`HF_HOME`, `HF_HUB_CACHE`), so it is
downloaded once and found there offline (`HF_HUB_OFFLINE=1`) afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deeprlm.errors import InputError

SPEC_FORM = "hf:OWNER/REPO/FILE.gguf (optionally @REVISION after the repo)"


@dataclass(frozen=True)
class HubFile:
    repo_id: str
    filename: str
    revision: str | None = None


def parse_hub_spec(argument: str) -> HubFile:
    """`owner/repo/path/to/file.gguf` or `owner/repo@revision/file.gguf`."""
    pieces = argument.strip().strip("/").split("/")
    if len(pieces) < 3 or not all(pieces):
        raise InputError(f"bad model spec 'hf:{argument}': use {SPEC_FORM}")
    owner, repo, filename = pieces[0], pieces[1], "/".join(pieces[2:])
    repo, _, revision = repo.partition("@")
    if not repo:
        raise InputError(f"bad model spec 'hf:{argument}': use {SPEC_FORM}")
    return HubFile(f"{owner}/{repo}", filename, revision or None)


def fetch(hub_file: HubFile) -> Path:
    """The local path of `hub_file`, downloading it into the hub cache if it is not there."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise InputError(
            "hf: model specs need huggingface-hub: pip install 'deeprlm[local]'"
        ) from exc
    where = f"{hub_file.repo_id}/{hub_file.filename}"
    try:
        path = hf_hub_download(hub_file.repo_id, hub_file.filename, revision=hub_file.revision)
    except FileNotFoundError as exc:
        # The hub's "not in the cache and cannot download" error is a FileNotFoundError.
        raise InputError(
            f"cannot get {where} from the Hugging Face hub and it is not in the local cache: "
            f"{_first_line(exc)}"
        ) from exc
    except Exception as exc:
        # The hub client raises many HTTP and validation errors; to a user they all mean
        # "this spec cannot be fetched", with the client's own reason.
        raise InputError(
            f"cannot get {where} from the Hugging Face hub: {_first_line(exc)}"
        ) from exc
    return Path(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
