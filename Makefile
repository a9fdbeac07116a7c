# The two commands: `make run` and `make test`. Both set up everything they need first.
SHELL := /bin/bash
PY := .venv/bin/python
export XDG_RUNTIME_DIR ?= $(CURDIR)/var/run
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test test-fast setup venv browser lint typecheck clean bench chaos scaleout fuzz

.venv/.installed: requirements.txt
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

# `.venv/bin/emprops`: the CLI (emprops/cli.py), runnable from any directory
.venv/bin/emprops: .venv/.installed
	@printf '#!/bin/sh\nPYTHONPATH="%s$${PYTHONPATH:+:$$PYTHONPATH}" exec "%s/.venv/bin/python" -m emprops "$$@"\n' "$(CURDIR)" "$(CURDIR)" > $@
	@chmod +x $@

venv: .venv/.installed .venv/bin/emprops

# Debian's Chromium for the browser nodes and p5 (1.11) from npm for the sketches
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "Installing Debian's chromium ..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || { echo "could not install chromium (needs root and apt)"; exit 1; }; \
	fi
	@if [ -f package.json ] && [ ! -f node_modules/.package-lock.json -o package.json -nt node_modules/.package-lock.json ]; then \
	  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; \
	  else npm install --no-audit --no-fund --loglevel=error; fi; \
	fi

setup: venv browser
	@mkdir -p var/run && chmod 700 var/run

run: setup
	$(PY) -m emprops.embedded run

lint: venv
	$(PY) -m ruff check .

typecheck: venv
	DATABASE_URL=postgresql://127.0.0.1/typecheck $(PY) -m mypy .

# two pytest processes (pytest-xdist), each with its own test database and Redis databases: most
# subprocess tests spend their time waiting on a worker or a browser, not on a CPU
PYTEST_WORKERS ?= 2
test:
	@set -o pipefail; t0=$$(date +%s); \
	$(MAKE) --no-print-directory setup || exit 1; t1=$$(date +%s); \
	$(PY) -m ruff check . || exit 1; t2=$$(date +%s); \
	DATABASE_URL=postgresql://127.0.0.1/typecheck $(PY) -m mypy . || exit 1; t3=$$(date +%s); \
	EMPROPS_TESTING=1 $(PY) -m emprops.embedded exec --dir var/test -- bash -c '\
	  s=$$(date +%s); $(PY) manage.py makemigrations --check --dry-run >/dev/null || { echo "missing migrations: run manage.py makemigrations"; exit 1; }; \
	  echo "migrations check: $$(( $$(date +%s) - s )) s" > var/test/stage-migrations; \
	  $(PY) -m pytest --durations=20 -n $(PYTEST_WORKERS) $(PYTEST_ARGS)'; rc=$$?; t4=$$(date +%s); \
	echo "== stage timings: install $$((t1-t0)) s, lint $$((t2-t1)) s, type check $$((t3-t2)) s, $$(cat var/test/stage-migrations 2>/dev/null), migrations check + tests $$((t4-t3)) s"; \
	exit $$rc

# The inner loop: the in-process tests only (no worker, uvicorn or Chromium subprocesses).
# `make test` is the whole suite and what CI runs.
test-fast: setup
	EMPROPS_TESTING=1 $(PY) -m emprops.embedded exec --dir var/test -- \
	  $(PY) -m pytest -q -m "not worker and not server and not browser" $(PYTEST_ARGS)

# The benchmarks (not part of `make test`; ~10 min on 2 CPUs): each against its own embedded
# services under var/bench-*, one JSON document each on stdout, and the figures rewritten between
# their markers in bench/README.md (or BENCH_README). Every wait inside the scripts is bounded. The
# open-files limit is raised before the services start: Redis holds a connection per event stream.
BENCH_EXEC := $(PY) -m emprops.embedded exec --dir
BENCH_README ?= bench/README.md
bench: setup
	@set -e; ulimit -Sn $$(ulimit -Hn); t0=$$(date +%s); \
	for ref in "" "--ref plain" "--ref filter"; do \
	  $(BENCH_EXEC) var/bench-overhead -- $(PY) bench/overhead.py --jobs 20 --concurrency 2 \
	    --rounds 5 $$ref --readme $(BENCH_README); \
	done; \
	$(PY) bench/render.py --repeat 3; \
	$(BENCH_EXEC) var/bench-p5 -- $(PY) bench/p5_collection.py --generations $${P5_GENERATIONS:-1000} \
	  --readme $(BENCH_README); \
	$(BENCH_EXEC) var/bench-api -- $(PY) bench/api_load.py --readme $(BENCH_README); \
	$(BENCH_EXEC) var/bench-sse -- $(PY) bench/sse_load.py --rounds 1 --readme $(BENCH_README); \
	echo "== make bench: $$(( $$(date +%s) - t0 )) s" >&2

# Faults injected into real runs (not part of `make test`; ~8 min on 2 CPUs): a worker SIGKILLed
# mid-node, Redis and PostgreSQL crashed and restarted, the ComfyUI peer gone for 60 s. The script
# owns its embedded services under var/chaos (it restarts them), prints what it injected and what
# it counted, and exits non-zero on any lost or doubled output, history row, event or charge.
chaos: setup
	ulimit -Sn $$(ulimit -Hn); $(PY) bench/chaos.py --dir var/chaos --out var/chaos/chaos.json \
	  --readme $(BENCH_README)

# Two worker "machines" (own var/HOME/tmp/Chromium, queues engine,io and engine,browser), one web
# process, shared PostgreSQL/Redis and an S3-compatible server on loopback (README: Running on
# more machines).
scaleout: setup
	SCALEOUT=1 EMPROPS_TESTING=1 $(PY) -m emprops.embedded exec --dir var/test-scaleout -- \
	  $(PY) -m pytest -q tests/test_scaleout.py $(PYTEST_ARGS)

# The API fuzz of `make test` with 25 examples per strategy instead of 4 (~5 min)
fuzz: setup
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-25} EMPROPS_TESTING=1 $(PY) -m emprops.embedded exec \
	  --dir var/test-fuzz -- $(PY) -m pytest -q tests/test_api_fuzz.py $(PYTEST_ARGS)

clean:
	rm -rf var/test
