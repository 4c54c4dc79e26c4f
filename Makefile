# Two entry points for a fresh clone: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= test,onnx,openvino,server,eval,train,ray
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: venv test test-avx2 lint format demo doc-check clean bundled-model check-wheel image image-cuda

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

LINTED := src tests $(wildcard benchmarks/*.py)

# the suite in $(TEST_WORKERS) processes (pytest-xdist), one test file per process at a time, so a
# file's module fixtures (a Ray cluster, servers) are built once; TEST_WORKERS=0: one process
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# the instruction-set-dependent tests under an emulated AVX2-only CPU (qemu-user; ~10x slower)
test-avx2: venv
	PY=$(PY) scripts/test-isa.sh

lint: venv
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: venv
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

demo: venv
	$(PY) -m crossrank demo

# run every command of README.md and docs/*.md as written (scripts/doc-check.py; ~10 min on 2 cores)
doc-check: venv
	$(PY) scripts/doc-check.py

# retrain the bundled reranker models/minilm-debian (CPU, ~55 min; needs ../shared/data/debian-ir)
bundled-model: venv
	PY=$(PY) scripts/train-minilm-debian.sh ../shared/data/debian-ir build/minilm-debian

# the wheel and sdist of a fresh clone of HEAD, installed into fresh venvs: demo + serve offline
check-wheel:
	PYTHON=$(PYTHON) scripts/check-wheel.sh

# the CPU container image (podman), built and smoke-tested on the loopback (docs/container.md)
image:
	scripts/build-image.sh

# the CUDA image (Containerfile.cuda; ~2.7 GB of wheels from PyPI), smoke-tested the same way
image-cuda:
	CONTAINERFILE=Containerfile.cuda scripts/build-image.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
