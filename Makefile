# The course's entry points. `make test` and `make hub` work on a fresh Debian machine as root.
SHELL := /bin/bash
PYTHON_BASE ?= /usr/bin/python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := bubblewrap chromium git libseccomp2 make nodejs
ASSIGNMENT ?= lecture01
CHP_VERSION ?= 4.6.3
PYTEST_ARGS ?=

.PHONY: install system-deps hub-deps test test-unit test-fast demo build lock clean hub hub-stop hub-restart labextension

# Debian packages the tests and the sandbox need (skipped when present or not root).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing Debian packages:$$missing (run as root to install)"; fi; fi
	@test -x $(PYTHON_BASE) || { echo "need $(PYTHON_BASE) (Debian python3.11)"; exit 1; }

# The venv is built from Debian's python3.11 (readable by every Unix user, which the hub needs),
# with the pinned lock as constraints.
$(STAMP): pyproject.toml requirements.lock | system-deps
	@test -d $(VENV) || $(PYTHON_BASE) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -c requirements.lock -e '.[test,hub,otter]'
	@touch $@

install: system-deps $(STAMP)

# The tests that run a live hub go last, two modules (two hubs) at a time, with the machine to
# themselves: a real hub spawning servers competes badly with TensorFlow notebooks on 2 cores.
HUB_TESTS := grader_tests/test_hub_limits.py grader_tests/test_hub.py grader_tests/test_hub_roles.py grader_tests/test_hub_restart.py
test: install hub-deps
	$(PY) -m pytest -n auto --dist loadgroup --durations=25 $(PYTEST_ARGS) $(addprefix --ignore=,$(HUB_TESTS)) grader_tests
	$(PY) -m pytest -n 2 --dist loadfile --durations=10 $(PYTEST_ARGS) $(HUB_TESTS)

# The unit tier: no kernels, no hub, no browser; seconds.
test-unit: install
	$(PY) -m pytest -q -m unit $(PYTEST_ARGS) grader_tests

# The fast tier: everything but TensorFlow courseworks, hub and browser tests.
test-fast: install
	$(PY) -m pytest -n auto --dist loadgroup -m "not slow" $(PYTEST_ARGS) grader_tests

# The embedded JupyterHub on http://127.0.0.1:8000 (accounts from hub_config/roster.csv, each with its
# own password: the first ones are in .hub/hub/initial-passwords.csv, root only). Ctrl-C or `make hub-stop` stops everything it started.
# configurable-http-proxy from npm: the hub needs it, and so do the hub and browser tests.
hub-deps:
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	@command -v configurable-http-proxy >/dev/null || npm install -g --silent configurable-http-proxy@$(CHP_VERSION)

hub: install hub-deps
	$(VENV)/bin/mlbd build --only-changed $(HUB_BUILD)
	$(VENV)/bin/mlbd hub start

hub-stop:
	$(VENV)/bin/mlbd hub stop

# A new hub process (config, roster, course copy re-read); the proxy and students' servers keep running.
hub-restart:
	$(VENV)/bin/mlbd hub restart

demo: install
	$(VENV)/bin/mlbd demo --assignment $(ASSIGNMENT)

build: install
	$(VENV)/bin/mlbd build

# Rebuild the students' JupyterLab extension (mlbd/hub/labextension: due dates in the Assignment List)
# into mlbd/hub/labextensions/, which is committed: `make install` and the hub never need npm for it.
LABEXT_BUILD := /tmp/mlbd-labextension-build
labextension: install
	rm -rf $(LABEXT_BUILD) && mkdir -p $(LABEXT_BUILD) && cp -r mlbd/hub/labextension/. $(LABEXT_BUILD)/
	cd $(LABEXT_BUILD) && npm install --no-audit --no-fund --silent && \
	  PATH=$(CURDIR)/$(VENV)/bin:$$PATH jupyter labextension build --development False . >/dev/null
	rm -rf mlbd/hub/labextensions/mlbd-deadlines && cp -r $(LABEXT_BUILD)/dist/mlbd-deadlines mlbd/hub/labextensions/

# Re-resolve the pinned stack after changing pyproject.toml.
lock:
	$(VENV)/bin/uv pip compile -q --python-version 3.11 --all-extras pyproject.toml -o requirements.lock

clean:
	rm -rf autograded feedback submitted .exchange gradebook.db
