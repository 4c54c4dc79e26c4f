#!/usr/bin/env bash
# Run the tests whose results depend on the CPU's instruction set (pytest -m isa: the int8 and
# bf16 paths, backend="auto", the parity tests of every family) under an emulated CPU, so an
# AVX2-only machine is tested from any x86-64 host. `make test-avx2` runs it.
#
#   scripts/test-isa.sh [pytest args...]      QEMU_CPU=Haswell (default) PY=.venv/bin/python
#
# qemu-user (Debian: apt-get install qemu-user) emulates the CPU's instructions and its CPUID:
# torch (oneDNN) and ONNX Runtime (MLAS) pick their AVX2 kernels, as on a real AVX2-only CPU.
# /proc/cpuinfo still shows the host's flags, which is why crossrank reads CPUID
# (crossrank.cpu). Emulation is about 10x slower than the host: minutes, not part of make test.
#
# numpy's own AVX2 sort kernels give wrong orders under qemu 7.2 (np.argsort of two nearly
# equal random arrays: rank correlation 0.889 instead of 0.999), so numpy's run-time dispatch
# is held at its x86-64-v2 baseline here: numpy computes the tests' comparisons, not the
# scores under test.
set -euo pipefail
cd "$(dirname "$0")/.."
cpu=${QEMU_CPU:-Haswell}
py=${PY:-.venv/bin/python}
case "$cpu" in
  Haswell|Haswell-*|Broadwell|Broadwell-*|EPYC|EPYC-Rome|EPYC-Milan) expect=avx2 ;;
  *) echo "test-isa: QEMU_CPU=$cpu: no expected feature set known; add it here" >&2; exit 2 ;;
esac
if [ "$(uname -m)" != x86_64 ]; then
  echo "test-isa: needs an x86-64 host (qemu-x86_64 emulates x86-64 CPUs)" >&2
  exit 2
fi
if ! command -v qemu-x86_64 >/dev/null; then
  echo "test-isa: qemu-x86_64 not found; install it with: apt-get install qemu-user" >&2
  exit 2
fi
export CROSSRANK_EXPECT_FEATURES=$expect
export NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL"
echo "test-isa: pytest -m isa under qemu-x86_64 -cpu $cpu (kernels must see: $expect)"
exec qemu-x86_64 -cpu "$cpu" "$py" -m pytest -q -m isa -p no:cacheprovider "$@" 2> >(grep -v "TCG doesn't support" >&2)
