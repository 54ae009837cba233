"""Image-text encoders behind ``PatchEncoder``: open_clip checkpoints, transformers CLIP and SigLIP.

All three share one contract: preprocess on the CPU, batched forward on the device under ``torch.inference_mode``,
L2-normalised float32 numpy out.

Patch maps. ``encode_image_patches`` projects every patch token of a ViT tower into the joint space with the tower's
own final norm and projection, so a patch's dot product with a text embedding is a patch-text similarity.
By default (``patch_method="maskclip"``) the patch tokens come from MaskCLIP (Zhou et al., ECCV 2022): the last
transformer block runs once more with each token attending only to itself (residual and MLP kept). CLIP's last block
mixes global context into every token, which makes plain last-layer patch maps noisy or even inverted (the problem
"CLIP Surgery" describes); self-only attention keeps each token local at the cost of one extra block. The self-only
attention is an additive diagonal mask given to each library's own block, so the block's code is not re-implemented
here. ``patch_method="tokens"`` uses the plain last-layer tokens instead. The global embedding is always the model's
ordinary pooled embedding.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from ml.encoders.quantize import quantize_submodules_int8
from ml.specs import ModelSpec

logger = logging.getLogger(__name__)

# "int8" quantizes the image tower only (CPU): MiniLM-sized text towers gain little, and a query's text embedding
# is cheap next to an image's.
PRECISIONS = ("fp32", "bf16", "int8")
PATCH_METHODS = ("maskclip", "tokens")
OPEN_CLIP_CHECKPOINTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)
# open_clip reads these from ``preprocessing`` as overrides of the checkpoint's own preprocess config.
OPEN_CLIP_PREPROCESS_OVERRIDES = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}

ProgressCallback = Callable[[int, int], None]
_Output = TypeVar("_Output")


class _JointEncoder:
    """Batching, precision and normalisation shared by the towers; subclasses supply the forward passes."""

    dim: int
    logit_scale: float
    logit_bias: float | None = None
    grid: tuple[int, int]

    def __init__(self, *, spec: ModelSpec, device: str, precision: str | None, patch_method: str | None) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.precision = precision or str(spec.preprocessing.get("precision", "fp32"))
        if self.precision not in PRECISIONS:
            raise ValueError(f"model {spec.name!r}: precision {self.precision!r} is not one of {PRECISIONS}")
        if self.precision == "int8" and self.device.type != "cpu":
            raise ValueError(f"model {spec.name!r}: int8 runs on the CPU only; use bf16 on {self.device.type}")
        if self.precision == "bf16" and self.device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            logger.warning(
                "model %s: this CPU has no bf16 instructions (avx512_bf16, amx_bf16); bf16 is emulated and slower "
                "than fp32 here: use fp32 or int8",
                spec.name,
            )
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.patch_method = patch_method or str(spec.preprocessing.get("patch_method", "maskclip"))
        if self.patch_method not in PATCH_METHODS:
            raise ValueError(f"model {spec.name!r}: patch_method {self.patch_method!r} is not one of {PATCH_METHODS}")

    # --- what subclasses provide -------------------------------------------------------------------------------------
    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        raise NotImplementedError

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _text_features(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def _patch_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global [B, D], patches [B, rows, cols, D]), neither normalised."""
        raise NotImplementedError

    # --- the public contract -----------------------------------------------------------------------------------------
    def encode_images(
        self,
        images: Sequence[Image.Image],
        *,
        batch_size: int = 32,
        on_progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """L2-normalised float32 image embeddings [N, dim]; ``on_progress(done, total)`` after each batch."""
        chunks = self._map_batches(
            images, batch_size, on_progress, lambda batch: self._image_features(self._device_pixels(batch))
        )
        return np.concatenate([_to_unit_numpy(c) for c in chunks]) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_texts(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        on_progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """L2-normalised float32 text embeddings [N, dim], in the same space as ``encode_images``."""
        chunks = self._map_batches(texts, batch_size, on_progress, self._text_features)
        return np.concatenate([_to_unit_numpy(c) for c in chunks]) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_image_patches(
        self,
        images: Sequence[Image.Image],
        *,
        batch_size: int = 16,
        on_progress: ProgressCallback | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(global [N, dim], patches [N, rows, cols, dim]), both L2-normalised in the joint space.

        The patch grid is the model's input size divided by its patch size (224 px / 32 px -> 7 x 7).
        """
        pairs = self._map_batches(
            images, batch_size, on_progress, lambda batch: self._patch_features(self._device_pixels(batch))
        )
        if not pairs:
            rows, cols = self.grid
            return np.zeros((0, self.dim), np.float32), np.zeros((0, rows, cols, self.dim), np.float32)
        return (
            np.concatenate([_to_unit_numpy(pooled) for pooled, _ in pairs]),
            np.concatenate([_to_unit_numpy(patches) for _, patches in pairs]),
        )

    # --- helpers -----------------------------------------------------------------------------------------------------
    def _map_batches(
        self,
        items: Sequence[Any],
        batch_size: int,
        on_progress: ProgressCallback | None,
        forward: Callable[[list[Any]], _Output],
    ) -> list[_Output]:
        """``forward`` on each batch in inference mode; progress after each batch."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        total, outputs = len(items), []
        for start in range(0, total, batch_size):
            with torch.inference_mode():
                outputs.append(forward(list(items[start : start + batch_size])))
            if on_progress is not None:
                on_progress(min(start + batch_size, total), total)
        return outputs

    def _device_pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self._pixels(images).to(self.device, self.dtype)

    def _reduce_precision(self, model: nn.Module, image_modules: tuple[str, ...]) -> None:
        """bf16: weights (and, in the encode calls, pixels) cast to bf16, measured 2.6x fp32 on an AMX CPU where
        autocast was 3x slower than fp32; int8: the image tower quantized (``ml.encoders.quantize``)."""
        if self.precision == "bf16":
            model.to(torch.bfloat16)
        elif self.precision == "int8":
            quantize_submodules_int8(model, image_modules)


class OpenClipEncoder(_JointEncoder):
    """Any open_clip architecture from local weights.

    ``path`` is one of: a directory as open_clip's hf-hub repos hold it (``open_clip_config.json`` with ``model_cfg``
    and ``preprocess_cfg``, plus ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``); a directory with
    only the checkpoint; or the checkpoint file. Without a config the spec's ``preprocessing.architecture`` names a
    built-in open_clip architecture. Towers whose text side is a Hugging Face model (BiomedCLIP) need that model's
    ``config.json`` and tokenizer files locally: ``preprocessing.tokenizer_dir``, relative to ``path``, says where
    (default: ``path`` itself), because the config names a hub repo that offline hosts cannot reach.
    ``preprocessing`` may override ``mean``, ``std``, ``interpolation`` and ``resize_mode``.
    """

    def __init__(
        self,
        path: Path,
        *,
        spec: ModelSpec,
        device: str = "cpu",
        precision: str | None = None,
        patch_method: str | None = None,
    ) -> None:
        import open_clip

        super().__init__(spec=spec, device=device, precision=precision, patch_method=patch_method)
        path = Path(path)
        root = path if path.is_dir() else path.parent
        config_file = root / "open_clip_config.json"
        config: dict[str, Any] = json.loads(config_file.read_text()) if path.is_dir() and config_file.exists() else {}
        architecture = spec.preprocessing.get("architecture")
        if config:
            model_name = f"local-dir:{root}"
            model_cfg = config["model_cfg"]
        elif architecture:
            model_name = str(architecture)
            model_cfg = open_clip.get_model_config(model_name)
            if model_cfg is None:
                raise ValueError(f"model {spec.name!r}: open_clip has no architecture {architecture!r}")
        else:
            raise ValueError(
                f"model {spec.name!r}: {path} has no open_clip_config.json and the spec names no "
                f"preprocessing.architecture"
            )
        checkpoint = path if path.is_file() else _open_clip_checkpoint(root)
        if checkpoint is None:
            raise FileNotFoundError(
                f"model {spec.name!r}: no open_clip checkpoint ({', '.join(OPEN_CLIP_CHECKPOINTS)}) in {root}"
            )

        text_cfg = dict(model_cfg.get("text_cfg", {}))
        text_dir = root / str(spec.preprocessing.get("tokenizer_dir", "."))
        overrides: dict[str, Any] = {}
        if "hf_model_name" in text_cfg:
            # The text tower is built from its Hugging Face config before the checkpoint fills it in; the config's
            # hub name would be fetched from the network, the local copy is not.
            overrides["text_cfg"] = {**text_cfg, "hf_model_name": str(text_dir), "hf_model_pretrained": False}
        preprocess_overrides = {
            argument: spec.preprocessing[key]
            for key, argument in OPEN_CLIP_PREPROCESS_OVERRIDES.items()
            if key in spec.preprocessing
        }
        # With a local-dir config open_clip picks the checkpoint itself, preferring the same names as we do.
        model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=None if config else str(checkpoint),
            device=self.device,
            weights_only=True,
            **preprocess_overrides,
            **overrides,
        )
        self.model = model.eval()
        if "hf_tokenizer_name" in text_cfg or "tokenizer_dir" in spec.preprocessing:
            from open_clip.tokenizer import HFTokenizer

            self.tokenizer = HFTokenizer(
                str(text_dir),
                context_length=int(text_cfg.get("context_length", 77)),
                tokenizer_mode=text_cfg.get("tokenizer_mode"),
                **text_cfg.get("tokenizer_kwargs", {}),
            )
        else:
            self.tokenizer = open_clip.get_tokenizer(model_name)

        self.dim = int(model_cfg["embed_dim"])
        self.logit_scale = float(self.model.logit_scale.exp().item())
        bias = getattr(self.model, "logit_bias", None)
        self.logit_bias = float(bias.item()) if bias is not None else None
        size = self.model.visual.image_size
        height, width = (size, size) if isinstance(size, int) else size
        patch_height, patch_width = self._patch_size()
        self.grid = (height // patch_height, width // patch_width)
        self._reduce_precision(self.model, ("visual",))
        logger.info("loaded open_clip model", extra={"model": spec.name, "version": spec.version, "source": str(path)})

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.preprocess(image) for image in images])

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))

    def _patch_size(self) -> tuple[int, int]:
        visual = self.model.visual
        trunk = getattr(visual, "trunk", None)
        size = trunk.patch_embed.patch_size if trunk is not None and hasattr(trunk, "patch_embed") else None
        size = size or getattr(visual, "patch_size", None)
        if size is None:
            return (1, 1)  # not a ViT: encode_image_patches refuses it
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def _patch_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from open_clip.transformer import VisionTransformer

        visual = self.model.visual
        trunk = getattr(visual, "trunk", None)
        if isinstance(visual, VisionTransformer) and visual.attn_pool is None:
            blocks = visual.transformer.resblocks
            batch_first = getattr(visual.transformer, "batch_first", True)
            prefix = 1
        elif trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "num_prefix_tokens"):
            blocks, batch_first, prefix = trunk.blocks, True, int(trunk.num_prefix_tokens)
        else:
            raise NotImplementedError(
                f"model {self.spec.name!r}: patch maps need a ViT image tower; {type(visual).__name__} is not one"
            )
        with _last_block_io(blocks[-1]) as io:
            pooled = visual(pixels)
        tokens = io["output"]
        if self.patch_method == "maskclip":
            hidden = io["input"]
            length = hidden.shape[1] if batch_first else hidden.shape[0]
            tokens = blocks[-1](hidden, attn_mask=_self_only_mask(length, hidden))
        if not batch_first:
            tokens = tokens.transpose(0, 1)
        tokens = tokens[:, prefix:]
        if trunk is None:
            tokens = visual.ln_post(tokens)
            if visual.proj is not None:
                tokens = tokens @ visual.proj
        else:
            # timm applies ``norm`` to every token and ``fc_norm`` after pooling; both are per-token LayerNorms (one
            # of them an identity), so applying both per patch matches what the pooled token went through.
            tokens = visual.head(trunk.head(trunk.fc_norm(trunk.norm(tokens))))
        return pooled, _to_grid(tokens, pixels, self._patch_size())


