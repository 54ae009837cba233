"""The LiT towers: training resumes after an interruption, skips broken images, crops to the product; the frozen
OpenNSFW backbone's descriptions and colour histograms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import ml
from ml.lit.backbone import (
    COLOUR_FEATURES,
    BackboneError,
    OpenNsfwBackbone,
    colour_histograms,
    load_backbone,
    zoom_centre,
)
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


def test_the_scratch_cnn_tower_still_trains_and_loads(tmp_path: Path) -> None:
    config = TowerConfig(backbone="", epochs=1, image_size=32, batch_size=8, validation_fraction=0)

    train_tower(_products(tmp_path), tmp_path / "run", config=config, text_tower=ml.load("minilm-l6-v2"))

    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["backbone"] == "" and saved["arch"] == "resnet18" and saved["image_size"] == 32


@pytest.fixture(scope="module")
def backbone() -> OpenNsfwBackbone:
    return load_backbone("open-nsfw")


def _product_photo(colour: tuple[int, int, int], box: tuple[int, int, int, int] = (60, 40, 160, 190)) -> np.ndarray:
    image = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(image).rectangle(box, fill=colour)
    return OpenNsfwBackbone.prepare(image)


def test_backbone_cells_average_to_the_whole_image_description(backbone: OpenNsfwBackbone) -> None:
    pixels = np.stack([_product_photo((200, 30, 30)), _product_photo((30, 60, 200))])

    whole = backbone.describe(pixels)
    cells = backbone.describe(pixels, grid=7)

    assert whole.shape == (2, 1, 1, backbone.dim) and cells.shape == (2, 7, 7, backbone.dim)
    stages = 128 + 256 + 512 + 1024  # every stage map (56, 28, 14, 7 positions a side) splits evenly
    np.testing.assert_allclose(cells[..., :stages].mean(axis=(1, 2)), whole[:, 0, 0, :stages], rtol=1e-4, atol=1e-5)
    layout = cells[0, :, :, stages:-COLOUR_FEATURES].reshape(7, 7, 9, 512)
    assert np.isfinite(layout[0, 0, 0]).all() and np.isnan(layout[0, 0, 1:]).all()  # a corner cell fills slot 0
    assert np.isfinite(layout[6, 6, 8]).all() and np.isfinite(whole).all()
    assert not np.allclose(whole[0], whole[1])  # a red and a blue product are described differently


def test_zoom_view_describes_the_centre_of_the_whole_image_and_no_cell(backbone: OpenNsfwBackbone) -> None:
    zooming = load_backbone("open-nsfw", zoom=True)
    small, large = _product_photo((200, 30, 30), (97, 97, 127, 127)), _product_photo((200, 30, 30), (89, 89, 135, 135))
    pixels = np.stack([small, large])
    stages = 128 + 256 + 512 + 1024

    plain, zoomed = backbone.describe(pixels), zooming.describe(pixels)
    cells = zooming.describe(pixels, grid=7)

    assert zooming.dim == backbone.dim + stages
    np.testing.assert_array_equal(zoomed[..., : backbone.dim], plain)
    # The 1.5x zoom shows the small square at the size the large one has in the plain view.
    centre = zoom_centre(small[None])[0]
    assert (centre.min(axis=-1) < 128).sum() == pytest.approx((large.min(axis=-1) < 128).sum(), rel=0.1)
    assert np.isfinite(zoomed).all() and np.isnan(cells[..., backbone.dim :]).all()


def test_colour_histogram_puts_a_product_in_its_hue_and_the_background_in_no_bin() -> None:
    red, navy = _product_photo((220, 20, 20)), _product_photo((20, 30, 110))

    histograms = colour_histograms(np.stack([red, navy]))[:, 0, 0]

    hue_of = histograms[:, :108].reshape(2, 12, 9).sum(axis=2).argmax(axis=1)
    assert list(hue_of) == [0, 7]  # red at hue 0; navy (hue ~230 degrees) in bin 7 of 12
    assert histograms[:, :108].max(axis=1) == pytest.approx([1.0, 1.0], abs=0.02)  # square roots of shares


def test_a_graph_without_the_stage_outputs_is_refused(tmp_path: Path) -> None:
    import onnx

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "not-open-nsfw",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "other.onnx"))

    with pytest.raises(BackboneError, match="not the OpenNSFW graph"):
        OpenNsfwBackbone(tmp_path / "other.onnx")
