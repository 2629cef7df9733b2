# Two entry points on a fresh machine: `make demo` (main job on the bundled scene) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q -c constraints.txt --no-deps 'timm>=1.0.20,<1.1'  # its torchvision dep is not needed
	$(BIN)/python -c 'from vega3d.compiled import compile_all; compile_all()'  # numba's on-disk cache
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/vega3d awareness --backbone pixels,position --out outputs/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

.PHONY: install demo test
