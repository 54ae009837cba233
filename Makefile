# vlplatform: the README's two commands are `make demo` and `make test`.
.DEFAULT_GOAL := help
PY := .venv/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
# mypy's Django plugin imports the settings; these placeholders keep it from starting the embedded services
# (nothing connects to them).
TYPECHECK_ENV := DATABASE_URL=postgresql://typecheck@localhost/typecheck REDIS_URL=redis://localhost:6379/0 \
	SECRET_KEY=typecheck ALLOWED_HOSTS=localhost

.PHONY: help venv system-deps demo test eval lint format typecheck

help:
	@echo "make demo   set up everything, start the platform on its embedded stack, print the URL and logins"
	@echo "make test   set up everything, run ruff, mypy and the whole test suite (integration and browser tests included)"
	@echo "make eval   quality targets on ../shared/data (VLP_DATA_DIR): trains and evaluates, about an hour"
	@echo "make lint   ruff and mypy"
	@echo "make bench  benchmarks as ratios (encoder vs FLOP limit, bf16/int8 vs fp32, BatchRunner vs direct, moderation API vs direct) -> bench/results.json"

venv:
	@bash scripts/venv.sh

system-deps:
	@bash scripts/system-deps.sh

demo: venv
	$(PY) -m vlplatform.demo --host $(HOST) --port $(PORT)

test: venv system-deps
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(TYPECHECK_ENV) $(PY) -m mypy .
	$(PY) -m pytest

eval: venv
	@bash scripts/eval.sh

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(TYPECHECK_ENV) $(PY) -m mypy .

format: venv
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

.PHONY: bench
bench: venv
	$(PY) -m bench --out bench/results.json
