"""Explanations drawn as images (Pillow + numpy only): heatmap overlays, detection boxes, modality attribution bars.

Heatmaps use viridis (van der Walt and Smith, matplotlib's default map): perceptually uniform, readable by people with
the common colour-vision deficiencies and in greyscale. Dark purple is the map's lowest value, yellow its highest.
Boxes and bars use the Okabe-Ito palette, chosen to stay distinct under colour-vision deficiencies. Every function is
deterministic: the same inputs give the same pixels and the same PNG bytes.
"""

from __future__ import annotations

import io
import logging
import math
import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ml.detectors import Detection
from ml.explain.maps import Heatmap

logger = logging.getLogger(__name__)

# matplotlib's viridis (lib/matplotlib/_cm_listed.py), every 8th of its 256 entries plus the last; linear
# interpolation between them stays within about 2/255 per channel of the full table (spot-checked where it bends).
_VIRIDIS_ANCHORS = np.array(
    [
        (0.267004, 0.004874, 0.329415),
        (0.277018, 0.050344, 0.375715),
        (0.282327, 0.094955, 0.417331),
        (0.282884, 0.135920, 0.453427),
        (0.278826, 0.175490, 0.483397),
        (0.270595, 0.214069, 0.507052),
        (0.258965, 0.251537, 0.524736),
        (0.244972, 0.287675, 0.537260),
        (0.229739, 0.322361, 0.545706),
        (0.214298, 0.355619, 0.551184),
        (0.199430, 0.387607, 0.554642),
        (0.185556, 0.418570, 0.556753),
        (0.172719, 0.448791, 0.557885),
        (0.160665, 0.478540, 0.558115),
        (0.149039, 0.508051, 0.557250),
        (0.137770, 0.537492, 0.554906),
        (0.127568, 0.566949, 0.550556),
        (0.120565, 0.596422, 0.543611),
        (0.120638, 0.625828, 0.533488),
        (0.132268, 0.655014, 0.519661),
        (0.157851, 0.683765, 0.501686),
        (0.196571, 0.711827, 0.479221),
        (0.246070, 0.738910, 0.452024),
        (0.304148, 0.764704, 0.419943),
        (0.369214, 0.788888, 0.382914),
        (0.440137, 0.811138, 0.340967),
        (0.515992, 0.831158, 0.294279),
        (0.595839, 0.848717, 0.243329),
        (0.678489, 0.863742, 0.189503),
        (0.762373, 0.876424, 0.137064),
        (0.845561, 0.887322, 0.099702),
        (0.926106, 0.897330, 0.104071),
        (0.993248, 0.906157, 0.143936),
    ]
)
_ANCHOR_POSITIONS = np.array([*range(0, 256, 8), 255], dtype=np.float64)
VIRIDIS: np.ndarray = np.rint(
    np.stack([np.interp(np.arange(256), _ANCHOR_POSITIONS, _VIRIDIS_ANCHORS[:, c]) for c in range(3)], axis=1) * 255
).astype(np.uint8)
"""The colour map as a lookup table: uint8 [256, 3], entry 0 for the lowest value, 255 for the highest."""

# Okabe-Ito (without black): blue, orange, bluish green, vermillion, reddish purple, sky blue, yellow.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (213, 94, 0),
    (204, 121, 167),
    (86, 180, 233),
    (240, 228, 66),
)
MODALITY_COLOURS: dict[str, tuple[int, int, int]] = {"image": PALETTE[0], "text": PALETTE[1]}
EMPTY_BAR = (221, 221, 221)


def colourise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> viridis colours, uint8 [..., 3]."""
    indices = np.rint(np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * 255).astype(np.intp)
    return VIRIDIS[indices]


def overlay(
    image: Image.Image,
    heatmap: Heatmap,
    *,
    alpha: float = 0.45,
    value_range: tuple[float, float] | None = None,
    colour_bar: bool = False,
) -> Image.Image:
    """``heatmap`` drawn over ``image`` (RGB, same size): colour = viridis of the normalised map, blended with
    weight ``alpha`` (0 shows the image only, 1 the map only).

    The map is upsampled bilinearly from its patch grid to the image size (patch centres land on their pixels'
    centres), so it reads as a smooth field rather than blocks; bilinear rather than bicubic because bicubic rings,
    drawing cold halos around hot patches that the model never produced. ``value_range`` fixes the scale (see
    ``Heatmap.normalised``); by default the map's own minimum is dark purple and its maximum yellow. Give the image
    the map covers (``model_view``). No text is drawn; ``colour_bar`` appends a narrow vertical scale on the right
    (yellow at the top), widening the result.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    base = image.convert("RGB")
    field = Image.fromarray(heatmap.normalised(value_range)).resize(base.size, Image.Resampling.BILINEAR)
    colours = colourise(np.asarray(field)).astype(np.float32)
    blended = np.asarray(base, dtype=np.float32) * (1.0 - alpha) + colours * alpha
    result = Image.fromarray(np.rint(blended).astype(np.uint8))
    return _with_colour_bar(result) if colour_bar else result


