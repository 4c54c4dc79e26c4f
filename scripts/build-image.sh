#!/usr/bin/env bash
# Build the CPU image of `crossrank serve` (Containerfile) with podman and smoke-test it
# (`make image`; docs/container.md). CONTAINERFILE=Containerfile.cuda builds the CUDA image
# instead (torch and the CUDA libraries from PyPI, ~2.7 GB of wheels) and smoke-tests it the
# same way, on the CPU when the machine has no GPU:
#
#   1. the base: $BASE if set; else python:3.11-slim-bookworm if it can be pulled; else a
#      minimal Debian bookworm with python3 + venv made here with debootstrap and imported as
#      localhost/crossrank-base (kept for later builds; REBUILD_BASE=1 remakes it);
#   2. podman build from the working tree; torch from $WHEELS (default /opt/wheels, bind-mounted
#      into the build) when it holds a torch wheel, else from PyTorch's CPU index;
#   3. smoke test, loopback only, offline (HF_HUB_OFFLINE=1), the cache on a named volume:
#      the user is not root; (a) --network=none with models/minilm-debian mounted read-only as
#      the model and the image's default address 0.0.0.0:8080 (checked from inside with podman
#      exec): GET /health 200, one POST /rerank, the image's health check, podman stop -> exit
#      0; (b) --network=host, the bundled model by name, the server on 127.0.0.1:$PORT: GET
#      /health, one POST /rerank, then SIGTERM (podman stop) while a request is in flight: it is
#      answered 200 and the container exits 0.
#
# Environment: IMAGE (default localhost/crossrank:cpu, :cuda for Containerfile.cuda), BASE, WHEELS, CA_BUNDLE (the host's CA
# certificates, default /etc/ssl/certs/ca-certificates.crt, mounted into the build), PORT (loopback port of
# the smoke test, default 18080), PODMAN_ARGS (default: --runtime runc --cgroup-manager=cgroupfs),
# CONTAINERS_CONF (default: build/image/containers.conf, written here with default_ulimits = []),
# SMOKE=0 to build only. Run as root (debootstrap, podman's rootful storage).
set -euo pipefail

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
cd "$repo"
CONTAINERFILE=${CONTAINERFILE:-Containerfile}
IMAGE=${IMAGE:-localhost/crossrank:$([ "$CONTAINERFILE" = Containerfile.cuda ] && echo cuda || echo cpu)}
PY_BASE=docker.io/library/python:3.11-slim-bookworm
DEB_BASE=localhost/crossrank-base
WHEELS=${WHEELS:-/opt/wheels}
PORT=${PORT:-18080}
read -r -a podman_args <<<"${PODMAN_ARGS:---runtime runc --cgroup-manager=cgroupfs}"
mkdir -p build/image
if [ -z "${CONTAINERS_CONF:-}" ]; then
    export CONTAINERS_CONF="$repo/build/image/containers.conf"
    printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"
