"""Explanation heatmaps on a model's patch grid: patch-text similarity and cross-attention maps.

A ``Heatmap`` keeps the raw values (cosines, Grad-CAM units, attention weights) on the grid the model computed them
on, plus what it explains and which model version made it, so it can be stored with a result as JSON and rendered
later. The grid covers ``model_view(encoder, image)``, the part of the upload the model actually looked at: the
white-padded square (or product crop) of a LiT tower (``ml.lit.preprocess``), the centre square of a CLIP tower whose
preprocessing resizes the short side and centre-crops. Overlays are drawn on that view, not on the original image,
so a hot patch lands on the pixels that produced it.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ml.encoders.base import PatchEncoder, l2_normalise

logger = logging.getLogger(__name__)

HEATMAP_KINDS = ("similarity", "grad-cam", "attention", "occlusion")


@dataclass(frozen=True, eq=False)
class Heatmap:
    """Raw explanation values on a patch grid.

    ``values``: float32 [rows, cols], raw (cosine similarity for ``similarity``, non-negative Grad-CAM units for
    ``grad-cam``, attention weights summing to 1 for ``attention``, score drops for ``occlusion``). ``label``: what
    the map explains (the text, the category). ``model_version``: ``name@version`` of the model that made it.
    """

    values: np.ndarray
    kind: str
    label: str = ""
    model_version: str = ""

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim != 2 or values.size == 0:
            raise ValueError(f"a heatmap is a non-empty [rows, cols] grid, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError(f"heatmap {self.label!r} ({self.kind}) holds non-finite values")
        if self.kind not in HEATMAP_KINDS:
            raise ValueError(f"heatmap kind {self.kind!r} is not one of {HEATMAP_KINDS}")
        object.__setattr__(self, "values", values)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid."""
        rows, cols = self.values.shape
        return int(rows), int(cols)

    def normalised(self, value_range: tuple[float, float] | None = None) -> np.ndarray:
        """The values min-max scaled to [0, 1] (float32, same grid): the map's lowest value becomes 0, its highest 1.

        With ``value_range=(low, high)`` those fixed ends are used instead and values outside them are clipped, so
        maps of different images share one scale. A constant map (or an empty range) gives all zeros: no patch
        stands out. Min-max shows *where* in this image the evidence is, not how strong it is; ``values`` keep that.
        """
        low, high = (float(self.values.min()), float(self.values.max())) if value_range is None else value_range
        if not high > low:
            return np.zeros_like(self.values)
        return np.clip((self.values - low) / (high - low), 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, to be stored with a result (``from_dict`` reads it back)."""
        return {
            "kind": self.kind,
            "label": self.label,
            "model_version": self.model_version,
            "grid": list(self.grid),
            "values": [[float(value) for value in row] for row in self.values],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Heatmap:
        """The heatmap ``to_dict`` wrote."""
        values = np.asarray(data["values"], dtype=np.float32)
        if "grid" in data and tuple(values.shape) != tuple(data["grid"]):
            raise ValueError(f"stored heatmap grid {data['grid']} does not match its values {values.shape}")
        return cls(
            values=values,
            kind=str(data["kind"]),
            label=str(data.get("label", "")),
            model_version=str(data.get("model_version", "")),
        )


def similarity_map(
    encoder: PatchEncoder, image: Image.Image, text: str | np.ndarray, *, label: str | None = None
) -> Heatmap:
    """Cosine similarity of each image patch with ``text`` (a string, or its embedding [dim] in the joint space).

    Any ``PatchEncoder`` works: ViT towers give their MaskCLIP patch embeddings, the LiT CNN tower its per-position
    embeddings (whose mean is the image embedding, so the map is each position's share of the image's score). The
    grid covers ``model_view(encoder, image)``. ``label`` defaults to the text (empty for an embedding).
    """
    if isinstance(text, str):
        embedding = np.asarray(encoder.encode_texts([text]), dtype=np.float32)[0]
        label = text if label is None else label
    else:
        embedding = np.asarray(text, dtype=np.float32)
        if embedding.ndim == 2 and embedding.shape[0] == 1:
            embedding = embedding[0]
        if embedding.ndim != 1:
            raise ValueError(f"a text embedding is one vector [dim], got shape {embedding.shape}")
    _, patches = encoder.encode_image_patches([image])
    grid = np.asarray(patches, dtype=np.float32)[0]
    if grid.shape[-1] != embedding.shape[0]:
        raise ValueError(
            f"the text embedding has {embedding.shape[0]} dimensions, the encoder's patches {grid.shape[-1]}"
        )
    # Both sides re-normalised: the dot products are cosines whatever a third-party encoder returns.
    values = l2_normalise(grid) @ l2_normalise(embedding[None])[0]
    version = model_version_of(encoder)
    logger.debug("similarity map", extra={"model_version": version, "grid": list(values.shape)})
    return Heatmap(values=values, kind="similarity", label=label or "", model_version=version)


def attention_heatmap(
    attention: np.ndarray | Sequence[float] | Sequence[Sequence[float]],
    grid: Sequence[int] | None = None,
    *,
    label: str = "cross-attention",
    model_version: str = "",
) -> Heatmap:
    """The cross-attention fusion head's attention over image patches as a heatmap.

    ``attention`` is [P] (reshaped row-major to ``grid``, or to a square grid when ``grid`` is None) or already
    [rows, cols]; a fusion explanation's ``attention`` and ``attention_grid`` fit as they are stored.
    """
    values = np.asarray(attention, dtype=np.float32)
    shape = None if grid is None else tuple(int(size) for size in grid)
    if shape is not None and len(shape) != 2:
        raise ValueError(f"an attention map is drawn on a [rows, cols] grid, got grid {list(shape)}")
    if values.ndim == 1:
        if shape is None:
            side = math.isqrt(values.size)
            if side * side != values.size:
                raise ValueError(f"{values.size} patches make no square grid; give the grid")
            shape = (side, side)
        if shape[0] * shape[1] != values.size:
            raise ValueError(f"{values.size} attention weights do not fill a {shape[0]} x {shape[1]} grid")
        values = values.reshape(shape)
    elif values.ndim != 2 or (shape is not None and values.shape != shape):
        raise ValueError(f"attention of shape {values.shape} does not fit grid {shape}")
    return Heatmap(values=values, kind="attention", label=label, model_version=model_version)


def model_view(encoder: Any, image: Image.Image) -> Image.Image:
    """The part of ``image`` that ``encoder``'s patch grid covers, at the image's own resolution (RGB).

    Draw overlays of this encoder's heatmaps on this view. A LiT tower sees the image padded to a white square, or
    the product crop when trained with ``crop_to_content`` (``LitEncoder.prepare`` resizes exactly this square).
    A CLIP tower whose preprocessing resizes the short (or long) side and centre-crops (or pads) sees that centre
    region (padding black, as open_clip pads). Anything else is taken to see the whole image, stretched to its grid.
    """
    rgb = image.convert("RGB")
    lit_model = sys.modules.get("ml.lit.model")
    # A LitEncoder can only exist once its module is imported; looking it up there keeps torchvision out of imports.
    if lit_model is not None and isinstance(encoder, lit_model.LitEncoder):
        from ml.lit.preprocess import crop_to_content, pad_to_square

        return crop_to_content(rgb) if encoder.crop else pad_to_square(rgb)
    box = _view_box(encoder, rgb.width, rgb.height)
    if box is None:
        return rgb
    return rgb.crop(box)


def model_version_of(model: Any) -> str:
    """``name@version`` of a loaded model's spec, or "" for a model without one."""
    spec = getattr(model, "spec", None)
    if spec is None or not getattr(spec, "name", ""):
        return ""
    return f"{spec.name}@{spec.version}"


def _view_box(encoder: Any, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The centred (x0, y0, x1, y1) a resize-then-centre-crop preprocessing keeps, or None for the whole image."""
    found = _open_clip_resize_crop(encoder, width, height) or _hf_resize_crop(encoder, width, height)
    if found is None:
        return None
    scale, (crop_rows, crop_cols) = found
    crop_height, crop_width = crop_rows / scale, crop_cols / scale
    x0, y0 = round((width - crop_width) / 2), round((height - crop_height) / 2)
    return x0, y0, x0 + round(crop_width), y0 + round(crop_height)


def _open_clip_resize_crop(encoder: Any, width: int, height: int) -> tuple[float, tuple[int, int]] | None:
    transforms = getattr(getattr(encoder, "preprocess", None), "transforms", None)
    if not transforms:
        return None
    scale, crop = 0.0, None
    for transform in transforms:
        name, size = type(transform).__name__, getattr(transform, "size", None)
        if name == "Resize" and (isinstance(size, int) or (isinstance(size, Sequence) and len(size) == 1)):
            target = size if isinstance(size, int) else size[0]
            scale = target / min(width, height)
        elif name == "ResizeKeepRatio" and isinstance(size, Sequence) and len(size) == 2:
            # timm's rule: the resize ratio blends the larger (longest=1) and smaller (longest=0) side ratio.
            longest = float(getattr(transform, "longest", 0.0))
            ratios = (height / size[0], width / size[1])
            scale = 1.0 / (max(ratios) * longest + min(ratios) * (1.0 - longest))
        elif name in ("CenterCrop", "CenterCropOrPad") and isinstance(size, Sequence) and len(size) == 2:
            crop = (int(size[0]), int(size[1]))
    return (scale, crop) if scale and crop else None


def _hf_resize_crop(encoder: Any, width: int, height: int) -> tuple[float, tuple[int, int]] | None:
    processor = getattr(encoder, "image_processor", None)
    if processor is None or not getattr(processor, "do_center_crop", False):
        return None
    size: Any = getattr(processor, "size", None)
    crop_size: Any = getattr(processor, "crop_size", None)
    if not hasattr(size, "get") or not hasattr(crop_size, "get"):
        return None
    shortest, crop_rows, crop_cols = size.get("shortest_edge"), crop_size.get("height"), crop_size.get("width")
    if not (shortest and crop_rows and crop_cols):
        return None
    return shortest / min(width, height), (int(crop_rows), int(crop_cols))
