"""``train_image_tower`` then ``evaluate search`` on a small catalog drawn with Pillow."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image, ImageDraw

import ml
from apps.registry.models import ModelVersion
from ml.lit.release import read_spec

pytestmark = pytest.mark.django_db
COLOURS = {"Red": (200, 30, 30), "Blue": (30, 60, 200), "Green": (30, 160, 60), "Black": (20, 20, 20)}
TYPES = ("Tshirts", "Shoes", "Watches")


def _draw(kind: str, colour: tuple[int, int, int], offset: int) -> Image.Image:
    image = Image.new("RGB", (96, 128), "white")  # catalog photos: a product on a white background
    draw = ImageDraw.Draw(image)
    box = (14 + offset, 30, 70 + offset, 96)
    if kind == "Tshirts":
        draw.rectangle(box, fill=colour)
        draw.rectangle((box[0] - 10, 30, box[2] + 10, 50), fill=colour)
    elif kind == "Shoes":
        draw.polygon([(box[0], box[3]), (box[2] + 10, box[3]), (box[0], box[1] + 30)], fill=colour)
    else:
        draw.ellipse(box, fill=colour)
    return image


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for index in range(48):
        colour = list(COLOURS)[index % 4]
        kind = TYPES[(index // 4) % 3]
        gender = "Men" if index % 2 else "Women"
        product_id = str(1000 + index)
        _draw(kind, COLOURS[colour], offset=index % 7).save(images / f"{product_id}.jpg")
        rows.append(
            {
                "id": product_id,
                "gender": gender,
                "articleType": kind,
                "baseColour": colour,
                "usage": "Casual",
                "productDisplayName": f"Brand{index % 5} {gender} {colour} {kind}",
                "image": f"images/{product_id}.jpg",
            }
        )
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    rows.append({**rows[0], "id": "broken", "image": "images/broken.jpg"})
    path = tmp_path / "catalog.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _train(catalog: Path, out: Path, *extra: str) -> str:
    stdout = StringIO()
    call_command(
        "train_image_tower",
        "--catalog", str(catalog),
        "--images", str(catalog.parent / "images"),
        "--out", str(out),
        "--image-size", "32",
        "--batch-size", "16",
        "--time-budget-min", "0",
        *extra,
        stdout=stdout,
        stderr=StringIO(),
    )  # fmt: skip
    return stdout.getvalue()


def test_train_registers_a_loadable_tower_and_evaluate_reports_the_issue_shape(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "tower"
    output = _train(catalog, out, "--epochs", "2", "--holdout", "12", "--name", "tiny-tower")

    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("registered tiny-tower@")
    version = ModelVersion.objects.get(name="tiny-tower")
    assert last_line == f"registered {version.label}" and version.verified_ok is True
    assert version.metrics["epochs"] == 2 and "R@10" in version.metrics["validation"]

    spec = read_spec(out)
    encoder = ml.load(spec.name, spec=spec)
    image = Image.open(catalog.parent / "images" / "1000.jpg")
    vectors = encoder.encode_images([image, image])
    assert vectors.shape == (2, 384)
    assert encoder.encode_texts(["Red Tshirts"]).shape == (1, 384)
    _, patches = encoder.encode_image_patches([image])
    assert patches.shape[0] == 1 and patches.shape[-1] == 384

    holdout = out / "holdout.csv"
    for model in (version.label, str(out)):
        report_path = tmp_path / "report.json"
        call_command(
            "evaluate", "search", "--catalog", str(holdout), "--images", str(catalog.parent / "images"),
            "--model", model, "--json", str(report_path), stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip
        report = json.loads(report_path.read_text())
        assert set(report) == {"text_to_image", "image_to_image", "attributes", "n_products"}
        assert set(report["text_to_image"]) == {"R@1", "R@5", "R@10", "MRR"}
        assert set(report["attributes"]) == {"articleType", "baseColour", "gender", "usage"}
        assert report["n_products"] == 12
        assert 0 <= report["image_to_image"]["P@10"] <= 1


def test_a_catalog_without_titles_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "catalog.csv").write_text("id,image\n1,images/1.jpg\n")
    with pytest.raises(CommandError, match="lacks the column"):
        _train(tmp_path / "catalog.csv", tmp_path / "out", "--epochs", "1")
