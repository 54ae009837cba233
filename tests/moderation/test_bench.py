"""``python -m bench --only moderation``: the platform (gunicorn, a Celery worker, PostgreSQL, Redis) against the
pipeline called directly, on a fresh data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
SIGNAL_MODELS = {"minilm-l6-v2", "mtcnn", "nudenet", "open-nsfw", "profanity-check", "rapidocr"}


@pytest.mark.worker
def test_quick_moderation_benchmark_measures_both_paths_and_the_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["VLP_VAR_DIR"] = str(tmp_path / "var")
    out = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench", "--quick", "--only", "moderation", "--out", str(out)]

    completed = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=900, check=False)

    assert completed.returncode == 0, completed.stderr[-4000:]
    document = json.loads(out.read_text())
    figures = {figure["name"]: figure for figure in document["figures"]}
    ratios = [
        f"moderation API/{path} ({kind})"
        for path in ("direct", "direct batched")
        for kind in ("text-only", "with images")
    ]
    for name in ratios:
        assert figures[name]["value"] > 0 and figures[name]["target"] == ">= 0.8x"
        assert isinstance(figures[name]["met"], bool)
    memory = figures["moderation worker RSS, offline pack loaded"]
    assert 0.1 < memory["value"] < 64 and memory["target"] == "<= 3 GiB"
    details = document["benchmarks"]["moderation"]
    # The worker scored posts with images and texts: every signal model and the trained fusion head were loaded.
    used = {label.split("@")[0] for label in details["models_used"]}
    assert used == SIGNAL_MODELS | {"moderation-fusion"}
    assert len(details["worker_memory"]["processes"]) >= 2  # the Celery main process and its pool child
    assert details["text-only"]["api"]["runs"] and details["with images"]["direct"]["runs"]
    assert "moderation API/direct" in completed.stdout
    # The worker it started has stopped with it.
    assert not [p for p in psutil.process_iter(["cmdline"]) if "bench@%h" in (p.info["cmdline"] or [])]
