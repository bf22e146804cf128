# The two commands a newcomer types: `make run` and `make test`. Both create .venv when needed.

# The first Python 3.11+ on PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every dependency at an exact version (runtime and the `test` extra), and the runtime part alone
# (what deploy/Dockerfile builds with): `make lock` (deploy/README.md, "Reproducible builds").
LOCK := requirements/lock.txt
RUNTIME_LOCK := requirements/runtime.txt

.PHONY: run test test-unit lint format install clean soak bench safety reference lock pin-image frontend screenshots

$(STAMP): pyproject.toml $(LOCK)
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required (none found on PATH)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cmh run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -n auto --dist loadfile $(PYTEST_ARGS)

# The fast part alone: tests that need neither PostgreSQL nor NATS (markers: tests/conftest.py).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit -n auto --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The clinical safety case (docs/safety/): regenerate its tables from the hazard log, then check the log.
safety: $(STAMP)
	$(BIN)/python -m tests.safety.hazard_log --write
	$(BIN)/python -m pytest -q tests/safety

# Generated reference data: the directory's reference JSON (services/directory/reference/, from the
# YAML and CSV beside it) and the published terminology (shared/terminology/, from the enums and
# tools/terminology_data/maps.yaml). `make test` checks both are current.
reference: $(STAMP)
	$(BIN)/python -m tools.directory_reference --write
	$(BIN)/python -m tools.terminology --write
	$(BIN)/python -m tools.fhir_elements --write

# NHS.UK frontend's stylesheet, script and icons for the gateway's pages (gateway/web/static/nhsuk/),
# and axe-core for the browser tests' accessibility checks (tests/web/vendor/, tests only), from the
# npm registry, checked against the integrity recorded in tools/vendor_frontend.py and
# tools/vendor_axe.py. Commit the result.
frontend: $(STAMP)
	$(BIN)/python -m tools.vendor_frontend
	$(BIN)/python -m tools.vendor_axe

# PNGs of the pages for people (docs/screenshots/, shown in README.md's "Pages for people"): `cmh
# run` started, the sign-in page and each role's main page, its demo person signed in through the
# development provider in Debian's Chromium (tools/screenshot_people.py). Commit the result.
screenshots: $(STAMP)
	$(BIN)/python -m tools.screenshot_people

clean:
	rm -rf var .pytest_cache .ruff_cache .hypothesis .import_linter_cache .mypy_cache

# Mixed traffic for SOAK_SECONDS (default 300) against a suite it starts; not part of `make test`.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# The suite on PostgreSQL (CMH_DATABASE_URL-style BENCH_POSTGRES, default the local `test` database)
# and the bundled nats-server under measured load, beside bare baselines; results in
# bench/results/<date>.json and docs/benchmarks.md. BENCH_ARGS=--quick for a ~10 minute run.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk (Debian's package) so saturation is measured the same way every run"; \
	    apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; } \
	      || echo "wrk could not be installed: the saturation stages will say so"; \
	  else echo "wrk is not installed (apt-get install wrk): the saturation stages will say so"; fi; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The lock files, from pyproject.toml by uv (pinned below, in its own venv: never in .venv), for
# CI's Python (3.11) on every platform (--universal: markers, not one machine's wheels). Versions
# already in the lock are kept; LOCK_ARGS=--upgrade moves everything to the newest allowed,
# LOCK_ARGS='--upgrade-package fastapi' one package. Then `make install` and `make test`, and commit.
# --fork-strategy fewest: one version of each package for every Python the lock serves (a newer
# release for 3.12+ only would otherwise be pinned beside the 3.11 one: tests/deploy/test_lock.py).
UV_VERSION := 0.13.9
TOOLS := .toolvenv
UV := $(TOOLS)/bin/uv
UV_COMPILE := $(UV) pip compile pyproject.toml --universal --python-version 3.11 \
	--custom-compile-command "make lock" --fork-strategy fewest --quiet

$(TOOLS)/.uv-$(UV_VERSION):
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required (none found on PATH)"; exit 1; }
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION)
	@touch $@

lock: $(TOOLS)/.uv-$(UV_VERSION)
	$(UV_COMPILE) --extra test $(LOCK_ARGS) -o $(LOCK)
	$(UV_COMPILE) -c $(LOCK) -o $(RUNTIME_LOCK)

# The base image by digest: resolves deploy/Dockerfile's python tag (and compose's nats and postgres
# tags) on the registry and writes `tag@sha256:...` in place. Needs Docker with buildx and the
# registry; commit the result.
pin-image:
	$(PYTHON) -m tools.pin_images --write
