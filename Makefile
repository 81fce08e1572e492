# Set-up and the two commands a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= runs/demo

.PHONY: demo test install install-dev lint notebooks clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch==2.13.0 first: pip takes the CPU wheel from local disk (an open range could pull CUDA).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/psm demo --out $(OUT) --overwrite

test: install-dev
	$(PY) -m pytest --durations=15

# Execute every notebook at full size and commit-ready: outputs kept, volatile metadata stripped.
notebooks: install-dev
	$(PY) notebooks/execute.py

lint: install-dev
	$(VENV)/bin/ruff check models inference tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
