"""Product catalogs in the layout of ``products/fashion``: ``catalog.csv`` plus one image per product."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

TITLE_FIELD = "productDisplayName"
IMAGE_FIELD = "image"
ID_FIELD = "id"
# Attributes the tower learns and the evaluation reports; a catalog without one of them simply skips it.
ATTRIBUTE_FIELDS = ("articleType", "baseColour", "gender", "usage")
# What makes two products look-alikes (image->image search, the tower's look-alike loss): same type, same colour.
LOOKALIKE_FIELDS = ("articleType", "baseColour")
# Attribute values that mean "unknown" in such catalogs; they are neither learned nor scored.
MISSING_VALUES = {"", "NA", "N/A", "nan", "None"}


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    image: Path
    attributes: dict[str, str] = field(default_factory=dict)


def read_catalog(csv_path: Path, images_dir: Path | None = None) -> list[Product]:
    """Products with a title and an existing image file, in file order.

    ``image`` is resolved against ``images_dir`` when given; a value that names a sub-path (``images/1.jpg``)
    is tried as written relative to the CSV's folder first, then by file name inside ``images_dir``.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CatalogError(f"catalog {csv_path} does not exist")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = {ID_FIELD, TITLE_FIELD} - columns
        if missing:
            raise CatalogError(f"catalog {csv_path} lacks the column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    products = []
    for row in rows:
        title = (row.get(TITLE_FIELD) or "").strip()
        image = _image_path(row, csv_path.parent, images_dir)
        if not title or image is None:
            continue
        attributes = {
            name: row[name].strip()
            for name in ATTRIBUTE_FIELDS
            if name in row and row[name] is not None and row[name].strip() not in MISSING_VALUES
        }
        products.append(Product(id=str(row[ID_FIELD]).strip(), title=title, image=image, attributes=attributes))
    if not products:
        raise CatalogError(f"catalog {csv_path} has no product with both a title and an image file")
    return products


def _image_path(row: dict[str, str], base: Path, images_dir: Path | None) -> Path | None:
    value = (row.get(IMAGE_FIELD) or "").strip() or f"{row[ID_FIELD]}.jpg"
    candidates = [base / value]
    if images_dir is not None:
        candidates = [Path(images_dir) / Path(value).name, Path(images_dir) / value, *candidates]
    return next((path for path in candidates if path.is_file()), None)


def attribute_vocabulary(products: list[Product]) -> dict[str, list[str]]:
    """Each attribute's distinct values, sorted."""
    vocabulary: dict[str, set[str]] = {}
    for product in products:
        for name, value in product.attributes.items():
            vocabulary.setdefault(name, set()).add(value)
    return {name: sorted(values) for name, values in vocabulary.items()}
