"""The int8 path: attention rewritten as ``nn.Linear`` projections, then dynamic quantization."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ml.encoders.quantize import SplitProjectionAttention, quantize_int8, quantize_submodules_int8, split_attention


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_attention_computes_what_multihead_attention_does(batch_first: bool) -> None:
    torch.manual_seed(0)
    block = nn.ModuleDict({"attn": nn.MultiheadAttention(32, 4, batch_first=batch_first)})
    x = torch.randn((2, 7, 32) if batch_first else (7, 2, 32))
    causal = torch.full((7, 7), float("-inf")).triu(1)
    expected = block["attn"](x, x, x, need_weights=False, attn_mask=causal)[0]

    split_attention(block)

    assert isinstance(block["attn"], SplitProjectionAttention)
    actual = block["attn"](x, x, x, need_weights=False, attn_mask=causal)[0]
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_int8_reaches_attention_projections_only_after_splitting() -> None:
    block = nn.ModuleDict(
        {
            "attn": nn.MultiheadAttention(32, 4, batch_first=True),
            "mlp": nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 32)),
        }
    )

    _, mlp_only = quantize_int8(block)
    _, everything = quantize_int8(split_attention(block))

    assert (mlp_only, everything) == (2, 4)


def test_split_attention_pools_like_multihead_attention() -> None:
    """Attention pooling (a probe attending to the tokens, as SigLIP's head does) has query != key/value."""
    torch.manual_seed(0)
    block = nn.ModuleDict({"attn": nn.MultiheadAttention(32, 4, batch_first=True)})
    probe, tokens = torch.randn(2, 1, 32), torch.randn(2, 9, 32)
    expected = block["attn"](probe, tokens, tokens)[0]

    split_attention(block)

    torch.testing.assert_close(block["attn"](probe, tokens, tokens)[0], expected, rtol=1e-4, atol=1e-5)


def test_only_the_named_submodules_are_quantized() -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    model = nn.ModuleDict(
        {
            "visual": nn.ModuleDict({"attn": nn.MultiheadAttention(32, 4), "fc": nn.Linear(32, 32)}),
            "text": nn.Sequential(nn.Linear(32, 32)),
        }
    )

    swapped = quantize_submodules_int8(model, ("visual",))

    assert swapped == 3  # the split attention's two projections and the visual fc
    text_layer = model.get_submodule("text.0")
    assert isinstance(text_layer, nn.Linear) and not isinstance(text_layer, DynamicQuantizedLinear)
