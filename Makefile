# The two commands a newcomer needs: `make parity` and `make test`. Each installs what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
BLUE_PORT ?= 8001
GREEN_PORT ?= 8002
export BLUE_PORT GREEN_PORT

.PHONY: help install run test test-fast lint typecheck parity bench soak fuzz cutover audit lock clean

help:
	@echo "The two commands: make parity (the main job, on the embedded stack) and make test."
	@echo ""
	@echo "make parity    replay the parity corpus against blue and green (reports/parity/)"
	@echo "                 GENERATED=N (100) SEED=N  generated cases and their seed"
	@echo "                 BLUE_URL=.. GREEN_URL=.. [PROFILE=make-run]  staging: deployed colors"
	@echo "                 REPLAY=capture.jsonl  replay captured traffic instead of the corpus"
	@echo "                 KEEP_LANES=1  keep a failed run's servers up for its reproducers"
	@echo "make test      lint, type-check and every test (what CI runs: .ci/run)"
	@echo "make test-fast the unit tests only"
	@echo "make lint      ruff;  make typecheck: mypy (strict)"
	@echo "make run       devstack + blue (gunicorn, :$$BLUE_PORT) + green (uvicorn, :$$GREEN_PORT)"
	@echo "                 BLUE_PORT=8001 GREEN_PORT=8002"
	@echo "make cutover   rehearse the blue->green cutover on devstack (reports/cutover/)"
	@echo "                 CUTOVER_ARGS=\"--scenarios healthy,degrade --rate 30\""
	@echo "make bench     blue against green under the same load (reports/bench/)"
	@echo "                 BENCH_ARGS=\"--levels 10,50,200,500 --duration 12 --agent-latency-ms 200\""
	@echo "make soak      a bounded soak of each color (reports/soak/)"
	@echo "                 SOAK_ARGS=\"--duration 300 --users 100 --colors blue,green\""
	@echo "make fuzz      Schemathesis against both colors' /openapi.json (reports/fuzz/)"
	@echo "                 FUZZ_ARGS=\"--max-examples 100 --seed 7\""
	@echo "make audit     known vulnerabilities in the pinned dependencies (needs PyPI's JSON API)"
	@echo "make lock      re-resolve the lock files from pyproject.toml"
	@echo "make install   the .venv from requirements.lock (every target does it when needed)"
	@echo "make clean     remove .venv, reports and caches"
	@echo "PYTHON=python3 the interpreter that builds the .venv"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip >/dev/null
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	@$(BIN)/uv pip install -q -p $(BIN)/python -r requirements.lock
	@$(BIN)/uv pip install -q -p $(BIN)/python --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	$(BIN)/python -m devstack.run

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n 2 --dist loadgroup

test-fast: install
	$(BIN)/pytest -m unit -q

# make parity [GENERATED=150] [SEED=...] [BLUE_URL=... GREEN_URL=... [PROFILE=make-run]]
#             [REPLAY=capture.jsonl] [KEEP_LANES=1]
parity: install
	@$(BIN)/python -m parity_tests $(if $(GENERATED),--generated $(GENERATED)) \
	  $(if $(SEED),--seed $(SEED)) $(if $(BLUE_URL),--blue-url $(BLUE_URL)) \
	  $(if $(GREEN_URL),--green-url $(GREEN_URL)) $(if $(PROFILE),--profile $(PROFILE)) \
	  $(if $(REPLAY),--replay $(REPLAY)) $(if $(KEEP_LANES),--keep-lanes)

# make bench [BENCH_ARGS="--levels 10,50,200,500 --duration 15 --agent-latency-ms 200"]: blue
# (sync, gthread, gevent) and green (python -m loadtest.bench); BENCH_ARGS=--scaling: green per core.
# installs what is missing: wrk (Debian package) and dynalite (npm ci, devstack/dynalite's lock)
bench: install
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@test -f devstack/dynalite/node_modules/dynalite/cli.js || \
	  npm ci --prefix devstack/dynalite --no-audit --no-fund --loglevel=error
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

# make soak [SOAK_ARGS="--duration 300 --users 100"]
soak: install
	$(BIN)/python -m loadtest.soak $(SOAK_ARGS)

# make fuzz [FUZZ_ARGS="--max-examples 100"]: Schemathesis, every check, against both colors
fuzz: install
	$(BIN)/python -m parity_tests.fuzz $(FUZZ_ARGS)

# make cutover [CUTOVER_ARGS="--scenarios healthy,degrade --rate 30"]: the cutover rehearsed on
# devstack, every scenario, about 4 minutes; reports/cutover/<scenario>/{audit.jsonl,timeline.png}
cutover: install
	$(BIN)/python -m deploy.rehearsal $(CUTOVER_ARGS)

# make audit: known vulnerabilities in the pinned dependencies (needs PyPI)
audit: install
	$(BIN)/pip-audit -r requirements.lock --disable-pip --no-deps --strict --progress-spinner off \
	  $$(sed -n 's/^\([A-Z]*-[0-9A-Za-z-]*\).*/--ignore-vuln \1/p' .audit-ignore 2>/dev/null)

lock:  # dev/test (everything), then the images' subsets pinned to the same versions
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock -q
	$(BIN)/uv pip compile pyproject.toml -c requirements.lock -o requirements.app.lock -q
	$(BIN)/uv pip compile pyproject.toml --extra devstack -c requirements.lock -o requirements.devstack.lock -q

clean:
	rm -rf $(VENV) reports .run .pytest_cache .mypy_cache .ruff_cache devstack/dynalite/node_modules
