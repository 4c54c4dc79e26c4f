#!/usr/bin/env bash
# The package a user installs, checked end to end (`make check-wheel`):
#
#   1. a fresh `git clone` of this repository's HEAD (committed files only);
#   2. `python -m build` there: the sdist, then the wheel built from the sdist;
#   3. the wheel carries the bundled model and example and nothing of tests/ or benchmarks/;
#      the sdist carries the bundled model too;
#   4. for the wheel and for the sdist, each in a fresh venv: pip install "<file>[server]" with
#      the CPU torch pin of constraints.txt, then, offline (HF_HUB_OFFLINE=1, empty caches, run
#      outside the clone): `crossrank demo`, and `crossrank serve -m crossrank/minilm-debian`
#      on 127.0.0.1 with GET /health, one POST /rerank and SIGTERM while a request is in flight
#      (scripts/smoke_serve.py), the server exiting 0.
#
# Environment: PYTHON (default python3, >= 3.10); KEEP=1 keeps the work directory;
# PIP_* variables reach pip as usual (on the project's machines pip's own configuration finds
# the CPU torch wheel on local disk; elsewhere PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu).
# Needs the network only for the package index (build backend, dependencies).
set -euo pipefail

PYTHON=${PYTHON:-python3}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
head=$(git -C "$repo" rev-parse HEAD)
work=$(mktemp -d "${TMPDIR:-/tmp}/crossrank-check-wheel.XXXXXX")
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill "$server_pid"; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "check-wheel: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
step() { echo "== check-wheel: $*"; }
# pip, without the warnings of this machine's pip configuration about absent local index pages
pip_() { "$@" 2> >(grep -v 'is neither a file nor a directory' >&2); }

if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    echo "check-wheel: note: uncommitted changes are not checked (the clone has HEAD only)"
fi

step "clone $repo at ${head:0:12}"
git clone -q --no-local "$repo" "$work/src"
git -C "$work/src" checkout -q --detach "$head"

step "build sdist and wheel (python -m build)"
"$PYTHON" -m venv "$work/tools"
pip_ "$work/tools/bin/pip" install -q build trove-classifiers
"$work/tools/bin/python" -m build -q --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 ||
    { tail -40 "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/crossrank-*.whl)
sdist=$(ls "$work"/dist/crossrank-*.tar.gz)
ls -l "$wheel" "$sdist" | awk '{print "  " $5 " bytes  " $NF}'

step "contents"
"$work/tools/bin/python" - "$wheel" "$sdist" <<'EOF'
import sys, tarfile, zipfile

from trove_classifiers import classifiers as known

wheel, sdist = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
must = [
    "crossrank/bundled/minilm-debian/config.json",
    "crossrank/bundled/minilm-debian/model.safetensors",
    "crossrank/bundled/minilm-debian/tokenizer.json",
    "crossrank/bundled/example/documents.jsonl",
    "crossrank/bundled/example/query.txt",
]
problems = [f"wheel lacks {m}" for m in must if m not in names]
banned = [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "scripts", "models")
          or "/tests/" in n or "/benchmarks/" in n or n.endswith(".pyc")]
problems += [f"wheel carries {n}" for n in banned]
meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
meta = meta.decode()
for field in ("License-Expression: Apache-2.0", "Classifier:", "Keywords:", "Requires-Dist: torch",
              "Provides-Extra: server", "Description-Content-Type: text/markdown"):
    if field not in meta:
        problems.append(f"wheel METADATA lacks {field!r}")
given = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Classifier: ")]
problems += [f"unknown classifier {c!r}" for c in given if c not in known]
if not any(n.endswith("licenses/LICENSE") for n in names):
    problems.append("wheel lacks the LICENSE file")
top = sorted({n.split("/")[0] for n in names})
size = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist())
print(f"  wheel METADATA: {len(given)} classifiers (all known), license, keywords, extras")
print(f"  wheel: {len(names)} files, {size / 2**20:.1f} MiB unpacked; top level: {', '.join(top)}")
snames = tarfile.open(sdist).getnames()
if not any(n.endswith("crossrank/bundled/minilm-debian/model.safetensors") for n in snames):
    problems.append("sdist lacks the bundled model")
print(f"  sdist: {len(snames)} entries; tests/ included: "
      f"{any('/tests/' in n for n in snames)}, benchmarks/ included: "
      f"{any('/benchmarks/' in n for n in snames)}")
for p in problems:
    print(f"check-wheel: FAIL: {p}")
sys.exit(1 if problems else 0)
EOF

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for artifact in "$wheel" "$sdist"; do
    kind=$([[ $artifact == *.whl ]] && echo wheel || echo sdist)
    venv="$work/venv-$kind"
    step "$kind: install into a fresh venv: pip install -c constraints.txt '$(basename "$artifact")[server]'"
    "$PYTHON" -m venv "$venv"
    pip_ "$venv/bin/pip" install -q -c "$work/src/constraints.txt" "$artifact[server]"
    "$venv/bin/python" -c 'import crossrank, torch; print(f"  crossrank {crossrank.__version__} from {crossrank.__file__}; torch {torch.__version__}")'

    run="$work/run-$kind"
    mkdir -p "$run/hf" "$run/cache"
    # offline, with empty caches, outside the clone (nothing to import or find by accident)
    export HF_HUB_OFFLINE=1 HF_HOME="$run/hf" CROSSRANK_CACHE="$run/cache" OMP_NUM_THREADS=1
    unset CROSSRANK_DEBIAN_IR PYTHONPATH
    step "$kind: crossrank demo (offline)"
    (cd "$run" && "$venv/bin/crossrank" demo) | tee "$run/demo.log" | sed 's/^/  /'
    # the example query is about downloading files from the web: wget ranks first
    grep -qE '^ +1 +[-0-9.]+ +wget ' "$run/demo.log" ||
        { echo "check-wheel: FAIL: crossrank demo did not rank wget first"; exit 1; }

    port=$(free_port)
    step "$kind: crossrank serve -m crossrank/minilm-debian --host 127.0.0.1 --port $port (offline)"
    (cd "$run" && exec "$venv/bin/crossrank" serve -m crossrank/minilm-debian --host 127.0.0.1 \
        --port "$port") >"$run/serve.log" 2>&1 &
    server_pid=$!
    if ! "$PYTHON" "$work/src/scripts/smoke_serve.py" --url "http://127.0.0.1:$port" --wait 300 \
        --drain "kill -TERM $server_pid" | sed 's/^/  /'; then
        tail -20 "$run/serve.log"; exit 1
    fi
    rc=0; wait "$server_pid" || rc=$?
    server_pid=
    echo "  crossrank serve exited with $rc after SIGTERM"
    [ "$rc" = 0 ] || { tail -20 "$run/serve.log"; exit 1; }
    unset HF_HUB_OFFLINE HF_HOME CROSSRANK_CACHE
done
step "OK: the wheel and the sdist of ${head:0:12} install, demo and serve offline"
