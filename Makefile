# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make train   installs into .venv (once) and trains the default config on the embedded data
#   make test    installs into .venv (once) and runs the test suite, as CI does (.ci/run)
#   make test-quick   the same without the tests marked slow (pytest.ini), for the edit-test loop
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test test-quick clean-venv

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py --config=configs/default.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow" $(ARGS)

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

clean-venv:
	rm -rf $(VENV)
