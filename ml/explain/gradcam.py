"""Grad-CAM (Selvaraju et al., ICCV 2017) for CNN towers.

For a score y and a target layer's activations A [C, h, w]: each channel's weight is its spatially averaged gradient
``a_k = mean_ij dy/dA_kij``, and the map is ``ReLU(sum_k a_k A_k)`` on the layer's grid: where the features that raise
the score are. torch is imported inside the functions, so rendering stored maps never pays for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ml.explain.maps import Heatmap, model_version_of

if TYPE_CHECKING:
    import torch

    from ml.lit.model import LitEncoder

logger = logging.getLogger(__name__)


def grad_cam(
    model: torch.nn.Module,
    target_layer: torch.nn.Module,
    pixels: torch.Tensor,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
) -> np.ndarray:
    """Grad-CAM of ``score_fn(model(pixels))`` at ``target_layer``: float32 [h, w] on the layer's grid, >= 0.

    ``pixels`` is one prepared input [1, 3, H, W]; ``score_fn`` maps the model's output to one scalar (a class
    logit, a cosine with a text). ``target_layer`` must output a tensor [1, C, h, w]; if it runs more than once per
    forward pass, its last call counts. The model runs in eval mode (dropout off, batch norm on its running
    statistics) and every module's train/eval mode is restored afterwards. The activation is captured with a forward
    hook, removed before returning; its gradient is taken with ``torch.autograd.grad`` rather than ``backward()``, so
    no parameter's ``.grad`` is touched (a serving model stays as it was, and no training step sees stray grads).
    """
    import torch

    if pixels.ndim != 4 or pixels.shape[0] != 1:
        raise ValueError(f"Grad-CAM explains one input [1, C, H, W], got shape {tuple(pixels.shape)}")
    modes = [(module, module.training) for module in model.modules()]
    captured: list[torch.Tensor] = []
    owner = threading.get_ident()

    def keep_activation(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        # A worker may share this model between threads; only this call's forward pass is ours to capture.
        if threading.get_ident() == owner:
            captured.append(output)

    handle = target_layer.register_forward_hook(keep_activation)
    try:
        model.eval()
        # Callers may hold inference_mode or no_grad (encoders do); Grad-CAM needs a graph.
        with torch.inference_mode(False), torch.enable_grad():
            inputs = pixels.detach().clone().requires_grad_(True)
            score = score_fn(model(inputs))
            if score.numel() != 1:
                raise ValueError(f"score_fn must return one scalar, got shape {tuple(score.shape)}")
            if not captured:
                raise ValueError("the target layer did not run in the model's forward pass")
            activation = captured[-1]
            if not isinstance(activation, torch.Tensor) or activation.ndim != 4:
                raise ValueError("the target layer must output one tensor [1, C, h, w]")
            (gradient,) = torch.autograd.grad(score.reshape(()), activation)
    finally:
        handle.remove()
        for module, training in modes:
            module.train(training)
    weights = gradient.float().mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation.detach().float()).sum(dim=1))[0]
    return cam.cpu().numpy().astype(np.float32)


def lit_grad_cam(
    encoder: LitEncoder, image: Image.Image, text: str | np.ndarray, *, label: str | None = None
) -> Heatmap:
    """Grad-CAM of a LiT tower for ``text`` (a string, or its embedding [dim]) at the last ResNet stage.

    The score is the cosine between the tower's image embedding and the text embedding; the input is prepared
    exactly as ``LitEncoder`` prepares it (``encoder.prepare`` then ``to_tensor``). The map's grid therefore covers
    the product crop, not the whole upload: draw it on ``model_view(encoder, image)``. Only the CNN tower trained
    from scratch has gradients through its trunk; a tower on the frozen ONNX backbone explains with
    ``similarity_map`` (its 7 x 7 cell grid).
    """
    import torch

    from ml.lit.model import ImageTower, to_tensor

    if not isinstance(encoder.tower, ImageTower):
        raise ValueError("this LiT tower runs on a frozen ONNX backbone with no gradients: use similarity_map")

    if isinstance(text, str):
        embedding = np.asarray(encoder.encode_texts([text]), dtype=np.float32)[0]
        label = text if label is None else label
    else:
        embedding = np.asarray(text, dtype=np.float32).reshape(-1)
    if embedding.shape[0] != encoder.dim:
        raise ValueError(f"the text embedding has {embedding.shape[0]} dimensions, the tower {encoder.dim}")
    target = torch.nn.functional.normalize(torch.from_numpy(embedding).to(encoder.device), dim=0)
    pixels = to_tensor(encoder.prepare([image])).to(encoder.device)

    def cosine(output: torch.Tensor) -> torch.Tensor:
        # The tower's output is already L2-normalised, so the dot product is the cosine.
        return output[0].float() @ target

    tower = encoder.tower
    values = grad_cam(tower, tower.features[-1], pixels, cosine)
    version = model_version_of(encoder)
    logger.debug("LiT Grad-CAM", extra={"model_version": version, "grid": list(values.shape)})
    return Heatmap(values=values, kind="grad-cam", label=label or "", model_version=version)
