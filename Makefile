# Two entry points do all set-up (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first, pinned: on a CPU-only host pip picks the local CPU wheel,
# elsewhere the CUDA build. Override for another build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.install-stamp

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default, end to end.
demo: install
	$(VENV)/bin/lab demo

## Lint, format check, then the whole test suite (slow end-to-end tests included).
test: install lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

test-fast: install lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .lab experiments/snapshots experiments/runs
