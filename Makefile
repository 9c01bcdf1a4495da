# Every target creates .venv from nothing when it is absent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU wheel first: with torch already satisfied, the extras pull no CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	# torchvision pinned to torch's release, or pip would replace torch; it and timm and
	# antialiased-cnns are only there to build the models the drop-in tests swap
	$(BIN)/python -m pip install -q torchvision==0.28.0 -e '.[all,dropin]'
	touch $(STAMP)

# The flagship tour: shape, bench, inspect/verify/diff, profile/drift, the study; a few minutes.
DEMO_OUT ?= avgpool-demo
demo: $(STAMP)
	$(BIN)/python examples/tour.py $(DEMO_OUT)

# The kernel tests run a second time with bounds checks compiled in (a cache of their own,
# so the unchecked cached kernels are not reused).
test: $(STAMP)
	$(BIN)/python -m pytest -q
	NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=$(CURDIR)/.numba-boundscheck $(BIN)/python -m pytest -q tests/kernels

# Not part of `make test`: minutes of timing; writes benchmarks/results/latest.{json,md}.
# BENCH_ARGS=--quick for a smoke run, or e.g. BENCH_ARGS="--cases 'avg3x3*' --threads 1".
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis .numba-boundscheck avgpool-demo avgpool-study
