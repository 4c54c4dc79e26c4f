#!/usr/bin/env bash
# Does the LLM training loop learn? Each decoder family trained from scratch on debian-ir, CPU.
#
# For each family (gemma, minicpm-layerwise, qwen3; or those given in FAMILIES):
#   1. scripts/random_decoder.py builds a small decoder of the family's architecture (4 layers,
#      hidden 128, random weights N(0, 0.02), a byte-level BPE tokenizer trained on the corpus);
#   2. scripts/pretrain_decoder.py pretrains it as a language model (next token) on the
#      reranker inputs of the (query, positive) pairs of the first third of train.jsonl.gz's
#      groups: LLM rerankers start from a pretrained LM, and a random decoder did not learn to
#      rank in this budget without it. No later stage sees those positives, as positive or
#      negative, so "text seen in pretraining" predicts nothing the ranking stages are scored on;
#   3. full fine-tuning (`crossrank train`) on the second third of the groups (up to 3 BM25
#      negatives + random passages up to 7, a short per-example prompt, group 8);
#   4. LoRA (rank 16, alpha 32, q/k/v/o, lr 1e-3; the layerwise heads trained in full) on top of
#      that checkpoint, on the last third of the groups, as many steps as the full stage (500
#      steps, a third of an epoch, moved dev nDCG@10 within chance: docs/training.md, run 5);
#   5. `crossrank eval` of the fully trained, LoRA, pretrained and random models in one table on
#      the same dev queries (BM25 top 100 reranked, all 1000 by default) with paired t-tests
#      against the fully trained model; the trained layerwise models at every cutoff layer.
# This exercises the loop (inputs, loss, optimiser, adapters, evaluation), not a model: the
# numbers of the last run are in docs/training.md ("Does it learn?").
# Usage: scripts/llm-learning-debian.sh [DATA_DIR] [WORK_DIR]
# Knobs (environment): FAMILIES, LM_STEPS (pretraining), STEPS (full), LORA_STEPS, LORA_HARD (most
# BM25 negatives in a LoRA group, 3; read when the data is first written), QUERIES (dev queries
# evaluated), PROMPT (the bge families' prompt and Qwen3's instruction in the data).
set -euo pipefail
DATA=${1:-../shared/data/debian-ir}
WORK=${2:-build/llm-learning}
PY=${PY:-.venv/bin/python}
FAMILIES=${FAMILIES:-gemma minicpm-layerwise qwen3}
LM_STEPS=${LM_STEPS:-1000}
STEPS=${STEPS:-1500}
LORA_STEPS=${LORA_STEPS:-1500}
QUERIES=${QUERIES:-1000}
PROMPT=${PROMPT:-Relevant?}
LORA_HARD=${LORA_HARD:-3}
mkdir -p "$WORK"

# three disjoint thirds of the training groups: pretraining pairs, full training, LoRA. Each
# ranking stage sees only its own text: the passages that are no training group's positive are
# split in two at random, and the full (LoRA) stage draws its negatives from its own positives
# and its half, never a pretraining positive nor a passage the other stage saw, so no stage can
# score a passage by having seen it before. A group keeps up to 3 of its BM25 hard negatives
# (those in its stage's text) and gets random ones up to 7 (a model trained from scratch
# learns nothing in this budget from hard negatives alone: the loss stays at ln 8), and a short
# prompt (its own tokens, not the 35 of the default prompt, so steps are shorter)
if [ ! -s "$WORK/train-b.jsonl" ]; then
  $PY - "$DATA" "$WORK" "$PROMPT" "$LORA_HARD" <<'PYEOF'
import json
import random
import sys
from pathlib import Path

from crossrank.files import open_input

data, work, prompt = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
most_hard = {"train-a": 3, "train-b": int(sys.argv[4])}
rng = random.Random(0)
with open_input(data / "corpus.jsonl") as fh:
    corpus = [json.loads(line)["text"] for line in fh]
with open_input(data / "train.jsonl.gz") as fh:
    groups = [json.loads(line) for line in fh]
third = len(groups) // 3
stages = {"train-lm": groups[:third], "train-a": groups[third : 2 * third],
          "train-b": groups[2 * third :]}
