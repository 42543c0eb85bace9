# gpu_lab: the two commands a newcomer needs are `make demo` and `make test`.
.PHONY: setup demo demo-shell demo-clean test lint bench help
.DEFAULT_GOAL := help

help:
	@echo "make demo        set up, then launch the csdl lab on an emulated AWS (no account, nothing billed)"
	@echo "make demo-shell  a shell inside the demo's sandbox home: try ssh-csdl, csdl-status"
	@echo "make demo-clean  tear the demo down and delete its sandbox"
	@echo "make test        set up, then run every test (lint, pytest, molecule)"
	@echo "make bench       benchmarks against the emulator (results: docs/benchmarks.md)"

setup:
	@scripts/bootstrap.sh

demo: setup
	@scripts/demo.sh up

demo-shell:
	@scripts/demo.sh shell

demo-clean:
	@scripts/demo.sh down

test: setup
	@scripts/test.sh

lint: setup
	@scripts/test.sh lint

bench: setup
	@.venv/bin/python -m bench.lifecycle
	@.venv/bin/python -m bench.inventory
	@if [ "$$(id -u)" = 0 ]; then .venv/bin/python -m bench.launch_e2e; else echo "bench/launch_e2e.py needs root (stand-in hosts): skipped"; fi
