"""Explanations: similarity maps, Grad-CAM and attention maps land where the evidence is, and render as PNGs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

import ml
from ml import tiny
from ml.detectors import Detection
from ml.encoders.base import PatchEncoder, l2_normalise
from ml.explain import (
    Heatmap,
    attention_heatmap,
    attribution_bar,
    draw_boxes,
    grad_cam,
    lit_grad_cam,
    model_view,
    overlay,
    png_bytes,
    similarity_map,
)
from ml.explain.render import EMPTY_BAR, MODALITY_COLOURS, VIRIDIS, label_colour
from ml.fusion import HeadShape, TemperatureScaler, build_head
from ml.fusion.heads import FusionPredictor
from ml.lit.model import CONFIG_FILE, WEIGHTS_FILE, ImageTower, LitEncoder
from ml.specs import ModelSpec

GREY = (128, 128, 128)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The machine's cores are shared with long-running work; these tests need one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- a PatchEncoder whose patches are their colours ----------------------------------------------------------------
class ColourPatchEncoder:
    """Each of a 4 x 4 grid of patches is embedded as its mean RGB colour; a text is a colour name's RGB axis."""

    dim = 3
    grid = (4, 4)
    colours = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalise(np.array([self.colours[text] for text in texts], dtype=np.float32))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_image_patches(images)[0]

    def encode_image_patches(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        cells = [
            (np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BOX), np.float32) / 255)
            .reshape(4, 16, 4, 16, 3)
            .mean(axis=(1, 3))
            for image in images
        ]
        patches = l2_normalise(np.stack(cells))
        return l2_normalise(patches.mean(axis=(1, 2))), patches


def red_quadrant_image() -> Image.Image:
    """96 x 64: red top-left quadrant, a green patch bottom-right, blue-grey elsewhere."""
    image = Image.new("RGB", (96, 64), (70, 90, 150))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 47, 31), fill=(220, 30, 30))
    draw.rectangle((72, 48, 95, 63), fill=(30, 200, 40))
    return image


def heat_index(rendered: np.ndarray, base: np.ndarray, alpha: float) -> np.ndarray:
    """Per pixel, the colour map entry (0..255) the overlay blended in: the blend undone, then the nearest entry."""
    colour = (rendered.astype(np.float32) - (1 - alpha) * base.astype(np.float32)) / alpha
    distances = np.linalg.norm(colour[:, :, None, :] - VIRIDIS[None, None].astype(np.float32), axis=-1)
    return distances.argmin(axis=-1)


def test_fake_encoder_honours_the_patch_encoder_protocol() -> None:
    assert isinstance(ColourPatchEncoder(), PatchEncoder)


def test_similarity_map_peaks_on_the_patches_of_the_named_colour() -> None:
    encoder = ColourPatchEncoder()

    heat = similarity_map(encoder, red_quadrant_image(), "red")

    assert heat.kind == "similarity" and heat.label == "red" and heat.grid == (4, 4)
    assert heat.values.dtype == np.float32
    red_cells, other_cells = heat.values[:2, :2], np.delete(heat.values.reshape(-1), [0, 1, 4, 5])
    assert red_cells.min() > other_cells.max()
    assert red_cells.min() > 0.95, "a red patch's cosine with the red axis is close to 1"
    green = similarity_map(encoder, red_quadrant_image(), encoder.encode_texts(["green"])[0], label="green")
    assert np.unravel_index(green.values.argmax(), green.grid) == (3, 3)
    assert green.label == "green"


def test_similarity_overlay_is_hottest_over_the_red_region() -> None:
    image = red_quadrant_image()
    heat = similarity_map(ColourPatchEncoder(), image, "red")

    rendered = Image.open(io.BytesIO(png_bytes(overlay(image, heat, alpha=0.45))))

    assert rendered.format == "PNG" and rendered.size == image.size and rendered.mode == "RGB"
    index = heat_index(np.asarray(rendered), np.asarray(image), 0.45)
    # Patch centres lie at x = 12, 36, ... and y = 8, 24, ...: up to the red patches' centres the map is flat.
    assert index[:24, :36].min() >= 250, "the red region's interior gets the map's top colour"
    assert index[56:, 84:].max() <= 5, "the green patch, least red, gets the bottom colours"
    hot_rows, hot_cols = np.nonzero(index >= 250)
    assert hot_rows.max() < 40 and hot_cols.max() < 56, "nothing far from the red region is as hot"
    assert index[40:, :60].max() < 100, "blue-grey patches stay in the cool half"
    pure = np.asarray(overlay(image, heat, alpha=1.0))
    assert tuple(pure[16, 24]) == tuple(VIRIDIS[255]) and tuple(pure[60, 92]) == tuple(VIRIDIS[0])