class HfClipEncoder(_JointEncoder):
    """transformers ``CLIPModel`` with its image processor and tokenizer, from a local directory (safetensors)."""

    model_class = "CLIPModel"
    prefix_tokens = 1
    image_modules: tuple[str, ...] = ("vision_model", "visual_projection")  # what precision="int8" quantizes

    def __init__(
        self,
        path: Path,
        *,
        spec: ModelSpec,
        device: str = "cpu",
        precision: str | None = None,
        patch_method: str | None = None,
    ) -> None:
        import transformers

        super().__init__(spec=spec, device=device, precision=precision, patch_method=patch_method)
        model_class = getattr(transformers, self.model_class)
        self.model = model_class.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        self.model.to(self.device).eval()
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        config = self.model.config
        self.dim = int(getattr(config, "projection_dim", 0) or config.vision_config.hidden_size)
        self.max_text_length = int(
            spec.preprocessing.get("max_text_length", config.text_config.max_position_embeddings)
        )
        self.logit_scale = float(self.model.logit_scale.exp().item())
        bias = getattr(self.model, "logit_bias", None)
        self.logit_bias = float(bias.item()) if bias is not None else None
        vision = config.vision_config
        self.patch_size = int(vision.patch_size)
        self.grid = (int(vision.image_size) // self.patch_size, int(vision.image_size) // self.patch_size)
        self._reduce_precision(self.model, self.image_modules)
        logger.info("loaded %s", self.model_class, extra={"model": spec.name, "version": spec.version})

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        rgb = [image.convert("RGB") for image in images]
        return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=pixels).pooler_output

    def _text_inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        inputs = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}

    def _text_features(self, texts: Sequence[str]) -> torch.Tensor:
        inputs = {key: value.to(self.device) for key, value in self._text_inputs(texts).items()}
        return self.model.get_text_features(**inputs).pooler_output

    def _vision_transformer(self) -> Any:
        vision = self.model.vision_model
        return getattr(vision, "vision_model", vision)

    def _project_patches(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.visual_projection(self._vision_transformer().post_layernorm(tokens))

    def _patch_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last = self._vision_transformer().encoder.layers[-1]
        with _last_block_io(last) as io:
            pooled = self._image_features(pixels)
        tokens = io["output"]
        if self.patch_method == "maskclip":
            hidden = io["input"]
            tokens = last(hidden, _self_only_mask(hidden.shape[1], hidden)[None, None])
        tokens = self._project_patches(tokens[:, self.prefix_tokens :])
        return pooled, _to_grid(tokens, pixels, (self.patch_size, self.patch_size))


class HfSiglipEncoder(HfClipEncoder):
    """transformers ``SiglipModel``; texts are padded to the full length because SigLIP was trained that way and
    pools the last position. ``logit_bias`` is kept for sigmoid scores."""

    model_class = "SiglipModel"
    prefix_tokens = 0
    image_modules = ("vision_model",)  # SigLIP's projection head is inside the vision model

    def _text_inputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        inputs = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        # SigLIP's text tower was trained without an attention mask.
        return {"input_ids": inputs["input_ids"]}

    def _project_patches(self, tokens: torch.Tensor) -> torch.Tensor:
        vision = self._vision_transformer()
        tokens = vision.post_layernorm(tokens)
        batch, length, width = tokens.shape
        # The pooling head attends from a learnt probe to all tokens; given one token the attention is exactly that
        # token, so running the head per patch gives each patch's embedding in the pooled space.
        return vision.head(tokens.reshape(batch * length, 1, width)).reshape(batch, length, -1)


def _open_clip_checkpoint(directory: Path) -> Path | None:
    for name in OPEN_CLIP_CHECKPOINTS:
        if (directory / name).is_file():
            return directory / name
    return None


@contextlib.contextmanager
def _last_block_io(block: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the input and output hidden states of ``block`` during the forward pass inside the ``with``."""
    captured: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        captured["input"] = args[0]
        captured["output"] = output[0] if isinstance(output, tuple) else output

    handle = block.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _self_only_mask(length: int, like: torch.Tensor) -> torch.Tensor:
    """Additive attention mask letting each token attend only to itself (MaskCLIP's identity attention)."""
    mask = torch.full((length, length), torch.finfo(like.dtype).min, dtype=like.dtype, device=like.device)
    return mask.fill_diagonal_(0)


def _to_grid(tokens: torch.Tensor, pixels: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    rows, cols = pixels.shape[-2] // patch_size[0], pixels.shape[-1] // patch_size[1]
    if rows * cols != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} patch tokens do not form the {rows}x{cols} grid of the input")
    return tokens.reshape(tokens.shape[0], rows, cols, tokens.shape[-1])


def _to_unit_numpy(vectors: torch.Tensor) -> np.ndarray:
    vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
    return vectors.cpu().numpy().astype(np.float32, copy=False)
