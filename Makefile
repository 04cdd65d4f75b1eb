# medfed: the two commands are `make demo` and `make test`. Both bootstrap idempotently.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.medfed-installed
NPM_STAMP := node_modules/.medfed-installed
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.medfed-installed
DEMO_DIR ?= .demo

.PHONY: bootstrap test demo down lint bench bench-deps clean contracts cid-vectors

bootstrap: $(STAMP) $(NPM_STAMP)

# The venv: torch pinned to the local CPU wheel first (so nothing pulls a CUDA build), then the project.
$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh python "$(VENV)"
	touch $@

$(NPM_STAMP): package.json package-lock.json
	bash scripts/bootstrap.sh node
	touch $@

# Three workers (pytest-xdist), one test file each at a time: much of the suite's time is
# federations waiting on chain deadlines and an idle chain, not CPU (README, "Two commands").
TEST_WORKERS ?= 3

test: bootstrap
	bash scripts/bootstrap.sh system
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

demo: bootstrap
	$(VENV)/bin/medfed-localnet up --nodes 3 --rounds 2 --model default --dir $(DEMO_DIR) --fresh

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The Flower baseline of bench/round.py (the `bench` extra), in a venv of its own; make test never needs it.
$(BENCH_STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh bench "$(BENCH_VENV)"
	touch $@

bench-deps: $(BENCH_STAMP)

bench: bootstrap bench-deps
	for b in bench/*.py; do [ "$$b" = bench/flower_baseline.py ] || $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) $(BENCH_VENV) node_modules $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache

# Recompile contracts/src into contracts/build (committed; a test fails when they are stale).
contracts: bootstrap
	$(PY) -m chain.artifacts --compile

# Regenerate the CID test vectors with a real IPFS implementation (ipfs-unixfs-importer, Node).
cid-vectors:
	cd scripts/cid-vectors && npm ci --no-audit --no-fund --loglevel=error && node generate.mjs

# Stop what `make demo` left running (the devnet and the explorer).
down:
	$(VENV)/bin/medfed-localnet down --dir $(DEMO_DIR)
