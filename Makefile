# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make train   installs into .venv (once) and trains the default config on the embedded data
#   make test    installs into .venv (once) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test clean-venv

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py --config=configs/default.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

clean-venv:
	rm -rf $(VENV)
