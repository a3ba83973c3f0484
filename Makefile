# Two entry points on a fresh machine: `make demo` (install + a real USB-PO run) and
# `make test` (install + the test suite). torch is pinned here to the CPU build for dev/CI;
# the package itself accepts any torch 2.x so GPU users can bring their own.
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0

.PHONY: install install-demo demo test lint bench-learning

install:
	$(PYTHON) -m pip install -q $(TORCH_PIN)
	$(PYTHON) -m pip install -q -e ".[dev,ray]"

# The demo needs the package alone: no Ray, no test tools.
install-demo:
	$(PYTHON) -m pip install -q $(TORCH_PIN)
	$(PYTHON) -m pip install -q -e .

demo: install-demo
	usbpo train --env InvertedPendulum-v4 --algo usbpo --steps 8000 --seed 0 \
		--out runs/demo-$$(date +%Y%m%d-%H%M%S)/InvertedPendulum-v4/usbpo/seed0

# Two pytest workers, one per core (each test uses one torch thread, see tests/conftest.py).
test: install
	$(PYTHON) -m pytest -q -n 2

lint:
	ruff check . && ruff format --check .

bench-learning:
	$(PYTHON) benchmarks/learning_pendulum.py
