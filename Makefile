# ftk — everything starts from `make demo` or `make test` on a fresh clone.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PY     := $(BIN)/python
FTK    := $(BIN)/ftk
export PYTHONWARNINGS ?= ignore::FutureWarning
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

RECIPE ?= configs/agnews_tiny_cpu.yaml
# pytest-xdist workers for `make test` / `make test-fast` (tests that share a trained fixture or a
# rendezvous port stay on one worker: tests/conftest.py); TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
XDIST  := $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadgroup)
RUN    ?=

.PHONY: venv llamacpp demo test test-fast prepare train eval real clean help

help:
	@echo "make demo            offline end-to-end demo: synthetic AG News -> tiny model -> train -> eval"
	@echo "make test            the full test suite on TEST_WORKERS=2 workers (includes real tiny LLaMA-Factory runs;"
	@echo "                     installs the llamacpp extra first: llama.cpp builds once, ~13 min)"
	@echo "make prepare RECIPE=configs/x.yaml   prepare the recipe's data"
	@echo "make train RECIPE=configs/x.yaml     train (new run directory under runs/)"
	@echo "make eval RUN=runs/<run>             evaluate a run on its test split"
	@echo "make real            the real-model studies (SmolLM2-135M on shared/realdata; resumable; ~1-2 h on 2 cores)"

# Create or reuse .venv; reinstall only when the dependency files change.
venv: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# The llamacpp extra (llama-cpp-python and its server): the tests check `ftk export --gguf` in llama.cpp
# itself. It builds llama.cpp from source (~13 min of CPU the first time; pip keeps the wheel in its
# cache). Never a step of `make demo`. If it cannot build here, its tests skip, saying why.
LLAMA_STAMP := $(VENV)/.llamacpp
llamacpp: $(LLAMA_STAMP)
$(LLAMA_STAMP): $(STAMP)
	@echo "installing the llamacpp extra (llama.cpp builds from source the first time: ~13 min on 2 cores)"
	@$(PY) -m pip install -q -c constraints.txt -e '.[llamacpp]' && touch $(LLAMA_STAMP) || \
	  echo "warning: the llamacpp extra did not install; the llama.cpp tests will skip"

demo: $(STAMP)
	$(FTK) demo

test: $(STAMP) $(LLAMA_STAMP)
	$(PY) -m pytest -q $(XDIST) --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow"

prepare: $(STAMP)
	$(FTK) prepare $(RECIPE)

train: $(STAMP)
	$(FTK) train $(RECIPE)

eval: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make eval RUN=runs/<run-dir>"; exit 2; }
	$(FTK) eval $(RUN)

# Real pretrained model, real data: fetch SmolLM2 once, then every study in studies/real (finished trials
# are skipped, so an interrupted `make real` resumes). REAL_STUDIES=studies/real/x.yaml runs one.
REAL_STUDIES ?= $(sort $(wildcard studies/real/*.yaml))
real: $(STAMP)
	$(FTK) model fetch smollm2-135m-instruct
	@for s in $(REAL_STUDIES); do $(FTK) study run $$s || exit $$?; done

clean:
	rm -rf runs data/synth data/prepared data/models .pytest_cache
