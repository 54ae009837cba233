"""``manage.py moderation_train --data DIR``: train a moderation model on labelled files and reviewed decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.moderation.services import FUSION_MODEL_NAME
from apps.moderation.training import moderation_train
from apps.ops.progress import StageBar
from apps.registry.services import RegistryError
from ml.tasks.moderation_datasets import DatasetError
from ml.tasks.moderation_model import ModerationTrainingConfig


class Command(BaseCommand):
    help = (
        "Train a moderation model on labelled files (the layouts of shared/data/moderation, any subset of its "
        "folders) plus every reviewed decision; register it, and promote it when it beats the champion on the "
        "reviewed hold-out (or when there is no champion). Prints `registered NAME@VERSION` last."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--data", type=Path, action="append", default=[], help="a directory of labelled files (repeatable)"
        )
        parser.add_argument("--name", default=FUSION_MODEL_NAME, help="model name to register")
        parser.add_argument("--head", choices=("gated", "late"), default=ModerationTrainingConfig.head_kind)
        parser.add_argument(
            "--calibration",
            choices=("temperature", "platt", "isotonic"),
            default=ModerationTrainingConfig.calibration,
            help="how validation posts calibrate each category's scores: scale the logits, also move them, or map "
            "them step-wise",
        )
        parser.add_argument(
            "--head-members",
            type=int,
            default=ModerationTrainingConfig.head_members,
            help="fusion heads trained from successive seeds and served as their mean (steadier than one)",
        )
        parser.add_argument("--epochs", type=int, default=ModerationTrainingConfig.epochs)
        parser.add_argument("--seed", type=int, default=ModerationTrainingConfig.seed)
        parser.add_argument(
            "--tower-epochs",
            type=int,
            default=ModerationTrainingConfig.tower_epochs,
            help="most epochs of MiniLM top-layer fine-tuning per fold; 0 trains no text tower (quicker, weaker)",
        )
        parser.add_argument(
            "--tower-layers",
            type=int,
            default=ModerationTrainingConfig.tower_layers,
            help="how many of MiniLM's top layers the text tower fine-tunes (1-5; more is slower to train and run)",
        )
        parser.add_argument(
            "--no-tower-refit",
            action="store_true",
            help="score new posts with the mean of the cross-fitted tower copies instead of a copy refit on all "
            "training posts (quicker to train)",
        )
        parser.add_argument(
            "--head-embedding",
            action="store_true",
            help="the fusion head also reads MiniLM's embedding (it always does with --tower-epochs 0)",
        )
        parser.add_argument(
            "--source-balance",
            type=float,
            default=ModerationTrainingConfig.source_balance,
            help="within a category, a source of n labelled posts weighs as n ** this (1 counts every post alike, "
            "so the largest source dominates; 0 weighs every source alike)",
        )
        parser.add_argument(
            "--source-experts",
            action="store_true",
            help="where sources disagree on a category, the text readers also learn each source's reading of it "
            "and how much a post reads like that source; the head weighs them",
        )
        parser.add_argument("--no-promote", action="store_true", help="register the candidate only")
        parser.add_argument("--json", type=Path, default=None, help="also write the version's metrics here")
        parser.add_argument(
            "--limit-per-source", type=int, default=None, help="a random sample of at most N posts per source"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for option in ("tower_layers", "head_members"):
            if options[option] < 1:
                raise CommandError(f"--{option.replace('_', '-')} must be at least 1, not {options[option]}")
        if not 0.0 <= options["source_balance"] <= 1.0:
            raise CommandError(f"--source-balance must be in [0, 1], not {options['source_balance']}")
        config = ModerationTrainingConfig(
            head_kind=options["head"],
            calibration=options["calibration"],
            head_members=options["head_members"],
            epochs=options["epochs"],
            seed=options["seed"],
            tower_epochs=options["tower_epochs"],
            tower_layers=options["tower_layers"],
            tower_refit=not options["no_tower_refit"],
            head_reads_embedding=options["head_embedding"],
            source_balance=options["source_balance"],
            source_experts=options["source_experts"],
        )
        try:
            with StageBar() as progress:
                outcome = moderation_train(
                    data_dirs=options["data"],
                    name=options["name"],
                    config=config,
                    promote=not options["no_promote"],
                    limit_per_source=options["limit_per_source"],
                    on_progress=progress,
                )
        except (DatasetError, RegistryError, ValueError) as error:
            raise CommandError(str(error)) from error
        if options["json"] is not None:
            options["json"].parent.mkdir(parents=True, exist_ok=True)
            report = {"model": outcome.version.label, **outcome.version.metrics}
            options["json"].write_text(json.dumps(report, indent=2))
        test = outcome.version.metrics.get("test", {})
        for category, figures in sorted(test.get("categories", {}).items()):
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}
            self.stderr.write(f"  test {category}: {json.dumps(shown)}")
        self.stderr.write(f"promotion: {outcome.promotion['reason']}")
        state = "champion" if outcome.promoted else outcome.version.status
        self.stderr.write(f"{outcome.version.label} is {state}")
        self.stdout.write(f"registered {outcome.version.label}")
