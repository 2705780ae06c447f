# `make train` and `make test` set themselves up: a .venv with the package installed in editable mode.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
RUNS   ?= runs

.PHONY: train test test-quick lint bench study full-width-cpu tensorboard smoke lr-find gpu-kit gpu-dry-run clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)          ## the default recipe; e.g. make train ARGS="--dataset folder --data-dir DIR"
	$(BIN)/python -m ignite_cifar train $(ARGS)

smoke: $(STAMP)          ## 2 epochs on synthetic data, ending with 20 mistakes and GradCAM (or ARGS="--dataset folder --data-dir DIR")
	$(BIN)/python -m ignite_cifar train --config smoke $(ARGS)

lr-find: $(STAMP)        ## LR range test -> lr_find.png/.json; e.g. make lr-find ARGS="--dataset folder --data-dir DIR --width 0.25"
	$(BIN)/python -m ignite_cifar lr-find $(ARGS)

TEST_WORKERS ?= 2
# each file's tests, which share runs, in one worker; the files in tests/conftest.py's order (those with the most
# slow tests first), not xdist's (by number of tests)
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: $(STAMP)           ## the whole suite in TEST_WORKERS processes (pytest-xdist)
	$(BIN)/python -m pytest $(XDIST) $(ARGS)

test-quick: $(STAMP)     ## the tests that start no process and train only tiny runs in-process (-m "not slow")
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(ARGS)

lint: $(STAMP)           ## ruff (pyproject.toml) and the wings' import layers (import-linter, setup.cfg)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/speed/throughput.py $(ARGS)

DATA  ?=
# Long runs go outside the repository (~/.cache/ignite-cifar/, the scripts' default), so a fresh clone resumes them;
# STUDY=DIR or FULL_WIDTH_DIR=DIR put them elsewhere.
STUDY ?=
FULL_WIDTH_DIR ?=
study: $(STAMP)          ## the recipe study (hours; resumes): make study DATA=/path/to/cifar10-jpeg [ARGS="--only adam"]
	$(BIN)/python benchmarks/study/recipe_study.py --data-dir "$(DATA)" $(if $(STUDY),--study-dir $(STUDY)) $(ARGS)

full-width-cpu: $(STAMP) ## the default at width 1.0 on this CPU, two seeds (hours each; resumes): make full-width-cpu DATA=DIR
	$(BIN)/python benchmarks/study/full_width_cpu.py --data-dir "$(DATA)" $(if $(FULL_WIDTH_DIR),--runs-dir $(FULL_WIDTH_DIR)) $(ARGS)

tensorboard: $(STAMP)    ## serve the runs folder on 127.0.0.1:6006
	$(BIN)/tensorboard --logdir $(RUNS) --host 127.0.0.1 --port 6006

SHARED  ?= ../shared
GPU_KIT ?= .gpu
gpu-kit:                 ## what the GPU machine lacks, into .gpu/ (git-ignored): wheels + the JPEG export
	mkdir -p $(GPU_KIT)/wheels
	cp $(SHARED)/gpu/wheels/*.whl $(GPU_KIT)/wheels/
	cp $(SHARED)/data/cifar10-jpeg.tar.gz $(GPU_KIT)/
	@du -sh $(GPU_KIT)

gpu-dry-run: $(STAMP) gpu-kit  ## benchmarks/gpu/gpu_headline.sh on CPU at tiny sizes; OUT=DIR keeps the results
	GPU_DRY_RUN=1 GPU_KIT=$(GPU_KIT) OUT=$${OUT:-$$(mktemp -d)} PYTHON=$(BIN)/python bash benchmarks/gpu/gpu_headline.sh

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
