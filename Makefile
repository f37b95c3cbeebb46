# Entry points: `make demo` (no root needed), `make unit` (no services), `make integration`
# (real services) and `make test` (everything, installing the Debian packages it needs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian's python3 lacks venv and ensurepip until python3-venv is installed.
PYTHON_APT_PACKAGES := python3 python3-venv
SERVICE_APT_PACKAGES := clickhouse-server prometheus zookeeper chromium
STAMP  := $(VENV)/.installed
# No .pytest_cache: several checkouts and engineers share the tree. pytest exits 5 when it
# collects nothing, and make fails on any non-zero exit, so an empty lane fails the build.
PYTEST := $(BIN)/pytest -p no:cacheprovider

.PHONY: demo test lint unit integration bench system-deps clean

# Installs the Debian packages of $(1) that dpkg does not list, with sudo unless root.
define apt_install
missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  echo "installing:$$missing"; \
  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
  $$SUDO apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
    $$missing >/dev/null; \
fi
endef

# A Python that can already build a virtualenv (pyenv, a python3-venv already installed)
# needs no root; only a bare Debian gets the packages.
$(BIN)/python:
	@$(PYTHON) -m ensurepip --version >/dev/null 2>&1 || { $(call apt_install,$(PYTHON_APT_PACKAGES)); }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/metering demo

# Debian packages for the real services the integration tests start; skipped when present.
system-deps:
	@$(call apt_install,$(SERVICE_APT_PACKAGES))

lint: $(STAMP)
	$(BIN)/ruff check metering aggregation invoicing schemas tests bench
	$(BIN)/mypy metering aggregation invoicing schemas bench

# Only tests/unit is collected: nothing here starts a service.
unit: $(STAMP)
	$(PYTEST) -n 2 tests/unit

# tests/integration/conftest.py marks every test there; selecting the marker makes a broken
# hook deselect everything, which exits 5 and fails. Two workers (a file each at a time, so
# module fixtures start once): the tests mostly wait on services and subprocesses.
integration: system-deps $(STAMP)
	$(PYTEST) -n 2 --dist loadfile --durations=30 -m integration tests/integration

test: system-deps lint unit integration

bench: $(STAMP)
	@out="$(BENCH_OUT)"; if [ -n "$$out" ]; then mkdir -p "$$out"; else out=$$(mktemp -d); fi; \
	status=0; \
	for run in "batch server" "single server" "batch chdb"; do set -- $$run; \
	  echo "== bench/throughput.py --mode $$1 --store $$2 --json $(BENCH_ARGS)" >&2; \
	  $(BIN)/python bench/throughput.py --mode $$1 --store $$2 --json $(BENCH_ARGS) \
	    > "$$out/$$1-$$2.json" || status=1; \
	done; \
	$(BIN)/python bench/table.py "$$out/batch-server.json" "$$out/single-server.json" \
	  "$$out/batch-chdb.json" || status=1; \
	[ -n "$(BENCH_OUT)" ] || rm -rf "$$out"; exit $$status

clean:
	rm -rf $(VENV) build *.egg-info
