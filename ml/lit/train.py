"""Train a LiT image tower: InfoNCE against the locked text tower's title embeddings, plus zero-shot-style
attribute objectives against the same tower's prompt embeddings.

The tower is, by default, an MLP head over the frozen OpenNSFW backbone's description of each photo
(``ml.lit.backbone``: the descriptions are computed once, then every epoch takes seconds); ``backbone=""`` trains a
ResNet from scratch on augmented pixels instead (slower, and measured worse).

Objectives, per batch of images z (L2-normalised, [B, D]):
- titles: symmetric InfoNCE between z and the titles' embeddings, learnable temperature; products that share a
  title are not each other's negatives;
- attributes: for each attribute (articleType, baseColour, gender, usage), cross-entropy of z against the prompt
  embeddings of every value in the training vocabulary (the same prompts zero-shot evaluation uses);
- look-alikes: supervised contrastive loss between the images of a batch, positives being products of the same
  articleType and baseColour (what image->image search should return), temperature 0.1.
Hard negatives (optional, ``hard_negative_block``): batches built from blocks of products of one articleType, so a
shirt must be told apart from other shirts rather than from shoes; measured to hurt here, so off by default.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ml.eval import recall_at_k
from ml.images import ImageRejected, open_image
from ml.lit.backbone import INPUT_SIZE, OpenNsfwBackbone, load_backbone
from ml.lit.catalog import Product, attribute_vocabulary
from ml.lit.evaluate import zero_shot_classifier
from ml.lit.model import CONFIG_FILE, WEIGHTS_FILE, FeatureHead, ImageTower, to_tensor
from ml.lit.preprocess import prepare

logger = logging.getLogger(__name__)
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TowerConfig:
    # A frozen backbone (a spec name, see ml.lit.backbone) under a trained MLP head; "" trains the ``arch`` CNN.
    backbone: str = "open-nsfw"
    zoom: bool = True  # the backbone also describes a 1.5x centre zoom (ml.lit.backbone)
    arch: str = "resnet18"
    image_size: int = 64  # the CNN's input; a backbone has its own
    hidden: int = 1024
    dropout: float = 0.2  # the head's
    members: int = 3  # MLPs in the head's ensemble
    # Defaults measured for the backbone head; the CNN was run with 30 epochs, batch 128, lr 2e-3, 100 warm-up steps.
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    attribute_weight: float = 0.5
    # Supervised contrastive loss between images of one articleType and baseColour: held-out image->image P@10
    # 0.34 -> 0.40 with the backbone head, at the cost of 0.02 in text->image R@1.
    lookalike_weight: float = 0.5
    # Products of one articleType per block in a batch (hard negatives); 0 = plain shuffling. Off by default: on the
    # fashion catalog, blocks of 16 lowered held-out R@10 from 0.55 to 0.49 at an equal number of epochs.
    hard_negative_block: int = 0
    time_budget_s: float | None = None  # fewer epochs when the measured speed says they would not fit
    validation_fraction: float = 0.05
    seed: int = 0
    # Crop each photo to the product before resizing: more pixels on the product, but it loses the product's size
    # (a wallet fills the frame like a bag). Off by default: held-out R@10 0.58 without vs 0.55 with, at 64 px.
    crop_to_content: bool = False
    text_tower: str = "minilm-l6-v2"


@dataclass
class TrainingState:
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


Progress = Callable[[str, int, int, dict[str, float]], None]


def load_pixels(products: list[Product], size: int, *, crop: bool) -> tuple[np.ndarray, list[Product]]:
    """uint8 [N, size, size, 3] for every product whose image decodes (training augments from this cache), and
    those products; an image that does not decode is logged and left out."""
    pixels = np.zeros((len(products), size, size, 3), dtype=np.uint8)
    kept: list[Product] = []
    for product in products:
        try:
            pixels[len(kept)] = prepare(open_image(product.image), size, crop=crop)
        except ImageRejected as error:
            logger.warning("product %s left out: %s", product.id, error)
            continue
        kept.append(product)
    return pixels[: len(kept)], kept


def augment(batch: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Random resized crops (75-100% of the area), horizontal flips and mild brightness/contrast changes.

    No hue or saturation changes: colour is a label here.
    """
    images = to_tensor(batch)
    count, _, size, _ = images.shape
    out = torch.empty_like(images)
    scales = torch.empty(count).uniform_(0.75, 1.0, generator=generator).sqrt()
    for index in range(count):
        side = max(8, int(size * scales[index]))
        top = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        crop = images[index : index + 1, :, top : top + side, left : left + side]
        out[index : index + 1] = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
    flips = torch.rand(count, generator=generator) < 0.5
    out[flips] = out[flips].flip(-1)
    brightness = torch.empty(count, 1, 1, 1).uniform_(-0.15, 0.15, generator=generator)
    contrast = torch.empty(count, 1, 1, 1).uniform_(0.85, 1.15, generator=generator)
    means = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - means) * contrast + means + brightness).contiguous(memory_format=torch.channels_last)


