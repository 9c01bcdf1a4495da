# Every target creates .venv from nothing when it is absent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean bench gameday-tools

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

# The game day (tests/serve/test_gameday.py) runs a real Prometheus and Alertmanager: Debian's
# packages, installed with apt-get when absent (as root, or through passwordless sudo). Their
# maintainer scripts would start the services on 0.0.0.0, so a policy-rc.d that refuses every
# start is in place while apt-get runs. Without apt-get or root the build goes on and the game
# day skips, which this target says loudly.
gameday-tools:
	@if command -v prometheus >/dev/null 2>&1 && test -x /usr/bin/prometheus-alertmanager; then \
		exit 0; \
	fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else SUDO=none; fi; \
	if ! command -v apt-get >/dev/null 2>&1 || [ "$$SUDO" = none ]; then \
		echo "!!! GAME DAY WILL BE SKIPPED: prometheus/prometheus-alertmanager are absent and apt-get is unavailable or needs root"; \
		exit 0; \
	fi; \
	echo "installing Debian's prometheus and prometheus-alertmanager for the game day"; \
	POLICY=/usr/sbin/policy-rc.d; OWN=0; \
	if [ ! -e $$POLICY ]; then \
		printf '#!/bin/sh\nexit 101\n' | $$SUDO tee $$POLICY >/dev/null && $$SUDO chmod 755 $$POLICY && OWN=1; \
	fi; \
	$$SUDO apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus prometheus-alertmanager >/dev/null; \
	STATUS=$$?; \
	if [ $$OWN = 1 ]; then $$SUDO rm -f $$POLICY; fi; \
	if [ $$STATUS != 0 ]; then \
		echo "!!! GAME DAY WILL BE SKIPPED: apt-get install prometheus prometheus-alertmanager failed ($$STATUS)"; \
	fi; \
	for SVC in prometheus prometheus-alertmanager prometheus-node-exporter; do \
		if [ -x /etc/init.d/$$SVC ] && /etc/init.d/$$SVC status >/dev/null 2>&1; then \
			$$SUDO /etc/init.d/$$SVC stop >/dev/null 2>&1 || true; \
		fi; \
	done; \
	true

# The kernel tests run a second time with bounds checks compiled in (a cache of their own,
# so the unchecked cached kernels are not reused), beside the main run: both spend most of
# their time compiling kernels on one core, so on two cores the pair takes little longer than
# the main run alone. The checked run's output follows the main run's; either failing fails.
BOUNDS_LOG := .numba-boundscheck/pytest.log
test: $(STAMP) gameday-tools
	@mkdir -p .numba-boundscheck
	@NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=$(CURDIR)/.numba-boundscheck \
		HYPOTHESIS_STORAGE_DIRECTORY=$(CURDIR)/.numba-boundscheck/hypothesis \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/kernels >$(BOUNDS_LOG) 2>&1 & checked=$$!; \
	trap 'kill $$checked 2>/dev/null' INT TERM; \
	echo "kernel tests with NUMBA_BOUNDSCHECK=1 running beside the main run (pid $$checked)"; \
	$(BIN)/python -m pytest -q; main=$$?; \
	wait $$checked; bounds=$$?; \
	echo "=== kernel tests with NUMBA_BOUNDSCHECK=1 ==="; cat $(BOUNDS_LOG); \
	test $$main = 0 && test $$bounds = 0

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