positives = {name: {t for g in part for t in g["pos"]} for name, part in stages.items()}
rest = sorted(set(corpus).difference(*positives.values()))
rng.shuffle(rest)
halves = {"train-a": set(rest[: len(rest) // 2]), "train-b": set(rest[len(rest) // 2 :])}
with open(work / "train-lm.jsonl", "w", encoding="utf-8") as f:
    for example in stages["train-lm"]:
        f.write(json.dumps({"query": example["query"], "pos": example["pos"]}) + "\n")
for name in ("train-a", "train-b"):
    allowed = positives[name] | halves[name]
    others = set().union(*(v for k, v in positives.items() if k != name))
    pool = sorted(allowed - others)
    usable = set(pool)
    with open(work / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for example in stages[name]:
            if others.intersection(example["pos"]):
                continue  # a passage that is also another stage's positive
            own = set(example["pos"])
            hard = [t for t in example["neg"] if t in usable and t not in own][: most_hard[name]]
            extra = [t for t in rng.sample(pool, 16) if t not in own and t not in hard]
            example["neg"] = hard + extra[: 7 - len(hard)]
            example["prompt"] = prompt
            f.write(json.dumps(example) + "\n")
PYEOF
fi

TRAIN=(--group-size 8 --batch-size 8 --query-max-length 32 --passage-max-length 64
  --warmup-ratio 0.05 --seed 42 --logging-steps 100 --save-steps 100000 --no-progress)
# evaluated at the length trained on (query 32 + passage 64 = 96 tokens; for Qwen3 its 70-token
# template is inside that budget, in training as in scoring): at 128 a model sees text
# lengths and positions it never trained on (docs/training.md, run 4)
EVAL=(--dataset "$DATA" --split dev --run "$DATA/dev.bm25.top100.run" --max-queries "$QUERIES"
  --seed 1 --max-length 96)

evaluate() {  # evaluate NAME [cutoff layer] MODEL_DIR...: one table, paired tests against M1
  local name=$1 layer=$2
  shift 2
  local extra=("${PROMPT_ARG[@]}") models=()
  [ -n "$layer" ] && extra+=(--cutoff-layers "$layer")
  for m in "$@"; do models+=(-m "$m"); done
  $PY -m crossrank eval "${models[@]}" "${EVAL[@]}" "${extra[@]}" --output "$WORK/eval-$name.json" \
    > "$WORK/eval-$name.txt"
  { echo "== $name"; sed -n '/^metric/,$p' "$WORK/eval-$name.txt"; } | tee -a "$WORK/summary.txt"
}

for fam in $FAMILIES; do
  init="$WORK/$fam-init" lm="$WORK/$fam-lm" full="$WORK/$fam-full" lora="$WORK/$fam-lora"
  extra=()
  layers=("")
  PROMPT_ARG=(--prompt "$PROMPT")
  if [ "$fam" = minicpm-layerwise ]; then
    extra=(--lora-extra-parameters linear_head)
    layers=(1 2 3 4)
  fi
  [ "$fam" = qwen3 ] && PROMPT_ARG=(--instruction "$PROMPT")
  [ -s "$init/model.safetensors" ] || $PY scripts/random_decoder.py "$fam" "$DATA" "$init" --std 0.02
  if [ ! -s "$lm/model.safetensors" ]; then
    start=$(date +%s)
    $PY scripts/pretrain_decoder.py "$init" "$WORK/train-lm.jsonl" "$lm" --steps "$LM_STEPS" \
      "${PROMPT_ARG[@]}" > "$WORK/$fam-lm.log"
    echo "$fam LM pretraining: $(( $(date +%s) - start )) s for $LM_STEPS steps ($(tail -1 "$WORK/$fam-lm.log" | sed 's/.*last //'))" | tee -a "$WORK/summary.txt"
  fi
  if [ ! -s "$full/model.safetensors" ]; then
    start=$(date +%s)
    $PY -m crossrank train --model "$lm" --data "$WORK/train-a.jsonl" --output "$full" \
      "${TRAIN[@]}" --lr 5e-4 --max-steps "$STEPS" --overwrite-output-dir
    echo "$fam full training: $(( $(date +%s) - start )) s for $STEPS steps" | tee -a "$WORK/summary.txt"
  fi
  if [ ! -s "$lora/adapter_model.safetensors" ]; then
    start=$(date +%s)
    $PY -m crossrank train --model "$full" --data "$WORK/train-b.jsonl" --output "$lora" \
      "${TRAIN[@]}" --lr 1e-3 --max-steps "$LORA_STEPS" --lora-rank 16 --lora-alpha 32 \
      --target-modules q_proj k_proj v_proj o_proj "${extra[@]}" --overwrite-output-dir
    echo "$fam LoRA training: $(( $(date +%s) - start )) s for $LORA_STEPS steps" | tee -a "$WORK/summary.txt"
  fi
  # M1 fully trained, M2 + LoRA (M2 - M1: the LoRA lift), M3 LM-pretrained, M4 random weights;
  # the layerwise model at every cutoff layer (the untrained ones at the last only)
  last=${layers[-1]}
  for layer in "${layers[@]}"; do
    untrained=()
    [ "$layer" = "$last" ] && untrained=("$lm" "$init")
    evaluate "$fam${layer:+-layer$layer}" "$layer" "$full" "$lora" "${untrained[@]}"
  done
done
cat "$WORK/summary.txt"
