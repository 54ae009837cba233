"""``manage.py models``: pull from a loopback HTTP server, checksum refusal, verify, register, list."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from functools import partial
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.registry.models import ModelStatus, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def weight_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a folder of weight files the test writes."""
    root = tmp_path / "served"
    root.mkdir()
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VLP_MODEL_CACHE", str(cache))
    return cache


def _spec_file(tmp_path: Path, *, name: str, url: str, sha256: str) -> Path:
    spec = {"name": name, "version": "1.0", "family": "fusion-head", "source": f"url:{url}", "sha256": sha256}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def _run(*args: str) -> str:
    out = StringIO()
    call_command("models", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_pull_downloads_verifies_and_installs(
    weight_server: tuple[str, Path], tmp_path: Path, model_cache: Path
) -> None:
    base, root = weight_server
    payload = bytes(range(256)) * 8192  # 2 MiB: several download chunks
    (root / "head.safetensors").write_bytes(payload)
    spec = _spec_file(tmp_path, name="head", url=f"{base}/head.safetensors", sha256=hashlib.sha256(payload).hexdigest())

    output = _run("pull", "x", "--spec", str(spec))

    installed = model_cache / "head" / "1.0" / "head.safetensors"
    assert "sha256 verified" in output
    assert installed.read_bytes() == payload


def test_pull_refuses_weights_whose_sha256_differs(
    weight_server: tuple[str, Path], tmp_path: Path, model_cache: Path
) -> None:
    base, root = weight_server
    (root / "head.bin").write_bytes(b"tampered weights")
    spec = _spec_file(tmp_path, name="head", url=f"{base}/head.bin", sha256=hashlib.sha256(b"real").hexdigest())

    with pytest.raises(CommandError, match="nothing was installed"):
        _run("pull", "x", "--spec", str(spec))
    assert not (model_cache / "head" / "1.0" / "head.bin").exists()


def test_pull_of_a_missing_file_is_a_clear_error(weight_server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = weight_server
    spec = _spec_file(tmp_path, name="gone", url=f"{base}/gone.bin", sha256="0" * 64)
    with pytest.raises(CommandError, match=r"cannot download .*gone\.bin.*404"):
        _run("pull", "x", "--spec", str(spec))


def test_unpinned_spec_is_pinned_by_its_first_pull(
    weight_server: tuple[str, Path], tmp_path: Path, model_cache: Path
) -> None:
    base, root = weight_server
    (root / "w.bin").write_bytes(b"weights v1")
    spec = _spec_file(tmp_path, name="tofu", url=f"{base}/w.bin", sha256="unpinned")
    _run("pull", "x", "--spec", str(spec))
    assert (model_cache / "tofu" / "1.0.sha256").read_text().strip() == hashlib.sha256(b"weights v1").hexdigest()

    (model_cache / "tofu" / "1.0" / "w.bin").write_bytes(b"swapped later")
    _run("register", "--spec", str(spec))
    with pytest.raises(CommandError, match="failed verification"):
        _run("verify", "tofu")


def test_register_creates_a_verified_model_version_and_can_promote() -> None:
    output = _run("register", "minilm-l6-v2", "--promote")

    version = ModelVersion.objects.get(name="minilm-l6-v2")
    assert "registered minilm-l6-v2@" in output
    assert version.verified_ok is True and version.status == ModelStatus.CHAMPION
    assert "champion" in _run("list")
    assert "minilm-l6-v2@1.0.0: sha256 matches" in _run("verify", "minilm-l6-v2")


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(CommandError, match=r"unknown model 'nope'; known models: .*minilm-l6-v2"):
        _run("pull", "nope")


def test_list_shows_install_state() -> None:
    lines = {line.split()[0]: line for line in _run("list").splitlines()[1:]}
    assert " yes " in lines["minilm-l6-v2@1.0.0"]
    assert lines["clip-vit-b-32-laion2b@1.0.0"].split()[3] == "no"
    assert "clip-vit-b-32-laion2b@1.0.0" not in _run("list", "--pack", "offline")
