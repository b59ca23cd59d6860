# The README's two commands. Both create .venv with Python 3.11 and install the package into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"

# The main job on the default config shipped with the package (offline models, committed collections).
demo: install
	$(BIN)/clir-eval models provision
	$(BIN)/clir-eval run

test: install
	$(BIN)/clir-eval models provision
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
