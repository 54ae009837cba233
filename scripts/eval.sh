#!/usr/bin/env bash
# make eval: quality targets measured on the real datasets (../shared/data, or VLP_DATA_DIR).
# Search: train a LiT image tower on the fashion catalog minus 2,000 held-out products (time-boxed), then
# evaluate text->image, image->image and zero-shot attributes on those 2,000 products.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${VLP_DATA_DIR:-$(cd .. && pwd)/shared/data}
OUT=${VLP_EVAL_DIR:-var/eval}
CATALOG=$DATA/products/fashion
mkdir -p "$OUT"
.venv/bin/python manage.py migrate --noinput >/dev/null  # training registers its model version

started=$(date +%s)
.venv/bin/python manage.py train_image_tower --catalog "$CATALOG/catalog.csv" --images "$CATALOG/images" \
    --out "$OUT/lit-fashion" --holdout 2000 --name lit-fashion --time-budget-min 25
trained=$(date +%s)
.venv/bin/python manage.py evaluate search --catalog "$OUT/lit-fashion/holdout.csv" --images "$CATALOG/images" \
    --model "$OUT/lit-fashion" --json "$OUT/search.json"
.venv/bin/python - "$OUT/search.json" "$((trained - started))" <<'PY'
import json, sys
report, seconds = json.load(open(sys.argv[1])), int(sys.argv[2])
checks = [
    ("training wall time (s), including image decoding", seconds, "<=", 1800),
    ("text->image R@10", report["text_to_image"]["R@10"], ">=", 0.85),
    ("text->image R@1", report["text_to_image"]["R@1"], ">=", 0.40),
    ("image->image P@10", report["image_to_image"]["P@10"], ">=", 0.45),
    ("articleType zero-shot accuracy", report["attributes"]["articleType"], ">=", 0.85),
]
sys.stdout.write(f"search on {report['n_products']} held-out products\n")
for name, value, op, target in checks:
    met = value <= target if op == "<=" else value >= target
    sys.stdout.write(f"  {name:52} {value:>8.3f}  target {op} {target:<6} {'met' if met else 'NOT MET'}\n")
PY
