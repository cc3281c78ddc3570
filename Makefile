# Zero-downtime backfill: `make demo` and `make test` are the two commands a fresh clone needs.
# Both run scripts/bootstrap.sh first, which installs what a fresh machine lacks (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_ROWS ?= 1000000
ENGINE ?= postgres
export DEMO_ROWS
export AIRFLOW_HOME := $(CURDIR)/.local/airflow

.PHONY: help venv services ui-deps demo demo-mysql airflow test test-ui test-fast lint bench clean

help:
	@echo "make demo        embedded PostgreSQL primary+replica, $(DEMO_ROWS) rows, run the DAG, print the report"
	@echo "                 (ENGINE=mysql: an embedded Oracle MySQL 9.7 primary+replica instead)"
	@echo "make demo-mysql  the same against MySQL/MariaDB on 127.0.0.1:3306"
	@echo "make airflow     airflow standalone on the demo databases (UI on :8080)"
	@echo "make test        the whole test suite (unit, integration, DAG, end-to-end)"
	@echo "make test-ui     a real Airflow in headless Chromium (form, grid, logs, REST) and on two Celery workers"
	@echo "make bench       benchmarks -> bench/results/latest.json"
	@echo "make venv        .venv with requirements.txt and this project installed (editable)"
	@echo "make clean       stop the embedded servers and remove .local/"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml scripts/bootstrap.sh
	@bash scripts/bootstrap.sh venv "$(PYTHON)" "$(VENV)"
	@touch $@

services:
	@bash scripts/bootstrap.sh services

demo: venv
	@if [ "$(ENGINE)" = mysql ]; then bash scripts/bootstrap.sh mysql; fi
	@$(PY) scripts/demo.py demo --engine $(ENGINE) --rows $(DEMO_ROWS)

demo-mysql: venv services
	@$(PY) scripts/demo.py demo --engine mysql-server --rows $(DEMO_ROWS)

airflow: venv
	@$(PY) scripts/demo.py standalone

test: venv services
	$(PY) -m pytest --ignore=tests/ui

ui-deps:
	@bash scripts/bootstrap.sh ui-deps

test-ui: venv services ui-deps
	$(PY) -m pytest tests/ui

test-fast: venv
	$(PY) -m pytest tests/unit tests/dags

lint: venv
	$(VENV)/bin/ruff check include plugins dags tests scripts bench

bench: venv services
	@bash bench/setup.sh $(VENV)
	$(PY) bench/run.py

clean:
	@if [ -x $(PY) ] && [ -d .local/db ]; then $(PY) scripts/localdb.py stop --dir .local/db; fi
	rm -rf .local