def test_overlay_is_deterministic_and_its_colour_bar_runs_from_hot_to_cold() -> None:
    image = red_quadrant_image()
    heat = similarity_map(ColourPatchEncoder(), image, "red")

    with_bar = np.asarray(overlay(image, heat, colour_bar=True))

    assert png_bytes(overlay(image, heat)) == png_bytes(overlay(image, heat))
    assert with_bar.shape[1] > image.width and with_bar.shape[0] == image.height
    assert tuple(with_bar[0, -1]) == tuple(VIRIDIS[255]) and tuple(with_bar[-1, -1]) == tuple(VIRIDIS[0])
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, alpha=1.5)


def test_heatmap_normalises_min_max_keeps_raw_values_and_round_trips_as_json() -> None:
    heat = Heatmap(values=np.array([[0.2, 0.4], [0.3, 0.2]]), kind="similarity", label="red", model_version="m@1")

    normalised = heat.normalised()
    stored = Heatmap.from_dict(json.loads(json.dumps(heat.to_dict())))

    assert normalised.min() == 0.0 and normalised.max() == 1.0
    assert normalised[1, 0] == pytest.approx(0.5)
    assert heat.values[0, 1] == pytest.approx(0.4), "the raw values are kept"
    assert heat.normalised((0.0, 1.0))[0, 1] == pytest.approx(0.4)
    assert np.array_equal(stored.values, heat.values) and stored.grid == (2, 2)
    assert (stored.kind, stored.label, stored.model_version) == ("similarity", "red", "m@1")
    assert not Heatmap(values=np.full((3, 3), 0.7), kind="grad-cam").normalised().any(), "flat: nothing stands out"
    with pytest.raises(ValueError, match="kind"):
        Heatmap(values=np.zeros((2, 2)), kind="saliency")
    with pytest.raises(ValueError, match="non-finite"):
        Heatmap(values=np.array([[np.nan, 1.0]]), kind="similarity")


# --- Grad-CAM on a CNN trained to find a bright square -------------------------------------------------------------
SQUARE = 6
CELL = 4  # the target layer's 8 x 8 grid over 32 x 32 pixels


class SquareNet(nn.Module):
    """Two poolings to an 8 x 8 feature grid, global average pooling, two classes (no square / square)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(16, 2)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(pixels).mean(dim=(2, 3))))


def square_images(count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Noisy 32 x 32 images, half of them with a bright 6 x 6 square at a random place; (pixels, labels, corners)."""
    pixels = rng.normal(0.0, 0.15, size=(count, 1, 32, 32)).astype(np.float32)
    labels = np.arange(count) % 2
    corners = rng.integers(0, 32 - SQUARE + 1, size=(count, 2))
    for index in np.flatnonzero(labels):
        row, col = corners[index]
        pixels[index, 0, row : row + SQUARE, col : col + SQUARE] += 1.0
    return torch.from_numpy(pixels), torch.from_numpy(labels), corners


