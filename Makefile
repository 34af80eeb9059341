# paddle_te: two commands do everything on a fresh Linux machine.
#   make demo   - set up, build, and run the main job (a small encoder-decoder trained with paddle_te)
#   make test   - set up, build, and run every test suite (C++ ctest + pytest)
# Everything is installed into a private virtual environment (.venv); nothing by hand.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PADDLE_VERSION ?= 3.3.1
JOBS ?= 2
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
export PATH := $(if $(NVCC),$(dir $(NVCC)):,)$(PATH)

.PHONY: all setup deps build core test test-cpp test-py demo wheel clean

all: build

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Python dependencies (stamp file so repeated runs are quick). paddleformers is for the
# integration tests (tests/test_paddleformers.py) and examples/paddleformers_flashmask.py; it
# does not depend on paddlepaddle, so the pin above is what the venv keeps (it pulls numpy < 2).
PADDLEFORMERS_VERSION ?= 1.2.0
$(VENV)/.deps: | $(PY)
	$(PY) -m pip install -q "paddlepaddle==$(PADDLE_VERSION)" numpy pytest pybind11 "setuptools<80" wheel matplotlib cmake ninja \
	  "paddleformers==$(PADDLEFORMERS_VERSION)"
	touch $@

setup: $(VENV)/.deps

# Header-only CUDA dependencies (cuDNN headers, cudnn-frontend, CUTLASS) for the CUDA build.
deps: setup
	@if [ -n "$(NVCC)" ] && [ -x tools/fetch_deps.sh ]; then PYTHON=$(PY) tools/fetch_deps.sh; fi

# The Paddle extension (CUDA sources compiled when nvcc is found), built in place: setup.py builds
# the core through CMakeLists.txt (build/paddle_core_*) and links the Paddle glue against it.
build: deps
	# CUDA sources are compiled wherever nvcc is (also against a CPU Paddle: the CI build check).
	# The output is kept in build/build.log for tests/test_build.py (compiler diagnostics).
	mkdir -p build
	set -o pipefail; PADDLE_TE_WITH_CUDA=$(if $(NVCC),1,0) MAX_JOBS=$(JOBS) $(PY) setup.py build_ext --inplace 2>&1 | tee build/build.log

# The framework-free core, its pybind11 module and the C++ tests (CPU-only here; the GPU machine
# builds the CUDA core with tools/gpu_check.sh).
core: setup
	$(VENV)/bin/cmake -S . -B build/core -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
	  -DPTE_WITH_CUDA=OFF -DPython3_EXECUTABLE=$$(realpath $(PY)) >/dev/null
	$(VENV)/bin/cmake --build build/core -j $(JOBS)

test-cpp: core
	$(VENV)/bin/ctest --test-dir build/core --output-on-failure

test-py: build core
	PYTHONPATH=$(CURDIR)/build/core/python $(PY) -m pytest tests -q -ra

test: test-cpp test-py

# The main job (examples/demo.py). Options through DEMO_ARGS, e.g. make demo DEMO_ARGS="--steps 500".
# Output: a summary table, out/demo_loss.png, out/demo_summary.json, out/demo_model/.
DEMO_ARGS ?=
demo: build
	$(PY) examples/demo.py $(DEMO_ARGS)

# dist/paddle_te-*.whl, then installed into a fresh venv with the same Paddle and smoke-tested.
# Release wheels carry every head dim (PTE_HDIMS=all); development and CI builds default to the
# two the tests use (64;128), which keeps the CI build within minutes.
wheel: deps
	PTE_HDIMS=$${PTE_HDIMS:-all} MAX_JOBS=$(JOBS) $(PY) tools/build_wheel.py

clean:
	rm -rf build dist *.egg-info
