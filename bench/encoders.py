"""ViT-B-32 encoding speed against the machine's FLOP limit, and reduced precision (bf16, int8) against fp32.

The model is open_clip's full-size ViT-B-32 with random weights (``ml.tiny.build_open_clip_random``), saved in the
release format and loaded through ``ml.load``, so the timed code is the platform's own encoder. Random weights cost
exactly what trained ones do; only the cosine figures are weaker evidence than with trained weights (see README).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.flop_counter import FlopCounterMode

import ml
from bench import BenchResult, Figure, Settings, measure, measure_interleaved
from bench.machine import MachineLimit, gemm_gflops
from ml import tiny
from ml.encoders.clip import OpenClipEncoder
from ml.encoders.quantize import quantize_int8, split_attention

logger = logging.getLogger(__name__)

ARCH = "ViT-B-32"
# FLOPs of one 224 px ViT-B-32 image as the issue states it (open_clip's profile: 4.41 GMACs, a MAC being 2 FLOPs).
ISSUE_IMAGE_GFLOP = 8.82
PEAK_TARGET = 0.5
SPEEDUP_TARGET = 1.5
COSINE_TARGET = 0.99
BATCH_SIZES = (1, 16)
COLOURS = ("red", "green", "blue", "yellow", "black", "white", "orange", "purple", "grey", "brown")
THINGS = ("shoe", "jacket", "lamp", "chair", "mug", "backpack", "watch", "bicycle", "sofa", "kettle")
PLACES = ("on a white background", "in a shop window", "on a wooden table", "outdoors at dusk", "on a model")


# --- inputs ---------------------------------------------------------------------------------------------------------
def synthetic_images(count: int, *, seed: int = 0, size: tuple[int, int] = (320, 240)) -> list[Image.Image]:
    """Natural-ish photos without data files: a colour gradient, a few filled shapes, sensor noise and a slight blur.

    They are larger than 224 px and not square, so preprocessing resizes and crops as it does for uploads.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    images = []
    for _ in range(count):
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0.0, 1.0, height)[:, None, None]
        pixels = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).copy()
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            box = (x0, y0, x0 + int(rng.integers(20, width // 2)), y0 + int(rng.integers(20, height // 2)))
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                draw.ellipse(box, fill=fill)
            else:
                draw.rectangle(box, fill=fill)
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (height, width, 3))
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
        images.append(image)
    return images


def synthetic_captions(count: int, *, seed: int = 0) -> list[str]:
    """Product-style captions of a few words, as shoppers and moderators type them."""
    rng = np.random.default_rng(seed)
    return [
        f"a {rng.choice(COLOURS)} {rng.choice(THINGS)} {rng.choice(PLACES)}"
        + (f" next to a {rng.choice(THINGS)}" if rng.random() < 0.5 else "")
        for _ in range(count)
    ]


def load_open_clip(workdir: Path, *, use_tiny: bool) -> OpenClipEncoder:
    """ViT-B-32 with random weights (or the tiny open_clip), built in ``workdir`` and loaded through ``ml.load``."""
    started = time.perf_counter()
    if use_tiny:
        spec = tiny.build_tiny_open_clip(workdir / "tiny-open-clip")
    else:
        spec = tiny.build_open_clip_random(workdir / ARCH.lower(), ARCH)
    encoder: OpenClipEncoder = ml.load(spec.name, spec=spec)
    logger.info("built and loaded %s in %.1f s", spec.name, time.perf_counter() - started)
    return encoder


# --- FLOPs ----------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def mha_fastpath(enabled: bool) -> Iterator[None]:
    """Switch ``nn.MultiheadAttention``'s fused inference kernel on or off for the duration."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def count_flops(forward: Callable[[], object]) -> int:
    """FLOPs of one call as ``FlopCounterMode`` counts them (a multiply-add is 2 FLOPs).

    The fused MHA kernel is one op the counter has no formula for, so it is switched off while counting: the
    projections and attention products then run as matmuls the counter sees. Element-wise ops are not counted.
    """
    counter = FlopCounterMode(display=False)
    with mha_fastpath(False), torch.inference_mode(), counter:
        forward()
    return int(counter.get_total_flops())


# --- encoding speed -------------------------------------------------------------------------------------------------
def run_encoders(
    settings: Settings, encoder: OpenClipEncoder, machine: MachineLimit, *, try_compile: bool = False
) -> BenchResult:
    """Images/s and texts/s at batch 1 and 16, forward-only and end to end, as GFLOP/s and fraction of peak."""
    result = BenchResult()
    images = synthetic_images(max(BATCH_SIZES))
    texts = synthetic_captions(max(BATCH_SIZES))
    pixels = preprocess(encoder, images)
    tokens = encoder.tokenizer(texts)
    model = encoder.model

    image_flops = count_flops(lambda: model.encode_image(pixels[:1]))
    text_flops = count_flops(lambda: model.encode_text(tokens[:1]))
    issue_figure = not settings.tiny
    image_gflop = ISSUE_IMAGE_GFLOP if issue_figure else image_flops / 1e9
    flops = {
        "image_gflop_issue": ISSUE_IMAGE_GFLOP if issue_figure else None,
        "image_gflop_counted": image_flops / 1e9,
        "text_gflop_counted_per_sequence": text_flops / 1e9,
        "text_context_length": int(tokens.shape[1]),
        "image_size": list(pixels.shape[-2:]),
    }
    result.details["flops"] = flops
    result.figures += [
        Figure("image GFLOP/image (FlopCounterMode)", image_flops / 1e9, "GFLOP", note=f"issue: {ISSUE_IMAGE_GFLOP}"),
        Figure(f"text GFLOP/{tokens.shape[1]}-token sequence", text_flops / 1e9, "GFLOP"),
    ]

    peak = machine.peak_gflops
    # The BLAS on its own, on the shape of the ViT's MLP at batch 16 (16 x 50 tokens, width 768 -> 3072) and on a
    # large square: what a model made of matmuls could reach at best on this machine.
    tokens_b16 = max(BATCH_SIZES) * (1 + encoder.grid[0] * encoder.grid[1])
    width = int(model.visual.transformer.width)
    mlp_gemm = gemm_gflops(tokens_b16, width, 4 * width, repeats=settings.repeats)
    square_gemm = gemm_gflops(2048, 2048, 2048, repeats=settings.repeats)
    result.details["gemm"] = {
        "mlp_shape": [tokens_b16, width, 4 * width],
        "mlp_shape_gflops": mlp_gemm,
        "square_2048_gflops": square_gemm,
    }
    result.figures.append(
        Figure(
            f"fp32 GEMM {tokens_b16}x{width}x{4 * width} fraction of peak",
            mlp_gemm / peak,
            "of peak",
            note=f"{mlp_gemm:.1f} GFLOP/s; 2048^3 GEMM {square_gemm / peak:.2f} of peak",
        )
    )
    timings: dict[str, Any] = {}
    for batch in BATCH_SIZES:
        image_batch, pixel_batch, text_batch, token_batch = (
            images[:batch],
            pixels[:batch],
            texts[:batch],
            tokens[:batch],
        )
        runs: dict[str, Callable[[], object]] = {
            "image_forward": functools.partial(_inference, model.encode_image, pixel_batch),
            "image_end_to_end": functools.partial(encoder.encode_images, image_batch, batch_size=batch),
            "image_preprocess": functools.partial(preprocess, encoder, image_batch),
            "text_forward": functools.partial(_inference, model.encode_text, token_batch),
            "text_end_to_end": functools.partial(encoder.encode_texts, text_batch, batch_size=batch),
        }
        for name, call in runs.items():
            timing = measure(call, warmup=settings.warmup, repeats=settings.repeats)
            per_s = batch / timing.median_s
            gflop = image_gflop if name.startswith("image") else text_flops / 1e9
            achieved = per_s * gflop if "preprocess" not in name else None
            timings[f"{name}_b{batch}"] = {
                **timing.to_dict(),
                "batch": batch,
                "items_per_s": per_s,
                "gflops": achieved,
                "peak_fraction": achieved / peak if achieved is not None else None,
            }
            logger.info("%s batch %d: %.2f items/s", name, batch, per_s)
    result.details["timings"] = timings

    for batch in BATCH_SIZES:
        forward = timings[f"image_forward_b{batch}"]
        result.figures.append(
            Figure(
                f"image fwd b{batch} fraction of peak",
                forward["peak_fraction"],
                "of peak",
                target=f">= {PEAK_TARGET:.0%}" if batch == max(BATCH_SIZES) else None,
                met=forward["peak_fraction"] >= PEAK_TARGET if batch == max(BATCH_SIZES) else None,
                note=f"{forward['items_per_s']:.2f} img/s, {forward['gflops']:.1f} of {peak:.1f} GFLOP/s",
            )
        )
    for batch in BATCH_SIZES:
        end_to_end, preprocessing = timings[f"image_end_to_end_b{batch}"], timings[f"image_preprocess_b{batch}"]
        result.figures.append(
            Figure(
                f"image end-to-end b{batch}",
                end_to_end["items_per_s"],
                "img/s",
                note=f"PIL preprocessing alone {preprocessing['items_per_s']:.0f} img/s",
            )
        )
    for batch in BATCH_SIZES:
        forward, end_to_end = timings[f"text_forward_b{batch}"], timings[f"text_end_to_end_b{batch}"]
        result.figures.append(
            Figure(
                f"text fwd b{batch} fraction of peak",
                forward["peak_fraction"],
                "of peak",
                note=f"{forward['items_per_s']:.2f} txt/s forward, {end_to_end['items_per_s']:.2f} end to end",
            )
        )

    variants = _speedup_variants(settings, encoder, pixels, machine, try_compile=try_compile)
    result.details["image_forward_b16_variants"] = variants
    for name, variant in variants.items():
        if name != "plain" and "vs_plain" in variant:
            figure = Figure(f"image fwd b16: {name}", variant["vs_plain"], "x plain", note=variant["note"])
            result.figures.append(figure)
    return result


def preprocess(encoder: OpenClipEncoder, images: list[Image.Image]) -> torch.Tensor:
    """The encoder's PIL preprocessing (resize, crop, normalise) of a batch, as one tensor."""
    return torch.stack([encoder.preprocess(image) for image in images])


def _inference(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return forward(inputs)


def _speedup_variants(
    settings: Settings,
    encoder: OpenClipEncoder,
    pixels: torch.Tensor,
    machine: MachineLimit,
    *,
    try_compile: bool,
) -> dict[str, dict[str, Any]]:
    """Cheap changes to the image forward at batch 16, timed in rounds with the plain forward on the same pixels;
    each entry has ``vs_plain`` (above 1 is faster). Nothing is kept."""
    visual = encoder.model.visual
    notes: dict[str, str] = {"plain": "model.encode_image under inference_mode, as the encoder runs it"}
    calls: dict[str, Callable[[], object]] = {"plain": functools.partial(_inference, visual, pixels)}

    threads = torch.get_num_threads()
    if threads != machine.cores:

        def with_cores() -> object:
            torch.set_num_threads(machine.cores)
            try:
                return _inference(visual, pixels)
            finally:
                torch.set_num_threads(threads)

        calls[f"threads={machine.cores}"] = with_cores
        notes[f"threads={machine.cores}"] = f"torch's default was {threads}"

    def fastpath_off() -> object:
        with mha_fastpath(False):
            return _inference(visual, pixels)

    calls["MHA fastpath off"] = fastpath_off
    notes["MHA fastpath off"] = "fused nn.MultiheadAttention inference kernel disabled"

    with torch.inference_mode():
        split = split_attention(copy.deepcopy(visual))
    calls["split SDPA attention"] = functools.partial(_inference, split, pixels)
    notes["split SDPA attention"] = "MHA as nn.Linear qkv/out + scaled_dot_product_attention"

    channels_last = copy.deepcopy(visual).to(memory_format=torch.channels_last)
    calls["channels-last"] = functools.partial(
        _inference, channels_last, pixels.contiguous(memory_format=torch.channels_last)
    )
    notes["channels-last"] = "only the patch embedding is a convolution in a ViT"

    failed: dict[str, dict[str, Any]] = {}
    if try_compile:
        started = time.perf_counter()
        try:
            compiled = torch.compile(copy.deepcopy(visual))
            _inference(compiled, pixels)
        except Exception as error:  # inductor needs a C++ toolchain; a missing one is a finding, not a crash
            failed["torch.compile"] = {"note": f"failed: {error!r}"[:300]}
        else:
            calls["torch.compile"] = functools.partial(_inference, compiled, pixels)
            notes["torch.compile"] = f"compiling took {time.perf_counter() - started:.0f} s (first call)"

    timings = measure_interleaved(calls, warmup=settings.warmup, repeats=settings.repeats)
    plain = timings["plain"].median_s
    variants = {
        name: {**timing.to_dict(), "vs_plain": plain / timing.median_s, "note": notes[name]}
        for name, timing in timings.items()
    }
    if threads == machine.cores:
        variants[f"threads={machine.cores}"] = {"note": f"torch already uses {threads} threads = cores; nothing to try"}
    for name, variant in variants.items():
        logger.info("image forward b16 %s: %s", name, variant.get("vs_plain", variant["note"]))
    return {**variants, **failed}


# --- reduced precision ----------------------------------------------------------------------------------------------
def run_precision(settings: Settings, encoder: OpenClipEncoder, machine: MachineLimit) -> BenchResult:
    """bf16 and int8 image forwards against fp32 at batch 16: throughput ratio and embedding cosine."""
    result = BenchResult()
    batch = max(BATCH_SIZES)
    images = synthetic_images(8 if settings.quick else 32, seed=1)
    pixels = preprocess(encoder, images)
    timed_pixels = pixels[:batch]
    visual = encoder.model.visual

    def autocast_bf16(inputs: torch.Tensor) -> torch.Tensor:
        # What OpenClipEncoder(precision="bf16") did before it cast weights instead: kept for the comparison.
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            return visual(inputs).float()

    with torch.inference_mode():
        bf16_visual = copy.deepcopy(visual).to(torch.bfloat16)
        split_visual = split_attention(copy.deepcopy(visual))
    mlp_int8, mlp_swapped = quantize_int8(visual)
    all_int8, all_swapped = quantize_int8(split_visual)
    paths: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
        "fp32": (visual, "the encoder's default"),
        "bf16 autocast": (autocast_bf16, "torch.autocast around the fp32 tower"),
        "bf16 weights": (
            lambda x: bf16_visual(x.to(torch.bfloat16)).float(),
            "OpenClipEncoder(precision='bf16'): model and input cast to bf16",
        ),
        "int8 MLP": (mlp_int8, f"quantize_dynamic on nn.Linear: {mlp_swapped} layers (MLPs only)"),
        "int8 MLP+attention": (
            all_int8,
            f"OpenClipEncoder(precision='int8'): split attention, then quantize_dynamic: {all_swapped} layers",
        ),
    }
    timings = measure_interleaved(
        {name: functools.partial(_inference, forward, timed_pixels) for name, (forward, _) in paths.items()},
        warmup=settings.warmup,
        repeats=settings.long_repeats,
    )
    reference = _unit(_batched(visual, pixels, batch))
    measured: dict[str, Any] = {}
    for name, (forward, note) in paths.items():
        agreement = embedding_agreement(reference, _unit(_batched(forward, pixels, batch)))
        speedup = timings["fp32"].median_s / timings[name].median_s
        measured[name] = {**timings[name].to_dict(), **agreement, "speedup": speedup, "note": note}
        logger.info("%s: %.2fx fp32 at batch %d, cosine %.4f", name, speedup, batch, agreement["mean_cosine"])

    flags = machine.reduced_precision_flags
    pairwise = reference @ reference.T
    result.details = {
        # How far apart the fp32 embeddings of different images are: the scale the cosines above are read against.
        "fp32_mean_pairwise_cosine": float(pairwise[~np.eye(len(pairwise), dtype=bool)].mean()),
        "batch": batch,
        "images": len(images),
        "quantized_engine": torch.backends.quantized.engine,
        "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cpu_flags": flags,
        "paths": measured,
    }
    met_any = False
    for name, entry in measured.items():
        if name == "fp32":
            continue
        met = entry["speedup"] >= SPEEDUP_TARGET and entry["mean_cosine"] >= COSINE_TARGET
        met_any = met_any or met
        result.figures.append(
            Figure(
                f"{name} vs fp32 (b{batch})",
                entry["speedup"],
                "x",
                target=f">= {SPEEDUP_TARGET}x, cos >= {COSINE_TARGET}",
                met=met,
                note=f"cos {entry['mean_cosine']:.4f} (centred {entry['centred_mean_cosine']:.4f})",
            )
        )
    present = [flag for flag, present in flags.items() if present]
    result.figures.append(
        Figure(
            "any reduced-precision path",
            max(entry["speedup"] for name, entry in measured.items() if name != "fp32"),
            "x best",
            target=f">= {SPEEDUP_TARGET}x, cos >= {COSINE_TARGET}",
            met=met_any,
            note=f"CPU has {', '.join(present) or 'none'} of {', '.join(flags)}; different images' fp32 cosine "
            f"{result.details['fp32_mean_pairwise_cosine']:.3f}",
        )
    )
    return result


def embedding_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Row-wise cosine of unit embeddings, plain and after removing the reference's mean embedding.

    Random-weight towers map all images close to one shared direction, which makes plain cosines look better than
    they are; the centred cosine compares only what distinguishes the images.
    """
    cosines = np.sum(reference * other, axis=1)
    centre = reference.mean(axis=0, keepdims=True)
    centred = np.sum(_unit(reference - centre) * _unit(other - centre), axis=1)
    return {
        "mean_cosine": float(cosines.mean()),
        "min_cosine": float(cosines.min()),
        "centred_mean_cosine": float(centred.mean()),
    }


def _batched(forward: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor, batch: int) -> np.ndarray:
    chunks = [_inference(forward, pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    return torch.cat(chunks).float().numpy()


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
