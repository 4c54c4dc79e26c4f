#!/usr/bin/env bash
# Build llama.cpp's llama-server from PyPI's llama-cpp-python source package, convert a
# crossrank checkpoint to GGUF (f16 and Q8_0) with llama.cpp's own converter, serve each with
# --reranking and compare it with crossrank's exact fp32 scores using `crossrank verify`.
#
#   scripts/llamacpp-verify.sh [STAGE...]
#       stages: build convert verify workaround verify_workaround (default: all, in this order)
#
# Artifacts live under build/llamacpp/ (git-ignored):
#   llama_cpp_python-*.tar.gz, llama_cpp_python-*/vendor/llama.cpp   the sources
#   bin/llama-server, bin/llama-quantize                              the build
#   model-f16.gguf, model-q8_0.gguf                                   the converted model
#   model-pooler-{f16,q8_0}.gguf                                      the workaround (below)
#   report-*.{json,md,png}                                            verify's reports
# tests/test_verify_llamacpp.py uses bin/llama-server and the GGUF files when present.
#
# Environment: PYTHON (crossrank's interpreter, default .venv/bin/python), MODEL (checkpoint,
# default the bundled crossrank/minilm-debian), DATA (BEIR dataset, default
# ../shared/data/debian-ir), QUERIES (50), JOBS (build jobs, 2).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/build/llamacpp
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
MODEL=${MODEL:-crossrank/minilm-debian}
DATA=${DATA:-$ROOT/../shared/data/debian-ir}
QUERIES=${QUERIES:-50}
JOBS=${JOBS:-2}
STAGES=${*:-build convert verify workaround verify_workaround}
mkdir -p "$OUT"

log() { echo "== $*" >&2; }
SERVER_PID=
trap '[ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true' EXIT

src_dir() { ls -d "$OUT"/llama_cpp_python-*/vendor/llama.cpp 2>/dev/null | tail -1; }

stage_build() {
    if [ -z "$(src_dir)" ]; then
        log "downloading llama-cpp-python's source package"
        (cd "$OUT" && "$PYTHON" -m pip download --no-binary :all: --no-deps llama-cpp-python -d .)
        (cd "$OUT" && tar xzf llama_cpp_python-*.tar.gz)
    fi
    local src
    src=$(src_dir)
    log "building llama-server from $src"
    cmake -S "$src" -B "$OUT/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DGGML_NATIVE=ON >"$OUT/cmake.log"
    nice -n 10 cmake --build "$OUT/cmake" -j "$JOBS" --target llama-server llama-quantize \
        >"$OUT/build.log"
    mkdir -p "$OUT/bin"
    cp "$OUT/cmake/bin/llama-server" "$OUT/cmake/bin/llama-quantize" "$OUT/bin/"
    "$OUT/bin/llama-server" --version 2>&1 | tail -2
}

stage_convert() {
    local src model_dir
    src=$(src_dir)
    model_dir=$("$PYTHON" -c "from crossrank.hub import resolve_model_dir; print(resolve_model_dir('$MODEL'))")
    # llama.cpp's own converter with the gguf-py of the same sources (numpy, torch and
    # transformers come from crossrank's environment); Q8_0 by the converter's --outtype
    for outtype in f16 q8_0; do
        log "converting $model_dir to $outtype"
        PYTHONPATH=$src/gguf-py "$PYTHON" "$src/convert_hf_to_gguf.py" "$model_dir" \
            --outtype "$outtype" --outfile "$OUT/model-$outtype.gguf" >"$OUT/convert-$outtype.log" 2>&1
    done
    ls -la "$OUT"/*.gguf
}

# llama.cpp's BERT converter drops bert.pooler.dense ("only using BERT for embeddings") and
# maps classifier.* to the output projection, so a BertForSequenceClassification GGUF scores
# classifier(CLS) instead of classifier(tanh(pooler(CLS))). The workaround: a copy of the
# checkpoint with RoBERTa's head names (classifier.dense = the pooler, classifier.out_proj),
# which the same converter maps to the head llama.cpp's graph already runs (cls + tanh + cls.output).
stage_workaround() {
    local src model_dir
    src=$(src_dir)
    model_dir=$("$PYTHON" -c "from crossrank.hub import resolve_model_dir; print(resolve_model_dir('$MODEL'))")
    rm -rf "$OUT/pooler-ckpt" && mkdir -p "$OUT/pooler-ckpt"
    cp "$model_dir"/*.json "$model_dir"/vocab.txt "$OUT/pooler-ckpt/" 2>/dev/null || true
    "$PYTHON" - "$model_dir/model.safetensors" "$OUT/pooler-ckpt/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
names = {"bert.pooler.dense.weight": "classifier.dense.weight",
         "bert.pooler.dense.bias": "classifier.dense.bias",
         "classifier.weight": "classifier.out_proj.weight",
         "classifier.bias": "classifier.out_proj.bias"}
tensors = load_file(sys.argv[1])
save_file({names.get(k, k): v.contiguous() for k, v in tensors.items()}, sys.argv[2])
PY
    for outtype in f16 q8_0; do
        log "converting the renamed checkpoint to $outtype"
        PYTHONPATH=$src/gguf-py "$PYTHON" "$src/convert_hf_to_gguf.py" "$OUT/pooler-ckpt" \
            --outtype "$outtype" --outfile "$OUT/model-pooler-$outtype.gguf" \
            >"$OUT/convert-pooler-$outtype.log" 2>&1
    done
}

# serve GGUF on a free port, run `crossrank verify` against it, stop it
verify_one() {
    local name=$1 port
    port=$("$PYTHON" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
    "$OUT/bin/llama-server" -m "$OUT/model-$name.gguf" --reranking --port "$port" \
        --host 127.0.0.1 -c 4096 -b 4096 -ub 4096 -np 2 -t 1 >"$OUT/server-$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
        sleep 0.2
    done
    log "verify: llama.cpp $name against crossrank fp32"
    (cd "$ROOT" && "$PYTHON" -m crossrank verify --model "$MODEL" \
        --dataset "$DATA" --split dev --run "$DATA/dev.bm25.top100.run" --top-k 100 \
        --max-queries "$QUERIES" --seed 0 \
        --candidate "llama.cpp-$name=url:http://127.0.0.1:$port/v1/rerank,api:llamacpp,scale:logit" \
        --concurrency 2 --output "$OUT/report-$name.json" --report "$OUT/report-$name.md") ||
        log "verify exit code $?"
    kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

stage_verify() {
    verify_one f16
    verify_one q8_0
}

stage_verify_workaround() {
    verify_one pooler-f16
    verify_one pooler-q8_0
}

for stage in $STAGES; do "stage_$stage"; done
