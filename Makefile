# Fresh machine: `make demo` runs the demo, `make test` runs the tests. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test reference reference-llm reference-snn clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/edge demo

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q

# Retrains the shipped reference model (about 20 minutes on 2 cores); see edge/zoo/MODEL_CARD.md.
reference: $(VENV)/.test-installed
	$(BIN)/python -m edge.families.ssvep.reference --output edge/zoo/ssvep_guney_9ch_0.4s.onnx

# Retrains the reference language model (about 15 minutes on 2 idle cores); see edge/zoo/LLM_MODEL_CARD.md.
reference-llm: $(VENV)/.test-installed
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m edge.families.llm.reference \
		--corpus ../shared/data/tinyshakespeare/input.txt --output edge/zoo/llama_shakespeare_char.onnx --steps 2500

# Retrains the reference spiking network (a few minutes on 2 cores); see edge/zoo/SNN_MODEL_CARD.md.
reference-snn: $(VENV)/.test-installed
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m edge.snn_reference --output edge/zoo/snn_ssvep_delta.onnx

clean:
	rm -rf $(VENV) runs .pytest_cache
