# The two commands of the README. Each sets up what it needs (a virtual environment in .venv with
# the package and its dependencies from PyPI) before it runs, so a fresh clone needs nothing else.
PYTHON ?= python3
# Kafka jars, the Comet environment and other downloads stay in the checkout, git-ignored.
export ALERTBENCH_CACHE ?= $(CURDIR)/.cache
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit typecheck bench lint clean

$(STAMP): pyproject.toml setup.py $(wildcard proto/*.proto)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Main job: a short benchmark matrix (every transport x serialization, 1,000 alerts each) that
# starts its own Kafka and gRPC server, writes out/matrix/{results.json,report.md,*.png} with the
# ranking against LSST's requirements; then the three capacity layers (codec cost, each
# transport beside its raw library to 5 subscriber processes, end to end by maximum sustainable
# rate) with the cores a peak visit needs, in out/capacity; then the size distribution.
run: $(STAMP)
	$(BIN)/alertbench matrix --alerts 1000 -o out/matrix
	$(BIN)/alertbench capacity --alerts 1000 --end-to-end-seconds 1 --end-to-end-serializers avro -o out/capacity
	$(BIN)/alertbench sizes --visits 5 --per-visit 100

# Test suite (what CI runs): lint, the type checker over the seams, then every test.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python .ci/typecheck
	$(BIN)/python -m pytest

# The fast lane: no servers, about two minutes (tests/unit).
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy, strict, over the seams listed in pyproject.toml's [tool.mypy].
typecheck: $(STAMP)
	$(BIN)/python .ci/typecheck

# Micro-benchmarks (not part of the test run).
bench: $(STAMP)
	mkdir -p out
	$(BIN)/python -m pytest tests/benchmarks -o python_files="bench_*.py" --benchmark-only --benchmark-json=out/bench.json -p no:cacheprovider
	$(BIN)/alertbench codec-bench -o out/codecs

clean:
	rm -rf $(VENV) out build .pytest_cache .ruff_cache .mypy_cache .benchmarks
