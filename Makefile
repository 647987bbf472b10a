# The README's two commands are `make demo` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLKHASH := clkhash==0.18.3

.PHONY: install demo test test-fast lint format protos check-protos cli-docs bench bench-speed bench-quality bench-graph clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py matcher/core/_kernel.c matcher/core/_lshbatch.c matcher/core/_pairperm.c matcher/core/_standing.c matcher/core/_greedy.c matcher/core/_radix.c Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# clkhash's metadata pins cryptography<41 and bitarray<3 (releases with known
	# vulnerabilities); it runs unchanged on current ones, so install it without
	# its pins. Its real requirements are in pyproject.toml.
	$(BIN)/python -m pip install --quiet --no-deps '$(CLKHASH)'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/blindmatch demo

# Every tier (what CI runs): unit, server, and slow (processes, a fresh venv, benchmark data),
# on two workers (pytest-xdist): every test starts its own servers on free loopback ports.
# The 30 longest tests are listed at the end, so that each CI log says where the time went.
test: $(STAMP) lint check-protos
	$(BIN)/python -m pytest -q -n 2 --durations=30

# Day to day: unit tests and tests against a real in-process matcher (tests/conftest.py).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n auto

# ruff over the whole tree; mypy over the package and benchmarks/ (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. blindmatch/protos/blindmatch.proto

check-protos: $(STAMP)
	$(BIN)/python -m blindmatch.protos.freshness

# docs/cli.md from every command's --help (tests/test_cli.py fails when it is stale).
cli-docs: $(STAMP)
	$(BIN)/python -m blindmatch.cli.reference docs/cli.md

bench: $(STAMP)
	$(BIN)/python benchmarks/febrl4.py

# Kernel, blocking and end-to-end speed beside anonlink, up to 1M x 1M (~15 min);
# `$(BIN)/python benchmarks/speed.py --quick` for a one-minute version.
bench-speed: $(STAMP)
	$(BIN)/python benchmarks/speed.py

# Match quality on both generators and a grid of corruption rates and sizes, beside
# clkhash+anonlink and Splink on the plaintext (issue 21; about an hour on 2 cores).
# Splink lives in its own venv: it is the benchmark's anchor, not a dependency of blindmatch.
SPLINK_VENV := benchmarks/.venv-splink
SPLINK := splink==5.0.0 pandas

$(SPLINK_VENV)/.installed:
	test -x $(SPLINK_VENV)/bin/python || $(PYTHON) -m venv $(SPLINK_VENV)
	$(SPLINK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SPLINK_VENV)/bin/python -m pip install --quiet $(SPLINK)
	touch $@

bench-quality: $(STAMP) $(SPLINK_VENV)/.installed
	$(BIN)/python benchmarks/quality.py --grid

# A proximity-graph index (HNSW) beside the shipped real-time index (issue 19 item 4: measured,
# not built). faiss lives in its own venv: it is not a dependency of blindmatch.
FAISS_VENV := benchmarks/.venv-faiss
FAISS := faiss-cpu==1.15.1 numpy

$(FAISS_VENV)/.installed:
	test -x $(FAISS_VENV)/bin/python || $(PYTHON) -m venv $(FAISS_VENV)
	$(FAISS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FAISS_VENV)/bin/python -m pip install --quiet $(FAISS)
	touch $@

bench-graph: $(STAMP) $(FAISS_VENV)/.installed
	nice -n 10 $(BIN)/python benchmarks/rtgraph.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache matcher/core/*.so
