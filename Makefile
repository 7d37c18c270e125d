# Two entry points a newcomer needs: `make demo` (the whole pipeline on synthetic video, CPU is enough) and
# `make test` (`make test-fast` leaves out the slow end-to-end tests). Both create the virtual environment in .venv
# on first use. `make gpu-check` is for a machine with a GPU: every check of the CUDA path, one report
# (tools/gpu_check.sh).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup samples demo test test-fast gpu-check clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py lib/__init__.py lib/ops/cuda_toolkit.py $(wildcard lib/ops/csrc/*)
	# The README's two install lines. First the package with every dependency and the dev extra; pip's build
	# isolation hides torch from setup.py, so nothing is compiled yet.
	$(BIN)/pip install -e ".[dev]"
	# Then the compiled extensions, against the torch installed above (no build isolation): resample2d for CUDA where
	# a toolkit exists, the CPU label kernels where a C++ compiler does (setup.py skips either otherwise).
	$(BIN)/pip install --no-build-isolation -e .
	$(BIN)/python -c "import lib.ops; print('resample2d CUDA extension built:', lib.ops.cuda_extension_available())"
	$(BIN)/python -c "from lib.ops import upsample_argmax; print('CPU label kernels built:', upsample_argmax.available())"
	touch $@

setup: $(VENV)/.installed

# THREADS=N: torch's CPU threads of the demo (--threads N; default OMP_NUM_THREADS, else every CPU this process may
# use). Checked as plain digits, unexpanded, before make or a shell reads it.
DIGITS := 0 1 2 3 4 5 6 7 8 9
without_digits = $(if $(2),$(call without_digits,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,10,$(2))),$(1))
ifneq ($(filter demo,$(MAKECMDGOALS))$(value THREADS),$(filter demo,$(MAKECMDGOALS)))
ifneq ($(words $(value THREADS))/$(call without_digits,$(value THREADS),$(DIGITS)),1/)
$(error THREADS=$(value THREADS): expected a whole number of threads, e.g. make demo THREADS=1)
endif
endif

demo: setup
	$(BIN)/python tools/demo.py $(if $(value THREADS),--threads $(value THREADS)) $(ARGS)

# Real sample media for the video tests (OpenCV's sample videos, one damaged), fetched once into .cache/: Debian's
# opencv-doc package. Where apt-get is missing or fails the tests that need them say so and are skipped.
OPENCV_SAMPLES_DIR ?= .cache/opencv-samples
samples: $(OPENCV_SAMPLES_DIR)/.fetched

$(OPENCV_SAMPLES_DIR)/.fetched:
	@rm -rf .cache/deb && mkdir -p .cache/deb "$(OPENCV_SAMPLES_DIR)"
	@((cd .cache/deb && (apt-get download opencv-doc >/dev/null 2>&1 || \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get download opencv-doc >/dev/null 2>&1)) && \
	  dpkg -x opencv-doc_*.deb x) && cp .cache/deb/x/usr/share/doc/opencv-doc/examples/data/*.avi \
	  "$(OPENCV_SAMPLES_DIR)/" && rm -rf .cache/deb && touch "$@") || \
	  echo "samples: could not fetch Debian's opencv-doc; the tests that read real videos will be skipped"

test: setup samples
	$(BIN)/python -m pytest $(ARGS)

# The suite without the end-to-end tests marked slow (subprocesses, whole pipelines): for the edit-test loop.
test-fast: setup samples
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# Not `gpu-check: setup`: without a GPU the script stops in one line before installing anything.
gpu-check:
	@PYTHON=$(PYTHON) VENV=$(VENV) tools/gpu_check.sh $(ARGS)

clean-venv:
	rm -rf $(VENV)