@pytest.fixture(scope="module")
def square_net() -> tuple[SquareNet, tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """A SquareNet trained for a few seconds (fixed seeds), and held-out images."""
    rng = np.random.default_rng(0)
    pixels, labels, _ = square_images(768, rng)
    held_out = square_images(80, rng)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SquareNet()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for step in range(180):
            batch = torch.from_numpy(np.random.default_rng(step).choice(len(pixels), 64, replace=False))
            loss = nn.functional.cross_entropy(model(pixels[batch]), labels[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    return model.eval(), held_out


def no_hooks_left(model: nn.Module) -> bool:
    hook_tables = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return not any(getattr(module, table, None) for module in model.modules() for table in hook_tables)


def test_grad_cam_peaks_on_the_square_the_classifier_found(
    square_net: tuple[SquareNet, tuple[torch.Tensor, torch.Tensor, np.ndarray]],
) -> None:
    model, (pixels, labels, corners) = square_net
    with torch.no_grad():
        accuracy = (model(pixels).argmax(dim=1) == labels).float().mean().item()
    assert accuracy >= 0.95, "the classifier must work for its explanation to mean anything"

    hits, positives = 0, np.flatnonzero(labels.numpy())
    for index in positives:
        cam = grad_cam(model, model.features[-1], pixels[index : index + 1], lambda logits: logits[0, 1])
        assert cam.shape == (8, 8) and cam.dtype == np.float32 and (cam >= 0).all()
        peak_row, peak_col = np.unravel_index(cam.argmax(), cam.shape)
        row, col = corners[index]
        hits += bool(
            row // CELL <= peak_row <= (row + SQUARE - 1) // CELL
            and col // CELL <= peak_col <= (col + SQUARE - 1) // CELL
        )
    assert hits >= 0.8 * len(positives), f"Grad-CAM peaked on the square's cells in {hits} of {len(positives)} images"


def test_grad_cam_removes_its_hooks_restores_modes_and_leaves_no_gradients(
    square_net: tuple[SquareNet, tuple[torch.Tensor, torch.Tensor, np.ndarray]],
) -> None:
    model, (pixels, _, _) = square_net
    image = pixels[1:2]

    def positive(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, 1]

    in_eval = grad_cam(model, model.features[-1], image, positive)
    assert no_hooks_left(model) and not model.training
    model.train()
    model.features[1].eval()  # a mixed state (frozen batch norm) must come back as it was, module by module
    try:
        in_train = grad_cam(model, model.features[-1], image, positive)
        assert no_hooks_left(model)
        assert model.training and model.dropout.training and not model.features[1].training
    finally:
        model.eval()
    with torch.inference_mode():
        in_inference_mode = grad_cam(model, model.features[-1], image, positive)
    assert np.array_equal(in_eval, in_train), "Grad-CAM runs the model in eval mode (no dropout noise)"
    assert np.array_equal(in_eval, in_inference_mode)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not image.requires_grad
    with pytest.raises(ValueError, match="one scalar"):
        grad_cam(model, model.features[-1], image, lambda logits: logits[0])
    with pytest.raises(ValueError, match="one input"):
        grad_cam(model, model.features[-1], pixels[:2], positive)
    assert no_hooks_left(model), "hooks are removed when Grad-CAM fails too"


# --- real towers with random weights ---------------------------------------------------------------------------------
def product_photo() -> Image.Image:
    """A wide white catalog photo with a small red product off-centre."""
    image = Image.new("RGB", (160, 100), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 30, 140, 80), fill=(200, 30, 30))
    draw.rectangle((110, 40, 118, 48), fill=(20, 20, 20))
    return image


@pytest.fixture(scope="module")
def lit_encoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LitEncoder]:
    """A random ``ImageTower`` saved in the LiT release format, with the packaged MiniLM as its text tower."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("lit")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tower = ImageTower(dim=384, arch="resnet18", hidden=32)
    save_file({key: value.contiguous() for key, value in tower.state_dict().items()}, str(folder / WEIGHTS_FILE))
    config = {
        "arch": "resnet18",
        "image_size": 128,
        "hidden": 32,
        "dim": 384,
        "crop_to_content": True,
        "text_tower": "minilm-l6-v2",
        "logit_scale": 100.0,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    spec = ModelSpec(
        name="random-lit", version="test", family="lit-image-tower", source=f"file:{folder}", sha256="0" * 64
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield LitEncoder(folder, spec=spec)


def test_lit_grad_cam_and_similarity_map_cover_the_product_crop(lit_encoder: LitEncoder) -> None:
    image = product_photo()

    cam = lit_grad_cam(lit_encoder, image, "a red shirt")
    similarity = similarity_map(lit_encoder, image, "a red shirt")
    view = model_view(lit_encoder, image)

    for heat in (cam, similarity):
        assert heat.grid == (4, 4), "128 px through a ResNet (stride 32): a 4 x 4 grid"
        assert np.isfinite(heat.values).all() and heat.label == "a red shirt"
        assert heat.model_version == "random-lit@test"
    assert cam.kind == "grad-cam" and (cam.values >= 0).all()
    assert similarity.kind == "similarity" and (np.abs(similarity.values) <= 1 + 1e-5).all()
    assert view.width == view.height < image.width, "the tower sees the square around the product"
    prepared = np.asarray(view.resize((128, 128), Image.Resampling.BICUBIC))
    assert np.array_equal(prepared, lit_encoder.prepare([image])[0]), "the view is exactly what the tower saw"
    assert overlay(view, cam).size == view.size
    embedding = lit_encoder.encode_texts(["a red shirt"])[0]
    assert np.allclose(lit_grad_cam(lit_encoder, image, embedding).values, cam.values, atol=1e-6)
    assert not lit_encoder.tower.training and no_hooks_left(lit_encoder.tower)
    assert all(parameter.grad is None for parameter in lit_encoder.tower.parameters())


def tiny_open_clip_longest(out: Path) -> ModelSpec:
    """The tiny open_clip with ``resize_mode: longest``: the long side fits, the short one is padded (black)."""
    spec = tiny.build_tiny_open_clip(out)
    return replace(spec, version=f"{spec.version}-longest", preprocessing={"resize_mode": "longest"})


def drawing_48x32() -> Image.Image:
    image = Image.new("RGB", (48, 32), "white")
    ImageDraw.Draw(image).rectangle((10, 4, 30, 24), fill="red")
    return image


def padded_top_and_bottom(image: Image.Image) -> np.ndarray:
    view = np.zeros((48, 48, 3), np.uint8)
    view[8:40] = np.asarray(image)
    return view


TINY_TOWERS: dict[str, tuple[Callable[[Path], ModelSpec], Callable[[Image.Image], np.ndarray]]] = {
    # open_clip and transformers' CLIP resize the short side and centre-crop; SigLIP squashes the whole image.
    "open_clip": (tiny.build_tiny_open_clip, lambda image: np.asarray(image)[:, 8:40]),
    "open_clip-longest": (tiny_open_clip_longest, padded_top_and_bottom),
    "hf-clip": (tiny.build_tiny_hf_clip, lambda image: np.asarray(image)[:, 8:40]),
    "hf-siglip": (tiny.build_tiny_hf_siglip, np.asarray),
}


@pytest.mark.parametrize("kind", list(TINY_TOWERS))
def test_similarity_map_of_a_tiny_vit_tower_has_its_patch_grid(kind: str, tmp_path: Path) -> None:
    build, expected_view = TINY_TOWERS[kind]
    spec = build(tmp_path)
    encoder = ml.load(spec.name, spec=spec)
    image = drawing_48x32()

    heat = similarity_map(encoder, image, "a red square")

    assert heat.grid == encoder.grid == (4, 4)
    _, patches = encoder.encode_image_patches([image])
    text = encoder.encode_texts(["a red square"])[0]
    assert np.allclose(heat.values, patches[0] @ text, atol=1e-5), "each value is the patch's cosine with the text"
    assert heat.model_version == f"{spec.name}@{spec.version}"
    assert np.array_equal(np.asarray(model_view(encoder, image)), expected_view(image)), "the region the grid covers"


# --- attention, boxes, attribution bars ------------------------------------------------------------------------------
def test_attention_heatmap_reshapes_patches_to_the_grid() -> None:
    flat = attention_heatmap(np.arange(12, dtype=np.float32), (3, 4))
    square = attention_heatmap(np.arange(16), label="tokens -> patches", model_version="head@2")

    assert flat.grid == (3, 4) and flat.values[1, 0] == 4.0 and flat.values[2, 3] == 11.0
    assert square.grid == (4, 4) and square.kind == "attention" and square.model_version == "head@2"
    assert attention_heatmap(np.ones((2, 3))).grid == (2, 3)
    with pytest.raises(ValueError, match="grid"):
        attention_heatmap(np.arange(12), (5, 5))
    with pytest.raises(ValueError, match="square"):
        attention_heatmap(np.arange(12))


def test_attention_heatmap_reads_a_cross_attention_heads_explanation() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = build_head(HeadShape(kind="cross_attention", image_dim=8, text_dim=6, num_categories=2, hidden=8))
    predictor = FusionPredictor(
        head, calibrator=TemperatureScaler([1.0, 1.0]), categories=["a", "b"], thresholds={"a": 0.5, "b": 0.5}
    )
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(1, 3, 4, 8)).astype(np.float32)

    explanation = predictor.predict(text_features=rng.normal(size=(1, 6)), image_patches=patches).explanations[0]
    heat = attention_heatmap(explanation["attention"], explanation["attention_grid"])

    assert heat.grid == (3, 4) and heat.values.sum() == pytest.approx(1.0, abs=1e-5)
    assert overlay(Image.new("RGB", (40, 30), "white"), heat).size == (40, 30)


def test_draw_boxes_draws_on_the_box_edges_and_nowhere_else() -> None:
    image = Image.new("RGB", (120, 90), GREY)

    plain = np.asarray(draw_boxes(image, [Detection("face", 0.93, (20.0, 30.0, 60.0, 70.0))], labels=False))

    changed = np.any(plain != GREY, axis=2)
    rows, cols = np.nonzero(changed)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (30, 70, 20, 60), "the outline lies on the box"
    for row, col in ((50, 20), (50, 60), (30, 40), (70, 40)):
        assert tuple(plain[row, col]) == label_colour("face")
    assert not changed[50, 40] and not changed[85, 110], "inside and far away stay as they were"
    assert np.asarray(image).max() == GREY[0], "the input image is not drawn on"

    labelled = np.asarray(draw_boxes(image, [Detection("face", 0.93, (20.0, 30.0, 60.0, 70.0))]))
    assert np.any(labelled[18:30, 20:60] != GREY), "the label tab sits above the box"
    assert not np.any(labelled[75:, :] != GREY) and not np.any(labelled[:, 90:] != GREY)


def test_draw_boxes_clips_to_the_image_and_skips_boxes_outside_it() -> None:
    image = Image.new("RGB", (120, 90), GREY)

    drawn = np.asarray(
        draw_boxes(image, [Detection("logo", 0.5, (100, 60, 300, 200)), Detection("x", 0.9, (200, 5, 300, 50))])
    )

    assert tuple(drawn[75, 119]) == label_colour("logo") and tuple(drawn[89, 110]) == label_colour("logo")
    assert not np.any(drawn[:40, :] != GREY), "the box wholly outside draws nothing; the clipped one stays below"
    assert tuple(drawn[75, 105]) == GREY


@pytest.mark.parametrize(
    ("shares", "widths"), [({"image": 0.8, "text": 0.2}, (192, 48)), ({"text": 3, "image": 1}, (60, 180))]
)
def test_attribution_bar_segments_are_proportional_to_the_shares(
    shares: dict[str, float], widths: tuple[int, int]
) -> None:
    bar = attribution_bar(shares, width=240)

    top = np.asarray(bar)[0]
    image_width = int(np.all(top == MODALITY_COLOURS["image"], axis=1).sum())
    text_width = int(np.all(top == MODALITY_COLOURS["text"], axis=1).sum())
    assert bar.width == 240 and (image_width, text_width) == widths
    legend = np.asarray(bar)[18:]
    assert (legend < 60).all(axis=2).any(), "the legend names the modalities"
    assert png_bytes(bar) == png_bytes(attribution_bar(shares, width=240))


def test_attribution_bar_without_evidence_is_empty_and_bad_shares_are_refused() -> None:
    top = np.asarray(attribution_bar({"image": 0.0, "text": 0.0}, width=100))[0]

    assert np.all(top == EMPTY_BAR)
    with pytest.raises(ValueError, match="non-negative"):
        attribution_bar({"image": -0.1, "text": 1.1})


def test_importing_the_package_leaves_torch_unloaded() -> None:
    """A web process that only renders stored heatmaps must not pay for importing torch."""
    code = "import sys, ml.explain; sys.exit('torch' in sys.modules or 'torchvision' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_png_bytes_decode_to_the_same_pixels() -> None:
    image = red_quadrant_image()

    decoded = Image.open(io.BytesIO(png_bytes(image)))

    assert decoded.format == "PNG" and np.array_equal(np.asarray(decoded), np.asarray(image))
