"""Text inside images: RapidOCR's pipeline (detection, orientation, recognition) on the PP-OCR ONNX models it ships."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml.detectors import Box, weight_file
from ml.specs import ModelSpec


@dataclass(frozen=True)
class OcrLine:
    """One recognised line: its text, the recogniser's confidence, and its box in the original image's pixels."""

    text: str
    score: float
    box: Box


@dataclass(frozen=True)
class OcrResult:
    """All text read from one image; ``text`` is the lines joined by newlines, in reading order."""

    text: str
    lines: list[OcrLine] = field(default_factory=list)


class TextReader:
    """Reads printed text (Chinese, English and Latin scripts) from images."""

    def __init__(self, path: Path, *, spec: ModelSpec, device: str = "cpu") -> None:
        from rapidocr import RapidOCR
        from rapidocr.utils.output import RapidOCROutput

        self.output_type = RapidOCROutput
        self.spec = spec
        pre, thresholds = spec.preprocessing, spec.thresholds
        # Every model file is given explicitly: with a model_path RapidOCR never resolves or downloads a default.
        params: dict[str, Any] = {
            "Global.log_level": "error",
            "Global.text_score": float(thresholds["text_score"]),
            "Det.model_path": str(weight_file(path, spec, "det")),
            "Cls.model_path": str(weight_file(path, spec, "cls")),
            "Rec.model_path": str(weight_file(path, spec, "rec")),
            "Det.limit_type": str(pre["det_limit_type"]),
            "Det.limit_side_len": int(pre["det_limit_side_len"]),
            "Det.box_thresh": float(thresholds["box_thresh"]),
        }
        if device.startswith("cuda"):
            import onnxruntime

            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                _, _, index = device.partition(":")
                params["EngineConfig.onnxruntime.use_cuda"] = True
                params["EngineConfig.onnxruntime.cuda_ep_cfg.device_id"] = int(index or 0)
        self.engine = RapidOCR(params=params)

    def read(self, images: Sequence[Image.Image]) -> list[OcrResult]:
        """The text of each image (an empty ``OcrResult`` where there is none)."""
        return [self._read_one(image) for image in images]

    def _read_one(self, image: Image.Image) -> OcrResult:
        # RapidOCR takes an ndarray as BGR (OpenCV's order) as is.
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        output = self.engine(pixels)
        # With detection, orientation and recognition all on, anything but a RapidOCROutput means no text found.
        if not isinstance(output, self.output_type) or not output.txts or output.boxes is None or not output.scores:
            return OcrResult(text="")
        lines = [
            OcrLine(
                text=str(text),
                score=float(score),
                box=(
                    float(polygon[:, 0].min()),
                    float(polygon[:, 1].min()),
                    float(polygon[:, 0].max()),
                    float(polygon[:, 1].max()),
                ),
            )
            for text, score, polygon in zip(output.txts, output.scores, np.asarray(output.boxes), strict=True)
        ]
        return OcrResult(text="\n".join(line.text for line in lines), lines=lines)
