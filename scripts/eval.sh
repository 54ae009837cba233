#!/usr/bin/env bash
# make eval: quality targets measured on the real datasets (../shared/data, or VLP_DATA_DIR).
# Search: train a LiT image tower on the fashion catalog minus 2,000 held-out products (time-boxed), then
# evaluate text->image, image->image and zero-shot attributes on those 2,000 products.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${VLP_DATA_DIR:-$(cd .. && pwd)/shared/data}
OUT=${VLP_EVAL_DIR:-var/eval}
CATALOG=$DATA/products/fashion
# VLP_EVAL_PARTS: "search moderation" (default), or one of them. VLP_MODERATION_SEED: moderation_train's --seed (the
# split, the folds, the initialisation; default 0): compare moderation changes on the mean of several seeds.
PARTS=${VLP_EVAL_PARTS:-search moderation}
SEED=${VLP_MODERATION_SEED:-0}
mkdir -p "$OUT"
.venv/bin/python manage.py migrate --noinput >/dev/null  # training registers its model version

if [[ " $PARTS " == *" search "* ]]; then
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
fi

[[ " $PARTS " == *" moderation "* ]] || exit 0
# Moderation: train on every folder of shared/data/moderation (80/10/10 split per source by a hash of the text;
# the figures are the 10 % test split's), then adult_content on ordinary photos (COCO) that no model trained on.
MODERATION=$DATA/moderation
.venv/bin/python manage.py moderation_train --data "$MODERATION" --no-promote --seed "$SEED" --json "$OUT/moderation-train.json" \
    | tail -1 | tee "$OUT/moderation-model.txt"
MODEL=$(sed 's/^registered //' "$OUT/moderation-model.txt")
.venv/bin/python - "$DATA/captions/coco_mini" "$OUT/coco-benign.jsonl" <<'PY'
import json, pathlib, sys
images, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with out.open("w") as handle:
    for path in sorted(images.glob("*2017/*.jpg")):
        handle.write(json.dumps({"image": str(path.resolve()), "labels": {"adult_content": 0}, "source": "coco"}) + "\n")
PY
.venv/bin/python manage.py evaluate moderation --data "$OUT/coco-benign.jsonl" --model "$MODEL" \
    --json "$OUT/moderation-coco.json" >/dev/null
# The project's hate speech functional test suite (apps/moderation/functional_suite.py), per target group.
.venv/bin/python manage.py moderation_export_jsonl --functional-suite --out "$OUT/hate-functional.jsonl" >/dev/null
.venv/bin/python manage.py evaluate moderation --data "$OUT/hate-functional.jsonl" --model "$MODEL" \
    --by target_group --by functionality --json "$OUT/moderation-functional.json" >/dev/null
.venv/bin/python - "$OUT/moderation-train.json" "$OUT/moderation-coco.json" "$OUT/moderation-functional.json" <<'PY'
import json, sys
trained, coco, functional = (json.load(open(path)) for path in sys.argv[1:4])
by_source = trained["test_by_source"]

def figure(source, category, metric):
    return by_source.get(source, {}).get("categories", {}).get(category, {}).get(metric)

adult = coco["categories"]["adult_content"]
flagged = None if adult["accuracy"] is None else 1 - adult["accuracy"]
checks = [
    ("hate_speech F1, Davidson", figure("davidson", "hate_speech", "f1"), ">=", 0.50),
    ("hate_speech ROC-AUC, Davidson", figure("davidson", "hate_speech", "roc_auc"), ">=", 0.92),
    ("hate_speech F1, ETHOS", figure("ethos", "hate_speech", "f1"), ">=", 0.78),
    ("harassment F1, Davidson", figure("davidson", "harassment", "f1"), ">=", 0.98),
    ("spam F1, SMS", figure("sms", "spam", "f1"), ">=", 0.96),
    ("misinformation ROC-AUC, LIAR", figure("liar", "misinformation", "roc_auc"), ">=", 0.66),
    (f"adult_content flagged on {adult['n']} COCO photos", flagged, "<=", 0.01),
]
groups = functional["by"]["target_group"]
weakest = min(groups, key=lambda group: groups[group]["hate_speech"]["accuracy"])
checks += [
    ("hate_speech accuracy, functional suite", functional["categories"]["hate_speech"]["accuracy"], ">=", 0.75),
    (f"  weakest target group ({weakest})", groups[weakest]["hate_speech"]["accuracy"], ">=", 0.65),
]
for name, figures in sorted(trained["test"]["categories"].items()):
    # "calibrated p95": the ECE a perfectly calibrated model stays under 95 % of the time on this many posts.
    noise = figures.get("ece_calibrated_p95")
    shown = f"{figures['n']} posts" + ("" if noise is None else f", calibrated p95 {noise:.3f}")
    checks.append((f"ECE {name} ({shown})", figures["ece"], "<=", 0.05))
sys.stdout.write(f"moderation ({trained['model']}, held-out 10 % per source; COCO: ordinary photos)\n")
for name, value, op, target in checks:
    if value is None:
        sys.stdout.write(f"  {name:56} {'n/a':>8}  target {op} {target:<6} NOT MEASURED\n")
        continue
    met = value <= target if op == "<=" else value >= target
    sys.stdout.write(f"  {name:56} {value:>8.3f}  target {op} {target:<6} {'met' if met else 'NOT MET'}\n")
sys.stdout.write("  functional suite accuracy per functionality:\n")
for name, figures in functional["by"]["functionality"].items():
    sys.stdout.write(f"    {name:54} {figures['hate_speech']['accuracy']:>8.3f}\n")
PY
