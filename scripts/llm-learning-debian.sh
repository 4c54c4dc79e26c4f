#!/usr/bin/env bash
# Does the LLM training loop learn? Each decoder family trained from scratch on debian-ir, CPU.
#
# For each family (gemma, minicpm-layerwise, qwen3; or those given in FAMILIES):
#   1. scripts/random_decoder.py builds a small decoder of the family's architecture (4 layers,
#      hidden 128, random weights, a byte-level BPE tokenizer trained on the corpus);
#   2. full fine-tuning on the first half of train.jsonl.gz's groups (3 BM25 negatives + 4
#      random passages each; the family's own input rule and default prompt, group 8);
#   3. LoRA (rank 16, alpha 32, q/k/v/o; the layerwise heads trained in full) on top of that
#      checkpoint, on the other half of the groups;
#   4. `crossrank eval` of the untrained, fully trained and LoRA models on the same dev
#      queries (BM25 top 100 reranked); the layerwise models at every cutoff layer.
# This exercises the loop (inputs, loss, optimiser, adapters, evaluation), not a model. In the
# one run so far (docs/training.md, "Does it learn?") the from-scratch Gemma did NOT learn
# to rank within this budget.
# Usage: scripts/llm-learning-debian.sh [DATA_DIR] [WORK_DIR]
# Knobs (environment): FAMILIES, STEPS (full), LORA_STEPS, QUERIES (dev queries evaluated).
set -euo pipefail
DATA=${1:-../shared/data/debian-ir}
WORK=${2:-build/llm-learning}
PY=${PY:-.venv/bin/python}
FAMILIES=${FAMILIES:-gemma minicpm-layerwise qwen3}
STEPS=${STEPS:-2000}
LORA_STEPS=${LORA_STEPS:-600}
QUERIES=${QUERIES:-200}
mkdir -p "$WORK"

# two disjoint halves of the training groups; each group keeps 3 of its BM25 hard negatives
# and gets 4 random corpus passages (a model trained from scratch learns nothing in this budget
# from hard negatives alone: the loss stays at ln 8)
if [ ! -s "$WORK/train-b.jsonl" ]; then
  $PY - "$DATA" "$WORK/train-a.jsonl" "$WORK/train-b.jsonl" <<'PYEOF'
import json
import random
import sys
from pathlib import Path

from crossrank.files import open_input

data = Path(sys.argv[1])
rng = random.Random(0)
with open_input(data / "corpus.jsonl") as fh:
    corpus = [json.loads(line)["text"] for line in fh]
with open_input(data / "train.jsonl.gz") as fh:
    lines = fh.read().splitlines()
half = len(lines) // 2
for path, part in ((sys.argv[2], lines[:half]), (sys.argv[3], lines[half:])):
    with open(path, "w", encoding="utf-8") as f:
        for line in part:
            example = json.loads(line)
            example["neg"] = example["neg"][:3] + rng.sample(corpus, 4)
            f.write(json.dumps(example) + "\n")
PYEOF
fi

TRAIN=(--group-size 8 --batch-size 4 --query-max-length 32 --passage-max-length 96
  --warmup-ratio 0.1 --seed 42 --logging-steps 50 --save-steps 100000 --no-progress)
EVAL=(--dataset "$DATA" --split dev --run "$DATA/dev.bm25.top100.run" --max-queries "$QUERIES"
  --seed 1 --max-length 256)

evaluate() {  # evaluate NAME MODEL_DIR [cutoff layer]
  local name=$1 model=$2 layer=${3:-}
  local extra=()
  [ -n "$layer" ] && extra=(--cutoff-layers "$layer")
  $PY -m crossrank eval -m "$model" "${EVAL[@]}" "${extra[@]}" --output "$WORK/eval-$name.json" \
    > "$WORK/eval-$name.txt"
  printf '%-40s nDCG@10 %s\n' "$name" "$($PY - "$WORK/eval-$name.json" <<'PYEOF'
import json
import sys

result = json.load(open(sys.argv[1]))
print(f"{next(iter(result['models'].values()))['nDCG@10']:.4f}")
PYEOF
)" | tee -a "$WORK/summary.txt"
}

for fam in $FAMILIES; do
  init="$WORK/$fam-init" full="$WORK/$fam-full" lora="$WORK/$fam-lora"
  extra=()
  layers=("")
  if [ "$fam" = minicpm-layerwise ]; then
    extra=(--lora-extra-parameters linear_head)
    layers=(1 2 3 4)
  fi
  [ -s "$init/model.safetensors" ] || $PY scripts/random_decoder.py "$fam" "$DATA" "$init" --std 0.1
  if [ ! -s "$full/model.safetensors" ]; then
    start=$(date +%s)
    $PY -m crossrank train --model "$init" --data "$WORK/train-a.jsonl" --output "$full" \
      "${TRAIN[@]}" --lr 1e-3 --max-steps "$STEPS" --overwrite-output-dir
    echo "$fam full training: $(( $(date +%s) - start )) s for $STEPS steps" | tee -a "$WORK/summary.txt"
  fi
  if [ ! -s "$lora/adapter_model.safetensors" ]; then
    start=$(date +%s)
    $PY -m crossrank train --model "$full" --data "$WORK/train-b.jsonl" --output "$lora" \
      "${TRAIN[@]}" --lr 1e-3 --max-steps "$LORA_STEPS" --lora-rank 16 --lora-alpha 32 \
      --target-modules q_proj k_proj v_proj o_proj "${extra[@]}" --overwrite-output-dir
    echo "$fam LoRA training: $(( $(date +%s) - start )) s for $LORA_STEPS steps" | tee -a "$WORK/summary.txt"
  fi
  for layer in "${layers[@]}"; do
    suffix=${layer:+-layer$layer}
    evaluate "$fam-untrained$suffix" "$init" "$layer"
    evaluate "$fam-full$suffix" "$full" "$layer"
    evaluate "$fam-full+lora$suffix" "$lora" "$layer"
  done
done
cat "$WORK/summary.txt"
