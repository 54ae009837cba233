"""The LiT tower's training loop: resume after an interruption, skip broken images, crop to the product."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import ml
from ml.lit.catalog import Product
from ml.lit.preprocess import crop_to_content
from ml.lit.train import TowerConfig, train_tower


class Interrupted(Exception):
    pass


def _products(folder: Path, count: int = 24) -> list[Product]:
    colours = {"Red": (200, 30, 30), "Blue": (30, 60, 200), "Black": (20, 20, 20)}
    products = []
    for index in range(count):
        name = list(colours)[index % 3]
        image = Image.new("RGB", (64, 80), "white")
        ImageDraw.Draw(image).rectangle((10 + index % 5, 20, 40, 60), fill=colours[name])
        path = folder / f"{index}.png"
        image.save(path)
        kind = "Shirts" if index % 2 else "Shoes"
        products.append(Product(str(index), f"{name} {kind}", path, {"baseColour": name, "articleType": kind}))
    return products


def test_training_resumes_where_an_interrupted_run_stopped(tmp_path: Path) -> None:
    products = _products(tmp_path)
    config = TowerConfig(epochs=2, image_size=32, batch_size=8, validation_fraction=0.2, warmup_steps=2)
    text = ml.load("minilm-l6-v2")

    def stop_in_second_epoch(stage: str, done: int, total: int, figures: dict[str, float]) -> None:
        if stage.startswith("epoch 2"):
            raise Interrupted

    with pytest.raises(Interrupted):
        train_tower(products, tmp_path / "run", config=config, text_tower=text, on_progress=stop_in_second_epoch)
    assert not (tmp_path / "run" / "model").exists()

    summary = train_tower(products, tmp_path / "run", config=config, text_tower=text, resume=True)

    assert [record["epoch"] for record in summary["history"]] == [1, 2]
    assert (tmp_path / "run" / "model" / "weights.safetensors").exists()


def test_an_undecodable_image_is_left_out_of_training(tmp_path: Path) -> None:
    products = _products(tmp_path, count=12)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    products.append(Product("broken", "Red Shirts", broken, {"baseColour": "Red"}))
    config = TowerConfig(epochs=1, image_size=32, batch_size=8, validation_fraction=0)

    summary = train_tower(products, tmp_path / "run", config=config, text_tower=ml.load("minilm-l6-v2"))

    assert summary["train_products"] == 12


def test_crop_to_content_keeps_the_product_and_pads_to_a_square() -> None:
    image = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(image).rectangle((150, 40, 169, 79), fill=(0, 0, 0))  # 20 x 40 product at the right

    square = crop_to_content(image)

    assert square.width == square.height and 40 <= square.width <= 45
    pixels = np.asarray(square)
    assert (pixels < 128).all(axis=2).mean() == pytest.approx(20 * 40 / square.width**2, rel=0.1)
