"""The LiT image towers and the encoder that pairs a trained one with its locked text tower.

Two towers: ``FeatureHead`` (the default), an MLP over a frozen pretrained backbone's description of the image
(``ml.lit.backbone``), and ``ImageTower``, a ResNet trained from scratch on the catalog's photos.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ml.encoders.base import l2_normalise
from ml.lit.backbone import OpenNsfwBackbone, load_backbone
from ml.lit.preprocess import prepare
from ml.specs import ModelSpec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PATCH_GRID = 7  # cells per side of a backbone head's explanation grid (OpenNSFW's last stage is 7 x 7)


class ImageTower(nn.Module):
    """A ResNet trunk whose feature map is projected position by position into the text tower's space.

    The projection is applied before average pooling, so an image's embedding is the mean of its positions'
    embeddings: a position's similarity to a text is exactly its share of the image's similarity (a class
    activation map with no gradients needed), which is what the explanation heatmaps show.
    """

    def __init__(self, *, dim: int, arch: str = "resnet18", hidden: int = 1024) -> None:
        super().__init__()
        trunk = getattr(torchvision.models, arch)(weights=None)
        self.features = nn.Sequential(
            trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        )
        channels = trunk.fc.in_features
        self.project = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.GELU(), nn.Conv2d(hidden, dim, 1)
        )

    def forward_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised per-position embeddings [N, dim, rows, cols]."""
        return self.project(self.features(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_map(pixels).mean(dim=(2, 3)), dim=-1)


class FeatureHead(nn.Module):
    """MLPs from a frozen backbone's description [..., features] to the text tower's space [..., dim].

    ``members`` MLPs are trained side by side, each with the full objective, and the image embedding is the
    normalised mean of theirs: an ensemble, which measured +0.016 text->image R@10 for three members (each one costs
    about a minute of training). The input is standardised with the training products' statistics, kept as buffers
    so they travel with the weights.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, *, features: int, dim: int, hidden: int = 1024, dropout: float = 0.2, members: int = 3) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        self.members = nn.ModuleList(
            nn.Sequential(
                nn.Dropout(dropout), nn.Linear(features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
            )
            for _ in range(members)
        )

    def fit_standardisation(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0) + 1e-6)

    def member_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """[members, ..., dim]: each member's L2-normalised embedding."""
        # NaN marks a feature the description does not know (a grid cell's other layout slots): the training mean.
        standardised = torch.nan_to_num((features - self.mean) / self.std, nan=0.0)
        return torch.stack([F.normalize(member(standardised), dim=-1) for member in self.members])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.member_embeddings(features).mean(dim=0), dim=-1)


def to_tensor(batch: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W] (channels-last memory, faster on CPU)."""
    pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((pixels - mean) / std).contiguous(memory_format=torch.channels_last)


class LitEncoder:
    """A trained tower plus its locked text tower: ``encode_images`` and ``encode_texts`` share one space."""

    def __init__(self, path: Path, *, spec: ModelSpec, device: str = "cpu") -> None:
        from safetensors.torch import load_file

        import ml

        self.spec = spec
        self.device = device
        self.config: dict[str, Any] = json.loads((Path(path) / CONFIG_FILE).read_text())
        self.image_size = int(self.config["image_size"])
        self.crop = bool(self.config.get("crop_to_content", False))
        self.dim = int(self.config["dim"])
        self.logit_scale = float(self.config.get("logit_scale", 100.0))
        self.backbone: OpenNsfwBackbone | None = None
        self.tower: FeatureHead | ImageTower
        if self.config.get("backbone"):
            zoom = bool(self.config.get("zoom", False))  # towers trained before the zoom view have none
            self.backbone = load_backbone(self.config["backbone"], zoom=zoom, device=device)
            features, hidden = int(self.config["features"]), int(self.config["hidden"])
            members = int(self.config.get("members", 1))
            self.tower = FeatureHead(features=features, dim=self.dim, hidden=hidden, members=members)
        else:
            self.tower = ImageTower(dim=self.dim, arch=self.config["arch"], hidden=int(self.config["hidden"]))
        self.tower.load_state_dict(load_file(str(Path(path) / WEIGHTS_FILE)))
        self.tower.to(device).eval()
        if self.backbone is None:
            self.tower.to(memory_format=torch.channels_last)
        self.text_tower = ml.load(self.config["text_tower"], device=device)

    def encode_texts(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        return np.asarray(self.text_tower.encode_texts(texts, **kwargs), dtype=np.float32)

    def prepare(self, images: Sequence[Image.Image]) -> np.ndarray:
        if self.backbone is not None:
            return np.stack([self.backbone.prepare(image) for image in images])
        return np.stack([prepare(image, self.image_size, crop=self.crop) for image in images])

    def encode_images(
        self,
        images: Sequence[Image.Image],
        *,
        batch_size: int = 64,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        return self.encode_prepared(self.prepare(images), batch_size=batch_size, on_progress=on_progress)

    @torch.inference_mode()
    def encode_prepared(
        self, pixels: np.ndarray, *, batch_size: int = 64, on_progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Embeddings of images already passed through ``prepare`` (uint8 [N, S, S, 3])."""
        chunks = []
        for start in range(0, len(pixels), batch_size):
            batch = self._tower_input(pixels[start : start + batch_size])
            chunks.append(self.tower(batch).float().cpu().numpy())
            if on_progress is not None:
                on_progress(min(start + batch_size, len(pixels)), len(pixels))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(chunks))

    def _tower_input(self, pixels: np.ndarray) -> torch.Tensor:
        if self.backbone is not None:
            return torch.from_numpy(self.backbone.describe(pixels)[:, 0, 0]).to(self.device)
        return to_tensor(pixels).to(self.device)

    @torch.inference_mode()
    def encode_image_patches(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(global [N, dim], per-position [N, rows, cols, dim]), both L2-normalised.

        The scratch CNN's positions are its last feature map's; a backbone head's are the cells of a 7 x 7 grid,
        each described the way the whole image is (its stage means and colours) and passed through the head.
        """
        pixels = self.prepare(images)
        if self.backbone is not None:
            whole, cells = self.backbone.describe_grids(pixels, (1, PATCH_GRID))
            pooled = self.tower(torch.from_numpy(whole[:, 0, 0]).to(self.device)).float().cpu().numpy()
            patches = self.tower(torch.from_numpy(cells).to(self.device)).float().cpu().numpy()
            return pooled.astype(np.float32), patches.astype(np.float32)
        assert isinstance(self.tower, ImageTower)
        maps = self.tower.forward_map(to_tensor(pixels).to(self.device)).float().cpu()
        pooled = F.normalize(maps.mean(dim=(2, 3)), dim=-1).numpy()
        patches = F.normalize(maps.permute(0, 2, 3, 1), dim=-1).numpy()
        return pooled.astype(np.float32), patches.astype(np.float32)
