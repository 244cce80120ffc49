# nlrepro: every target bootstraps .venv by itself the first time (stamp file).
# PROFILE=timeline|proxy|relations|kinetics  LAUNCHER=local|slurm  (defaults: timeline, local)
# The default profile is nlrepro.choices.DEFAULT_PROFILE's (tests/test_readme.py checks it).
PROFILE ?= timeline
LAUNCHER ?= local
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NLREPRO := $(BIN)/nlrepro
TABLES := 2a 2b 2c 2d 2e 2f 2g
GRIDS := $(addprefix experiments/table,$(addsuffix .yaml,$(TABLES)))
PYTEST_ARGS ?=
# Seeds other than the grids' (held-out seeds): make heldout PROFILE=timeline SEEDS="3 4"
SEEDS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast test-slurm bench gpu-check status tables claims heldout figure3 proxy-data clean \
	$(addprefix table,$(TABLES))

help: ## list the targets
	@awk -v tables="$(TABLES)" 'BEGIN {FS = ":.*## "} /^[a-z0-9%-]+:.*## / {printf "  %-14s %s\n", $$1, $$2} /^\$$\(addprefix table,.*## / {n = split(tables, t, " "); for (i = 1; i <= n; i++) printf "  %-14s %s\n", "table" t[i], $$2}' $(MAKEFILE_LIST)

# The pinned torch is PyPI's CUDA build (torchvision's wheels need it, even on a CPU): about
# 6 GiB installed. --no-cache-dir keeps pip from holding a second copy of every wheel in
# ~/.cache while it installs; the check below names the problem before pip's ENOSPC does.
SETUP_NEEDS_MIB := 10240
$(STAMP): pyproject.toml constraints.txt
	@free=$$(df -Pm . | awk 'NR==2 {print $$4}'); \
	if [ "$$free" -lt $(SETUP_NEEDS_MIB) ]; then \
	  echo "make setup: $$free MiB free on $$(df -P . | awk 'NR==2 {print $$6}'), the install needs about $(SETUP_NEEDS_MIB) MiB at its peak; it may fail with 'No space left on device'" >&2; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-cache-dir --upgrade pip
	$(BIN)/pip install --quiet --no-cache-dir -c constraints.txt -e '.[dev]'
	touch $@

setup: $(STAMP) ## create .venv with the pinned versions (constraints.txt)

test: $(STAMP) ## run the test suite (slow tests included, SLURM tests skipped)
	$(BIN)/python -m pytest -m "not slurm" $(PYTEST_ARGS)

test-fast: $(STAMP) ## the test suite without slow tests
	$(BIN)/python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

test-slurm: $(STAMP) ## bring up a local SLURM cluster (root, Debian) and run its tests
	$(BIN)/python -m pytest -m slurm $(PYTEST_ARGS)

bench: $(STAMP) ## CPU (and GPU if present) benchmarks -> results/bench/
	$(BIN)/python benchmarks/run_all.py

gpu-check: $(STAMP) ## a few minutes on a lent GPU -> results/bench/gpu_check.* (CPU fallback without)
	$(BIN)/python benchmarks/bench_gpu.py --check

$(addprefix table,$(TABLES)): table%: $(STAMP) ## sweep, collect, render this paper table
	$(NLREPRO) sweep experiments/table$*.yaml --profile $(PROFILE) --launcher $(LAUNCHER)
	$(NLREPRO) collect --profile $(PROFILE)
	$(NLREPRO) table $* --profile $(PROFILE)

# The same steps as table<X> for every table, with one collect and one rendering process
# (a second `make tables` launches nothing and is done in about a minute).
tables: $(STAMP) ## all of Table 2 (a)-(g), then the claims scorecard
	$(NLREPRO) sweep $(GRIDS) --profile $(PROFILE) --launcher $(LAUNCHER)
	$(NLREPRO) collect --profile $(PROFILE)
	$(NLREPRO) table $(TABLES) --profile $(PROFILE)
	$(NLREPRO) claims --profile $(PROFILE)

claims: $(STAMP) ## the paper's findings checked against the runs -> paper_tables/<profile>/claims.*
	$(NLREPRO) collect --profile $(PROFILE)
	$(NLREPRO) claims --profile $(PROFILE) $(if $(SEEDS),--seeds $(SEEDS))

# Every grid on SEEDS instead of the grids' seeds, then the scorecard of those seeds alone
# (paper_tables/<profile>/seeds-<a>-<b>/): does a verdict survive seeds never looked at?
heldout: $(STAMP) ## the scorecard on other seeds, e.g. SEEDS="3 4" -> paper_tables/<profile>/seeds-3-4/
	@test -n "$(SEEDS)" || { echo 'make heldout: SEEDS is empty; give the seeds, e.g. SEEDS="3 4"'; exit 2; }
	$(NLREPRO) sweep $(GRIDS) --profile $(PROFILE) --launcher $(LAUNCHER) --seeds $(SEEDS)
	$(NLREPRO) collect --profile $(PROFILE)
	$(NLREPRO) claims --profile $(PROFILE) --seeds $(SEEDS)

status: $(STAMP) ## state of every run of every table
	$(NLREPRO) sweep $(GRIDS) --profile $(PROFILE) --status

figure3: $(STAMP) ## Figure 3 attention maps from a proxy 5-block NL model (Table 2c's)
	$(NLREPRO) attention auto --best --block strongest --video example --profile $(PROFILE) --out paper_tables/$(PROFILE)/figure3.png

proxy-data: $(STAMP) ## write the synthetic proxy videos (done automatically when missing)
	$(NLREPRO) make-proxy-data --profile $(PROFILE)

# What the proxy writes under data/ by itself; prepared Kinetics (data/kinetics400) and any other
# data there is never removed.
PROXY_DATA := data/proxy data/proxy-long data/relations data/relations-long data/timeline \
	data/timeline-long

clean: ## remove .venv and the proxy's generated data (results and Kinetics are kept)
	rm -rf $(VENV) $(PROXY_DATA)
	rm -f data/pretrained/frames_*.pt
	-rmdir data/pretrained data 2>/dev/null || true
