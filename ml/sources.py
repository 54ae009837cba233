"""Where a spec's weights are on disk, and their checksum."""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

from ml.specs import ModelSpec

HASHED_SKIP = {"__pycache__", ".gitattributes", ".cache"}
# A spec may leave its hash to be pinned by the first pull (trust on first use) when its publisher gives none.
UNPINNED = "unpinned"


class ModelNotInstalled(FileNotFoundError):
    pass


class ChecksumMismatch(ValueError):
    pass


def model_cache_dir() -> Path:
    return Path(os.environ.get("VLP_MODEL_CACHE", Path.home() / ".cache" / "vlplatform" / "models"))


def resolve_source(spec: ModelSpec) -> Path:
    """The local path holding ``spec``'s weights; raises ``ModelNotInstalled`` saying how to install them."""
    scheme, _, rest = spec.source.partition(":")
    if scheme == "package":
        try:
            module = importlib.import_module(rest)
        except ImportError as error:
            raise ModelNotInstalled(
                f"model {spec.name!r} is shipped by the Python package that provides {rest!r}, which is not "
                f"installed; install the project's dependencies (make venv)"
            ) from error
        getter = getattr(module, "get_model_path", None)
        return Path(getter()) if getter else Path(module.__file__ or "").parent
    path = Path(rest) if scheme == "file" else install_path(spec)
    if not path.exists():
        raise ModelNotInstalled(
            f"weights of model {spec.name!r} ({spec.source}) are not at {path}; "
            f"install them with: manage.py models pull {spec.name}"
        )
    return path


def install_path(spec: ModelSpec) -> Path:
    """Where ``manage.py models pull`` puts a downloaded spec's weights: a directory, or for ``url:`` one file."""
    scheme, _, rest = spec.source.partition(":")
    if scheme not in {"hf", "open_clip", "url"}:
        raise ValueError(f"model {spec.name!r} has source scheme {scheme!r}, which is not downloaded")
    folder = model_cache_dir() / spec.name / spec.version
    if scheme == "url":
        return folder / (Path(rest.split("?")[0]).name or "weights")
    return folder


def pin_path(spec: ModelSpec) -> Path:
    return model_cache_dir() / spec.name / f"{spec.version}.sha256"


def expected_sha256(spec: ModelSpec) -> str:
    """The hash the weights must have: the spec's, or for an unpinned spec the one its first pull recorded."""
    if spec.sha256 != UNPINNED:
        return spec.sha256
    pin = pin_path(spec)
    if not pin.exists():
        raise ModelNotInstalled(
            f"model {spec.name!r} ({spec.source}) has no pinned sha256 yet; install it with: "
            f"manage.py models pull {spec.name}"
        )
    return pin.read_text().strip()


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory as the sorted list of (relative path, file sha256)."""
    if path.is_file():
        return _sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if HASHED_SKIP & set(relative.parts):
            continue
        digest.update(f"{relative.as_posix()}\0{_sha256_file(file)}\n".encode())
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(spec: ModelSpec, path: Path | None = None) -> Path:
    path = path or resolve_source(spec)
    expected = expected_sha256(spec)
    actual = sha256_path(path)
    if actual != expected:
        said = "the spec says" if spec.sha256 != UNPINNED else "its first pull pinned"
        raise ChecksumMismatch(f"weights of model {spec.name!r} at {path} have sha256 {actual}, {said} {expected}")
    return path
