# The README's commands: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LANES := tests/unit tests/service tests/integration tests/e2e tests/chaos
# The chaos lane's short form in `make test`; `make chaos` runs the full one.
CHAOS_SECONDS ?= 300
CHAOS_DETECTOR_EVERY ?= 20
PYTEST_FLAGS ?= -q -p no:cacheprovider --durations=8

# Debian packages the tests need: headless Chromium and its driver for the dashboard
# tests, promtool (package prometheus) for the rule tests, amtool and alertmanager
# (package prometheus-alertmanager) for the Alertmanager config and inhibit tests.
# Checked as commands first.
APT_PACKAGES := chromium chromium-driver prometheus prometheus-alertmanager
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help venv run test chaos lint fmt bench clean system-deps

help:
	@echo "make run          create .venv, install, start the embedded stack with simulated dialers"
	@echo "make test         install what the tests need (apt included) and run every lane"
	@echo "make chaos        $(CHAOS_SECONDS) s of ledgered load on the stack while killing every process (kill -9)"
	@echo "make lint         ruff check, ruff format --check, mypy --strict on core and schemas"
	@echo "make bench        run the benchmarks in bench/, one table of medians (QUICK=1: short runs)"
	@echo "make system-deps  install the Debian packages the tests need ($(APT_PACKAGES))"
	@echo "make clean        remove caches and build output (keeps .venv and the .cdrwatch data)"

venv: $(STAMP)

# Re-installs only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@if [ ! -x "$(PY)" ]; then \
		echo "creating $(VENV) with $(PYTHON_BOOT)"; \
		"$(PYTHON_BOOT)" -m venv "$(VENV)"; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch "$@"

run: venv
	exec $(VENV)/bin/cdrwatch up --simulate

system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v amtool >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	if [ -z "$$missing" ]; then echo "system-deps: $(APT_PACKAGES) present"; exit 0; fi; \
	cmd="$(strip $(SUDO) apt-get update) && $(strip $(SUDO) apt-get install) -y --no-install-recommends$$missing"; \
	log=$$(mktemp -t cdrwatch-apt.XXXXXX); start=$$(date +%s); \
	echo "system-deps: installing$$missing (log: $$log)"; \
	if ! { $(SUDO) apt-get update -q && \
	       $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y -q --no-install-recommends$$missing; } >"$$log" 2>&1; then \
		tail -n 30 "$$log" >&2; \
		echo "system-deps: installing failed; run by hand:" >&2; \
		echo "  $$cmd" >&2; exit 1; \
	fi; \
	rm -f "$$log"; \
	echo "system-deps: installed$$missing in $$(( $$(date +%s) - start )) s"

test: venv system-deps
	@if [ -f schemas/generate.py ]; then \
		echo "== schemas: generated JSON Schema up to date"; \
		$(PY) -m schemas.generate --check; \
	fi
	@echo "== ruff check"
	@$(VENV)/bin/ruff check .
	@passed=0; failed=0; out=$$(mktemp -t cdrwatch-lane.XXXXXX); \
	for lane in $(LANES); do \
		echo "== $$lane"; \
		rc=0; $(PY) -m pytest $(PYTEST_FLAGS) "$$lane" 2>&1 | tee "$$out" || rc=$$?; \
		p=$$(tail -n 1 "$$out" | awk '{for (i = 1; i < NF; i++) if ($$(i+1) ~ /^passed/) s += $$i} END {print s + 0}'); \
		f=$$(tail -n 1 "$$out" | awk '{for (i = 1; i < NF; i++) if ($$(i+1) ~ /^(failed|error)/) s += $$i} END {print s + 0}'); \
		passed=$$((passed + p)); failed=$$((failed + f)); \
		if [ $$rc -eq 5 ]; then echo "lane $$lane collected no tests" >&2; rm -f "$$out"; exit 1; fi; \
		if [ $$rc -ne 0 ]; then \
			echo "lane $$lane failed (pytest exit $$rc)" >&2; \
			echo "all lanes: $$passed passed, $$failed failed"; rm -f "$$out"; exit $$rc; \
		fi; \
	done; \
	rm -f "$$out"; \
	echo "all lanes: $$passed passed, $$failed failed"

# Full chaos run: CHAOS_SECONDS of load, the detector SIGKILLed every CHAOS_DETECTOR_EVERY s,
# api, ingest and broker SIGKILLed, one restart of the whole stack; prints the `chaos:` line.
chaos: venv
	CDRWATCH_CHAOS_SECONDS=$(CHAOS_SECONDS) CDRWATCH_CHAOS_DETECTOR_EVERY=$(CHAOS_DETECTOR_EVERY) \
		CDRWATCH_CHAOS_SETTLE_SECONDS=$${CDRWATCH_CHAOS_SETTLE_SECONDS:-300} \
		$(PY) -m pytest $(PYTEST_FLAGS) tests/chaos

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict services/detector/core schemas

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: venv
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@# quixstreams (the baseline of bench/detector_throughput.py) pins pydantic<2.14 and
	@# cdrwatch needs ~=2.14, so it gets a virtual environment of its own inside .venv.
	@if [ ! -x "$(VENV)/quixstreams/bin/python" ]; then \
		"$(PYTHON_BOOT)" -m venv "$(VENV)/quixstreams" || rm -rf "$(VENV)/quixstreams"; \
	fi
	@if [ -x "$(VENV)/quixstreams/bin/python" ]; then \
		"$(VENV)/quixstreams/bin/python" -m pip install --quiet 'quixstreams~=3.28.1' 'orjson~=3.13' \
		|| echo "bench: quixstreams could not be installed; detector_throughput reports it unavailable"; \
	fi
	@# One table of issue 7's figures: medians of 3 runs each, ranges, targets, ledger
	@# checks (bench/_summary.py); QUICK=1 runs each once with short settings (< 5 min).
	$(PY) bench/_summary.py $(if $(QUICK),--quick)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
