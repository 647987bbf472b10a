# The README's two commands are `make demo` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CLKHASH := clkhash==0.18.3

.PHONY: install demo test lint format protos check-protos bench bench-speed bench-quality clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py matcher/core/_kernel.c Makefile
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

test: $(STAMP) lint check-protos
	$(BIN)/python -m pytest -q

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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache matcher/core/*.so
