# The two commands of README.md. Each creates or reuses the cached venv, then runs.
SHELL := /bin/bash
.PHONY: run test setup

setup:
	@scripts/env.sh >/dev/null

run:
	@VENV=$$(scripts/env.sh) && $$VENV/bin/rlaif run $(ARGS)

test:
	@VENV=$$(scripts/env.sh) && $$VENV/bin/python -m pytest -q $(PYTEST_ARGS)