def _with_colour_bar(image: Image.Image) -> Image.Image:
    bar_width, gap = max(6, round(image.width * 0.04)), max(2, round(image.width * 0.01))
    canvas = Image.new("RGB", (image.width + gap + bar_width, image.height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    scale = np.linspace(1.0, 0.0, image.height, dtype=np.float32)[:, None].repeat(bar_width, axis=1)
    canvas.paste(Image.fromarray(colourise(scale)), (image.width + gap, 0))
    return canvas


def label_colour(label: str) -> tuple[int, int, int]:
    """The box colour of a detection label: fixed per label (a checksum of its text), the same on every image."""
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def draw_boxes(image: Image.Image, detections: Iterable[Detection], *, labels: bool = True) -> Image.Image:
    """``detections`` drawn on a copy of ``image`` (RGB): one rectangle per detection in its label's colour, with
    "label score" on a filled tab above the box (inside it when there is no room above).

    Boxes are in the image's pixels; parts outside the image are clipped to its edge, and boxes wholly outside are
    left out. Line width and text size grow with the image.
    """
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = max(2, round(min(width, height) / 200))
    font = ImageFont.load_default(size=max(10, round(min(width, height) / 40)))
    for detection in detections:
        x0, x1 = sorted((detection.box[0], detection.box[2]))
        y0, y1 = sorted((detection.box[1], detection.box[3]))
        if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
            logger.debug("box %s of %r lies outside the %dx%d image", detection.box, detection.label, width, height)
            continue
        left, top = round(min(max(x0, 0), width - 1)), round(min(max(y0, 0), height - 1))
        right, bottom = round(min(max(x1, 0), width - 1)), round(min(max(y1, 0), height - 1))
        colour = label_colour(detection.label)
        draw.rectangle((left, top, right, bottom), outline=colour, width=line)
        if labels:
            _draw_tab(draw, f"{detection.label} {detection.score:.2f}", (left, top), colour, font, canvas.size)
    return canvas


def _draw_tab(
    draw: ImageDraw.ImageDraw,
    text: str,
    corner: tuple[int, int],
    colour: tuple[int, int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: tuple[int, int],
) -> None:
    pad = 2
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    tab_width, tab_height = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    left = max(0, min(corner[0], size[0] - tab_width))
    top = corner[1] - tab_height if corner[1] - tab_height >= 0 else corner[1]
    draw.rectangle((left, top, left + tab_width - 1, top + tab_height - 1), fill=colour)
    draw.text((left + pad - x0, top + pad - y0), text, fill=_text_colour(colour), font=font)


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (WCAG relative luminance)."""

    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(channel) for channel in background)
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    # Contrast with black (L + 0.05) / 0.05 beats contrast with white 1.05 / (L + 0.05) above L ~ 0.18.
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


def modality_colours(names: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """The bar colour of each modality: image blue, text orange, others the next unused palette colours in order."""
    names = list(names)
    reserved = {MODALITY_COLOURS[name] for name in names if name in MODALITY_COLOURS}
    spare = iter([colour for colour in PALETTE if colour not in reserved])
    return {name: MODALITY_COLOURS[name] if name in MODALITY_COLOURS else next(spare) for name in names}


def attribution_bar(shares: dict[str, float], *, width: int = 240, bar_height: int = 14) -> Image.Image:
    """A horizontal stacked bar of modality shares (e.g. ``{"image": 0.8, "text": 0.2}``, a fusion explanation's
    ``modality_attribution``) with a legend below: a swatch and "name NN%" per modality.

    Segment widths are proportional to the shares (normalised to sum to 1, rounded so they fill ``width`` exactly),
    in the order given. All-zero shares (no evidence either way) draw an empty grey bar.
    """
    if width < 1 or bar_height < 1:
        raise ValueError(f"a bar needs a positive size, got {width} x {bar_height}")
    if len(shares) > len(PALETTE):
        raise ValueError(f"at most {len(PALETTE)} modalities fit the palette, got {len(shares)}")
    amounts = np.array([float(value) for value in shares.values()], dtype=np.float64)
    if not np.isfinite(amounts).all() or (amounts < 0).any():
        raise ValueError(f"modality shares must be finite and non-negative, got {shares}")
    total = float(amounts.sum())
    fractions = amounts / total if total > 0 else np.zeros_like(amounts)
    colours = modality_colours(shares)
    font = ImageFont.load_default(size=11)
    text_height = math.ceil(font.getbbox("Ag%")[3]) if isinstance(font, ImageFont.FreeTypeFont) else 11
    canvas = Image.new("RGB", (width, bar_height + 4 + text_height + 2), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width - 1, bar_height - 1), fill=EMPTY_BAR)
    edges = np.rint(np.concatenate([[0.0], np.cumsum(fractions)]) * width).astype(int)
    for name, start, end in zip(shares, edges[:-1], edges[1:], strict=True):
        if end > start:
            draw.rectangle((int(start), 0, int(end) - 1, bar_height - 1), fill=colours[name])
    x, y = 0, bar_height + 4
    for name, fraction in zip(shares, fractions, strict=True):
        draw.rectangle((x, y + 1, x + text_height - 2, y + text_height - 1), fill=colours[name])
        x += text_height + 2
        text = f"{name} {fraction:.0%}"
        draw.text((x, y), text, fill=(0, 0, 0), font=font)
        x += int(draw.textlength(text, font=font)) + 10
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (no metadata, so the bytes depend on the pixels only)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
