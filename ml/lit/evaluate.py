"""Search quality of any image-text encoder on a catalog: text->image, image->image and zero-shot attributes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ml.images import ImageRejected, open_image
from ml.lit.catalog import LOOKALIKE_FIELDS, Product, attribute_vocabulary
from ml.lit.prompts import attribute_prompts
from ml.tasks.retrieval import CatalogIndex
from ml.tasks.zero_shot import prompt_ensembles

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


def holdout_split(products: list[Product], *, test_size: int, seed: int = 0) -> tuple[list[Product], list[Product]]:
    """A fixed random split: (train, test) with ``test_size`` products in test."""
    order = np.random.default_rng(seed).permutation(len(products))
    test_size = min(test_size, len(products) // 2)
    return [products[i] for i in order[test_size:]], [products[i] for i in order[:test_size]]


def encode_catalog_images(
    encoder: Any, products: list[Product], *, on_progress: Progress | None = None
) -> tuple[np.ndarray, list[Product]]:
    """Embeddings of the products' images and the products they belong to (undecodable images are left out)."""
    chunks, kept = [], []
    for start in range(0, len(products), 64):
        images = []
        for product in products[start : start + 64]:
            try:
                images.append(open_image(product.image))
            except ImageRejected as error:
                logger.warning("product %s left out: %s", product.id, error)
                continue
            kept.append(product)
        if images:
            chunks.append(encoder.encode_images(images))
        if on_progress is not None:
            on_progress("encoding images", min(start + 64, len(products)), len(products))
    return np.concatenate(chunks).astype(np.float32), kept


def zero_shot_classifier(encoder: Any, attribute: str, values: list[str]) -> np.ndarray:
    """[len(values), D]: each value's prompt-ensemble embedding, L2-normalised."""
    return prompt_ensembles(encoder, [attribute_prompts(attribute, value) for value in values])


def index_catalog(encoder: Any, products: list[Product], images: np.ndarray, titles: np.ndarray) -> CatalogIndex:
    """The search index of ``products`` with their image and title embeddings: the titles as the hubness bank,
    and zero-shot classifiers over the catalog's values of each look-alike attribute (``ml.tasks.retrieval``)."""
    vocabulary = attribute_vocabulary(products)
    return CatalogIndex.build(
        images,
        logit_scale=getattr(encoder, "logit_scale", None),
        bank=titles,
        classifiers={
            name: zero_shot_classifier(encoder, name, vocabulary[name])
            for name in LOOKALIKE_FIELDS
            if name in vocabulary
        },
    )


def evaluate_search(encoder: Any, products: list[Product], *, on_progress: Progress | None = None) -> dict[str, Any]:
    """The report ``manage.py evaluate search`` writes (docs/ml.md defines each figure), ranked
    as catalog search ranks (``index_catalog``)."""
    from ml.eval import mrr, precision_at_k, recall_at_k

    images, products = encode_catalog_images(encoder, products, on_progress=on_progress)
    if on_progress is not None:
        on_progress("encoding titles", 0, len(products))
    titles = np.asarray(encoder.encode_texts([p.title for p in products]), dtype=np.float32)
    index = index_catalog(encoder, products, images, titles)
    own_image = np.arange(len(products))
    text_to_image = index.text_scores(titles)
    report: dict[str, Any] = {
        "text_to_image": {
            **{f"R@{k}": recall_at_k(text_to_image, own_image, k) for k in (1, 5, 10)},
            "MRR": mrr(text_to_image, own_image),
        }
    }
    lookalike = [tuple(p.attributes.get(name) for name in LOOKALIKE_FIELDS) for p in products]
    keys = {key: i for i, key in enumerate(sorted(set(lookalike), key=str))}
    key_index = np.array([keys[key] for key in lookalike])
    relevant = key_index[:, None] == key_index[None, :]
    report["image_to_image"] = {"P@10": precision_at_k(index.image_scores(images), relevant, 10, exclude_self=True)}
    report["attributes"] = {}
    for attribute, values in attribute_vocabulary(products).items():
        labelled = [i for i, p in enumerate(products) if attribute in p.attributes]
        classifier = index.classifiers.get(attribute)
        if classifier is None:
            classifier = zero_shot_classifier(encoder, attribute, values)
        predicted = (images[labelled] @ classifier.T).argmax(axis=1)
        truth = np.array([values.index(products[i].attributes[attribute]) for i in labelled])
        report["attributes"][attribute] = float((predicted == truth).mean())
    report["n_products"] = len(products)
    return report
