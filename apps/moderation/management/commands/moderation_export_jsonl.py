"""``manage.py moderation_export_jsonl --data DIR --out FILE``: labelled moderation folders -> evaluation JSONL;
``--functional-suite`` writes the project's hate speech functional test suite instead."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.moderation.functional_suite import write_suite
from ml.tasks.moderation_datasets import DatasetError, read_moderation_dir


class Command(BaseCommand):
    help = (
        "Convert folders in the layout of ../shared/data/moderation (any subset) into the JSONL that "
        "`manage.py evaluate moderation` reads: one {text, labels, source, ...} object per line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", type=Path, help="a directory holding the dataset folders")
        parser.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
        parser.add_argument(
            "--functional-suite",
            action="store_true",
            help="write the hate speech functional test suite (apps/moderation/functional_suite.py) instead; "
            "each case has `functionality` and `target_group` fields for `evaluate moderation --by`",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["functional_suite"]:
            count = write_suite(options["out"])
            self.stdout.write(f"wrote {count} functional test cases to {options['out']}")
            return
        if options["data"] is None:
            raise CommandError("give --data DIR (or --functional-suite)")
        try:
            posts = read_moderation_dir(options["data"])
        except DatasetError as error:
            raise CommandError(str(error)) from error
        out: Path = options["out"]
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            for post in posts:
                handle.write(json.dumps(post.to_json(), ensure_ascii=False) + "\n")
        counts = Counter(f"{name}={value}" for post in posts for name, value in post.labels.items())
        sources = Counter(post.fields.get("source", "") for post in posts)
        self.stderr.write(f"sources: {dict(sources)}; labels: {dict(sorted(counts.items()))}")
        self.stdout.write(f"wrote {len(posts)} items to {out}")