fi
# podman, without its complaint that it cannot set up health-check timers: there is no systemd
# here; `podman healthcheck run` runs the image's check once
pm() { podman "${podman_args[@]}" "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
step() { echo "== build-image: $*"; }

make_debian_base() {
    # minbase: essential packages only, plus python3 with venv (ensurepip) and CA certificates
    local root=build/image/base-root
    step "debootstrap a minimal Debian bookworm into $root and import it as $DEB_BASE"
    rm -rf "$root"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" http://deb.debian.org/debian >build/image/debootstrap.log 2>&1 ||
        { tail -20 build/image/debootstrap.log; exit 1; }
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
    tar --numeric-owner -C "$root" -c . | pm import \
        --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV=LANG=C.UTF-8' --change 'CMD=["/bin/bash"]' - "$DEB_BASE" >/dev/null
    rm -rf "$root"
}

if [ -z "${BASE:-}" ]; then
    if pm image exists "$PY_BASE" || pm pull -q "$PY_BASE" >/dev/null 2>&1; then
        BASE=$PY_BASE
    else
        echo "build-image: $PY_BASE cannot be pulled (no registry); using a Debian base"
        BASE=$DEB_BASE
        if [ "${REBUILD_BASE:-0}" = 1 ] || ! pm image exists "$DEB_BASE"; then make_debian_base; fi
    fi
fi
step "base $BASE: $(pm run --rm --network=host "$BASE" python3 --version)"

build_args=(--build-arg "BASE=$BASE")
# the host's CA bundle, for an index reached through a TLS-inspecting proxy (as here)
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$CA_BUNDLE" ]; then
    build_args+=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
fi
if [ "$CONTAINERFILE" = Containerfile ] && compgen -G "$WHEELS/torch-*.whl" >/dev/null; then
    echo "build-image: torch from the local wheels in $WHEELS: $(cd "$WHEELS" && ls torch-*.whl)"
    build_args+=(--volume "$WHEELS:/wheels:ro" --build-arg TORCH_INDEX_URL=)
fi
step "podman build -f $CONTAINERFILE -t $IMAGE (working tree)"
pm build --network=host --format docker -f "$CONTAINERFILE" -t "$IMAGE" "${build_args[@]}" . \
    >build/image/build.log 2>&1 || { tail -40 build/image/build.log; exit 1; }
pm images --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$IMAGE" | sed 's/^/  /'
size=$(pm image inspect --format '{{.Size}}' "$IMAGE")
echo "  $((size / 1000000)) MB"
[ "${SMOKE:-1}" = 1 ] || exit 0

step "smoke test"
name=crossrank-smoke-$$
volume=crossrank-smoke-cache-$$
cleanup() {
    pm rm -f "$name" "$name-offline" >/dev/null 2>&1 || true
    pm volume rm -f "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT
user=$(pm run --rm --network=host --no-healthcheck --entrypoint id "$IMAGE")
echo "  user: $user"
[[ $user == uid=1000\(crossrank\)* ]] || { echo "build-image: FAIL: the image runs as $user"; exit 1; }
pm volume create "$volume" >/dev/null

# 1. offline with a mounted model and no network at all: the image's defaults (0.0.0.0:8080,
#    inside the container's own network namespace, which has only a loopback); the checks
#    run inside the container (podman exec)
echo "  -- offline: --network=none, the model mounted read-only at /model"
run_args=(--network=none -v "$repo/models/minilm-debian:/model:ro"
    -v "$repo/scripts/smoke_serve.py:/opt/smoke_serve.py:ro" -v "$volume:/cache"
    -e CROSSRANK_MODEL=/model -e HF_HUB_OFFLINE=1 -e OMP_NUM_THREADS=1)
pm run -d --name "$name-offline" "${run_args[@]}" "$IMAGE" >/dev/null
echo "  podman run -d --network=none -v models/minilm-debian:/model:ro -v $volume:/cache -e CROSSRANK_MODEL=/model -e HF_HUB_OFFLINE=1 $IMAGE"
echo "  container command: $(pm inspect --format '{{.Path}} {{join .Args " "}}' "$name-offline")"
pm exec "$name-offline" python3 /opt/smoke_serve.py --url http://127.0.0.1:8080 --wait 300 |
    sed 's/^/  /' || { pm logs "$name-offline" 2>&1 | tail -20; exit 1; }
pm healthcheck run "$name-offline" && echo "  podman healthcheck run (the image's HEALTHCHECK): healthy"
pm logs "$name-offline" 2>&1 | grep -m1 'Uvicorn running' | sed 's/^/  log: /'
echo "  cache volume, as the image's user: $(pm exec "$name-offline" sh -c \
    'touch /cache/.writable && stat -c "%A %U:%G %n" /cache')"
pm stop -t 60 "$name-offline" >/dev/null
rc=$(pm inspect --format '{{.State.ExitCode}}' "$name-offline")
echo "  podman stop: exit code $rc"
[ "$rc" = 0 ] || { echo "build-image: FAIL: exit code $rc"; exit 1; }

# 2. on the host's network, the bundled model by name; the server binds 127.0.0.1 only (flag
#    after the image name), so that nothing listens beyond the loopback during the test; then
#    SIGTERM (podman stop) while a request is being scored
echo "  -- --network=host, the bundled model by name, SIGTERM while a request is in flight"
pm run -d --name "$name" --network=host -v "$volume:/cache" \
    -e HF_HUB_OFFLINE=1 -e OMP_NUM_THREADS=1 -e CROSSRANK_MODEL=crossrank/minilm-debian \
    -e CROSSRANK_PORT="$PORT" "$IMAGE" --host 127.0.0.1 >/dev/null
echo "  podman run -d --network=host -v $volume:/cache -e HF_HUB_OFFLINE=1 -e CROSSRANK_MODEL=crossrank/minilm-debian -e CROSSRANK_PORT=$PORT $IMAGE --host 127.0.0.1"
python3 scripts/smoke_serve.py --url "http://127.0.0.1:$PORT" --wait 300 \
    --drain "podman ${podman_args[*]} stop -t 60 $name" | sed 's/^/  /' ||
    { pm logs "$name" 2>&1 | tail -20; exit 1; }
rc=$(pm inspect --format '{{.State.ExitCode}}' "$name")
echo "  container exited with $rc after SIGTERM; its last log lines:"
pm logs "$name" 2>&1 | tail -6 | sed 's/^/    /'
[ "$rc" = 0 ] || { echo "build-image: FAIL: exit code $rc"; exit 1; }
step "OK: $IMAGE"
