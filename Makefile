# `make train` and `make test` set themselves up: a .venv with the package installed in editable mode.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
RUNS   ?= runs

.PHONY: train test bench tensorboard smoke clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)          ## the mission recipe; e.g. make train ARGS="--dataset folder --data-dir DIR"
	$(BIN)/python -m ignite_cifar train --config default $(ARGS)

smoke: $(STAMP)          ## a 20-second run on synthetic data (or ARGS="--dataset folder --data-dir DIR")
	$(BIN)/python -m ignite_cifar train --config smoke $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py $(ARGS)

tensorboard: $(STAMP)    ## serve the runs folder on 127.0.0.1:6006
	$(BIN)/tensorboard --logdir $(RUNS) --host 127.0.0.1 --port 6006

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
