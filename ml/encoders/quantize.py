"""Reduced-precision image towers: dynamic int8 quantization of every matmul that has weights.

``quantize_dynamic`` swaps ``nn.Linear`` layers only. ``nn.MultiheadAttention`` keeps its input projection as a bare
parameter and its output projection as a class that dynamic quantization skips, so attention is first rewritten as
``nn.Linear`` projections around ``scaled_dot_product_attention`` (``split_attention``, which computes what MHA does).
Weights become int8 once; activations are quantized per batch at run time. CPU only (torch's quantized kernels).

torch marks this eager-mode API (``torch.ao.quantization``) deprecated in favour of the separate ``torchao``
package; it still ships and works in the pinned torch, so its deprecation warnings are silenced here rather than
repeated at every model load. Moving to ``torchao.quantization.quantize_`` is the upgrade path (docs/ml.md).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional


class SplitProjectionAttention(nn.Module):
    """``nn.MultiheadAttention`` with its projections as ``nn.Linear`` layers (one input projection: self-attention
    or attention pooling, where query and key/value differ but share the embedding width).

    ``quantize_dynamic`` swaps ``nn.Linear``s only: MHA keeps its input projection as a bare parameter and its output
    projection as a class excluded from dynamic quantization, so int8 would otherwise reach only the MLPs.
    Called as MHA is: ``attn(query, key, value, need_weights=False, attn_mask=mask)``; returns no weights.
    """

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        if not attention._qkv_same_embed_dim:
            raise ValueError("only self-attention with one input projection can be split")
        width = attention.embed_dim
        self.heads = attention.num_heads
        self.batch_first = attention.batch_first
        self.qkv = nn.Linear(width, 3 * width, bias=attention.in_proj_bias is not None)
        self.out = nn.Linear(width, width, bias=attention.out_proj.bias is not None)
        with torch.no_grad():
            self.qkv.weight.copy_(attention.in_proj_weight)
            self.out.weight.copy_(attention.out_proj.weight)
            if attention.in_proj_bias is not None:
                self.qkv.bias.copy_(attention.in_proj_bias)
            if attention.out_proj.bias is not None:
                self.out.bias.copy_(attention.out_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        # One projection GEMM for self-attention; attention pooling (SigLIP's head: a learned probe attends to the
        # tokens) projects the query and the tokens apart.
        projected_query = self.qkv(query)
        projected_key = projected_query if key is query else self.qkv(key)
        projected_value = projected_key if value is key else self.qkv(value)
        width = query.shape[-1]
        q, k, v = (
            self._heads(projected[..., part * width : (part + 1) * width])
            for part, projected in enumerate((projected_query, projected_key, projected_value))
        )
        attended = functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out(attended.transpose(1, 2).flatten(2))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def _heads(self, projected: torch.Tensor) -> torch.Tensor:
        """[B, L, width] -> [B, heads, L, width / heads]."""
        batch, length, width = projected.shape
        return projected.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2)


def split_attention(module: nn.Module) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``module`` (in place) with ``SplitProjectionAttention``."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.MultiheadAttention):
            setattr(module, name, SplitProjectionAttention(child))
        else:
            split_attention(child)
    return module


def quantize_int8(module: nn.Module) -> tuple[nn.Module, int]:
    """Dynamic int8 quantization of ``module``'s ``nn.Linear`` layers (weights int8, activations quantized per batch
    at run time); returns the quantized copy and how many layers it swapped."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    from torch.ao.quantization import quantize_dynamic

    with _deprecation_silenced():
        quantized = quantize_dynamic(copy.deepcopy(module), {nn.Linear}, dtype=torch.qint8)
    swapped = sum(1 for m in quantized.modules() if isinstance(m, DynamicQuantizedLinear))
    return quantized, swapped


def quantize_submodules_int8(model: nn.Module, names: tuple[str, ...]) -> int:
    """Quantize, in place, every ``nn.Linear`` inside ``model``'s submodules ``names`` (their attention split first)
    and nothing else: an encoder's image tower under ``precision="int8"``. Returns how many layers were swapped."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    from torch.ao.quantization import quantize_dynamic

    with torch.no_grad():
        for name in names:
            split_attention(model.get_submodule(name))
    inside = {
        path
        for path, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(path == name or path.startswith(f"{name}.") for name in names)
    }
    with _deprecation_silenced():
        quantize_dynamic(model, inside, dtype=torch.qint8, inplace=True)
    return sum(1 for module in model.modules() if isinstance(module, DynamicQuantizedLinear))


@contextlib.contextmanager
def _deprecation_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor", category=UserWarning)
        yield
