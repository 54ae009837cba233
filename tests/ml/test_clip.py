"""Image-text encoders, loaded from random-weight tiny models saved in the real release formats."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import ml
from ml import tiny
from ml.encoders.base import PatchEncoder
from ml.encoders.clip import OpenClipEncoder
from ml.loader import FAMILIES
from ml.sources import ChecksumMismatch, ModelNotInstalled, sha256_path
from ml.specs import ModelSpec, load_spec

TEXTS = ["a red square", "a blue circle on white", "x", "a much longer caption about a green triangle at dusk"]
FULL_PACK = ["clip-vit-b-32-laion2b", "blip-caption-base", "blip-vqa-base", "biomedclip"]

BUILDERS: dict[str, Callable[[Path], ModelSpec]] = {
    "open_clip": lambda out: tiny.build_tiny_open_clip(out),
    "open_clip-timm-hf-text": lambda out: tiny.build_tiny_open_clip(
        out, arch_config=tiny.TINY_BIOMEDCLIP_CONFIG, name="tiny-biomedclip"
    ),
    "hf-clip": lambda out: tiny.build_tiny_hf_clip(out),
    "hf-siglip": lambda out: tiny.build_tiny_hf_siglip(out),
}


def drawn_images() -> list[Image.Image]:
    """Small non-square drawings, so resizing and cropping are part of every test."""
    images = []
    for index, (fill, shape) in enumerate([("red", "square"), ("blue", "circle"), ("green", "triangle")]):
        image = Image.new("RGB", (41 + 7 * index, 33), "white")
        draw = ImageDraw.Draw(image)
        if shape == "square":
            draw.rectangle((5, 5, 28, 28), fill=fill)
        elif shape == "circle":
            draw.ellipse((8, 3, 38, 30), fill=fill)
        else:
            draw.polygon([(4, 30), (30, 2), (50, 30)], fill=fill)
        images.append(image)
    images.append(Image.new("L", (20, 64), 128))  # grey, single channel, tall
    return images


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModelSpec]]:
    """Each tiny model built once for this module (building costs more than the tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield {kind: build(tmp_path_factory.mktemp(kind)) for kind, build in BUILDERS.items()}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_tiny_encoder_honours_the_patch_encoder_contract(kind: str, built: dict[str, ModelSpec]) -> None:
    spec = built[kind]
    assert spec.extra["pack"] == "tiny" and spec.source.startswith("file:")
    encoder: Any = ml.load(spec.name, spec=spec)
    assert isinstance(ml.load(spec.name, spec=spec), PatchEncoder)
    images = drawn_images()
    progress: list[tuple[int, int]] = []

    image_vectors = encoder.encode_images(images, batch_size=3, on_progress=lambda d, t: progress.append((d, t)))
    text_vectors = encoder.encode_texts(TEXTS)
    pooled, patches = encoder.encode_image_patches(images)

    assert progress == [(3, 4), (4, 4)]
    assert image_vectors.shape == (4, encoder.dim) and text_vectors.shape == (4, encoder.dim)
    assert encoder.dim == spec.extra["dim"]
    assert patches.shape == (4, 4, 4, encoder.dim), "32 px / 8 px patches (timm: 64 px / 16 px) -> a 4 x 4 grid"
    for vectors in (image_vectors, text_vectors, pooled, patches):
        assert vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=-1), 1, atol=1e-5)
    assert np.allclose(pooled, image_vectors, atol=1e-5), "the patch pass returns the ordinary global embedding"
    assert not np.allclose(image_vectors[0], image_vectors[1], atol=1e-3), "different images, different vectors"
    assert np.array_equal(encoder.encode_images(images), encoder.encode_images(images))
    assert np.array_equal(encoder.encode_texts(TEXTS), text_vectors)
    assert encoder.logit_scale > 0
    assert encoder.encode_images([]).shape == (0, encoder.dim)
    assert encoder.encode_image_patches([])[1].shape == (0, 4, 4, encoder.dim)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_batches_equal_items_one_by_one(kind: str, built: dict[str, ModelSpec]) -> None:
    encoder = ml.load(built[kind].name, spec=built[kind])
    images = drawn_images()
    batched_images = encoder.encode_images(images, batch_size=4)
    single_images = np.concatenate([encoder.encode_images([image]) for image in images])
    batched_texts = encoder.encode_texts(TEXTS, batch_size=4)
    single_texts = np.concatenate([encoder.encode_texts([text]) for text in TEXTS])
    _, batched_patches = encoder.encode_image_patches(images, batch_size=4)
    _, single_patches = encoder.encode_image_patches(images, batch_size=1)
    assert np.allclose(batched_images, single_images, atol=1e-5)
    assert np.allclose(batched_texts, single_texts, atol=1e-5), "padding must not change a text's embedding"
    assert np.allclose(batched_patches, single_patches, atol=1e-5)


