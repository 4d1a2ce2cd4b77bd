# Every target installs what it needs: a fresh clone needs only python3 (3.10+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install browser container-tools lint test demo bench bench-build clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The docs page is tested in a real headless browser: Debian's chromium and its driver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The container image test (pytest marker `container`) builds with podman on a Debian base made by mmdebstrap.
container-tools:
	@command -v podman >/dev/null && command -v mmdebstrap >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq podman mmdebstrap >/dev/null; }

# ruff (pyproject's [tool.ruff]) and mypy (strict on nb2svc/, lenient on tests and bench: [tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check nb2svc tests bench
	$(BIN)/ruff format --check nb2svc tests bench
	$(BIN)/mypy

test: lint browser container-tools
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/nb2svc build fixtures/linear_regression.ipynb -o build/lr_service --force
	@echo
	@echo "Serving on port $(PORT). In another terminal, try:"
	@echo "  curl -s -XPOST localhost:$(PORT)/v1/my_lr_deployement/latest -d '{\"data\":[[1,3],[2,5],[3,9]]}'"
	@echo
	$(BIN)/nb2svc serve build/lr_service --port $(PORT)

# nb2svc against a hand-written floor, BentoML and MLflow on two models (bench/run.py says how, and which
# BENCH_* variables shorten it or pick workloads and servers); results in bench/RESULTS.md.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v taskset >/dev/null || (apt-get update -qq && apt-get install -y -qq util-linux)
	$(BIN)/python bench/run.py

# How long `nb2svc build` takes (cold lock with uv and pip-compile, warm lock, unchanged rebuild) next to a plain
# `jupyter nbconvert --execute` of the same notebook, and where the warm build's time goes (bench/build_times.py
# says how, and which BENCH_BUILD_* variables change it); results in bench/RESULTS.md.
bench-build: $(STAMP)
	$(BIN)/python bench/build_times.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
