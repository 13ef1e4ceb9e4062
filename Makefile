# The two commands of the README: `make demo` and `make test`.
.PHONY: setup demo test lint bench clean

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/driftline demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q -ra --durations=15 -n 2 --dist loadgroup

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python benchmarks/detectors.py
	.venv/bin/python benchmarks/pipeline.py

clean:
	rm -rf .driftline
