"""NudeNet's body-part detector (a YOLOv8 ONNX graph, 18 classes) from the ``nudenet`` wheel, with boxes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ml.detectors import Detection, onnx_session, weight_file
from ml.specs import ModelSpec


class NudeNetDetector:
    """Exposed and covered body parts and faces, as boxes in the original image's pixels."""

    def __init__(self, path: Path, *, spec: ModelSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.labels = list(spec.labels)
        self.explicit_labels = frozenset(spec.extra.get("explicit_labels", ()))
        unknown = self.explicit_labels - set(self.labels)
        if unknown:
            raise ValueError(f"model {spec.name!r}: explicit_labels {sorted(unknown)} are not among its labels")
        self.size = int(spec.preprocessing["input_size"])
        self.channel_order = str(spec.preprocessing["channel_order"])
        if self.channel_order not in {"RGB", "BGR"}:
            raise ValueError(f"model {spec.name!r}: channel_order must be RGB or BGR, not {self.channel_order!r}")
        self.candidate_score = float(spec.thresholds["candidate_score"])
        self.min_score = float(spec.thresholds["min_score"])
        self.nms_iou = float(spec.thresholds["nms_iou"])
        self.session = onnx_session(weight_file(path, spec, "model"), device)
        self.input_name = self.session.get_inputs()[0].name
        classes = self.session.get_outputs()[0].shape[1] - 4
        if isinstance(classes, int) and classes != len(self.labels):
            raise ValueError(
                f"model {spec.name!r} predicts {classes} classes; its spec lists {len(self.labels)} labels"
            )

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """The (3, size, size) float32 input and the factor from model pixels back to image pixels.

        The image is padded right and bottom to a square, then resized, so one factor maps both axes back.
        """
        import cv2

        pixels = np.asarray(image.convert("RGB"))
        height, width = pixels.shape[:2]
        side = max(height, width)
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[:height, :width] = pixels
        # cv2's bilinear resize, as in NudeNet's own pipeline (PIL's would antialias and shift scores).
        resized = cv2.resize(square, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        # Specs say RGB, the order YOLOv8 was trained in; nudenet 3.4.2's own reader swaps channels twice and so
        # feeds BGR (notAI-tech/NudeNet#203). "BGR" reproduces the package's outputs exactly.
        if self.channel_order == "BGR":
            resized = resized[:, :, ::-1]
        return resized.transpose(2, 0, 1).astype(np.float32) / 255.0, side / self.size

    def detect(self, images: Sequence[Image.Image], *, batch_size: int = 8) -> list[list[Detection]]:
        """Detections per image, best first, after class-agnostic non-maximum suppression."""
        results: list[list[Detection]] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            prepared = [self.preprocess(image) for image in chunk]
            batch = np.stack([blob for blob, _ in prepared])
            outputs = self.session.run(None, {self.input_name: batch})[0]
            for output, image, (_, scale) in zip(outputs, chunk, prepared, strict=True):
                results.append(self._postprocess(output, scale, image.size))
        return results

    def _postprocess(self, output: np.ndarray, scale: float, size: tuple[int, int]) -> list[Detection]:
        import cv2

        rows = output.T  # [anchors, 4 + classes]: centre x, centre y, width, height, class scores
        class_scores = rows[:, 4:]
        best = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(rows)), best]
        keep = scores >= self.candidate_score
        if not keep.any():
            return []
        rows, best, scores = rows[keep], best[keep], scores[keep]
        width, height = size
        x0 = np.clip((rows[:, 0] - rows[:, 2] / 2) * scale, 0, width)
        y0 = np.clip((rows[:, 1] - rows[:, 3] / 2) * scale, 0, height)
        x1 = np.clip((rows[:, 0] + rows[:, 2] / 2) * scale, 0, width)
        y1 = np.clip((rows[:, 1] + rows[:, 3] / 2) * scale, 0, height)
        boxes_xywh = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
        indices = cv2.dnn.NMSBoxes(boxes_xywh.tolist(), scores.tolist(), self.min_score, self.nms_iou)
        order = sorted(np.asarray(indices).reshape(-1).tolist(), key=lambda i: -scores[i])
        return [
            Detection(
                label=self.labels[int(best[i])],
                score=float(scores[i]),
                box=(float(x0[i]), float(y0[i]), float(x1[i]), float(y1[i])),
            )
            for i in order
        ]
