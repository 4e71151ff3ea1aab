# The two README commands: `make quick` (set up, fetch data, run the quick preset) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
DATA ?= data

.PHONY: setup data-quick quick smoke test dry-run report clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Fashion-MNIST: Debian's dataset-fashion-mnist package when apt is usable, else torchvision's download.
data-quick: setup
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } || true; \
	fi
	$(BIN)/python -m harness.cli.fetch_data --dataset fashionmnist --root $(DATA)

quick: data-quick
	$(BIN)/snakemake --configfile config/quick.yaml --cores $(CORES) --rerun-incomplete

smoke: setup
	$(BIN)/snakemake --configfile config/smoke.yaml --cores $(CORES) --rerun-incomplete

dry-run: setup
	$(BIN)/snakemake -n

report: setup
	$(BIN)/snakemake --configfile config/quick.yaml --report report.zip

test: setup
	$(BIN)/python -m pytest -q
