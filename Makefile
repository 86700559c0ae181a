# The two commands of the README. Each sets up what it needs (a virtual environment in .venv with
# the package and its dependencies from PyPI) before it runs, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Main job: start a local Kafka, push one 10,000-alert visit through it per compression codec,
# write out/kafka-visit/results.json and a ranked report.md; then the alert size report.
run: $(STAMP)
	$(BIN)/alertbench kafka-visit --alerts 10000 -o out/kafka-visit
	$(BIN)/alertbench sizes --visits 5 --per-visit 100

# Test suite (what CI runs): lint, then every test.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Micro-benchmarks (not part of the test run).
bench: $(STAMP)
	mkdir -p out
	$(BIN)/python -m pytest tests/benchmarks -o python_files="bench_*.py" --benchmark-only --benchmark-json=out/bench.json -p no:cacheprovider

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .benchmarks
