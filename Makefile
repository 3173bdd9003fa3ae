# ood-nolabels: `make demo` runs the embedded benchmark, `make test` the test suite.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .make/installed

.PHONY: install demo test test-fast lint docs format clean bench gpu-check

# torch first and pinned: a torch range alone would pull a newer multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PIP) install "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install -e ".[dev,docs]"
	@mkdir -p $(@D) && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m ood_nolabels.train +experiment=digits

# One process per core (pytest-xdist), one torch thread each: the tests are many small runs, and
# two 2-thread processes on 2 cores only fight for them.
TEST_ARGS := -q -n auto
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m pytest $(TEST_ARGS)

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m pytest $(TEST_ARGS) -m "not slow"

# Every stage as a ratio to a bare PyTorch loop; rewrites benchmarks/RESULTS.md (about 10 min).
bench: $(STAMP)
	$(PYTHON) -m benchmarks.run_all

# On a GPU machine: writes benchmarks/GPU_CHECK.md in under 8 minutes (--dry-run: CPU, tiny).
gpu-check: $(STAMP)
	PYTHON=$(PYTHON) scripts/gpu_check.sh

# ruff, and the import contracts of pyproject.toml (one-way layers, no cycles, a light inference).
lint: $(STAMP)
	$(PYTHON) -m ruff check ood_nolabels tests benchmarks scripts
	$(PYTHON) -m ruff format --check ood_nolabels tests benchmarks scripts
	lint-imports

# The docs site into site/; --strict: a broken link, snippet or API reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --site-dir site

format: $(STAMP)
	$(PYTHON) -m ruff format ood_nolabels tests benchmarks scripts
	$(PYTHON) -m ruff check --fix ood_nolabels tests benchmarks scripts

clean:
	rm -rf outputs multirun_outputs/* site wandb lightning_logs .pytest_cache .ruff_cache .make
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
