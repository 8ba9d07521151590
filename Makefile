# Each target creates .venv on first use. torch is installed first, pinned, from the CPU wheel, so that no
# resolver ever pulls a multi-GB CUDA build.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-0.1.0
BUILD   := build

.PHONY: demo test bench lint setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,diffusers]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --workdir $(BUILD)

test: $(STAMP)
	$(PY) -m pytest -q -rs

bench: $(STAMP)
	$(PY) benchmarks/sampling.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(BUILD) .pytest_cache
