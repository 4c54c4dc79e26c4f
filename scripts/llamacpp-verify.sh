#!/usr/bin/env bash
# Build llama.cpp's llama-server from PyPI's llama-cpp-python source package, convert a
# crossrank checkpoint to GGUF (f16 and Q8_0) with llama.cpp's own converter, serve each with
# --reranking and compare it with crossrank's exact fp32 scores using `crossrank verify`.
#
#   scripts/llamacpp-verify.sh [STAGE...]     stages: build convert verify (default: all)
#
# Artifacts live under build/llamacpp/ (git-ignored):
#   llama_cpp_python-*.tar.gz, llama_cpp_python-*/vendor/llama.cpp   the sources
#   bin/llama-server                                                  the build
#   model-f16.gguf, model-q8_0.gguf                                   the converted model
#   report-{f16,q8_0}.{json,md}                                       verify's reports
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
STAGES=${*:-build convert verify}
mkdir -p "$OUT"

log() { echo "== $*" >&2; }

src_dir() { ls -d "$OUT"/llama_cpp_python-*/vendor/llama.cpp 2>/dev/null | tail -1; }

stage_build() {
    if [ -z "$(src_dir)" ]; then
        log "downloading llama-cpp-python's source package"
        (cd "$OUT" && "$PYTHON" -m pip download --no-binary :all: --no-deps llama-cpp-python -d .)
        (cd "$OUT" && tar xzf llama_cpp_python-*.tar.gz)
    fi
    local src
    src=$(src_dir)
    log "building llama-server and llama-quantize from $src"
    cmake -S "$src" -B "$OUT/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DGGML_NATIVE=ON >"$OUT/cmake.log"
    nice -n 10 cmake --build "$OUT/cmake" -j "$JOBS" --target llama-server \
        >"$OUT/build.log"
    mkdir -p "$OUT/bin"
    cp "$OUT/cmake/bin/llama-server" "$OUT/bin/"
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

# serve GGUF on a free port, run `crossrank verify` against it, stop it
verify_one() {
    local name=$1 port
    port=$("$PYTHON" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
    "$OUT/bin/llama-server" -m "$OUT/model-$name.gguf" --reranking --port "$port" \
        --host 127.0.0.1 -c 4096 -b 4096 -ub 4096 -np 2 -t 1 >"$OUT/server-$name.log" 2>&1 &
    local pid=$!
    trap 'kill $pid 2>/dev/null || true' RETURN
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
        sleep 0.2
    done
    log "verify: llama.cpp $name against crossrank fp32"
    (cd "$ROOT" && "$PYTHON" -m crossrank verify --model "$MODEL" \
        --dataset "$DATA" --split dev --run "$DATA/dev.bm25.top100.run" --top-k 100 \
        --max-queries "$QUERIES" --seed 0 \
        --candidate "llama.cpp-$name=url:http://127.0.0.1:$port/v1/rerank,api:llamacpp" \
        --concurrency 2 --output "$OUT/report-$name.json" --report "$OUT/report-$name.md") ||
        true
}

stage_verify() {
    verify_one f16
    verify_one q8_0
}

for stage in $STAGES; do "stage_$stage"; done
