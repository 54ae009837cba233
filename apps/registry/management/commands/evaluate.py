"""``manage.py evaluate search --catalog CSV --images DIR --model NAME --json OUT`` and
``manage.py evaluate moderation --data FILE.jsonl --json OUT [--by FIELD]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import ml
from apps.ops.progress import StageBar
from apps.registry.selectors import model_spec_lookup
from ml.lit.catalog import CatalogError, read_catalog
from ml.lit.evaluate import evaluate_search
from ml.lit.release import read_spec
from ml.sources import ChecksumMismatch, ModelNotInstalled
from ml.specs import ModelSpec, UnknownSpec


class Command(BaseCommand):
    help = "Evaluate a model on data in the layouts of ../shared/data and write the figures as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        tasks = parser.add_subparsers(dest="task", required=True)
        search = tasks.add_parser("search", help="text->image R@K/MRR, image->image P@10, zero-shot attributes")
        search.add_argument("--catalog", type=Path, required=True)
        search.add_argument("--images", type=Path, required=True)
        search.add_argument("--model", required=True, help="NAME, NAME@VERSION, or a train_image_tower --out folder")
        search.add_argument("--json", type=Path, required=True, help="where to write the report")
        moderation = tasks.add_parser(
            "moderation", help="per-category accuracy, precision, recall, F1, ROC-AUC and ECE of a moderation model"
        )
        moderation.add_argument("--data", type=Path, required=True, help="JSONL: text, image, labels per line")
        moderation.add_argument("--json", type=Path, required=True, help="where to write the report")
        moderation.add_argument(
            "--by", action="append", default=[], help="also report per value of this item field (repeatable)"
        )
        moderation.add_argument("--model", default="", help="NAME@VERSION (default: the moderation champion)")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['task']}")(options)

    def _search(self, options: dict[str, Any]) -> None:
        try:
            products = read_catalog(options["catalog"], options["images"])
            spec = _model_spec(options["model"])
            encoder = ml.load(spec.name, spec=spec)
        except (CatalogError, UnknownSpec, ModelNotInstalled, ChecksumMismatch, FileNotFoundError) as error:
            raise CommandError(str(error)) from error
        if not hasattr(encoder, "encode_images"):
            raise CommandError(f"{spec.name}@{spec.version} ({spec.family}) encodes no images")
        with StageBar() as progress:
            report = evaluate_search(encoder, products, on_progress=progress)
        options["json"].parent.mkdir(parents=True, exist_ok=True)
        options["json"].write_text(json.dumps(report, indent=2))
        self.stdout.write(f"{spec.name}@{spec.version}: {json.dumps(report)}")

    def _moderation(self, options: dict[str, Any]) -> None:
        from apps.moderation.evaluation import EvaluationError, evaluate_moderation

        try:
            with StageBar() as progress:
                report = evaluate_moderation(
                    options["data"], model=options["model"], by=options["by"], on_progress=progress
                )
        except EvaluationError as error:
            raise CommandError(str(error)) from error
        options["json"].parent.mkdir(parents=True, exist_ok=True)
        options["json"].write_text(json.dumps(report, indent=2))
        for name, figures in report["categories"].items():
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}
            self.stdout.write(f"{report['model']} {name}: {json.dumps(shown)}")


def _model_spec(reference: str) -> ModelSpec:
    if Path(reference).is_dir():
        return read_spec(Path(reference))
    return model_spec_lookup(reference=reference)
