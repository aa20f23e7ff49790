# Set-up, demo and tests. `make demo` and `make test` are the two commands in README.md.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# A local CPU build of torch: pin it exactly (a loose range would pull CUDA packages).
TORCH ?= torch==2.13.0

KENLM_PREFIX ?= .cache/kenlm

.PHONY: setup system-deps kenlm demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

setup: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

# KenLM's lmplz/build_binary, built from the kenlm source package (about 3-5 minutes).
$(KENLM_PREFIX)/bin/lmplz:
	bash scripts/build_kenlm.sh $(KENLM_PREFIX)

kenlm: $(KENLM_PREFIX)/bin/lmplz

demo: setup
	$(VENV)/bin/harken transcribe examples/LJ*.wav

test: setup system-deps kenlm
	HARKEN_KENLM_BIN=$(abspath $(KENLM_PREFIX))/bin $(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) benchmarks/engine_speed.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
