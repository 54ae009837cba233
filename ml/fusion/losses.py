"""Training losses: symmetric InfoNCE (CLIP, LiT) and multi-label BCE over the labels that are known."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INITIAL_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0


class SymmetricInfoNCE(nn.Module):
    """CLIP's contrastive loss with a learnable temperature.

    ``logit_scale`` (log of 1/temperature) starts at log(1/0.07) and is clamped at log(100) in the forward pass, so a
    scale pushed past the cap stops growing (no gradient beyond it) instead of destabilising training.
    """

    def __init__(
        self,
        *,
        initial_temperature: float = INITIAL_TEMPERATURE,
        max_logit_scale: float = MAX_LOGIT_SCALE,
        learnable: bool = True,
        duplicates: Literal["mask", "soft"] = "mask",
    ) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / initial_temperature)), requires_grad=learnable)
        self.max_log_scale = math.log(max_logit_scale)
        self.duplicates = duplicates

    @property
    def scale(self) -> Tensor:
        """exp(logit_scale), clamped: the factor cosine similarities are multiplied by."""
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    @property
    def temperature(self) -> float:
        """The current temperature, 1 / scale."""
        return float(1.0 / self.scale.detach())

    def similarity_logits(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        """Scaled cosine similarities [N_image, N_text]."""
        image = F.normalize(image_embeddings, dim=-1)
        text = F.normalize(text_embeddings, dim=-1)
        return self.scale * image @ text.T

    def forward(self, image_embeddings: Tensor, text_embeddings: Tensor, same_target: Tensor | None = None) -> Tensor:
        """``(CE(logits, arange) + CE(logits.T, arange)) / 2`` over a batch of matching pairs [N, D].

        ``same_target`` [N, N] (bool) marks pairs that share a target (duplicate texts or products in one batch).
        With ``duplicates="mask"`` those are removed from the negatives; with ``"soft"`` the target spreads evenly
        over them.
        """
        return info_nce_loss(
            self.similarity_logits(image_embeddings, text_embeddings), same_target=same_target, mode=self.duplicates
        )


def info_nce_loss(
    logits: Tensor, *, same_target: Tensor | None = None, mode: Literal["mask", "soft"] = "mask"
) -> Tensor:
    """Symmetric cross-entropy over a square similarity matrix whose diagonal holds the matching pairs."""
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"InfoNCE needs square similarity logits, got shape {tuple(logits.shape)}")
    size = logits.shape[0]
    targets = torch.arange(size, device=logits.device)
    if same_target is None:
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    if same_target.shape != logits.shape:
        raise ValueError(f"same_target must be [{size}, {size}], got {tuple(same_target.shape)}")
    eye = torch.eye(size, dtype=torch.bool, device=logits.device)
    same = same_target.to(torch.bool) | eye
    if mode == "mask":
        # A duplicate is neither the positive (that stays the diagonal) nor a negative.
        masked = logits.masked_fill(same & ~eye, torch.finfo(logits.dtype).min)
        return (F.cross_entropy(masked, targets) + F.cross_entropy(masked.T, targets)) / 2
    if mode == "soft":
        soft = same.to(logits.dtype)
        rows = soft / soft.sum(dim=1, keepdim=True)
        columns = soft.T / soft.T.sum(dim=1, keepdim=True)
        return (F.cross_entropy(logits, rows) + F.cross_entropy(logits.T, columns)) / 2
    raise ValueError(f'duplicates mode must be "mask" or "soft", got {mode!r}')


def masked_bce_with_logits(
    logits: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    *,
    pos_weight: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """Weighted mean binary cross-entropy over the known entries of ``labels`` [N, C]; ``mask`` [N, C] says which
    are known.

    Unknown entries contribute nothing, whatever value (NaN included) they hold. ``pos_weight`` [C] weighs positives
    per category, ``weight`` [N, C] each entry (a label the data only presumes may count less than a stated one). A
    batch with no known entry gives a zero loss that still carries a gradient.
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    known = torch.ones_like(logits, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    targets = torch.where(known, labels.to(logits.dtype), torch.zeros_like(logits))
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    weights = known.to(logits.dtype)
    if weight is not None:
        weights = weights * weight.to(logits.dtype)
    return (per_entry * weights).sum() / weights.sum().clamp(min=1.0)
