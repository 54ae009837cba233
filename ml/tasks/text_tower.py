"""MiniLM fine-tuned on the moderation labels: the moderation model's third text reader, beside the frozen MiniLM
embedding (what a post is about) and the n-grams (which words it uses).

The packaged MiniLM's lower layers stay frozen and shared; its top ``tuned_layers`` layers are copied and trained,
with a linear head giving one logit per category, on the same soft targets, presumed negatives and weights as the
n-grams. The lower layers' token states are computed once per text and cached, so an epoch costs only the tuned
layers' forward and backward passes (docs/moderation.md measured the recipe: Davidson hate ROC-AUC 0.83 -> 0.90
for MiniLM alone).

The fusion head must learn from tower logits as it will meet them on new posts, not from logits on texts the tower
was trained on (those are overconfident). So the tower is cross-fitted: one copy of the top layers per fold, each
trained on the other folds' training posts and keeping the epoch with the lowest validation loss, and a training post
gets the logits of the copy that never saw it. Every other post (validation, test, new posts) gets the logits of one
more copy refit on all the training posts (``TowerConfig.refit``; without it, the mean of the fold copies').
Everything is saved as safetensors next to a JSON config that names the base model version.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.tasks.obfuscation import deobfuscate

logger = logging.getLogger(__name__)

TOWER_DIR = "tower"
CONFIG_FILE = "tower.json"
ENCODE_BATCH = 64
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TowerConfig:
    base: str = "minilm-l6-v2"  # a sentence-transformers BERT spec
    tuned_layers: int = 3  # of MiniLM's six; three ranked better than two on every figure (docs/moderation.md)
    max_tokens: int = 128  # texts are cut here (tweets and SMS are far shorter)
    epochs: int = 3  # at most; each copy keeps its epoch with the lowest validation loss
    batch_size: int = 64
    lr_layers: float = 4e-5
    lr_head: float = 1e-3
    dropout: float = 0.1
    seed: int = 0
    # After the fold copies, one copy trained on every training text scores all other texts (the fold copies only
    # give the training texts their out-of-fold logits); False keeps the fold copies and averages them.
    refit: bool = True
    # Texts read through ``ml.tasks.obfuscation.deobfuscate`` ("h8" as "hate"); towers saved before it read texts as
    # written, and load so.
    deobfuscated: bool = True


class TowerMismatch(ValueError):
    """The installed base model is not the version the tower was tuned on."""


def _top_module(layers: Sequence[Any], hidden: int, categories: int, dropout: float) -> Any:
    import torch
    from torch import nn

    class Top(nn.Module):
        """The tuned layers, mean pooling over the text's tokens, and the linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(copy.deepcopy(layer) for layer in layers)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden, categories)

        def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden_states = _through(self.layers, states, mask)
            pooled = (hidden_states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            return self.head(self.dropout(pooled))

    return Top()


def _through(layers: Any, states: Any, mask: Any) -> Any:
    """BERT layers over [B, T, H] states with a [B, T] bool mask (the additive mask both eager and SDPA read)."""
    import torch

    additive = (~mask)[:, None, None, :].to(states.dtype) * torch.finfo(states.dtype).min
    for layer in layers:
        output = layer(states, attention_mask=additive)
        states = output[0] if isinstance(output, tuple) else output
    return states


class _Base:
    """The frozen part: the base model's tokenizer, embeddings and lower layers."""

    def __init__(self, encoder: Any, *, tuned_layers: int, max_tokens: int, deobfuscated: bool) -> None:
        from ml.explain.maps import model_version_of

        self.version = model_version_of(encoder)
        transformer = encoder.model[0]
        self.tokenizer = transformer.tokenizer
        self.bert = transformer.auto_model
        layers = list(self.bert.encoder.layer)
        if not 0 < tuned_layers < len(layers):
            raise ValueError(f"tuned_layers must be between 1 and {len(layers) - 1}, not {tuned_layers}")
        self.lower, self.upper = layers[:-tuned_layers], layers[-tuned_layers:]
        self.hidden = int(self.bert.config.hidden_size)
        self.max_tokens = max_tokens
        self.deobfuscated = deobfuscated

    @property
    def device(self) -> Any:
        return next(self.bert.parameters()).device

    def states(self, texts: Sequence[str]) -> tuple[Any, Any]:
        """The lower layers' token states [B, T, H] and the mask [B, T] of one batch of texts."""
        import torch

        if self.deobfuscated:
            texts = [deobfuscate(text) for text in texts]
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        mask = tokens["attention_mask"].bool()
        with torch.no_grad():  # not inference mode: cached states feed layers that are trained
            states = self.bert.embeddings(input_ids=tokens["input_ids"], token_type_ids=tokens.get("token_type_ids"))
            return _through(self.lower, states, mask), mask


def _base(config: TowerConfig, device: str) -> _Base:
    import ml

    return _Base(
        ml.load(config.base, device=device),
        tuned_layers=config.tuned_layers,
        max_tokens=config.max_tokens,
        deobfuscated=config.deobfuscated,
    )


class TextTower:
    """Copies of the base model's top layers with their heads (the refit one, or the cross-fitted ones);
    ``logits`` averages them."""

    def __init__(self, base: _Base, tops: Sequence[Any], categories: Sequence[str], config: TowerConfig) -> None:
        self.base, self.tops, self.categories, self.config = base, list(tops), list(categories), config
        for top in self.tops:
            top.eval()

    def logits(self, texts: Sequence[str], *, fold: int | None = None) -> np.ndarray:
        """[N, C] float32: the mean of every copy's logits, or copy ``fold``'s alone."""
        import torch

        tops = self.tops if fold is None else [self.tops[fold]]
        out = np.zeros((len(texts), len(self.categories)), dtype=np.float32)
        for rows in _batches([len(text) for text in texts], ENCODE_BATCH):
            states, mask = self.base.states([texts[i] for i in rows])
            with torch.inference_mode():
                logits = torch.stack([top(states, mask) for top in tops]).mean(0)
            out[rows] = logits.float().cpu().numpy()
        return out

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        for index, top in enumerate(self.tops):
            tensors = {key: value.contiguous() for key, value in top.state_dict().items()}
            save_file(tensors, str(directory / f"fold-{index}.safetensors"))
        config = {"config": asdict(self.config), "base_version": self.base.version, "categories": self.categories}
        (directory / CONFIG_FILE).write_text(json.dumps({**config, "folds": len(self.tops)}, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path, *, device: str = "cpu") -> TextTower:
        from safetensors.torch import load_file

        saved = json.loads((directory / CONFIG_FILE).read_text())
        config = TowerConfig(**{"deobfuscated": False, **saved["config"]})
        base = _base(config, device)
        if base.version != saved["base_version"]:
            raise TowerMismatch(
                f"the text tower was tuned on {saved['base_version']}, and {base.version} is installed: retrain the "
                "moderation model (manage.py moderation_train)"
            )
        tops = []
        for index in range(int(saved["folds"])):
            top = _top_module(base.upper, base.hidden, len(saved["categories"]), config.dropout).to(base.device)
            top.load_state_dict(load_file(str(directory / f"fold-{index}.safetensors"), device=str(base.device)))
            tops.append(top)
        return cls(base, tops, saved["categories"], config)


def train_text_tower(
    texts: Sequence[str],
    targets: np.ndarray,
    weight: np.ndarray,
    folds: np.ndarray,
    *,
    categories: Sequence[str],
    validation_texts: Sequence[str],
    validation_labels: np.ndarray,
    validation_known: np.ndarray,
    config: TowerConfig | None = None,
    device: str = "cpu",
    on_progress: Progress | None = None,
) -> tuple[TextTower, np.ndarray, dict[str, Any]]:
    """Train one copy of the top layers per fold value in ``folds`` ([N] ints) on the other folds' ``texts``
    (``targets`` [N, C] in [0, 1], ``weight`` [N, C], 0 where a label is unknown), each keeping the epoch with
    the lowest loss on the validation texts, then (``config.refit``) one on all of them. Returns the tower (the
    refit copy, or the fold copies), the out-of-fold logits [N, C] of the training texts, and what happened per
    copy."""
    import torch

    config = config or TowerConfig()
    report = on_progress or (lambda stage, done, total: None)
    torch.manual_seed(config.seed)
    base = _base(config, device)
    cached = _cache_states(base, texts, report, "text tower: frozen layers")
    validation = _cache_states(base, validation_texts, report, "text tower: frozen layers (validation)")
    validation_weight = validation_known.astype(np.float32)
    out_of_fold = np.zeros((len(texts), len(categories)), dtype=np.float32)

    def fit(rows: np.ndarray, stage: str) -> tuple[Any, dict[str, Any]]:
        """One copy trained on the training texts ``rows``, keeping its best validation epoch."""
        states = [cached[i] for i in rows]
        return _train_top(
            base,
            states,
            targets[rows],
            weight[rows],
            validation,
            validation_labels,
            validation_weight,
            categories=categories,
            config=config,
            report=_fold_progress(report, stage),
        )

    tops, history = [], []
    parts = sorted(int(part) for part in np.unique(folds))
    for part in parts:
        top, fold_history = fit(np.flatnonzero(folds != part), f"text tower: fold {part + 1}/{len(parts)}")
        outside = np.flatnonzero(folds == part)
        out_of_fold[outside] = _top_logits(top, [cached[i] for i in outside])
        tops.append(top)
        history.append(fold_history)
    report_out: dict[str, Any] = {"folds": history, "config": asdict(config)}
    if config.refit:
        top, report_out["refit"] = fit(np.arange(len(texts)), "text tower: all training texts")
        tops = [top]
    return TextTower(base, tops, categories, config), out_of_fold, report_out


def _fold_progress(report: Progress, stage: str) -> Callable[[int, int], None]:
    return lambda done, total: report(stage, done, total)


def _cache_states(base: _Base, texts: Sequence[str], report: Progress, stage: str) -> list[Any]:
    """Each text's lower-layer token states, [tokens, H] float16 on the CPU (no padding kept)."""
    import torch

    cached: list[Any] = [None] * len(texts)
    batches = _batches([len(text) for text in texts], ENCODE_BATCH)
    for done, positions in enumerate(batches):
        states, mask = base.states([texts[i] for i in positions])
        for row, position in enumerate(positions):
            cached[int(position)] = states[row, mask[row]].to("cpu", torch.float16).clone()
        report(stage, done + 1, len(batches))
    return cached


def _padded(states: Sequence[Any], device: Any) -> tuple[Any, Any]:
    import torch
    from torch.nn.utils.rnn import pad_sequence

    lengths = torch.tensor([len(state) for state in states])
    padded = pad_sequence(list(states), batch_first=True).to(device, torch.float32)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask.to(device)


def _batches(lengths: Sequence[int], size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Row batches of similar length (less padding); shuffled batch order when ``rng`` is given."""
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(batches)  # type: ignore[arg-type]  # a list of arrays shuffles in place
    return batches


def _top_logits(top: Any, states: Sequence[Any]) -> np.ndarray:
    import torch

    top.eval()
    device = next(top.parameters()).device
    out = np.zeros((len(states), top.head.out_features), dtype=np.float32)
    with torch.inference_mode():
        for rows in _batches([len(state) for state in states], ENCODE_BATCH):
            padded, mask = _padded([states[i] for i in rows], device)
            out[rows] = top(padded, mask).float().cpu().numpy()
    return out


def _weighted_bce(logits: np.ndarray, targets: np.ndarray, weight: np.ndarray) -> float:
    probabilities = 1 / (1 + np.exp(-np.clip(logits, -30, 30)))
    eps = 1e-7
    losses = -(targets * np.log(probabilities + eps) + (1 - targets) * np.log(1 - probabilities + eps))
    return float((losses * weight).sum() / max(weight.sum(), 1e-9))


def _train_top(
    base: _Base,
    states: Sequence[Any],
    targets: np.ndarray,
    weight: np.ndarray,
    validation: Sequence[Any],
    validation_labels: np.ndarray,
    validation_weight: np.ndarray,
    *,
    categories: Sequence[str],
    config: TowerConfig,
    report: Callable[[int, int], None],
) -> tuple[Any, dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    device = base.device
    top = _top_module(base.upper, base.hidden, len(categories), config.dropout).to(device)
    optimiser = torch.optim.AdamW(
        [
            {"params": top.layers.parameters(), "lr": config.lr_layers},
            {"params": top.head.parameters(), "lr": config.lr_head},
        ],
        weight_decay=0.01,
    )
    rng = np.random.default_rng(config.seed)
    target_tensor, weight_tensor = torch.from_numpy(targets).float(), torch.from_numpy(weight).float()
    best_loss, best_state, best_epoch, losses = math.inf, copy.deepcopy(top.state_dict()), 0, []
    lengths = [len(state) for state in states]
    steps_per_epoch = len(_batches(lengths, config.batch_size))
    for epoch in range(1, config.epochs + 1):
        top.train()
        for step, rows in enumerate(_batches(lengths, config.batch_size, rng)):
            padded, mask = _padded([states[i] for i in rows], device)
            logits = top(padded, mask)
            batch_weight = weight_tensor[rows].to(device)
            loss = F.binary_cross_entropy_with_logits(logits, target_tensor[rows].to(device), reduction="none")
            loss = (loss * batch_weight).sum() / batch_weight.sum().clamp(min=1e-9)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            report((epoch - 1) * steps_per_epoch + step + 1, config.epochs * steps_per_epoch)
        validation_loss = _weighted_bce(_top_logits(top, validation), validation_labels, validation_weight)
        losses.append(round(validation_loss, 5))
        logger.info("text tower epoch %d: validation loss %.4f", epoch, validation_loss)
        if validation_loss < best_loss:
            best_loss, best_state, best_epoch = validation_loss, copy.deepcopy(top.state_dict()), epoch
    top.load_state_dict(best_state)
    top.eval()
    return top, {"validation_loss": losses, "kept_epoch": best_epoch, "training_texts": len(states)}
