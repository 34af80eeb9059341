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

# Python dependencies (stamp file so repeated runs are quick).
$(VENV)/.deps: | $(PY)
	$(PY) -m pip install -q "paddlepaddle==$(PADDLE_VERSION)" numpy pytest pybind11 "setuptools<80" wheel matplotlib
	touch $@

setup: $(VENV)/.deps

# Header-only CUDA dependencies (cuDNN headers, cudnn-frontend, CUTLASS) for the CUDA build.
deps: setup
	@if [ -n "$(NVCC)" ] && [ -x tools/fetch_deps.sh ]; then PYTHON=$(PY) tools/fetch_deps.sh; fi

# The Paddle extension (CUDA sources compiled when nvcc is found), installed into the venv.
build: deps
	MAX_JOBS=$(JOBS) $(PY) tools/build_ext.py

# The framework-free core, its pybind11 module and the C++ tests (CPU-only here; the GPU machine
# builds the CUDA core with tools/gpu_check.sh).
core: setup
	cmake -S . -B build/core -G Ninja -DPTE_WITH_CUDA=OFF -DPython3_EXECUTABLE=$$(realpath $(PY)) >/dev/null
	cmake --build build/core -j $(JOBS)

test-cpp: core
	ctest --test-dir build/core --output-on-failure

test-py: build core
	PYTHONPATH=$(CURDIR)/build/core/python $(PY) -m pytest tests -q -ra

test: test-cpp test-py

demo: build
	$(PY) examples/demo.py

wheel: build
	$(PY) tools/build_wheel.py

clean:
	rm -rf build dist *.egg-info
