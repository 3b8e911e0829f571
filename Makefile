# Every target sets up what it needs: a fresh Debian machine with Python 3.11 only needs `make`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests and benchmarks need (installed only when missing; root or sudo).
TEST_DEBS := chromium systemd
BENCH_DEBS := nginx-light wrk curl
PYTEST_ARGS ?=
BENCH_ARGS ?=
SOAK_ARGS ?=
# Every Python package pinned, build tools included (`make lock` refreshes it).
LOCK := constraints.txt

.PHONY: install lock run test lint bench screenshots system-deps qbittorrent clean

$(BIN)/activate:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it"; $(MAKE) --no-print-directory system-deps DEBS=python3-venv; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }

# The pinned pip first: it is the one that knows --build-constraint (the setuptools building the gateway).
$(VENV)/.installed: $(BIN)/activate setup.cfg setup.py $(LOCK)
	$(BIN)/python -m pip install --quiet --upgrade -c $(LOCK) pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) --build-constraint $(LOCK) -e '.[test]'
	@touch $@

install: $(VENV)/.installed

# Rewrites $(LOCK) with the newest releases setup.cfg allows: resolved and installed unpinned in a
# throwaway venv, then frozen. Review the diff, then `make test` (which installs the new pins).
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && set -e && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip setuptools && \
	"$$tmp/venv/bin/python" -m pip install --quiet -e '.[test]' && \
	{ sed -n '/^#/p' $(LOCK); "$$tmp/venv/bin/python" -m pip freeze --all --exclude-editable; } > "$$tmp/lock" && \
	mv "$$tmp/lock" $(LOCK) && echo "$(LOCK): $$(grep -vc '^#' $(LOCK)) pins"

# The gateway in front of the Jellyfin at JELLYFIN_URL (default http://localhost:8096), port 8097.
run: install
	$(BIN)/jellyfin-gateway

# Installs the given Debian packages when any is missing (DEBS=...).
system-deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check gateway tests benchmarks
	$(BIN)/ruff format --check gateway tests benchmarks
	$(BIN)/mypy

# qBittorrent 4.5 (Debian 12) and 5.1 (a Debian trixie chroot, built once into /var/cache).
qbittorrent:
	@if [ "$$(id -u)" = 0 ]; then bash tests/setup_qbittorrent.sh; else sudo bash tests/setup_qbittorrent.sh; fi

test: install qbittorrent
	@$(MAKE) --no-print-directory system-deps DEBS="$(TEST_DEBS)"
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# PNGs of every admin page (taken by the browser tests) into docs/.
screenshots: install qbittorrent
	@$(MAKE) --no-print-directory system-deps DEBS="$(TEST_DEBS)"
	SCREENSHOTS_DIR=docs $(BIN)/python -m pytest -q tests/test_admin_pages.py

bench: install
	@$(MAKE) --no-print-directory system-deps DEBS="$(BENCH_DEBS)"
	$(BIN)/python benchmarks/release_names.py --check
	$(BIN)/python benchmarks/library_index.py --check
	$(BIN)/python benchmarks/find.py --check
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Minutes of mixed and abusive traffic through one gateway while its upstreams restart (not in `test`);
# needs Debian's qbittorrent-nox. SOAK_ARGS="--duration 60" for a short run.
.PHONY: soak
soak: install
	@$(MAKE) --no-print-directory system-deps DEBS="qbittorrent-nox"
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
