# Each target bootstraps .venv by itself: a fresh clone needs only `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench notebooks lint clean bytecode clickhouse

$(STAMP): requirements.lock pyproject.toml setup.py analyzer/load/_otlp_native.c analyzer/otlp/_protobuf_native.c analyzer/_arrow_buffers.h
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Bytecode for jitrace's own modules: an editable install compiles none, and where PYTHONDONTWRITEBYTECODE is set
# (as on this project's machines) every process compiled them again from source, 24 ms of the 37 ms that
# `jitrace analyze` spends importing them. Only what changed since the last run is compiled again.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q analyzer collect instrumentation lab queries bench

demo: bytecode
	$(BIN)/jitrace demo --out ./jitrace-demo

# Two passes: the tests that run in one process, spread over every core (pytest-xdist); then those marked `slow`
# (they start services and processes and wait on real time), one at a time, so no other test's load delays them.
# Both passes always run; either failing fails the target (a pass PYTEST_ARGS leaves empty, pytest's 5, does not).
test: bytecode lint
	@fast=0; slow=0; \
	$(BIN)/python -m pytest -q -n auto -m "not slow" $(PYTEST_ARGS) || fast=$$?; \
	$(BIN)/python -m pytest -q -n 0 -m slow $(PYTEST_ARGS) || slow=$$?; \
	for code in $$fast $$slow; do [ $$code -eq 0 ] || [ $$code -eq 5 ] || exit $$code; done

bench: bytecode
	$(BIN)/python -m bench

# Jupyter itself is only needed here (the tests run notebooks with nbclient): its pins live in their own lock.
$(VENV)/.notebooks: $(STAMP) requirements-notebooks.lock
	$(BIN)/python -m pip install -q -r requirements-notebooks.lock
	touch $@

# The ClickHouse extra (jitrace[clickhouse]: chdb, about 500 MB, and clickhouse-connect), pinned in its own lock. The
# tests that need chdb skip without it; CI installs it and sets JITRACE_REQUIRE_CHDB=1, which makes them required.
$(VENV)/.clickhouse: $(STAMP) requirements-clickhouse.lock
	$(BIN)/python -m pip install -q -r requirements-clickhouse.lock
	touch $@

clickhouse: $(VENV)/.clickhouse

notebooks: $(VENV)/.notebooks
	test -f ./jitrace-demo/summary.json || $(BIN)/jitrace demo --out ./jitrace-demo
	JITRACE_OUT=$(CURDIR)/jitrace-demo $(BIN)/jupyter lab --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

# ruff check, not ruff format: the code keeps its hand-wrapped style (aligned continuation lines). sqlfluff lints the
# SQL with the rules in .sqlfluff (layout rules off for the same reason). `make test` runs this first.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/sqlfluff lint queries

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
