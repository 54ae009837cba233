"""Captions and visual question answering with BLIP, and the honest answer when no generator is installed.

Each model follows one contract: ``preprocess`` (PIL images and strings -> tensors, on the CPU), ``forward``
(batched generation on the device), ``postprocess`` (token ids -> stripped strings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ml.specs import ModelSpec

logger = logging.getLogger(__name__)

CAPTION_MODEL = "blip-caption-base"
NO_CAPTIONER_REASON = (
    "no caption model is installed: the offline pack has no text generator; "
    f"install the full pack (manage.py models pull {CAPTION_MODEL})"
)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class CaptionResult:
    """Captions for a list of images, or why there are none (``texts`` is then ``None``, never invented text)."""

    texts: list[str] | None
    available: bool
    reason: str = ""
    model: str = ""


class _BlipGenerator:
    model_class = ""

    def __init__(self, path: Path, *, spec: ModelSpec, device: str = "cpu") -> None:
        import transformers

        self.spec = spec
        self.device = torch.device(device)
        self.processor = transformers.BlipProcessor.from_pretrained(str(path), local_files_only=True)
        model = getattr(transformers, self.model_class).from_pretrained(
            str(path), local_files_only=True, use_safetensors=True
        )
        self.model = model.to(self.device).eval()
        logger.info("loaded %s", self.model_class, extra={"model": spec.name, "version": spec.version})

    @property
    def model_version(self) -> str:
        """``name@version``, recorded next to every generated text."""
        return f"{self.spec.name}@{self.spec.version}"

    def postprocess(self, token_ids: torch.Tensor) -> list[str]:
        """Generated token ids -> texts without special tokens."""
        return [text.strip() for text in self.processor.batch_decode(token_ids, skip_special_tokens=True)]

    def _generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        with torch.inference_mode():
            return self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)


class BlipCaptioner(_BlipGenerator):
    """``BlipForConditionalGeneration`` and its ``BlipProcessor`` from a local directory (safetensors)."""

    model_class = "BlipForConditionalGeneration"

    def preprocess(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """Images -> ``pixel_values``."""
        rgb = [image.convert("RGB") for image in images]
        return {"pixel_values": self.processor(images=rgb, return_tensors="pt")["pixel_values"]}

    def forward(self, inputs: dict[str, torch.Tensor], *, max_new_tokens: int = 30) -> torch.Tensor:
        """Greedy generation, so the same image always gets the same caption."""
        return self._generate(inputs, max_new_tokens)

    def caption(
        self,
        images: Sequence[Image.Image],
        *,
        max_new_tokens: int = 30,
        batch_size: int = 8,
        on_progress: ProgressCallback | None = None,
    ) -> list[str]:
        """One caption per image."""
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            captions += self.postprocess(self.forward(self.preprocess(batch), max_new_tokens=max_new_tokens))
            if on_progress is not None:
                on_progress(len(captions), len(images))
        return captions


class BlipQuestionAnswerer(_BlipGenerator):
    """``BlipForQuestionAnswering`` and its ``BlipProcessor`` from a local directory (safetensors)."""

    model_class = "BlipForQuestionAnswering"

    def preprocess(self, images: Sequence[Image.Image], questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Images and their questions -> ``pixel_values``, ``input_ids``, ``attention_mask``."""
        rgb = [image.convert("RGB") for image in images]
        encoded = self.processor(images=rgb, text=list(questions), padding=True, return_tensors="pt")
        return {key: encoded[key] for key in ("pixel_values", "input_ids", "attention_mask")}

    def forward(self, inputs: dict[str, torch.Tensor], *, max_new_tokens: int = 10) -> torch.Tensor:
        """Greedy answer generation."""
        return self._generate(inputs, max_new_tokens)

    def answer(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        *,
        max_new_tokens: int = 10,
        batch_size: int = 8,
        on_progress: ProgressCallback | None = None,
    ) -> list[str]:
        """One answer per (image, question) pair."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions; ask one question per image")
        answers: list[str] = []
        for start in range(0, len(images), batch_size):
            inputs = self.preprocess(images[start : start + batch_size], questions[start : start + batch_size])
            answers += self.postprocess(self.forward(inputs, max_new_tokens=max_new_tokens))
            if on_progress is not None:
                on_progress(len(answers), len(images))
        return answers


def caption_or_explain(
    images: Sequence[Image.Image], captioner: BlipCaptioner | Any | None, *, max_new_tokens: int = 30
) -> CaptionResult:
    """Captions from ``captioner``, or, when there is none, a result that says so instead of any text."""
    if captioner is None:
        return CaptionResult(texts=None, available=False, reason=NO_CAPTIONER_REASON)
    texts = captioner.caption(images, max_new_tokens=max_new_tokens)
    return CaptionResult(texts=texts, available=True, model=getattr(captioner, "model_version", ""))
