# Every target creates .venv from nothing when it is absent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU wheel first: with torch already satisfied, the extras pull no CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/avgpool shape 1x3x5x5 --kernel 3 --stride 2 --padding same --convention tensorflow
	$(BIN)/avgpool shape 1x3x5x5 --kernel 3 --stride 2 --padding same --convention flax
	$(BIN)/avgpool shape 1x3x6x6 --kernel 3 --stride 2 --padding 1 --ceil-mode --convention torch

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
