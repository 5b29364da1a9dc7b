# Encore: `make demo` to see it work, `make test` to prove it. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export GX_ANALYTICS_ENABLED := False

.DEFAULT_GOAL := help
.PHONY: help install browser-deps demo test test-full reliability lint fmt bench bench-stages airflow warehouse-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -r requirements.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## build .venv from the pinned requirements (quick when nothing changed)

demo: $(STAMP) ## simulate a small world and run the DAGs over it through Airflow
	$(BIN)/python scripts/demo.py

browser-deps: ## Chromium and chromedriver for tests/test_browser.py (Debian packages, when missing)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "browser-deps: no apt-get here: install Chromium and chromedriver by hand," \
			"or tests/test_browser.py fails" >&2; exit 0; fi; \
	sudo=; if [ "$$(id -u)" != 0 ]; then sudo=sudo; fi; \
	echo "browser-deps: installing chromium and chromium-driver with apt-get"; \
	$$sudo apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

test: $(STAMP) browser-deps ## run the test suite against a real PostgreSQL (CI: the quick slice)
	$(BIN)/pytest -q -m "not full"

test-full: $(STAMP) browser-deps ## every test, including the heavier cases marked full
	$(BIN)/pytest -q

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP) ## ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

reliability: $(STAMP) ## the reliability suite in full (6 SIGKILLs per step, 200 hypothesis examples), then docs/reliability.md
	mkdir -p var && rm -f var/reliability.json var/reliability.json.lock
	ENCORE_FAULT_KILLS=6 ENCORE_HYPOTHESIS_EXAMPLES=200 ENCORE_RELIABILITY_REPORT=var/reliability.json \
		$(BIN)/pytest -q tests/reliability; status=$$?; \
	$(BIN)/python scripts/reliability_report.py --input var/reliability.json --output docs/reliability.md \
		&& exit $$status

BENCH_SIZES ?= 25000,50000,100000,200000
BENCH_DAYS ?= 92

bench: $(STAMP) ## one night per size (hours on 2 cores): every stage vs its floor, then docs/performance.md
	$(BIN)/encore bench --sizes $(BENCH_SIZES) --days $(BENCH_DAYS) --out docs/performance.md

bench-stages: $(STAMP) ## single-stage deep dives at larger sizes (~90 min) and the model quality bars
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/features_bench.py
	$(BIN)/python bench/scoring_bench.py
	$(BIN)/python bench/churn_quality.py --users 5000 --days 160 --forward-days 130 --burn-in-days 365
	$(BIN)/python bench/popularity_bench.py
	$(BIN)/python bench/popularity_quality.py
	$(BIN)/python bench/audio_bench.py

airflow: $(STAMP) ## Airflow standalone (UI on :8080) over the project's DAGs
	$(BIN)/airflow db migrate >/dev/null
	@echo "Airflow UI: http://localhost:8080  user: admin  password: printed below and in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/airflow standalone

warehouse-stop: $(STAMP) ## stop the embedded PostgreSQL
	$(BIN)/encore warehouse stop

clean: ## remove local state (embedded warehouse, Airflow home, demo data)
	-$(BIN)/encore warehouse stop 2>/dev/null
	rm -rf var .pytest_cache .ruff_cache
