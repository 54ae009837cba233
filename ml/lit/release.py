"""A trained tower as a model version: its spec (family ``lit-image-tower``) written beside the weights."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml.sources import sha256_path
from ml.specs import ModelSpec

SPEC_FILE = "spec.json"


def write_spec(out_dir: Path, *, name: str, metrics: dict[str, Any], catalog: str) -> ModelSpec:
    """``out_dir/spec.json`` for the weights in ``out_dir/model``; the version is the UTC time plus the weights'
    hash, so two runs never share a version."""
    model_dir = (out_dir / "model").resolve()
    digest = sha256_path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    spec = ModelSpec(
        name=name,
        version=f"{datetime.now(UTC):%Y%m%d.%H%M%S}-{digest[:8]}",
        family="lit-image-tower",
        task="image-text-embedding",
        source=f"file:{model_dir}",
        sha256=digest,
        preprocessing={"image_size": config["image_size"], "crop_to_content": config["crop_to_content"]},
        licence=f"trained by vlplatform on {catalog}; the catalog's own licence applies to these weights",
        extra={"dim": config["dim"], "text_tower": config["text_tower"], "training": metrics},
    )
    (out_dir / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
    return spec


def read_spec(out_dir: Path) -> ModelSpec:
    path = Path(out_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no {SPEC_FILE}; is it a train_image_tower --out directory?")
    return ModelSpec.from_dict(json.loads(path.read_text()))
