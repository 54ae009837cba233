"""Face boxes from MTCNN, with the P/R/O-net weights that ``facenet-pytorch`` bundles (``facenet_pytorch/data``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ml.detectors import Detection, weight_file
from ml.specs import ModelSpec


class FaceDetector:
    """Every face in an image (``label="face"``), with MTCNN's probability and a box in image pixels."""

    def __init__(self, path: Path, *, spec: ModelSpec, device: str = "cpu") -> None:
        import torch
        from facenet_pytorch import MTCNN

        self.spec = spec
        pre, thresholds = spec.preprocessing, spec.thresholds
        self.max_side = int(pre["max_side"])
        self.model = MTCNN(
            min_face_size=int(pre["min_face_size"]),
            thresholds=[float(thresholds["pnet"]), float(thresholds["rnet"]), float(thresholds["onet"])],
            factor=float(pre["scale_factor"]),
            select_largest=False,
            keep_all=True,
            device=torch.device(device),
        )
        # MTCNN() reads its package's copies with torch's defaults; load the verified files explicitly, tensors only.
        for role, net in (("pnet", self.model.pnet), ("rnet", self.model.rnet), ("onet", self.model.onet)):
            state = torch.load(weight_file(path, spec, role), map_location=device, weights_only=True)
            net.load_state_dict(state)
        self.model.eval()

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Faces per image, most probable first."""
        # MTCNN batches only images of one size, so images are grouped by size and put back in order.
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        inputs: list[Image.Image] = []
        for index, image in enumerate(images):
            inputs.append(self._fit(image.convert("RGB")))
            by_size[inputs[-1].size].append(index)
        results: list[list[Detection]] = [[] for _ in images]
        for indices in by_size.values():
            batch_boxes, batch_probs = self.model.detect(np.stack([np.asarray(inputs[i]) for i in indices]))
            for index, boxes, probs in zip(indices, batch_boxes, batch_probs, strict=True):
                if boxes is not None:
                    results[index] = self._faces(boxes, probs, images[index].size, inputs[index].size)
        return results

    def _fit(self, image: Image.Image) -> Image.Image:
        # The image pyramid's cost grows with the pixel count; faces below min_face_size at this scale are missed.
        scale = self.max_side / max(image.size)
        if scale >= 1:
            return image
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, resample=Image.Resampling.BILINEAR)

    @staticmethod
    def _faces(boxes: np.ndarray, probs: np.ndarray, size: tuple[int, int], seen: tuple[int, int]) -> list[Detection]:
        width, height = size
        sx, sy = width / seen[0], height / seen[1]
        faces = [
            Detection(
                label="face",
                score=float(prob),
                box=(
                    float(np.clip(box[0] * sx, 0, width)),
                    float(np.clip(box[1] * sy, 0, height)),
                    float(np.clip(box[2] * sx, 0, width)),
                    float(np.clip(box[3] * sy, 0, height)),
                ),
            )
            for box, prob in zip(boxes, probs, strict=True)
        ]
        return sorted(faces, key=lambda face: -face.score)
