"""``manage.py moderation_export_jsonl --data DIR --out FILE``: labelled moderation folders -> evaluation JSONL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ml.tasks.moderation_datasets import DatasetError, read_moderation_dir


class Command(BaseCommand):
    help = (
        "Convert folders in the layout of ../shared/data/moderation (any subset) into the JSONL that "
        "`manage.py evaluate moderation` reads: one {text, labels, source, ...} object per line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", type=Path, required=True, help="a directory holding the dataset folders")
        parser.add_argument("--out", type=Path, required=True, help="the JSONL file to write")

    def handle(self, *args: Any, **options: Any) -> None:
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