def batches(products: list[Product], batch_size: int, block: int, generator: np.random.Generator) -> list[np.ndarray]:
    """One epoch of index batches; with ``block`` > 0 each batch is made of same-articleType blocks."""
    order = generator.permutation(len(products))
    if block > 0:
        groups: dict[str, list[int]] = {}
        for index in order:
            groups.setdefault(products[index].attributes.get("articleType", ""), []).append(int(index))
        blocks = [members[i : i + block] for members in groups.values() for i in range(0, len(members), block)]
        generator.shuffle(blocks)  # type: ignore[arg-type]
        order = np.array([index for chunk in blocks for index in chunk])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size) if len(order[i : i + batch_size]) > 1]


LOOKALIKE_TEMPERATURE = 0.1


class LitObjective(nn.Module):
    def __init__(
        self,
        titles: torch.Tensor,
        same_title: torch.Tensor,
        prompts: dict[str, torch.Tensor],
        same_kind: torch.Tensor,
    ) -> None:
        super().__init__()
        self.titles = titles
        self.same_title = same_title
        self.prompts = prompts
        self.same_kind = same_kind
        self.title_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.attribute_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(
        self, embeddings: torch.Tensor, indices: torch.Tensor, labels: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(title loss, attribute loss, look-alike loss) of one batch."""
        scale = self.title_scale.clamp(max=math.log(100)).exp()
        logits = scale * embeddings @ self.titles[indices].T
        duplicates = self.same_title[indices][:, indices] & ~torch.eye(len(indices), dtype=torch.bool)
        logits = logits.masked_fill(duplicates, float("-inf"))
        targets = torch.arange(len(indices))
        title_loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        attribute_losses = []
        attribute_scale = self.attribute_scale.clamp(max=math.log(100)).exp()
        for name, prompts in self.prompts.items():
            target = labels[name][indices]
            if (target >= 0).any():
                attribute_logits = attribute_scale * embeddings @ prompts.T
                attribute_losses.append(F.cross_entropy(attribute_logits, target, ignore_index=-1))
        attribute_loss = torch.stack(attribute_losses).mean() if attribute_losses else torch.zeros(())
        return title_loss, attribute_loss, self.lookalike_loss(embeddings, indices)

    def lookalike_loss(self, embeddings: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Supervised contrastive loss: each image's mean log-probability of its same-kind batch mates."""
        self_pairs = torch.eye(len(indices), dtype=torch.bool)
        positives = self.same_kind[indices][:, indices] & ~self_pairs
        anchors = positives.any(dim=1)
        if not anchors.any():
            return torch.zeros(())
        logits = (embeddings @ embeddings.T / LOOKALIKE_TEMPERATURE).masked_fill(self_pairs, float("-inf"))
        log_probabilities = logits.log_softmax(dim=1).masked_fill(~positives, 0.0)
        return -(log_probabilities.sum(dim=1)[anchors] / positives.sum(dim=1)[anchors]).mean()


def split_validation(products: list[Product], fraction: float, seed: int) -> tuple[list[Product], list[Product]]:
    if fraction <= 0:
        return products, []
    order = np.random.default_rng(seed).permutation(len(products))
    cut = max(1, int(len(products) * fraction))
    return [products[i] for i in order[cut:]], [products[i] for i in order[:cut]]


def train_tower(
    products: list[Product],
    out_dir: Path,
    *,
    config: TowerConfig,
    text_tower: Any,
    resume: bool = False,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Train on ``products``; writes ``out_dir/model/{config.json,weights.safetensors}`` and a checkpoint per
    epoch (``out_dir/checkpoint.pt``, which ``resume`` continues from). Returns the training summary."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    torch.manual_seed(config.seed)
    train, validation = split_validation(products, config.validation_fraction, config.seed)
    report = _progress_reporter(on_progress)

    tower: FeatureHead | ImageTower
    tower_config: dict[str, Any]
    if config.backbone:
        backbone = load_backbone(config.backbone, zoom=config.zoom)
        report("describing images", 0, len(products), {})
        features, train = describe_products(backbone, train, on_progress=report)
        validation_features, validation = describe_products(backbone, validation)
        head = FeatureHead(
            features=features.shape[1],
            dim=text_tower.dim,
            hidden=config.hidden,
            dropout=config.dropout,
            members=config.members,
        )
        head.fit_standardisation(features)
        tower = head
        tower_config = {
            "backbone": config.backbone,
            "zoom": config.zoom,
            "features": int(features.shape[1]),
            "members": config.members,
            "image_size": INPUT_SIZE,
        }

        def embed_batch(indices: np.ndarray) -> torch.Tensor:
            return head.member_embeddings(features[indices])

        def embed_validation() -> np.ndarray:
            return tower(validation_features).numpy()

    else:
        report("decoding images", 0, len(products), {})
        train_pixels, train = load_pixels(train, config.image_size, crop=config.crop_to_content)
        validation_pixels, validation = load_pixels(validation, config.image_size, crop=config.crop_to_content)
        tower = ImageTower(dim=text_tower.dim, arch=config.arch, hidden=config.hidden).to(
            memory_format=torch.channels_last
        )
        tower_config = {"backbone": "", "arch": config.arch, "image_size": config.image_size}

        def embed_batch(indices: np.ndarray) -> torch.Tensor:
            return tower(augment(train_pixels[indices], generator))[None]

        def embed_validation() -> np.ndarray:
            chunks = [tower(to_tensor(validation_pixels[i : i + 256])) for i in range(0, len(validation), 256)]
            return torch.cat(chunks).numpy()

    report("embedding titles", 0, len(train), {})
    titles = text_tower.encode_texts([p.title for p in train])
    validation_titles = text_tower.encode_texts([p.title for p in validation]) if validation else None
    vocabulary = attribute_vocabulary(train)
    prompts = {name: zero_shot_classifier(text_tower, name, values) for name, values in vocabulary.items()}
    labels = {
        name: torch.tensor([values.index(p.attributes[name]) if name in p.attributes else -1 for p in train])
        for name, values in vocabulary.items()
    }
    objective = LitObjective(
        torch.from_numpy(titles),
        _same(train, lambda p: p.title),
        {name: torch.from_numpy(p).float() for name, p in prompts.items()},
        _same(train, _kind),
    )
    parameters = [
        {"params": [p for p in tower.parameters() if p.ndim > 1], "weight_decay": config.weight_decay},
        {"params": [p for p in tower.parameters() if p.ndim <= 1], "weight_decay": 0.0},
        {"params": list(objective.parameters()), "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr)
    state = TrainingState()
    checkpoint = out_dir / CHECKPOINT_FILE
    if resume and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        tower.load_state_dict(saved["tower"])
        objective.load_state_dict(saved["objective"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainingState(**saved["state"])
        torch.set_rng_state(saved["torch_rng"])
        logger.info("resuming at epoch %d (step %d of %d)", state.epoch, state.step, state.total_steps)

    steps_per_epoch = len(batches(train, config.batch_size, config.hard_negative_block, np.random.default_rng(0)))
    if not state.total_steps:
        state.total_steps = config.epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(config.seed + state.epoch)
    epochs = state.total_steps // steps_per_epoch
    budget_checked = bool(state.step)
    while state.epoch < epochs:
        tower.train()
        epoch_started = time.monotonic()
        order_rng = np.random.default_rng(config.seed * 1000 + state.epoch)
        epoch_batches = batches(train, config.batch_size, config.hard_negative_block, order_rng)
        sums = {"loss": 0.0, "title": 0.0, "attributes": 0.0, "lookalikes": 0.0}
        for number, indices in enumerate(epoch_batches, start=1):
            lr = _learning_rate(config, state)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index_tensor = torch.from_numpy(indices)
            # Each ensemble member (the CNN is one) gets the whole objective; the losses are averaged over them.
            member_losses = [torch.stack(objective(member, index_tensor, labels)) for member in embed_batch(indices)]
            title_loss, attribute_loss, lookalike_loss = torch.stack(member_losses).mean(dim=0)
            loss = title_loss + config.attribute_weight * attribute_loss + config.lookalike_weight * lookalike_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.step += 1
            sums["loss"] += float(loss.detach())
            sums["title"] += float(title_loss.detach())
            sums["attributes"] += float(attribute_loss.detach())
            sums["lookalikes"] += float(lookalike_loss.detach())
            if not budget_checked and number == min(20, len(epoch_batches)) and config.time_budget_s:
                budget_checked = True
                per_step = (time.monotonic() - epoch_started) / number
                left = config.time_budget_s - (time.monotonic() - started) - 60  # evaluation and saving
                fit = max(1, int((left / per_step + state.step) // steps_per_epoch))
                if fit < epochs:
                    logger.info("time budget: %d epochs fit instead of %d (%.2f s/step)", fit, epochs, per_step)
                    epochs = fit
                    state.total_steps = epochs * steps_per_epoch
            report(f"epoch {state.epoch + 1}/{epochs}", number, len(epoch_batches), {"loss": sums["loss"] / number})
        state.epoch += 1
        record: dict[str, Any] = {
            "epoch": state.epoch,
            "seconds": round(time.monotonic() - epoch_started, 1),
            **{key: round(value / len(epoch_batches), 4) for key, value in sums.items()},
            "temperature": round(float(objective.title_scale.detach().exp()), 2),
        }
        if validation and validation_titles is not None:
            tower.eval()
            with torch.inference_mode():
                image_vectors = embed_validation()
            similarity, own_image = validation_titles @ image_vectors.T, np.arange(len(validation))
            record.update({f"val_R@{k}": round(recall_at_k(similarity, own_image, k), 4) for k in (1, 10)})
        state.history.append(record)
        logger.info("epoch %s", record)
        torch.save(
            {
                "tower": tower.state_dict(),
                "objective": {k: v for k, v in objective.state_dict().items() if "scale" in k},
                "optimizer": optimizer.state_dict(),
                "state": asdict(state),
                "torch_rng": torch.get_rng_state(),
                "config": asdict(config),
            },
            checkpoint,
        )

    model_dir = out_dir / "model"
    model_dir.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(model_dir / WEIGHTS_FILE))
    model_config = {
        **tower_config,
        "hidden": config.hidden,
        "dim": int(titles.shape[1]),
        "crop_to_content": config.crop_to_content,
        "text_tower": config.text_tower,
        "logit_scale": round(float(objective.title_scale.detach().clamp(max=math.log(100)).exp()), 4),
    }
    (model_dir / CONFIG_FILE).write_text(json.dumps(model_config, indent=2))
    return {
        "config": asdict(config),
        "history": state.history,
        "train_products": len(train),
        "validation_products": len(validation),
        "vocabulary": vocabulary,
        "seconds": round(time.monotonic() - started, 1),
    }


def describe_products(
    backbone: OpenNsfwBackbone, products: list[Product], *, on_progress: Progress | None = None, chunk: int = 64
) -> tuple[torch.Tensor, list[Product]]:
    """The backbone's descriptions [N, features] of every product whose image decodes, and those products."""
    described, kept = [], []
    for start in range(0, len(products), chunk):
        pixels = []
        for product in products[start : start + chunk]:
            try:
                pixels.append(backbone.prepare(open_image(product.image)))
            except ImageRejected as error:
                logger.warning("product %s left out: %s", product.id, error)
                continue
            kept.append(product)
        if pixels:
            described.append(backbone.describe(np.stack(pixels))[:, 0, 0])
        if on_progress is not None:
            on_progress("describing images", min(start + chunk, len(products)), len(products), {})
    if not described:
        return torch.zeros((0, backbone.dim)), kept
    return torch.from_numpy(np.concatenate(described)), kept


def _kind(product: Product) -> str | None:
    """articleType and baseColour together: what makes two products look-alikes; None when either is unknown."""
    kind, colour = product.attributes.get("articleType"), product.attributes.get("baseColour")
    return f"{kind}\x00{colour}" if kind and colour else None


def _same(products: list[Product], key: Callable[[Product], str | None]) -> torch.Tensor:
    """bool [N, N]: products i and j share a (known) key."""
    keys = [key(p) for p in products]
    ids = {value: i for i, value in enumerate(sorted({k for k in keys if k is not None}))}
    index = torch.tensor([ids[k] if k is not None else -1 - i for i, k in enumerate(keys)])
    return index[:, None] == index[None, :]


def _learning_rate(config: TowerConfig, state: TrainingState) -> float:
    if state.step < config.warmup_steps:
        return config.lr * (state.step + 1) / config.warmup_steps
    progress = min(1.0, (state.step - config.warmup_steps) / max(1, state.total_steps - config.warmup_steps))
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def _progress_reporter(on_progress: Progress | None) -> Callable[[str, int, int, dict[str, float]], None]:
    def report(stage: str, done: int, total: int, figures: dict[str, float]) -> None:
        if on_progress is not None:
            on_progress(stage, done, total, figures)

    return report
