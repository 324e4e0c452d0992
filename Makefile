# The two commands: `make demo` and `make test`. Each installs what it needs first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit integration bench soak clean

setup:
	@scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/natns demo

# The integration tests build real namespaces: without root they would all be skipped
# and `make test` would pass having tested a third of natns. `make unit` runs as anyone.
NEED_ROOT = @if [ "$$(id -u)" -ne 0 ]; then \
	echo "natns: make $@ runs the integration tests, which need root (sudo make $@); make unit runs the rest" >&2; \
	exit 1; fi

test: setup
	$(NEED_ROOT)
	$(PY) scripts/pytest-run -q -p no:cacheprovider tests/unit tests/integration

unit: setup
	$(PY) scripts/pytest-run -q -p no:cacheprovider tests/unit

integration: setup
	$(NEED_ROOT)
	$(PY) scripts/pytest-run -q -p no:cacheprovider tests/integration

# Benchmarks: ratios measured side by side in one run (see docs/performance.md).
bench: setup
	$(PY) -m benchmarks

# Long reliability runs (see docs/reliability.md); not part of `make test`.
soak: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/soak

clean:
	rm -rf $(VENV) *.egg-info
