"""Fusion heads: image features + text features -> multi-label logits, each explaining itself; and their serving side.

Every head takes ``image`` [N, Dv] and ``text`` [N, Dt] feature vectors, optional presence masks ``image_present`` /
``text_present`` [N] (a moderation post may be text-only, image-only or both; a missing modality is zeroed and
weighted 0), and, for cross-attention, ``image_patches`` [N, P, Dv] or [N, rows, cols, Dv] and ``text_tokens``
[N, L, Dt] with ``text_token_mask`` [N, L]. Heads that do not use patches or tokens accept and ignore them, so one
training loop and one predictor serve every kind.

A trained head is saved as a directory (``weights.safetensors`` + ``config.json``) and loaded by ``load_head``, which
``ml.load`` calls for the ``fusion-head`` family.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from ml.fusion.calibration import Calibrator, calibrator_from_dict
from ml.specs import ModelSpec

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
SAVE_FORMAT = "vlplatform-fusion-head/1"


@dataclass(frozen=True)
class HeadShape:
    """What a head is built from; saved next to its weights so the same module can be rebuilt."""

    kind: str
    image_dim: int
    text_dim: int
    num_categories: int
    hidden: int = 64
    attention_heads: int = 1
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _presence(present: Tensor | None, like: Tensor) -> Tensor:
    if present is None:
        return torch.ones(like.shape[0], dtype=torch.bool, device=like.device)
    if present.shape != (like.shape[0],):
        raise ValueError(f"a presence mask must be [{like.shape[0]}], got {tuple(present.shape)}")
    return present.to(device=like.device, dtype=torch.bool)


def _zero_missing(features: Tensor, present: Tensor) -> Tensor:
    return features * present.view(-1, *([1] * (features.ndim - 1))).to(features.dtype)


def _share(image_part: Tensor, text_part: Tensor) -> tuple[Tensor, Tensor]:
    """Normalise two non-negative amounts to shares summing to 1 (both 0 where both are 0)."""
    total = image_part + text_part
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return image_part / safe, text_part / safe


def _item_attribution(image_part: Tensor, text_part: Tensor, logits: Tensor) -> dict[str, Tensor]:
    """Per-category modality shares of non-negative evidence amounts [N, C], and per item their average weighted by
    each category's probability: an item is explained by what drove the categories it scores high on, not by the
    evidence against the categories it plainly is not."""
    image_share, text_share = _share(image_part, text_part)
    weights = torch.sigmoid(logits)
    total = weights.sum(dim=1).clamp(min=1e-12)  # divided last, so a modality that is all of it is exactly 1
    return {
        "image_attribution": (image_share * weights).sum(dim=1) / total,
        "text_attribution": (text_share * weights).sum(dim=1) / total,
        "image_attribution_per_category": image_share,
        "text_attribution_per_category": text_share,
    }


class FusionHead(nn.Module):
    """Base of the heads: holds the shape; subclasses implement ``forward`` and ``explain``."""

    kind: ClassVar[str] = ""

    def __init__(self, shape: HeadShape) -> None:
        super().__init__()
        self.shape = shape

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits [N, C]."""
        raise NotImplementedError

    def explain(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """What this head can say about its decision, per item (see each head)."""
        raise NotImplementedError


class EarlyFusionHead(FusionHead):
    """An MLP over concat(h_image, h_text, presence flags); the flags tell a missing modality from a zero vector."""

    kind = "early"

    def __init__(self, shape: HeadShape) -> None:
        super().__init__(shape)
        self.mlp = nn.Sequential(
            nn.Linear(shape.image_dim + shape.text_dim + 2, shape.hidden),
            nn.ReLU(),
            nn.Dropout(shape.dropout),
            nn.Linear(shape.hidden, shape.num_categories),
        )

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits [N, C]."""
        image_present, text_present = _presence(image_present, image), _presence(text_present, text)
        inputs = torch.cat(
            [
                _zero_missing(image, image_present),
                _zero_missing(text, text_present),
                image_present[:, None].to(image.dtype),
                text_present[:, None].to(image.dtype),
            ],
            dim=1,
        )
        return self.mlp(inputs)

    def explain(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Modality attribution by occlusion, since the MLP itself has no modality weights: how much each category's
        probability moves when the image (or the text) is removed, as shares per category
        (``image_attribution_per_category`` [N, C]) and per item (``image_attribution`` / ``text_attribution`` [N],
        weighted by the categories' probabilities)."""
        image_present, text_present = _presence(image_present, image), _presence(text_present, text)
        absent = torch.zeros_like(image_present)
        logits = self(image, text, image_present=image_present, text_present=text_present)
        full = torch.sigmoid(logits)
        without_image = torch.sigmoid(self(image, text, image_present=absent, text_present=text_present))
        without_text = torch.sigmoid(self(image, text, image_present=image_present, text_present=absent))
        return _item_attribution(
            (full - without_image).abs() * image_present[:, None],
            (full - without_text).abs() * text_present[:, None],
            logits,
        )


class LateFusionHead(FusionHead):
    """Per-modality linear scorers combined with learned per-category modality weights (a softmax over modalities).

    ``logit_c = b_c + w_image,c * s_image,c + w_text,c * s_text,c``; a missing modality gets weight 0 and the other
    weight 1.
    """

    kind = "late"

    def __init__(self, shape: HeadShape) -> None:
        super().__init__(shape)
        self.image_scorer = nn.Linear(shape.image_dim, shape.num_categories)
        self.text_scorer = nn.Linear(shape.text_dim, shape.num_categories)
        self.modality_logits = nn.Parameter(torch.zeros(2, shape.num_categories))
        self.bias = nn.Parameter(torch.zeros(shape.num_categories))

    def _parts(
        self, image: Tensor, text: Tensor, image_present: Tensor | None, text_present: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        image_present, text_present = _presence(image_present, image), _presence(text_present, text)
        present = torch.stack([image_present, text_present], dim=1)[:, :, None]  # [N, 2, 1]
        logits = self.modality_logits[None].expand(image.shape[0], -1, -1)
        weights = torch.softmax(logits.masked_fill(~present, torch.finfo(logits.dtype).min), dim=1)
        weights = weights * present.to(weights.dtype)  # both missing: no weight to either
        image_scores = self.image_scorer(_zero_missing(image, image_present))
        text_scores = self.text_scorer(_zero_missing(text, text_present))
        return weights[:, 0], weights[:, 1], image_scores, text_scores

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits [N, C]."""
        image_weight, text_weight, image_scores, text_scores = self._parts(image, text, image_present, text_present)
        return self.bias + image_weight * image_scores + text_weight * text_scores

    def modality_weights(self) -> Tensor:
        """The learned per-category weights [2, C] (rows: image, text) for items with both modalities."""
        return torch.softmax(self.modality_logits, dim=0)

    def explain(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Per category and item: ``image_weight`` / ``text_weight`` [N, C] (the learned weights, 0 for a missing
        modality), ``image_contribution`` / ``text_contribution`` [N, C] (weight x score, in logits) and each
        modality's share of the absolute contributions (``image_attribution_per_category``); per item,
        ``image_attribution`` / ``text_attribution`` [N], those shares weighted by the categories' probabilities."""
        image_weight, text_weight, image_scores, text_scores = self._parts(image, text, image_present, text_present)
        image_contribution, text_contribution = image_weight * image_scores, text_weight * text_scores
        logits = self.bias + image_contribution + text_contribution
        return {
            "image_weight": image_weight,
            "text_weight": text_weight,
            "image_contribution": image_contribution,
            "text_contribution": text_contribution,
            **_item_attribution(image_contribution.abs(), text_contribution.abs(), logits),
        }


class GatedFusionHead(FusionHead):
    """Gated multimodal unit (Arevalo et al. 2017) then a linear classifier.

    ``z = sigmoid(W_v h_v + W_t h_t + b)``, ``h = z * tanh(W'_v h_v) + (1 - z) * tanh(W'_t h_t)``, per hidden unit. A
    missing image forces z = 0 and a missing text z = 1, so attribution gives the present modality 100%.
    """

    kind = "gated"

    def __init__(self, shape: HeadShape) -> None:
        super().__init__(shape)
        self.gate_image = nn.Linear(shape.image_dim, shape.hidden, bias=False)
        self.gate_text = nn.Linear(shape.text_dim, shape.hidden)
        self.image_transform = nn.Linear(shape.image_dim, shape.hidden)
        self.text_transform = nn.Linear(shape.text_dim, shape.hidden)
        self.dropout = nn.Dropout(shape.dropout)
        self.classifier = nn.Linear(shape.hidden, shape.num_categories)

    def _fuse(
        self, image: Tensor, text: Tensor, image_present: Tensor | None, text_present: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        image_present, text_present = _presence(image_present, image), _presence(text_present, text)
        image, text = _zero_missing(image, image_present), _zero_missing(text, text_present)
        gate = torch.sigmoid(self.gate_image(image) + self.gate_text(text))
        both = (image_present & text_present)[:, None]
        gate = torch.where(both, gate, image_present[:, None].to(gate.dtype).expand_as(gate))
        image_part = gate * torch.tanh(self.image_transform(image))
        # Zeroed text still passes tanh(bias); an item with neither modality must carry no evidence from either.
        text_part = (1 - gate) * torch.tanh(self.text_transform(text)) * text_present[:, None].to(gate.dtype)
        return image_part, text_part, gate

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits [N, C]."""
        image_part, text_part, _ = self._fuse(image, text, image_present, text_present)
        return self.classifier(self.dropout(image_part + text_part))

    def explain(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``gate`` [N, H] and ``gate_mean`` [N] (the image side's mean gate: 1 image only, 0 text only); modality
        attribution from the gated parts themselves: the logit of category c is ``W_c (z * image_part +
        (1 - z) * text_part) + b_c``, so ``|W_c (z * image_part)|`` and ``|W_c ((1 - z) * text_part)|`` are each
        modality's evidence for c. Their shares per category (``image_attribution_per_category`` [N, C]) and per item
        (``image_attribution`` / ``text_attribution`` [N], weighted by the categories' probabilities).

        The mean gate alone is not the attribution: units serve different categories, so an item's image can drive
        one category through units whose gates favour the image while the mean over all units stays near 1/2."""
        image_part, text_part, gate = self._fuse(image, text, image_present, text_present)
        weight = self.classifier.weight  # [C, H]
        image_evidence, text_evidence = image_part @ weight.T, text_part @ weight.T
        logits = image_evidence + text_evidence + self.classifier.bias
        return {
            "gate": gate,
            "gate_mean": gate.mean(dim=1),
            **_item_attribution(image_evidence.abs(), text_evidence.abs(), logits),
        }


class CrossAttentionFusionHead(FusionHead):
    """Text tokens attend to image patches, ``softmax(QK^T / sqrt(d)) V`` with a few heads, then a classifier.

    A learned query joins the text tokens so an image-only item still pools its patches. Without patches (or tokens)
    the global image (or text) vector stands in as a single patch (or token). The classifier sees the pooled attended
    image and a summary of the text.
    """

    kind = "cross_attention"

    def __init__(self, shape: HeadShape) -> None:
        super().__init__(shape)
        if shape.hidden % shape.attention_heads:
            raise ValueError(f"hidden size {shape.hidden} is not divisible by {shape.attention_heads} heads")
        self.query = nn.Linear(shape.text_dim, shape.hidden)
        self.key = nn.Linear(shape.image_dim, shape.hidden)
        self.value = nn.Linear(shape.image_dim, shape.hidden)
        self.learned_query = nn.Parameter(torch.randn(1, 1, shape.hidden) * 0.02)
        self.attended_projection = nn.Linear(shape.hidden, shape.hidden)
        self.text_summary = nn.Linear(shape.text_dim, shape.hidden)
        self.classifier = nn.Sequential(
            nn.Linear(2 * shape.hidden, shape.hidden),
            nn.ReLU(),
            nn.Dropout(shape.dropout),
            nn.Linear(shape.hidden, shape.num_categories),
        )

    def _attend(
        self,
        image: Tensor,
        text: Tensor,
        image_present: Tensor | None,
        text_present: Tensor | None,
        image_patches: Tensor | None,
        text_tokens: Tensor | None,
        text_token_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        image_present, text_present = _presence(image_present, image), _presence(text_present, text)
        patches = image[:, None, :] if image_patches is None else image_patches
        patches = _zero_missing(patches.reshape(patches.shape[0], -1, patches.shape[-1]), image_present)
        tokens = text[:, None, :] if text_tokens is None else text_tokens
        tokens = _zero_missing(tokens, text_present)
        token_valid = (
            torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            if text_tokens is None or text_token_mask is None
            else text_token_mask.to(device=tokens.device, dtype=torch.bool)
        ) & text_present[:, None]
        count, heads, hidden = patches.shape[0], self.shape.attention_heads, self.shape.hidden
        queries = torch.cat([self.learned_query.expand(count, -1, -1), self.query(tokens)], dim=1)
        query_valid = torch.cat([torch.ones_like(token_valid[:, :1]), token_valid], dim=1)

        def split(x: Tensor) -> Tensor:
            return x.view(count, x.shape[1], heads, hidden // heads).transpose(1, 2)

        q, k, v = split(queries), split(self.key(patches)), split(self.value(patches))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // heads)  # [N, heads, Lq, P]
        attention = torch.softmax(scores, dim=-1) * image_present[:, None, None, None].to(scores.dtype)
        attended = (attention @ v).transpose(1, 2).reshape(count, -1, hidden)
        weights = query_valid.to(attended.dtype)[:, :, None]
        pooled = self.attended_projection((attended * weights).sum(dim=1) / weights.sum(dim=1))
        token_weights = token_valid.to(tokens.dtype)[:, :, None]
        mean_tokens = (tokens * token_weights).sum(dim=1) / token_weights.sum(dim=1).clamp(min=1.0)
        summary = torch.tanh(self.text_summary(mean_tokens)) * text_present[:, None].to(tokens.dtype)
        attention_map = (attention * query_valid[:, None, :, None].to(attention.dtype)).sum(dim=(1, 2))
        attention_map = attention_map / (heads * query_valid.sum(dim=1, keepdim=True).to(attention.dtype))
        return torch.cat([pooled, summary], dim=1), attention_map, attention

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits [N, C]."""
        fused, _, _ = self._attend(
            image, text, image_present, text_present, image_patches, text_tokens, text_token_mask
        )
        return self.classifier(fused)

    def explain(
        self,
        image: Tensor,
        text: Tensor,
        *,
        image_present: Tensor | None = None,
        text_present: Tensor | None = None,
        image_patches: Tensor | None = None,
        text_tokens: Tensor | None = None,
        text_token_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``attention`` [N, P]: attention over image patches averaged over the valid queries and heads (sums to 1
        per item with an image, 0 without); reshape to the patch grid to draw it. ``attention_per_query``
        [N, heads, 1 + L, P] keeps the learned query (first) and each text token apart."""
        _, attention_map, attention = self._attend(
            image, text, image_present, text_present, image_patches, text_tokens, text_token_mask
        )
        return {"attention": attention_map, "attention_per_query": attention}


HEADS: dict[str, type[FusionHead]] = {
    head.kind: head for head in (EarlyFusionHead, LateFusionHead, GatedFusionHead, CrossAttentionFusionHead)
}


class HeadEnsemble(FusionHead):
    """Heads of one shape trained from different seeds, serving as one: the members' mean logits, and the mean of
    each explanation array (shares stay shares, gates stay gates). One head's path through a small training set
    depends on its seed; the mean of a few is steadier and usually ranks better (Lakshminarayanan et al. 2017)."""

    def __init__(self, members: Sequence[FusionHead]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two heads, got {len(members)}")
        shapes = {member.shape for member in members}
        if len(shapes) != 1:
            raise ValueError(f"an ensemble's heads must share one shape, got {sorted(map(str, shapes))}")
        super().__init__(members[0].shape)
        self.members = nn.ModuleList(members)

    @property
    def kind(self) -> str:  # type: ignore[override]  # the members' kind: an ensemble explains as they do
        return self.shape.kind

    def forward(self, image: Tensor, text: Tensor, **inputs: Tensor | None) -> Tensor:
        """The members' mean logits [N, C] (``inputs``: the keyword inputs every head takes)."""
        return torch.stack([member(image, text, **inputs) for member in self._heads()]).mean(dim=0)

    def explain(self, image: Tensor, text: Tensor, **inputs: Tensor | None) -> dict[str, Tensor]:
        """Each of the members' explanation arrays, averaged over the members."""
        parts = [member.explain(image, text, **inputs) for member in self._heads()]
        return {key: torch.stack([part[key] for part in parts]).mean(dim=0) for key in parts[0]}

    def _heads(self) -> list[FusionHead]:
        return [cast(FusionHead, member) for member in self.members]


def build_head(shape: HeadShape, *, members: int = 1) -> FusionHead:
    """A freshly initialised head of ``shape.kind``, or an ensemble of ``members`` of them (initialisation draws
    from torch's global generator)."""
    if shape.kind not in HEADS:
        raise ValueError(f"unknown fusion head kind {shape.kind!r}; known: {', '.join(sorted(HEADS))}")
    if members > 1:
        return HeadEnsemble([HEADS[shape.kind](shape) for _ in range(members)])
    return HEADS[shape.kind](shape)


@dataclass
class FusionPrediction:
    """Calibrated probabilities [N, C], decisions at the thresholds [N, C], and one JSON-ready explanation per item."""

    categories: list[str]
    probabilities: np.ndarray
    decisions: np.ndarray
    explanations: list[dict[str, Any]]
    model_version: str = ""

    def decided_categories(self, index: int) -> list[str]:
        """The categories decided positive for item ``index``."""
        return [name for name, decided in zip(self.categories, self.decisions[index], strict=True) if decided]


class FusionPredictor:
    """A head with its calibrator and thresholds: numpy features in, ``FusionPrediction`` out."""

    def __init__(
        self,
        head: FusionHead,
        *,
        calibrator: Calibrator,
        categories: Sequence[str],
        thresholds: dict[str, float],
        model_version: str = "",
        device: str = "cpu",
    ) -> None:
        missing = [name for name in categories if name not in thresholds]
        if missing:
            raise ValueError(f"no threshold for categories {', '.join(missing)}")
        if len(categories) != head.shape.num_categories:
            raise ValueError(f"{len(categories)} categories for a head with {head.shape.num_categories} outputs")
        self.head = head.to(device).eval()
        self.calibrator = calibrator
        self.categories = list(categories)
        self.thresholds = {name: float(thresholds[name]) for name in self.categories}
        self.model_version = model_version
        self.device = device

    def preprocess(
        self,
        image_features: np.ndarray | None = None,
        text_features: np.ndarray | None = None,
        *,
        image_present: np.ndarray | None = None,
        text_present: np.ndarray | None = None,
        image_patches: np.ndarray | None = None,
        text_tokens: np.ndarray | None = None,
        text_token_mask: np.ndarray | None = None,
    ) -> dict[str, Tensor | None]:
        """Numpy inputs -> the head's keyword tensors. A modality given neither as features nor as patches/tokens is
        absent for every item; patches or tokens alone stand in for the features by their (masked) mean."""
        given = [a for a in (image_features, text_features, image_patches, text_tokens) if a is not None]
        if not given:
            raise ValueError("nothing to predict from: give image and/or text features")
        count = len(given[0])

        def tensor(array: np.ndarray | None, dtype: torch.dtype = torch.float32) -> Tensor | None:
            return None if array is None else torch.as_tensor(np.asarray(array), dtype=dtype)

        patches, tokens = tensor(image_patches), tensor(text_tokens)
        token_mask = tensor(text_token_mask, torch.bool)
        image = tensor(image_features)
        if image is None and patches is not None:
            image = patches.reshape(count, -1, patches.shape[-1]).mean(dim=1)
        elif image is None:
            image = torch.zeros(count, self.head.shape.image_dim)
            image_present = np.zeros(count, dtype=bool)
        text = tensor(text_features)
        if text is None and tokens is not None:
            weights = torch.ones(tokens.shape[:2]) if token_mask is None else token_mask.float()
            text = (tokens * weights[:, :, None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        elif text is None:
            text = torch.zeros(count, self.head.shape.text_dim)
            text_present = np.zeros(count, dtype=bool)
        return {
            "image": image,
            "text": text,
            "image_present": tensor(image_present, torch.bool),
            "text_present": tensor(text_present, torch.bool),
            "image_patches": patches,
            "text_tokens": tokens,
            "text_token_mask": token_mask,
        }

    def forward(
        self, inputs: dict[str, Tensor | None], *, batch_size: int = 256, explain: bool = True
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits [N, C] and the head's explanation arrays, computed in batches on the device."""
        image = inputs["image"]
        assert image is not None
        logits, explained = [], []
        with torch.inference_mode():
            for start in range(0, image.shape[0], batch_size):
                batch = {
                    key: None if value is None else value[start : start + batch_size].to(self.device)
                    for key, value in inputs.items()
                }
                image_batch, text_batch = batch.pop("image"), batch.pop("text")
                assert image_batch is not None and text_batch is not None
                logits.append(self.head(image_batch, text_batch, **batch).cpu())
                if explain:
                    explained.append(
                        {k: v.cpu() for k, v in self.head.explain(image_batch, text_batch, **batch).items()}
                    )
        explanation_arrays = (
            {key: torch.cat([part[key] for part in explained]).numpy() for key in explained[0]} if explained else {}
        )
        return torch.cat(logits).numpy().astype(np.float64), explanation_arrays

    def postprocess(
        self, logits: np.ndarray, explanation_arrays: dict[str, np.ndarray], *, patch_grid: tuple[int, int] | None
    ) -> FusionPrediction:
        """Calibrate, decide at the thresholds and turn explanation arrays into one JSON-ready dict per item."""
        probabilities = self.calibrator.transform(logits)
        thresholds = np.array([self.thresholds[name] for name in self.categories])
        explanations = [self._explanation(explanation_arrays, index, patch_grid) for index in range(len(probabilities))]
        return FusionPrediction(
            categories=self.categories,
            probabilities=probabilities,
            decisions=probabilities >= thresholds,
            explanations=explanations,
            model_version=self.model_version,
        )

    def predict(
        self,
        image_features: np.ndarray | None = None,
        text_features: np.ndarray | None = None,
        *,
        image_present: np.ndarray | None = None,
        text_present: np.ndarray | None = None,
        image_patches: np.ndarray | None = None,
        text_tokens: np.ndarray | None = None,
        text_token_mask: np.ndarray | None = None,
        batch_size: int = 256,
        explain: bool = True,
    ) -> FusionPrediction:
        """Calibrated probabilities, decisions and explanations for N items.

        ``image_features`` [N, Dv] / ``text_features`` [N, Dt] (None: that modality is absent for all items);
        ``image_present`` / ``text_present`` [N] bool mark per-item absence. ``image_patches`` [N, rows, cols, Dv]
        gives attention maps on the patch grid ([N, P, Dv] works too: a square P is drawn as a square grid).
        """
        inputs = self.preprocess(
            image_features,
            text_features,
            image_present=image_present,
            text_present=text_present,
            image_patches=image_patches,
            text_tokens=text_tokens,
            text_token_mask=text_token_mask,
        )
        logits, explanation_arrays = self.forward(inputs, batch_size=batch_size, explain=explain)
        return self.postprocess(logits, explanation_arrays, patch_grid=_patch_grid(image_patches))

    def _explanation(
        self, arrays: dict[str, np.ndarray], index: int, patch_grid: tuple[int, int] | None
    ) -> dict[str, Any]:
        explanation: dict[str, Any] = {"method": self.head.kind}
        if "image_attribution" in arrays:
            explanation["modality_attribution"] = {
                "image": float(arrays["image_attribution"][index]),
                "text": float(arrays["text_attribution"][index]),
            }
        if "image_weight" in arrays:
            explanation["per_category"] = {
                name: {
                    "image_weight": float(arrays["image_weight"][index, c]),
                    "text_weight": float(arrays["text_weight"][index, c]),
                    "image_contribution": float(arrays["image_contribution"][index, c]),
                    "text_contribution": float(arrays["text_contribution"][index, c]),
                }
                for c, name in enumerate(self.categories)
            }
        if "image_attribution_per_category" in arrays:
            per_category = explanation.setdefault("per_category", {name: {} for name in self.categories})
            for c, name in enumerate(self.categories):
                per_category[name]["image"] = float(arrays["image_attribution_per_category"][index, c])
                per_category[name]["text"] = float(arrays["text_attribution_per_category"][index, c])
        if "gate_mean" in arrays:
            gate_mean = float(arrays["gate_mean"][index])
            anything = bool(arrays["image_attribution"][index] + arrays["text_attribution"][index] > 0)
            explanation["gate_mean"] = {"image": gate_mean, "text": 1.0 - gate_mean if anything else 0.0}
        if "attention" in arrays:
            attention = arrays["attention"][index]
            grid = patch_grid or _square_grid(len(attention))
            explanation["attention"] = attention.reshape(grid).tolist() if grid else attention.tolist()
            explanation["attention_grid"] = list(grid) if grid else [len(attention)]
        return explanation


def _patch_grid(image_patches: np.ndarray | None) -> tuple[int, int] | None:
    if image_patches is not None and np.ndim(image_patches) == 4:
        return int(image_patches.shape[1]), int(image_patches.shape[2])
    return None


def _square_grid(patches: int) -> tuple[int, int] | None:
    side = math.isqrt(patches)
    return (side, side) if side * side == patches and patches > 1 else None


def write_head(
    out_dir: Path,
    head: FusionHead,
    *,
    calibrator: Calibrator,
    categories: Sequence[str],
    thresholds: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``weights.safetensors`` and ``config.json`` for ``head`` into ``out_dir`` (byte-stable for one head, so
    the directory's checksum is too)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in head.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": SAVE_FORMAT})
    config = {
        "format": SAVE_FORMAT,
        "shape": head.shape.to_dict(),
        **({"members": len(head.members)} if isinstance(head, HeadEnsemble) else {}),
        "categories": list(categories),
        "calibrator": calibrator.to_dict(),
        "thresholds": {name: float(thresholds[name]) for name in categories},
        **(extra or {}),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_head(path: Path, *, spec: ModelSpec, device: str = "cpu") -> FusionPredictor:
    """Rebuild a saved head as a ``FusionPredictor`` (``ml.load`` calls this for family ``fusion-head``).

    The spec's thresholds, where it has them, override the saved ones (an ML admin may retune them without
    retraining); its labels must match the saved categories.
    """
    predictor = read_head(path, model_version=f"{spec.name}@{spec.version}", device=device)
    if spec.labels and list(spec.labels) != predictor.categories:
        raise ValueError(f"spec {spec.name!r} labels {spec.labels} differ from the saved head's {predictor.categories}")
    predictor.thresholds.update({name: float(value) for name, value in spec.thresholds.items()})
    return predictor


def read_head(path: Path, *, model_version: str = "", device: str = "cpu") -> FusionPredictor:
    """The head that ``write_head`` saved in ``path``, with its saved thresholds. Weights are read with
    safetensors, never pickle."""
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / CONFIG_FILE).read_text())
    if config.get("format") != SAVE_FORMAT:
        raise ValueError(f"{path} holds fusion head format {config.get('format')!r}, this code reads {SAVE_FORMAT!r}")
    head = build_head(HeadShape(**config["shape"]), members=int(config.get("members", 1)))
    head.load_state_dict(load_file(str(path / WEIGHTS_FILE), device="cpu"), strict=True)
    logger.info("loaded fusion head %s (%s) from %s", model_version, head.kind, path)
    return FusionPredictor(
        head,
        calibrator=calibrator_from_dict(config["calibrator"]),
        categories=list(config["categories"]),
        thresholds=dict(config["thresholds"]),
        model_version=model_version,
        device=device,
    )