def _open_clip_reference(model: Any, images: list[Image.Image], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings computed with open_clip's own transforms and tokenizer, straight from the in-memory model."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=tiny.TINY_TEXT_LENGTH)
    with torch.no_grad():
        image_vectors = model.encode_image(torch.stack([transform(image) for image in images]), normalize=True)
        text_vectors = model.encode_text(tokenizer(texts), normalize=True)
    return image_vectors.numpy(), text_vectors.numpy()


def test_open_clip_saved_in_hub_format_loads_back_to_the_same_model(tmp_path: Path) -> None:
    model: Any = tiny.random_open_clip(tiny.TINY_OPEN_CLIP_CONFIG, seed=7)
    images = drawn_images()
    reference_images, reference_texts = _open_clip_reference(model, images, TEXTS)
    spec = tiny.save_open_clip(model, tmp_path, model_cfg=tiny.TINY_OPEN_CLIP_CONFIG, name="round-trip")

    config = json.loads((tmp_path / "open_clip_config.json").read_text())
    assert set(config) == {"model_cfg", "preprocess_cfg"}
    encoder = ml.load(spec.name, spec=spec)

    assert np.allclose(encoder.encode_images(images), reference_images, atol=1e-5)
    assert np.allclose(encoder.encode_texts(TEXTS), reference_texts, atol=1e-5)
    assert encoder.logit_scale == pytest.approx(model.logit_scale.detach().exp().item())


def test_checkpoint_file_with_a_named_architecture_loads_too(tmp_path: Path, built: dict[str, ModelSpec]) -> None:
    """Without open_clip_config.json the spec's ``architecture`` names the open_clip config (here the tiny one,
    registered under a test name, since a real architecture is too big to build in a test)."""
    import open_clip

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "tiny-test-arch.json").write_text(json.dumps(tiny.TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(config_dir)
    source = Path(built["open_clip"].source.removeprefix("file:")) / "open_clip_model.safetensors"
    spec = ModelSpec(
        name="tiny-checkpoint-file",
        version="1",
        family="open_clip",
        source=f"file:{source}",
        sha256=sha256_path(source),
        preprocessing={"architecture": "tiny-test-arch"},
    )
    from_file = ml.load(spec.name, spec=spec)
    from_dir = ml.load(built["open_clip"].name, spec=built["open_clip"])
    assert np.allclose(from_file.encode_texts(TEXTS), from_dir.encode_texts(TEXTS), atol=1e-6)


def test_tokens_patch_method_matches_open_clips_own_intermediates(built: dict[str, ModelSpec]) -> None:
    spec = built["open_clip"]
    encoder = OpenClipEncoder(Path(spec.source[5:]), spec=spec, patch_method="tokens")
    images = drawn_images()
    _, patches = encoder.encode_image_patches(images)
    pixels = torch.stack([encoder.preprocess(image) for image in images])
    with torch.no_grad():
        last = encoder.model.visual.forward_intermediates(
            pixels, indices=1, normalize_intermediates=True, output_fmt="NLC", intermediates_only=True
        )["image_intermediates"][-1]
        expected = torch.nn.functional.normalize(last @ encoder.model.visual.proj, dim=-1)
    assert np.allclose(patches.reshape(4, 16, -1), expected.numpy(), atol=1e-5)


def test_maskclip_patches_are_the_last_block_with_each_token_attending_to_itself(built: dict[str, ModelSpec]) -> None:
    """The encoder masks attention; this reference writes MaskCLIP's value path out by hand."""
    spec = built["open_clip"]
    encoder = ml.load(spec.name, spec=spec)
    assert encoder.patch_method == "maskclip"
    images = drawn_images()
    _, patches = encoder.encode_image_patches(images)

    visual = encoder.model.visual
    pixels = torch.stack([encoder.preprocess(image) for image in images])
    with torch.no_grad():
        before_last = visual.forward_intermediates(
            pixels, indices=[len(visual.transformer.resblocks) - 2], output_fmt="NLC", output_extra_tokens=True
        )
        hidden = torch.cat([before_last["image_intermediates_prefix"][0], before_last["image_intermediates"][0]], 1)
        block = visual.transformer.resblocks[-1]
        width = hidden.shape[-1]
        value = torch.nn.functional.linear(
            block.ln_1(hidden), block.attn.in_proj_weight[2 * width :], block.attn.in_proj_bias[2 * width :]
        )
        hidden = hidden + block.attn.out_proj(value)
        hidden = hidden + block.mlp(block.ln_2(hidden))
        expected = torch.nn.functional.normalize(visual.ln_post(hidden[:, 1:]) @ visual.proj, dim=-1)
    assert np.allclose(patches.reshape(4, 16, -1), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["open_clip", "hf-clip"])
def test_bf16_precision_stays_close_to_fp32(kind: str, built: dict[str, ModelSpec]) -> None:
    spec = built[kind]
    encoder_class = type(ml.load(spec.name, spec=spec))
    fp32 = ml.load(spec.name, spec=spec)
    bf16 = encoder_class(Path(spec.source[5:]), spec=spec, precision="bf16")
    images = drawn_images()
    assert np.abs(bf16.encode_images(images) - fp32.encode_images(images)).max() < 0.05
    assert np.abs(bf16.encode_image_patches(images)[1] - fp32.encode_image_patches(images)[1]).max() < 0.05
    assert bf16.encode_texts(TEXTS).dtype == np.float32


@pytest.mark.parametrize("kind", ["open_clip", "hf-clip", "hf-siglip", "open_clip-timm-hf-text"])
def test_int8_quantizes_the_image_tower_only_and_stays_close_to_fp32(kind: str, built: dict[str, ModelSpec]) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    spec = built[kind]
    fp32 = ml.load(spec.name, spec=spec)
    int8 = type(fp32)(Path(spec.source[5:]), spec=spec, precision="int8")
    quantized = [name for name, m in int8.model.named_modules() if isinstance(m, DynamicQuantizedLinear)]
    image_side = ("visual",) if kind.startswith("open_clip") else type(int8).image_modules
    assert quantized and all(name.split(".")[0] in image_side for name in quantized)
    images = drawn_images()
    cosine = np.sum(int8.encode_images(images) * fp32.encode_images(images), axis=1)
    assert cosine.min() > 0.98
    assert np.array_equal(int8.encode_texts(TEXTS), fp32.encode_texts(TEXTS))
    pooled, patches = int8.encode_image_patches(images)
    assert np.allclose(pooled, int8.encode_images(images), atol=1e-3)
    assert patches.shape == fp32.encode_image_patches(images)[1].shape and np.isfinite(patches).all()


def test_int8_is_refused_off_the_cpu(built: dict[str, ModelSpec]) -> None:
    spec = built["open_clip"]
    with pytest.raises(ValueError, match="int8 runs on the CPU only"):
        OpenClipEncoder(Path(spec.source[5:]), spec=spec, device="meta", precision="int8")


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    spec = tiny.build_tiny_open_clip(tmp_path, name="tiny-tampered")
    weights = tmp_path / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="tiny-tampered"):
        ml.load(spec.name, spec=spec)


@pytest.mark.parametrize("name", FULL_PACK)
def test_full_pack_spec_says_how_to_install_it(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLP_MODEL_CACHE", str(tmp_path))
    spec = load_spec(name)
    assert spec.extra["pack"] == "full" and spec.licence
    assert spec.sha256 == "unpinned" and spec.extra["sha256_policy"] == "pin-on-pull"
    assert spec.family in FAMILIES
    with pytest.raises(ModelNotInstalled, match=rf"manage\.py models pull {name}$"):
        ml.load(name, spec=spec)
