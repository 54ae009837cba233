"""``manage.py train_image_tower --catalog CSV --images DIR --out DIR``: a LiT image tower for a catalog."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import ml
from apps.ops.progress import StageBar
from apps.registry.services import model_version_promote, model_version_register, model_version_verify
from ml.lit.catalog import CatalogError, read_catalog
from ml.lit.evaluate import holdout_split
from ml.lit.release import write_spec
from ml.lit.train import TowerConfig, train_tower


class Command(BaseCommand):
    help = (
        "Train an image tower against the locked MiniLM text tower on a catalog's images and titles, "
        "register it as a model version and print `registered NAME@VERSION`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--catalog", type=Path, required=True, help="catalog.csv (layout of products/fashion)")
        parser.add_argument("--images", type=Path, required=True, help="folder of the product images")
        parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoint, weights, spec)")
        parser.add_argument("--name", default="lit-image-tower", help="model name to register")
        parser.add_argument(
            "--backbone",
            default=TowerConfig.backbone,
            help="frozen pretrained backbone under a trained head (a model spec name), or 'none' to train a ResNet "
            "from scratch on the pixels",
        )
        parser.add_argument(
            "--no-zoom", action="store_true", help="describe the whole photo only, without the 1.5x centre zoom"
        )
        parser.add_argument("--epochs", type=int, default=TowerConfig.epochs)
        parser.add_argument("--image-size", type=int, default=TowerConfig.image_size)
        parser.add_argument("--batch-size", type=int, default=TowerConfig.batch_size)
        parser.add_argument("--lr", type=float, default=TowerConfig.lr)
        parser.add_argument("--seed", type=int, default=TowerConfig.seed)
        parser.add_argument(
            "--time-budget-min", type=float, default=25.0, help="train fewer epochs if these would not fit (0: off)"
        )
        parser.add_argument(
            "--holdout",
            type=int,
            default=0,
            help="leave this many random products out of training and write them to OUT/holdout.csv for evaluation",
        )
        parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
        parser.add_argument("--promote", action="store_true", help="make the new version the champion")

    def handle(self, *args: Any, **options: Any) -> None:
        out: Path = options["out"]
        try:
            products = read_catalog(options["catalog"], options["images"])
        except CatalogError as error:
            raise CommandError(str(error)) from error
        if options["holdout"]:
            products, held_out = holdout_split(products, test_size=options["holdout"], seed=options["seed"])
            out.mkdir(parents=True, exist_ok=True)
            _write_holdout(options["catalog"], {p.id for p in held_out}, out / "holdout.csv")
        config = TowerConfig(
            backbone="" if options["backbone"] in ("", "none") else options["backbone"],
            zoom=not options["no_zoom"],
            epochs=options["epochs"],
            image_size=options["image_size"],
            batch_size=options["batch_size"],
            lr=options["lr"],
            seed=options["seed"],
            time_budget_s=options["time_budget_min"] * 60 or None,
        )
        self.stderr.write(f"training on {len(products)} products -> {out}")
        with StageBar() as progress:
            summary = train_tower(
                products,
                out,
                config=config,
                text_tower=ml.load(config.text_tower),
                resume=options["resume"],
                on_progress=progress,
            )
        last = summary["history"][-1] if summary["history"] else {}
        metrics = {
            "validation": {k.removeprefix("val_"): v for k, v in last.items() if k.startswith("val_")},
            "epochs": last.get("epoch"),
            "train_products": summary["train_products"],
            "training_seconds": summary["seconds"],
        }
        spec = write_spec(out, name=options["name"], metrics=metrics, catalog=str(options["catalog"]))
        for record in summary["history"]:
            self.stderr.write(" ".join(f"{k}={v}" for k, v in record.items()))
        version = model_version_register(
            spec=spec.to_dict(), actor=None, metrics=metrics, notes=f"train_image_tower on {options['catalog']}"
        )
        version = model_version_verify(version=version, actor=None)
        if options["promote"]:
            version = model_version_promote(version=version, actor=None, reason="train_image_tower --promote")
        self.stdout.write(f"registered {version.label}")


def _write_holdout(catalog: Path, ids: set[str], destination: Path) -> None:
    with catalog.open(newline="", encoding="utf-8") as source, destination.open("w", newline="") as out:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(out, fieldnames=list(reader.fieldnames or []))
        writer.writeheader()
        writer.writerows(row for row in reader if str(row["id"]).strip() in ids)
