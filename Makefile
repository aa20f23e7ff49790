# Set-up, demo and tests. `make demo` and `make test` are the two commands in README.md.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# A local CPU build of torch: pin it exactly (a loose range would pull CUDA packages).
TORCH ?= torch==2.13.0

KENLM_PREFIX ?= .cache/kenlm

.PHONY: setup system-deps kenlm demo test bench clean

$(VENV)/.installed: pyproject.toml
	@echo "== creating $(VENV) (once; a few minutes on a fresh machine, mostly downloads)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "== installing $(TORCH) (the CPU build)"
	$(PY) -m pip install -q $(TORCH)
	@echo "== installing harken and its extras: pip install -e '.[all,test]' (onnxruntime, fastapi, ray, ...)"
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

setup: $(VENV)/.installed

system-deps:
	@echo "== Debian packages for the tests (only those missing; apt-get, needs root or sudo): TTS voices, sox, compilers and Boost for KenLM, chromium"
	bash scripts/install-system-deps.sh

# KenLM's lmplz/build_binary, built from the kenlm source package (about 3-5 minutes).
$(KENLM_PREFIX)/bin/lmplz:
	@echo "== building KenLM's lmplz/build_binary into $(KENLM_PREFIX) (once; about 3-5 minutes)"
	bash scripts/build_kenlm.sh $(KENLM_PREFIX)

kenlm: $(KENLM_PREFIX)/bin/lmplz

demo: setup
	@echo "== transcribing examples/*.wav with the bundled en-small model and its LM"
	$(VENV)/bin/harken transcribe examples/*.wav

test: setup system-deps kenlm
	@echo "== running the test suite (about 10 minutes on 2 cores)"
	HARKEN_KENLM_BIN=$(abspath $(KENLM_PREFIX))/bin $(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) benchmarks/engine_speed.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
