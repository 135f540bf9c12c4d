# shopmind: two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Real datasets: ../shared/data next to the checkout unless SHOPMIND_DATA_DIR is set.
SHOPMIND_DATA_DIR ?= $(if $(wildcard ../shared/data/DATASETS.md),$(abspath ../shared/data),)
export SHOPMIND_DATA_DIR
# No model hub at run time; no OpenMP spin-waiting on 2-core machines.
export HF_HUB_OFFLINE := 1
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install demo test bench clean browser extras postgres

install: $(STAMP)

# Browser tests drive Debian's Chromium (headless); installed here when missing (root or sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "install Chromium for the browser tests"; exit 1; }; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# PostgreSQL's server binaries (Debian's postgresql package) for the tests' throwaway clusters (root or sudo).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "install PostgreSQL (initdb, pg_ctl) for the store tests"; exit 1; }; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# The optional extras the tests exercise: PostgreSQL (psycopg) and Ray. The embedded install stays without them.
EXTRAS := $(VENV)/.extras
extras: $(EXTRAS)
$(EXTRAS): $(STAMP)
	$(BIN)/pip install --quiet -e '.[lm,test,postgres,scale]'
	touch $(EXTRAS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the CPU wheel on disk; a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[lm,test]'
	touch $(STAMP)

# Ingest, mine, train, evaluate search, then serve the storefront on http://127.0.0.1:8000 (Ctrl-C stops).
DEMO_PORT ?= 8000
demo: install
	$(BIN)/shopmind demo --serve --port $(DEMO_PORT)

test: install extras browser postgres
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

bench: install
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_encoders.py
	$(BIN)/python bench/bench_knowledge.py
	$(BIN)/python bench/bench_recommenders.py
	$(BIN)/python bench/trace_poprec_beauty.py
	$(BIN)/python bench/bench_search.py
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_serving.py
	$(BIN)/python bench/bench_storefront.py
	$(BIN)/python bench/bench_demo.py
	$(BIN)/python bench/bench_cli_startup.py
	$(BIN)/python bench/bench_security.py --before 6683b81
	$(BIN)/python bench/bench_loop.py --rate 5 --trainer-args "--every-events 50 --every-minutes 1 --full-every-minutes 60 --min-cases 20 --every 2" --timing ''
	$(BIN)/python bench/bench_loop.py --variants '' --timing amazon-scientific
	$(BIN)/python bench/bench_multihost.py --events 300
	$(BIN)/python bench/bench_ray.py
	$(BIN)/python bench/bench_scale.py --ingest-events-cap 4M --neural-timeout 120

clean:
	rm -rf $(VENV) shopmind.duckdb shopmind.duckdb.wal shopmind.rejects .pytest_cache
