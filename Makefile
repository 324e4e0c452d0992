# The two commands: `make demo` and `make test`. Each installs what it needs first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit integration bench soak clean

setup:
	@scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/natns demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/integration

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

# Benchmarks: ratios measured side by side in one run (see docs/performance.md).
bench: setup
	$(PY) -m benchmarks

# Long reliability runs (see docs/reliability.md); not part of `make test`.
soak: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/soak

clean:
	rm -rf $(VENV) *.egg-info
