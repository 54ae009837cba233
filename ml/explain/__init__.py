"""Explanations a reviewer can look at: patch-text similarity maps, Grad-CAM, cross-attention maps, detection boxes
and modality attribution bars, as raw maps (stored with results as JSON) and as PNG overlays.

Importing this package does not import torch; ``grad_cam`` and ``lit_grad_cam`` import it when called.
"""

from ml.explain.gradcam import grad_cam, lit_grad_cam
from ml.explain.maps import HEATMAP_KINDS, Heatmap, attention_heatmap, model_view, similarity_map
from ml.explain.render import attribution_bar, colourise, draw_boxes, overlay, png_bytes

__all__ = [
    "HEATMAP_KINDS",
    "Heatmap",
    "attention_heatmap",
    "attribution_bar",
    "colourise",
    "draw_boxes",
    "grad_cam",
    "lit_grad_cam",
    "model_view",
    "overlay",
    "png_bytes",
    "similarity_map",
]
