# The two commands: `make demo` and `make test`. Each installs what it needs first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit integration bench clean

setup:
	@scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/natns demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

clean:
	rm -rf $(VENV) *.egg-info
